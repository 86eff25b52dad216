"""Durable, atomic file writes: the one place that knows temp file, fsync, rename (or link)
and fsync of the folder (threat model P8).  A reader sees the old file or the new one, and a
killed writer leaves no temp file behind (unnamed temp files) or one the next write removes."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no cleanup of temp files
    fcntl = None  # type: ignore[assignment]


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
    dir_fd: int | None = None,
) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    With ``exclusive`` the write fails with FileExistsError if ``path`` exists, atomically
    (hard link of the finished temp file), so two writers never both win.  With
    ``exact_mode`` the file gets ``mode`` whatever the umask.  For folders keyblob owns (the
    home, the store): stale temp files of any name in ``path``'s folder are removed first
    (:func:`remove_stale_temp_files`).

    With ``dir_fd`` (a folder opened by the caller, who checked it), ``path`` is a bare file
    name in that folder, and every step (the scan for stale temp files, their removal, the
    temp file, its name, the folder's fsync) goes through the fd with the ``*at`` system
    calls: a folder swapped for a symlink after the caller's check cannot redirect any of
    them (FORMAT.md 5.3).
    """
    path = os.fspath(path)  # plain strings: pathlib costs microseconds per join here
    if dir_fd is not None and os.path.basename(path) != path:
        raise ValueError("with dir_fd, the path is a bare file name")
    folder = os.path.dirname(path) or os.curdir
    remove_stale_temp_files(folder if dir_fd is None else dir_fd)
    fd, tmp = _open_temp(path, mode, dir_fd)
    try:
        try:
            if exact_mode:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            _publish(fd, tmp, path, exclusive=exclusive, dir_fd=dir_fd)
        finally:
            os.close(fd)  # only now: the temp file stays locked until it has its name
    except BaseException:
        _discard(tmp, dir_fd)
        raise
    if dir_fd is None:
        fsync_dir(folder)
    else:
        os.fsync(dir_fd)


# -- temp files ---------------------------------------------------------------------------
# Where the OS has one, the temp file is unnamed (Linux O_TMPFILE): a process killed while
# writing leaves nothing behind, not even partial plaintext.  It gets a name only when
# complete and fsynced, by linkat() through /proc/self/fd.  A file system without it falls
# back to a named temp file ``.<name>.<16 hex>.tmp`` beside the destination.  Either way a
# writer holds an flock on its temp file from creation until it has its final name, so a
# later writer can tell a dead writer's leftover (unlocked) from a live one's (locked).

#: The temp files of :func:`write_atomic` and :func:`atomic_output` (FORMAT.md 5.3).
TEMP_FILE = re.compile(r"\.(.+)\.[0-9a-f]{16}\.tmp")
#: An unlocked temp file is a leftover only once its content is this old: a live writer
#: locks its temp file right after creating it, and this covers the instant in between.
STALE_SECONDS = 60.0
# O_TMPFILE unsupported: by the file system (EOPNOTSUPP), by an old kernel (EISDIR, as the
# flag includes O_DIRECTORY), or refused for this kind of folder (EINVAL).
_NO_UNNAMED = frozenset((errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL))
_unnamed = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def _temp_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")


def _open_temp(path: str, mode: int, dir_fd: int | None = None) -> tuple[int, str | None]:
    """A new temp file in ``path``'s folder, locked: ``(fd, None)`` if it is unnamed, else
    ``(fd, its path)`` (relative to ``dir_fd``, if given, as ``path`` is)."""
    if _unnamed:
        try:
            flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
            fd = os.open(os.path.dirname(path) or os.curdir, flags, mode, dir_fd=dir_fd)
        except OSError as e:
            if e.errno not in _NO_UNNAMED:
                raise
        else:
            _hold(fd)
            return fd, None
    tmp = _temp_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), mode, dir_fd=dir_fd)
    _hold(fd)
    return fd, tmp


def _hold(fd: int) -> None:
    """Lock a temp file of ours, so that no other writer takes it for a leftover."""
    if fcntl is not None:
        with contextlib.suppress(OSError):  # no flock on this file system: the age bound
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _publish(
    fd: int, tmp: str | None, path: str, *, exclusive: bool, dir_fd: int | None = None
) -> None:
    """Give the complete, fsynced temp file the name ``path``: created only if absent
    (FileExistsError otherwise) with ``exclusive``, else replacing what is there.  ``tmp``
    and ``path`` are relative to ``dir_fd`` if it is given."""
    if tmp is None:
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the unnamed file.  src_dir_fd
        # makes Python call linkat with that flag (plain link() would try to link the
        # /proc symlink itself); an absolute path ignores the folder it names.
        source = f"/proc/self/fd/{fd}"
        if exclusive:
            os.link(source, path, src_dir_fd=fd, dst_dir_fd=dir_fd)
            return
        # linkat cannot replace a name: the file is linked under a temp name and renamed
        # over ``path``, so it is named (complete, still locked) only for that instant.
        tmp = _temp_name(path)
        os.link(source, tmp, src_dir_fd=fd, dst_dir_fd=dir_fd)
    try:
        if exclusive and dir_fd is None:
            os.link(tmp, path)
        elif exclusive:
            # Never through a symlink put in the temp file's place: link(2) does not follow
            # one, but linkat (which a dir_fd calls) would unless told not to.
            os.link(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        else:
            os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
    except BaseException:
        _discard(tmp, dir_fd)
        raise
    _discard(tmp, dir_fd)  # the blob keeps its final name


def _discard(tmp: str | None, dir_fd: int | None = None) -> None:
    if tmp is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


def remove_stale_temp_files(folder: Path | str | int, name: str | None = None) -> None:
    """Remove the temp files that killed writers left in ``folder`` (FORMAT.md 5): a path,
    or an open folder's fd (then every step is relative to it: see :func:`write_atomic`).

    Only files that are certainly a dead writer's go: a regular file (not a symlink) of this
    user, named exactly ``.<name>.<16 hex>.tmp`` (for ``name`` only, if it is given),
    unchanged for :data:`STALE_SECONDS`, and that nobody holds locked: a live writer of
    this code holds its temp file locked until the file has its final name.  Best effort:
    any error leaves the file where it is.  Without flock (Windows) nothing is removed.
    """
    if fcntl is None:
        return
    # scandir of an fd lists that very folder; its entries' paths are bare names.
    dir_fd, target = (folder, folder) if isinstance(folder, int) else (None, os.fspath(folder))
    try:
        with os.scandir(target) as entries:
            candidates = [
                e.path
                for e in entries
                if (m := TEMP_FILE.fullmatch(e.name)) and (name is None or m.group(1) == name)
            ]
    except OSError:
        return
    for candidate in candidates:
        with contextlib.suppress(OSError):
            _remove_if_stale(candidate, dir_fd)


def _remove_if_stale(path: str, dir_fd: int | None = None) -> None:
    if fcntl is None:  # pragma: no cover - checked by the caller
        return
    before = os.lstat(path, dir_fd=dir_fd)
    if (
        not stat.S_ISREG(before.st_mode)
        or before.st_uid != _euid()
        or time.time() - before.st_mtime < STALE_SECONDS
    ):
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer's
        opened = os.fstat(fd)
        now = os.lstat(path, dir_fd=dir_fd)
        if (
            (opened.st_dev, opened.st_ino)
            == (now.st_dev, now.st_ino)
            == (
                before.st_dev,
                before.st_ino,
            )
        ):
            os.unlink(path, dir_fd=dir_fd)
    finally:
        os.close(fd)


def read_bounded(
    path: Path | str,
    limit: int,
    *,
    flags: int = 0,
    check: Callable[[os.stat_result], None] | None = None,
    dir_fd: int | None = None,
) -> bytes:
    """Read at most ``limit`` bytes; raises ValueError if the file is larger.

    ``flags`` are added to the open (``O_NOFOLLOW``, say); ``check`` sees the opened file's
    stat before anything is read and may raise.  With ``dir_fd``, ``path`` is relative to
    that open folder.  Reads what the file holds, not ``limit``
    bytes up front: a 16 MiB bound must not cost a 16 MiB allocation per small read.
    Pipes (size 0 to fstat) are read chunk by chunk.
    """
    chunks: list[bytes] = []
    size = 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | flags, dir_fd=dir_fd)
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

    It writes to a temp file beside ``path`` (unnamed where the OS allows, so a killed
    process leaves nothing); on success it is fsynced and named ``path`` (and the folder
    fsynced); on any exception it is removed and ``path`` is left as it was.  Stale temp
    files of this same output (``.<name>.<16 hex>.tmp``) are removed first.  While the block
    runs, a helper thread flushes what has been written (every 8 MiB, checked every 50 ms),
    so durability costs little more than the disk's own write time.

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
    # A user's folder, not keyblob's: only leftovers of this very output are removed.
    remove_stale_temp_files(folder, path.name)
    fd, tmp = _open_temp(os.fspath(path), mode)
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
        _publish(fd, tmp, os.fspath(path), exclusive=False)
        f.close()  # only now: the temp file stays locked until it has its name
    except BaseException:
        # A named temp file goes first: a second signal during the rest of the cleanup must
        # not leave it (with the partial plaintext in it) behind.
        _discard(tmp)
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
