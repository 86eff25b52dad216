"""The recovery kit (FORMAT.md 8): a passphrase-only recovery recipient, written down.

A kit holds an exchange public key and its private key sealed under a key derived from a
passphrase with Argon2id parameters stronger than a container's (:data:`RECOVERY_KDF`).
This module owns the kit: its file (bytes <-> :class:`RecoveryKit`: canonical JSON and a
final LF, with a digest over its other members, so that any edited byte is refused before
any derivation is paid for), making one (:func:`make_recovery_kit`) and opening one
(:func:`open_recovery_kit` -> :class:`RecoveryKey`, which unwraps and does nothing else).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyblob.errors import FormatError, PassphraseError, UsageError, VerificationError
from keyblob.keys import MAX_GENERATION, KeyRole, Suite, key_id_for
from keyblob.providers import suites
from keyblob.providers.software import KdfParams, passphrase_keys
from keyblob.trust import canonical, canonical_b64, strict_json

FORMAT = "keyblob-recovery-kit/v1"
DIGEST_LABEL = b"keyblob/v1/recovery-kit\x00"
#: FORMAT.md 8.3: the whole file, checked before it is parsed.
MAX_KIT_SIZE = 16384
MAX_PUBLIC = 4096
MAX_SEALED = 8192
SALT_SIZE = 16
NONCE_SIZE = 12
TAG_SIZE = 16
#: FORMAT.md 5.1's bounds on Argon2id parameters, which a kit shares (8.3).
MIN_MEMORY_KIB = KdfParams.MIN_MEMORY_KIB
MAX_MEMORY_KIB = KdfParams.MAX_MEMORY_KIB
MAX_ITERATIONS = KdfParams.MAX_ITERATIONS
MAX_LANES = KdfParams.MAX_LANES

_MEMBERS = frozenset(("format", "suite", "created", "kdf", "exchange", "sealed", "digest"))
_KDF_MEMBERS = frozenset(("algorithm", "salt", "memory_kib", "iterations", "lanes"))
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EDITED = "recovery kit: it was changed after it was written (its digest does not match)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, field: str, low: int, high: int) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"recovery kit: {field} is not a string")
    try:  # one encoding: padding and unused bits as the writer makes them
        raw = canonical_b64(text)
    except ValueError:  # binascii.Error is one
        raise FormatError(f"recovery kit: {field} is not canonical base64") from None
    if not low <= len(raw) <= high:
        raise FormatError(f"recovery kit: {field} must be {low} to {high} bytes")
    return raw


def _int(value: Any, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise FormatError(f"recovery kit: {field} must be an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class KitKdf:
    """Argon2id parameters of a kit (RFC 9106), and its salt."""

    salt: bytes
    memory_kib: int
    iterations: int
    lanes: int

    def __post_init__(self) -> None:
        if len(self.salt) != SALT_SIZE:
            raise UsageError(f"a kit's salt is {SALT_SIZE} bytes")
        for value, low, high in (
            (self.memory_kib, MIN_MEMORY_KIB, MAX_MEMORY_KIB),
            (self.iterations, 1, MAX_ITERATIONS),
            (self.lanes, 1, MAX_LANES),
        ):
            if type(value) is not int or not low <= value <= high:
                raise UsageError("Argon2id parameters out of FORMAT.md 5.1's bounds")

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": "argon2id",
            "salt": _b64(self.salt),
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }


@dataclass(frozen=True)
class RecoveryKit:
    """A parsed recovery kit (FORMAT.md 8): what is public in it, and the sealed key.

    Nothing in it opens a blob without the passphrase.
    """

    suite: Suite
    created: int
    kdf: KitKdf
    exchange: bytes
    sealed: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.created <= MAX_GENERATION:
            raise UsageError("a kit's creation time is 0 to 2**63-1")
        if not 1 <= len(self.exchange) <= MAX_PUBLIC:
            raise UsageError(f"a kit's exchange key is 1 to {MAX_PUBLIC} bytes")
        if not NONCE_SIZE + TAG_SIZE + 1 <= len(self.sealed) <= MAX_SEALED:
            raise UsageError("a kit's sealed key does not fit FORMAT.md 8")

    def body(self) -> dict[str, Any]:
        """Every member but ``digest``."""
        return {
            "format": FORMAT,
            "suite": self.suite.label,
            "created": self.created,
            "kdf": self.kdf.to_json(),
            "exchange": _b64(self.exchange),
            "sealed": _b64(self.sealed),
        }

    def digest(self) -> str:
        """FORMAT.md 8.2: SHA-256 over the label and the canonical body, lowercase hex."""
        return hashlib.sha256(DIGEST_LABEL + canonical(self.body())).hexdigest()

    def seal_aad(self) -> bytes:
        """The AAD of the sealed private key (FORMAT.md 8.4)."""
        return seal_aad(self.suite, self.exchange)

    def to_bytes(self) -> bytes:
        return canonical({**self.body(), "digest": self.digest()}) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> RecoveryKit:
        """Read a kit strictly (FORMAT.md 8.3), in order: size, canonical JSON, members,
        fields, digest.

        Raises:
            FormatError: not a recovery kit (or not one this version reads).
            VerificationError: well formed, but its digest does not match: edited.
        """
        if len(data) > MAX_KIT_SIZE:
            raise FormatError(f"recovery kit: over {MAX_KIT_SIZE} bytes")
        try:
            doc = strict_json(data)
        except ValueError:  # also a duplicate member, NaN / Infinity, not UTF-8, too deep
            raise FormatError(
                "recovery kit: not a JSON document (UTF-8, each member once)"
            ) from None
        if not isinstance(doc, dict) or set(doc) != _MEMBERS:
            raise FormatError("recovery kit: not a kit's members (FORMAT.md 8.1)")
        if doc["format"] != FORMAT:
            raise FormatError(f"recovery kit: format is not {FORMAT!r}")
        suite = _suite(doc["suite"])
        kdf = doc["kdf"]
        if not isinstance(kdf, dict) or set(kdf) != _KDF_MEMBERS or kdf["algorithm"] != "argon2id":
            raise FormatError("recovery kit: kdf is not an argon2id parameter set")
        kit = cls(
            suite=suite,
            created=_int(doc["created"], "created", 0, MAX_GENERATION),
            kdf=KitKdf(
                salt=_unb64(kdf["salt"], "kdf.salt", SALT_SIZE, SALT_SIZE),
                memory_kib=_int(kdf["memory_kib"], "memory_kib", MIN_MEMORY_KIB, MAX_MEMORY_KIB),
                iterations=_int(kdf["iterations"], "iterations", 1, MAX_ITERATIONS),
                lanes=_int(kdf["lanes"], "lanes", 1, MAX_LANES),
            ),
            exchange=_unb64(doc["exchange"], "exchange", 1, MAX_PUBLIC),
            sealed=_unb64(doc["sealed"], "sealed", NONCE_SIZE + TAG_SIZE + 1, MAX_SEALED),
        )
        if not isinstance(doc["digest"], str) or not _HEX64.fullmatch(doc["digest"]):
            raise FormatError("recovery kit: digest is not 64 lowercase hex digits")
        if doc["digest"] != kit.digest():
            raise VerificationError(_EDITED)
        # One encoding per kit: member order, spacing, escapes and the final LF as written.
        if kit.to_bytes() != data:
            raise FormatError("recovery kit: not in canonical form (FORMAT.md 8.3)")
        return kit


def _suite(text: Any) -> Suite:
    if not isinstance(text, str):
        raise FormatError("recovery kit: suite is not a string")
    try:
        return Suite.from_label(text)
    except UsageError:
        raise FormatError(f"recovery kit: unknown suite {text[:16]!r}") from None


#: FORMAT.md 8.4: the sealed private key is bound to its suite, public key and purpose.
SEAL_AAD_LABEL = b"keyblob/v1/recovery-kit/private-key\x00"


def seal_aad(suite: Suite, exchange: bytes) -> bytes:
    """The AAD the private key of a kit is sealed with (FORMAT.md 8.4)."""
    return SEAL_AAD_LABEL + canonical(
        {"exchange": _b64(exchange), "purpose": "recovery", "suite": suite.label}
    )


# -- Sealing and opening (FORMAT.md 8.4) ------------------------------------------------

#: FORMAT.md 8.4: what a kit's passphrase is stretched with, stronger than a container's
#: interactive default (5.1: m = 65536 KiB, t = 3): 4x the memory and one more pass, the
#: ceiling of 5.1's memory bound.  A kit is opened once, on the worst day; an attacker with
#: a copy of it pays this per guess.
RECOVERY_KDF = KdfParams(memory_kib=262144, iterations=4, lanes=4)
RECOVERY_SEAL_INFO = b"keyblob/v1/recovery-kit/seal"
WRONG_KIT_PASSPHRASE = "wrong passphrase for the recovery kit"  # noqa: S105 - a message
KIT_KEY_MISMATCH = "recovery kit: its private key is not the one for its public key"


def _kit_seal_key(passphrase: bytes, kdf: KitKdf) -> AESGCM:
    """A container's derivation (software.passphrase_keys) with the kit's own HKDF info."""
    params = KdfParams(kdf.memory_kib, kdf.iterations, kdf.lanes)
    (seal,) = passphrase_keys(passphrase, kdf.salt, params, RECOVERY_SEAL_INFO)
    return AESGCM(seal)


def make_recovery_kit(
    suite: Suite,
    passphrase: bytes,
    *,
    kdf: KdfParams = RECOVERY_KDF,
    _random: Callable[[int], bytes] = secrets.token_bytes,
    _now: Callable[[], int] = lambda: int(time.time()),
    _private: suites.ExchangePrivate | None = None,
) -> RecoveryKit:
    """A fresh exchange key pair of ``suite``, its private key sealed under ``passphrase``
    (FORMAT.md 8.4).  The private key exists only in this call and, sealed, in the kit.

    Raises:
        UsageError: an empty passphrase, or a suite that is not implemented.
    """
    if not passphrase:
        raise UsageError("a recovery kit needs a passphrase")
    private = _private if _private is not None else suites.generate(suite)[0]
    public = suites.public_bytes(private)
    params = KitKdf(_random(SALT_SIZE), kdf.memory_kib, kdf.iterations, kdf.lanes)
    nonce = _random(12)
    aad = seal_aad(suite, public)
    sealed = nonce + _kit_seal_key(passphrase, params).encrypt(
        nonce, suites.private_bytes(private), aad
    )
    return RecoveryKit(suite=suite, created=_now(), kdf=params, exchange=public, sealed=sealed)


class RecoveryKey:
    """The private key of a recovery kit, opened: it unwraps, and does nothing else.

    Not picklable, and its repr shows only the public key's id.
    """

    def __init__(self, suite: Suite, public: bytes, private: suites.ExchangePrivate) -> None:
        self.suite = suite
        self.exchange_public = public
        self.exchange_id = key_id_for(suite, KeyRole.EXCHANGE, public)
        self._private = private

    def __repr__(self) -> str:
        return f"<RecoveryKey kx-{self.exchange_id.short} suite={self.suite.label}>"

    def __reduce__(self) -> Any:
        raise TypeError("an opened recovery key cannot be pickled")

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return suites.unwrap(self._private, wrapped, context)


def open_recovery_kit(kit: RecoveryKit, passphrase: bytes) -> RecoveryKey:
    """Open a kit read by :meth:`RecoveryKit.from_bytes` (which checked its digest).

    Raises:
        FormatError: its public key is not an exchange key of its suite (1.3).
        PassphraseError: the sealed key does not open with ``passphrase``.
        VerificationError: it opens, but to a key that is not the kit's public key's.
    """
    suites.load_exchange_public(kit.suite, kit.exchange)  # 1.3, before any derivation
    try:
        plain = _kit_seal_key(passphrase, kit.kdf).decrypt(
            kit.sealed[:12], kit.sealed[12:], kit.seal_aad()
        )
    except InvalidTag:
        # The digest matched, so the kit is as written (or rewritten whole by someone who
        # could recompute it, which opens nothing): the passphrase is what is wrong.
        raise PassphraseError(WRONG_KIT_PASSPHRASE) from None
    try:
        private = suites.load_exchange_private(kit.suite, plain)
    except (FormatError, ValueError):
        raise VerificationError(KIT_KEY_MISMATCH) from None
    if suites.public_bytes(private) != kit.exchange:
        raise VerificationError(KIT_KEY_MISMATCH)
    return RecoveryKey(kit.suite, kit.exchange, private)
