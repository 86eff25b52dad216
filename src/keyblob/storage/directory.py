"""The directory store: one file per blob, ``<root>/<name>/<generation>.kb``; entries set
aside in ``<root>/.set-aside/<name>/<generation>.<16 hex>.kb`` (FORMAT.md 5.3).

The embedded default store.  Writes go through :func:`keyblob.atomic.write_atomic`
(temp file, unnamed where the OS allows; fsync, hard link, fsync of the folder), so a crash
leaves a blob absent or complete and no temp file (or one the next put removes), and two
writers of one (name, generation) cannot both win.  Everything found on
disk is treated as hostile: entries that are not exactly ``<name>/<generation>.kb`` are
ignored when listing, symlinks and special files are refused, and every read is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: replace and set-aside are not serialised
    fcntl = None  # type: ignore[assignment]

from keyblob.atomic import (
    finish_private_folder,
    fsync_dir,
    make_private_folder,
    read_bounded,
    write_atomic,
)
from keyblob.errors import (
    BadEntryError,
    ConflictError,
    NotFoundError,
    ReplaceConflictError,
    StorageError,
    UsageError,
)
from keyblob.keys import check_name
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, check_generation, check_item

__all__ = ["DirectoryStore"]

_FOLDER_MODE = 0o700
_FILE_MODE = 0o600
# Under a root with the setgid bit (a store a group shares, see FORMAT.md 5.3): the group
# may add generations and read blobs.  Whoever can write the store is the attacker the
# checks are for, so this opens nothing the threat model relies on.
_SHARED_FOLDER_MODE = 0o2770
_SHARED_FILE_MODE = 0o640
_SUFFIX = ".kb"
# Not a valid name (1.4: no leading dot), so listing never counts it as one.
_SET_ASIDE = ".set-aside"
# Decimal without leading zeros: one file name per generation, so "007.kb" can never alias
# "7.kb".  At most 19 digits (MAX_GENERATION); the value is range-checked after parsing.
_ENTRY = re.compile(r"([1-9][0-9]{0,18})\.kb")
# A name folder is opened once, without following a symlink, and written through that fd
# (the *at system calls): where the OS has no such calls (Windows), an lstat check is all.
_AT = (
    hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
    and {os.open, os.link, os.unlink, os.stat} <= os.supports_dir_fd
    and os.scandir in os.supports_fd
)


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


class DirectoryStore:
    """A store in a folder: ``<root>/<name>/<generation>.kb``, folders 0700, files 0600.

    The root (and any missing parent) is created on the first :meth:`put`, never by a read:
    reading from a missing root behaves like an empty store.
    """

    def __init__(self, root: Path, create: bool = True) -> None:
        """Use the folder ``root``; ``create=False`` refuses to create it on ``put``."""
        self._root = Path(root)
        self._root_str = os.fspath(self._root)  # reads join strings: pathlib costs µs per op
        self._create = create

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self._root)!r})"

    @property
    def location(self) -> str:
        """The root folder, as given."""
        return str(self._root)

    @property
    def identity(self) -> str:
        """``file:`` and the absolute path of the root with every symlink resolved (the
        part that exists), so that two paths to one folder are one store."""
        return "file:" + os.path.realpath(self._root_str)

    @property
    def root(self) -> Path:
        """The root folder."""
        return self._root

    def put(self, name: str, generation: int, data: bytes) -> None:
        """Store ``data`` as ``name`` at ``generation``; create-only and atomic.

        Putting bytes identical to those already stored is a no-op.  Of concurrent writers
        of the same (name, generation), exactly one wins; the others see the conflict.

        Raises:
            UsageError: invalid name or generation, or ``data`` larger than MAX_ITEM_SIZE.
            StorageError: the (name, generation) already holds different bytes (they are
                kept), the name's folder is a symlink or not a folder, the root is missing
                and ``create`` is False, or the file system failed.
        """
        check_name(name)
        check_generation(generation)
        check_item(data)
        shared = self._ensure_root()
        folder = os.path.join(self._root_str, name)
        # Made earlier or by a concurrent writer, it must be a real folder; from here on it
        # is used through ``fd`` only, so swapping it for a symlink after this check
        # redirects neither the blob nor the removal of stale temp files (FORMAT.md 5.3).
        fd = self._open_folder(folder, shared)
        file = f"{generation}{_SUFFIX}"
        path = os.path.join(folder, file)
        try:
            mode = _SHARED_FILE_MODE if shared else _FILE_MODE
            write_atomic(
                path if fd is None else file,
                data,
                exclusive=True,
                mode=mode,
                exact_mode=shared,
                dir_fd=fd,
            )
        except FileExistsError:
            # Someone (an earlier run, a retry, a concurrent writer) got there first.
            # Identical bytes make the put idempotent; anything else is a conflict.
            if self._read(name, generation, path) != data:
                raise ConflictError(name, generation, self.location) from None
        except OSError as e:
            raise StorageError(f"cannot write {path}: {_reason(e)}") from e
        finally:
            if fd is not None:
                os.close(fd)

    def replace(self, name: str, generation: int, old: bytes, new: bytes) -> None:
        """Replace ``<name>/<generation>.kb`` holding exactly ``old`` with ``new``
        (FORMAT.md 5.3): under an exclusive ``flock`` of the name's folder, read the entry,
        compare, then temp file, fsync, rename over the entry, fsync of the folder.

        Raises:
            UsageError: invalid name or generation, or ``old``/``new`` too large.
            ReplaceConflictError: the entry holds neither ``old`` nor ``new``, or is gone.
            BadEntryError: the entry is a symlink, not a regular file, or too large.
            StorageError: a folder on the way is a symlink or not a folder, or the file
                system failed; the entry then holds ``old`` or ``new``.
        """
        check_name(name)
        check_generation(generation)
        check_item(old)
        check_item(new)
        folder = self._name_folder_for_read(name)
        if folder is None:
            raise ReplaceConflictError(name, generation, self.location)
        shared = self._ensure_root()
        fd = self._open_folder(folder, shared)
        file = f"{generation}{_SUFFIX}"
        path = os.path.join(folder, file)
        try:
            with self._locked(folder, fd):
                try:
                    current = self._read(name, generation, path if fd is None else file, fd)
                except NotFoundError:
                    raise ReplaceConflictError(name, generation, self.location) from None
                if current == new:
                    return  # a retry of a replace that had succeeded
                if current != old:
                    raise ReplaceConflictError(name, generation, self.location)
                write_atomic(
                    path if fd is None else file,
                    new,
                    mode=_SHARED_FILE_MODE if shared else _FILE_MODE,
                    exact_mode=shared,
                    dir_fd=fd,
                )
        except OSError as e:
            raise StorageError(f"cannot write {path}: {_reason(e)}") from e
        finally:
            if fd is not None:
                os.close(fd)

    def get(self, name: str, generation: int) -> bytes:
        """Return the bytes stored as ``name`` at ``generation``.

        Raises:
            UsageError: invalid name or generation.
            NotFoundError: nothing is stored there (a missing root included).
            StorageError: the file is larger than MAX_ITEM_SIZE, is a symlink or not a
                regular file, the name's folder is a symlink, or the file system failed.
        """
        check_name(name)
        check_generation(generation)
        folder = self._name_folder_for_read(name)
        if folder is None:
            raise NotFoundError(self._missing(name, generation))
        return self._read(name, generation, os.path.join(folder, f"{generation}{_SUFFIX}"))

    def generations(self, name: str) -> list[int]:
        """Return the generations stored for ``name``, ascending; ``[]`` when none.

        Only regular files named exactly ``<generation>.kb`` count; temp files and junk are
        ignored.

        Raises:
            UsageError: invalid name.
            StorageError: the name's folder is a symlink or not a folder, or the file
                system failed.
        """
        check_name(name)
        return self._generations(self._name_folder_for_read(name))

    def latest(self, name: str) -> int | None:
        """Return the highest generation stored for ``name``, or None when none.

        Raises:
            UsageError: invalid name.
            StorageError: as for :meth:`generations`.
        """
        found = self.generations(name)
        return found[-1] if found else None

    def names(self) -> list[str]:
        """Return the names that have at least one generation, sorted.

        Entries of the root that are not real folders with a valid name (files, symlinks,
        temp folders) are ignored, so one stray entry does not break listing.

        Raises:
            StorageError: the root is not a folder, or the file system failed.
        """
        found = []
        for entry in self._scan(self._root):
            try:
                check_name(entry.name)
            except UsageError:
                continue
            if self._is_dir(entry) and self._generations(self._root / entry.name):
                found.append(entry.name)
        return sorted(found)

    def set_aside(self, name: str, generation: int) -> str:
        """Move ``<name>/<generation>.kb`` to ``.set-aside/<name>/<generation>.<16 hex>.kb``
        (one rename, then both folders fsynced) and return that path.

        Raises:
            UsageError: invalid name or generation.
            NotFoundError: nothing is stored there.
            StorageError: the entry is a symlink or not a regular file, a folder on the way
                is a symlink or not a folder, or the file system failed.
        """
        check_name(name)
        check_generation(generation)
        folder = self._name_folder_for_read(name)
        if folder is None:
            raise NotFoundError(self._missing(name, generation))
        path = os.path.join(folder, f"{generation}{_SUFFIX}")
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(self._missing(name, generation)) from None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {_reason(e)}") from e
        if not stat.S_ISREG(info.st_mode):  # never counted, so never set aside either
            raise StorageError(f"refusing {path}: it is not a regular file")
        shared = self._ensure_root()
        aside = self._private_folder(os.path.join(self._root_str, _SET_ASIDE), shared)
        aside = self._private_folder(os.path.join(aside, name), shared)
        # A random part: an entry set aside earlier under the same generation is kept.
        target = os.path.join(aside, f"{generation}.{secrets.token_hex(8)}{_SUFFIX}")
        try:
            # Under the folder's lock: a replace in progress finishes first (its compare and
            # its rename are one step for every other keyblob writer of this name).
            with self._locked(folder, None):
                os.rename(path, target)
            fsync_dir(aside)
            fsync_dir(folder)
        except FileNotFoundError:
            raise NotFoundError(self._missing(name, generation)) from None
        except OSError as e:
            raise StorageError(f"cannot move {path} to {target}: {_reason(e)}") from e
        return target

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def _locked(folder: str, fd: int | None) -> Iterator[None]:
        """An exclusive ``flock`` of the name's folder (``fd``, or ``folder`` opened here
        without following a symlink) for the block: what serialises replace and set-aside
        of its entries between keyblob processes.  Without flock (Windows) nothing is
        locked."""
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        own = fd is None
        if fd is None:
            flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
            held = os.open(folder, flags | os.O_CLOEXEC)
        else:
            held = fd
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)
        finally:
            if own:
                os.close(held)

    def _name_folder_for_read(self, name: str) -> str | None:
        """``<root>/<name>`` if it exists, None if it (or the root) does not."""
        folder = os.path.join(self._root_str, name)
        try:
            info = os.lstat(folder)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"cannot read {folder}: {_reason(e)}") from e
        self._check_folder(folder, info)
        return folder

    def _private_folder(self, folder: str, shared: bool) -> str:
        """``folder``, created (mode as for a name folder) unless it is a real folder."""
        fd = self._open_folder(folder, shared)
        if fd is not None:
            os.close(fd)
        return folder

    def _open_folder(self, folder: str, shared: bool) -> int | None:
        """``folder`` (created, mode as for a name folder and durable in its parent, unless
        it exists), opened without following a symlink; it must be a real folder.  None
        where the OS cannot open a folder so (see ``_AT``): then it is checked by lstat."""
        mode = _SHARED_FOLDER_MODE if shared else _FOLDER_MODE
        try:
            os.mkdir(folder, mode)
            created = True
        except FileExistsError:
            created = False
        except OSError as e:
            raise StorageError(f"cannot create folder {folder}: {_reason(e)}") from e
        if not _AT:
            try:
                info = os.lstat(folder)
            except OSError as e:
                raise StorageError(f"cannot use folder {folder}: {_reason(e)}") from e
            self._check_folder(folder, info)
            if created:
                self._created(folder, mode)
            return None
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            # A symlink (ELOOP, or ENOTDIR: O_DIRECTORY is checked first) or another file.
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                with contextlib.suppress(OSError):
                    self._check_folder(folder, os.lstat(folder))  # says which
                raise StorageError(f"refusing {folder}: it is not a folder") from None
            raise StorageError(f"cannot use folder {folder}: {_reason(e)}") from e
        try:
            self._check_folder(folder, os.fstat(fd))
            if created:  # on the folder opened: a chmod by path would follow a symlink
                os.fchmod(fd, mode)
                fsync_dir(os.path.dirname(folder))
        except OSError as e:
            os.close(fd)
            raise StorageError(f"cannot create folder {folder}: {_reason(e)}") from e
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _ensure_root(self) -> bool:
        """Create the root and its missing parents, each 0700, unless it exists; return
        whether it is shared by a group (an existing root with the setgid bit).

        The root may be a symlink to a folder (a home moved elsewhere): the user chose it,
        unlike anything below it.
        """
        try:
            mode = os.stat(self._root_str).st_mode
            if stat.S_ISDIR(mode):
                return bool(mode & stat.S_ISGID)
            raise StorageError(f"store folder {self._root} is not a folder")
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot use store folder {self._root}: {_reason(e)}") from e
        if not self._create:
            raise StorageError(f"store folder {self._root} does not exist")
        try:
            make_private_folder(self._root)
        except FileExistsError:
            raise StorageError(f"cannot create folder {self._root}: not a folder") from None
        except OSError as e:
            where = e.filename or self._root
            raise StorageError(f"cannot create folder {where}: {_reason(e)}") from e
        return False

    @staticmethod
    def _created(folder: Path | str, mode: int) -> None:
        """Finish a folder just made: exactly ``mode``, and durable in its parent (P8)."""
        try:
            finish_private_folder(folder, mode)
        except OSError as e:
            raise StorageError(f"cannot create folder {folder}: {_reason(e)}") from e

    @staticmethod
    def _check_folder(folder: Path | str, info: os.stat_result) -> None:
        if stat.S_ISLNK(info.st_mode):
            # Names are validated, so only a symlink could lead outside the root.
            raise StorageError(f"refusing {folder}: it is a symlink, not a folder")
        if not stat.S_ISDIR(info.st_mode):
            raise StorageError(f"refusing {folder}: it is not a folder")

    def _missing(self, name: str, generation: int) -> str:
        return f"no blob {name} generation {generation} in {self.location}"

    def _read(self, name: str, generation: int, path: str, dir_fd: int | None = None) -> bytes:
        def check(info: os.stat_result) -> None:
            # On the opened file, so nothing can be swapped in between check and read.
            if not stat.S_ISREG(info.st_mode):
                raise BadEntryError(f"refusing {path}: it is not a regular file")
            if info.st_size > MAX_ITEM_SIZE:
                raise BadEntryError(f"refusing {path}: larger than {MAX_ITEM_SIZE} bytes")

        # A symlink could point outside the store (O_NOFOLLOW refuses it), and a FIFO planted
        # in the store would block the open (O_NONBLOCK) or never end (the check).
        flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # Windows: the best
                raise BadEntryError(f"refusing {path}: it is not a regular file")  # it has
            return read_bounded(path, MAX_ITEM_SIZE, flags=flags, check=check, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(self._missing(name, generation)) from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise BadEntryError(f"refusing {path}: it is not a regular file") from None
            raise StorageError(f"cannot read {path}: {_reason(e)}") from e
        except ValueError:  # grew between the check and the read
            raise BadEntryError(f"refusing {path}: larger than {MAX_ITEM_SIZE} bytes") from None

    def _generations(self, folder: Path | str | None) -> list[int]:
        if folder is None:
            return []
        found = []
        for entry in self._scan(folder):
            match = _ENTRY.fullmatch(entry.name)
            if match is None:
                continue  # temp files (".7.kb.<hex>.tmp"), "007.kb", "x.kb", anything else
            generation = int(match.group(1))
            if generation <= MAX_GENERATION and self._is_file(entry):
                found.append(generation)
        return sorted(found)

    @staticmethod
    def _scan(folder: Path | str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as entries:
                return list(entries)
        except FileNotFoundError:
            return []  # a missing root is an empty store; a name folder removed meanwhile
        except NotADirectoryError as e:
            raise StorageError(f"cannot list {folder}: it is not a folder") from e
        except OSError as e:
            raise StorageError(f"cannot list {folder}: {_reason(e)}") from e

    @staticmethod
    def _is_dir(entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_dir(follow_symlinks=False)
        except OSError as e:
            raise StorageError(f"cannot read {entry.path}: {_reason(e)}") from e

    @staticmethod
    def _is_file(entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_file(follow_symlinks=False)
        except OSError as e:
            raise StorageError(f"cannot read {entry.path}: {_reason(e)}") from e
