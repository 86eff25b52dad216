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

import errno
import hmac
import io
import os
import queue
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol, cast

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
BATCH = 64  # chunks per read/write in the streaming functions (1 MiB of plaintext)
KDF_LABEL = b"c2sp.org/chunked-encryption@v1+"

WRONG_KEY = "the data does not open with this key (wrong key, key name or header)"
TRUNCATED = "the data is truncated"
MODIFIED = "the data was modified: chunk {index} failed authentication"
END_MODIFIED = "the data was truncated or modified: its last chunk ({index}) failed authentication"
TOO_LONG = "the data is longer than the format allows"


_Buffer = bytes | bytearray | memoryview


class _Aead(Protocol):
    def decrypt(self, nonce: bytes, data: _Buffer, aad: None) -> bytes: ...

    def encrypt_into(self, nonce: bytes, data: _Buffer, aad: None, buf: _Buffer) -> int: ...

    def decrypt_into(self, nonce: bytes, data: _Buffer, aad: None, buf: _Buffer) -> int: ...


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

    def open(self, index: int, sealed: _Buffer, *, final: bool) -> bytes:
        try:
            return self.aead.decrypt(self.nonce(index), sealed, None)
        except InvalidTag:
            message = END_MODIFIED if final else MODIFIED
            raise VerificationError(message.format(index=index)) from None

    def open_into(self, index: int, sealed: _Buffer, out: memoryview, *, final: bool) -> None:
        try:
            self.aead.decrypt_into(self.nonce(index), sealed, None, out)
        except InvalidTag:
            message = END_MODIFIED if final else MODIFIED
            raise VerificationError(message.format(index=index)) from None


class _ReadInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _read_full(src: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` unless the input ends first; returns how many bytes were read."""
    reader = cast(_ReadInto, src)  # every binary file object has readinto; BinaryIO omits it
    got = reader.readinto(buf) or 0
    while got and got < len(buf):  # a pipe or a short read: keep going until EOF
        n = reader.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    """Write all of ``data``: a raw file object may take less than it was given."""
    while data:
        written = dst.write(data)
        if written is None:  # a non-blocking raw file that could take nothing
            raise BlockingIOError(errno.EAGAIN, "the output is not ready for writing")
        data = data[written:]


def _is_regular_file(f: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # BytesIO: io.UnsupportedOperation
        return False


class _Writer:
    """Writes batches to ``dst`` in order, on a helper thread when ``dst`` is a regular file.

    Two buffers alternate: the caller fills one (:meth:`buffer`) while the thread writes the
    other, so the write system call (a page-cache copy, most of a file's cost) overlaps
    the AEAD, and memory stays at two batches.  A write error reaches the caller at the
    next hand-off or at exit, and nothing queued after it is written.  The thread starts
    only at the second batch, so an input of one batch never starts it; it has finished
    before the ``with`` block is left, so the caller may close ``dst`` at once.

    Pipes, terminals and in-memory files are written by the caller itself, as a plain loop
    would: a write to a pipe can block for as long as its reader stalls, and only the main
    thread's write is interrupted by Ctrl-C.
    """

    def __init__(self, dst: BinaryIO, size: int) -> None:
        self._dst = dst
        self._threaded = _is_regular_file(dst)
        first = memoryview(bytearray(size))
        # Written by the caller, a buffer is free again as soon as the write returns.
        self._buffers = (first, memoryview(bytearray(size)) if self._threaded else first)
        self._busy = [False, False]  # handed to the thread and not reported back yet
        self._turn = 0
        self._jobs: queue.SimpleQueue[tuple[int, memoryview] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[int, BaseException | None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        error: BaseException | None = None
        while (job := self._jobs.get()) is not None:
            turn, data = job
            if error is None:  # after a failed write, nothing more is written
                try:
                    _write_all(self._dst, data)
                except BaseException as e:  # reported to the caller, who raises it
                    error = e
            self._done.put((turn, error))

    def _wait(self, turn: int) -> None:
        while self._busy[turn]:  # reports come in order: older writes first
            done, error = self._done.get()
            self._busy[done] = False
            if error is not None:
                raise error

    def buffer(self) -> memoryview:
        """The buffer to fill next, once its previous write is done."""
        self._wait(self._turn)
        return self._buffers[self._turn]

    def write(self, data: memoryview, *, last: bool) -> None:
        """Queue ``data`` (a slice of :meth:`buffer`); the last batch is written here."""
        if last or not self._threaded:
            self._wait(self._turn ^ 1)
            _write_all(self._dst, data)
        else:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="keyblob-write", daemon=True)
                thread.start()
                self._thread = thread
            self._busy[self._turn] = True
            self._jobs.put((self._turn, data))
        self._turn ^= 1

    def __enter__(self) -> _Writer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join()  # no write outlives the call, whatever happened
        if kind is None or issubclass(kind, Exception):
            # A write that failed first is the error to report: the caller may have met
            # another one (a bad chunk) only because it went on sealing or opening.
            try:
                self._wait(self._turn ^ 1)
                self._wait(self._turn)
            except Exception as failed:
                if failed is not error:  # not the one already on its way up
                    raise


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
    _batch: int = BATCH,
) -> int:
    """Encrypt ``src`` to ``dst`` in constant memory; returns the plaintext length.

    Raises:
        UsageError: the key has the wrong length for the instance.
        VerificationError: the input is longer than 2**38 chunks (4 PiB).
    """
    salt = _salt if _salt is not None else secrets.token_bytes(SALT_SIZE)
    keys = _Keys(instance, key, salt, context)  # FORMAT.md 7.3, steps 1-2
    _write_all(dst, memoryview(salt + keys.commitment))  # step 3
    # Chunks go through in batches: one read and one write per BATCH chunks, into buffers
    # allocated once (the per-chunk system calls, not AES, dominated otherwise); each
    # batch is written while the next one is sealed.
    plain = memoryview(bytearray(CHUNK_SIZE * _batch))
    seal = keys.aead.encrypt_into
    index = total = 0
    with _Writer(dst, SEALED_CHUNK_SIZE * _batch) as writer:
        while True:  # steps 4-5: full chunks, then the short final one (maybe empty)
            n = _read_full(src, plain)
            full, rest = divmod(n, CHUNK_SIZE)
            at_end = n < len(plain)
            sealed = writer.buffer()
            out = 0
            for j in range(full):
                seal(
                    keys.nonce(index),
                    plain[j * CHUNK_SIZE : (j + 1) * CHUNK_SIZE],
                    None,
                    sealed[out : out + SEALED_CHUNK_SIZE],
                )
                out += SEALED_CHUNK_SIZE
                index += 1
            if at_end:
                seal(
                    keys.nonce(index),
                    plain[full * CHUNK_SIZE : n],
                    None,
                    sealed[out : out + rest + TAG_SIZE],
                )
                out += rest + TAG_SIZE
            writer.write(sealed[:out], last=at_end)
            total += n
            if progress is not None:
                progress(n)
            if at_end:
                return total


def decrypt_stream(
    instance: Instance,
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    _batch: int = BATCH,
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
    sealed = memoryview(bytearray(SEALED_CHUNK_SIZE * _batch))
    index = total = 0
    with _Writer(dst, CHUNK_SIZE * _batch) as writer:
        while True:
            n = _read_full(src, sealed)
            full, rest = divmod(n, SEALED_CHUNK_SIZE)
            at_end = n < len(sealed)
            plain = writer.buffer()
            out = 0
            for j in range(full):  # step 4: every full sealed chunk is a non-final one
                keys.open_into(
                    index,
                    sealed[j * SEALED_CHUNK_SIZE : (j + 1) * SEALED_CHUNK_SIZE],
                    plain[out : out + CHUNK_SIZE],
                    final=False,
                )
                out += CHUNK_SIZE
                index += 1
            if at_end and rest >= TAG_SIZE:  # step 5: what is left at the end is the final chunk
                keys.open_into(
                    index,
                    sealed[full * SEALED_CHUNK_SIZE : n],
                    plain[out : out + rest - TAG_SIZE],
                    final=True,
                )
                out += rest - TAG_SIZE
            writer.write(plain[:out], last=at_end)  # only chunks whose tags verified
            total += out
            if progress is not None:
                progress(n)
            if at_end:
                if rest < TAG_SIZE:  # 0: the short final chunk is missing; 1-15: not a chunk
                    raise VerificationError(TRUNCATED)
                return total  # step 6: the final chunk verified; nothing may follow


def encrypt_bytes(
    instance: Instance, key: bytes, context: bytes, data: bytes, *, _salt: bytes | None = None
) -> bytes:
    """One-shot encryption: :func:`encrypt_stream` over memory, so one code path."""
    out = io.BytesIO()
    batch = min(BATCH, len(data) // CHUNK_SIZE + 1)  # buffers no larger than the data
    encrypt_stream(instance, key, context, io.BytesIO(data), out, _salt=_salt, _batch=batch)
    return out.getvalue()


def _framing(size: int) -> tuple[int, int]:
    """Step 4 on a known length: (index of the final chunk, its sealed length)."""
    body = size - HEADER_SIZE
    final_index, final_size = divmod(body, SEALED_CHUNK_SIZE)
    if body < 0 or final_size < TAG_SIZE:
        raise VerificationError(TRUNCATED)
    return final_index, final_size


def decrypt_bytes(instance: Instance, key: bytes, context: bytes, data: bytes) -> bytes:
    """One-shot decryption: the whole plaintext, or an error and nothing (the verified
    prefix :func:`decrypt_stream` may have produced is dropped with its buffer).

    Raises:
        UsageError: the key has the wrong length.
        VerificationError: as for :func:`decrypt_stream`.
    """
    out = io.BytesIO()
    batch = min(BATCH, max(len(data) - HEADER_SIZE, 0) // SEALED_CHUNK_SIZE + 1)
    decrypt_stream(instance, key, context, io.BytesIO(data), out, _batch=batch)
    return out.getvalue()


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
