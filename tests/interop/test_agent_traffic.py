"""No private key, passphrase or state MAC key ever crosses the agent's socket (issue 15),
checked on a recording of every byte the agent read from or wrote to a socket, taken by
strace (the peer here, as in test_durability_strace.py: missing, the test skips, except
under ``KEYBLOB_REQUIRE_INTEROP=1``, where it fails).

The run is "full" when it holds every request kind the CLI sends the agent (UNLOCK, PUBLIC,
SIGN, UNWRAP, MAC, STATUS, LOCK, STOP, UNWRAP_AS: the recording is checked for each) and
every command of the procedure a user runs with an agent: unlock with a passphrase, new,
rotate, show, list, encrypt and decrypt, keys rotate (between a lock and an unlock) and a
decrypt with the old key, rewrap, trust add, label set, label, agent status, lock, agent
stop.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import support
from agent_support import leaks, make_home, secrets, start_agent
from keyblob import Home
from keyblob.agent.protocol import Kind
from keyblob.cli import main
from support import FAST_KDF, PASSPHRASE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="strace is Linux's")

SYSCALLS = "read,write,recvmsg,sendmsg,recvfrom,sendto,sendmmsg,recvmmsg"
INTO_AGENT = ("read", "recvmsg", "recvfrom", "recvmmsg")
_CALL = re.compile(r"^(\w+)\((\d+)<((?:\\x[0-9a-f]{2})*)>,\s*(.*)\) += (\d+)$")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?')


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def recorded(log: str) -> dict[tuple[str, str], bytes]:
    """{(what the fd is, "in" or "out"): the bytes the agent read or wrote}, in order, from
    ``strace -f -y -xx`` output (threads' unfinished calls joined with their resumption);
    "what the fd is" as ``-y`` names it: ``socket:[INODE]``, ``pipe:[INODE]``, a path."""
    pending: dict[str, str] = {}
    streams: dict[tuple[str, str], bytearray] = defaultdict(bytearray)
    for line in log.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest.removesuffix("<unfinished ...>").rstrip()
            continue
        if (m := re.match(r"<\.\.\. \w+ resumed>(.*)", rest)) is not None:
            rest = pending.pop(pid) + m.group(1)
        call = _CALL.match(rest)
        if call is None:
            continue  # a failed call (= -1 E...), a signal, an exit
        name, _fd, path, args, _result = call.groups()
        what = _unhex(path).decode()  # -xx writes the fd's path in hex too
        strings = _STRING.findall(args)
        if what.startswith("socket:"):  # a file's or pipe's data may be cut: never a socket's
            assert all(not cut for _, cut in strings), f"strace -s cut: {line[:200]}"
        direction = "in" if name in INTO_AGENT else "out"
        for text, _ in strings:
            streams[what, direction] += _unhex(text)
    return {key: bytes(value) for key, value in streams.items()}


def frames(stream: bytes) -> list[bytes]:
    """The frames' bodies in one direction of one connection."""
    out, at = [], 0
    while at + 4 <= len(stream):
        (size,) = struct.unpack_from(">I", stream, at)
        out.append(stream[at + 4 : at + 4 + size])
        at += 4 + size
    assert at == len(stream), "a connection's stream does not split into frames"
    return out


def test_no_secret_crosses_the_agents_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    strace = shutil.which("strace")
    if strace is None:
        support.skip_or_fail("strace is not installed")
    home = make_home(tmp_path / "home")
    monkeypatch.setenv("KEYBLOB_HOME", str(home))
    monkeypatch.setenv("KEYBLOB_STORE", str(tmp_path / "store"))
    other = tmp_path / "bob"
    Home(other).create("default", b"bob's passphrase", kdf=FAST_KDF)
    bob = tmp_path / "bob.pub"
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "bob's passphrase")
    assert main(["--home", str(other), "pubkey", "-o", str(bob)]) == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "keyblob"
    log = tmp_path / "agent.trace"
    tracer = [strace, "-f", "-y", "-qq", "-xx", "-s", "65536", "-e", f"trace={SYSCALLS}"]
    try:
        agent = start_agent(folder, home, tracer=[*tracer, "-o", str(log)])
    except AssertionError as e:  # strace present, but not allowed to trace here
        support.skip_or_fail(f"strace cannot trace here: {e}")

    def kb(*argv: str) -> str:
        capsys.readouterr()
        status = main(list(argv))
        out, err = capsys.readouterr()
        assert status == 0, (argv, err)
        return out

    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"name,salary\nalice,1\n" * 100)
    try:
        monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASSPHRASE.decode())
        assert "holds container 'default'" in kb("unlock")
        monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # from here on only the agent can unlock
        kb("new", "payroll")
        kb("rotate", "payroll")
        assert "generation   2" in kb("show", "payroll")
        assert "payroll" in kb("list")
        kb("encrypt", "payroll", "-i", str(plain), "-o", str(sealed))
        kb("decrypt", "-i", str(sealed), "-o", str(tmp_path / "out"))
        assert (tmp_path / "out").read_bytes() == plain.read_bytes()
        # The container's keys rotated (outside the agent, which makes no keys), then held
        # again: data sealed before opens with the old exchange key (UNWRAP_AS), and
        # rewrap moves the stored key to the new one.
        kb("lock")
        monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASSPHRASE.decode())
        kb("keys", "rotate")
        kb("unlock")
        monkeypatch.delenv("KEYBLOB_PASSPHRASE")
        kb("decrypt", "-i", str(sealed), "-o", str(tmp_path / "out2"))
        assert (tmp_path / "out2").read_bytes() == plain.read_bytes()
        kb("rewrap", "--all")
        kb("trust", "add", str(bob))
        kb("label", "set", "Alice Example")
        assert "Alice Example" in kb("label")
        assert "default" in kb("agent", "status")
        kb("lock")
        kb("agent", "stop")
        assert agent.process.wait(timeout=30) == 0  # strace exits with the agent
    finally:
        agent.stop()

    streams = recorded(log.read_text())
    sockets = {key: data for key, data in streams.items() if key[0].startswith("socket:")}
    to_agent = [f for (_, d), data in sockets.items() if d == "in" for f in frames(data)]
    from_agent = [f for (_, d), data in sockets.items() if d == "out" for f in frames(data)]
    # The recording is whole: every request kind of the procedure, each answered.
    assert {f[1] for f in to_agent} == {k.value for k in Kind}, sorted({f[1] for f in to_agent})
    assert len(from_agent) == len(to_agent)
    assert all(f[1] == 0 for f in from_agent)  # each a success (a refused PUBLIC would mean a
    # command that fell back to its own unlock: it has no passphrase here, and would fail)
    # Control: what the agent sent is in the recording (the public keys in PUBLIC's answer),
    # and a secret that crossed a traced descriptor (the passphrase, in its pipe) is found.
    _, exchange, signature = Home(home).public_keys("default")
    traffic = b"".join(sockets.values())
    assert exchange in traffic and signature in traffic
    pipes = b"".join(data for (what, _), data in streams.items() if what.startswith("pipe:"))
    assert leaks(pipes, {"passphrase": PASSPHRASE}) == ["passphrase"]
    # The property: no secret on any socket, in either direction, raw or as hex.
    secret = secrets(home)
    assert any(what.startswith("old exchange private key") for what in secret)
    assert leaks(traffic, secret) == []
