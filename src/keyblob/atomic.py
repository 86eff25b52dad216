"""Durable, atomic file writes: the one place that knows temp file, fsync, rename (or link)
and fsync of the folder (threat model P8).  A reader sees the old file or the new one."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path | str) -> None:
    if os.name == "nt":  # Windows cannot open a folder for fsync; NTFS journals the rename
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_folder(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 and durable in its parent (P8).

    ``Path.mkdir(parents=True)`` would give the parents the default mode and fsync nothing.
    An existing folder is left as it is; one made meanwhile by a concurrent writer is fine.

    Raises:
        OSError: a folder could not be made, or something that is not a folder is in the way
            (FileExistsError).
    """
    missing = [path]
    while missing[-1].parent != missing[-1] and not missing[-1].parent.exists():
        missing.append(missing[-1].parent)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        finish_private_folder(folder)


def finish_private_folder(folder: Path | str, mode: int = 0o700) -> None:
    """A folder just made: exactly ``mode`` (mkdir honoured the umask), durable in its
    parent."""
    os.chmod(folder, mode)
    fsync_dir(os.path.dirname(os.fspath(folder)) or os.curdir)


def write_atomic(
    path: Path | str,
    data: bytes,
    *,
    exclusive: bool = False,
    mode: int = 0o600,
    exact_mode: bool = False,
) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    With ``exclusive`` the write fails with FileExistsError if ``path`` exists, atomically
    (hard link of the finished temp file), so two writers never both win.  With
    ``exact_mode`` the file gets ``mode`` whatever the umask.
    """
    path = os.fspath(path)  # plain strings: pathlib costs microseconds per join here
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        try:
            if exact_mode:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder or os.curdir)


def read_bounded(
    path: Path | str,
    limit: int,
    *,
    flags: int = 0,
    check: Callable[[os.stat_result], None] | None = None,
) -> bytes:
    """Read at most ``limit`` bytes; raises ValueError if the file is larger.

    ``flags`` are added to the open (``O_NOFOLLOW``, say); ``check`` sees the opened file's
    stat before anything is read and may raise.  Reads what the file holds, not ``limit``
    bytes up front: a 16 MiB bound must not cost a 16 MiB allocation per small read.
    Pipes (size 0 to fstat) are read chunk by chunk.
    """
    chunks: list[bytes] = []
    size = 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | flags)
    try:
        st = os.fstat(fd)
        if check is not None:
            check(st)
        want = st.st_size + 1
        while size <= limit:
            chunk = os.read(fd, max(1, min(want - size, limit + 1 - size, 1 << 20)))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            want = max(want, size + 65536)  # the file grew, or it is a pipe
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks)


_SYNC_BEHIND_SECONDS = 0.05
_SYNC_BEHIND_BYTES = 8 << 20


def _sync_behind(fd: int, done: threading.Event) -> None:
    """Flush what is written so far, again and again, until ``done``.

    The writeback of a large output then runs while the rest is still being produced, and
    the final fsync has only the tail left to wait for.  It flushes only once 8 MiB more
    have been written, so a slow producer (a pipe) does not cost a disk flush every 50 ms.
    ``fdatasync`` releases the GIL.
    """
    sync = getattr(os, "fdatasync", os.fsync)
    synced = 0
    while not done.wait(_SYNC_BEHIND_SECONDS):
        try:
            size = os.fstat(fd).st_size
            if size - synced >= _SYNC_BEHIND_BYTES:
                sync(fd)
                synced = size
        except OSError:
            return  # the final fsync, in the caller's thread, reports the error


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file object whose content appears at ``path`` only if the block succeeds.

    It writes to a temp file beside ``path``; on success it is fsynced and renamed over
    ``path`` (and the folder fsynced); on any exception it is removed and ``path`` is left
    as it was.  While the block runs, a helper thread flushes what has been written (every
    8 MiB, checked every 50 ms), so durability costs little more than the disk's own write
    time.

    What is already at ``path`` is never trusted when others could have put it there (a
    shared or group folder):

    - a symlink owned by this user or root (``/dev/stdout``, ``/dev/fd/N``, one's own) is
      followed; anyone else's is replaced like a file, never followed;
    - a character device (only root makes those: ``/dev/null``), or a FIFO or socket owned
      by this user (a shell's ``>(...)``), is written directly, as standard output is: there
      is no file to keep whole.  A FIFO or socket of another user is refused (EPERM): it
      would hand them the output;
    - a folder raises IsADirectoryError.
    """
    path, special = _output_target(Path(path))
    if special is not None:
        with os.fdopen(special, "wb") as f:
            yield f
        return
    folder = path.parent
    tmp = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    f = os.fdopen(fd, "wb")
    done = threading.Event()
    syncer = threading.Thread(
        target=_sync_behind, args=(fd, done), name="keyblob-sync-behind", daemon=True
    )

    def stop_syncer() -> None:
        done.set()
        if syncer.ident is not None:  # started
            syncer.join()

    try:
        syncer.start()
        yield f
        f.flush()
        stop_syncer()
        os.fsync(fd)
        f.close()
        os.replace(tmp, path)
    except BaseException:
        # The temp file goes first: a second signal during the rest of the cleanup must not
        # leave it (with the partial plaintext in it) behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        stop_syncer()
        with contextlib.suppress(OSError):  # flushing the rest may fail as the write did
            f.close()
        raise
    fsync_dir(folder)


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else 0  # Windows: no owners to tell apart


def _output_target(path: Path) -> tuple[Path, int | None]:
    """Where :func:`atomic_output` writes: the path to replace, or an fd opened on a
    special file (see its docstring for the rules)."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return path, None
    followed = stat.S_ISLNK(link.st_mode)
    if followed and link.st_uid not in (_euid(), 0):
        return path, None  # someone else's symlink: replaced, never followed
    try:
        info = os.stat(path) if followed else link
    except FileNotFoundError:
        return path, None  # a dangling link: replaced
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISREG(info.st_mode):
        return (Path(os.path.realpath(path)) if followed else path), None
    # No O_CREAT or O_TRUNC; O_NOFOLLOW unless a trusted link is being followed; then the
    # opened file must be the one looked at, and of a kind that is safe to write into.
    flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags if followed else flags | getattr(os, "O_NOFOLLOW", 0))
    try:
        opened = os.fstat(fd)
        same = (opened.st_dev, opened.st_ino) == (info.st_dev, info.st_ino)
        mine = opened.st_uid == _euid()
        if not same or not (stat.S_ISCHR(opened.st_mode) or mine):
            raise PermissionError(
                errno.EPERM,
                "a FIFO or socket of another user: refusing to write into it; choose another "
                "output",
            )
    except BaseException:
        os.close(fd)
        raise
    return path, fd
