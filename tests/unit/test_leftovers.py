"""What a killed writer leaves behind (issue 11 item 9): nothing where the OS has unnamed
temp files (Linux O_TMPFILE); elsewhere a named temp file that the next write removes once
it is certainly a dead writer's (atomic.remove_stale_temp_files)."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keyblob import Home, atomic
from keyblob.cli import main
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE

SRC = Path(atomic.__file__).resolve().parents[1]
UNNAMED = atomic._unnamed  # this machine has O_TMPFILE and /proc/self/fd
linux_only = pytest.mark.skipif(not UNNAMED, reason="needs Linux O_TMPFILE and /proc/self/fd")
HEX = "0123456789abcdef"


def _stale(path: Path) -> Path:
    old = time.time() - atomic.STALE_SECONDS - 60
    os.utime(path, (old, old))
    return path


# -- the cleanup's rules -------------------------------------------------------------------


def test_only_our_own_stale_unlocked_temp_files_are_removed(tmp_path: Path) -> None:
    stale = _stale_file(tmp_path / f".7.kb.{HEX}.tmp")
    fresh = tmp_path / f".8.kb.{'1' * 16}.tmp"  # a writer may have just made it
    fresh.write_bytes(b"in progress")
    locked = _stale_file(tmp_path / f".9.kb.{'2' * 16}.tmp")  # a live, slow writer holds it
    not_ours = [f".7.kb.{HEX[:15]}.tmp", f"7.kb.{HEX}.tmp", f".7.kb.{HEX.upper()}.tmp", "x.tmp"]
    for name in not_ours:
        _stale_file(tmp_path / name)
    link = tmp_path / f".link.{HEX}.tmp"
    link.symlink_to(tmp_path / "7.kb")
    folder = tmp_path / f".dir.{HEX}.tmp"
    folder.mkdir()
    fd = os.open(locked, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        atomic.write_atomic(tmp_path / "7.kb", b"blob", exclusive=True)
    finally:
        os.close(fd)
    left = set(os.listdir(tmp_path))
    assert stale.name not in left
    assert {fresh.name, locked.name, link.name, folder.name, *not_ours, "7.kb"} == left


def test_an_output_removes_only_its_own_leftovers(tmp_path: Path) -> None:
    """A user's folder: ``decrypt -o out`` removes stale ``.out.<hex>.tmp`` only."""
    own = _stale_file(tmp_path / f".out.{HEX}.tmp")
    other = _stale_file(tmp_path / f".report.{HEX}.tmp")
    with atomic.atomic_output(tmp_path / "out") as f:
        f.write(b"plain")
    assert sorted(os.listdir(tmp_path)) == sorted(["out", other.name])
    assert not own.exists()


def _stale_file(path: Path) -> Path:
    path.write_bytes(b"partial plaintext")
    return _stale(path)


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named fallback"])
def test_both_kinds_of_temp_file_write_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    if unnamed and not UNNAMED:
        pytest.skip("needs Linux O_TMPFILE and /proc/self/fd")
    monkeypatch.setattr(atomic, "_unnamed", unnamed)
    target = tmp_path / "state.json"
    atomic.write_atomic(target, b"one")
    atomic.write_atomic(target, b"two")
    with pytest.raises(FileExistsError):
        atomic.write_atomic(target, b"three", exclusive=True)
    atomic.write_atomic(tmp_path / "1.kb", b"blob", exclusive=True, mode=0o640, exact_mode=True)
    with atomic.atomic_output(tmp_path / "out") as f:
        f.write(b"plain")
    with pytest.raises(RuntimeError), atomic.atomic_output(tmp_path / "out") as f:
        f.write(b"partial")
        raise RuntimeError("the input failed")
    assert target.read_bytes() == b"two" and (tmp_path / "out").read_bytes() == b"plain"
    assert (tmp_path / "1.kb").stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["1.kb", "out", "state.json"]


@linux_only
def test_a_file_system_without_o_tmpfile_falls_back_to_a_named_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    opened: list[str] = []

    def no_tmpfile(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        opened.append(os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    atomic.write_atomic(tmp_path / "state.json", b"x")
    assert (tmp_path / "state.json").read_bytes() == b"x"
    assert any(atomic.TEMP_FILE.fullmatch(os.path.basename(p)) for p in opened)
    assert os.listdir(tmp_path) == ["state.json"]


# -- SIGKILL of real writers ---------------------------------------------------------------


def _child_fds_in(pid: int, folder: Path) -> list[int]:
    """Sizes of the files the child has open in ``folder`` (unnamed ones included)."""
    sizes = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(str(folder) + "/"):
                sizes.append(os.stat(f"/proc/{pid}/fd/{fd}").st_size)
        except OSError:
            continue
    return sizes


_DECRYPT = """
import sys
from keyblob import atomic
atomic._unnamed = sys.argv[1] == "unnamed"
from keyblob.cli import main
sys.exit(main(sys.argv[2:]))
"""


@linux_only
@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named fallback"])
def test_decrypt_killed_mid_stream_leaves_no_plaintext(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unnamed: bool,
) -> None:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "pw")
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    assert main(["--home", str(home), "new", "k"]) == 0
    plain = tmp_path / "plain"
    marker = b"SECRET-PLAINTEXT-"
    plain.write_bytes(marker * ((8 << 20) // len(marker)))  # 8 MiB
    ciphertext = tmp_path / "ct"
    assert main(["--home", str(home), "encrypt", "k", "-i", str(plain), "-o", str(ciphertext)]) == 0
    capsys.readouterr()
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    child = subprocess.Popen(
        [
            *(sys.executable, "-c", _DECRYPT, "unnamed" if unnamed else "named"),
            *("--home", str(home), "decrypt", "-o", str(out_folder / "plain")),
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert child.stdin is not None
    try:
        data = ciphertext.read_bytes()
        child.stdin.write(data[: len(data) // 2])  # half the input, and the pipe stays open
        child.stdin.flush()
        deadline = time.monotonic() + 30
        while not any(size > 1 << 20 for size in _child_fds_in(child.pid, out_folder)):
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the decryption never wrote its output"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.wait()
    left = list(out_folder.iterdir())
    if unnamed:
        assert left == []  # nothing: the plaintext was in an unnamed file
    else:  # a file system without O_TMPFILE: the leftover goes with the next write
        assert len(left) == 1 and atomic.TEMP_FILE.fullmatch(left[0].name)
        assert left[0].read_bytes().startswith(marker)
        _stale(left[0])
        ciphertext_in = ["-i", str(ciphertext), "-o", str(out_folder / "plain")]
        assert main(["--home", str(home), "decrypt", *ciphertext_in]) == 0
        assert [p.name for p in out_folder.iterdir()] == ["plain"]


_STATE_WRITER = """
import sys
from pathlib import Path
from keyblob import Home
c = Home(Path(sys.argv[1])).open("c", sys.argv[2].encode())
print("ready", flush=True)
n = 0
while True:
    n += 1
    c.update_state(lambda s, n=n: s.seen("k", n))
"""

_STORE_WRITER = """
import sys
from pathlib import Path
from keyblob.storage.directory import DirectoryStore
store = DirectoryStore(Path(sys.argv[1]))
g = (store.latest("k") or 0) + 1
print("ready", flush=True)
while True:
    store.put("k", g, b"x" * 65536)
    g += 1
"""


def _kill_after(script: str, arg: str, delay: float) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", script, arg, PASSPHRASE.decode()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.wait()


@linux_only
def test_store_and_state_writers_killed_leave_no_temp_file(tmp_path: Path) -> None:
    """The store's create-only put links its unnamed file straight to its name: a kill
    leaves nothing.  The state is one SQLite transaction per update: a kill leaves at most
    its journal, which the next use of the file rolls back and removes."""
    Home(tmp_path / "h").create("c", PASSPHRASE, kdf=FAST_KDF)
    folder = tmp_path / "h" / "containers" / "c"
    for i in range(6):
        _kill_after(_STORE_WRITER, str(tmp_path / "store"), 0.02 + 0.03 * i)
        store_folder = tmp_path / "store" / "k"  # absent if killed before the first put
        assert not [p for p in store_folder.glob("*") if p.name.endswith(".tmp")]
        _kill_after(_STATE_WRITER, str(tmp_path / "h"), 0.02 + 0.03 * i)
        for leftover in folder.glob(".*.tmp"):
            _stale(leftover)
        Home(tmp_path / "h").open("c", PASSPHRASE).update_state(lambda s, i=i: s.seen("z", 1 + i))
        # state.db: a killed transaction's journal is rolled back (and removed) by the next
        # reader of the file, here the update just made.
        assert sorted(os.listdir(folder)) == ["container.json", "lock", "state.db"]
    assert DirectoryStore(tmp_path / "store").latest("k")
