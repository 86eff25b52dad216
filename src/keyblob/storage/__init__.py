"""Untrusted blob stores: opaque bytes keyed by (name, generation); never parsed, never trusted.

A store is where key blobs live between export and import: a directory (the embedded
default), a SQLite file, or a PostgreSQL database.  The threat model assumes an attacker can read,
write, delete and replay anything in it, so a store only moves bytes: it never parses a blob
and never decides whether one is genuine (that is the recipes' job, after a signature check).
What a store does promise:

- ``put`` is create-only and atomic (threat model P8): a (name, generation) is written once,
  a crash leaves it absent or complete, and of two concurrent writers exactly one wins.
- ``replace`` is the one way to change a stored entry: a compare-and-set of its exact bytes
  (a re-wrapped blob of the same generation, FORMAT.md 2.6.1), atomic in the same sense.
- every name and generation is validated before the store is touched, so a name can never
  become a path or a query outside the store.
- every item is bounded by :data:`MAX_ITEM_SIZE`, on the way in and on the way out.

Select a store with :func:`open_store`, from a path or a URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from keyblob.errors import UsageError
from keyblob.keys import MAX_GENERATION

__all__ = [
    "MAX_GENERATION",
    "MAX_ITEM_SIZE",
    "Store",
    "check_generation",
    "check_item",
    "open_store",
]

#: Largest item a store accepts or returns, in bytes.  Key blobs are a few KiB even with
#: post-quantum recipients; the bound keeps a hostile store from exhausting memory.
MAX_ITEM_SIZE = 65536


@runtime_checkable
class Store(Protocol):
    """Opaque bytes keyed by (name, generation).

    Names follow :func:`keyblob.keys.check_name`; generations are 1 to
    :data:`MAX_GENERATION`.  Every method validates its arguments (raising UsageError)
    before it touches the store.
    """

    @property
    def location(self) -> str:
        """Where the store is, for people: a folder path, a database file, a host."""
        ...

    @property
    def identity(self) -> str:
        """Which store this is, for the container's state (FORMAT.md 5.2): the same for
        every handle on the same store, different for different stores, and holding no
        secret (a URL's password is left out).  1 to 4096 characters, no control
        character.  The state records under it the names this store held, so that ``list``
        calls missing only those (a name kept in another store is not missing here)."""
        ...

    def put(self, name: str, generation: int, data: bytes) -> None:
        """Store ``data`` as ``name`` at ``generation``; create-only and atomic.

        Putting bytes identical to those already stored is a no-op, so a retried write
        succeeds.  Of concurrent writers of the same (name, generation), exactly one wins.

        Raises:
            UsageError: invalid name or generation, or ``data`` larger than MAX_ITEM_SIZE.
            StorageError: the (name, generation) already holds different bytes (they are
                kept), or the store failed.
        """
        ...

    def replace(self, name: str, generation: int, old: bytes, new: bytes) -> None:
        """Replace the bytes ``old`` stored at (name, generation) with ``new``: an atomic
        compare-and-set (FORMAT.md 5.3, 5.5).

        A reader sees ``old`` or ``new``, never a mix, and a crash at any instant leaves one
        of them.  Of concurrent replacers of the same ``old``, exactly one wins.  When the
        entry already holds ``new`` (a retried replace that had succeeded) it is a no-op.

        Raises:
            UsageError: invalid name or generation, or ``old``/``new`` larger than
                MAX_ITEM_SIZE.
            ReplaceConflictError: the entry holds neither ``old`` nor ``new``, or is not
                there (set aside meanwhile): nothing was changed.
            BadEntryError: the entry is one the store will not hand over.
            StorageError: the store failed; the entry then holds ``old`` or ``new``.
        """
        ...

    def get(self, name: str, generation: int) -> bytes:
        """Return the bytes stored as ``name`` at ``generation``.

        Raises:
            UsageError: invalid name or generation.
            NotFoundError: nothing is stored there.
            BadEntryError: an entry is there that the store will not hand over (larger
                than MAX_ITEM_SIZE, not a regular file, not bytes, several rows): a
                StorageError that readers treat as an entry failing verification.
            StorageError: the store failed.
        """
        ...

    def generations(self, name: str) -> list[int]:
        """Return the generations stored for ``name``, ascending; ``[]`` when none.

        Raises:
            UsageError: invalid name.
            StorageError: the store failed.
        """
        ...

    def latest(self, name: str) -> int | None:
        """Return the highest generation stored for ``name``, or None when none.

        Raises:
            UsageError: invalid name.
            StorageError: the store failed.
        """
        ...

    def names(self) -> list[str]:
        """Return the names that have at least one generation, sorted.

        Raises:
            StorageError: the store failed.
        """
        ...

    def set_aside(self, name: str, generation: int) -> str:
        """Move the entry ``name`` at ``generation`` aside, where no other method sees it,
        and return where it now is, for people (a path, a table and row).

        The bytes are kept unchanged, as evidence; setting the same (name, generation) aside
        again (something new was put there meanwhile) keeps both.  The store does not judge
        the entry: which entries to move is the recipes' decision (FORMAT.md 2.9).

        Raises:
            UsageError: invalid name or generation.
            NotFoundError: nothing is stored there.
            StorageError: the store failed; the entry is then still in place.
        """
        ...


def check_generation(generation: int) -> int:
    """Return ``generation`` if it is a valid generation, else raise UsageError.

    Raises:
        UsageError: not an int (bool included), or outside 1 to MAX_GENERATION.
    """
    # bool is an int subclass; True as a generation is a caller bug, not generation 1.
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise UsageError(f"invalid generation {generation!r}: must be an integer")
    if not 1 <= generation <= MAX_GENERATION:
        raise UsageError(f"invalid generation {generation}: must be 1 to {MAX_GENERATION}")
    return generation


def check_item(data: bytes) -> bytes:
    """Return ``data`` if a store may hold it, else raise UsageError.

    Raises:
        UsageError: not bytes, or larger than MAX_ITEM_SIZE.
    """
    if not isinstance(data, bytes):
        raise UsageError(f"a stored item is bytes, not {type(data).__name__}")
    if len(data) > MAX_ITEM_SIZE:
        raise UsageError(f"item of {len(data)} bytes is larger than {MAX_ITEM_SIZE} bytes")
    return data


# A URL scheme is two or more characters, so that "C:\keys" on Windows stays a path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")


def open_store(url: str) -> Store:
    """Open the store that ``url`` names.  Nothing is connected to or created here: a
    database is reached by the first operation, and made by the first write.

    - a plain path, or ``file:PATH`` / ``file:///PATH``: a :class:`DirectoryStore`
      (the folder is created on the first write, not here);
    - ``sqlite:///ABSOLUTE/PATH`` or ``sqlite:PATH`` (relative to the working folder): a
      :class:`~keyblob.storage.sqlite.SqliteStore` in that database file;
    - ``postgresql://...`` or ``postgres://...``: a
      :class:`~keyblob.storage.postgres.PostgresStore`; the URL goes to libpq as it is, so
      its query options (``sslmode``...), the ``PG*`` environment variables and
      ``~/.pgpass`` apply.  Needs the ``postgres`` extra (psycopg 3).

    Raises:
        UsageError: empty, malformed or unsupported URL, or psycopg missing for a
            PostgreSQL URL.
    """
    # Imported here, not at the top: these modules import this module's checks.
    from keyblob.storage.directory import DirectoryStore  # noqa: PLC0415

    if not isinstance(url, str) or not url:
        raise UsageError("empty store URL: give a folder path or a store URL")
    match = _SCHEME.match(url)
    if match is None:
        return DirectoryStore(Path(url))
    # Messages name only the scheme: a database URL may carry a password.
    scheme = match.group(1).lower()
    if scheme == "file":
        return DirectoryStore(Path(_local_path(url, "file", "folder")))
    if scheme == "sqlite":
        from keyblob.storage.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore(Path(_local_path(url, "sqlite", "database file")))
    if scheme in ("postgresql", "postgres"):
        # The module imports psycopg, and says how to install it when that fails.
        from keyblob.storage.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(url)
    raise UsageError(
        f"unsupported store URL scheme {scheme!r}: use a path, file:, sqlite: or postgresql:"
    )


def _local_path(url: str, scheme: str, what: str) -> str:
    """The path of a ``file:`` or ``sqlite:`` URL: ``SCHEME:PATH``, ``SCHEME:///PATH`` or
    ``SCHEME://localhost/PATH``, percent-decoded; no other host, no query, no fragment."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise UsageError(f"unsupported {scheme}: URL: use {scheme}:/path or {scheme}:///path")
    path = unquote(parts.path)
    if not path:
        raise UsageError(f"empty {scheme}: URL: give a {what} path")
    if path.startswith("//"):  # sqlite:////abs/path (SQLAlchemy's spelling): the same path
        path = "/" + path.lstrip("/")
    return path
