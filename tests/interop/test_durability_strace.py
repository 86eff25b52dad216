"""Durability (threat model P8), checked on the system calls of the real command: for a blob
(store put), the state and a ``decrypt -o`` output, the file's data is written, the temp file
fsynced, then given its name (link/rename), then its folder fsynced, in that order.

A SIGKILL never loses the page cache, so crash tests cannot see a missing fsync; a trace
can.  strace is the peer here: missing, the tests skip, except under
``KEYBLOB_REQUIRE_INTEROP=1`` (CI installs it), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import support
from keyblob import atomic

SRC = Path(atomic.__file__).resolve().parents[1]
SYSCALLS = "write,pwrite64,fsync,fdatasync,link,linkat,rename,renameat,renameat2"
# Run the command with the unnamed (O_TMPFILE) temp files, or as on a file system without.
_RUN = """
import sys
from keyblob import atomic
atomic._unnamed = atomic._unnamed and sys.argv[1] == "unnamed"
from keyblob.cli import main
sys.exit(main(sys.argv[2:]))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="strace is Linux's")


@dataclass(frozen=True)
class Call:
    name: str
    args: list[str]  # an fd argument is its path (strace -y); a string argument unquoted


_FD = re.compile(r"^(?:AT_FDCWD|\d+)<(.*)>(?:\(deleted\))?$")


def _arguments(text: str) -> list[str]:
    out = []
    for raw in re.findall(r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?|[^,]+', text):
        arg = raw.strip()
        if (m := _FD.match(arg)) is not None:
            out.append(m.group(1))
        else:
            out.append(arg.removesuffix("...").strip('"'))
    return out


def _parse(log: str) -> list[Call]:
    """Successful calls in the order they returned (threads' calls interleave)."""
    pending: dict[str, str] = {}
    calls = []
    for line in log.splitlines():
        # strace -f prefixes the pid once a second task exists (a thread, say)
        pid, _, rest = line.partition(" ") if line[:1].isdigit() else ("", "", line)
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest.removesuffix("<unfinished ...>")
            continue
        if (m := re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)) is not None:
            rest = pending.pop(pid, m.group(1) + "(") + m.group(2)
        m = re.match(r"(\w+)\((.*)\)\s+= (-?\d+)", rest)
        if m is None or m.group(3).startswith("-"):
            continue
        calls.append(Call(m.group(1), _arguments(m.group(2))))
    return calls


def _naming(call: Call) -> tuple[str, str] | None:
    """(the file, the name it gets) for a link or rename; the file of a linkat through
    /proc/self/fd is its fd's path, given as the (ignored) source folder.  A relative name
    of an *at call is in the folder of its fd (the store writes through a folder's fd)."""
    if call.name in ("link", "rename"):
        return call.args[0], call.args[1]
    if call.name in ("linkat", "renameat", "renameat2"):
        source = call.args[1]
        if source.startswith("/proc/self/fd/"):
            source = call.args[0]
        else:
            source = os.path.join(call.args[0], source)  # an absolute source ignores it
        return source, os.path.join(call.args[2], call.args[3])
    return None


def assert_durable(calls: list[Call], target: Path) -> None:
    """write -> fsync(file) -> link/rename to ``target`` -> fsync(folder), in that order."""
    names = [(i, n) for i, c in enumerate(calls) if (n := _naming(c)) is not None]
    final = [(i, n) for i, n in names if n[1] == str(target)]
    assert final, f"nothing was ever named {target}"
    named_at, (source, _) = final[-1]
    first_name = named_at
    # A replacing write of an unnamed file links it to a temp name first: follow it back.
    for i, (file, name) in reversed(names[: [j for j, _ in names].index(named_at)]):
        if name == source:
            first_name, source = i, file
    writes = [
        i
        for i, c in enumerate(calls[:first_name])
        if c.name in ("write", "pwrite64") and c.args[0] == source
    ]
    assert writes, f"no write to the temp file {source} of {target}"
    fsyncs = [
        i
        for i, c in enumerate(calls)
        if c.name == "fsync" and c.args[0] == source and writes[-1] < i < first_name
    ]
    assert fsyncs, f"{target}: the temp file {source} was not fsynced after its last write"
    folder = [
        i for i, c in enumerate(calls) if c.name == "fsync" and c.args[0] == str(target.parent)
    ]
    assert any(i > named_at for i in folder), f"{target}: its folder was not fsynced after"


def assert_committed(calls: list[Call], database: Path) -> None:
    """A SQLite transaction on ``database`` (rollback journal, synchronous=EXTRA): its
    journal synced before the database is written, the database synced after its last
    write, then the folder (the journal's removal, which commits)."""
    journal = f"{database}-journal"
    synced = ("fsync", "fdatasync")
    writes = [i for i, c in enumerate(calls) if c.name == "pwrite64" and c.args[0] == str(database)]
    assert writes, f"no write to {database}"
    first, last = writes[0], writes[-1]
    before = calls[:first]
    assert any(c.name in synced and c.args[0] == journal for c in before), journal
    after = [i for i, c in enumerate(calls) if i > last and c.name in synced]
    db_synced = [i for i in after if calls[i].args[0] == str(database)]
    assert db_synced, f"{database} was not synced after its last write"
    folder = [i for i in after if calls[i].args[0] == str(database.parent)]
    assert any(i > db_synced[0] for i in folder), f"{database.parent}: not synced after"


def _trace(tmp_path: Path, unnamed: bool, *argv: str, stdin: bytes = b"") -> list[Call]:
    strace = shutil.which("strace")
    if strace is None:
        support.skip_or_fail("strace is not installed")
    log = tmp_path / "trace.log"
    command = [strace, "-f", "-y", "-s", "0", "-qq", "-e", f"trace={SYSCALLS}", "-o", str(log)]
    mode = "unnamed" if unnamed else "named"
    result = subprocess.run(
        [*command, sys.executable, "-c", _RUN, mode, *argv],
        input=stdin,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "KEYBLOB_PASSPHRASE": "pw"},
        check=False,
    )
    if not log.exists() or b"ptrace" in result.stderr:  # strace present, but not allowed
        support.skip_or_fail(f"strace cannot trace here: {result.stderr.decode()[-200:]}")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return _parse(log.read_text())


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named fallback"])
def test_a_blob_the_state_and_a_decrypted_output_are_written_durably(
    tmp_path: Path, unnamed: bool
) -> None:
    home = tmp_path / "home"
    h = ["--home", str(home)]
    init = _trace(tmp_path, unnamed, *h, "init")
    container = home / "containers" / "default"
    assert_durable(init, container / "container.json")
    assert_durable(init, container / "state.db")  # made whole, then renamed
    new = _trace(tmp_path, unnamed, *h, "new", "k")
    assert_durable(new, home / "blobs" / "k" / "1.kb")
    assert_committed(new, container / "state.db")  # the high-water mark of k
    (tmp_path / "plain").write_bytes(b"payroll " * 4096)
    ct = tmp_path / "ct"
    encrypt = _trace(
        tmp_path, unnamed, *h, "encrypt", "k", "-i", str(tmp_path / "plain"), "-o", str(ct)
    )
    assert_durable(encrypt, ct)
    out = tmp_path / "out"
    decrypt = _trace(tmp_path, unnamed, *h, "decrypt", "-i", str(ct), "-o", str(out))
    assert_durable(decrypt, out)
    assert out.read_bytes() == b"payroll " * 4096


def test_the_check_sees_a_missing_fsync() -> None:
    """The checker itself: each step missing, or out of order, is caught."""
    f, d = "/d/#12 (deleted)", "/d"
    good = [
        Call("write", [f]),
        Call("fsync", [f]),
        Call("linkat", [f, "/proc/self/fd/3", d, "/d/.t.0123456789abcdef.tmp"]),
        Call("rename", ["/d/.t.0123456789abcdef.tmp", "/d/t"]),
        Call("fsync", [d]),
    ]
    assert_durable(good, Path("/d/t"))
    at = [  # through the folder's fd, as the store writes
        Call("write", [f]),
        Call("fsync", [f]),
        Call("linkat", [f, "/proc/self/fd/4", d, "t", "AT_SYMLINK_FOLLOW"]),
        Call("fsync", [d]),
    ]
    assert_durable(at, Path("/d/t"))
    with pytest.raises(AssertionError):
        assert_durable([at[0], at[2], at[1], at[3]], Path("/d/t"))
    for broken in (
        [c for c in good if not (c.name == "fsync" and c.args == [f])],  # no file fsync
        [c for c in good if not (c.name == "fsync" and c.args == [d])],  # no folder fsync
        [good[0], good[2], good[1], good[3], good[4]],  # fsync after the link
        [good[1], good[0], *good[2:]],  # fsync before the write
        [*good[:3], good[4], good[3]],  # folder fsync before the rename
    ):
        with pytest.raises(AssertionError):
            assert_durable(broken, Path("/d/t"))
