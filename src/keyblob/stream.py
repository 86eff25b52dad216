"""Chunked AEAD framing: the C2SP chunked-encryption construction (Cobblestone).

c2sp.org/chunked-encryption (spec commit 6f65019a, 2026-07-13): a 24-byte salt and a 32-byte
key commitment, then 16 KiB chunks sealed with an AEAD under a key and base nonce derived by
HKDF-Expand-SHA-512 from the input key, the salt and a context.  The last chunk is strictly
shorter than 16 KiB (it may be empty), which authenticates the end of the message; the chunk
index in the nonce authenticates the order.  Key-committing, streaming, random access.

This module holds no keys: every function takes the input key for one call.  It knows
nothing of keyblob's own data header (files.py puts that in the context).  FORMAT.md section
7 is the normative text; comments cite its steps.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keyblob.errors import UsageError, VerificationError

CHUNK_SIZE = 16384
TAG_SIZE = 16
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
SALT_SIZE = 24
COMMITMENT_SIZE = 32
NONCE_SIZE = 12
HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE
MAX_CHUNKS = 2**38
KDF_LABEL = b"c2sp.org/chunked-encryption@v1+"

WRONG_KEY = "the data does not open with this key (wrong key, key name or header)"
TRUNCATED = "the data is truncated"
MODIFIED = "the data was modified: chunk {index} failed authentication"
END_MODIFIED = "the data was truncated or modified: its last chunk ({index}) failed authentication"
TOO_LONG = "the data is longer than the format allows"


class _Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes | bytearray | memoryview, aad: None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes | bytearray | memoryview, aad: None) -> bytes: ...


@dataclass(frozen=True)
class Instance:
    """One instantiation of the construction: an AEAD (by IANA name) and its key length."""

    name: str
    aead_name: bytes
    key_size: int
    aead: Callable[[bytes], _Aead]


COBBLESTONE_256 = Instance("Cobblestone-256", b"AEAD_AES_256_GCM", 32, AESGCM)
COBBLESTONE_128 = Instance("Cobblestone-128", b"AEAD_AES_128_GCM", 16, AESGCM)
#: keyblob's instance for ChaCha20-Poly1305 session keys: the same construction with the
#: AEAD's IANA name in the KDF info (FORMAT.md 7.2); no third-party vectors exist for it.
CHACHA20_POLY1305 = Instance(
    "Cobblestone-ChaCha20-Poly1305", b"AEAD_CHACHA20_POLY1305", 32, ChaCha20Poly1305
)


class _Keys:
    """The per-message AEAD, base nonce and commitment (FORMAT.md 7.2)."""

    __slots__ = ("aead", "base", "commitment")

    def __init__(self, instance: Instance, key: bytes, salt: bytes, context: bytes) -> None:
        if len(key) != instance.key_size:  # decryption step 2: before anything else
            raise UsageError(f"{instance.name} needs a {instance.key_size}-byte key")
        info = KDF_LABEL + instance.aead_name + b"\x00" + salt + context
        okm = HKDFExpand(
            hashes.SHA512(), instance.key_size + NONCE_SIZE + COMMITMENT_SIZE, info
        ).derive(key)
        self.aead = instance.aead(okm[: instance.key_size])
        self.base = int.from_bytes(okm[instance.key_size : instance.key_size + NONCE_SIZE])
        self.commitment = okm[instance.key_size + NONCE_SIZE :]

    def nonce(self, index: int) -> bytes:
        if index >= MAX_CHUNKS:
            raise VerificationError(TOO_LONG)
        return (self.base ^ index).to_bytes(NONCE_SIZE, "big")

    def open(self, index: int, sealed: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        try:
            return self.aead.decrypt(self.nonce(index), sealed, None)
        except InvalidTag:
            message = END_MODIFIED if final else MODIFIED
            raise VerificationError(message.format(index=index)) from None


def _read_full(src: BinaryIO, buf: bytearray | memoryview) -> int:
    """Fill ``buf`` unless the input ends first; returns how many bytes were read."""
    view = memoryview(buf)
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _open_header(instance: Instance, key: bytes, header: bytes, context: bytes) -> _Keys:
    """Decryption steps 2-3: key size, header length, commitment (constant time)."""
    if len(key) != instance.key_size:
        raise UsageError(f"{instance.name} needs a {instance.key_size}-byte key")
    if len(header) < HEADER_SIZE:
        raise VerificationError(TRUNCATED)
    keys = _Keys(instance, key, header[:SALT_SIZE], context)
    if not hmac.compare_digest(keys.commitment, header[SALT_SIZE:HEADER_SIZE]):
        raise VerificationError(WRONG_KEY)
    return keys


def encrypt_stream(
    instance: Instance,
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    _salt: bytes | None = None,
) -> int:
    """Encrypt ``src`` to ``dst`` in constant memory; returns the plaintext length.

    Raises:
        UsageError: the key has the wrong length for the instance.
        VerificationError: the input is longer than 2**38 chunks (4 PiB).
    """
    salt = _salt if _salt is not None else secrets.token_bytes(SALT_SIZE)
    keys = _Keys(instance, key, salt, context)  # FORMAT.md 7.3, steps 1-2
    dst.write(salt + keys.commitment)  # step 3
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    index = total = 0
    encrypt = keys.aead.encrypt
    while True:  # steps 4-5: full chunks, then the short final one (maybe empty)
        n = _read_full(src, buf)
        dst.write(encrypt(keys.nonce(index), view[:n] if n < CHUNK_SIZE else buf, None))
        total += n
        if progress is not None:
            progress(n)
        if n < CHUNK_SIZE:
            return total
        index += 1


def decrypt_stream(
    instance: Instance,
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt ``src`` to ``dst`` in constant memory; returns the plaintext length.

    Each chunk's plaintext is written only after its tag verifies; when this raises, what
    was written is a verified prefix, and the caller must discard it (files.py writes to a
    temp file and renames it only on success).

    Raises:
        UsageError: the key has the wrong length for the instance.
        VerificationError: wrong key or context, truncation, modification, reordering,
            trailing data (FORMAT.md 7.4).
    """
    header = src.read(HEADER_SIZE)
    keys = _open_header(instance, key, header, context)
    buf = bytearray(SEALED_CHUNK_SIZE)
    view = memoryview(buf)
    index = total = 0
    while True:  # step 4: every full sealed chunk is a non-final one
        n = _read_full(src, buf)
        if n < TAG_SIZE:  # step 4: 0 means the short final chunk is missing
            raise VerificationError(TRUNCATED)
        final = n < SEALED_CHUNK_SIZE
        plain = keys.open(index, view[:n] if final else buf, final=final)
        dst.write(plain)
        total += len(plain)
        if progress is not None:
            progress(n)
        if final:  # step 6: the final chunk verified; nothing may follow
            return total
        index += 1


def encrypt_bytes(
    instance: Instance, key: bytes, context: bytes, data: bytes, *, _salt: bytes | None = None
) -> bytes:
    """One-shot encryption of ``data`` (same bytes as :func:`encrypt_stream`)."""
    salt = _salt if _salt is not None else secrets.token_bytes(SALT_SIZE)
    keys = _Keys(instance, key, salt, context)
    view = memoryview(data)
    parts = [salt, keys.commitment]
    count = len(data) // CHUNK_SIZE + 1
    for index in range(count):
        parts.append(
            keys.aead.encrypt(
                keys.nonce(index), view[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE], None
            )
        )
    return b"".join(parts)


def _framing(size: int) -> tuple[int, int]:
    """Step 4 on a known length: (index of the final chunk, its sealed length)."""
    body = size - HEADER_SIZE
    final_index, final_size = divmod(body, SEALED_CHUNK_SIZE)
    if body < 0 or final_size < TAG_SIZE:
        raise VerificationError(TRUNCATED)
    return final_index, final_size


def decrypt_bytes(instance: Instance, key: bytes, context: bytes, data: bytes) -> bytes:
    """One-shot decryption: the whole plaintext, or an error and nothing.

    Raises:
        UsageError: the key has the wrong length.
        VerificationError: as for :func:`decrypt_stream`.
    """
    keys = _open_header(instance, key, data[:HEADER_SIZE], context)
    final_index, _ = _framing(len(data))
    view = memoryview(data)
    return b"".join(
        keys.open(
            i,
            view[HEADER_SIZE + i * SEALED_CHUNK_SIZE : HEADER_SIZE + (i + 1) * SEALED_CHUNK_SIZE],
            final=i == final_index,
        )
        for i in range(final_index + 1)
    )


class RandomAccessReader:
    """Reads byte ranges of a ciphertext in a seekable file without decrypting the rest.

    Opening checks the key commitment and authenticates the length by decrypting the final
    chunk (FORMAT.md 7.5), so :attr:`size` is trustworthy before any range is read.
    """

    def __init__(self, instance: Instance, key: bytes, context: bytes, src: BinaryIO) -> None:
        """Raises UsageError (key length) or VerificationError (any check)."""
        self._src = src
        start = src.seek(0, os.SEEK_CUR)
        self._start = start
        end = src.seek(0, os.SEEK_END)
        src.seek(start)
        self._keys = _open_header(instance, key, src.read(HEADER_SIZE), context)
        self._final_index, final_sealed = _framing(end - start)
        final = self._chunk(self._final_index, final_sealed)
        self.size = self._final_index * CHUNK_SIZE + len(final)

    def _chunk(self, index: int, sealed_size: int = SEALED_CHUNK_SIZE) -> bytes:
        self._src.seek(self._start + HEADER_SIZE + index * SEALED_CHUNK_SIZE)
        sealed = self._src.read(sealed_size)
        if len(sealed) != sealed_size:
            raise VerificationError(TRUNCATED)
        return self._keys.open(index, sealed, final=index == self._final_index)

    def read(self, offset: int, length: int) -> bytes:
        """The plaintext bytes ``[offset, offset + length)``, clipped to the end.

        Raises:
            UsageError: a negative offset or length.
            VerificationError: a chunk in the range fails authentication.
        """
        if offset < 0 or length < 0:
            raise UsageError("offset and length must not be negative")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        parts = []
        for index in range(offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1):
            sealed_size = SEALED_CHUNK_SIZE
            if index == self._final_index:
                sealed_size = self.size - index * CHUNK_SIZE + TAG_SIZE
            chunk = self._chunk(index, sealed_size)
            lo = max(offset - index * CHUNK_SIZE, 0)
            hi = min(end - index * CHUNK_SIZE, len(chunk))
            parts.append(chunk[lo:hi])
        return b"".join(parts)
