"""The public key file: a container's two public keys, as handed to others (FORMAT.md 3),
its fingerprint, and the key id every public key is known by (FORMAT.md 1.3)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from keyblob.errors import FormatError, UnsupportedError, UsageError
from keyblob.format._wire import Reader, u8, u16
from keyblob.keys import KEY_ID_SIZE, NAME_MAX, KeyId, KeyRole, Suite, check_name

MAGIC = b"KBPK"
VERSION = 1
KEY_ID_LABEL = b"keyblob/v1/key-id\x00"
FINGERPRINT_LABEL = b"keyblob/v1/fingerprint\x00"
MAX_PUBLIC_KEY_SIZE = 1024  # DER of an RSA-4096 SubjectPublicKeyInfo is 550 bytes
MAX_FILE_SIZE = 4096
X25519_KEY_SIZE = 32


def key_id_for(suite: Suite, role: KeyRole, public_bytes: bytes) -> KeyId:
    """The id of a public key: SHA-256(label || suite || role || key bytes), first 16 bytes."""
    digest = hashlib.sha256(KEY_ID_LABEL + u8(suite) + u8(role) + public_bytes).digest()
    return KeyId(digest[:KEY_ID_SIZE])


def fingerprint(suite: Suite, exchange: bytes, signature: bytes) -> str:
    """What people compare before trusting a container's public keys (FORMAT.md 3.1).

    It covers both keys: a signature key id alone would let a swapped exchange key, the
    one session keys get wrapped for, pass the comparison.
    """
    encoded = u16(len(exchange)) + exchange + u16(len(signature)) + signature
    digest = hashlib.sha256(FINGERPRINT_LABEL + u8(suite) + encoded).digest()
    return digest[:16].hex()


def public_size_ok(suite: Suite, size: int) -> bool:
    if suite is Suite.X25519:
        return size == X25519_KEY_SIZE
    return 1 <= size <= MAX_PUBLIC_KEY_SIZE


@dataclass(frozen=True)
class PublicKeyFile:
    """A container's public keys: raw for x25519/Ed25519, DER SubjectPublicKeyInfo for RSA."""

    suite: Suite
    label: str
    exchange: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if self.suite not in (Suite.X25519, Suite.RSA):
            raise UsageError(f"suite {self.suite.label} is not implemented")
        check_name(self.label)
        for what, key in (("exchange", self.exchange), ("signature", self.signature)):
            if not public_size_ok(self.suite, len(key)):
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

    def to_bytes(self) -> bytes:
        label = self.label.encode("ascii")
        return b"".join(
            [
                MAGIC,
                u8(VERSION),
                u8(self.suite),
                u16(0),
                u8(len(label)),
                label,
                u16(len(self.exchange)),
                self.exchange,
                u16(len(self.signature)),
                self.signature,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeyFile:
        """Parse a binary public key file.

        Raises:
            FormatError: not a well-formed, canonical version 1 public key file.
            UnsupportedError: a later version or a suite this release does not implement.
        """
        data = bytes(data)
        if len(data) > MAX_FILE_SIZE:
            raise FormatError(f"public key file: over the {MAX_FILE_SIZE}-byte limit")
        r = Reader(data, "public key file")
        if r.take(4, "magic") != MAGIC:
            raise r.fail("magic", "not a keyblob public key file (expected 'KBPK')", 0)
        version = r.uint(1, "version")
        if version != VERSION:
            raise UnsupportedError(f"public key file: version {version} is not supported")
        code = r.uint(1, "suite")
        if code not in (Suite.X25519, Suite.RSA):
            if code in {int(s) for s in Suite}:
                raise UnsupportedError(
                    f"public key file: suite {Suite(code).label} is not implemented"
                )
            raise r.fail("suite", f"unknown suite {code}", 5)
        suite = Suite(code)
        if r.uint(2, "reserved") != 0:
            raise r.fail("reserved", "must be zero", 6)
        label_len = r.uint(1, "label_len")
        if not 1 <= label_len <= NAME_MAX:
            raise r.fail("label_len", f"must be 1 to {NAME_MAX}", 8)
        try:
            label = check_name(r.take(label_len, "label").decode("ascii"))
        except (UnicodeDecodeError, UsageError):
            raise r.fail("label", "not a valid container name", 9) from None
        keys = []
        for what in ("exchange", "signature"):
            size = r.uint(2, f"{what}_len")
            if not public_size_ok(suite, size):
                raise r.fail(f"{what}_len", f"{size} does not fit the suite", r.offset - 2)
            keys.append(r.take(size, f"{what}_key"))
        r.end()
        return cls(suite, label, keys[0], keys[1])
