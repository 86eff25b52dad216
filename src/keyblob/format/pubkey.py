"""The public key file: a container's two public keys and its label, as handed to others
(FORMAT.md 3: version 1 with the container's name, version 2 with a signed label), its
fingerprint and how people read it aloud, and which raw X25519 / Ed25519 / P-256 / ML-KEM-768
encodings are acceptable keys at all (FORMAT.md 1.3).

The encoding rules are byte and integer comparisons only: no curve arithmetic here (the
P-256 on-curve check is made where the key is decoded, in ``keyblob.providers.suites``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from keyblob.errors import FormatError, UnsupportedError, UsageError
from keyblob.format._wire import Reader, u8, u16
from keyblob.keys import (
    LABEL_MAX,
    NAME_MAX,
    KeyId,
    KeyRole,
    Suite,
    check_label,
    check_name,
    key_id_for,
)

MAGIC = b"KBPK"
VERSION = 1  # the container's name as label, unsigned
VERSION_LABELLED = 2  # a label people choose, signed by the signature key (FORMAT.md 3.2)
LABEL_SIGNATURE_LABEL = b"keyblob/v1/pubkey-label\x00"
#: FORMAT.md 3: the label signature's length: Ed25519 64, RSA-PSS the modulus length.
#: FORMAT.md 3: the label signature's length: Ed25519 64, RSA-PSS the modulus length, P-256
#: r || s 64, pq ML-DSA-65 (3309) || Ed25519 (64).
LABEL_SIGNATURE_SIZES = {
    Suite.X25519: (64,),
    Suite.RSA: (256, 384, 512),
    Suite.P256: (64,),
    Suite.PQ: (3373,),
}
SUPPORTED_SUITES = (Suite.X25519, Suite.RSA, Suite.PQ, Suite.P256)
FINGERPRINT_LABEL = b"keyblob/v1/fingerprint\x00"
MAX_PUBLIC_KEY_SIZE = 1024  # DER of an RSA-4096 SubjectPublicKeyInfo is 550 bytes
#: The largest well-formed file, version 2 pq with a 200-byte label, is 6788 bytes.
MAX_FILE_SIZE = 8192
ED25519_KEY_SIZE = 32
MLKEM768_KEY_SIZE = 1184  # FIPS 203 encapsulation key, k = 3: 1152 bytes of t, then rho
MLDSA65_KEY_SIZE = 1952  # FIPS 204 public key, k = 6: rho (32), then t1 (6 * 320)
PQ_EXCHANGE_KEY_SIZE = MLKEM768_KEY_SIZE + 32  # X-Wing: ML-KEM-768 || X25519, 1216
PQ_SIGNATURE_KEY_SIZE = MLDSA65_KEY_SIZE + ED25519_KEY_SIZE  # ML-DSA-65 || Ed25519, 1984
MLKEM_Q = 3329
X25519_KEY_SIZE = 32
P256_KEY_SIZE = 65  # SEC1 uncompressed: 0x04 || x || y, 32 bytes each, big-endian
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1  # p of the P-256 field (SEC 2 2.4.2)

FIELD_PRIME = 2**255 - 19  # p of Curve25519 / edwards25519
_LOW_255_BITS = 2**255 - 1

# The eight points of order dividing 8 on edwards25519, canonically encoded (RFC 8032
# 5.1.2: y little-endian, bit 255 = sign of x): the identity (y = 1), the point of order 2
# (y = p - 1), the two of order 4 (y = 0) and the four of order 8.  Same points as
# libsodium's blocklist in ge25519_has_small_order() (src/libsodium/crypto_core/ed25519/
# ref10/ed25519_ref10.c as of 1.0.18), which compares with bit 255 cleared, as done here;
# the y = p and y = p + 1 rows of that list are non-canonical and refused by the y < p rule.
# tests/unit/test_ed25519_small_order.py re-derives each from the curve.
ED25519_SMALL_ORDER = tuple(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # order 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    )
)


def fingerprint(suite: Suite, exchange: bytes, signature: bytes) -> str:
    """What people compare before trusting a container's public keys (FORMAT.md 3.1).

    It covers both keys: a signature key id alone would let a swapped exchange key, the
    one session keys get wrapped for, pass the comparison.
    """
    encoded = u16(len(exchange)) + exchange + u16(len(signature)) + signature
    digest = hashlib.sha256(FINGERPRINT_LABEL + u8(suite) + encoded).digest()
    return digest[:16].hex()


def ed25519_point_problem(encoded: bytes) -> str | None:
    """Why ``encoded`` is not acceptable as an Ed25519 public key or signature R, or None.

    Refused (FORMAT.md 1.3): a y of p or more (non-canonical), and a small-order point in
    any encoding, i.e. one of the eight above once bit 255 is cleared (which also catches
    the identity and the order-2 point written with the sign bit set, x = -0).  A small-order
    key verifies R = identity, S = 0 for every message under cofactorless verification.
    """
    if len(encoded) != 32:
        return "not 32 bytes"
    if int.from_bytes(encoded, "little") & _LOW_255_BITS >= FIELD_PRIME:
        return "a non-canonical Ed25519 encoding (y >= 2^255-19)"
    if encoded[:31] + bytes([encoded[31] & 0x7F]) in ED25519_SMALL_ORDER:
        return "a small-order Ed25519 point"
    return None


def x25519_public_problem(encoded: bytes) -> str | None:
    """Why ``encoded`` is not a canonical X25519 public key encoding, or None.

    RFC 7748 has receivers mask bit 255 and reduce u mod p, but HPKE's kem_context hashes
    pkR as given: a key with bit 255 set (or u >= p) would wrap for a kem_context its owner,
    who serializes the canonical u, never computes.  One key, one encoding (FORMAT.md 1.3).
    """
    if len(encoded) != X25519_KEY_SIZE:
        return "not 32 bytes"
    if encoded[31] & 0x80:
        return "a non-canonical X25519 encoding (bit 255 set)"
    if int.from_bytes(encoded, "little") >= FIELD_PRIME:
        return "a non-canonical X25519 encoding (u >= 2^255-19)"
    return None


def p256_public_problem(encoded: bytes) -> str | None:
    """Why ``encoded`` is not a SEC1 uncompressed P-256 point encoding, or None.

    Only the form is checked here (FORMAT.md 1.3): 65 bytes, 0x04 first, both coordinates
    below p.  Whether the point is on the curve is checked where it is decoded
    (``keyblob.providers.suites``); the identity has no 65-byte encoding at all.
    """
    if len(encoded) != P256_KEY_SIZE:
        return "not 65 bytes"
    if encoded[0] != 0x04:
        return "not an uncompressed SEC1 point (first byte is not 0x04)"
    if max(int.from_bytes(encoded[1:33]), int.from_bytes(encoded[33:])) >= P256_PRIME:
        return "a non-canonical P-256 encoding (a coordinate >= p)"
    return None


def mlkem768_public_problem(encoded: bytes) -> str | None:
    """Why ``encoded`` is not an ML-KEM-768 encapsulation key, or None: FIPS 203 section
    7.2's modulus check, the 768 12-bit coefficients of its first 1152 bytes (two per three
    bytes, little-endian) each below q = 3329, so that each key has one encoding."""
    if len(encoded) != MLKEM768_KEY_SIZE:
        return f"not {MLKEM768_KEY_SIZE} bytes"
    for i in range(0, 1152, 3):
        a, b, c = encoded[i], encoded[i + 1], encoded[i + 2]
        if a | (b & 0x0F) << 8 >= MLKEM_Q or b >> 4 | c << 4 >= MLKEM_Q:
            return "not an encapsulation key (a coefficient >= q = 3329)"
    return None


def public_size_ok(suite: Suite, size: int, role: KeyRole) -> bool:
    if suite is Suite.X25519:
        return size == X25519_KEY_SIZE
    if suite is Suite.P256:
        return size == P256_KEY_SIZE
    if suite is Suite.PQ:
        return size == (PQ_EXCHANGE_KEY_SIZE if role is KeyRole.EXCHANGE else PQ_SIGNATURE_KEY_SIZE)
    return 1 <= size <= MAX_PUBLIC_KEY_SIZE


def group_fingerprint(text: str) -> str:
    """A fingerprint as people read it aloud (FORMAT.md 3.1): groups of four hex digits
    separated by one space, as gpg and ssh show theirs (``3f2a 9c1e …``)."""
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def label_message(suite: Suite, label: str, exchange: bytes, signature: bytes) -> bytes:
    """What the label signature of a version 2 file signs (FORMAT.md 3.2): the label
    constant, then every byte of the file before ``label_signature_len``.

    Raises:
        UsageError: ``label`` is not a valid label (FORMAT.md 1.5).
    """
    check_label(label)
    return LABEL_SIGNATURE_LABEL + _body(suite, label, exchange, signature, VERSION_LABELLED)


def _body(suite: Suite, label: str, exchange: bytes, signature: bytes, version: int) -> bytes:
    encoded = label.encode("utf-8")
    return b"".join(
        [
            MAGIC,
            u8(version),
            u8(suite),
            u16(0),
            u8(len(encoded)),
            encoded,
            u16(len(exchange)),
            exchange,
            u16(len(signature)),
            signature,
        ]
    )


@dataclass(frozen=True)
class PublicKeyFile:
    """A container's public keys: raw for x25519/Ed25519, SEC1 uncompressed points for P-256,
    DER SubjectPublicKeyInfo for RSA.

    With ``label_signature`` it is a version 2 file: ``label`` is the label people chose
    (FORMAT.md 1.5), and ``label_signature`` the signature key's signature over
    :meth:`label_message`; parsing does not check it (no cryptography in ``format/``):
    :func:`keyblob.publickeys.read` does.  Without it, version 1: ``label`` is the
    container's name (1.4), and nothing vouches for it.
    """

    suite: Suite
    label: str
    exchange: bytes
    signature: bytes
    label_signature: bytes | None = None

    def __post_init__(self) -> None:
        if self.suite not in SUPPORTED_SUITES:
            raise UsageError(f"suite {self.suite.label} is not implemented")
        if self.label_signature is None:
            check_name(self.label)
        else:
            check_label(self.label)
            if len(self.label_signature) not in LABEL_SIGNATURE_SIZES[self.suite]:
                raise UsageError("the label signature has the wrong length for the suite")
        for role, key in ((KeyRole.EXCHANGE, self.exchange), (KeyRole.SIGNATURE, self.signature)):
            what = role.name.lower()
            if not public_size_ok(self.suite, len(key), role):
                raise UsageError(f"{what} public key has the wrong length for the suite")

    @property
    def exchange_id(self) -> KeyId:
        return key_id_for(self.suite, KeyRole.EXCHANGE, self.exchange)

    @property
    def signature_id(self) -> KeyId:
        return key_id_for(self.suite, KeyRole.SIGNATURE, self.signature)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.suite, self.exchange, self.signature)

    @property
    def version(self) -> int:
        return VERSION if self.label_signature is None else VERSION_LABELLED

    @property
    def label_signed(self) -> bool:
        """Whether the label is signed (version 2) once :func:`keyblob.publickeys.read`
        has verified it; a version 1 label is the container's name, vouched for by nobody."""
        return self.label_signature is not None

    def label_message(self) -> bytes:
        """What the label signature signs (FORMAT.md 3.2)."""
        return label_message(self.suite, self.label, self.exchange, self.signature)

    def to_bytes(self) -> bytes:
        body = _body(self.suite, self.label, self.exchange, self.signature, self.version)
        if self.label_signature is None:
            return body
        return body + u16(len(self.label_signature)) + self.label_signature

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeyFile:
        """Parse a binary public key file, version 1 or 2; the label signature of a version
        2 file is not checked here (:func:`keyblob.publickeys.read` checks it).

        Raises:
            FormatError: not a well-formed, canonical version 1 or 2 public key file.
            UnsupportedError: a later version or a suite this release does not implement.
        """
        data = bytes(data)
        if len(data) > MAX_FILE_SIZE:
            raise FormatError(f"public key file: over the {MAX_FILE_SIZE}-byte limit")
        r = Reader(data, "public key file")
        if r.take(4, "magic") != MAGIC:
            raise r.fail("magic", "not a keyblob public key file (expected 'KBPK')", 0)
        version = r.uint(1, "version")
        if version not in (VERSION, VERSION_LABELLED):
            raise UnsupportedError(f"public key file: version {version} is not supported")
        code = r.uint(1, "suite")
        if code not in SUPPORTED_SUITES:
            if code in {int(s) for s in Suite}:
                raise UnsupportedError(
                    f"public key file: suite {Suite(code).label} is not implemented"
                )
            raise r.fail("suite", f"unknown suite {code}", 5)
        suite = Suite(code)
        if r.uint(2, "reserved") != 0:
            raise r.fail("reserved", "must be zero", 6)
        label_len = r.uint(1, "label_len")
        label_max = NAME_MAX if version == VERSION else LABEL_MAX
        if not 1 <= label_len <= label_max:
            raise r.fail("label_len", f"must be 1 to {label_max}", 8)
        raw_label = r.take(label_len, "label")
        try:
            text = raw_label.decode("ascii" if version == VERSION else "utf-8")
        except UnicodeDecodeError:
            raise r.fail(
                "label", "not a valid container name" if version == VERSION else "not UTF-8", 9
            ) from None
        try:
            label = check_name(text) if version == VERSION else check_label(text)
        except UsageError as e:
            why = "not a valid container name" if version == VERSION else str(e)
            raise r.fail("label", why.removeprefix("invalid label: "), 9) from None
        keys = []
        for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
            what = role.name.lower()
            size = r.uint(2, f"{what}_len")
            if not public_size_ok(suite, size, role):
                raise r.fail(f"{what}_len", f"{size} does not fit the suite", r.offset - 2)
            keys.append(r.take(size, f"{what}_key"))
        label_signature = None
        if version == VERSION_LABELLED:
            size = r.uint(2, "label_signature_len")
            if size not in LABEL_SIGNATURE_SIZES[suite]:
                raise r.fail("label_signature_len", f"{size} does not fit the suite", r.offset - 2)
            label_signature = r.take(size, "label_signature")
        r.end()
        return cls(suite, label, keys[0], keys[1], label_signature)
