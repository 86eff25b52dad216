"""atomic_output: the file appears whole or not at all, and its sync-behind helper ends with it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import support
from keyblob import atomic


def _helpers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "keyblob-sync-behind"]


def test_output_appears_only_on_success_and_replaces_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    with atomic.atomic_output(out, 0o640) as f:
        f.write(b"new content")
        assert out.read_bytes() == b"old"
    assert out.read_bytes() == b"new content"
    assert out.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert _helpers() == []


def test_failure_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_output(out) as f:
        f.write(b"half")
        raise RuntimeError("stop")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert _helpers() == []


def test_written_data_is_flushed_while_the_block_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = threading.Event()
    calls: list[int] = []
    real = getattr(os, "fdatasync", os.fsync)

    def record(fd: int) -> None:
        calls.append(fd)
        real(fd)
        synced.set()

    monkeypatch.setattr(os, "fdatasync", record, raising=False)
    monkeypatch.setattr(atomic, "_SYNC_BEHIND_SECONDS", 0.001)
    monkeypatch.setattr(atomic, "_SYNC_BEHIND_BYTES", 65536)
    with atomic.atomic_output(tmp_path / "out") as f:
        f.write(b"x" * 65536)
        f.flush()
        assert synced.wait(10), "nothing was flushed while the output was being written"
        assert calls[0] == f.fileno()
    after_block = len(calls)
    time.sleep(0.01)
    assert len(calls) == after_block  # the helper stopped with the block
    assert (tmp_path / "out").read_bytes() == b"x" * 65536
    assert _helpers() == []


def test_a_full_disk_leaves_no_temp_file_and_reports_the_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import io

    class FullDisk(io.RawIOBase):
        """What a file on a full disk does: every write fails with ENOSPC."""

        def __init__(self, fd: int) -> None:
            self._fd = fd

        def writable(self) -> bool:
            return True

        def fileno(self) -> int:
            return self._fd

        def write(self, _b: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            if not self.closed:
                os.close(self._fd)
            super().close()

    monkeypatch.setattr(os, "fdopen", lambda fd, _mode: io.BufferedWriter(FullDisk(fd)))
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left") as info, atomic.atomic_output(out) as f:
        f.write(b"x" * 100)  # buffered: the error comes at the flush, and again at close
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    assert _helpers() == []


def test_a_failing_flush_in_the_helper_is_left_to_the_final_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = threading.Event()
    uncaught: list[object] = []

    def broken(_fd: int) -> None:
        failed.set()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken, raising=False)
    monkeypatch.setattr(atomic, "_SYNC_BEHIND_SECONDS", 0.001)
    monkeypatch.setattr(atomic, "_SYNC_BEHIND_BYTES", 1)
    # An exception escaping the helper would print a traceback on the user's terminal.
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    with atomic.atomic_output(tmp_path / "out") as f:
        f.write(b"data")
        f.flush()
        assert failed.wait(10)
    assert (tmp_path / "out").read_bytes() == b"data"  # the final fsync (os.fsync) succeeded
    assert uncaught == []


def test_a_slow_producer_is_not_flushed_until_enough_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = getattr(os, "fdatasync", os.fsync)

    def record(fd: int) -> None:
        calls.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", record, raising=False)
    monkeypatch.setattr(atomic, "_SYNC_BEHIND_SECONDS", 0.001)
    monkeypatch.setattr(atomic, "_SYNC_BEHIND_BYTES", 1000)
    with atomic.atomic_output(tmp_path / "out") as f:
        for _ in range(9):  # 900 bytes, a little at a time: under the threshold
            f.write(b"x" * 100)
            f.flush()
            time.sleep(0.005)
        assert calls == []
        f.write(b"x" * 200)
        f.flush()
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.001)
    assert calls and calls[0] >= 1000


def test_private_folders_are_0700_and_each_is_made_durable_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(atomic, "fsync_dir", lambda folder: synced.append(Path(folder)))
    old = os.umask(0o022)
    try:
        atomic.make_private_folder(tmp_path / "a" / "b" / "c")
        atomic.make_private_folder(tmp_path / "a" / "b" / "c")  # exists: nothing to do
    finally:
        os.umask(old)
    made = [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert [p.stat().st_mode & 0o777 for p in made] == [0o700] * 3
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        atomic.make_private_folder(tmp_path / "file")


def test_a_fifo_or_device_is_written_into_not_replaced(tmp_path):
    """-o /dev/null once replaced /dev/null with a regular file (as root): the temp file
    was renamed over the device.  Devices and FIFOs are now written directly (tested on a
    FIFO, the same path as a device, so a regression cannot break the machine's /dev/null)."""
    import stat
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with atomic.atomic_output(fifo) as f:
        f.write(b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # no temp file left


def test_a_symlink_is_written_through_and_a_folder_refused(tmp_path):
    target = tmp_path / "real.txt"
    target.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with atomic.atomic_output(link) as f:
        f.write(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    with pytest.raises(IsADirectoryError), atomic.atomic_output(tmp_path) as f:
        f.write(b"never")


def test_what_another_user_planted_is_never_written_into(tmp_path):
    """In a folder others can write to, a symlink or FIFO they planted at the output path
    would send the output where they want it (a reader of their own, a file of the
    victim's): the link is replaced, not followed; the FIFO is refused."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:  # CI runs as root: there it must run
        support.skip_or_fail("another user's planted file was not tested: needs root to chown")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"victim's own file")
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    with atomic.atomic_output(link) as f:
        f.write(b"output")
    assert not link.is_symlink() and link.read_bytes() == b"output"
    assert victim.read_bytes() == b"victim's own file"
    dangling = tmp_path / "dangling.txt"  # even one's own: a link to nothing is replaced
    dangling.symlink_to(tmp_path / "nowhere" / "file")
    with atomic.atomic_output(dangling) as f:
        f.write(b"here")
    assert not dangling.is_symlink() and dangling.read_bytes() == b"here"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.chown(fifo, 65534, 65534)
    import threading

    opened = threading.Thread(target=lambda: open(fifo, "rb").close(), daemon=True)
    opened.start()  # a reader, so that opening the FIFO for writing does not block
    with pytest.raises(PermissionError, match="another user"), atomic.atomic_output(fifo) as f:
        f.write(b"never")
    opened.join(5)
