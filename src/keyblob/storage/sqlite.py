"""The SQLite store: one database file, standard library :mod:`sqlite3` (FORMAT.md 5.5).

For many processes on one machine.  The file is created (0600) by the first write, never by
a read: reading a missing file, or one without keyblob's tables, behaves like an empty
store.  The database runs in WAL mode with ``synchronous=FULL`` (each commit is fsynced, as
the directory store fsyncs each blob) and a busy timeout, so writers wait for each other
instead of failing; every write is one transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from keyblob.atomic import fsync_dir
from keyblob.errors import StorageError
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, sql
from keyblob.storage.sql import (
    BLOBS,
    META,
    SET_ASIDE,
    TABLES,
    VERSION_KEY,
    SqlStore,
    check_version,
    parse_version,
    schema_statements,
    upgrade_failed,
    upgraded,
)

__all__ = ["BUSY_TIMEOUT", "SqliteStore"]

#: Seconds a statement waits for another process's write lock before it fails.
BUSY_TIMEOUT = 10.0


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode (kept in the file), unless it is already.

    Asking for WAL takes a lock that SQLite does not wait for with the busy timeout: a
    connection opened while another writes got "database is locked" at once.  So the mode
    is read first (set once, by the first writer, it rarely needs changing), and a switch
    that meets a lock is tried again until BUSY_TIMEOUT has passed.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


_FILE_MODE = 0o600
# Connections inherited through fork(): SQLite forbids using them in the child, and closing
# one there could disturb the parent's locks, so the child keeps them, unused, until it ends.
_INHERITED: list[sqlite3.Connection] = []

# The version guard: a row is written only while the schema is the one this keyblob knows,
# so a process that opened the store before a newer keyblob upgraded it cannot write to it.
_CURRENT = f"EXISTS (SELECT 1 FROM {META} WHERE key = '{VERSION_KEY}' AND value = ?)"  # noqa: S608
_INSERT = f"INSERT INTO {BLOBS} (name, generation, data) SELECT ?, ?, ? WHERE {_CURRENT}"
_FETCH = (
    f"SELECT length(data), CASE WHEN typeof(data) = 'blob' AND length(data) <= {MAX_ITEM_SIZE} "  # noqa: S608
    f"THEN data END FROM {BLOBS} WHERE name = ? AND generation = ? LIMIT 2"
)
_VALID = f"typeof(generation) = 'integer' AND generation BETWEEN 1 AND {MAX_GENERATION}"
_GENERATIONS = f"SELECT generation FROM {BLOBS} WHERE name = ? AND {_VALID}"  # noqa: S608
_LATEST = (
    f"SELECT generation FROM {BLOBS} WHERE name = ? AND {_VALID} ORDER BY generation DESC LIMIT 1"  # noqa: S608
)
_NAMES = f"SELECT DISTINCT name FROM {BLOBS} WHERE typeof(name) = 'text' AND {_VALID}"  # noqa: S608
_COPY_ASIDE = (
    f"INSERT INTO {SET_ASIDE} (name, generation, data) "  # noqa: S608
    f"SELECT name, generation, data FROM {BLOBS} WHERE name = ? AND generation = ? AND {_CURRENT}"
)
_UNIQUE = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")
_DELETE = f"DELETE FROM {BLOBS} WHERE name = ? AND generation = ?"  # noqa: S608
_UPDATE = (
    f"UPDATE {BLOBS} SET data = ? WHERE name = ? AND generation = ? AND data = ? "  # noqa: S608
    f"AND {_CURRENT}"
)


class SqliteStore(SqlStore):
    """A store in the SQLite database file ``path`` (``sqlite:///PATH`` or
    ``sqlite:PATH``).  Its folder must exist; the file is made on the first write."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self._path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._ready = False  # this connection saw the schema at sql.SCHEMA_VERSION

    @property
    def location(self) -> str:
        """The database file, as given."""
        return str(self._path)

    @property
    def identity(self) -> str:
        """``sqlite:`` and the database file's absolute path, symlinks resolved."""
        return "sqlite:" + os.path.realpath(self._path)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def exists(self) -> bool:
        """Whether the database file exists (a read of a missing one finds nothing)."""
        return os.path.lexists(self._path)

    # -- engine primitives -------------------------------------------------------------

    def _insert(self, name: str, generation: int, data: bytes) -> bool:
        for _attempt in range(2):
            with self._errors("write to"):
                db = self._writable()
                try:
                    inserted = db.execute(
                        _INSERT, (name, generation, data, str(sql.SCHEMA_VERSION))
                    ).rowcount
                except sqlite3.IntegrityError as e:
                    if _error_name(e) in _UNIQUE:
                        return False
                    raise
                if inserted:
                    return True
                self._ready = False  # the version guard held: look at the schema again
        raise StorageError(f"cannot write to {self.location}: its schema keeps changing")

    def _update(self, name: str, generation: int, old: bytes, new: bytes) -> int:
        with self._errors("write to"):
            db = self._readable()  # nothing to replace where there is no schema: create none
            if db is None:
                return 0
            # One statement, so one transaction: the compare and the write are atomic.
            count: int = db.execute(
                _UPDATE, (new, name, generation, old, str(sql.SCHEMA_VERSION))
            ).rowcount
            return count

    def _fetch(self, name: str, generation: int) -> list[tuple[object, object]]:
        with self._errors("read"):
            db = self._readable()
            return [] if db is None else list(db.execute(_FETCH, (name, generation)))

    def _generations(self, name: str) -> list[object]:
        with self._errors("read"):
            db = self._readable()
            return [] if db is None else [g for (g,) in db.execute(_GENERATIONS, (name,))]

    def _latest(self, name: str) -> object:
        with self._errors("read"):
            db = self._readable()
            row = None if db is None else db.execute(_LATEST, (name,)).fetchone()
            return None if row is None else row[0]

    def _names(self) -> list[object]:
        with self._errors("read"):
            db = self._readable()
            return [] if db is None else [n for (n,) in db.execute(_NAMES)]

    def _move_aside(self, name: str, generation: int) -> int | None:
        with self._errors("write to"):
            db = self._readable()  # nothing to move where there is no schema: create none
            if db is None:
                return None
            # BEGIN IMMEDIATE takes the write lock first: copy and delete see the same row.
            db.execute("BEGIN IMMEDIATE")
            try:
                moved = db.execute(_COPY_ASIDE, (name, generation, str(sql.SCHEMA_VERSION)))
                if moved.rowcount == 0:
                    db.execute("ROLLBACK")
                    return None
                row_id = moved.lastrowid
                db.execute(_DELETE, (name, generation))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            return row_id

    def _disconnect(self) -> None:
        db, self._db, self._ready = self._db, None, False
        if db is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                db.close()
        elif db is not None:
            _INHERITED.append(db)

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, verb: str) -> Iterator[None]:
        """Under the store's lock, on an open store; SQLite's errors become one-line
        StorageErrors ("cannot read PATH: database is locked")."""
        with self._lock:
            self._refuse_if_closed()
            try:
                yield
            except sqlite3.Error as e:
                raise StorageError(f"cannot {verb} {self.location}: {_reason(e)}") from e

    def _readable(self) -> sqlite3.Connection | None:
        """The connection with the schema checked; None when there is no database file or
        no schema in it yet (a read never creates either)."""
        return self._connection(create=False)

    def _writable(self) -> sqlite3.Connection:
        """The connection with the schema checked, file and schema made if missing."""
        db = self._connection(create=True)
        if db is None:  # not reached: create=True makes both
            raise StorageError(f"cannot write to {self.location}: no schema")
        return db

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        if self._db is not None and self._pid != os.getpid():
            self._disconnect()  # forked: this process needs its own connection
        db = self._db
        if db is None:
            if not self._check_file(create=create):
                return None
            db = self._connect()
        if not self._ready and not self._prepare(db, create=create):
            return None
        return db

    def _check_file(self, *, create: bool) -> bool:
        """Whether the database file is there to open; a write creates it (0600, then its
        folder is fsynced).  Anything but a regular file is refused: a FIFO would block the
        open, a folder is a mistake."""
        path = self.location
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if not create:
                return False
            info = None
        except OSError as e:
            raise StorageError(f"cannot open {path}: {e.strerror or type(e).__name__}") from e
        if info is not None:
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(f"refusing {path}: it is not a regular file")
            return True
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            os.close(os.open(path, flags, _FILE_MODE))
            fsync_dir(os.path.dirname(os.path.abspath(path)))
        except FileExistsError:
            pass  # a concurrent writer made it
        except OSError as e:
            raise StorageError(f"cannot create {path}: {e.strerror or type(e).__name__}") from e
        return True

    def _connect(self) -> sqlite3.Connection:
        # mode=rw never creates the file (the first write made it above), so a read cannot.
        uri = "file:" + quote(os.path.abspath(self.location)) + "?mode=rw"
        db = sqlite3.connect(
            uri,
            uri=True,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,  # autocommit: one statement is one transaction
            check_same_thread=False,  # the store's lock serializes its use
        )
        try:
            # Nothing in the file may run code of ours, nor be trusted to (a hostile view or
            # trigger could otherwise call application functions).
            db.execute("PRAGMA trusted_schema = OFF")
            _use_wal(db)
            db.execute("PRAGMA synchronous = FULL")
        except BaseException:
            db.close()
            raise
        self._db, self._pid, self._ready = db, os.getpid(), False
        return db

    def _version(self, db: sqlite3.Connection) -> int | None:
        """The schema version, None if the file has none of keyblob's tables."""
        marks = ",".join("?" * len(TABLES))
        found = {
            name
            for (name,) in db.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks})",  # noqa: S608
                TABLES,
            )
        }
        if not found:
            return None
        if META not in found:
            raise StorageError(
                f"cannot use the store {self.location}: it has {BLOBS} or {SET_ASIDE} but no "
                f"{META}: it is damaged or not keyblob's"
            )
        rows = db.execute(
            f"SELECT value FROM {META} WHERE key = ? LIMIT 2",  # noqa: S608
            (VERSION_KEY,),
        ).fetchall()
        version = parse_version([v for (v,) in rows], self.location)
        check_version(version, self.location)
        if version == sql.SCHEMA_VERSION and found != set(TABLES):
            raise StorageError(
                f"cannot use the store {self.location}: tables are missing: it is damaged"
            )
        return version

    def _prepare(self, db: sqlite3.Connection, *, create: bool) -> bool:
        """Check the schema: True when it is this keyblob's version (made, for a write to a
        database without one; upgraded, from an older version), False when a read finds
        none.  Creation and upgrade run in one transaction holding the write lock, and look
        at the version again under it: of concurrent processes, one does the work."""
        found = self._version(db)
        if found is None and not create:
            return False
        if found != sql.SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                found = self._version(db)
                if found != sql.SCHEMA_VERSION:
                    for statement in schema_statements("sqlite", found):
                        db.execute(statement)
                db.execute("COMMIT")
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if found is not None and isinstance(e, sqlite3.Error):
                    raise upgrade_failed(self.location, found, _reason(e)) from e
                raise
            if found is not None and found != sql.SCHEMA_VERSION:
                upgraded(self.location, found)
        self._ready = True
        return True


def _error_name(e: sqlite3.Error) -> str:
    return str(getattr(e, "sqlite_errorname", ""))


def _reason(e: sqlite3.Error) -> str:
    """SQLite's message, on one line ("database is locked", "file is not a database")."""
    return " ".join(str(e).split()) or type(e).__name__
