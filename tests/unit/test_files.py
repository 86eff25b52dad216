"""Data encryption under a session key (P5): round trips, and every way to break a
ciphertext refused with a keyblob error (FORMAT.md 7)."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from keyblob import blobs, files, stream
from keyblob.errors import FormatError, UnsupportedError, UsageError, VerificationError
from keyblob.format.data import DataHeader
from keyblob.keys import Algorithm

CHUNK = stream.CHUNK_SIZE
SEALED = stream.SEALED_CHUNK_SIZE
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * 1024 * 1024 + 7]


@pytest.fixture
def keys(make_container, store):
    c = make_container()
    first = blobs.generate(c, store, "payroll")
    other = blobs.generate(c, store, "other")
    second = blobs.rotate(c, store, "payroll")
    return first, second, other


def data_of(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


DATA_ALGORITHMS = [Algorithm.AES_256_GCM, Algorithm.AES_128_GCM, Algorithm.CHACHA20_POLY1305]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("algorithm", DATA_ALGORITHMS)
def test_round_trip_sizes(make_container, store, size, algorithm):
    key = blobs.generate(make_container(), store, "k", algorithm=algorithm)
    plain = data_of(size)
    ct = files.encrypt(key, plain)
    header_size = len(DataHeader(algorithm, 1, key.key_id, "k").to_bytes())
    chunks = size // CHUNK + 1
    assert len(ct) == header_size + stream.HEADER_SIZE + size + 16 * chunks
    assert files.decrypt(key, ct) == plain
    out = io.BytesIO()
    assert files.decrypt_stream(key, io.BytesIO(ct), out) == size
    assert out.getvalue() == plain
    streamed = io.BytesIO()
    assert files.encrypt_stream(key, io.BytesIO(plain), streamed) == size
    assert files.decrypt(key, streamed.getvalue()) == plain
    assert streamed.getvalue() != ct  # a fresh salt per message


def test_each_message_has_its_own_keys(keys):
    first, _, _ = keys
    a, b = files.encrypt(first, b"same"), files.encrypt(first, b"same")
    assert a != b and files.decrypt(first, a) == files.decrypt(first, b) == b"same"


def test_wrong_key_wrong_name_wrong_generation(keys):
    first, second, other = keys
    ct = files.encrypt(first, b"secret data")
    for wrong in (second, other):
        with pytest.raises(VerificationError, match="encrypted under payroll generation 1"):
            files.decrypt(wrong, ct)


def test_header_is_bound_to_payload(keys):
    """Relabel a ciphertext (edit its header to name another key it does not belong to, or
    paste another file's header): the key commitment refuses it before any chunk."""
    first, second, _ = keys
    ct1 = files.encrypt(first, b"one" * 1000)
    ct2 = files.encrypt(second, b"two" * 1000)
    h1, n1 = files.read_header(ct1)
    _, n2 = files.read_header(ct2)
    swapped = ct2[:n2] + ct1[n1:]  # header of 2, payload of 1
    with pytest.raises(VerificationError, match="does not open"):
        files.decrypt(second, swapped)
    # The header is bound even below the key check: the right key with an edited header
    # (another generation) gives another context, and the commitment refuses it.
    forged = DataHeader(h1.algorithm, 7, h1.key_id, h1.name)
    with pytest.raises(VerificationError, match="generation 7"):
        files.decrypt(first, forged.to_bytes() + ct1[n1:])
    raw = first.unsafe_raw_bytes()
    with pytest.raises(VerificationError, match="does not open"):
        stream.decrypt_bytes(stream.COBBLESTONE_256, raw, forged.context(), ct1[n1:])
    assert (
        stream.decrypt_bytes(stream.COBBLESTONE_256, raw, h1.context(), ct1[n1:]) == b"one" * 1000
    )


def test_associated_data(keys):
    first, _, _ = keys
    ct = files.encrypt(first, b"x", associated_data=b"invoice 42")
    assert files.decrypt(first, ct, associated_data=b"invoice 42") == b"x"
    with pytest.raises(VerificationError, match="does not open"):
        files.decrypt(first, ct, associated_data=b"invoice 43")
    with pytest.raises(VerificationError):
        files.decrypt(first, ct)


def _chunked(keys, n_chunks_plus: int = 3 * CHUNK + 100):
    first, _, _ = keys
    plain = data_of(n_chunks_plus)
    ct = files.encrypt(first, plain)
    _, hsize = files.read_header(ct)
    return first, plain, ct, hsize + stream.HEADER_SIZE


def test_truncation_at_every_chunk_boundary_and_in_header(keys):
    key, _, ct, body = _chunked(keys)
    cuts = [body + i * SEALED for i in range(4)] + [body + 3 * SEALED + 50]
    cuts += list(range(body))  # every truncation inside both headers
    for cut in cuts:
        with pytest.raises((VerificationError, FormatError)):
            files.decrypt(key, ct[:cut])
        with pytest.raises((VerificationError, FormatError)):
            files.decrypt_stream(key, io.BytesIO(ct[:cut]), io.BytesIO())


def test_reordered_duplicated_dropped_chunks_and_trailing_data(keys):
    key, _, ct, body = _chunked(keys)
    c = [ct[body + i * SEALED : body + (i + 1) * SEALED] for i in range(3)]
    tail = ct[body + 3 * SEALED :]
    head = ct[:body]
    variants = {
        "swapped": head + c[1] + c[0] + c[2] + tail,
        "duplicated": head + c[0] + c[0] + c[2] + tail,
        "dropped": head + c[0] + c[2] + tail,
        "trailing byte": ct + b"\x00",
        "trailing chunk": ct + c[0],
        "final as middle": head + c[0] + c[1] + tail + c[2],
    }
    for what, bad in variants.items():
        with pytest.raises(VerificationError):
            files.decrypt(key, bad)
        sink = io.BytesIO()
        with pytest.raises(VerificationError):
            files.decrypt_stream(key, io.BytesIO(bad), sink)
        assert len(sink.getvalue()) < 3 * CHUNK + 100, what


BATCH = stream.CHUNK_SIZE * stream.BATCH  # plaintext bytes per read/write of the streams


class _SlowFile(io.FileIO):
    """A regular file whose writes take a while and can fail, and that records the thread
    each write ran on: into a regular file the streams write each batch on a helper
    thread while they seal or open the next one."""

    def __init__(self, path, fail_at: int | None = None) -> None:
        super().__init__(path, "w+")
        self.fail_at = fail_at
        self.writes = 0
        self.threads: set[str] = set()

    def write(self, data) -> int:  # type: ignore[override]
        self.writes += 1
        self.threads.add(threading.current_thread().name)
        if self.writes == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        time.sleep(0.01)
        return super().write(data)

    def content(self) -> bytes:
        self.seek(0)
        return self.readall()


class _RecordingBytes(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def write(self, data) -> int:  # type: ignore[override]
        self.threads.add(threading.current_thread().name)
        return super().write(data)


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("keyblob-write")]


def test_batches_arrive_in_order_through_the_write_thread(keys, tmp_path):
    first, _, _ = keys
    plain = os.urandom(5 * BATCH + 3)
    with _SlowFile(tmp_path / "ct") as sealed:
        assert files.encrypt_stream(first, io.BytesIO(plain), sealed) == len(plain)
        ct = sealed.content()
    with _SlowFile(tmp_path / "pt") as opened:
        assert files.decrypt_stream(first, io.BytesIO(ct), opened) == len(plain)
        assert opened.content() == plain
    assert "keyblob-write" in sealed.threads and "keyblob-write" in opened.threads
    assert not _writer_threads()


def test_pipes_and_memory_are_written_by_the_caller(keys):
    # Only the caller's own write is interrupted by Ctrl-C when a pipe's reader stalls.
    first, _, _ = keys
    sink = _RecordingBytes()
    files.encrypt_stream(first, io.BytesIO(bytes(3 * BATCH)), sink)
    assert sink.threads == {threading.current_thread().name}


def _enospc(excinfo: pytest.ExceptionInfo[OSError]) -> bool:
    return type(excinfo.value) is OSError and excinfo.value.errno == errno.ENOSPC


def test_a_write_error_reaches_the_caller(keys, tmp_path):
    first, _, _ = keys
    plain = data_of(4 * BATCH)
    ct = files.encrypt(first, plain)
    # encrypt: write 1 is the header, 2-5 the full batches (helper), 6 the final chunk
    # (caller); decrypt: 1-4 the full batches, 5 the empty final chunk
    cases = [(files.encrypt_stream, plain, 3), (files.encrypt_stream, plain, 6)]
    cases += [(files.decrypt_stream, ct, 2)]
    for run, data, fail_at in cases:
        with _SlowFile(tmp_path / "out", fail_at=fail_at) as out:
            with pytest.raises(OSError) as excinfo:
                run(first, io.BytesIO(data), out)
            assert _enospc(excinfo)
            assert out.writes == fail_at  # nothing queued after the failed write was written
    assert not _writer_threads()


def test_a_write_error_comes_before_a_bad_chunk_met_later(keys, tmp_path):
    key, _, _, _ = _chunked(keys)
    ct = bytearray(files.encrypt(key, data_of(4 * BATCH)))
    ct[-BATCH - BATCH // 2] ^= 1  # inside the third batch; the second one's write fails
    with _SlowFile(tmp_path / "out", fail_at=2) as out, pytest.raises(OSError) as excinfo:
        files.decrypt_stream(key, io.BytesIO(bytes(ct)), out)
    assert _enospc(excinfo)


def test_a_bad_chunk_in_a_later_batch_stops_after_the_verified_batches(keys, tmp_path):
    key, _, _, _ = _chunked(keys)
    plain = data_of(4 * BATCH)
    ct = bytearray(files.encrypt(key, plain))
    ct[-BATCH // 2] ^= 1  # inside the fourth batch
    with _SlowFile(tmp_path / "out") as out:
        with pytest.raises(VerificationError, match=r"chunk 224 failed"):
            files.decrypt_stream(key, io.BytesIO(bytes(ct)), out)
        # every batch before the bad one was written in full, in order, before the return
        assert out.content() == plain[: 3 * BATCH]
    assert not _writer_threads()


def test_truncation_at_a_batch_boundary(keys, tmp_path):
    key, _, _, _ = _chunked(keys)
    plain = data_of(4 * BATCH)
    ct = files.encrypt(key, plain)
    body = len(ct) - 4 * BATCH // CHUNK * SEALED - 16  # both headers
    with _SlowFile(tmp_path / "out") as out:
        with pytest.raises(VerificationError, match="truncated"):
            files.decrypt_stream(key, io.BytesIO(ct[: body + 2 * BATCH // CHUNK * SEALED]), out)
        assert out.content() == plain[: 2 * BATCH]


_STALLED_PIPE = """
import io, sys
from keyblob import stream
print("ready", file=sys.stderr, flush=True)
data = io.BytesIO(bytes(8 * stream.CHUNK_SIZE * stream.BATCH))
stream.encrypt_stream(stream.COBBLESTONE_256, bytes(32), b"", data, sys.stdout.buffer)
"""


def test_ctrl_c_stops_a_write_to_a_stalled_pipe():
    # Nobody reads the pipe, so a write blocks once its buffer is full; Ctrl-C must end it.
    child = subprocess.Popen(
        [sys.executable, "-c", _STALLED_PIPE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stderr is not None and child.stderr.readline() == b"ready\n"
        time.sleep(0.5)  # into the blocked write
        child.send_signal(signal.SIGINT)
        child.wait(timeout=10)  # a write left to a helper thread would block this for ever
    finally:
        child.kill()
        _, err = child.communicate()
    assert child.returncode != 0 and b"KeyboardInterrupt" in err


def test_every_bit_flip_of_a_small_ciphertext(keys):
    first, _, _ = keys
    ct = files.encrypt(first, b"short message")
    for i in range(len(ct)):
        for bit in range(8):
            bad = bytearray(ct)
            bad[i] ^= 1 << bit
            with pytest.raises((VerificationError, FormatError)):
                files.decrypt(first, bytes(bad))


def test_header_parsing_is_strict(keys):
    first, _, _ = keys
    ct = files.encrypt(first, b"x")
    with pytest.raises(FormatError, match="KBDT"):
        files.decrypt(first, b"not a ciphertext at all")
    with pytest.raises(UnsupportedError, match="version 2"):
        files.decrypt(first, ct[:4] + b"\x02" + ct[5:])
    with pytest.raises(FormatError, match="flags"):
        files.decrypt(first, ct[:6] + b"\x01" + ct[7:])
    with pytest.raises(FormatError, match="algorithm"):
        files.decrypt(first, ct[:5] + b"\x09" + ct[6:])


def test_random_access(keys):
    key, plain, ct, _ = _chunked(keys)
    reader = files.open_range(key, io.BytesIO(ct))
    assert reader.size == len(plain)
    for offset, length in [
        (0, 10),
        (CHUNK - 5, 10),
        (2 * CHUNK, CHUNK),
        (len(plain) - 3, 100),
        (len(plain), 5),
    ]:
        assert reader.read(offset, length) == plain[offset : offset + length]
    with pytest.raises(UsageError):
        reader.read(-1, 4)
    # A modified middle chunk fails only the ranges that touch it.
    bad = bytearray(ct)
    bad[len(ct) - 100 - 2 * SEALED] ^= 1
    reader = files.open_range(key, io.BytesIO(bytes(bad)))
    assert reader.read(0, 100) == plain[:100]
    with pytest.raises(VerificationError, match="chunk 1"):
        reader.read(CHUNK, 10)


def test_key_size_checked_before_anything(keys):
    with pytest.raises(UsageError, match="32-byte key"):
        stream.decrypt_bytes(stream.COBBLESTONE_256, b"k" * 31, b"", b"")
    with pytest.raises(UsageError, match="16-byte key"):
        stream.encrypt_bytes(stream.COBBLESTONE_128, b"k" * 32, b"", b"")


def test_cryptoapi_keys_do_not_encrypt_native_data(make_container, store):
    key = blobs.generate(make_container(), store, "w", algorithm=Algorithm.CAPI_AES_256)
    with pytest.raises(UsageError, match="keyblob capi encrypt"):
        files.encrypt(key, b"x")
    with pytest.raises(UsageError, match="keyblob capi encrypt"):
        files.encrypt_stream(key, io.BytesIO(b"x"), io.BytesIO())
    native = files.encrypt(blobs.generate(make_container(), store, "n"), b"x")
    with pytest.raises(UsageError, match="keyblob capi decrypt"):
        files.decrypt(key, native)
