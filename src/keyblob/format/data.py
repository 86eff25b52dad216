"""The header of data encrypted under a session key (FORMAT.md section 7.1).

It names the key (name, generation, key id) and the algorithm, so ``keyblob decrypt`` can
find the key; the whole header is bound into the payload's key derivation (its context), so
it cannot be altered or swapped.  No cryptography here.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyblob.errors import FormatError, UnsupportedError, UsageError
from keyblob.format._wire import Reader, u8, u64
from keyblob.keys import (
    KEY_ID_SIZE,
    MAX_GENERATION,
    NAME_MAX,
    Algorithm,
    KeyId,
    check_name,
)

MAGIC = b"KBDT"
VERSION = 1
#: Bytes before the name: magic, version, algorithm, flags, generation, key_id, name_len.
FIXED_SIZE = 32
CONTEXT_LABEL = b"keyblob/v1/data\x00"
DATA_ALGORITHMS = frozenset(
    {Algorithm.AES_256_GCM, Algorithm.AES_128_GCM, Algorithm.CHACHA20_POLY1305}
)


@dataclass(frozen=True)
class DataHeader:
    """Which session key (and algorithm) a ciphertext is encrypted under."""

    algorithm: Algorithm
    generation: int
    key_id: KeyId
    name: str

    def __post_init__(self) -> None:
        if self.algorithm not in DATA_ALGORITHMS:
            raise UsageError(
                f"a {self.algorithm.label} key is a CryptoAPI key: its data is made and read "
                "with keyblob capi encrypt and keyblob capi decrypt"
            )
        if not 1 <= self.generation <= MAX_GENERATION:
            raise UsageError("generation must be between 1 and 2**63-1")
        check_name(self.name)

    def to_bytes(self) -> bytes:
        name = self.name.encode("ascii")
        return b"".join(
            [
                MAGIC,
                u8(VERSION),
                u8(self.algorithm),
                u8(0),  # flags: reserved
                u64(self.generation),
                self.key_id.value,
                u8(len(name)),
                name,
            ]
        )

    def context(self, associated_data: bytes = b"") -> bytes:
        """The Cobblestone context: label, this header's bytes, then associated data."""
        return CONTEXT_LABEL + self.to_bytes() + associated_data

    @staticmethod
    def total_size(fixed: bytes) -> int:
        """The header's full length, from its first FIXED_SIZE bytes.

        Raises:
            FormatError: those bytes are not the start of a data header.
        """
        if fixed[:4] != MAGIC[: len(fixed)] or not fixed:
            raise FormatError(
                "not keyblob encrypted data (it does not start with 'KBDT')",
                hints=(
                    "data encrypted by Windows CryptoAPI (CryptEncrypt) has no header: "
                    "use keyblob capi decrypt",
                ),
            )
        if len(fixed) < FIXED_SIZE:
            raise FormatError(f"encrypted data: header truncated ({len(fixed)} bytes)")
        return FIXED_SIZE + fixed[FIXED_SIZE - 1]

    @classmethod
    def from_bytes(cls, data: bytes) -> DataHeader:
        """Parse exactly one header.

        Raises:
            FormatError: malformed (field and offset named).
            UnsupportedError: a later version.
        """
        r = Reader(bytes(data), "encrypted data")
        if r.take(4, "magic") != MAGIC:
            raise r.fail("magic", "not keyblob encrypted data (expected 'KBDT')", 0)
        version = r.uint(1, "version")
        if version != VERSION:
            raise UnsupportedError(f"encrypted data: version {version} is not supported")
        code = r.uint(1, "algorithm")
        if code not in DATA_ALGORITHMS:  # CryptoAPI keys encrypt CryptEncrypt data instead
            raise r.fail("algorithm", f"unknown algorithm {code}", 5)
        if r.uint(1, "flags") != 0:
            raise r.fail("flags", "reserved bits are set", 6)
        generation = r.uint(8, "generation")
        if not 1 <= generation <= MAX_GENERATION:
            raise r.fail("generation", "must be between 1 and 2**63-1", 7)
        key_id = KeyId(r.take(KEY_ID_SIZE, "key_id"))
        name_len = r.uint(1, "name_len")
        if not 1 <= name_len <= NAME_MAX:
            raise r.fail("name_len", f"must be 1 to {NAME_MAX}", FIXED_SIZE - 1)
        try:
            name = check_name(r.take(name_len, "name").decode("ascii"))
        except (UnicodeDecodeError, UsageError):
            raise r.fail("name", "not a valid key name", FIXED_SIZE) from None
        r.end()
        return cls(Algorithm(code), generation, key_id, name)
