"""The native key blob, version 1: bytes <-> frozen dataclasses (docs/FORMAT.md section 2).

Parsing is strict and canonical: if ``KeyBlob.from_bytes(b)`` succeeds then
``blob.to_bytes() == b``.  This module knows where every byte goes and which bytes are
signed and bound into the wraps; it never verifies or unwraps anything.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from keyblob.errors import FormatError, UnsupportedError, UsageError
from keyblob.format._wire import Reader, u8, u16
from keyblob.keys import (
    KEY_ID_SIZE,
    MAX_GENERATION,
    NAME_MAX,
    Algorithm,
    KeyId,
    Suite,
    check_name,
)

MAGIC = b"KBLB"
VERSION = 1
#: Domain-separation labels (FORMAT.md 2.4 and 2.5); each carries the format version.
WRAP_LABEL = b"keyblob/v1/wrap\x00"
SIGNATURE_LABEL = b"keyblob/v1/blob-signature\x00"

#: ``flags`` bit 0 (FORMAT.md 2.2.5): a u32 revision follows the name (2.2.11).
FLAG_REVISED = 0x01
MAX_REVISION = 2**32 - 1

#: The largest well-formed blob, pq with 16 capi-rc2 recipients and a 128-byte name, revised,
#: is 23053 bytes (FORMAT.md 2.8).
MAX_BLOB_SIZE = 32768
MAX_RECIPIENTS = 16
RSA_SIZES = (256, 384, 512)  # RSA-2048, -3072, -4096: wrapped key and signature lengths
X25519_ENC_SIZE = 32
P256_ENC_SIZE = 65  # SEC1 uncompressed point (RFC 9180 7.1.1 SerializePublicKey)
AEAD_TAG_SIZE = 16
ED25519_SIGNATURE_SIZE = 64
P256_SIGNATURE_SIZE = 64  # r || s, 32 bytes each (FORMAT.md 2.5)
PQ_ENC_SIZE = 1120  # X-Wing ciphertext: ML-KEM-768 (1088) || X25519 (32) (FORMAT.md 2.4)
PQ_SIGNATURE_SIZE = 3373  # ML-DSA-65 (3309) || Ed25519 (64) (FORMAT.md 2.5)
SUPPORTED_SUITES = (Suite.X25519, Suite.RSA, Suite.PQ, Suite.P256)
_SUPPORTED_SUITE_CODES = frozenset(int(s) for s in SUPPORTED_SUITES)
_SUITE_CODES = frozenset(int(s) for s in Suite)
_ALGORITHM_CODES = frozenset(int(a) for a in Algorithm)
#: The header from magic through name_len (FORMAT.md 2.2); the name follows at offset 57.
_CORE = struct.Struct(f">4sBBBBQQ{KEY_ID_SIZE}s{KEY_ID_SIZE}sB")
_U32 = struct.Struct(">I")


def wrapped_size_ok(suite: Suite, algorithm: Algorithm, size: int) -> bool:
    """Whether a wrapped key of ``size`` bytes is the one length the suite produces."""
    if suite is Suite.X25519:
        return size - X25519_ENC_SIZE - AEAD_TAG_SIZE in algorithm.key_sizes
    if suite is Suite.P256:
        return size - P256_ENC_SIZE - AEAD_TAG_SIZE in algorithm.key_sizes
    if suite is Suite.PQ:
        return size - PQ_ENC_SIZE - AEAD_TAG_SIZE in algorithm.key_sizes
    return size in RSA_SIZES


def signature_size_ok(suite: Suite, size: int) -> bool:
    if suite is Suite.X25519:
        return size == ED25519_SIGNATURE_SIZE
    if suite is Suite.P256:
        return size == P256_SIGNATURE_SIZE
    if suite is Suite.PQ:
        return size == PQ_SIGNATURE_SIZE
    return size in RSA_SIZES


@dataclass(frozen=True)
class Header:
    """Everything the signer vouches for except the wrapped keys (FORMAT.md 2.2)."""

    suite: Suite
    algorithm: Algorithm
    generation: int
    created: int
    key_id: KeyId
    signer_id: KeyId
    name: str
    #: 0: never re-wrapped (flags 0, no revision field); 1 to 2**32-1: the re-wrap count of
    #: this (name, generation), ordered after the generation (FORMAT.md 2.2.11).
    revision: int = 0

    def __post_init__(self) -> None:
        if self.suite not in SUPPORTED_SUITES:
            raise UsageError(f"suite {self.suite.label} is not implemented")
        if not 1 <= self.generation <= MAX_GENERATION:
            raise UsageError("generation must be between 1 and 2**63-1")
        if not 0 <= self.created <= MAX_GENERATION:
            raise UsageError("creation time must be between 0 and 2**63-1")
        check_name(self.name)
        if (
            not isinstance(self.revision, int)
            or isinstance(self.revision, bool)
            or not 0 <= self.revision <= MAX_REVISION
        ):
            raise UsageError("revision must be between 0 and 2**32-1")

    def core_bytes(self) -> bytes:
        """The header bytes from ``magic`` through ``name`` and, in a revised blob, the
        revision (FORMAT.md 2.1, 2.2.11)."""
        name = self.name.encode("ascii")
        core = (
            _CORE.pack(
                MAGIC,
                VERSION,
                self.suite,
                self.algorithm,
                FLAG_REVISED if self.revision else 0,
                self.generation,
                self.created,
                self.key_id.value,
                self.signer_id.value,
                len(name),
            )
            + name
        )
        return core + _U32.pack(self.revision) if self.revision else core

    def wrap_context(self, recipient_id: KeyId) -> bytes:
        """HPKE ``info`` / OAEP ``label`` for one recipient's wrap (FORMAT.md 2.4)."""
        return WRAP_LABEL + self.core_bytes() + recipient_id.value


@dataclass(frozen=True)
class Recipient:
    """One recipient: the id of its exchange public key and the session key wrapped to it."""

    key_id: KeyId
    wrapped: bytes


def _body(header: Header, recipients: tuple[Recipient, ...]) -> bytes:
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise UsageError(f"a key blob has 1 to {MAX_RECIPIENTS} recipients")
    if len({r.key_id for r in recipients}) != len(recipients):
        raise UsageError("a recipient appears twice")
    parts = [header.core_bytes(), u8(len(recipients))]
    for r in recipients:
        if not wrapped_size_ok(header.suite, header.algorithm, len(r.wrapped)):
            raise UsageError(f"wrapped key of {len(r.wrapped)} bytes does not fit the suite")
        parts += [r.key_id.value, u16(len(r.wrapped)), r.wrapped]
    return b"".join(parts)


def signed_message(header: Header, recipients: tuple[Recipient, ...]) -> bytes:
    """What the signature signs: the label, then every blob byte before ``signature_len``."""
    return SIGNATURE_LABEL + _body(header, recipients)


@dataclass(frozen=True)
class Field:
    """One field of an encoded blob, for ``keyblob inspect``."""

    offset: int
    size: int
    name: str
    value: str
    signed: bool


@dataclass(frozen=True)
class KeyBlob:
    """A parsed (not yet verified) key blob."""

    header: Header
    recipients: tuple[Recipient, ...]
    signature: bytes
    #: The exact bytes this blob was parsed from or made by :meth:`signed` (canonical, so
    #: equal to the encoding).
    _encoded: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self._encoded:  # from_bytes checked every field while parsing
            return
        if not signature_size_ok(self.header.suite, len(self.signature)):
            raise UsageError("signature length does not fit the suite")
        _body(self.header, self.recipients)  # checks recipients

    @classmethod
    def signed(
        cls, header: Header, recipients: tuple[Recipient, ...], sign: Callable[[bytes], bytes]
    ) -> KeyBlob:
        """Export steps 4-5: sign every byte before ``signature_len``, then encode, with the
        body built once.

        Raises:
            UsageError: as the constructor (recipients, or a signature the suite cannot hold).
        """
        body = _body(header, recipients)
        signature = sign(SIGNATURE_LABEL + body)
        if not signature_size_ok(header.suite, len(signature)):
            raise UsageError("signature length does not fit the suite")
        return cls(header, recipients, signature, body + u16(len(signature)) + signature)

    def signed_message(self) -> bytes:
        if self._encoded:
            return SIGNATURE_LABEL + self._encoded[: -2 - len(self.signature)]
        return signed_message(self.header, self.recipients)

    def recipient(self, key_id: KeyId) -> Recipient | None:
        for r in self.recipients:
            if r.key_id == key_id:
                return r
        return None

    def to_bytes(self) -> bytes:
        if self._encoded:
            return self._encoded
        body = _body(self.header, self.recipients)
        return body + u16(len(self.signature)) + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyBlob:
        """Parse a binary key blob (FORMAT.md 2.1-2.3 and 2.8: import step 1).

        Raises:
            FormatError: the bytes are not a well-formed, canonical version 1 blob.
            UnsupportedError: a later version or a suite this release does not implement.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise FormatError("key blob: expected bytes")
        data = bytes(data)
        if len(data) > MAX_BLOB_SIZE:
            raise FormatError(f"key blob: {len(data)} bytes is over the {MAX_BLOB_SIZE}-byte limit")
        return cls._parse(Reader(data, "key blob"))

    @classmethod
    def _parse(cls, r: Reader) -> KeyBlob:
        if r.take(4, "magic") != MAGIC:
            raise r.fail("magic", "not a keyblob key blob (expected 'KBLB')", 0)
        version = r.uint(1, "version")
        if version != VERSION:
            raise UnsupportedError(f"key blob: version {version} is not supported (expected 1)")
        suite_code = r.uint(1, "suite")
        if suite_code not in _SUPPORTED_SUITE_CODES:
            if suite_code in _SUITE_CODES:
                raise UnsupportedError(
                    f"key blob: suite {Suite(suite_code).label} is not implemented"
                )
            raise r.fail("suite", f"unknown suite {suite_code}", r.offset - 1)
        suite = Suite(suite_code)
        algorithm_code = r.uint(1, "algorithm")
        if algorithm_code not in _ALGORITHM_CODES:
            raise r.fail("algorithm", f"unknown algorithm {algorithm_code}", r.offset - 1)
        algorithm = Algorithm(algorithm_code)
        flags = r.uint(1, "flags")
        if flags & ~FLAG_REVISED:
            raise r.fail("flags", "reserved bits are set", r.offset - 1)
        generation = r.uint(8, "generation")
        if not 1 <= generation <= MAX_GENERATION:
            raise r.fail("generation", "must be between 1 and 2**63-1", r.offset - 8)
        created = r.uint(8, "created")
        if created > MAX_GENERATION:
            raise r.fail("created", "must be at most 2**63-1", r.offset - 8)
        key_id = KeyId(r.take(KEY_ID_SIZE, "key_id"))
        signer_id = KeyId(r.take(KEY_ID_SIZE, "signer_id"))
        name_len = r.uint(1, "name_len")
        if not 1 <= name_len <= NAME_MAX:
            raise r.fail("name_len", f"must be 1 to {NAME_MAX}", r.offset - 1)
        name_at = r.offset
        raw_name = r.take(name_len, "name")
        try:
            name = check_name(raw_name.decode("ascii"))
        except (UnicodeDecodeError, UsageError):
            raise r.fail("name", "not a valid key name", name_at) from None
        revision = 0
        if flags & FLAG_REVISED:
            revision = r.uint(4, "revision")
            # One encoding per value: revision 0 is written without the flag and the field.
            if revision == 0:
                raise r.fail(
                    "revision", "must be 1 to 2**32-1 when flags bit 0 is set", r.offset - 4
                )
        header = Header(suite, algorithm, generation, created, key_id, signer_id, name, revision)

        count = r.uint(1, "recipient_count")
        if not 1 <= count <= MAX_RECIPIENTS:
            raise r.fail("recipient_count", f"must be 1 to {MAX_RECIPIENTS}", r.offset - 1)
        recipients: list[Recipient] = []
        for i in range(count):
            rid = KeyId(r.take(KEY_ID_SIZE, f"recipient[{i}].key_id"))
            if any(x.key_id == rid for x in recipients):
                raise r.fail(
                    f"recipient[{i}].key_id", "duplicate recipient", r.offset - KEY_ID_SIZE
                )
            size = r.uint(2, f"recipient[{i}].wrapped_len")
            if not wrapped_size_ok(suite, algorithm, size):
                raise r.fail(
                    f"recipient[{i}].wrapped_len", f"{size} does not fit the suite", r.offset - 2
                )
            recipients.append(Recipient(rid, r.take(size, f"recipient[{i}].wrapped")))
        sig_len = r.uint(2, "signature_len")
        if not signature_size_ok(suite, sig_len):
            raise r.fail("signature_len", f"{sig_len} does not fit the suite", r.offset - 2)
        signature = r.take(sig_len, "signature")
        r.end()
        return cls(header, tuple(recipients), signature, r.data)

    def fields(self) -> list[Field]:
        """The encoded layout, field by field, for ``keyblob inspect``."""
        h = self.header
        out: list[Field] = []
        pos = 0

        def add(size: int, name: str, value: str, signed: bool = True) -> None:
            nonlocal pos
            out.append(Field(pos, size, name, value, signed))
            pos += size

        add(4, "magic", "'KBLB'")
        add(1, "version", str(VERSION))
        add(1, "suite", f"{int(h.suite)} ({h.suite.label})")
        add(1, "algorithm", f"{int(h.algorithm)} ({h.algorithm.label})")
        add(1, "flags", f"{FLAG_REVISED} (revised)" if h.revision else "0")
        add(8, "generation", str(h.generation))
        add(8, "created", str(h.created))
        add(16, "key_id", h.key_id.hex)
        add(16, "signer_id", h.signer_id.hex)
        add(1, "name_len", str(len(h.name)))
        add(len(h.name), "name", repr(h.name))
        if h.revision:
            add(4, "revision", str(h.revision))
        add(1, "recipient_count", str(len(self.recipients)))
        for i, rec in enumerate(self.recipients):
            add(16, f"recipient[{i}].key_id", rec.key_id.hex)
            add(2, f"recipient[{i}].wrapped_len", str(len(rec.wrapped)))
            add(len(rec.wrapped), f"recipient[{i}].wrapped", f"{len(rec.wrapped)} bytes, opaque")
        add(2, "signature_len", str(len(self.signature)), signed=False)
        add(len(self.signature), "signature", f"{len(self.signature)} bytes", signed=False)
        return out
