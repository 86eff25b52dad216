"""The home state's database (FORMAT.md 5.2): ``state.db``, one SQLite file holding the
MAC'd head document and the hash trees of the high-water marks and of the store views.

This module owns the SQLite schema, the node encoding and the tree walks.  It holds no key
and parses no JSON: the provider checks the head's MAC and hands the trees' roots in.  The
file is hostile input: its schema must be exactly ours, every read is bounded, every node is
checked against the digest its parent holds (the root's is in the MAC'd head) before it is
parsed, and a node that is missing or differs raises the caller's "edited" error.

A tree maps keys to values (FORMAT.md 5.2.2): names to generations (the marks, the store
views), or ``name@generation`` to revisions (the revision marks).  A node's position is the
first nibbles of SHA-256(key), internal nodes at depths 0 to 3 hold 16 child digests, buckets
at depth 4 hold the entries.  Looking up or raising one key's value reads or writes the 5
nodes on its path, whatever the number of keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from keyblob.keys import MAX_GENERATION, MAX_REVISION, NAME_MAX, check_name

#: Depth of the buckets; internal nodes are at depths 0 (the root) to DEPTH - 1.
DEPTH = 4
FANOUT = 16
DIGEST_SIZE = 32
ZERO = bytes(DIGEST_SIZE)  # the digest of an empty subtree (no node is stored for it)
INTERNAL = 0x01
BUCKET = 0x02
INTERNAL_SIZE = 1 + FANOUT * DIGEST_SIZE
#: Entries in one bucket: ~2.7e8 names before an honest bucket fills (FORMAT.md 5.2.2).
MAX_BUCKET = 4096
#: The tree numbers: 0 holds the marks, 1 to 2^31-1 the store views, 2^31 the revision marks.
MARKS_TREE = 0
REVISIONS_TREE = 2**31
#: FORMAT.md 5.2.8: a revision mark's key is ``name "@" decimal(generation)``.
_REVISION_KEY = re.compile(r"([a-z0-9][a-z0-9._-]*)@([1-9][0-9]{0,18})")


@dataclass(frozen=True)
class Kind:
    """What a tree's bucket entries hold (FORMAT.md 5.2.2, 5.2.8): the longest key, the
    check of a key, the highest value."""

    key_max: int
    check_key: Callable[[str], object]
    value_max: int

    @property
    def max_node(self) -> int:
        """The largest bucket of this kind: the bound on a node row's size."""
        return 3 + MAX_BUCKET * (1 + self.key_max + 8)


def revision_key(name: str, generation: int) -> str:
    """The revisions tree's key of (name, generation): ``name "@" decimal(generation)``."""
    return f"{name}@{generation}"


def parse_revision_key(key: str) -> tuple[str, int]:
    """The (name, generation) of a revisions tree key (FORMAT.md 5.2.8).

    Raises:
        ValueError: not a valid name, ``@`` and a generation 1 to 2^63-1 in decimal without
            a leading zero.
    """
    match = _REVISION_KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise ValueError("not a revision key")
    name, generation = check_name(match[1]), int(match[2])
    if generation > MAX_GENERATION:
        raise ValueError("generation out of range")
    return name, generation


NAMES = Kind(NAME_MAX, check_name, MAX_GENERATION)
REVISIONS = Kind(NAME_MAX + 1 + len(str(MAX_GENERATION)), parse_revision_key, MAX_REVISION)
#: The bound on a node row of the marks and views (561155 bytes; revisions: 643075).
MAX_NODE_SIZE = NAMES.max_node


def kind_of(tree: int) -> Kind:
    return REVISIONS if tree == REVISIONS_TREE else NAMES


SCHEMA = (
    "CREATE TABLE head (id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL)",
    "CREATE TABLE node (tree INTEGER NOT NULL, pos TEXT NOT NULL, body BLOB NOT NULL, "
    "PRIMARY KEY (tree, pos)) WITHOUT ROWID",
)
# SQLite result codes (the low byte of the extended code) that say the file system or the
# environment failed, not that the file is other than keyblob wrote it.
_OPERATIONAL = {3, 5, 6, 7, 8, 10, 13, 14, 15, 22}  # PERM BUSY LOCKED NOMEM READONLY IOERR
# FULL CANTOPEN PROTOCOL NOLFS
_BATCH = 500
_CACHE = 65536  # nodes kept (about 35 MiB at most); all dropped when full
# A node's or the head's body, if it is a blob within the bound given; else NULL (not read).
# At most 2 head rows: one is right, two say the file is not keyblob's (no more are read).
_SELECT_HEAD = (
    "SELECT * FROM (SELECT -1, NULL, id, "
    "CASE WHEN typeof(body) = 'blob' AND length(body) <= ? THEN body END, "
    "typeof(body) FROM head LIMIT 2)"
)
_SELECT_PATH = (
    "SELECT tree, pos, NULL, "
    "CASE WHEN typeof(body) = 'blob' AND length(body) <= ? THEN body END, "
    "NULL FROM node WHERE tree = ? AND pos IN (?, ?, ?, ?, ?)"
)
_SELECT_NODES = (
    "SELECT pos, CASE WHEN typeof(body) = 'blob' AND length(body) <= ? THEN body END "
    "FROM node WHERE tree = ? AND pos IN"
)  # positions per query: under SQLite's smallest limit on host parameters


def _head_of(rows: list[tuple[object, ...]]) -> bytes | None:
    """The head's bytes from its rows (id, bounded body, type); None: over the bound.

    Raises:
        ValueError: not exactly one row with id 1 and a blob.
    """
    if len(rows) != 1 or rows[0][-3] != 1 or rows[0][-1] != "blob":
        raise ValueError("head row")
    body = rows[0][-2]
    return body if isinstance(body, bytes) else None


class BucketFull(ValueError):
    """A bucket would hold more than MAX_BUCKET entries."""


def key_hex(name: str) -> str:
    """The 64 lowercase hex digits of SHA-256(name): a name's path in every tree."""
    return hashlib.sha256(name.encode("ascii")).hexdigest()


def digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def encode_internal(children: list[bytes]) -> bytes:
    return bytes([INTERNAL]) + b"".join(children)


def decode_internal(body: bytes) -> list[bytes]:
    """FORMAT.md 5.2.2: kind 1, then 16 digests, not all zero.

    Raises:
        ValueError: anything else.
    """
    if len(body) != INTERNAL_SIZE or body[0] != INTERNAL:
        raise ValueError("not an internal node")
    children = [body[1 + i * DIGEST_SIZE : 1 + (i + 1) * DIGEST_SIZE] for i in range(FANOUT)]
    if all(c == ZERO for c in children):
        raise ValueError("an internal node with no child")
    return children


def encode_bucket(entries: Mapping[str, int]) -> bytes:
    """A bucket of ``entries`` (FORMAT.md 5.2.2); the caller checks keys and values.

    Raises:
        BucketFull: none, or over MAX_BUCKET entries.
    """
    if not 1 <= len(entries) <= MAX_BUCKET:
        raise BucketFull("bucket size")
    out = [bytes([BUCKET]), len(entries).to_bytes(2, "big")]
    for name in sorted(entries):
        raw = name.encode("ascii")
        out += [bytes([len(raw)]), raw, entries[name].to_bytes(8, "big")]
    return b"".join(out)


def decode_bucket(body: bytes, pos: str, kind: Kind = NAMES) -> dict[str, int]:
    """FORMAT.md 5.2.2: kind 2, a count, that many entries sorted by key, each key valid
    (a name, 1.4; in the revisions tree a revision key, 5.2.8) and on this bucket's path,
    each value 1 to 2^63-1 (revisions: 2^32-1), nothing after them.

    Raises:
        ValueError: anything else.
    """
    if len(body) < 3 or body[0] != BUCKET:
        raise ValueError("not a bucket")
    count = int.from_bytes(body[1:3], "big")
    if not 1 <= count <= MAX_BUCKET:
        raise ValueError("bucket count")
    out: dict[str, int] = {}
    at, previous = 3, b""
    for _ in range(count):
        size = body[at] if at < len(body) else 0
        raw = body[at + 1 : at + 1 + size]
        value = body[at + 1 + size : at + 9 + size]
        if not 1 <= size <= kind.key_max or len(raw) != size or len(value) != 8:
            raise ValueError("bucket entry truncated")
        if raw <= previous:
            raise ValueError("bucket entries not sorted, or a name twice")
        name = raw.decode("ascii")  # UnicodeDecodeError is a ValueError
        kind.check_key(name)  # UsageError is a ValueError
        if key_hex(name)[:DEPTH] != pos:
            raise ValueError("a name in another name's bucket")
        generation = int.from_bytes(value, "big")
        if not 1 <= generation <= kind.value_max:
            raise ValueError("value out of range")
        out[name] = generation
        at, previous = at + 9 + size, raw
    if at != len(body):
        raise ValueError("bytes after the last entry")
    return out


class StateDatabase:
    """``state.db`` of one container: one connection per process, shared by its threads
    (each transaction under a lock of this object)."""

    def __init__(
        self,
        path: Path,
        edited: Callable[[], Exception],
        failed: Callable[[str], Exception],
    ) -> None:
        """``edited()``: the error for a file keyblob did not write; ``failed(reason)``: the
        error for a file system or SQLite failure."""
        self.path = path
        self._edited = edited
        self._failed = failed
        self._lock = threading.RLock()
        # Verified nodes by digest (a digest names one content): lookups along paths seen
        # before read nothing but the head.  Internal nodes: their children; buckets: entries.
        self._nodes: dict[bytes, list[bytes] | dict[str, int]] = {}
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    # -- connection and transactions -----------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def _error(self, e: sqlite3.Error) -> Exception:
        code = getattr(e, "sqlite_errorcode", None)
        if (
            isinstance(e, sqlite3.OperationalError)
            and code is not None
            and code & 0xFF in (_OPERATIONAL)
        ):
            return self._failed(str(e))
        return self._edited()

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        # A connection inherited through fork() must not be used (SQLite's rule).
        self._db = None
        db = connect(self.path)
        try:
            check_schema(db)
        except sqlite3.Error:
            db.close()
            raise
        except ValueError:
            db.close()
            raise self._edited() from None
        self._db, self._pid = db, os.getpid()
        return db

    @contextlib.contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction (BEGIN IMMEDIATE for a write); committed when the block
        ends, rolled back if it raises.  SQLite errors become the caller's errors."""
        with self._lock:
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as e:
                raise self._error(e) from None

    # -- head ----------------------------------------------------------------------------

    @staticmethod
    def read_head(db: sqlite3.Connection, bound: int) -> bytes | None:
        """The head's bytes; None when they are over ``bound`` (not read).

        Raises:
            ValueError: not exactly one head row, or its body is not a blob.
        """
        return _head_of(db.execute(_SELECT_HEAD, (bound,)).fetchall())

    def read(
        self, bound: int, paths: Iterable[tuple[int, str]] = ()
    ) -> tuple[bytes | None, dict[int, dict[str, bytes]]]:
        """In one statement, so from one committed state: the head's bytes (None when over
        ``bound``) and, per tree, the node rows on the path of each (tree, name) in
        ``paths``.  Nothing is verified here.

        Raises:
            the caller's errors: not exactly one head row, or SQLite failed.
        """
        parts, params = [_SELECT_HEAD], list[object]([bound])
        for tree, name in paths:
            k = key_hex(name)
            parts.append(_SELECT_PATH)
            params += [kind_of(tree).max_node, tree, *(k[:level] for level in range(DEPTH + 1))]
        with self._lock:
            try:
                rows = self._connect().execute(" UNION ALL ".join(parts), params).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from None
        nodes: dict[int, dict[str, bytes]] = {}
        for tree, pos, _, body, _ in rows:
            if tree != -1 and isinstance(pos, str) and isinstance(body, bytes):
                nodes.setdefault(tree, {})[pos] = body
        try:
            return _head_of([r[2:] for r in rows if r[0] == -1]), nodes
        except ValueError:
            raise self._edited() from None

    @staticmethod
    def write_head(db: sqlite3.Connection, body: bytes) -> None:
        db.execute("INSERT OR REPLACE INTO head (id, body) VALUES (1, ?)", (body,))

    # -- trees ---------------------------------------------------------------------------

    @staticmethod
    def _fetch(db: sqlite3.Connection, tree: int, positions: Iterable[str]) -> dict[str, bytes]:
        """The rows at ``positions`` that hold a blob within the bound (others: absent)."""
        wanted = sorted(set(positions))
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), _BATCH):
            part = wanted[i : i + _BATCH]
            marks = ",".join("?" * len(part))  # only placeholders go into the text
            query = f"{_SELECT_NODES} ({marks})"
            for pos, body in db.execute(query, (kind_of(tree).max_node, tree, *part)):
                if isinstance(pos, str) and isinstance(body, bytes):
                    out[pos] = body
        return out

    def _verified(self, rows: Mapping[str, bytes], pos: str, expected: bytes) -> bytes:
        body = rows.get(pos)
        if body is None or digest(body) != expected:  # missing, oversize, or not this node
            raise self._edited()
        return body

    def lookup(
        self,
        root: bytes,
        name: str,
        rows: Mapping[str, bytes] | None = None,
        *,
        tree: int = MARKS_TREE,
    ) -> int | None:
        """``name``'s value in the tree ``tree`` with ``root`` (0 if absent), walking down from the
        root through the verified nodes this object keeps (by digest), then through ``rows``
        (a path read from the file: each verified before use, then kept).

        Returns None when a node is in neither, or a row is not the node its parent names:
        the caller reads again (the file may have changed since ``root`` was read) or
        refuses.
        """
        k = key_hex(name)
        expected = root
        for level in range(DEPTH + 1):
            if expected == ZERO:
                return 0
            node = self._nodes.get(expected)
            if node is None:
                pos = k[:level]
                body = rows.get(pos) if rows is not None else None
                if body is None or digest(body) != expected:
                    return None
                try:
                    node = (
                        decode_internal(body)
                        if level < DEPTH
                        else decode_bucket(body, pos, kind_of(tree))
                    )
                except ValueError:
                    return None
                self._keep(expected, node)
            if isinstance(node, dict):
                return node.get(name, 0)
            expected = node[int(k[level], 16)]
        return None  # unreachable: the bucket is at depth DEPTH

    def _keep(self, key: bytes, node: list[bytes] | dict[str, int]) -> None:
        if len(self._nodes) >= _CACHE:
            self._nodes.clear()
        self._nodes[key] = node

    def read_path(self, tree: int, name: str) -> dict[str, bytes]:
        """The rows on ``name``'s path in ``tree``, in one statement (not verified)."""
        k = key_hex(name)
        with self._lock:
            try:
                rows = self._fetch(self._connect(), tree, (k[:level] for level in range(DEPTH + 1)))
            except sqlite3.Error as e:
                raise self._error(e) from None
        return rows

    def walk(self, db: sqlite3.Connection, tree: int, root: bytes) -> dict[str, int]:
        """Every entry of the tree with ``root``, each node verified, level by level."""
        out: dict[str, int] = {}
        if root == ZERO:
            return out
        level_nodes = {"": root}
        try:
            for _level in range(DEPTH):
                rows = self._fetch(db, tree, level_nodes)
                below: dict[str, bytes] = {}
                for pos, expected in level_nodes.items():
                    children = decode_internal(self._verified(rows, pos, expected))
                    for i, child in enumerate(children):
                        if child != ZERO:
                            below[pos + "0123456789abcdef"[i]] = child
                level_nodes = below
            rows = self._fetch(db, tree, level_nodes)
            for pos, expected in level_nodes.items():
                out.update(decode_bucket(self._verified(rows, pos, expected), pos, kind_of(tree)))
        except ValueError:
            raise self._edited() from None
        return out

    def plan(
        self,
        db: sqlite3.Connection | None,
        tree: int,
        root: bytes,
        changes: Mapping[str, int],
    ) -> tuple[bytes, int, dict[str, bytes]]:
        """Raise the values of ``changes`` (a value never goes down) in the tree with
        ``root``: its new root, the number of names added and the node rows to write.

        Only the nodes on the changed names' paths are read (verified) and rewritten.
        ``db`` may be None only for an empty tree (nothing to read).

        Raises:
            BucketFull: a bucket would hold over MAX_BUCKET entries.
        """
        if not changes:
            return root, 0, {}
        keys = {name: key_hex(name) for name in changes}
        internal: dict[str, list[bytes]] = {}
        buckets: dict[str, dict[str, int]] = {}
        # Load every path before changing anything: each node is checked against the digest
        # its (unchanged) parent holds, top down.  Nodes verified before (by digest) are
        # not read again; when the root is not among them, every path is read at once.
        rows: dict[str, bytes] = {}
        if root != ZERO and root not in self._nodes:
            if db is None:
                raise self._edited()  # unreachable: only an empty tree is planned without one
            rows = self._fetch(db, tree, {k[:lv] for k in keys.values() for lv in range(DEPTH + 1)})
        expected = {"": root}
        try:
            for level in range(DEPTH + 1):
                missing = {p: d for p, d in expected.items() if d != ZERO and d not in self._nodes}
                if missing.keys() - rows.keys() and db is not None:
                    rows.update(self._fetch(db, tree, missing.keys() - rows.keys()))
                for pos, want in expected.items():
                    if want == ZERO:
                        if level == DEPTH:
                            buckets[pos] = {}
                        else:
                            internal[pos] = [ZERO] * FANOUT
                        continue
                    node = self._nodes.get(want)
                    if node is None:
                        body = self._verified(rows, pos, want)
                        node = (
                            decode_bucket(body, pos, kind_of(tree))
                            if level == DEPTH
                            else decode_internal(body)
                        )
                        self._keep(want, node)
                    # Copies: a kept node is never changed (its digest names it).
                    if isinstance(node, dict):
                        buckets[pos] = dict(node)
                    else:
                        internal[pos] = list(node)
                if level < DEPTH:
                    expected = {
                        k[: level + 1]: internal[k[:level]][int(k[level], 16)]
                        for k in keys.values()
                    }
        except ValueError:
            raise self._edited() from None
        added = 0
        dirty: set[str] = set()
        for name, value in changes.items():
            pos = keys[name][:DEPTH]
            old = buckets[pos].get(name, 0)
            if value > old:
                added += old == 0
                buckets[pos][name] = value
                dirty.add(pos)
        if not dirty:
            return root, 0, {}
        out: dict[str, bytes] = {}
        for pos in dirty:
            try:
                body = encode_bucket(buckets[pos])
            except BucketFull:  # named by a key of the change, for the caller's message
                raise BucketFull(min(n for n in changes if keys[n][:DEPTH] == pos)) from None
            out[pos] = body
            key = digest(body)
            internal[pos[:-1]][int(pos[-1], 16)] = key
            # A digest names one content, so keeping a node of a change that is then not
            # committed is harmless: nothing will ever ask for that digest.
            self._keep(key, buckets[pos])
        dirty = {pos[:-1] for pos in dirty}
        for _level in range(DEPTH):
            parents = set()
            for pos in dirty:
                body = encode_internal(internal[pos])
                out[pos] = body
                key = digest(body)
                self._keep(key, internal[pos])
                if pos:
                    internal[pos[:-1]][int(pos[-1], 16)] = key
                    parents.add(pos[:-1])
            dirty = parents
        return digest(out[""]), added, out

    @staticmethod
    def write_nodes(db: sqlite3.Connection, tree: int, rows: Mapping[str, bytes]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO node (tree, pos, body) VALUES (?, ?, ?)",
            ((tree, pos, body) for pos, body in rows.items()),
        )


def connect(path: Path) -> sqlite3.Connection:
    """A connection to ``path`` with the settings every keyblob connection uses: writes
    durable when committed (synchronous=EXTRA, rollback journal), nothing from the file's
    schema trusted (trusted_schema=OFF), cell sizes checked; never creates the file.

    Raises:
        sqlite3.Error: it could not be opened.
    """
    uri = f"file:{quote(os.fsencode(path))}?mode=rw"  # bytes: any file name, UTF-8 or not
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        for pragma in (
            "PRAGMA trusted_schema = OFF",
            "PRAGMA cell_size_check = ON",
            "PRAGMA mmap_size = 0",
            "PRAGMA synchronous = EXTRA",
        ):
            db.execute(pragma)
    except sqlite3.Error:
        db.close()
        raise
    return db


def _expected_schema() -> list[tuple[object, ...]]:
    db = sqlite3.connect(":memory:")
    try:
        for statement in SCHEMA:
            db.execute(statement)
        return _schema(db)
    finally:
        db.close()


def _schema(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()


_EXPECTED: list[tuple[object, ...]] = []


def check_schema(db: sqlite3.Connection) -> None:
    """The file's schema is exactly :data:`SCHEMA`: no trigger, view, index or table of
    anyone else's (a trigger would run inside keyblob's own writes).

    Raises:
        ValueError: it is not.
    """
    if not _EXPECTED:
        _EXPECTED.extend(_expected_schema())
    if _schema(db) != _EXPECTED:
        raise ValueError("not keyblob's schema")


def create(path: Path, head: bytes, trees: Mapping[int, Mapping[str, bytes]]) -> None:
    """Write a complete database with ``head`` and the node rows ``trees`` into ``path``,
    an empty private file the caller made (a temp file it then renames).

    No journal while it is built: a writer killed meanwhile leaves a temp file that never
    gets the final name.

    Raises:
        sqlite3.Error, OSError: it could not be written.
    """
    db = connect(path)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            db.execute(statement)
        StateDatabase.write_head(db, head)
        for tree, rows in trees.items():
            StateDatabase.write_nodes(db, tree, rows)
        db.execute("COMMIT")
    finally:
        db.close()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
