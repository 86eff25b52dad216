"""The keyblob agent: one process per user that holds unlocked containers and signs, unwraps
and authenticates their state inside itself (docs/AGENT.md).

What this module owns: the process's hardening (no core dumps, not ptrace-dumpable, memory
locked where the limits allow), the one-agent-per-user lock, the listening socket (or the
one systemd passes), the peer check of every connection (SO_PEERCRED: this uid only), the
requests of protocol.py and the lifetimes of what it holds (idle timeout reset on use,
maximum lifetime, ``lock``, ``stop``).

Run by ``keyblob agent start`` as ``python -m keyblob.agent.server --folder DIR``: a new
process, never a fork of an unlocked one.  It never loads code or a module path a client
names: a token container's module comes from its home's container.json, which the same
checks as every command's guard (owner, mode, no symlink).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import gc
import json
import os
import resource
import select
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from keyblob.agent import protocol
from keyblob.agent.protocol import Kind, Malformed, Request
from keyblob.errors import KeyblobError, NotFoundError, ProviderError, UsageError
from keyblob.keys import KeyId
from keyblob.providers.base import ContainerKeys, Provider
from keyblob.trust import canonical, canonical_json_value

DEFAULT_IDLE = 600
DEFAULT_LIFE = 7200
MAX_CONNECTIONS = 64
READ_TIMEOUT = 30.0  # a client that stops inside a frame is dropped
STATE_FORMATS = ("keyblob-state/v1", "keyblob-state/v2")
_PR_SET_DUMPABLE = 4
_MCL_CURRENT, _MCL_FUTURE = 1, 2


def harden() -> dict[str, bool]:
    """No core file, not dumpable (ptrace by the same uid refused, /proc/PID/mem closed),
    all memory locked if the limits allow.  Returns what took effect (``agent status``)."""
    done = {"core": False, "dumpable": False, "mlock": False}
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        done["core"] = True
    libc_name = ctypes.util.find_library("c")
    if libc_name and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(libc_name, use_errno=True)
        done["dumpable"] = libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        done["mlock"] = libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0
    return done


@dataclass
class Held:
    """A container the agent holds, and when it is forgotten."""

    provider: Provider
    home: str
    name: str
    life_end: float  # time.monotonic()
    idle: float
    last_use: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return now >= self.life_end or now - self.last_use >= self.idle


class Agent:
    """The containers held, and the requests on them."""

    def __init__(self, *, idle: float = DEFAULT_IDLE, life: float = DEFAULT_LIFE) -> None:
        self.idle = idle
        self.life = life
        self.hardening: dict[str, bool] = {}
        self._held: dict[tuple[str, str], Held] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    # -- lifetimes -------------------------------------------------------------------------

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            gone = [key for key, held in self._held.items() if held.expired(now)]
            for key in gone:
                _close(self._held.pop(key).provider)
        if gone:
            gc.collect()

    def forget_all(self) -> None:
        with self._lock:
            held, self._held = self._held, {}
        for h in held.values():
            _close(h.provider)
        gc.collect()

    def _get(self, home: bytes, name: bytes) -> Provider:
        key = (home.decode(), name.decode())
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.expired(now):
                _close(self._held.pop(key).provider)
                held = None
            if held is None:
                raise NotFoundError(
                    f"the keyblob agent does not hold container {key[1]!r} of {key[0]}"
                )
            held.last_use = now
            return held.provider

    # -- requests --------------------------------------------------------------------------

    def handle(self, request: Request, fds: list[int]) -> tuple[bytes, ...]:
        """The result fields of ``request``; ``fds`` the descriptors passed with it.

        Raises:
            KeyblobError: a refusal, answered with its exit status.
        """
        f = request.fields
        kind = request.kind
        if kind is Kind.STATUS:
            return (self._status(),)
        if kind is Kind.UNLOCK:
            return self._unlock(f[0].decode(), f[1].decode(), protocol.from_u64(f[2]), fds)
        if kind is Kind.LOCK:
            self.forget_all()
            return ()
        if kind is Kind.STOP:  # the connection stops the agent once the answer is sent
            return ()
        provider = self._get(f[0], f[1])
        if kind is Kind.PUBLIC:
            return (
                provider.suite.label.encode(),
                provider.exchange_public,
                provider.signature_public,
            )
        if kind is Kind.SIGN:
            return (provider.sign(f[2]),)
        if kind is Kind.UNWRAP:
            return (provider.unwrap(f[2], f[3]),)
        if kind is Kind.UNWRAP_AS:  # an exchange key keys rotate replaced (docs/AGENT.md 3)
            return (provider.unwrap_as(KeyId(f[2]), f[3], f[4]),)
        if kind is Kind.MAC:
            return (_state_mac(provider, f[1].decode(), f[2]),)
        raise AssertionError(kind)  # pragma: no cover - every Kind is handled above

    def _status(self) -> bytes:
        now = time.monotonic()
        with self._lock:
            held = [
                {
                    "home": h.home,
                    "name": h.name,
                    "suite": h.provider.suite.label,
                    "idle_seconds_left": max(0, int(h.idle - (now - h.last_use))),
                    "life_seconds_left": max(0, int(h.life_end - now)),
                }
                for h in self._held.values()
                if not h.expired(now)
            ]
        doc = {
            "version": protocol.VERSION,
            "pid": os.getpid(),
            "idle_timeout": int(self.idle),
            "max_lifetime": int(self.life),
            "hardening": self.hardening,
            "containers": sorted(held, key=lambda h: (h["home"], h["name"])),
        }
        return json.dumps(doc, sort_keys=True).encode()

    def _unlock(self, home: str, name: str, ttl: int, fds: list[int]) -> tuple[bytes, ...]:
        from keyblob.providers.software import Home  # noqa: PLC0415

        if len(fds) != 1:
            raise UsageError("UNLOCK needs the passphrase pipe")
        if not os.path.isabs(home):
            raise UsageError("the home must be an absolute path")
        secret = bytearray(_read_secret(fds[0]))
        try:
            provider = Home(Path(home)).open(name, bytes(secret))
        finally:
            secret[:] = bytes(len(secret))  # the copy bytes() made cannot be wiped
        now = time.monotonic()
        life = min(ttl, self.life) if ttl else self.life
        with self._lock:
            old = self._held.pop((home, name), None)
            self._held[(home, name)] = Held(provider, home, name, now + life, self.idle, now)
        if old is not None:
            _close(old.provider)
        return (provider.name.encode(), provider.suite.label.encode())


def _read_secret(fd: int) -> bytes:
    """The passphrase or PIN in the pipe ``fd`` (all of it, up to the writer's close), at
    most MAX_SECRET bytes, within READ_TIMEOUT.  The caller closes ``fd``.

    Only a pipe is read, and never without a deadline: a descriptor of another kind (a
    terminal, a socket) or a pipe whose writer never closes it would otherwise hold this
    connection's thread, and one of the agent's slots, for ever."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise UsageError("the descriptor passed as the passphrase pipe is not a pipe")
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        while size <= protocol.MAX_SECRET:
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(left * 1000):
                raise UsageError("the passphrase pipe was not closed in time")
            chunk = os.read(fd, protocol.MAX_SECRET + 1 - size)  # readable: does not block
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise UsageError(f"cannot read the passphrase pipe: {e.strerror}") from None
    if size > protocol.MAX_SECRET:
        raise UsageError(f"the passphrase is over {protocol.MAX_SECRET} bytes")
    return b"".join(chunks)


def _state_mac(provider: Provider, name: str, data: bytes) -> bytes:
    """The state MAC of ``data``, which must be a state document of this container in its
    canonical form (FORMAT.md 5.2): the agent is no general HMAC oracle."""
    try:
        doc = canonical_json_value(data)
        ok = (
            isinstance(doc, dict)
            and doc.get("container") == name
            and doc.get("format") in STATE_FORMATS
            and "mac" not in doc
            and canonical(doc) == data
        )
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise UsageError("the agent authenticates state documents of its containers only")
    if not isinstance(provider, ContainerKeys):
        raise ProviderError(f"container {name!r} has no state the agent can authenticate")
    return provider._state.mac(data)


def _close(provider: Provider) -> None:
    close = getattr(provider, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


# -- the server ---------------------------------------------------------------------------


class AlreadyRunning(ProviderError):
    """Another agent holds the lock: it is the user's agent."""

    def __init__(self, pid: str) -> None:
        super().__init__(f"a keyblob agent is already running (pid {pid})")
        self.pid = pid


def _take_lock(folder: Path) -> int:
    """Hold the one-agent lock of ``folder``; its descriptor stays open for the agent's life.

    Raises:
        AlreadyRunning: another agent holds it.
    """
    import fcntl  # noqa: PLC0415 - POSIX only

    path = folder / protocol.LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise AlreadyRunning(other) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _listen(folder: Path) -> socket.socket:
    """The listening socket: systemd's (LISTEN_FDS) or a new one at folder/agent.sock, 0600.
    A socket file left by a dead agent is replaced (the lock says no agent runs)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        listener = socket.socket(fileno=3)
        listener.set_inheritable(False)
        return listener
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with protocol.short_path(folder, protocol.SOCKET_NAME) as path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: we hold the lock
        old = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old)
    listener.listen(16)
    return listener


def serve(agent: Agent, listener: socket.socket) -> None:
    """Accept connections until STOP or a signal; one thread per connection."""
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    listener.settimeout(1.0)

    def tick() -> None:
        while not agent.stopping.wait(1.0):
            agent.expire()

    threading.Thread(target=tick, daemon=True).start()
    while not agent.stopping.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            raise
        if not slots.acquire(blocking=False):
            conn.close()
            continue

        def run(conn: socket.socket = conn) -> None:
            try:
                _connection(agent, conn)
            finally:
                slots.release()

        threading.Thread(target=run, daemon=True).start()


def _connection(agent: Agent, conn: socket.socket) -> None:
    """Requests on one connection until it ends; a malformed one ends it."""
    with conn:
        try:
            if protocol.peer_uid(conn) != os.getuid():
                return
            conn.settimeout(READ_TIMEOUT)
            while not agent.stopping.is_set():
                fds: list[int] = []
                try:
                    body = _read_frame_with_fds(conn, fds)
                    if body is None:
                        return
                    request = protocol.parse_request(body)
                    if len(fds) > (1 if request.kind is Kind.UNLOCK else 0):
                        return  # a descriptor the request does not take: malformed
                    answer = _answer(agent, request, fds)
                except Malformed:
                    return
                finally:
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                try:
                    conn.sendall(answer)
                finally:
                    if request.kind is Kind.STOP:  # after the answer, even if it failed
                        agent.stopping.set()
                if request.kind is Kind.STOP:
                    return
        except OSError:
            return


def _answer(agent: Agent, request: Request, fds: list[int]) -> bytes:
    """The response frame to ``request``: its result, or the refusal's exit status and
    first line.  Nothing a request does ends the agent."""
    try:
        return protocol.encode(protocol.VERSION, 0, agent.handle(request, fds))
    except KeyblobError as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        # 4096 bytes at most, cut on a character boundary: the message stays UTF-8
        line = message.encode()[:4096].decode("utf-8", "ignore").encode()
        return protocol.encode(protocol.VERSION, e.exit_status, (line,))
    except Exception as e:
        text = f"the agent failed: {type(e).__name__}"
        return protocol.encode(protocol.VERSION, 1, (text.encode(),))


def _read_frame_with_fds(conn: socket.socket, fds: list[int]) -> bytes | None:
    """protocol.read_frame, keeping the descriptors that came with the bytes."""
    head = _recv(conn, 4, fds, at_start=True)
    if head is None:
        return None
    size = int.from_bytes(head)
    if not 2 <= size <= protocol.MAX_FRAME:
        raise Malformed("a frame length out of bounds")
    body = _recv(conn, size, fds, at_start=False)
    assert body is not None
    return body


def _recv(conn: socket.socket, size: int, fds: list[int], *, at_start: bool) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        data, got, _flags, _addr = socket.recv_fds(conn, min(left, 1 << 20), 2)
        fds.extend(got)
        if len(fds) > 1:
            raise Malformed("more than one descriptor")
        if not data:
            if at_start and left == size:
                return None
            raise Malformed("the stream ended inside a frame")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyblob-agent")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE)
    parser.add_argument("--life", type=float, default=DEFAULT_LIFE)
    args = parser.parse_args(argv)
    ready = sys.stdout
    agent = Agent(idle=args.idle, life=args.life)
    try:
        agent.hardening = harden()
        protocol.make_socket_folder(args.folder)
        lock = _take_lock(args.folder)
        listener = _listen(args.folder)
    except AlreadyRunning as e:
        print(f"running {e.pid}", file=ready, flush=True)
        return 0
    except KeyblobError as e:
        print(f"error: {e}", file=ready, flush=True)
        return 1
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    print(f"ready {os.getpid()}", file=ready, flush=True)
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        serve(agent, listener)
    finally:
        agent.forget_all()
        listener.close()
        if os.environ.get("LISTEN_FDS") is None:
            with (
                protocol.short_path(args.folder, protocol.SOCKET_NAME) as path,
                contextlib.suppress(OSError),
            ):
                os.unlink(path)
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
