#!/usr/bin/env python3
"""Write or check keyblob's test vectors (tests/vectors/, docs/FORMAT.md).

    python tools/gen_vectors.py            # --check: the committed vectors still hold
    python tools/gen_vectors.py --write    # rewrite them
    python tools/gen_vectors.py --add      # draw only the roots that are missing, keep the rest
    python tools/gen_vectors.py --write-data  # rewrite tests/vectors/data/ only

What is deterministic and what is not:

- the test keys: X25519, Ed25519 and P-256 keys come from fixed 32-byte seeds (below; a P-256
  private scalar is ``int(seed) mod (n - 1) + 1``, the seed read big-endian); the RSA-2048
  keys were generated once and are committed as PEM in tests/vectors/keys/ (reused by
  ``--write``, generated only when missing);
- names, generations, creation times, session keys and key ids are fixed;
- HPKE ephemeral keys, OAEP seeds and PSS salts are random inside ``cryptography``, so the
  *root* blobs (those that need a fresh wrap or an RSA signature) differ on every ``--write``
  (``--add`` draws only the roots not yet on disk);
- every other vector is a deterministic function of the roots and the keys (a byte edit, or
  an Ed25519 re-signature, or a P-256 one made with RFC 6979 deterministic ECDSA).

``--check`` therefore (1) re-derives the seeded keys and compares the PEM files, (2) re-derives
every derived vector from the committed roots and compares bytes, (3) rebuilds the manifest and
compares it, and (4) runs every case through the package and compares the outcome (result,
stage, header, session key) with the manifest.  It exits 1 on any difference.

The encrypted-data vectors (tests/vectors/data/, FORMAT.md section 7) are fully deterministic:
fixed session keys, key ids, names, generations and salts, and plaintexts that are a pattern
(``bytes(i % 251 for i in range(length))``).  ``--check`` rebuilds every one of them and
data/manifest.json byte for byte and runs every case through ``keyblob.files.decrypt``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keyblob import blobs, publickeys, stream
from keyblob import files as kbfiles
from keyblob.errors import FormatError, KeyblobError, UnsupportedError, VerificationError
from keyblob.format import KeyBlob, PublicKeyFile, armor, dearmor, fingerprint
from keyblob.format.armor import BLOB, PUBLIC_KEY
from keyblob.format.blob import SIGNATURE_LABEL, Header, Recipient
from keyblob.format.data import CONTEXT_LABEL, DataHeader
from keyblob.format.pubkey import (
    ED25519_SMALL_ORDER,
    FIELD_PRIME,
    LABEL_SIGNATURE_LABEL,
    P256_PRIME,
)
from keyblob.keys import Algorithm, KeyId, KeyRole, SessionKey, Suite, _make_session_key, key_id_for
from keyblob.providers import suites
from keyblob.providers.base import OldKey
from keyblob.trust import UNTRUSTED, State, TrustedSigner

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
KEYS_DIR = VECTORS / "keys"
MANIFEST = VECTORS / "manifest.json"

SEED_LABEL = b"keyblob/v1/test-vector-seed\x00"
SESSION_LABEL = b"keyblob/v1/test-vector-session-key\x00"
KEY_ID_LABEL = b"keyblob/v1/test-vector-key-id\x00"
CREATED = 1_700_000_000  # 2023-11-14T22:13:20Z
MAX_GENERATION = 2**63 - 1
CHUNK = stream.CHUNK_SIZE
R_IDENTITY = bytes([1]) + bytes(31)  # the identity of edwards25519
SMALL_ORDER_ID = key_id_for(Suite.X25519, KeyRole.SIGNATURE, R_IDENTITY)
# (file, signature key, description): public key files whose Ed25519 key is refused (1.3)
ED25519_BAD_KEYS = [
    (f"invalid/pubkey_ed25519_{tag}.kbpk", encoded, f"signature key {what}")
    for tag, encoded, what in [
        *(
            (tag, ED25519_SMALL_ORDER[i], f"{encoding} (small order)")
            for i, (tag, encoding) in enumerate(
                [
                    ("identity", "the identity 01 00..00"),
                    ("order_2", "the point of order 2 ec ff..7f"),
                    ("order_4", "a point of order 4, 00..00"),
                    ("order_4_sign_set", "a point of order 4, 00..80"),
                    ("order_8_a", "a point of order 8, 26e8..05"),
                    ("order_8_a_sign_set", "a point of order 8, 26e8..85"),
                    ("order_8_b", "a point of order 8, c717..7a"),
                    ("order_8_b_sign_set", "a point of order 8, c717..fa"),
                ]
            )
        ),
        (
            "identity_sign_set",
            R_IDENTITY[:31] + b"\x80",
            "01 00..80: the identity with the sign bit set (x = -0)",
        ),
        (
            "order_2_sign_set",
            bytes.fromhex("ec" + "ff" * 31),
            "ec ff..ff: the point of order 2 with the sign bit set (x = -0)",
        ),
        ("y_is_p", bytes.fromhex("ed" + "ff" * 30 + "7f"), "y = p: y = 0 not reduced"),
        ("y_is_p_plus_1", bytes.fromhex("ee" + "ff" * 30 + "7f"), "y = p + 1: the identity"),
    ]
]
LONG_NAME = ("k" + "0123456789._-abcdefghijklmnopqrstuvwxyz" * 4)[:128]
ALICE_LABEL = "Alice Martin <alice@example.com>"
#: A version 2 label of exactly 200 bytes of UTF-8, with 2-, 3- and 4-byte characters.
LONG_LABEL = ("Zoë Ünal 名前 \U0001f511 " * 20).encode()[:197].decode("utf-8", "ignore")
LONG_LABEL += "x" * (200 - len(LONG_LABEL.encode()))


def v2_file(
    key: TestKey,
    label: bytes,
    *,
    exchange: bytes | None = None,
    signer: TestKey | None = None,
    signature_len: int | None = None,
) -> bytes:
    """A version 2 public key file (FORMAT.md 3.2) built byte by byte, so that a label the
    package refuses can still be signed: ``key``'s keys, ``label`` as given, signed by
    ``signer`` (default ``key``; Ed25519 signatures are deterministic)."""
    exchange = key.exchange_public if exchange is None else exchange
    body = (
        b"KBPK\x02"
        + bytes([key.suite])
        + b"\x00\x00"
        + bytes([len(label)])
        + label
        + len(exchange).to_bytes(2, "big")
        + exchange
        + len(key.signature_public).to_bytes(2, "big")
        + key.signature_public
    )
    signature = fixed_sign((signer or key).signature, LABEL_SIGNATURE_LABEL + body)
    size = len(signature) if signature_len is None else signature_len
    return body + size.to_bytes(2, "big") + signature[:size]


KEY_SUITES = {
    "alice": Suite.X25519,
    "bob": Suite.X25519,
    "mallory": Suite.X25519,
    "carol": Suite.RSA,
    "dave": Suite.P256,
    "erin": Suite.P256,
    "frank": Suite.PQ,
    "grace": Suite.PQ,
}
SEEDED = (Suite.X25519, Suite.P256, Suite.PQ)
FRANK_LABEL = "Frank Nakamura <frank@example.com>"
DAVE_LABEL = "Dave Okafor <dave@example.com>"
_ECDSA_RFC6979 = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def fixed_sign(key: suites.SignaturePrivate, message: bytes) -> bytes:
    """A signature as keyblob makes it, but the same on every run: Ed25519 is deterministic
    already; P-256 uses RFC 6979 nonces (then keyblob's raw low-S form); RSA-PSS is random
    (used only for roots)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return suites.p256_raw_signature(key.sign(message, _ECDSA_RFC6979))
    return suites.sign(key, message)


# -- test keys -------------------------------------------------------------------------------


def seed(name: str, role: KeyRole) -> bytes:
    """The 32-byte seed of a test key: SHA-256(label || name || 0 || role name)."""
    return hashlib.sha256(
        SEED_LABEL + name.encode() + b"\x00" + role.name.lower().encode()
    ).digest()


def pq_seed(name: str, role: KeyRole) -> bytes:
    """A pq test key's private key bytes (FORMAT.md 1.3): the exchange key's 32-byte X-Wing
    seed is :func:`seed`; the signature key's 64 bytes are the ML-DSA-65 seed :func:`seed`
    then the Ed25519 key SHA-256(label || name || 0 || "signature-ed25519")."""
    if role is KeyRole.EXCHANGE:
        return seed(name, role)
    return (
        seed(name, role)
        + hashlib.sha256(SEED_LABEL + name.encode() + b"\x00signature-ed25519").digest()
    )


def pq_key(name: str) -> TestKey:
    return TestKey(
        name,
        Suite.PQ,
        suites.XWingPrivateKey(pq_seed(name, KeyRole.EXCHANGE)),
        suites.HybridSignaturePrivateKey(pq_seed(name, KeyRole.SIGNATURE)),
    )


def _pem(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_path(name: str, role: KeyRole) -> Path:
    return KEYS_DIR / f"{name}.{role.name.lower()}.pem"


@dataclass(frozen=True)
class TestKey:
    """One test container's two private keys."""

    name: str
    suite: Suite
    exchange: suites.ExchangePrivate
    signature: suites.SignaturePrivate

    @property
    def exchange_public(self) -> bytes:
        return suites.public_bytes(self.exchange)

    @property
    def signature_public(self) -> bytes:
        return suites.public_bytes(self.signature)

    @property
    def exchange_id(self) -> KeyId:
        return key_id_for(self.suite, KeyRole.EXCHANGE, self.exchange_public)

    @property
    def signature_id(self) -> KeyId:
        return key_id_for(self.suite, KeyRole.SIGNATURE, self.signature_public)

    def public_file(self) -> PublicKeyFile:
        return PublicKeyFile(self.suite, self.name, self.exchange_public, self.signature_public)

    def trusted(self) -> TrustedSigner:
        return TrustedSigner(
            key_id=self.signature_id,
            suite=self.suite,
            public=self.signature_public,
            exchange=self.exchange_public,
            label=self.name,
            added=CREATED,
        )


def seeded_pems(name: str, suite: Suite = Suite.X25519) -> dict[KeyRole, bytes]:
    if suite is Suite.P256:
        return {
            role: _pem(
                ec.derive_private_key(
                    int.from_bytes(seed(name, role)) % (suites.P256_ORDER - 1) + 1,
                    ec.SECP256R1(),
                )
            )
            for role in KeyRole
        }
    return {
        KeyRole.EXCHANGE: _pem(
            x25519.X25519PrivateKey.from_private_bytes(seed(name, KeyRole.EXCHANGE))
        ),
        KeyRole.SIGNATURE: _pem(
            ed25519.Ed25519PrivateKey.from_private_bytes(seed(name, KeyRole.SIGNATURE))
        ),
    }


def make_keys(write: bool) -> dict[str, bytes]:
    """The PEM text of every test key file, generating RSA keys only when missing."""
    out: dict[str, bytes] = {}
    for name, suite in KEY_SUITES.items():
        if suite is Suite.PQ:
            continue  # no PEM form: the manifest's seeds are the keys (FORMAT.md 1.3)
        if suite in SEEDED:
            for role, pem in seeded_pems(name, suite).items():
                out[key_path(name, role).name] = pem
            continue
        for role in KeyRole:
            path = key_path(name, role)
            if path.exists():
                out[path.name] = path.read_bytes()
            elif write:
                out[path.name] = _pem(rsa.generate_private_key(suites.RSA_PUBLIC_EXPONENT, 2048))
            else:
                raise SystemExit(f"missing {path}: run tools/gen_vectors.py --write")
    return out


def load_keys(pems: dict[str, bytes] | None = None) -> dict[str, TestKey]:
    """The test keys, from ``pems`` or from tests/vectors/keys/."""
    keys = {}
    for name, suite in KEY_SUITES.items():
        if suite is Suite.PQ:
            keys[name] = pq_key(name)
            continue
        loaded = []
        for role in KeyRole:
            path = key_path(name, role)
            pem = pems[path.name] if pems is not None else path.read_bytes()
            loaded.append(serialization.load_pem_private_key(pem, None))
        exchange, signature = loaded
        assert isinstance(
            exchange, x25519.X25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        )
        assert isinstance(
            signature, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        )
        keys[name] = TestKey(name, suite, exchange, signature)
    return keys


# -- a Provider over a fixed test key, with an in-memory state -------------------------------


class VectorProvider:
    """Implements ``keyblob.providers.base.Provider`` over a test key; counts unwraps."""

    def __init__(self, key: TestKey, state: State | None = None) -> None:
        self._key = key
        self._state = state or State()
        self.unwrap_calls = 0

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def suite(self) -> Suite:
        return self._key.suite

    @property
    def exchange_public(self) -> bytes:
        return self._key.exchange_public

    @property
    def signature_public(self) -> bytes:
        return self._key.signature_public

    @property
    def exchange_id(self) -> KeyId:
        return self._key.exchange_id

    @property
    def signature_id(self) -> KeyId:
        return self._key.signature_id

    def sign(self, message: bytes) -> bytes:
        return suites.sign(self._key.signature, message)

    @property
    def exchange_ids(self) -> tuple[KeyId, ...]:
        return (self._key.exchange_id,)

    @property
    def old_keys(self) -> tuple[OldKey, ...]:
        return ()

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self.unwrap_as(self._key.exchange_id, wrapped, context)

    def unwrap_as(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        if key_id != self._key.exchange_id:
            raise VerificationError(f"no exchange key kx-{key_id.short} here")
        self.unwrap_calls += 1
        return suites.unwrap(self._key.exchange, wrapped, context)

    def state(self) -> State:
        return self._state

    def update_state(self, change: Callable[[State], State]) -> State:
        self._state = change(self._state)
        return self._state


# -- fixed values ----------------------------------------------------------------------------


def session_key(case: str, size: int) -> bytes:
    return hashlib.sha256(SESSION_LABEL + case.encode()).digest()[:size]


def session_key_id(case: str) -> bytes:
    return hashlib.sha256(KEY_ID_LABEL + case.encode()).digest()[:16]


def fixed_random(case: str) -> Callable[[int], bytes]:
    """The ``random`` of ``blobs._export``: first the session key, then the key id."""
    queue: list[bytes] = []

    def take(n: int) -> bytes:
        if not queue:
            queue.extend([session_key(case, n), session_key_id(case)])
        out = queue.pop(0)
        if len(out) != n:
            raise RuntimeError(f"_export asked for {n} random bytes, the vector has {len(out)}")
        return out

    return take


@dataclass(frozen=True)
class RootSpec:
    """A blob that needs fresh randomness (a wrap, or an RSA signature)."""

    file: str
    signer: str
    recipients: tuple[str, ...]
    name: str
    generation: int
    algorithm: Algorithm
    unwrapped_size: int | None = None  # wrap a key of this length instead (a broken blob)
    revision: int = 0  # a re-wrapped blob (flags bit 0, FORMAT.md 2.2.11)

    @property
    def case(self) -> str:
        return Path(self.file).stem


ROOTS = [
    RootSpec(
        "valid/x25519_one_recipient.kb", "alice", ("alice",), "payroll", 1, Algorithm.AES_256_GCM
    ),
    RootSpec(
        "valid/x25519_two_recipients.kb",
        "alice",
        ("alice", "bob"),
        "payroll",
        2,
        Algorithm.AES_256_GCM,
    ),
    RootSpec(
        "valid/x25519_aes128_gcm.kb", "alice", ("alice",), "backups.2024", 7, Algorithm.AES_128_GCM
    ),
    RootSpec(
        "valid/x25519_chacha20_long_name_max_generation.kb",
        "alice",
        ("alice",),
        LONG_NAME,
        MAX_GENERATION,
        Algorithm.CHACHA20_POLY1305,
    ),
    RootSpec("valid/rsa2048.kb", "carol", ("carol",), "payroll", 1, Algorithm.AES_256_GCM),
    RootSpec(
        "invalid/untrusted_signer.kb", "mallory", ("alice",), "payroll", 1, Algorithm.AES_256_GCM
    ),
    RootSpec("invalid/not_a_recipient.kb", "alice", ("bob",), "payroll", 1, Algorithm.AES_256_GCM),
    RootSpec(
        "invalid/rsa_unwrapped_key_length_wrong.kb",
        "carol",
        ("carol",),
        "payroll",
        1,
        Algorithm.AES_256_GCM,
        unwrapped_size=31,
    ),
    RootSpec("valid/p256_one_recipient.kb", "dave", ("dave",), "payroll", 1, Algorithm.AES_256_GCM),
    RootSpec(
        "valid/p256_two_recipients.kb",
        "dave",
        ("dave", "erin"),
        "payroll",
        2,
        Algorithm.CHACHA20_POLY1305,
    ),
    RootSpec(
        "valid/x25519_revised.kb",
        "alice",
        ("alice", "bob"),
        "payroll",
        2,
        Algorithm.AES_256_GCM,
        revision=3,
    ),
    RootSpec("valid/pq_one_recipient.kb", "frank", ("frank",), "payroll", 1, Algorithm.AES_256_GCM),
    RootSpec(
        "valid/pq_two_recipients.kb",
        "frank",
        ("frank", "grace"),
        "payroll",
        2,
        Algorithm.CHACHA20_POLY1305,
    ),
]


def build_root(spec: RootSpec, keys: dict[str, TestKey]) -> bytes:
    signer = keys[spec.signer]
    recipients = [
        (keys[r].exchange_id, suites.load_exchange_public(keys[r].suite, keys[r].exchange_public))
        for r in spec.recipients
    ]
    if spec.unwrapped_size is None and spec.revision == 0:
        encoded, _ = blobs._export(
            VectorProvider(signer),
            name=spec.name,
            generation=spec.generation,
            algorithm=spec.algorithm,
            recipients=recipients,
            key=None,
            random=fixed_random(spec.case),
            now=lambda: CREATED,
        )
        return encoded
    # A revised blob, or a signed blob whose wrap holds a key of the wrong length: built from
    # format + suites.
    header = Header(
        signer.suite,
        spec.algorithm,
        spec.generation,
        CREATED,
        KeyId(session_key_id(spec.case)),
        signer.signature_id,
        spec.name,
        spec.revision,
    )
    raw = session_key(spec.case, spec.unwrapped_size or spec.algorithm.key_size)
    wrapped = tuple(
        Recipient(rid, suites.wrap(pub, raw, header.wrap_context(rid))) for rid, pub in recipients
    )
    return KeyBlob.signed(header, wrapped, lambda m: suites.sign(signer.signature, m)).to_bytes()


# -- derived vectors: byte edits of the roots ------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A blob as fields that may hold any value, for building broken blobs."""

    suite: int
    algorithm: int
    generation: int
    created: int
    key_id: bytes
    signer_id: bytes
    name: bytes
    recipients: tuple[tuple[bytes, bytes], ...]
    signature: bytes
    magic: bytes = b"KBLB"
    version: int = 1
    flags: int = 0
    revision: bytes = b""  # the u32 after the name, present when flags bit 0 is set
    count: int | None = None
    extra: bytes = field(default=b"")

    @classmethod
    def of(cls, data: bytes) -> Raw:
        blob = KeyBlob.from_bytes(data)
        h = blob.header
        return cls(
            suite=h.suite,
            algorithm=h.algorithm,
            generation=h.generation,
            created=h.created,
            key_id=h.key_id.value,
            signer_id=h.signer_id.value,
            name=h.name.encode(),
            recipients=tuple((r.key_id.value, r.wrapped) for r in blob.recipients),
            signature=blob.signature,
            flags=1 if h.revision else 0,
            revision=h.revision.to_bytes(4, "big") if h.revision else b"",
        )

    def body(self) -> bytes:
        count = len(self.recipients) if self.count is None else self.count
        out = [
            self.magic,
            bytes([self.version, self.suite, self.algorithm, self.flags]),
            self.generation.to_bytes(8, "big"),
            self.created.to_bytes(8, "big"),
            self.key_id,
            self.signer_id,
            bytes([len(self.name)]) if len(self.name) < 256 else b"\xff",
            self.name,
            self.revision,
            bytes([count]),
        ]
        for rid, wrapped in self.recipients:
            out += [rid, len(wrapped).to_bytes(2, "big"), wrapped]
        return b"".join(out)

    def encode(self) -> bytes:
        return self.body() + len(self.signature).to_bytes(2, "big") + self.signature + self.extra

    def resigned(self, key: TestKey) -> Raw:
        return replace(self, signature=fixed_sign(key.signature, SIGNATURE_LABEL + self.body()))


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _noncanonical_armor(data: bytes, kind: str, columns: int) -> bytes:
    text = base64.b64encode(data).decode()
    lines = [text[i : i + columns] for i in range(0, len(text), columns)]
    return "".join(
        f"{x}\n" for x in [f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"]
    ).encode()


def derived(roots: dict[str, bytes], keys: dict[str, TestKey]) -> dict[str, bytes]:
    """Every vector that is a deterministic function of the roots and the keys."""
    one = roots["valid/x25519_one_recipient.kb"]
    two = roots["valid/x25519_two_recipients.kb"]
    base = Raw.of(one)
    revised = Raw.of(roots["valid/x25519_revised.kb"])
    alice, bob, carol = keys["alice"], keys["bob"], keys["carol"]
    canonical_armor = armor(one, BLOB)
    out = {
        "valid/x25519_armored.txt": canonical_armor,
        "valid/x25519_armored_whitespace.txt": b"\n \t\r\n" + canonical_armor + b"\r\n\n  ",
        "invalid/empty.kb": b"",
        "invalid/bad_magic.kb": replace(base, magic=b"KBLX").encode(),
        "invalid/unknown_version.kb": replace(base, version=2).encode(),
        "invalid/unknown_suite.kb": replace(base, suite=9).encode(),
        "invalid/suite_pq_with_x25519_sizes.kb": replace(base, suite=Suite.PQ).encode(),
        "invalid/unknown_algorithm.kb": replace(base, algorithm=9).encode(),
        "invalid/reserved_flags_set.kb": replace(base, flags=0x80).encode(),
        "invalid/generation_zero.kb": replace(base, generation=0).encode(),
        "invalid/generation_over_max.kb": replace(base, generation=2**63).encode(),
        "invalid/created_over_max.kb": replace(base, created=2**63).encode(),
        "invalid/name_uppercase.kb": replace(base, name=b"Payroll").encode(),
        "invalid/name_len_zero.kb": replace(base, name=b"").encode(),
        "invalid/name_len_over_max.kb": replace(base, name=b"a" * 129).encode(),
        "invalid/name_starts_with_dot.kb": replace(base, name=b".payroll").encode(),
        "invalid/name_has_slash.kb": replace(base, name=b"pay/roll").encode(),
        "invalid/name_not_ascii.kb": replace(base, name="payröll".encode()).encode(),
        "invalid/truncated_header.kb": one[:40],
        "invalid/recipient_count_zero.kb": replace(base, recipients=()).encode(),
        "invalid/recipient_count_over_max.kb": replace(
            base,
            recipients=tuple((bytes([i]) * 16, base.recipients[0][1]) for i in range(1, 18)),
        ).encode(),
        "invalid/recipient_count_too_high.kb": replace(base, count=2).encode(),
        "invalid/duplicate_recipient.kb": replace(base, recipients=base.recipients * 2).encode(),
        "invalid/wrapped_len_wrong.kb": replace(
            base, recipients=((base.recipients[0][0], base.recipients[0][1][:-1]),)
        ).encode(),
        "invalid/signature_len_wrong.kb": replace(base, signature=base.signature[:-1]).encode(),
        "invalid/truncated_signature.kb": one[:-1],
        "invalid/trailing_byte.kb": one + b"\x00",
        "invalid/oversized.kb": one + b"\x00" * (32769 - len(one)),
        "invalid/signature_flipped.kb": _flip_last(one),
        "invalid/header_name_changed.kb": replace(base, name=b"salaries").encode(),
        "invalid/generation_changed.kb": replace(base, generation=5).encode(),
        "invalid/recipient_id_changed.kb": replace(
            base, recipients=((bob.exchange_id.value, base.recipients[0][1]),)
        ).encode(),
        "invalid/signer_id_changed.kb": replace(base, signer_id=bob.signature_id.value).encode(),
        "invalid/wrap_transplanted.kb": replace(base, recipients=(Raw.of(two).recipients[0],))
        .resigned(alice)
        .encode(),
        "invalid/wrap_flipped_resigned.kb": replace(
            base, recipients=((base.recipients[0][0], _flip_last(base.recipients[0][1])),)
        )
        .resigned(alice)
        .encode(),
        "invalid/armor_noncanonical.txt": _noncanonical_armor(one, BLOB, 76),
        "invalid/armor_crlf.txt": canonical_armor.replace(b"\n", b"\r\n"),
        "invalid/armor_no_padding.txt": canonical_armor.replace(b"=", b""),
        "invalid/armor_wrong_kind.txt": armor(one, PUBLIC_KEY),
        "invalid/armor_text_after_end.txt": canonical_armor + b"trailing text\n",
        "invalid/armor_bad_character.txt": canonical_armor.replace(b"A", b"*", 1),
        "invalid/armor_binary_inside.txt": armor(armor(one, BLOB), BLOB),
        "invalid/revised_revision_zero.kb": replace(revised, flags=1, revision=bytes(4))
        .resigned(alice)
        .encode(),
        "invalid/revision_changed.kb": replace(revised, revision=(4).to_bytes(4, "big")).encode(),
        "invalid/revision_removed.kb": replace(revised, flags=0, revision=b"").encode(),
    }
    for name in ("alice", "carol", "dave", "frank"):
        pub = keys[name].public_file().to_bytes()
        out[f"valid/{name}.kbpk"] = pub
        out[f"valid/{name}.pub.txt"] = armor(pub, PUBLIC_KEY)
    apub = alice.public_file().to_bytes()
    n = carol.exchange.public_key().public_numbers().n

    def rsa_der(e: int, modulus: int) -> bytes:
        return (
            rsa.RSAPublicNumbers(e, modulus)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def pubfile(exchange: bytes) -> bytes:
        return PublicKeyFile(Suite.RSA, "carol", exchange, carol.signature_public).to_bytes()

    def x25519_pubfile(exchange: bytes) -> bytes:
        return PublicKeyFile(Suite.X25519, "alice", exchange, alice.signature_public).to_bytes()

    out |= {
        "invalid/pubkey_bad_magic.kbpk": b"KBPX" + apub[4:],
        "invalid/pubkey_unknown_version.kbpk": apub[:4] + b"\x03" + apub[5:],
        "invalid/pubkey_unknown_suite.kbpk": apub[:5] + b"\x09" + apub[6:],
        "invalid/pubkey_reserved_set.kbpk": apub[:6] + b"\x00\x01" + apub[8:],
        "invalid/pubkey_x25519_len_wrong.kbpk": apub[:-34]
        + b"\x00\x1f"
        + alice.signature_public[:31],
        "invalid/pubkey_trailing_byte.kbpk": apub + b"\x00",
        "invalid/pubkey_truncated.kbpk": apub[:-1],
        "invalid/pubkey_rsa_not_der.kbpk": pubfile(b"\x30" * 300),
        "invalid/pubkey_rsa_exponent_3.kbpk": pubfile(rsa_der(3, n)),
        "invalid/pubkey_rsa_1024_bits.kbpk": pubfile(rsa_der(65537, (n >> 1024) | 1)),
        "invalid/pubkey_x25519_bit_255_set.kbpk": x25519_pubfile(
            alice.exchange_public[:31] + bytes([alice.exchange_public[31] | 0x80])
        ),
        "invalid/pubkey_x25519_u_is_p_plus_9.kbpk": x25519_pubfile(
            (FIELD_PRIME + 9).to_bytes(32, "little")
        ),
        "invalid/pubkey_x25519_low_order_u_0.kbpk": x25519_pubfile(bytes(32)),
        "invalid/pubkey_over_8192_bytes.kbpk": apub + bytes(8193 - len(apub)),
        "invalid/pubkey_armor_over_8192_bytes_decoded.txt": armor(
            apub + bytes(8193 - len(apub)), PUBLIC_KEY
        ),
        "valid/alice_armor_over_8192_bytes.pub.txt": armor(apub, PUBLIC_KEY) + b"\n" * 8192,
        "invalid/forged_by_small_order_signer.kb": replace(
            base, signer_id=SMALL_ORDER_ID.value, signature=R_IDENTITY + bytes(32)
        ).encode(),
        "invalid/signature_r_identity.kb": r_identity_signed(base, alice).encode(),
    }
    for file, encoded, _ in ED25519_BAD_KEYS:
        out[file] = PublicKeyFile(
            Suite.X25519, "mallory", alice.exchange_public, encoded
        ).to_bytes()
    out |= p256_derived(roots, keys)
    out |= pq_derived(roots, keys)
    v2 = v2_file(alice, ALICE_LABEL.encode())
    n = len(ALICE_LABEL.encode())
    out |= {
        "valid/alice_v2.kbpk": v2,
        "valid/alice_v2.pub.txt": armor(v2, PUBLIC_KEY),
        "valid/alice_v2_label_200_bytes.kbpk": v2_file(alice, LONG_LABEL.encode()),
        "invalid/pubkey_v2_label_edited.kbpk": v2[:9]
        + b"Mallory Evil <alice@example.com>"[:n]
        + v2[9 + n :],
        "invalid/pubkey_v2_label_signed_by_mallory.kbpk": v2_file(
            alice, ALICE_LABEL.encode(), signer=keys["mallory"]
        ),
        "invalid/pubkey_v2_exchange_key_swapped.kbpk": v2[: 9 + n + 2]
        + keys["bob"].exchange_public
        + v2[9 + n + 2 + 32 :],
        "invalid/pubkey_v2_label_not_utf8.kbpk": v2_file(alice, b"Alice \xff\xfe"),
        "invalid/pubkey_v2_label_control_character.kbpk": v2_file(alice, b"Alice\x1b[31m"),
        "invalid/pubkey_v2_label_bidi_override.kbpk": v2_file(
            alice, "Alice \u202emoc.elpmaxe".encode()
        ),
        "invalid/pubkey_v2_label_not_nfc.kbpk": v2_file(alice, "Zoe\u0301".encode()),
        "invalid/pubkey_v2_label_leading_space.kbpk": v2_file(alice, b" Alice"),
        "invalid/pubkey_v2_label_201_bytes.kbpk": v2_file(alice, LONG_LABEL.encode() + b"x"),
        "invalid/pubkey_v2_label_empty.kbpk": v2_file(alice, b""),
        "invalid/pubkey_v2_trailing_byte.kbpk": v2 + b"\x00",
        "invalid/pubkey_v2_no_label_signature.kbpk": v2[:-66],
        "invalid/pubkey_v2_label_signature_len_63.kbpk": v2_file(
            alice, ALICE_LABEL.encode(), signature_len=63
        ),
    }
    return out


def _der(signature: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))


def _high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:])
    return signature[:32] + (suites.P256_ORDER - s).to_bytes(32)


def p256_derived(roots: dict[str, bytes], keys: dict[str, TestKey]) -> dict[str, bytes]:
    """The p256 vectors made from the p256 roots and dave's keys (FORMAT.md 1.3, 2.5, 3)."""
    one = roots["valid/p256_one_recipient.kb"]
    base = Raw.of(one)
    dave = keys["dave"]
    sig = base.signature
    enc, rest = base.recipients[0][1][:65], base.recipients[0][1][65:]
    off_curve = enc[:64] + bytes([enc[64] ^ 0x01])
    pub = dave.public_file().to_bytes()
    x = dave.exchange_public[1:33]
    y = int.from_bytes(dave.exchange_public[33:])

    def pubfile(exchange: bytes, signature: bytes | None = None) -> bytes:
        return PublicKeyFile(
            Suite.P256, "dave", exchange, dave.signature_public if signature is None else signature
        ).to_bytes()

    v2 = v2_file(dave, DAVE_LABEL.encode())
    return {
        "valid/p256_armored.txt": armor(one, BLOB),
        "valid/dave_v2.kbpk": v2,
        "invalid/p256_signature_high_s.kb": replace(base, signature=_high_s(sig)).encode(),
        "invalid/p256_signature_r_zero.kb": replace(base, signature=bytes(32) + sig[32:]).encode(),
        "invalid/p256_signature_s_zero.kb": replace(base, signature=sig[:32] + bytes(32)).encode(),
        "invalid/p256_signature_s_is_n.kb": replace(
            base, signature=sig[:32] + suites.P256_ORDER.to_bytes(32)
        ).encode(),
        "invalid/p256_signature_r_is_n.kb": replace(
            base, signature=suites.P256_ORDER.to_bytes(32) + sig[32:]
        ).encode(),
        "invalid/p256_signature_der.kb": replace(base, signature=_der(sig)).encode(),
        "invalid/p256_signature_len_65.kb": replace(base, signature=sig + b"\x00").encode(),
        "invalid/p256_signature_flipped.kb": _flip_last(one),
        "invalid/p256_wrapped_len_wrong.kb": replace(
            base, recipients=((base.recipients[0][0], base.recipients[0][1][:-1]),)
        ).encode(),
        "invalid/p256_wrap_enc_off_curve_resigned.kb": replace(
            base, recipients=((base.recipients[0][0], off_curve + rest),)
        )
        .resigned(dave)
        .encode(),
        "invalid/pubkey_p256_off_curve.kbpk": pubfile(
            dave.exchange_public[:64] + bytes([dave.exchange_public[64] ^ 0x01])
        ),
        "invalid/pubkey_p256_identity_as_zero_point.kbpk": pubfile(
            dave.exchange_public, b"\x04" + bytes(64)
        ),
        "invalid/pubkey_p256_identity_sec1.kbpk": pub[: 9 + 4]
        + b"\x00\x01\x00"
        + pub[9 + 4 + 2 + 65 :],
        "invalid/pubkey_p256_compressed.kbpk": pub[: 9 + 4]
        + b"\x00\x21"
        + bytes([2 + (y & 1)])
        + x
        + pub[9 + 4 + 2 + 65 :],
        "invalid/pubkey_p256_hybrid.kbpk": pubfile(bytes([6 + (y & 1)]) + dave.exchange_public[1:]),
        "invalid/pubkey_p256_x_is_p.kbpk": pubfile(
            b"\x04" + P256_PRIME.to_bytes(32) + dave.exchange_public[33:]
        ),
        "invalid/pubkey_v2_p256_label_signature_high_s.kbpk": v2[:-64] + _high_s(v2[-64:]),
        "invalid/pubkey_v2_p256_label_signature_der.kbpk": v2[:-66]
        + len(der_label := _der(v2[-64:])).to_bytes(2, "big")
        + der_label,
    }


#: pq files that need a fresh ML-DSA-65 signature besides an export (hedged signing is random
#: in ``cryptography``): drawn like the roots (``--add``: only when missing), then committed.
def _pq_resigned_wrap(roots: dict[str, bytes], keys: dict[str, TestKey], at: int) -> bytes:
    base = Raw.of(roots["valid/pq_one_recipient.kb"])
    rid, wrapped = base.recipients[0]
    flipped = wrapped[:at] + bytes([wrapped[at] ^ 0x01]) + wrapped[at + 1 :]
    return replace(base, recipients=((rid, flipped),)).resigned(keys["frank"]).encode()


PQ_SIGNED: dict[str, Callable[[dict[str, bytes], dict[str, TestKey]], bytes]] = {
    "valid/frank_v2.kbpk": lambda roots, keys: v2_file(keys["frank"], FRANK_LABEL.encode()),
    "invalid/pq_wrap_mlkem_ciphertext_flipped_resigned.kb": lambda roots, keys: _pq_resigned_wrap(
        roots, keys, 0
    ),
    "invalid/pq_wrap_x25519_enc_flipped_resigned.kb": lambda roots, keys: _pq_resigned_wrap(
        roots, keys, 1088
    ),
}


def pq_derived(roots: dict[str, bytes], keys: dict[str, TestKey]) -> dict[str, bytes]:
    """The pq vectors made by byte edits of the pq roots and frank's keys (FORMAT.md 1.3,
    2.3, 2.5, 3): no new signature, so ``--check`` rebuilds them."""
    one = roots["valid/pq_one_recipient.kb"]
    base, other = Raw.of(one), Raw.of(roots["valid/pq_two_recipients.kb"])
    frank = keys["frank"]
    sig, other_sig = base.signature, other.signature
    rid, wrapped = base.recipients[0]
    exchange, signature = frank.exchange_public, frank.signature_public
    pub = frank.public_file().to_bytes()
    v2 = roots["valid/frank_v2.kbpk"]
    first = bytes([0x01, (exchange[1] & 0xF0) | 0x0D])  # the first coefficient = q = 0xd01

    def pubfile(exchange: bytes, signature: bytes) -> bytes:
        return PublicKeyFile(Suite.PQ, "frank", exchange, signature).to_bytes()

    return {
        "valid/pq_armored.txt": armor(one, BLOB),
        "invalid/pq_signature_mldsa_half_flipped.kb": replace(
            base, signature=bytes([sig[0] ^ 0x01]) + sig[1:]
        ).encode(),
        "invalid/pq_signature_ed25519_half_flipped.kb": _flip_last(one),
        "invalid/pq_signature_ed25519_half_of_another_blob.kb": replace(
            base, signature=sig[:3309] + other_sig[3309:]
        ).encode(),
        "invalid/pq_signature_mldsa_half_of_another_blob.kb": replace(
            base, signature=other_sig[:3309] + sig[3309:]
        ).encode(),
        "invalid/pq_signature_len_3372.kb": replace(base, signature=sig[:-1]).encode(),
        "invalid/pq_signature_ed25519_only.kb": replace(base, signature=sig[3309:]).encode(),
        "invalid/pq_wrapped_len_wrong.kb": replace(
            base, recipients=((rid, wrapped[:-1]),)
        ).encode(),
        "invalid/pubkey_pq_ed25519_half_identity.kbpk": pubfile(
            exchange, signature[:1952] + R_IDENTITY
        ),
        "invalid/pubkey_pq_x25519_half_u_0.kbpk": pubfile(exchange[:1184] + bytes(32), signature),
        "invalid/pubkey_pq_mlkem_coefficient_q.kbpk": pubfile(first + exchange[2:], signature),
        "invalid/pubkey_pq_signature_len_1983.kbpk": pub[: 14 + 2 + 1216]
        + (1983).to_bytes(2, "big")
        + signature[:1983],
        "invalid/pubkey_v2_pq_label_edited.kbpk": v2.replace(b"Frank", b"Frenk", 1),
    }


def r_identity_signed(raw: Raw, key: TestKey) -> Raw:
    """``raw`` signed by ``key`` with R = identity: S = H(R || A || M) * a mod L, which
    cofactorless verification (OpenSSL) accepts under an ordinary key (FORMAT.md 2.5)."""
    assert isinstance(key.signature, ed25519.Ed25519PrivateKey)
    h = bytearray(hashlib.sha512(seed(key.name, KeyRole.SIGNATURE)).digest()[:32])
    h[0] &= 248
    h[31] = (h[31] & 127) | 64
    a = int.from_bytes(h, "little")
    message = SIGNATURE_LABEL + raw.body()
    k = hashlib.sha512(R_IDENTITY + key.signature_public + message).digest()
    s = int.from_bytes(k, "little") * a % suites.ED25519_ORDER
    signature = R_IDENTITY + s.to_bytes(32, "little")
    key.signature.public_key().verify(signature, message)  # OpenSSL alone accepts it
    return replace(raw, signature=signature)


# -- the manifest ----------------------------------------------------------------------------


def header_json(spec: RootSpec, keys: dict[str, TestKey]) -> dict[str, Any]:
    signer = keys[spec.signer]
    return {
        "suite": signer.suite.label,
        "algorithm": spec.algorithm.label,
        "generation": spec.generation,
        "created": CREATED,
        "key_id": session_key_id(spec.case).hex(),
        "signer_id": signer.signature_id.hex,
        "name": spec.name,
        "revision": spec.revision,
        "recipients": [keys[r].exchange_id.hex for r in spec.recipients],
    }


def _case(
    name: str,
    file: str,
    result: str,
    stage: str | None,
    description: str,
    *,
    opener: str | None = "alice",
    trusted: tuple[str, ...] = (),
    request_name: str | None = None,
    high_water: dict[str, int] | None = None,
    kind: str = "blob",
    canonical: bool | None = None,
    header: dict[str, Any] | None = None,
    session_key_hex: str | None = None,
    public_key: dict[str, Any] | None = None,
    keys: tuple[str, ...] | None = None,
    trusted_public: tuple[bytes, ...] = (),
    revision_marks: dict[str, int] | None = None,
) -> dict[str, Any]:
    needed = (
        keys
        if keys is not None
        else tuple(dict.fromkeys([*([opener] if opener else []), *trusted]))
    )
    return (
        {
            "name": name,
            "file": file,
            "type": kind,
            "result": result,
            "stage": stage,
            "description": description,
            "keys": list(needed),
            "opener": opener,
            "trusted": list(trusted),
            "request_name": request_name,
            "high_water": high_water or {},
            "canonical": canonical,
            "header": header,
            "session_key": session_key_hex,
            "public_key": public_key,
        }
        | (
            # x25519 signature keys trusted without a private key (no entry in "keys")
            {"trusted_public": [k.hex() for k in trusted_public]} if trusted_public else {}
        )
        | (
            # "NAME/GENERATION" -> the revision mark the opener's state holds (FORMAT.md 2.7)
            {"revision_marks": revision_marks} if revision_marks else {}
        )
    )


# (file, result, stage, description) for the blob vectors that alice opens with no extra trust.
BROKEN = [
    ("invalid/empty.kb", "format_error", "parse", "zero bytes"),
    ("invalid/bad_magic.kb", "format_error", "parse", "magic is 'KBLX'"),
    ("invalid/unknown_version.kb", "unsupported", "parse", "version 2"),
    ("invalid/unknown_suite.kb", "format_error", "parse", "suite code 9 is not assigned"),
    (
        "invalid/suite_pq_with_x25519_sizes.kb",
        "format_error",
        "parse",
        "alice's blob relabelled suite 3 (pq): an 80-byte wrapped key does not fit pq",
    ),
    ("invalid/unknown_algorithm.kb", "format_error", "parse", "algorithm code 9 is not assigned"),
    ("invalid/reserved_flags_set.kb", "format_error", "parse", "flags = 0x80"),
    ("invalid/generation_zero.kb", "format_error", "parse", "generation 0"),
    ("invalid/generation_over_max.kb", "format_error", "parse", "generation 2**63"),
    ("invalid/created_over_max.kb", "format_error", "parse", "created 2**63"),
    ("invalid/name_uppercase.kb", "format_error", "parse", "name 'Payroll'"),
    ("invalid/name_len_zero.kb", "format_error", "parse", "name_len 0, no name"),
    ("invalid/name_len_over_max.kb", "format_error", "parse", "name_len 129"),
    ("invalid/name_starts_with_dot.kb", "format_error", "parse", "name '.payroll'"),
    ("invalid/name_has_slash.kb", "format_error", "parse", "name 'pay/roll'"),
    ("invalid/name_not_ascii.kb", "format_error", "parse", "name is UTF-8 'payröll'"),
    ("invalid/truncated_header.kb", "format_error", "parse", "the first 40 bytes of a valid blob"),
    ("invalid/recipient_count_zero.kb", "format_error", "parse", "recipient_count 0"),
    ("invalid/recipient_count_over_max.kb", "format_error", "parse", "17 recipients"),
    (
        "invalid/recipient_count_too_high.kb",
        "format_error",
        "parse",
        "recipient_count 2, one recipient follows",
    ),
    ("invalid/duplicate_recipient.kb", "format_error", "parse", "the same recipient key id twice"),
    ("invalid/wrapped_len_wrong.kb", "format_error", "parse", "x25519 wrapped_len 79 (must be 80)"),
    ("invalid/signature_len_wrong.kb", "format_error", "parse", "Ed25519 signature_len 63"),
    ("invalid/truncated_signature.kb", "format_error", "parse", "a valid blob minus its last byte"),
    ("invalid/trailing_byte.kb", "format_error", "parse", "a valid blob plus one zero byte"),
    ("invalid/oversized.kb", "format_error", "parse", "32769 bytes (valid blob, zero padding)"),
    ("invalid/armor_noncanonical.txt", "format_error", "parse", "armor in 76-column lines"),
    ("invalid/armor_crlf.txt", "format_error", "parse", "armor with CRLF line ends"),
    ("invalid/armor_no_padding.txt", "format_error", "parse", "armor without '=' padding"),
    ("invalid/armor_wrong_kind.txt", "format_error", "parse", "a blob armored as PUBLIC KEY"),
    ("invalid/armor_text_after_end.txt", "format_error", "parse", "text after the END line"),
    ("invalid/armor_bad_character.txt", "format_error", "parse", "'*' in the base64"),
    ("invalid/armor_binary_inside.txt", "format_error", "parse", "armor of armor"),
    (
        "invalid/revised_revision_zero.kb",
        "format_error",
        "parse",
        "flags bit 0 set with revision 0 (one encoding per value), re-signed by alice",
    ),
    (
        "invalid/revision_changed.kb",
        "verification_error",
        "signature",
        "x25519_revised.kb with revision 3 -> 4 after signing",
    ),
    (
        "invalid/revision_removed.kb",
        "verification_error",
        "signature",
        "x25519_revised.kb with flags 0 and the revision field cut out after signing",
    ),
    (
        "invalid/signature_flipped.kb",
        "verification_error",
        "signature",
        "last signature bit flipped",
    ),
    (
        "invalid/signature_r_identity.kb",
        "verification_error",
        "signature",
        "signed by alice with R = identity (OpenSSL's cofactorless check alone accepts it)",
    ),
    (
        "invalid/forged_by_small_order_signer.kb",
        "verification_error",
        "trust",
        "signer_id of the identity key, R = identity, S = 0 (not trusted by alice)",
    ),
    (
        "invalid/header_name_changed.kb",
        "verification_error",
        "signature",
        "name re-labelled 'salaries' after signing",
    ),
    (
        "invalid/generation_changed.kb",
        "verification_error",
        "signature",
        "generation 1 -> 5 after signing",
    ),
    (
        "invalid/recipient_id_changed.kb",
        "verification_error",
        "signature",
        "recipient key id replaced by bob's after signing",
    ),
    (
        "invalid/signer_id_changed.kb",
        "verification_error",
        "trust",
        "signer_id replaced by bob's signature key id (not trusted by alice)",
    ),
    (
        "invalid/untrusted_signer.kb",
        "verification_error",
        "trust",
        "a well-formed blob wrapped to alice, signed by mallory (the substitution attack)",
    ),
    (
        "invalid/wrap_transplanted.kb",
        "verification_error",
        "unwrap",
        "alice's wrap from x25519_two_recipients.kb pasted in, re-signed by alice",
    ),
    (
        "invalid/wrap_flipped_resigned.kb",
        "verification_error",
        "unwrap",
        "last wrapped byte flipped, re-signed by alice",
    ),
    (
        "invalid/not_a_recipient.kb",
        "verification_error",
        "unwrap",
        "signed by alice, wrapped only for bob",
    ),
]

PUBLIC_BROKEN = [
    (
        "invalid/pubkey_pq_ed25519_half_identity.kbpk",
        "format_error",
        "key",
        "frank's signature key with the identity as its Ed25519 half (small order)",
    ),
    (
        "invalid/pubkey_pq_x25519_half_u_0.kbpk",
        "format_error",
        "key",
        "frank's exchange key with u = 0 as its X25519 half (low order)",
    ),
    (
        "invalid/pubkey_pq_mlkem_coefficient_q.kbpk",
        "format_error",
        "key",
        "frank's exchange key with an ML-KEM-768 coefficient of q = 3329 (FIPS 203 7.2)",
    ),
    (
        "invalid/pubkey_pq_signature_len_1983.kbpk",
        "format_error",
        "parse",
        "pq signature_len 1983 (must be 1984)",
    ),
    (
        "invalid/pubkey_v2_pq_label_edited.kbpk",
        "verification_error",
        "label",
        "frank's version 2 file with its label edited after signing",
    ),
    ("invalid/pubkey_bad_magic.kbpk", "format_error", "parse", "magic 'KBPX'"),
    ("invalid/pubkey_unknown_version.kbpk", "unsupported", "parse", "version 3"),
    ("invalid/pubkey_unknown_suite.kbpk", "format_error", "parse", "suite code 9"),
    ("invalid/pubkey_reserved_set.kbpk", "format_error", "parse", "reserved = 1"),
    (
        "invalid/pubkey_x25519_len_wrong.kbpk",
        "format_error",
        "parse",
        "signature_len 31 for x25519",
    ),
    (
        "invalid/pubkey_trailing_byte.kbpk",
        "format_error",
        "parse",
        "one byte after the signature key",
    ),
    ("invalid/pubkey_truncated.kbpk", "format_error", "parse", "last byte missing"),
    ("invalid/pubkey_rsa_not_der.kbpk", "format_error", "key", "exchange key is 300 bytes of 0x30"),
    ("invalid/pubkey_rsa_exponent_3.kbpk", "format_error", "key", "exchange key has e = 3"),
    (
        "invalid/pubkey_rsa_1024_bits.kbpk",
        "format_error",
        "key",
        "exchange key has a 1024-bit modulus",
    ),
    (
        "invalid/pubkey_x25519_bit_255_set.kbpk",
        "format_error",
        "key",
        "alice's exchange key with bit 255 set (non-canonical X25519)",
    ),
    (
        "invalid/pubkey_x25519_u_is_p_plus_9.kbpk",
        "format_error",
        "key",
        "exchange key u = p + 9 (non-canonical X25519)",
    ),
    ("invalid/pubkey_x25519_low_order_u_0.kbpk", "format_error", "key", "exchange key u = 0"),
    (
        "invalid/pubkey_over_8192_bytes.kbpk",
        "format_error",
        "parse",
        "alice's file padded with zero bytes to 8193 bytes",
    ),
    (
        "invalid/pubkey_armor_over_8192_bytes_decoded.txt",
        "format_error",
        "parse",
        "canonical armor of 8193 bytes (the limit counts the decoded bytes)",
    ),
    *((file, "format_error", "key", what) for file, _, what in ED25519_BAD_KEYS),
    (
        "invalid/pubkey_v2_label_edited.kbpk",
        "verification_error",
        "label",
        "alice's version 2 file with its label changed to another of the same length",
    ),
    (
        "invalid/pubkey_v2_label_signed_by_mallory.kbpk",
        "verification_error",
        "label",
        "alice's keys and label, the label signature made by mallory's key",
    ),
    (
        "invalid/pubkey_v2_exchange_key_swapped.kbpk",
        "verification_error",
        "label",
        "alice's version 2 file with bob's exchange key in place of hers",
    ),
    ("invalid/pubkey_v2_label_not_utf8.kbpk", "format_error", "parse", "label ends ff fe"),
    (
        "invalid/pubkey_v2_label_control_character.kbpk",
        "format_error",
        "parse",
        "label holds ESC (U+001B), signed by alice",
    ),
    (
        "invalid/pubkey_v2_label_bidi_override.kbpk",
        "format_error",
        "parse",
        "label holds U+202E RIGHT-TO-LEFT OVERRIDE, signed by alice",
    ),
    (
        "invalid/pubkey_v2_label_not_nfc.kbpk",
        "format_error",
        "parse",
        "label 'Zoe' + U+0301 (NFD), signed by alice",
    ),
    (
        "invalid/pubkey_v2_label_leading_space.kbpk",
        "format_error",
        "parse",
        "label ' Alice', signed by alice",
    ),
    (
        "invalid/pubkey_v2_label_201_bytes.kbpk",
        "format_error",
        "parse",
        "label of 201 bytes, signed by alice",
    ),
    ("invalid/pubkey_v2_label_empty.kbpk", "format_error", "parse", "label_len 0"),
    (
        "invalid/pubkey_v2_trailing_byte.kbpk",
        "format_error",
        "parse",
        "one byte after the label signature",
    ),
    (
        "invalid/pubkey_v2_no_label_signature.kbpk",
        "format_error",
        "parse",
        "version 2 without label_signature_len and label_signature",
    ),
    (
        "invalid/pubkey_v2_label_signature_len_63.kbpk",
        "format_error",
        "parse",
        "label_signature_len 63 for x25519",
    ),
]


# (file, result, stage, description) for the p256 blob vectors dave opens (FORMAT.md 2.5).
PQ_BROKEN = [
    (
        "invalid/pq_signature_mldsa_half_flipped.kb",
        "verification_error",
        "signature",
        "first bit of the ML-DSA-65 half flipped; the Ed25519 half is valid",
    ),
    (
        "invalid/pq_signature_ed25519_half_flipped.kb",
        "verification_error",
        "signature",
        "last bit of the Ed25519 half flipped; the ML-DSA-65 half is valid",
    ),
    (
        "invalid/pq_signature_ed25519_half_of_another_blob.kb",
        "verification_error",
        "signature",
        "a valid ML-DSA-65 half, and frank's valid Ed25519 half of pq_two_recipients.kb",
    ),
    (
        "invalid/pq_signature_mldsa_half_of_another_blob.kb",
        "verification_error",
        "signature",
        "frank's valid ML-DSA-65 half of pq_two_recipients.kb, and a valid Ed25519 half",
    ),
    ("invalid/pq_signature_len_3372.kb", "format_error", "parse", "pq signature_len 3372"),
    (
        "invalid/pq_signature_ed25519_only.kb",
        "format_error",
        "parse",
        "only the Ed25519 half (signature_len 64)",
    ),
    (
        "invalid/pq_wrapped_len_wrong.kb",
        "format_error",
        "parse",
        "pq wrapped_len 1167 (must be 1168 for aes-256-gcm)",
    ),
    (
        "invalid/pq_wrap_mlkem_ciphertext_flipped_resigned.kb",
        "verification_error",
        "unwrap",
        "first byte of the ML-KEM-768 ciphertext flipped, re-signed by frank",
    ),
    (
        "invalid/pq_wrap_x25519_enc_flipped_resigned.kb",
        "verification_error",
        "unwrap",
        "first byte of the X25519 part of enc flipped, re-signed by frank",
    ),
]

P256_BROKEN = [
    (
        "invalid/p256_signature_high_s.kb",
        "verification_error",
        "signature",
        "dave's valid blob with s replaced by n - s: valid ECDSA, refused (high S)",
    ),
    ("invalid/p256_signature_r_zero.kb", "verification_error", "signature", "r = 0"),
    ("invalid/p256_signature_s_zero.kb", "verification_error", "signature", "s = 0"),
    ("invalid/p256_signature_r_is_n.kb", "verification_error", "signature", "r = n"),
    ("invalid/p256_signature_s_is_n.kb", "verification_error", "signature", "s = n"),
    (
        "invalid/p256_signature_der.kb",
        "format_error",
        "parse",
        "the same r, s as a DER ECDSA-Sig-Value: signature_len is not 64",
    ),
    ("invalid/p256_signature_len_65.kb", "format_error", "parse", "signature_len 65"),
    (
        "invalid/p256_signature_flipped.kb",
        "verification_error",
        "signature",
        "last signature bit flipped",
    ),
    (
        "invalid/p256_wrapped_len_wrong.kb",
        "format_error",
        "parse",
        "p256 wrapped_len 112 (must be 65 + 32 + 16 = 113)",
    ),
    (
        "invalid/p256_wrap_enc_off_curve_resigned.kb",
        "verification_error",
        "unwrap",
        "the last byte of the HPKE enc flipped (off the curve), re-signed by dave",
    ),
]
P256_PUBLIC_BROKEN = [
    (
        "invalid/pubkey_p256_off_curve.kbpk",
        "format_error",
        "key",
        "dave's exchange key with the last byte of y flipped: not on the curve",
    ),
    (
        "invalid/pubkey_p256_identity_as_zero_point.kbpk",
        "format_error",
        "key",
        "signature key 04 || 64 zero bytes, (0, 0), how some libraries write the identity",
    ),
    (
        "invalid/pubkey_p256_identity_sec1.kbpk",
        "format_error",
        "parse",
        "exchange key is the SEC1 identity 00 (exchange_len 1)",
    ),
    (
        "invalid/pubkey_p256_compressed.kbpk",
        "format_error",
        "parse",
        "dave's exchange key SEC1-compressed (exchange_len 33)",
    ),
    (
        "invalid/pubkey_p256_hybrid.kbpk",
        "format_error",
        "key",
        "dave's exchange key in the X9.62 hybrid form (first byte 06/07)",
    ),
    ("invalid/pubkey_p256_x_is_p.kbpk", "format_error", "key", "exchange key with x = p"),
    (
        "invalid/pubkey_v2_p256_label_signature_high_s.kbpk",
        "verification_error",
        "label",
        "dave's version 2 file, its label signature's s replaced by n - s",
    ),
    (
        "invalid/pubkey_v2_p256_label_signature_der.kbpk",
        "format_error",
        "parse",
        "dave's version 2 file with the label signature in DER",
    ),
]
PUBLIC_BROKEN += P256_PUBLIC_BROKEN


def public_json(key: TestKey, version: int, label: str) -> dict[str, Any]:
    """The manifest's fields of a valid public key file (``label_signed``: version 2)."""
    return {
        "version": version,
        "suite": key.suite.label,
        "label": label,
        "label_signed": version == 2,
        "exchange": key.exchange_public.hex(),
        "signature": key.signature_public.hex(),
        "exchange_id": key.exchange_id.hex,
        "signature_id": key.signature_id.hex,
        "fingerprint": fingerprint(key.suite, key.exchange_public, key.signature_public),
    }


def manifest(keys: dict[str, TestKey]) -> dict[str, Any]:
    roots = {spec.file: spec for spec in ROOTS}
    cases = []

    def valid(
        file: str, opener: str, trusted: tuple[str, ...] = (), source: str | None = None
    ) -> None:
        spec = roots[source or file]
        cases.append(
            _case(
                Path(file).name.split(".")[0] + ("" if opener == spec.signer else f"_as_{opener}"),
                file,
                "valid",
                None,
                f"{spec.algorithm.label} key {spec.name[:20]!r} generation {spec.generation}, "
                f"signed by {spec.signer}, wrapped for {', '.join(spec.recipients)}",
                opener=opener,
                trusted=trusted,
                request_name=spec.name,
                canonical=file.endswith(".kb") or file.endswith("armored.txt"),
                header=header_json(spec, keys),
                session_key_hex=session_key(spec.case, spec.algorithm.key_size).hex(),
            )
        )

    valid("valid/x25519_one_recipient.kb", "alice")
    valid("valid/x25519_two_recipients.kb", "alice")
    valid("valid/x25519_two_recipients.kb", "bob", ("alice",))
    valid("valid/x25519_aes128_gcm.kb", "alice")
    valid("valid/x25519_chacha20_long_name_max_generation.kb", "alice")
    valid("valid/rsa2048.kb", "carol")
    valid("valid/x25519_revised.kb", "alice")
    valid("valid/x25519_revised.kb", "bob", ("alice",))
    valid("valid/p256_one_recipient.kb", "dave")
    valid("valid/p256_two_recipients.kb", "dave")
    valid("valid/p256_two_recipients.kb", "erin", ("dave",))
    valid("valid/p256_armored.txt", "dave", source="valid/p256_one_recipient.kb")
    valid("valid/pq_one_recipient.kb", "frank")
    valid("valid/pq_two_recipients.kb", "frank")
    valid("valid/pq_two_recipients.kb", "grace", ("frank",))
    valid("valid/pq_armored.txt", "frank", source="valid/pq_one_recipient.kb")
    valid("valid/x25519_armored.txt", "alice", source="valid/x25519_one_recipient.kb")
    valid("valid/x25519_armored_whitespace.txt", "alice", source="valid/x25519_one_recipient.kb")
    for name in ("alice", "carol", "dave", "frank"):
        key = keys[name]
        for file in (f"valid/{name}.kbpk", f"valid/{name}.pub.txt"):
            cases.append(
                _case(
                    Path(file).name.replace(".", "_"),
                    file,
                    "valid",
                    None,
                    f"{name}'s public key file ({key.suite.label}"
                    f"{', armored' if file.endswith('.txt') else ''})",
                    opener=None,
                    kind="public_key",
                    canonical=True,
                    keys=(name,),
                    public_key=public_json(key, 1, name),
                )
            )
    for file, label, what in [
        ("valid/alice_v2.kbpk", ALICE_LABEL, ""),
        ("valid/alice_v2.pub.txt", ALICE_LABEL, ", armored"),
        ("valid/alice_v2_label_200_bytes.kbpk", LONG_LABEL, ", a 200-byte non-ASCII label"),
    ]:
        cases.append(
            _case(
                Path(file).name.replace(".", "_"),
                file,
                "valid",
                None,
                f"alice's version 2 public key file, its label signed (x25519{what})",
                opener=None,
                kind="public_key",
                canonical=True,
                keys=("alice",),
                public_key=public_json(keys["alice"], 2, label),
            )
        )
    cases.append(
        _case(
            "dave_v2_kbpk",
            "valid/dave_v2.kbpk",
            "valid",
            None,
            "dave's version 2 public key file, its label signed (p256, RFC 6979 nonce, low S)",
            opener=None,
            kind="public_key",
            canonical=True,
            keys=("dave",),
            public_key=public_json(keys["dave"], 2, DAVE_LABEL),
        )
    )
    cases.append(
        _case(
            "frank_v2_kbpk",
            "valid/frank_v2.kbpk",
            "valid",
            None,
            "frank's version 2 public key file, its label signed (pq: ML-DSA-65 and Ed25519)",
            opener=None,
            kind="public_key",
            canonical=True,
            keys=("frank",),
            public_key=public_json(keys["frank"], 2, FRANK_LABEL),
        )
    )
    cases.append(
        _case(
            "alice_armor_over_8192_bytes_pub_txt",
            "valid/alice_armor_over_8192_bytes.pub.txt",
            "valid",
            None,
            "alice's armored public key file followed by 8192 LFs: over 8192 bytes of input, "
            "but the 8192-byte limit counts the decoded bytes",
            opener=None,
            kind="public_key",
            canonical=False,
            keys=("alice",),
            public_key=public_json(keys["alice"], 1, "alice"),
        )
    )
    cases.append(
        _case(
            "forged_by_small_order_signer_trusted",
            "invalid/forged_by_small_order_signer.kb",
            "verification_error",
            "signature",
            "R = identity, S = 0 by the identity key, which alice's state trusts (an entry "
            "made before keys were checked): the key verifies nothing (FORMAT.md 2.5)",
            trusted_public=(R_IDENTITY,),
        )
    )
    cases.append(
        _case(
            "cross_name_request",
            "valid/x25519_one_recipient.kb",
            "verification_error",
            "request",
            "a valid 'payroll' blob opened as 'backups' (a cross-name swap in the store)",
            request_name="backups",
        )
    )
    cases.append(
        _case(
            "rolled_back",
            "valid/x25519_one_recipient.kb",
            "verification_error",
            "rollback",
            "a valid 'payroll' generation 1 blob after the container has seen generation 2",
            request_name="payroll",
            high_water={"payroll": 2},
        )
    )
    cases.append(
        _case(
            "revision_rolled_back",
            "valid/x25519_revised.kb",
            "verification_error",
            "rollback",
            "a valid 'payroll' generation 2 revision 3 blob after the container has seen "
            "revision 4 of generation 2 (an older recipient list put back, FORMAT.md 2.7 step 5)",
            request_name="payroll",
            high_water={"payroll": 2},
            revision_marks={"payroll/2": 4},
        )
    )
    cases.append(
        _case(
            "suite_mismatch",
            "valid/rsa2048.kb",
            "verification_error",
            "trust",
            "a valid rsa blob opened by an x25519 container (2.7 step 2 checks the suite first)",
        )
    )
    for file, result, stage, description in BROKEN:
        cases.append(_case(Path(file).name.split(".")[0], file, result, stage, description))
    cases.append(
        _case(
            "rsa_unwrapped_key_length_wrong",
            "invalid/rsa_unwrapped_key_length_wrong.kb",
            "verification_error",
            "unwrap",
            "signed by carol; the OAEP wrap holds 31 bytes for an aes-256-gcm key",
            opener="carol",
        )
    )
    for file, result, stage, description in P256_BROKEN:
        cases.append(
            _case(Path(file).name.split(".")[0], file, result, stage, description, opener="dave")
        )
    for file, result, stage, description in PQ_BROKEN:
        cases.append(
            _case(Path(file).name.split(".")[0], file, result, stage, description, opener="frank")
        )
    cases.append(
        _case(
            "pq_suite_mismatch",
            "valid/pq_one_recipient.kb",
            "verification_error",
            "trust",
            "a valid pq blob opened by an x25519 container (2.7 step 2)",
        )
    )
    cases.append(
        _case(
            "p256_suite_mismatch",
            "valid/p256_one_recipient.kb",
            "verification_error",
            "trust",
            "a valid p256 blob opened by an x25519 container (2.7 step 2)",
        )
    )
    for file, result, stage, description in PUBLIC_BROKEN:
        cases.append(
            _case(
                Path(file).name.split(".")[0],
                file,
                result,
                stage,
                description,
                opener=None,
                kind="public_key",
                keys=(),
            )
        )
    return {
        "format": "keyblob-test-vectors/v1",
        "generator": "tools/gen_vectors.py",
        "spec": "docs/FORMAT.md",
        "results": {
            "valid": "every check passes; the opener gets session_key",
            "format_error": "FormatError: the bytes do not parse (FORMAT.md 2.8)",
            "unsupported": "UnsupportedError: well-formed, but a version or suite not implemented",
            "verification_error": "VerificationError at the named import step (FORMAT.md 2.7)",
        },
        "stages": {
            "parse": "import step 1 (dearmor, parse; for public keys: the KBPK layout)",
            "key": (
                "public key file: a key that is not a valid key of its suite "
                "(FORMAT.md 1.2, 1.3, 3)"
            ),
            "label": (
                "public key file version 2: the label signature does not verify under the "
                "file's signature key (FORMAT.md 3.2)"
            ),
            "trust": "import step 2 (the suite, then the signer)",
            "signature": "import step 3",
            "request": "import step 4",
            "rollback": "import step 5",
            "unwrap": "import step 6",
        },
        "created": CREATED,
        "keys": {
            name: {
                "suite": key.suite.label,
                **{
                    role.name.lower(): {
                        "file": None
                        if key.suite is Suite.PQ
                        else f"keys/{key_path(name, role).name}",
                        "seed": (
                            pq_seed(name, role).hex()
                            if key.suite is Suite.PQ
                            else seed(name, role).hex()
                            if key.suite in SEEDED
                            else None
                        ),
                        "public": (
                            key.exchange_public
                            if role is KeyRole.EXCHANGE
                            else key.signature_public
                        ).hex(),
                        "key_id": (
                            key.exchange_id if role is KeyRole.EXCHANGE else key.signature_id
                        ).hex,
                    }
                    for role in KeyRole
                },
            }
            for name, key in keys.items()
        },
        "cases": cases,
    }


# -- running a case through the package ------------------------------------------------------


def _stage_of(message: str) -> str:
    if message.startswith(("the blob uses suite", UNTRUSTED.split("{", 1)[0])):
        return "trust"
    if message == suites.BAD_SIGNATURE or re.fullmatch(
        blobs.UNUSABLE_SIGNER.format(signer="sg-[0-9a-f]{8}", why=".*"), message
    ):
        return "signature"
    if message.startswith(("the blob is for key", "the blob holds key id")):
        return "request"
    if message.startswith("rolled back"):
        return "rollback"
    if message in (suites.UNWRAP_FAILED, blobs.BAD_KEY_LENGTH) or message.startswith(
        "the blob is not wrapped for"
    ):
        return "unwrap"
    return f"unknown ({message})"


@dataclass
class Outcome:
    result: str
    stage: str | None
    header: dict[str, Any] | None = None
    session_key: str | None = None
    public_key: dict[str, Any] | None = None
    unwrap_calls: int = 0


def run_case(case: dict[str, Any], keys: dict[str, TestKey], data: bytes) -> Outcome:
    """What the package makes of one case: ``blobs.verify`` with a test container."""
    if case["type"] == "public_key":
        return _run_public_key(data)
    opener = keys[case["opener"]]
    state = State(
        marks=dict(case["high_water"]),
        revisions={
            (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1])): v
            for k, v in case.get("revision_marks", {}).items()
        },
        trusted=tuple(keys[t].trusted() for t in case["trusted"])
        + tuple(
            TrustedSigner(
                key_id=key_id_for(Suite.X25519, KeyRole.SIGNATURE, bytes.fromhex(k)),
                suite=Suite.X25519,
                public=bytes.fromhex(k),
                exchange=opener.exchange_public,
                label="trusted-public",
                added=CREATED,
            )
            for k in case.get("trusted_public", [])
        ),
    )
    provider = VectorProvider(opener, state)
    try:
        verified = blobs.verify(provider, data, name=case["request_name"])
    except UnsupportedError:
        return Outcome("unsupported", "parse", unwrap_calls=provider.unwrap_calls)
    except FormatError:
        return Outcome("format_error", "parse", unwrap_calls=provider.unwrap_calls)
    except VerificationError as e:
        return Outcome("verification_error", _stage_of(str(e)), unwrap_calls=provider.unwrap_calls)
    h = verified.header
    assert verified.key is not None
    return Outcome(
        "valid",
        None,
        header={
            "suite": h.suite.label,
            "algorithm": h.algorithm.label,
            "generation": h.generation,
            "created": h.created,
            "key_id": h.key_id.hex,
            "signer_id": h.signer_id.hex,
            "name": h.name,
            "revision": h.revision,
            "recipients": [r.hex for r in verified.recipients],
        },
        session_key=verified.key.unsafe_raw_bytes().hex(),
        unwrap_calls=provider.unwrap_calls,
    )


def _run_public_key(data: bytes) -> Outcome:
    original = data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            data = dearmor(data, PUBLIC_KEY)
        pub = PublicKeyFile.from_bytes(data)
    except UnsupportedError:
        return Outcome("unsupported", "parse")
    except FormatError:
        return Outcome("format_error", "parse")
    try:
        suites.load_exchange_public(pub.suite, pub.exchange)
        suites.load_signature_public(pub.suite, pub.signature)
    except FormatError:
        return Outcome("format_error", "key")
    try:  # the whole reading order, as the CLI runs it (FORMAT.md 3)
        if publickeys.read(original) != pub:
            return Outcome("unknown (publickeys.read read another file)", None)
    except VerificationError as e:
        if publickeys.LABEL_NOT_SIGNED.split("}", 1)[1].split(";")[0] not in str(e):
            return Outcome("verification_error", f"unknown ({e})")
        return Outcome("verification_error", "label")
    return Outcome(
        "valid",
        None,
        public_key={
            "version": pub.version,
            "suite": pub.suite.label,
            "label": pub.label,
            "label_signed": pub.label_signed,
            "exchange": pub.exchange.hex(),
            "signature": pub.signature.hex(),
            "exchange_id": pub.exchange_id.hex,
            "signature_id": pub.signature_id.hex,
            "fingerprint": pub.fingerprint,
        },
    )


def expected_outcome(case: dict[str, Any]) -> Outcome:
    return Outcome(
        case["result"],
        case["stage"],
        header=case["header"],
        session_key=case["session_key"],
        public_key=case["public_key"],
    )


def same_outcome(got: Outcome, case: dict[str, Any]) -> bool:
    want = expected_outcome(case)
    return (got.result, got.stage, got.header, got.session_key, got.public_key) == (
        want.result,
        want.stage,
        want.header,
        want.session_key,
        want.public_key,
    )


# -- encrypted data (FORMAT.md section 7): tests/vectors/data/ -------------------------------
#
# Fully deterministic: fixed session keys, key ids, names, generations and salts (the private
# ``_salt`` of ``stream.encrypt_bytes``); every plaintext is PATTERN of its length.  --check
# rebuilds every file and the manifest byte for byte, then runs every case through the package.

DATA = VECTORS / "data"
DATA_MANIFEST = DATA / "manifest.json"
SALT_LABEL = b"keyblob/v1/test-vector-salt\x00"
PATTERN = "bytes(i % 251 for i in range(length))"
DATA_SIZES = (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 100)
DATA_AD = b"keyblob test vector: associated data\x00\x01\x02"
#: (name, generation) of the session key of each algorithm.
DATA_KEYS = {
    Algorithm.AES_256_GCM: ("payroll", 1),
    Algorithm.AES_128_GCM: ("backups.2024", 7),
    Algorithm.CHACHA20_POLY1305: (LONG_NAME, MAX_GENERATION),
}
DATA_STAGES = {
    "header": "decrypt step 1: the data header (7.1) does not parse; no key is loaded",
    "key": "decrypt step 1: the session key is not the one the header names "
    "(name, generation, key id, algorithm)",
    "commitment": "decrypt step 3: the key commitment does not match (another key, header or "
    "associated data, or a modified salt or commitment); no chunk is decrypted",
    "framing": "decrypt steps 3-4: the payload is shorter than 56 bytes, or the final chunk is "
    "missing (0 bytes after the last full 16400-byte block) or shorter than a tag (1-15)",
    "chunk N": "decrypt step 5: chunk N (from 0) fails authentication",
}


def pattern(length: int) -> bytes:
    """Every data vector's plaintext: PATTERN."""
    return bytes(i % 251 for i in range(length))


@dataclass(frozen=True)
class DataKey:
    """A session key as the manifest records it (and as the decryptor must hold it)."""

    name: str
    generation: int
    key_id: bytes
    algorithm: Algorithm
    key: bytes

    @classmethod
    def of(cls, algorithm: Algorithm, tag: str | None = None) -> DataKey:
        name, generation = DATA_KEYS[algorithm]
        label = f"data/{algorithm.label}"
        return cls(
            name,
            generation,
            session_key_id(label + (f"/{tag}" if tag else "")),
            algorithm,
            session_key(label, algorithm.key_size),
        )

    def header(self) -> DataHeader:
        return DataHeader(self.algorithm, self.generation, KeyId(self.key_id), self.name)

    def session(self) -> SessionKey:
        return _make_session_key(
            name=self.name,
            key_id=KeyId(self.key_id),
            generation=self.generation,
            algorithm=self.algorithm,
            created=0,
            key=self.key,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "generation": self.generation,
            "key_id": self.key_id.hex(),
            "algorithm": self.algorithm.label,
            "key": self.key.hex(),
        }


def data_salt(case: str) -> bytes:
    return hashlib.sha256(SALT_LABEL + case.encode()).digest()[: stream.SALT_SIZE]


def seal(key: DataKey, case: str, length: int, ad: bytes = b"") -> bytes:
    """Header || payload of PATTERN(length), with this case's salt."""
    head = key.header().to_bytes()
    context = CONTEXT_LABEL + head + ad  # FORMAT.md 7.2, spelled out
    instance = _DATA_INSTANCES[key.algorithm]
    return head + stream.encrypt_bytes(
        instance, key.key, context, pattern(length), _salt=data_salt(case)
    )


_DATA_INSTANCES = {
    Algorithm.AES_256_GCM: stream.COBBLESTONE_256,
    Algorithm.AES_128_GCM: stream.COBBLESTONE_128,
    Algorithm.CHACHA20_POLY1305: stream.CHACHA20_POLY1305,
}


def raw_data_header(
    *,
    magic: bytes = b"KBDT",
    version: int = 1,
    algorithm: int = Algorithm.AES_256_GCM,
    flags: int = 0,
    generation: int = 1,
    key_id: bytes | None = None,
    name: bytes = b"payroll",
) -> bytes:
    """A data header whose fields may hold any value (for the broken ones)."""
    kid = DataKey.of(Algorithm.AES_256_GCM).key_id if key_id is None else key_id
    return b"".join(
        [
            magic,
            bytes([version, algorithm, flags]),
            generation.to_bytes(8, "big"),
            kid,
            bytes([len(name)]),
            name,
        ]
    )


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


@dataclass(frozen=True)
class DataCase:
    name: str
    file: str
    data: bytes
    result: str
    stage: str | None
    description: str
    key: DataKey
    associated_data: bytes = b""
    length: int | None = None  # valid: the plaintext length
    released: int = 0  # invalid: the most a chunk-by-chunk decryptor may release first

    def to_json(self) -> dict[str, Any]:
        valid = self.result == "valid"
        assert self.length is not None or not valid
        return {
            "name": self.name,
            "file": self.file,
            "result": self.result,
            "stage": self.stage,
            "description": self.description,
            "session_key": self.key.to_json(),
            "associated_data": self.associated_data.hex(),
            "salt": self.data[len(self.key.header().to_bytes()) :][: stream.SALT_SIZE].hex()
            if valid
            else None,
            "plaintext_length": self.length if valid else None,
            "plaintext_sha512": hashlib.sha512(pattern(self.length)).hexdigest()
            if valid and self.length is not None
            else None,
            "partial_plaintext": None if valid else self.released,
        }


def data_cases() -> list[DataCase]:
    """Every data vector, valid then invalid, each a deterministic function of fixed values."""
    cases: list[DataCase] = []
    for algorithm in DATA_KEYS:
        key = DataKey.of(algorithm)
        stem = algorithm.label.replace("-", "_")
        for size in DATA_SIZES:
            name = f"{stem}_{size}"
            cases.append(
                DataCase(
                    name,
                    f"valid/{name}.kbd",
                    seal(key, name, size),
                    "valid",
                    None,
                    f"{size} bytes under {algorithm.label} key {key.name[:20]!r} "
                    f"generation {key.generation} ({size // CHUNK + 1} "
                    f"chunk{'s' if size >= CHUNK else ''})",
                    key,
                    length=size,
                )
            )
    k256 = DataKey.of(Algorithm.AES_256_GCM)
    name = "aes_256_gcm_1000_associated_data"
    cases.append(
        DataCase(
            name,
            f"valid/{name}.kbd",
            seal(k256, name, 1000, DATA_AD),
            "valid",
            None,
            "1000 bytes with associated data (authenticated, not stored)",
            k256,
            DATA_AD,
            length=1000,
        )
    )

    def bad(
        name: str,
        data: bytes,
        result: str,
        stage: str,
        description: str,
        *,
        key: DataKey = k256,
        ad: bytes = b"",
        released: int = 0,
    ) -> None:
        cases.append(
            DataCase(
                name,
                f"invalid/{name}.kbd",
                data,
                result,
                stage,
                description,
                key,
                ad,
                released=released,
            )
        )

    # Header (7.1): edits of a 100-byte message; the payload is the real one.
    small = seal(k256, "invalid/small", 100)
    hlen = len(k256.header().to_bytes())
    payload = small[hlen:]
    for name, header, result, description in [
        ("bad_magic", raw_data_header(magic=b"KBDX"), "format_error", "magic 'KBDX'"),
        ("unsupported_version", raw_data_header(version=2), "unsupported", "version 2"),
        ("unknown_algorithm", raw_data_header(algorithm=9), "format_error", "algorithm 9"),
        ("algorithm_zero", raw_data_header(algorithm=0), "format_error", "algorithm 0"),
        (
            "algorithm_not_for_data",
            raw_data_header(algorithm=0x12),
            "format_error",
            "algorithm 0x12 (a code outside 1-3, e.g. a CryptoAPI key's)",
        ),
        ("flags_set", raw_data_header(flags=0x01), "format_error", "flags 0x01"),
        ("generation_zero", raw_data_header(generation=0), "format_error", "generation 0"),
        (
            "generation_over_max",
            raw_data_header(generation=2**63),
            "format_error",
            "generation 2**63",
        ),
        ("bad_name", raw_data_header(name=b"Payroll"), "format_error", "name 'Payroll'"),
        ("name_len_zero", raw_data_header(name=b""), "format_error", "name_len 0, no name"),
        ("name_len_over_max", raw_data_header(name=b"a" * 129), "format_error", "name_len 129"),
    ]:
        bad(name, header + payload, result, "header", f"{description}, then a real payload")
    bad(
        "header_truncated",
        small[: hlen - 3],
        "format_error",
        "header",
        "the first 36 of the header's 39 bytes (inside the name), nothing else",
    )
    bad(
        "header_truncated_fixed_part",
        small[:20],
        "format_error",
        "header",
        "the first 20 bytes (before name_len)",
    )

    # Key and commitment (steps 1 and 3).
    other_name = replace(k256, name="salaries")
    bad(
        "key_name_mismatch",
        seal(k256, "invalid/key_name_mismatch", 100),
        "verification_error",
        "key",
        "a valid 'payroll' ciphertext opened with a key named 'salaries' (same bytes, id, "
        "generation)",
        key=other_name,
    )
    gen2 = DataKey.of(Algorithm.AES_256_GCM, "generation-2")
    gen2 = replace(gen2, generation=2)
    other = seal(gen2, "invalid/header_from_other_generation/donor", 10)
    bad(
        "header_from_other_generation",
        other[:hlen] + seal(k256, "invalid/header_from_other_generation", 100)[hlen:],
        "verification_error",
        "commitment",
        "the header of a 'payroll' generation 2 file (same key bytes, its own key id) on a "
        "generation 1 payload; the key given is the one the header names",
        key=gen2,
    )
    wrong = replace(k256, key=session_key("data/wrong-key", 32))
    bad(
        "wrong_key",
        seal(k256, "invalid/wrong_key", 100),
        "verification_error",
        "commitment",
        "a valid ciphertext opened with other key bytes under the same name, generation, id",
        key=wrong,
    )
    bad(
        "wrong_associated_data",
        seal(k256, "invalid/wrong_associated_data", 100, DATA_AD),
        "verification_error",
        "commitment",
        "encrypted with associated data, opened with that data's last byte changed",
        ad=DATA_AD[:-1] + b"\x03",
    )
    bad(
        "missing_associated_data",
        seal(k256, "invalid/missing_associated_data", 100, DATA_AD),
        "verification_error",
        "commitment",
        "encrypted with associated data, opened without",
    )
    base = seal(k256, "invalid/flipped", 100)
    bad(
        "flipped_salt",
        _flip(base, hlen),
        "verification_error",
        "commitment",
        "first salt byte ^ 0x01",
    )
    bad(
        "flipped_commitment",
        _flip(base, hlen + stream.SALT_SIZE + stream.COMMITMENT_SIZE - 1, 0x80),
        "verification_error",
        "commitment",
        "last commitment byte ^ 0x80",
    )

    # Framing and chunks (steps 3-5), on 2 full chunks and a 100-byte final chunk.
    three = seal(k256, "invalid/three_chunks", 2 * CHUNK + 100)
    start = hlen + stream.HEADER_SIZE
    sealed = stream.SEALED_CHUNK_SIZE
    c0, c1, c2 = (three[start + i * sealed : start + (i + 1) * sealed] for i in range(3))
    head = three[:start]
    assert head + c0 + c1 + c2 == three and len(c2) == 116
    on3 = "of a 2 * 16384 + 100 byte message (chunks 0, 1 full, final chunk 2 of 116 bytes)"
    bad("payload_missing", small[:hlen], "verification_error", "framing", "the header alone")
    bad(
        "payload_truncated_in_salt",
        small[: hlen + 10],
        "verification_error",
        "framing",
        "the header and 10 salt bytes",
    )
    bad(
        "payload_truncated_after_commitment",
        small[: hlen + stream.HEADER_SIZE],
        "verification_error",
        "framing",
        "header, salt and commitment; no chunk (the final chunk is missing)",
    )
    bad(
        "payload_truncated_at_chunk_boundary",
        head + c0,
        "verification_error",
        "framing",
        f"chunk 0 only {on3}",
        released=CHUNK,
    )
    bad(
        "payload_truncated_inside_chunk",
        head + c0 + c1[:8000],
        "verification_error",
        "chunk 1",
        f"chunk 0 and the first 8000 bytes of chunk 1 {on3}",
        released=CHUNK,
    )
    bad(
        "payload_truncated_inside_final_tag",
        head + c0 + c1 + c2[:10],
        "verification_error",
        "framing",
        f"10 bytes of the final chunk left (shorter than a tag) {on3}",
        released=2 * CHUNK,
    )
    one_full = seal(k256, "invalid/missing_final_chunk", CHUNK)
    bad(
        "missing_final_chunk",
        one_full[: -stream.TAG_SIZE],
        "verification_error",
        "framing",
        "a 16384-byte message without its empty 16-byte final chunk",
        released=CHUNK,
    )
    bad(
        "chunks_swapped",
        head + c1 + c0 + c2,
        "verification_error",
        "chunk 0",
        f"chunks 0 and 1 swapped {on3}",
    )
    bad(
        "chunk_duplicated",
        head + c0 + c0 + c1 + c2,
        "verification_error",
        "chunk 1",
        f"chunk 0 twice, then chunks 1 and 2 {on3}",
        released=CHUNK,
    )
    bad(
        "trailing_byte",
        three + b"\x00",
        "verification_error",
        "chunk 2",
        f"one 0x00 byte after the final chunk {on3}",
        released=2 * CHUNK,
    )
    # Same key, salt and context: the empty final chunk of a 3 * 16384-byte message is chunk 3.
    extra = seal(k256, "invalid/three_chunks", 3 * CHUNK)[-stream.TAG_SIZE :]
    bad(
        "trailing_chunk",
        three + extra,
        "verification_error",
        "chunk 2",
        f"a correctly sealed empty chunk 3 after the final chunk {on3}",
        released=2 * CHUNK,
    )
    bad(
        "flipped_tag",
        _flip(three, start + 2 * sealed - 1),
        "verification_error",
        "chunk 1",
        f"last tag byte of chunk 1 ^ 0x01 {on3}",
        released=CHUNK,
    )
    return cases


def data_manifest(cases: list[DataCase]) -> dict[str, Any]:
    return {
        "format": "keyblob-data-test-vectors/v1",
        "generator": "tools/gen_vectors.py",
        "spec": "docs/FORMAT.md section 7",
        "plaintext": PATTERN,
        "results": {
            "valid": "decrypts to plaintext_length bytes of the pattern, with plaintext_sha512",
            "format_error": "FormatError: the data header does not parse (7.1)",
            "unsupported": "UnsupportedError: a data header version this release does not know",
            "verification_error": "VerificationError at the named stage (7.4)",
        },
        "stages": DATA_STAGES,
        "fields": {
            "session_key": "the key the decryptor holds: its name, generation, key_id, "
            "algorithm (what 7.4 step 1 compares with the header) and key bytes",
            "associated_data": "hex; empty for files and the command line",
            "salt": "valid cases: the salt, to re-encrypt the plaintext to the same bytes",
            "partial_plaintext": "invalid cases: the most plaintext bytes a decryptor that "
            "releases each chunk after its tag verifies may have released before the error "
            "(always a prefix of the pattern); a one-shot decryptor releases nothing",
        },
        "cases": [c.to_json() for c in cases],
    }


@dataclass
class DataOutcome:
    result: str
    stage: str | None
    length: int | None = None
    sha512: str | None = None


_MODIFIED = re.compile(r".*chunk \(?(\d+)\)? failed authentication")


def data_stage(error: KeyblobError) -> str:
    """The manifest stage of an error from ``files.decrypt`` / ``files.decrypt_stream``."""
    if isinstance(error, FormatError):
        return "header"
    message = str(error)
    if message.startswith(kbfiles.WRONG_KEY_FOR_HEADER.split("{", 1)[0]):
        return "key"
    if message == stream.WRONG_KEY:
        return "commitment"
    if message == stream.TRUNCATED:
        return "framing"
    match = _MODIFIED.fullmatch(message)
    if match:
        return f"chunk {match.group(1)}"
    return f"unknown ({message})"


def data_key(case: dict[str, Any]) -> SessionKey:
    k = case["session_key"]
    return _make_session_key(
        name=k["name"],
        key_id=KeyId.from_hex(k["key_id"]),
        generation=k["generation"],
        algorithm=Algorithm.from_label(k["algorithm"]),
        created=0,
        key=bytes.fromhex(k["key"]),
    )


def run_data_case(case: dict[str, Any], data: bytes) -> DataOutcome:
    """What ``files.decrypt`` makes of one data case."""
    try:
        plain = kbfiles.decrypt(
            data_key(case), data, associated_data=bytes.fromhex(case["associated_data"])
        )
    except UnsupportedError:
        return DataOutcome("unsupported", "header")
    except (FormatError, VerificationError) as e:
        return DataOutcome(
            "format_error" if isinstance(e, FormatError) else "verification_error", data_stage(e)
        )
    return DataOutcome("valid", None, len(plain), hashlib.sha512(plain).hexdigest())


def same_data_outcome(got: DataOutcome, case: dict[str, Any]) -> bool:
    return (got.result, got.stage, got.length, got.sha512) == (
        case["result"],
        case["stage"],
        case["plaintext_length"],
        case["plaintext_sha512"],
    )


def write_data() -> int:
    cases = data_cases()
    for sub in ("valid", "invalid"):
        (DATA / sub).mkdir(parents=True, exist_ok=True)
        for stale in (DATA / sub).iterdir():
            if f"{sub}/{stale.name}" not in {c.file for c in cases}:
                stale.unlink()
    for c in cases:
        (DATA / c.file).write_bytes(c.data)
    DATA_MANIFEST.write_bytes(_dump(data_manifest(cases)))
    return len(cases)


def check_data() -> list[str]:
    """Every difference between tests/vectors/data/ and what this script builds."""
    if not DATA_MANIFEST.is_file():
        return ["missing data/manifest.json: run tools/gen_vectors.py --write"]
    problems = []
    cases = data_cases()
    files_ = {c.file: c.data for c in cases}
    for rel, data in files_.items():
        path = DATA / rel
        if not path.is_file() or path.read_bytes() != data:
            problems.append(f"data/{rel} differs from the one this script builds")
    on_disk = {f"{sub}/{p.name}" for sub in ("valid", "invalid") for p in (DATA / sub).glob("*")}
    problems += [f"data/{x} is not generated by this script" for x in sorted(on_disk - set(files_))]
    if json.loads(DATA_MANIFEST.read_bytes()) != data_manifest(cases):
        problems.append("data/manifest.json differs from the one this script builds")
    for case in data_manifest(cases)["cases"]:
        path = DATA / case["file"]
        if not path.is_file():
            continue
        got = run_data_case(case, path.read_bytes())
        if not same_data_outcome(got, case):
            problems.append(
                f"data case {case['name']}: the package gives {got.result}/{got.stage}, "
                f"the manifest says {case['result']}/{case['stage']} (or the plaintext differs)"
            )
    return problems


# -- write / check ---------------------------------------------------------------------------


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode() + b"\n"


def generate(
    write: bool, *, keep: bool = False
) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, Any]]:
    """(key PEM files, vector files, manifest); roots are fresh with ``write`` (with ``keep``
    only those missing on disk), else read."""
    pems = make_keys(write)
    keys = load_keys(pems)
    if write:
        roots = {
            spec.file: (VECTORS / spec.file).read_bytes()
            if keep and (VECTORS / spec.file).is_file()
            else build_root(spec, keys)
            for spec in ROOTS
        }
    else:
        roots = {spec.file: (VECTORS / spec.file).read_bytes() for spec in ROOTS}
    for file, build in PQ_SIGNED.items():
        fresh = write and not (keep and (VECTORS / file).is_file())
        roots[file] = build(roots, keys) if fresh else (VECTORS / file).read_bytes()
    files = {**roots, **derived(roots, keys)}
    return pems, files, manifest(keys)


def write(*, keep: bool = False) -> None:
    pems, files, doc = generate(write=True, keep=keep)
    KEYS_DIR.mkdir(parents=True, exist_ok=True)
    for name, pem in pems.items():
        (KEYS_DIR / name).write_bytes(pem)
    for sub in ("valid", "invalid"):
        (VECTORS / sub).mkdir(exist_ok=True)
        for stale in (VECTORS / sub).iterdir():
            if f"{sub}/{stale.name}" not in files:
                stale.unlink()
    for rel, data in files.items():
        (VECTORS / rel).write_bytes(data)
    MANIFEST.write_bytes(_dump(doc))
    data_cases_written = write_data()
    problems = check()
    for p in problems:
        print(f"gen_vectors: {p}", file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print(
        f"wrote {len(files)} vectors, {len(doc['cases'])} cases, {len(pems)} keys, "
        f"{data_cases_written} data vectors to {VECTORS}"
    )


def check() -> list[str]:
    """Every difference between the committed vectors and what they should be."""
    return _check_blobs() + check_data()


def _check_blobs() -> list[str]:
    problems = []
    missing = [
        file
        for file in [*(spec.file for spec in ROOTS), *PQ_SIGNED]
        if not (VECTORS / file).is_file()
    ]
    if missing or not MANIFEST.is_file():
        return [
            f"missing {x}: run tools/gen_vectors.py --write" for x in [*missing, "manifest.json"]
        ]
    pems, files, doc = generate(write=False)
    for name, pem in pems.items():
        path = KEYS_DIR / name
        if not path.is_file() or path.read_bytes() != pem:
            problems.append(f"keys/{name} differs from its seed")
    for name, key in load_keys().items():
        if key.suite is Suite.RSA:
            for k in (key.exchange, key.signature):
                assert isinstance(k, rsa.RSAPrivateKey)
                if (
                    k.key_size != 2048
                    or k.public_key().public_numbers().e != suites.RSA_PUBLIC_EXPONENT
                ):
                    problems.append(f"{name}: not an RSA-2048 key with e = 65537")
    for rel, data in files.items():
        path = VECTORS / rel
        if not path.is_file() or path.read_bytes() != data:
            problems.append(f"{rel} differs from the one derived from the committed roots")
    on_disk = {
        f"{p.parent.name}/{p.name}"
        for sub in ("valid", "invalid")
        for p in (VECTORS / sub).iterdir()
    }
    problems += [
        f"{extra} is not generated by this script" for extra in sorted(on_disk - set(files))
    ]
    committed = json.loads(MANIFEST.read_bytes())
    if committed != doc:
        problems.append("manifest.json differs from the one this script builds")
    listed = {c["file"] for c in doc["cases"]}
    problems += [f"{rel} has no case in the manifest" for rel in sorted(set(files) - listed)]
    keys = load_keys()
    for case in doc["cases"]:
        got = run_case(case, keys, (VECTORS / case["file"]).read_bytes())
        if not same_outcome(got, case):
            problems.append(
                f"case {case['name']}: the package gives {got.result}/{got.stage}, "
                f"the manifest says {case['result']}/{case['stage']} (or header/key differ)"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify the committed vectors (default)")
    mode.add_argument("--write", action="store_true", help="rewrite tests/vectors/")
    mode.add_argument(
        "--add",
        action="store_true",
        help="as --write, but keep the committed roots: draw only those missing",
    )
    mode.add_argument(
        "--write-data",
        action="store_true",
        help="rewrite tests/vectors/data/ only (the key-blob roots are not redrawn)",
    )
    args = parser.parse_args(argv)
    if args.write or args.add:
        write(keep=args.add)
        return 0
    if args.write_data:
        count = write_data()
        problems = check_data()
        for p in problems:
            print(f"gen_vectors: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"wrote {count} data vectors to {DATA}")
        return 0
    problems = check()
    for p in problems:
        print(f"gen_vectors: {p}", file=sys.stderr)
    if problems:
        print(
            "gen_vectors: FAILED (run with --write only if the format changed on purpose)",
            file=sys.stderr,
        )
        return 1
    print(f"gen_vectors: all vectors in {VECTORS} check out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
