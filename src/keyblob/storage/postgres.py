"""The PostgreSQL store: keyblob's tables in a database many machines share, through
psycopg 3 (the ``postgres`` extra; FORMAT.md 5.5).

The URL goes to libpq unchanged, so its options (``sslmode``, ``connect_timeout``...), the
``PG*`` environment variables, the service file and ``~/.pgpass`` all work.  A password the
URL holds never leaves this module: ``location``, ``identity``, ``repr`` and every message
are built without it, and libpq's own messages are scrubbed before they are shown.  The
connection is made by the first operation, not by the constructor, and runs in autocommit:
every write is one statement, so one transaction.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from keyblob.errors import StorageError, UsageError

try:
    import psycopg
    from psycopg import conninfo, errors, pq
except ImportError as e:  # the optional extra is missing (or its libpq wrapper is)
    raise UsageError("the postgresql store needs psycopg: pip install 'keyblob[postgres]'") from e

from keyblob.storage import MAX_ITEM_SIZE, sql
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

__all__ = ["CONNECT_TIMEOUT", "PostgresStore"]

#: Seconds to wait for the server when neither the URL nor PGCONNECT_TIMEOUT says: libpq
#: alone would wait forever for an address that drops packets.
CONNECT_TIMEOUT = 10

# Held while the schema is made or upgraded (an advisory lock, scoped to the database), so
# that concurrent first writers do not both run CREATE TABLE.
_SCHEMA_LOCK = 0x6B6579626C6F62  # "keyblob"

_CURRENT = f"EXISTS (SELECT 1 FROM {META} WHERE key = '{VERSION_KEY}' AND value = %s)"  # noqa: S608
_INSERT = f"INSERT INTO {BLOBS} (name, generation, data) SELECT %s, %s, %s WHERE {_CURRENT}"
# octet_length() of a stored value is read from its header (TOAST pointer included), so an
# oversized row is refused without its bytes being sent.
_FETCH = (
    f"SELECT octet_length(data), CASE WHEN octet_length(data) <= {MAX_ITEM_SIZE} "  # noqa: S608
    f"THEN data END FROM {BLOBS} WHERE name = %s AND generation = %s LIMIT 2"
)
_GENERATIONS = f"SELECT generation FROM {BLOBS} WHERE name = %s AND generation >= 1"  # noqa: S608
_LATEST = f"SELECT max(generation) FROM {BLOBS} WHERE name = %s AND generation >= 1"  # noqa: S608
_NAMES = f"SELECT DISTINCT name FROM {BLOBS} WHERE generation >= 1"  # noqa: S608
# One statement: the row leaves the blobs and enters the set-aside table together.
_UPDATE = (
    f"UPDATE {BLOBS} SET data = %s WHERE name = %s AND generation = %s AND data = %s "  # noqa: S608
    f"AND {_CURRENT}"
)
_MOVE_ASIDE = (
    f"WITH moved AS (DELETE FROM {BLOBS} "  # noqa: S608
    f"WHERE name = %s AND generation = %s AND {_CURRENT} RETURNING name, generation, data) "
    f"INSERT INTO {SET_ASIDE} (name, generation, data) "
    "SELECT name, generation, data FROM moved RETURNING id"
)

# A URL's user:password@, and a key=value password, wherever libpq echoes them.
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"']*):[^@\s\"']*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class PostgresStore(SqlStore):
    """A store in the PostgreSQL database a ``postgresql://`` (or ``postgres://``) URL
    names; keyblob's tables are made there by the first write."""

    def __init__(self, url: str) -> None:
        """Use the database ``url`` names; nothing is connected to here.

        Raises:
            UsageError: ``url`` does not parse as a libpq connection URL.
        """
        super().__init__()
        self._url = url
        try:
            params = conninfo.conninfo_to_dict(url)
        except psycopg.Error as e:
            raise UsageError(f"invalid PostgreSQL URL: {_scrub(str(e), url)}") from None
        self._secrets = [str(params[k]) for k in ("password",) if params.get(k)]
        self._identity = _identity(params)
        self._db: psycopg.Connection[Any] | None = None
        self._pid = 0
        self._ready = False
        self._inherited: list[psycopg.Connection[Any]] = []
        # Options the URL or the environment leave unset: a bounded wait for the server, and
        # a name for keyblob's sessions in pg_stat_activity.
        self._options: dict[str, Any] = {}
        if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
            self._options["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in params and not os.environ.get("PGAPPNAME"):
            self._options["application_name"] = "keyblob"

    @property
    def location(self) -> str:
        """``postgresql://user@host:port/dbname``: the identity; no password, no options."""
        return self._identity

    @property
    def identity(self) -> str:
        """``postgresql://user@host:port/dbname`` with libpq's defaults (the ``PG*``
        environment variables included) filled in where the URL leaves them out."""
        return self._identity

    # -- engine primitives -------------------------------------------------------------

    def _insert(self, name: str, generation: int, data: bytes) -> bool:
        for _attempt in range(2):
            with self._errors("write to"):
                db = self._writable()
                try:
                    inserted = db.execute(
                        _INSERT, (name, generation, data, str(sql.SCHEMA_VERSION))
                    ).rowcount
                except errors.UniqueViolation:
                    return False
                if inserted:
                    return True
                self._ready = False  # the version guard held: look at the schema again
        raise StorageError(f"cannot write to {self.location}: its schema keeps changing")

    def _update(self, name: str, generation: int, old: bytes, new: bytes) -> int:
        with self._errors("write to"):
            db = self._readable()  # nothing to replace where there is no schema: create none
            if db is None:
                return 0
            # One statement in autocommit: the row lock PostgreSQL takes makes a concurrent
            # UPDATE wait, then re-check ``data = old`` on the new row, and find nothing.
            count: int = db.execute(
                _UPDATE, (new, name, generation, old, str(sql.SCHEMA_VERSION))
            ).rowcount
            return count

    def _fetch(self, name: str, generation: int) -> list[tuple[object, object]]:
        with self._errors("read"):
            db = self._readable()
            if db is None:
                return []
            return [(size, data) for size, data in db.execute(_FETCH, (name, generation))]

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
        for _attempt in range(2):
            with self._errors("write to"):
                db = self._readable()  # nothing to move where there is no schema: make none
                if db is None:
                    return None
                ids = [
                    row_id
                    for (row_id,) in db.execute(
                        _MOVE_ASIDE, (name, generation, str(sql.SCHEMA_VERSION))
                    )
                ]
                if ids:
                    return int(ids[-1])
                # Nothing moved: no such row, or the version guard held.
                if self._version(db) == sql.SCHEMA_VERSION:
                    return None
                self._ready = False
        raise StorageError(f"cannot write to {self.location}: its schema keeps changing")

    def _disconnect(self) -> None:
        db, self._db, self._ready = self._db, None, False
        if db is not None and self._pid == os.getpid():
            with contextlib.suppress(psycopg.Error, OSError):
                db.close()
        elif db is not None:
            # Inherited through fork(): closing it here would end the parent's session
            # (psycopg sends nothing from a child when the object is dropped, but close()
            # would).  Kept, unused, until this process ends.
            self._inherited.append(db)

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, verb: str) -> Iterator[None]:
        """Under the store's lock, on an open store; psycopg's errors become one-line
        StorageErrors, scrubbed of the password."""
        with self._lock:
            self._refuse_if_closed()
            try:
                yield
            except psycopg.Error as e:
                if self._db is not None and self._db.broken:
                    self._disconnect()  # the next operation connects again
                raise StorageError(
                    f"cannot {verb} {self.location}: {_scrub(str(e), self._url, *self._secrets)}"
                ) from None

    def _readable(self) -> psycopg.Connection[Any] | None:
        """The connection with the schema checked; None while the database has none of
        keyblob's tables (a read never makes them)."""
        return self._connection(create=False)

    def _writable(self) -> psycopg.Connection[Any]:
        """The connection with the schema checked, made if missing."""
        db = self._connection(create=True)
        if db is None:  # not reached: create=True makes the schema
            raise StorageError(f"cannot write to {self.location}: no schema")
        return db

    def _connection(self, *, create: bool) -> psycopg.Connection[Any] | None:
        if self._db is not None and (self._pid != os.getpid() or self._db.closed):
            self._disconnect()
        db = self._db
        if db is None:
            db = self._connect()
        if not self._ready and not self._prepare(db, create=create):
            return None
        return db

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            db = psycopg.connect(self._url, autocommit=True, **self._options)
        except psycopg.Error as e:
            # "from None": psycopg's exception may hold the URL; the message is scrubbed.
            raise StorageError(
                f"cannot connect to {self.location}: {_scrub(str(e), self._url, *self._secrets)}"
            ) from None
        self._db, self._pid, self._ready = db, os.getpid(), False
        return db

    def _version(self, db: psycopg.Connection[Any], *, lock: bool = False) -> int | None:
        """The schema version, None if the database has none of keyblob's tables (in the
        schemas of its search_path)."""
        row = db.execute(
            "SELECT " + ", ".join(f"to_regclass('{t}') IS NOT NULL" for t in TABLES)
        ).fetchone()
        present = dict(zip(TABLES, row or (), strict=False))
        if not any(present.values()):
            return None
        if not present.get(META):
            raise StorageError(
                f"cannot use the store {self.location}: it has {BLOBS} or {SET_ASIDE} but no "
                f"{META}: it is damaged or not keyblob's"
            )
        rows = db.execute(
            f"SELECT value FROM {META} WHERE key = %s LIMIT 2" + (" FOR UPDATE" if lock else ""),  # noqa: S608
            (VERSION_KEY,),
        ).fetchall()
        version = parse_version([v for (v,) in rows], self.location)
        check_version(version, self.location)
        if version == sql.SCHEMA_VERSION and not all(present.values()):
            raise StorageError(
                f"cannot use the store {self.location}: tables are missing: it is damaged"
            )
        return version

    def _prepare(self, db: psycopg.Connection[Any], *, create: bool) -> bool:
        """Check the schema: True when it is this keyblob's version (made, for a write to a
        database without one; upgraded, from an older version), False when a read finds
        none.  Creation and upgrade run in one transaction under an advisory lock, and
        look at the version again under it: of concurrent processes, one does the work."""
        found = self._version(db)
        if found is None and not create:
            return False
        if found != sql.SCHEMA_VERSION:
            start = found
            # A session lock taken before the transaction begins: a transaction that began
            # before the winner committed could still see no tables after waiting.
            db.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                with db.transaction():
                    found = self._version(db, lock=True)
                    if found != sql.SCHEMA_VERSION:
                        for statement in schema_statements("postgresql", found):
                            db.execute(statement)
            except psycopg.Error as e:
                if start is not None:
                    reason = _scrub(str(e), self._url, *self._secrets)
                    raise upgrade_failed(self.location, start, reason) from None
                raise
            finally:
                with contextlib.suppress(psycopg.Error):
                    db.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
            if found is not None and found != sql.SCHEMA_VERSION:
                upgraded(self.location, found)
        self._ready = True
        return True


def _identity(params: dict[str, Any]) -> str:
    """``postgresql://user@host:port/dbname`` from the URL's parameters, libpq's defaults
    (which include the PG* environment variables) filling the gaps; never the password."""
    defaults = {
        option.keyword.decode(): option.val.decode()
        for option in pq.Conninfo.get_defaults()
        if option.val is not None
    }

    def value(key: str) -> str:
        given = params.get(key)
        return str(given) if given not in (None, "") else defaults.get(key, "")

    user = value("user")
    host = value("host") or value("hostaddr")
    port = value("port")
    dbname = value("dbname") or user
    if ":" in host and "," not in host and not host.startswith("/"):
        host = f"[{host}]"  # an IPv6 address
    else:
        host = quote(host, safe=",")  # a socket folder's slashes are encoded, as libpq reads
    netloc = f"{quote(user, safe='')}@{host}" + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(dbname, safe='')}"


def _scrub(text: str, url: str, *secrets: str) -> str:
    """``text`` on one line, without the URL it may quote nor any password in it."""
    text = text.replace(url, "(the store URL)")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            text = text.replace(quote(secret, safe=""), "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    return " ".join(text.split()) or "unknown error"
