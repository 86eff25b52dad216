"""A real agent process for the protocol, fuzz and traffic tests (docs/AGENT.md 3): start it
on a folder (optionally under a tracer), unlock a container in it, talk raw frames to it,
and the secrets an answer must never hold.

The agent is started as ``keyblob agent start`` starts it (``python -m keyblob.agent.server``),
but on a folder the test names, so a module-scoped agent needs no environment."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyblob import Home
from keyblob.agent import client, protocol
from keyblob.agent.protocol import Kind
from keyblob.providers import suites
from support import FAST_KDF, PASSPHRASE

ANSWER_TIMEOUT = 10.0  # well under the agent's 30 s read timeout: a wait for it fails


@dataclass
class LiveAgent:
    process: subprocess.Popen[bytes]
    pid: int  # the agent's (the process itself, or the traced child of a tracer)
    folder: Path
    home: Path
    name: str = "default"

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(ANSWER_TIMEOUT)
        with protocol.short_path(self.folder, protocol.SOCKET_NAME) as path:
            sock.connect(path)
        return sock

    def fields(self, *extra: bytes) -> tuple[bytes, ...]:
        """home and name of the container it holds, then ``extra``."""
        return (client.home_key(self.home).encode(), self.name.encode(), *extra)

    def call(self, kind: Kind, fields: tuple[bytes, ...] = ()) -> tuple[int, tuple[bytes, ...]]:
        """(status, fields) of one request on a new connection."""
        with self.connect() as sock:
            body = exchange(sock, protocol.encode(protocol.VERSION, kind, fields))
        assert body is not None, "the agent closed the connection"
        return split_answer(body)

    def status(self) -> dict[str, object]:
        import json

        status, fields = self.call(Kind.STATUS)
        assert status == 0
        return json.loads(fields[0])  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def make_home(path: Path) -> Path:
    """A home with container 'default' (fast KDF)."""
    Home(path).create("default", PASSPHRASE, kdf=FAST_KDF)
    return path


def start_agent(folder: Path, home: Path, *, tracer: Sequence[str] = ()) -> LiveAgent:
    """An agent listening in ``folder`` (created 0700), run under ``tracer`` if given."""
    command = [*tracer, sys.executable, "-m", "keyblob.agent.server", "--folder", str(folder)]
    process = subprocess.Popen(  # the agent prints one line: "ready PID"
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    process.stdout.close()
    if line[:1] != ["ready"]:
        process.kill()
        process.wait()
        raise AssertionError(f"the agent did not start: {line}")
    return LiveAgent(process, int(line[1]), folder, home)


def unlock(agent: LiveAgent, passphrase: bytes = PASSPHRASE, ttl: int = 0) -> None:
    """Hand the agent its container, as ``keyblob unlock`` does (the pipe, SCM_RIGHTS)."""
    with agent.connect() as sock:
        client.unlock(
            client.Connection(sock, agent.folder), agent.home, agent.name, passphrase, ttl
        )


@contextlib.contextmanager
def running_agent(folder: Path, home: Path) -> Iterator[LiveAgent]:
    agent = start_agent(folder, home)
    try:
        unlock(agent)
        yield agent
    finally:
        agent.stop()


def exchange(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> bytes | None:
    """Send ``data`` (``fds`` with its first bytes) and read one answer frame's body; None
    if the agent closed the connection instead of answering."""
    try:
        if fds:
            sent = socket.send_fds(sock, [data], list(fds))
            sock.sendall(data[sent:])
        else:
            sock.sendall(data)
        return protocol.read_frame(sock)
    except (ConnectionResetError, BrokenPipeError):
        return None


def split_answer(body: bytes) -> tuple[int, tuple[bytes, ...]]:
    """A response's (status, fields), checked to be a well-formed response (AGENT.md 3)."""
    assert body[0] == protocol.VERSION, body[:2]
    fields = protocol._fields(body, None, None)
    status = body[1]
    assert status == 0 or (status in protocol.ERRORS and len(fields) == 1), (status, fields)
    if status:  # one line of UTF-8
        assert "\n" not in fields[0].decode("utf-8"), fields[0]
    return status, fields


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the agent sends until it closes (or resets) the connection."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_without_answer(sock: socket.socket) -> bool:
    """The agent ended the connection and sent nothing (EOF or a reset)."""
    return read_to_end(sock) == b""


def secrets(home: Path, name: str = "default") -> dict[str, bytes]:
    """What no answer and no socket may ever hold: the passphrase, both private keys (raw,
    from the software provider's key objects) and the keys derived from the passphrase
    (the state MAC key above all)."""
    container = Home(home).open_software(name, PASSPHRASE)
    keys = container._keys
    out = {
        "passphrase": PASSPHRASE,
        "exchange private key": suites.private_bytes(container._exchange),
        "signature private key": suites.private_bytes(container._signature),
        "state MAC key": keys.state,
        "seal key": keys.seal,
        "passphrase check": keys.check,
    }
    for key_id, key in container._old_exchange.items():  # kept by keys rotate
        out[f"old exchange private key kx-{key_id.short}"] = suites.private_bytes(key)
    return out


def leaks(data: bytes, secret: dict[str, bytes]) -> list[str]:
    """The secrets ``data`` holds, raw or as hex."""
    lower = data.lower()
    return [
        what for what, value in secret.items() if value in data or value.hex().encode() in lower
    ]
