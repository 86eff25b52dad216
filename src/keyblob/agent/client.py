"""Talking to the agent: the connection (this user's agent only, checked both ways), the
requests of protocol.py, and :class:`AgentContainer`, the Provider every command uses when
the agent holds its container (docs/AGENT.md 4).

The state is read from the home by the command itself, as with any provider
(homestate.py); only its MAC is computed by the agent, which holds the key.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from keyblob.agent import protocol
from keyblob.agent.protocol import Kind
from keyblob.errors import NotFoundError, ProviderError
from keyblob.keys import KeyId, Suite
from keyblob.providers import homestate
from keyblob.providers.base import ContainerKeys, OldKey

CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 120.0  # an unlock runs Argon2id or a token login
START_TIMEOUT = 15.0
#: What to do when the agent went away in the middle of a command.
AGAIN = (
    "run the command again: with no agent it unlocks the container itself "
    "(keyblob agent status shows whether one runs)",
)


def home_key(home: Path) -> str:
    """The agent's name for a home: its absolute path, symlinks resolved."""
    return str(Path(home).expanduser().resolve())


class Connection:
    """One connection to this user's agent.  The agent drops a connection that stays idle
    (docs/AGENT.md 3): a request other than UNLOCK that finds it dropped before any answer
    (they are all idempotent) is sent again once on a new connection."""

    def __init__(self, sock: socket.socket, folder: Path) -> None:
        self._sock = sock
        self.folder = folder

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def call(
        self, kind: Kind, fields: tuple[bytes, ...], *, fd: int | None = None
    ) -> tuple[bytes, ...]:
        """Send one request and return its result fields.

        Raises:
            KeyblobError: the agent's refusal, as the error its status names.
            ProviderError: the connection failed or the answer was malformed.
        """
        frame = protocol.encode(protocol.VERSION, kind, fields)
        body = self._exchange(frame, fd)
        if body is None and fd is None:
            again = connect_folder(self.folder)
            if again is None:
                raise ProviderError(
                    "the keyblob agent is gone (stopped or killed)",
                    hints=AGAIN,
                )
            self.close()
            self._sock = again._sock
            body = self._exchange(frame, None)
        if body is None:
            raise ProviderError(
                "the keyblob agent closed the connection",
                hints=AGAIN,
            )
        return protocol.parse_response(body, kind)

    def _exchange(self, frame: bytes, fd: int | None) -> bytes | None:
        """The answer's body; None if the connection was found closed before any of it."""
        try:
            if fd is None:
                self._sock.sendall(frame)
            else:
                sent = socket.send_fds(self._sock, [frame], [fd])
                self._sock.sendall(frame[sent:])
            return protocol.read_frame(self._sock)
        except (BrokenPipeError, ConnectionResetError):
            return None
        except (OSError, protocol.Malformed) as e:
            raise ProviderError(
                f"lost the connection to the keyblob agent ({e})",
                hints=AGAIN,
            ) from None


def connect(home: Path) -> Connection | None:
    """A connection to this user's agent, or None if none runs.

    Raises:
        ProviderError: the agent's folder is unsafe (another owner, loose mode, a symlink),
            or the process listening there is not this user's.
    """
    return connect_folder(protocol.socket_folder(Path(home)))


def connect_folder(folder: Path) -> Connection | None:
    """:func:`connect` to the agent whose folder is ``folder``."""
    if not os.path.lexists(folder):
        return None
    protocol.check_socket_folder(folder)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        with protocol.short_path(folder, protocol.SOCKET_NAME) as path:
            sock.connect(path)
    except OSError as e:
        sock.close()
        if protocol.is_connection_refused(e):
            return None  # no agent, or a stale socket it left
        raise ProviderError(f"cannot reach the keyblob agent in {folder}: {e.strerror}") from e
    if protocol.peer_uid(sock) != os.getuid():
        sock.close()
        raise ProviderError(f"refusing the keyblob agent in {folder}: it runs as another user")
    sock.settimeout(ANSWER_TIMEOUT)
    return Connection(sock, folder)


class AgentContainer(ContainerKeys):
    """A container the agent holds (implements ``Provider``): signatures, unwraps and the
    state's MAC are requests; everything else is read from the home as usual."""

    def __init__(
        self,
        connection: Connection,
        home: Path,
        name: str,
        *,
        suite: Suite,
        exchange_public: bytes,
        signature_public: bytes,
        old: tuple[OldKey, ...] = (),
    ) -> None:
        self._conn = connection
        self._home = home_key(home).encode()
        # ``old``: the old keys container.json lists, unauthenticated: only which key id
        # to ask the agent for; the agent refuses one its container does not hold.
        super().__init__(name, suite, exchange_public, signature_public, old)
        folder = Path(home) / "containers" / name
        self._state = homestate.ContainerState(folder, name, suite, self._mac)

    def __repr__(self) -> str:
        return f"<AgentContainer {self._name!r} suite={self._suite.label}>"

    def _ask(self, kind: Kind, *fields: bytes) -> bytes:
        (result,) = self._conn.call(kind, (self._home, self._name.encode(), *fields))
        return result

    def sign(self, message: bytes) -> bytes:
        return self._ask(Kind.SIGN, message)

    def _unwrap_with(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        if key_id == self._exchange_id:  # UNWRAP: what every agent answers
            return self._ask(Kind.UNWRAP, wrapped, context)
        return self._ask(Kind.UNWRAP_AS, key_id.value, wrapped, context)

    def _mac(self, data: bytes) -> bytes:
        return self._ask(Kind.MAC, data)

    def close(self) -> None:
        self._state.close()
        self._conn.close()


def held(home: Any, name: str) -> AgentContainer | None:
    """Container ``name`` of ``home`` (a software.Home) through the agent, or None if no
    agent runs or it does not hold that container (the command then unlocks as usual).
    The keys the agent holds must be those of the home's container.json: a container made
    again since it was unlocked is not used.

    Raises:
        ProviderError: the agent's folder or process is not this user's (fail closed).
    """
    conn = connect(home.path)
    if conn is None:
        return None
    try:
        suite_label, exchange, signature = conn.call(
            Kind.PUBLIC, (home_key(home.path).encode(), name.encode())
        )
    except NotFoundError:
        conn.close()
        return None
    except BaseException:
        conn.close()
        raise
    suite, want_exchange, want_signature = home.public_keys(name)
    if (
        suite.label.encode() != suite_label
        or not hmac.compare_digest(exchange, want_exchange)
        or not hmac.compare_digest(signature, want_signature)
    ):
        conn.close()
        return None
    try:
        old = home.old_public_keys(name)
    except BaseException:
        conn.close()
        raise
    return AgentContainer(
        conn,
        home.path,
        name,
        suite=suite,
        exchange_public=exchange,
        signature_public=signature,
        old=old,
    )


def unlock(conn: Connection, home: Path, name: str, secret: bytes, ttl: int) -> None:
    """Hand container ``name`` to the agent, opened with ``secret`` (passphrase or PIN),
    which goes through a pipe passed with the request, never in the socket stream.

    Raises:
        KeyblobError: as the agent's unlock (a wrong passphrase is PassphraseError).
    """
    read_end, write_end = os.pipe()
    try:
        if len(secret) > protocol.MAX_SECRET:
            raise ProviderError(f"the passphrase is over {protocol.MAX_SECRET} bytes")
        os.write(write_end, secret)  # a pipe holds 64 KiB: never blocks at 4 KiB
        os.close(write_end)
        write_end = -1
        conn.call(
            Kind.UNLOCK,
            (home_key(home).encode(), name.encode(), protocol.u64(ttl)),
            fd=read_end,
        )
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def start(home: Path, *, idle: int, life: int) -> tuple[int, bool]:
    """Start this user's agent as a new process (never a fork of this one) and wait until
    it listens; return its pid, and whether it is new (False: another start won the race,
    and that agent is left as it is).

    Raises:
        ProviderError: it could not start (the message is the agent's).
    """
    import subprocess  # noqa: PLC0415 - only a start needs it, not every command

    folder = protocol.socket_folder(Path(home))
    command = [
        sys.executable,
        "-m",
        "keyblob.agent.server",
        "--folder",
        str(folder),
        "--idle",
        str(idle),
        "--life",
        str(life),
    ]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        chunk = process.stdout.readline()
        if not chunk:
            break
        line += chunk
    process.stdout.close()
    text = line.decode("utf-8", "replace").strip()
    if text.startswith(("ready ", "running ")):
        word, pid = text.split()
        if word == "running":  # that process exits at once: reap it
            process.wait(timeout=START_TIMEOUT)
        return int(pid), word == "ready"
    process.wait(timeout=START_TIMEOUT)
    raise ProviderError(text.removeprefix("error: ") or "the keyblob agent did not start")
