"""The agent protocol, version 1 (docs/AGENT.md): framing, the fixed set of requests, their
strict parsing, and where the socket lives.

A message is a frame: a 4-byte big-endian length N (2 <= N <= MAX_FRAME), then N bytes:
``version (1 byte) | kind (1 byte) | fields``, each field a 4-byte big-endian length and that
many bytes.  Every request kind has an exact number of fields, each with its own bound;
anything else (another version or kind, a field too many or too few, a field over its bound,
a byte left over) is malformed, and the agent ends that connection.  A response is
``version | status | fields``: status 0 with the kind's result fields, or a keyblob exit
status (1 to 5) with one field, a one-line UTF-8 message.

No secret is ever a field: the passphrase or PIN of UNLOCK travels through a pipe whose read
end is passed with the request (SCM_RIGHTS), and no response returns a private key, a
passphrase or a state MAC key (UNWRAP returns a session key, as CryptImportKey gives one to
its application).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import socket
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from keyblob.errors import (
    KeyblobError,
    NotFoundError,
    PassphraseError,
    ProviderError,
    UsageError,
    VerificationError,
)
from keyblob.keys import KEY_ID_SIZE

VERSION = 1
MAX_FRAME = 4 * 1024 * 1024 + 65536  # a state head (4 MiB, FORMAT.md 5.2) and the fields
MAX_SECRET = 4096  # a passphrase or PIN read from the pipe
SOCKET_NAME = "agent.sock"
LOCK_NAME = "agent.lock"
_LENGTH = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# Field bounds.
MAX_PATH = 4096
MAX_NAME = 255
MAX_MESSAGE = 4 * 1024 * 1024 + 4096  # SIGN and MAC: at most a state head and a blob
MAX_WRAPPED = 8192  # RSA-4096 512 bytes, HPKE 97 (p256 145), pq 1200 at most (FORMAT.md 2.3)
MAX_CONTEXT = 1024 * 1024  # a blob header


class Kind(enum.IntEnum):
    """The requests (docs/AGENT.md 3)."""

    STATUS = 1  # -> one field: canonical JSON of the containers held
    UNLOCK = 2  # home, name, ttl (8 bytes) + a pipe fd -> name, suite
    LOCK = 3  # -> nothing: every container forgotten
    STOP = 4  # -> nothing; then the agent exits
    PUBLIC = 5  # home, name -> suite label, exchange public, signature public
    SIGN = 6  # home, name, message -> signature
    UNWRAP = 7  # home, name, wrapped, context -> session key
    MAC = 8  # home, name, state document -> HMAC-SHA256 tag
    UNWRAP_AS = 9  # home, name, exchange key id, wrapped, context -> session key


#: Each kind's fields and their upper bounds, in order.
FIELDS: dict[Kind, tuple[int, ...]] = {
    Kind.STATUS: (),
    Kind.UNLOCK: (MAX_PATH, MAX_NAME, 8),
    Kind.LOCK: (),
    Kind.STOP: (),
    Kind.PUBLIC: (MAX_PATH, MAX_NAME),
    Kind.SIGN: (MAX_PATH, MAX_NAME, MAX_MESSAGE),
    Kind.UNWRAP: (MAX_PATH, MAX_NAME, MAX_WRAPPED, MAX_CONTEXT),
    Kind.MAC: (MAX_PATH, MAX_NAME, MAX_MESSAGE),
    Kind.UNWRAP_AS: (MAX_PATH, MAX_NAME, KEY_ID_SIZE, MAX_WRAPPED, MAX_CONTEXT),
}

#: Error statuses of a response and the keyblob error each is raised as on the client.
ERRORS: dict[int, type[KeyblobError]] = {
    1: ProviderError,
    2: UsageError,
    3: VerificationError,
    4: NotFoundError,
    5: PassphraseError,
}


class Malformed(Exception):
    """A frame or request that breaks the protocol: the connection ends."""


@dataclass(frozen=True)
class Request:
    kind: Kind
    fields: tuple[bytes, ...]


def encode(head: int, kind: int, fields: tuple[bytes, ...]) -> bytes:
    """A frame: ``head`` (the version) and ``kind`` (a request kind or a response status)."""
    body = bytes((head, kind)) + b"".join(_LENGTH.pack(len(f)) + f for f in fields)
    if len(body) > MAX_FRAME:
        raise ProviderError("an agent message would be over the protocol's bound")
    return _LENGTH.pack(len(body)) + body


def _fields(body: bytes, count: int | None, bounds: tuple[int, ...] | None) -> tuple[bytes, ...]:
    out: list[bytes] = []
    at = 2
    while at < len(body):
        if len(body) - at < _LENGTH.size:
            raise Malformed("a truncated field length")
        (size,) = _LENGTH.unpack_from(body, at)
        at += _LENGTH.size
        if size > len(body) - at:
            raise Malformed("a field longer than the frame")
        if bounds is not None:
            if len(out) >= len(bounds):
                raise Malformed("a field too many")
            if size > bounds[len(out)]:
                raise Malformed("a field over its bound")
        out.append(body[at : at + size])
        at += size
    if count is not None and len(out) != count:
        raise Malformed("a field missing")
    return tuple(out)


def parse_request(body: bytes) -> Request:
    """A request frame's body, every rule of the module docstring checked.

    Raises:
        Malformed: anything out of place.
    """
    if len(body) < 2 or body[0] != VERSION:
        raise Malformed("another version")
    try:
        kind = Kind(body[1])
    except ValueError:
        raise Malformed("an unknown request") from None
    bounds = FIELDS[kind]
    fields = _fields(body, len(bounds), bounds)
    if kind is Kind.UNLOCK and len(fields[2]) != _U64.size:
        raise Malformed("a time to live that is not 8 bytes")
    if kind is Kind.UNWRAP_AS and len(fields[2]) != KEY_ID_SIZE:
        raise Malformed("a key id that is not 16 bytes")
    for text in fields[:2] if kind not in (Kind.STATUS, Kind.LOCK, Kind.STOP) else ():
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("a home or name that is not UTF-8") from None
        if not decoded or "\x00" in decoded:
            raise Malformed("an empty home or name, or one holding NUL")
    return Request(kind, fields)


def parse_response(body: bytes, kind: Kind) -> tuple[bytes, ...]:
    """A response's result fields; an error status raised as its keyblob error.

    Raises:
        ProviderError: a malformed response.
        KeyblobError: the agent's refusal, as the error its status names.
    """
    if len(body) < 2 or body[0] != VERSION:
        raise ProviderError("the keyblob agent answered in another protocol version")
    try:
        fields = _fields(body, None, None)
    except Malformed:
        raise ProviderError("the keyblob agent sent a malformed answer") from None
    status = body[1]
    if status == 0:
        return fields
    error = ERRORS.get(status)
    if error is None or len(fields) != 1:
        raise ProviderError("the keyblob agent sent a malformed answer")
    raise error(fields[0].decode("utf-8", "replace"))


def u64(value: int) -> bytes:
    return _U64.pack(value)


def from_u64(data: bytes) -> int:
    (value,) = _U64.unpack(data)
    return int(value)


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame's body from ``sock``; None at a clean end of the stream.

    Raises:
        Malformed: a length of 0 or over MAX_FRAME, or the stream ended inside a frame.
        OSError: the socket failed (a timeout included).
    """
    head = _read_exactly(sock, _LENGTH.size, at_start=True)
    if head is None:
        return None
    (size,) = _LENGTH.unpack(head)
    if not 2 <= size <= MAX_FRAME:
        raise Malformed("a frame length out of bounds")
    body = _read_exactly(sock, size, at_start=False)
    assert body is not None
    return body


def _read_exactly(sock: socket.socket, size: int, *, at_start: bool) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            if at_start and left == size:
                return None
            raise Malformed("the stream ended inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- where the socket is ------------------------------------------------------------------


def socket_folder(home: Path) -> Path:
    """The agent's private folder: ``$XDG_RUNTIME_DIR/keyblob`` (per user, on tmpfs, gone at
    logout), else ``<home>/agent`` (docs/AGENT.md 2)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "keyblob"
    return home / "agent"


def check_socket_folder(folder: Path) -> None:
    """The folder must be a real folder (not a symlink), this user's, mode 0700.

    Raises:
        ProviderError: it is not; the message says what to fix.
    """
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        raise NotFoundError(f"no keyblob agent folder {folder}") from None
    except OSError as e:
        raise ProviderError(f"cannot read the agent folder {folder}: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise ProviderError(f"refusing the agent folder {folder}: it is not a folder")
    if st.st_uid != os.getuid():
        raise ProviderError(
            f"refusing the agent folder {folder}: it is owned by another user (uid {st.st_uid})"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ProviderError(
            f"refusing the agent folder {folder}: others can use it (mode "
            f"{stat.S_IMODE(st.st_mode):o}); run chmod 700 {folder}"
        )


def make_socket_folder(folder: Path) -> None:
    """Create the agent's folder 0700 if missing, then check it."""
    try:
        folder.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    except FileNotFoundError:
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise ProviderError(f"cannot create the agent folder {folder}: {e.strerror}") from e
    check_socket_folder(folder)


@contextlib.contextmanager
def short_path(folder: Path, name: str) -> Iterator[str]:
    """A path to ``folder/name`` short enough for a Unix socket address (108 bytes): the
    folder itself, or, for a long one, the folder through an O_PATH descriptor
    (/proc/self/fd/N/name, Linux)."""
    full = str(folder / name)
    if len(full.encode()) < 100 or not os.path.isdir("/proc/self/fd"):
        yield full
        return
    fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def is_connection_refused(error: OSError) -> bool:
    return error.errno in (errno.ECONNREFUSED, errno.ENOENT)
