"""What the SQL stores share (FORMAT.md 5.5): the schema of each engine, its version and
upgrade steps, and the rules applied to every row read back.

The engines (:mod:`keyblob.storage.sqlite`, :mod:`keyblob.storage.postgres`) hold the
connection, the SQL of each operation and the translation of their driver's errors;
:class:`SqlStore` holds the Store methods themselves, so that both validate arguments the
same way, and judge rows the same way.  A database is as hostile as a folder: a row may have
been edited to hold any type, any size, any generation, so nothing read is used before these
checks, and no column other than the opaque bytes is kept that keyblob could believe.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from keyblob.errors import (
    BadEntryError,
    ConflictError,
    NotFoundError,
    ReplaceConflictError,
    StorageError,
    StoreUpgradeWarning,
)
from keyblob.keys import NAME_MAX, check_name
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, check_generation, check_item

__all__ = [
    "BLOBS",
    "META",
    "SCHEMA_VERSION",
    "SET_ASIDE",
    "TABLES",
    "UPGRADES",
    "VERSION_KEY",
    "SqlStore",
    "Upgrade",
    "check_version",
    "parse_version",
    "schema_statements",
]

#: The schema version this keyblob reads and writes (FORMAT.md 5.5).
SCHEMA_VERSION = 1

# Every table keyblob owns starts with "keyblob_", so a shared PostgreSQL database (or an
# application's own SQLite file) can hold other things beside them.
META = "keyblob_meta"
BLOBS = "keyblob_blobs"
SET_ASIDE = "keyblob_set_aside"
TABLES = (META, BLOBS, SET_ASIDE)
VERSION_KEY = "schema_version"

_NAME_GLOB = "[a-z0-9]*"  # SQLite has no regular expressions: two GLOBs say the same
_NAME_GLOB_BAD = "*[^a-z0-9._-]*"
_NAME_REGEX = f"^[a-z0-9][a-z0-9._-]{{0,{NAME_MAX - 1}}}$"

#: Version 1 of the schema, as each engine's DDL: run in one transaction, version row last.
#: The CHECK constraints keep an honest writer honest; a reader trusts none of them.
_CREATE: dict[str, tuple[str, ...]] = {
    "sqlite": (
        f"CREATE TABLE {META} (\n    key TEXT NOT NULL PRIMARY KEY,\n    value TEXT NOT NULL\n)",
        f"CREATE TABLE {BLOBS} (\n"
        "    name TEXT NOT NULL CHECK (typeof(name) = 'text'\n"
        f"        AND length(name) BETWEEN 1 AND {NAME_MAX}\n"
        f"        AND name GLOB '{_NAME_GLOB}' AND NOT name GLOB '{_NAME_GLOB_BAD}'),\n"
        "    generation INTEGER NOT NULL CHECK (typeof(generation) = 'integer'\n"
        f"        AND generation BETWEEN 1 AND {MAX_GENERATION}),\n"
        "    data BLOB NOT NULL CHECK (typeof(data) = 'blob'\n"
        f"        AND length(data) <= {MAX_ITEM_SIZE}),\n"
        "    PRIMARY KEY (name, generation)\n"
        ")",
        f"CREATE TABLE {SET_ASIDE} (\n"
        "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "    name TEXT NOT NULL,\n"
        "    generation INTEGER NOT NULL,\n"
        "    data BLOB NOT NULL,\n"
        "    set_aside_at TEXT NOT NULL\n"
        "        DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))\n"
        ")",
        f"INSERT INTO {META} (key, value) VALUES ('{VERSION_KEY}', '1')",  # noqa: S608
    ),
    "postgresql": (
        f"CREATE TABLE {META} (\n"
        '    key text COLLATE "C" NOT NULL PRIMARY KEY,\n'
        "    value text NOT NULL\n"
        ")",
        f"CREATE TABLE {BLOBS} (\n"
        '    name text COLLATE "C" NOT NULL\n'
        f"        CHECK (name ~ '{_NAME_REGEX}'),\n"
        "    generation bigint NOT NULL CHECK (generation >= 1),\n"
        f"    data bytea NOT NULL CHECK (octet_length(data) <= {MAX_ITEM_SIZE}),\n"
        "    PRIMARY KEY (name, generation)\n"
        ")",
        f"CREATE TABLE {SET_ASIDE} (\n"
        "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        '    name text COLLATE "C" NOT NULL,\n'
        "    generation bigint NOT NULL,\n"
        "    data bytea NOT NULL,\n"
        "    set_aside_at timestamptz NOT NULL DEFAULT now()\n"
        ")",
        f"INSERT INTO {META} (key, value) VALUES ('{VERSION_KEY}', '1')",  # noqa: S608
    ),
}


@dataclass(frozen=True)
class Upgrade:
    """The statements that take a database from one schema version to the next, per
    engine.  They run in the transaction that also sets the new version."""

    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, engine: str) -> tuple[str, ...]:
        return self.sqlite if engine == "sqlite" else self.postgresql


#: ``UPGRADES[v]`` takes a database from version ``v`` to ``v + 1``.  Version 1 is the only
#: one so far; the mechanism is tested with a step the test adds.
UPGRADES: dict[int, Upgrade] = {}


def parse_version(values: list[object], location: str) -> int:
    """The schema version from the rows of ``keyblob_meta`` with key ``schema_version``:
    exactly one, a decimal integer without sign or leading zeros, at least 1.

    Raises:
        StorageError: no such row, several, or a value that is not such a number.
    """
    if len(values) != 1:
        raise StorageError(
            f"cannot use the store {location}: {META} holds {len(values)} {VERSION_KEY} rows, "
            "not 1: it is damaged or not keyblob's"
        )
    value = values[0]
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.isdigit()
        or value.startswith("0")
        or len(value) > 9
    ):
        raise StorageError(
            f"cannot use the store {location}: its {VERSION_KEY} is not a version number: "
            "it is damaged or not keyblob's"
        )
    return int(value)


def check_version(found: int, location: str) -> None:
    """Refuse a database whose schema is newer than this keyblob's, before anything is
    read from it or written to it.

    Raises:
        StorageError: ``found`` is above SCHEMA_VERSION.
    """
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"the store {location} has schema version {found}, newer than this keyblob's "
            f"({SCHEMA_VERSION}): upgrade keyblob to use it; it was not changed"
        )


def schema_statements(engine: str, found: int | None) -> list[str]:
    """What brings a database with schema ``found`` (None: no keyblob tables yet) to
    SCHEMA_VERSION: the version 1 DDL when there is none, then each upgrade step and its
    version row update.  A new database goes through the same steps as an upgraded one,
    so the two cannot differ."""
    statements = list(_CREATE[engine]) if found is None else []
    for version in range(found or 1, SCHEMA_VERSION):
        step = UPGRADES.get(version)
        if step is None:  # a missing step is this keyblob's bug: never guess
            raise StorageError(f"no upgrade from schema version {version} to {version + 1}")
        statements.extend(step.statements(engine))
        statements.append(f"UPDATE {META} SET value = '{version + 1}' WHERE key = '{VERSION_KEY}'")  # noqa: S608
    return statements


def upgraded(location: str, found: int) -> None:
    """Say that the store was upgraded (a warning the command line prints as one line)."""
    warnings.warn(
        StoreUpgradeWarning(
            f"upgraded the store {location} from schema version {found} to {SCHEMA_VERSION}"
        ),
        stacklevel=2,
    )


def upgrade_failed(location: str, found: int, reason: str) -> StorageError:
    return StorageError(
        f"cannot upgrade the store {location} from schema version {found} to "
        f"{SCHEMA_VERSION}: {reason}; it was not changed"
    )


def _generation(value: object) -> int | None:
    """A generation read from a row, or None when it is not one (an edited row)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_GENERATION:
        return value
    return None


def _name(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return check_name(value)
    except ValueError:
        return None


class SqlStore(ABC):
    """The Store methods over an engine's primitives (FORMAT.md 5.5).

    Every argument is checked before the database is touched; every row read back goes
    through the reader's rules: a row counts when its name is a valid name and its
    generation a valid generation; its data is returned only if it is a byte string of at
    most MAX_ITEM_SIZE bytes, and its size is checked by the database before the bytes are
    sent.  A store may be used from several threads (one operation at a time) and closed;
    a closed store raises StorageError.
    """

    #: Whether this connection has seen the schema at SCHEMA_VERSION (the engines keep it).
    _ready: bool = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._closed = False

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store is, for people; never holds a password."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """A stable string naming the store's database; never holds a password."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A store dropped unclosed closes its connection (as sqlite3's own do), quietly:
        # at interpreter exit, parts of the driver may already be gone.
        with contextlib.suppress(Exception):
            self._disconnect()

    def close(self) -> None:
        """Close the connection; the store then refuses every operation.  Idempotent."""
        with self._lock:
            self._closed = True
            self._disconnect()

    # -- the Store protocol ------------------------------------------------------------

    def put(self, name: str, generation: int, data: bytes) -> None:
        """Store ``data`` as ``name`` at ``generation``: one INSERT, create-only through
        the primary key; identical bytes already there make it a no-op.

        Raises:
            UsageError: invalid name or generation, or ``data`` larger than MAX_ITEM_SIZE.
            ConflictError: the (name, generation) already holds different bytes.
            StorageError: the store is closed, newer than this keyblob, or failed.
        """
        check_name(name)
        check_generation(generation)
        check_item(data)
        # The unique key decides who wins; the read after a lost INSERT only tells an
        # idempotent retry from a conflict.  If the winner's row was set aside in between,
        # the slot is free again: try again (a few times, then it is a conflict).
        for _attempt in range(3):
            if self._insert(name, generation, data):
                return
            rows = self._fetch(name, generation)
            if rows:
                if self._data(rows, name, generation) != data:
                    raise ConflictError(name, generation, self.location)
                return
        raise ConflictError(name, generation, self.location)

    def replace(self, name: str, generation: int, old: bytes, new: bytes) -> None:
        """Replace the row's ``old`` bytes with ``new``: one ``UPDATE ... WHERE data = old``
        (FORMAT.md 5.5), so the compare and the write are one transaction.

        Raises:
            UsageError: invalid name or generation, or ``old``/``new`` too large.
            ReplaceConflictError: the row holds neither ``old`` nor ``new``, or is gone.
            BadEntryError: several rows claim the slot, or its data is not bytes.
            StorageError: the store is closed, newer than this keyblob, or failed.
        """
        check_name(name)
        check_generation(generation)
        check_item(old)
        check_item(new)
        for _attempt in range(2):
            if self._update(name, generation, old, new):
                return
            # Nothing updated: another writer changed the row, it is gone, it already holds
            # ``new`` (a retry), or the schema version changed since it was looked at.
            rows = self._fetch(name, generation)
            if not rows:
                break
            current = self._data(rows, name, generation)
            if current == new:
                return
            if current != old:
                break
            self._ready = False  # still ``old``: the version guard held; look again
        raise ReplaceConflictError(name, generation, self.location)

    def get(self, name: str, generation: int) -> bytes:
        """Return the bytes stored as ``name`` at ``generation``.

        Raises:
            UsageError: invalid name or generation.
            NotFoundError: nothing is stored there (no database, or no schema, included).
            StorageError: the row's data is not a byte string or is larger than
                MAX_ITEM_SIZE, several rows claim the slot, or the store failed.
        """
        check_name(name)
        check_generation(generation)
        rows = self._fetch(name, generation)
        if not rows:
            raise NotFoundError(self._missing(name, generation))
        return self._data(rows, name, generation)

    def generations(self, name: str) -> list[int]:
        """Return the generations stored for ``name``, ascending; ``[]`` when none.

        Raises:
            UsageError: invalid name.
            StorageError: the store failed.
        """
        check_name(name)
        found = {g for g in map(_generation, self._generations(name)) if g is not None}
        return sorted(found)

    def latest(self, name: str) -> int | None:
        """Return the highest generation stored for ``name``, or None when none.

        Raises:
            UsageError: invalid name.
            StorageError: the store failed.
        """
        check_name(name)
        return _generation(self._latest(name))

    def names(self) -> list[str]:
        """Return the names that have at least one generation, sorted.

        Raises:
            StorageError: the store failed.
        """
        found = {n for n in map(_name, self._names()) if n is not None}
        return sorted(found)

    def set_aside(self, name: str, generation: int) -> str:
        """Move the row to ``keyblob_set_aside`` in one transaction, bytes unchanged, and
        return where it is now.

        Raises:
            UsageError: invalid name or generation.
            NotFoundError: nothing is stored there.
            StorageError: the store failed; the row is then still in place.
        """
        check_name(name)
        check_generation(generation)
        moved = self._move_aside(name, generation)
        if moved is None:
            raise NotFoundError(self._missing(name, generation))
        return f"{self.location}, table {SET_ASIDE}, id {moved}"

    # -- engines -----------------------------------------------------------------------

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the connection if there is one; never raises."""

    @abstractmethod
    def _insert(self, name: str, generation: int, data: bytes) -> bool:
        """INSERT the row; False when the primary key already holds one."""

    @abstractmethod
    def _update(self, name: str, generation: int, old: bytes, new: bytes) -> int:
        """UPDATE the row at (name, generation) whose data is ``old`` to ``new``; the
        number of rows changed (0: none held ``old``)."""

    @abstractmethod
    def _fetch(self, name: str, generation: int) -> list[tuple[object, object]]:
        """Up to two rows at (name, generation), each (size of data, data if that size is
        at most MAX_ITEM_SIZE else None)."""

    @abstractmethod
    def _generations(self, name: str) -> list[object]:
        """The generation column of the rows of ``name``."""

    @abstractmethod
    def _latest(self, name: str) -> object:
        """The highest generation of ``name`` in 1 to MAX_GENERATION, or None."""

    @abstractmethod
    def _names(self) -> list[object]:
        """The distinct names of the rows that have a generation in range."""

    @abstractmethod
    def _move_aside(self, name: str, generation: int) -> int | None:
        """Move the row to the set-aside table; its id there, or None if no row."""

    # -- internals ---------------------------------------------------------------------

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise StorageError(f"the store {self.location} is closed")

    def _missing(self, name: str, generation: int) -> str:
        return f"no blob {name} generation {generation} in {self.location}"

    def _data(self, rows: list[tuple[object, object]], name: str, generation: int) -> bytes:
        where = f"{name} generation {generation} in {self.location}"
        if len(rows) > 1:  # the primary key was dropped: which row is meant cannot be known
            raise BadEntryError(f"refusing {where}: the store holds several rows for it")
        size, data = rows[0]
        if isinstance(size, int) and size > MAX_ITEM_SIZE:
            raise BadEntryError(f"refusing {where}: larger than {MAX_ITEM_SIZE} bytes")
        if not isinstance(data, bytes):  # text, a number or NULL: an edited row
            raise BadEntryError(f"refusing {where}: its data is not a byte string")
        if len(data) > MAX_ITEM_SIZE:  # the size the database gave was a lie
            raise BadEntryError(f"refusing {where}: larger than {MAX_ITEM_SIZE} bytes")
        return data
