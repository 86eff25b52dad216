"""The recipe: encrypt and decrypt data and files under a session key (FORMAT.md section 7).

A ciphertext is a :class:`~keyblob.format.data.DataHeader` naming the key, then a
Cobblestone payload (stream.py) whose context is the header's bytes (plus optional
associated data), so the header cannot be altered or moved to another payload.  The session
key is the payload's input key; every message gets its own salt, hence its own AEAD key and
nonces: a long-lived session key is never used directly with random nonces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from keyblob import stream
from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.format.data import FIXED_SIZE, DataHeader
from keyblob.keys import Algorithm, SessionKey

_INSTANCES = {
    Algorithm.AES_256_GCM: stream.COBBLESTONE_256,
    Algorithm.AES_128_GCM: stream.COBBLESTONE_128,
    Algorithm.CHACHA20_POLY1305: stream.CHACHA20_POLY1305,
}

WRONG_KEY_FOR_HEADER = "the data is encrypted under {want}, not under the key given ({have})"


def header_for(key: SessionKey) -> DataHeader:
    return DataHeader(key.algorithm, key.generation, key.key_id, key.name)


def _check_key(key: SessionKey, header: DataHeader) -> None:
    """The key must be the one the header names (name, generation, id, algorithm)."""
    if header != header_for(key):
        raise VerificationError(
            WRONG_KEY_FOR_HEADER.format(
                want=f"{header.name} generation {header.generation} ({header.key_id.short})",
                have=f"{key.name} generation {key.generation} ({key.key_id.short})",
            )
        )


def encrypt(key: SessionKey, data: bytes, *, associated_data: bytes = b"") -> bytes:
    """Encrypt ``data``; ``associated_data`` is authenticated, not stored.

    Raises:
        UsageError: ``data`` is not bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError("data must be bytes")
    header = header_for(key)
    payload = stream.encrypt_bytes(
        _INSTANCES[key.algorithm],
        key.unsafe_raw_bytes(),
        header.context(associated_data),
        bytes(data),
    )
    return header.to_bytes() + payload


def read_header(data: bytes) -> tuple[DataHeader, int]:
    """Parse the header at the start of ``data``; returns it and its length.

    Raises:
        FormatError: not keyblob encrypted data.
    """
    size = DataHeader.total_size(data[:FIXED_SIZE])
    if len(data) < size:
        raise FormatError("encrypted data: header truncated")
    return DataHeader.from_bytes(data[:size]), size


def decrypt(key: SessionKey, data: bytes, *, associated_data: bytes = b"") -> bytes:
    """Decrypt ``data`` made by :func:`encrypt` with the same key and associated data.

    Raises:
        FormatError: not keyblob encrypted data.
        VerificationError: another key, other associated data, or any tampering.
    """
    header, size = read_header(bytes(data))
    _check_key(key, header)
    return stream.decrypt_bytes(
        _INSTANCES[key.algorithm],
        key.unsafe_raw_bytes(),
        header.context(associated_data),
        bytes(data[size:]),
    )


def read_stream_header(src: BinaryIO) -> DataHeader:
    """Read and parse the header at the start of a stream, leaving it after the header.

    Raises:
        FormatError: not keyblob encrypted data (or truncated inside the header).
    """
    fixed = src.read(FIXED_SIZE)
    size = DataHeader.total_size(fixed)
    rest = src.read(size - FIXED_SIZE)
    if len(rest) != size - FIXED_SIZE:
        raise FormatError("encrypted data: header truncated")
    return DataHeader.from_bytes(fixed + rest)


def encrypt_stream(
    key: SessionKey,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    associated_data: bytes = b"",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Encrypt ``src`` into ``dst`` in constant memory; returns the plaintext length.

    Raises:
        VerificationError: the input exceeds the format's 4 PiB limit.
    """
    header = header_for(key)
    dst.write(header.to_bytes())
    return stream.encrypt_stream(
        _INSTANCES[key.algorithm],
        key.unsafe_raw_bytes(),
        header.context(associated_data),
        src,
        dst,
        progress=progress,
    )


def decrypt_stream(
    key: SessionKey | Callable[[DataHeader], SessionKey],
    src: BinaryIO,
    dst: BinaryIO,
    *,
    associated_data: bytes = b"",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt ``src`` into ``dst`` in constant memory; returns the plaintext length.

    ``key`` is the session key, or a function that finds it from the header (the command
    line loads it from the store by name, generation and key id, with every check).
    Plaintext is written chunk by chunk, each after its tag verifies: on an error, what was
    written is a verified prefix that the caller must discard.

    Raises:
        FormatError: not keyblob encrypted data.
        VerificationError: wrong key, truncation, reordering, modification, trailing data.
    """
    header = read_stream_header(src)
    session = key if isinstance(key, SessionKey) else key(header)
    _check_key(session, header)
    return stream.decrypt_stream(
        _INSTANCES[session.algorithm],
        session.unsafe_raw_bytes(),
        header.context(associated_data),
        src,
        dst,
        progress=progress,
    )


def open_range(
    key: SessionKey, src: BinaryIO, *, associated_data: bytes = b""
) -> stream.RandomAccessReader:
    """Random access to the plaintext of a seekable ciphertext: ``.size``, ``.read(off, n)``.

    Raises:
        FormatError: not keyblob encrypted data.
        VerificationError: wrong key, or the length does not authenticate.
    """
    header = read_stream_header(src)
    _check_key(key, header)
    return stream.RandomAccessReader(
        _INSTANCES[key.algorithm], key.unsafe_raw_bytes(), header.context(associated_data), src
    )
