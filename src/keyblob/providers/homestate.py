"""A container's folder in the home: the safety checks of its files, and its authenticated
state (FORMAT.md 5.2), whichever provider holds its keys.

Layout of the state (folders 0700, files 0600)::

    <home>/containers/<name>/state.db     trusted and removed signers, high-water and
                                          revision marks, retirements, recovery
                                          recipients, earlier signature keys: a MAC'd head
                                          over hash trees (statedb.py); a version 1
                                          state.json is read, then migrated
    <home>/containers/<name>/lock         serialises state updates (POSIX flock)

The MAC is the provider's: HMAC-SHA256 under a key derived from the passphrase (software.py),
or under a non-extractable HMAC key inside a token (pkcs11.py).  This module only calls it.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import secrets
import sqlite3
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from keyblob.atomic import fsync_dir, read_bounded
from keyblob.errors import FormatError, ProviderError, UsageError, VerificationError
from keyblob.keys import MAX_GENERATION, Suite
from keyblob.providers import statedb
from keyblob.trust import (
    State,
    canonical,
    canonical_json_value,
    check_store_identity,
    json_int,
    lower_hex,
)

STATE_FORMAT = "keyblob-state/v1"  # state.json (FORMAT.md 5.2.1): read, then migrated
HEAD_FORMAT = "keyblob-state/v2"  # the head of state.db (FORMAT.md 5.2)
STATE_DB = "state.db"
# The head of state.db and a version 1 state.json: a hostile document costs up to ~25 times
# its size to parse before its MAC can be checked (FORMAT.md 5.2: the MAC is over the parsed
# document), so at most ~100 MiB.  The head holds signers and store views, not the marks.
MAX_STATE_SIZE = 4 * 1024 * 1024

STATE_EDITED = "the home state of container {name!r} was modified outside keyblob"
STATE_OVERSIZE = (
    "the home state of container {name!r} is over the {bound}-byte bound keyblob writes: "
    "this keyblob did not write it"
)
STATE_OVERSIZE_HINT = (
    "a keyblob before the 4 MiB bound wrote states up to 16 MiB: read this container with "
    "that version, or make a new container; otherwise restore state.json from a backup",
)
STATE_MISSING = "the home state of container {name!r} is missing"
BUCKET_FULL = (
    "container {name!r}: {count} names whose SHA-256 starts like {example!r}'s already have "
    "{what}, the most one bucket of the state holds (FORMAT.md 5.2.2); nothing was changed"
)


def check_private_folder(path: Path, what: str) -> None:
    """Refuse a folder or file that others can read or write, or that someone else owns.

    Raises:
        ProviderError: the permissions are unsafe; the message says how to fix them.
    """
    if os.name == "nt":  # POSIX modes mean nothing there; the user profile ACLs apply
        return
    try:
        st = path.stat()
    except OSError as e:
        raise ProviderError(f"cannot read {what} {path}: {e.strerror}") from e
    _check_private(st, path, what)


# The home's files are opened without following a symlink (a planted one could lead
# anywhere) and without blocking (a FIFO planted there would wait for a writer forever).
HOME_FILE_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def check_home_file(st: os.stat_result, path: Path, what: str) -> None:
    """The opened ``path`` is a regular file, this user's and private (FORMAT.md 5)."""
    if not stat.S_ISREG(st.st_mode):
        raise ProviderError(f"refusing {what} {path}: it is not a regular file")
    _check_private(st, path, what)


def _check_private(st: os.stat_result, path: Path, what: str) -> None:
    if os.name == "nt":
        return
    if st.st_uid != os.getuid():
        raise ProviderError(f"{what} {path} is owned by another user (uid {st.st_uid})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        wanted = "700" if stat.S_ISDIR(st.st_mode) else "600"
        raise ProviderError(
            f"{what} {path} can be read or written by others (mode {mode:o}): "
            f"run chmod {wanted} {path}"
        )


class ContainerState:
    """The authenticated state of container ``name`` in ``folder``: ``mac`` computes the
    HMAC-SHA256 of a document under the container's state key (FORMAT.md 5.2)."""

    def __init__(
        self, folder: Path, name: str, suite: Suite, mac: Callable[[bytes], bytes]
    ) -> None:
        self._folder = folder
        self._name = name
        self._suite = suite
        self._mac = mac
        self._state_path = folder / "state.json"  # version 1: read, then migrated
        self._state_cache: tuple[bytes, State] | None = None
        self._db_path = folder / STATE_DB
        self._db = statedb.StateDatabase(
            self._db_path,
            edited=lambda: VerificationError(STATE_EDITED.format(name=self._name)),
            failed=lambda why: ProviderError(f"cannot use {self._db_path}: {why}"),
        )
        self._head_cache: tuple[bytes, _Head] | None = None

    def __repr__(self) -> str:
        return f"<ContainerState {self._name!r}>"

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        """Close the state database's connection (it opens again on the next use)."""
        self._db.close()

    def mac(self, data: bytes) -> bytes:
        """The MAC of ``data`` under the container's state key (the agent answers state
        MAC requests with it; the key itself never leaves the provider)."""
        return self._mac(data)

    def _head_bytes(self, state: State, head: _Head) -> bytes:
        """The head document (FORMAT.md 5.2): canonical JSON with its MAC, and a final LF.

        Raises:
            ProviderError: it would be over the bound every reader applies.
        """
        views = head.views
        doc: dict[str, Any] = {
            "container": self._name,
            "format": HEAD_FORMAT,
            **state.to_json(version=2),
            "marks": head.marks.to_json(),
            "views": [dict(store=store, **views[store].to_json()) for store in sorted(views)],
        }
        if head.revisions.count:  # absent when empty (5.2.8): older heads read unchanged
            doc["revisions"] = head.revisions.to_json()
        doc["mac"] = self._mac(canonical(doc)).hex()
        data = canonical(doc) + b"\n"
        if len(data) > MAX_STATE_SIZE:
            # A reader refuses such a head (FORMAT.md 5.2): writing it would lock the
            # container out for good.  The old state stays as it was.
            signers = len(state.trusted) + len(state.capi_signers)
            raise ProviderError(
                f"container {self._name!r}: the change would make the head of its home state "
                f"{len(data)} bytes ({signers} signers, {len(views)} stores), over the "
                f"{MAX_STATE_SIZE}-byte bound; nothing was changed"
            )
        return data

    def _plan(
        self,
        db: sqlite3.Connection | None,
        old: _Head | None,
        new: State,
        extra_marks: dict[str, int],
    ) -> tuple[bytes, dict[int, dict[str, bytes]], _Head]:
        """The head and node rows that record ``new`` (its signers, label, retirements,
        recovery recipients and earlier keys, and its marks, views and revision marks raised,
        never lowered) over ``old`` (None: an empty state).

        Raises:
            ProviderError: a bucket or the head would be over its bound.
            VerificationError: a node on a changed path was edited.
        """
        marks_tree = old.marks if old is not None else _Tree(statedb.MARKS_TREE, statedb.ZERO, 0)
        revisions_tree = old.revisions if old is not None else _EMPTY_REVISIONS
        views = dict(old.views) if old is not None else {}
        changes = dict(extra_marks)
        for name, generation in new.marks.items():
            changes[name] = max(changes.get(name, 0), generation)
        revisions = {
            statedb.revision_key(name, generation): revision
            for (name, generation), revision in new.revisions.items()
        }
        rows: dict[int, dict[str, bytes]] = {}
        what = "high-water marks"
        try:
            for store, view in sorted(new.views.items()):
                check_store_identity(store)
                tree = views.get(store) or _Tree(
                    1 + max((t.tree for t in views.values()), default=0), statedb.ZERO, 0
                )
                views[store] = rows_for(self._db, db, tree, view, rows)
            marks_tree = rows_for(self._db, db, marks_tree, changes, rows)
            what = "revision marks"
            revisions_tree = rows_for(self._db, db, revisions_tree, revisions, rows)
        except statedb.BucketFull as e:
            raise ProviderError(
                BUCKET_FULL.format(
                    name=self._name, count=statedb.MAX_BUCKET, example=str(e), what=what
                )
            ) from None
        except ValueError:
            raise UsageError("a store identity in the state is not valid") from None
        # The policy: everything but what the trees hold.
        policy = replace(new, marks={}, views={}, revisions={}, recorded=None)
        head = _Head(policy, marks_tree, views, revisions_tree)
        data = self._head_bytes(new, head)
        return (
            data,
            rows,
            replace(head, policy=replace(policy, recorded=_Recorded(self, head, data))),
        )

    def create(self, state: State, extra_marks: dict[str, int] | None = None) -> None:
        """Write a new state.db holding ``state`` (and ``extra_marks``) in one step: built
        under a temp name, then renamed over any old one (FORMAT.md 5.2.4)."""
        head, rows, _ = self._plan(None, None, state, extra_marks or {})
        temp = self._folder / f".{STATE_DB}.{secrets.token_hex(8)}.tmp"
        try:
            # Held while it has no final name: the temp file cleaner of other writers
            # (FORMAT.md 5.3) leaves a locked file alone.
            with _flocked(temp):
                statedb.create(temp, head, rows)
                os.replace(temp, self._db_path)
            fsync_dir(self._folder)
        except (OSError, sqlite3.Error) as e:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise ProviderError(f"cannot write {self._db_path}: {e}") from e
        self._db.close()  # a connection to a file replaced would read the old one
        self._head_cache = None

    def _read_head(self, db: sqlite3.Connection) -> _Head:
        """The head of state.db, read in the transaction ``db`` and verified.

        Raises:
            as :meth:`_head`.
        """
        try:
            data = statedb.StateDatabase.read_head(db, MAX_STATE_SIZE)
        except ValueError:
            raise VerificationError(STATE_EDITED.format(name=self._name)) from None
        return self._head(data)

    def _head(self, data: bytes | None) -> _Head:
        """The head whose bytes are ``data`` (None: over the bound), verified (FORMAT.md
        5.2.5, steps 4 to 7); parsed only when they differ from those last verified.

        Raises:
            VerificationError: edited, or over the bound.
            FormatError: a valid MAC over a document that breaks the field rules.
        """
        if data is None:
            raise VerificationError(STATE_OVERSIZE.format(name=self._name, bound=MAX_STATE_SIZE))
        cached = self._head_cache
        if cached is not None and hmac.compare_digest(cached[0], data):
            return cached[1]
        doc = self._verified_doc(data, HEAD_FORMAT)
        try:
            marks = _Tree.from_json(doc.pop("marks"), statedb.MARKS_TREE)
            views = _views_from_json(doc.pop("views"))
            revisions = _EMPTY_REVISIONS
            if "revisions" in doc:  # present only when not empty (5.2.8)
                revisions = _Tree.from_json(doc.pop("revisions"), statedb.REVISIONS_TREE)
                if revisions.count == 0:
                    raise ValueError("an empty revisions tree is written as no member")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError("home state: not a valid state document") from None
        policy = State.from_json(doc, suite=self._suite, version=2)
        head = _Head(policy, marks, views, revisions)
        head = replace(head, policy=replace(policy, recorded=_Recorded(self, head, data)))
        self._head_cache = (data, head)
        return head

    def _verified_doc(self, data: bytes, format_: str) -> dict[str, Any]:
        """The MAC'd document ``data`` (a v2 head or a v1 state.json) without its ``mac``:
        parsed strictly, its MAC checked, of format ``format_`` and this container
        (FORMAT.md 5.2.1, 5.2.5); any failure is the one 'edited' VerificationError."""
        edited = VerificationError(STATE_EDITED.format(name=self._name))
        try:
            doc: dict[str, Any] = canonical_json_value(data)  # true, null, 1.0: refused
            mac = lower_hex(doc.pop("mac"), 32)  # before the MAC
        except (ValueError, KeyError, TypeError, AttributeError):
            raise edited from None
        if not hmac.compare_digest(self._mac(canonical(doc)), mac):
            raise edited
        if doc.get("format") != format_ or doc.get("container") != self._name:
            raise edited
        return doc

    def _read_state_file(self) -> bytes:
        oversize = VerificationError(
            STATE_OVERSIZE.format(name=self._name, bound=MAX_STATE_SIZE), hints=STATE_OVERSIZE_HINT
        )

        def check(st: os.stat_result) -> None:
            check_home_file(st, self._state_path, "state file")
            if st.st_size > MAX_STATE_SIZE:  # refused before reading any of it
                raise oversize

        try:
            return read_bounded(
                self._state_path, MAX_STATE_SIZE, flags=HOME_FILE_FLAGS, check=check
            )
        except FileNotFoundError:
            raise VerificationError(STATE_MISSING.format(name=self._name)) from None
        except ValueError:  # grew over the limit while it was read
            raise oversize from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise ProviderError(
                    f"refusing {self._state_path}: it is a symlink; the state must be a file "
                    "of the container's own folder (restore it from a backup of the home)"
                ) from None
            raise ProviderError(f"cannot read {self._state_path}: {e.strerror}") from e

    def _state_v1(self) -> State:
        """A version 1 state.json (FORMAT.md 5.2.1), its marks in memory."""
        data = self._read_state_file()
        cached = self._state_cache
        # The file is re-read every time (another process may have changed it); parsing and
        # the MAC check are skipped only when its bytes are exactly those last verified.
        if cached is not None and hmac.compare_digest(cached[0], data):
            return cached[1]
        state = State.from_json(self._verified_doc(data, STATE_FORMAT), suite=self._suite)
        self._state_cache = (data, state)
        return state

    def _has_db(self) -> bool:
        """Whether state.db exists (then it is the state, whatever state.json says:
        FORMAT.md 5.2.4); it must be a private regular file of this user.

        Raises:
            ProviderError: it is a symlink, not a regular file, or not private.
        """
        try:
            st = os.lstat(self._db_path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise ProviderError(f"cannot read {self._db_path}: {e.strerror}") from e
        if stat.S_ISLNK(st.st_mode):
            raise ProviderError(
                f"refusing {self._db_path}: it is a symlink; the state must be a file of the "
                "container's own folder (restore it from a backup of the home)"
            )
        check_home_file(st, self._db_path, "state file")
        return True

    def state(self) -> State:
        """The authenticated state as it is now: signers and label read and verified, marks
        looked up name by name when asked for (each lookup verified again).

        Raises:
            VerificationError: the state was edited or is missing.
            FormatError: a state with a valid MAC that breaks the field rules.
            ProviderError: the state file is unsafe or could not be read.
        """
        if not self._has_db():
            return self._state_v1()
        return self._head(self._db.read(MAX_STATE_SIZE)[0]).policy

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            import fcntl  # noqa: PLC0415  (POSIX only)
        except ImportError:  # pragma: no cover - Windows: single-writer assumption
            yield
            return
        path = self._folder / "lock"
        # Like the other home files: a symlink planted there must not make every update
        # create (or lock) its target, nor a FIFO block the open; then the file opened must
        # be this user's, private, and a regular file (FORMAT.md 5).
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise ProviderError(
                    f"refusing {path}: it is a symlink; remove it (keyblob makes a new lock file)"
                ) from None
            raise ProviderError(f"cannot open {path}: {e.strerror}") from e
        try:
            info = os.fstat(fd)
            check_home_file(info, path, "lock file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update_state(self, change: Callable[[State], State]) -> State:
        """Apply ``change`` under the lock; record the result in one SQLite transaction
        (head and nodes together), or, for a version 1 home, migrate it (FORMAT.md 5.2.4).

        Raises:
            as :meth:`state`, and what ``change`` raises (nothing is then written).
        """
        with self._locked():
            old = self.state()
            new = change(old)
            if new == old:
                return new
            self._write_change(old, new)
            cached = self._head_cache
            # Still under the lock: what was just committed is the state (no read again).
            return cached[1].policy if cached is not None else self.state()

    def _write_change(self, old: State, new: State) -> None:
        """Record ``new`` over ``old`` (read under the lock, which the caller holds)."""
        if old.recorded is None:  # version 1: its marks move into the new state.db
            self.create(new, dict(old.marks))
            with contextlib.suppress(FileNotFoundError):
                self._state_path.unlink()
            fsync_dir(self._folder)
            self._state_cache = None
            self._head_cache = None
            return
        with self._db.transaction(write=True) as db:
            head, rows, parsed = self._plan(db, self._read_head(db), new, {})
            for tree, nodes in rows.items():
                statedb.StateDatabase.write_nodes(db, tree, nodes)
            statedb.StateDatabase.write_head(db, head)
        # What was just committed, as the next read would parse it: no parse, no MAC again.
        self._head_cache = (head, parsed)


@dataclass(frozen=True)
class _Tree:
    """One tree of state.db as its head names it (FORMAT.md 5.2)."""

    tree: int
    root: bytes
    count: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "root": self.root.hex()}
        if self.tree not in _FIXED_TREES:
            out["tree"] = self.tree
        return out

    @classmethod
    def from_json(cls, doc: Any, tree: int) -> _Tree:
        members = {"count", "root"} | ({"tree"} if tree not in _FIXED_TREES else set())
        if not isinstance(doc, dict) or doc.keys() != members:
            raise ValueError("tree members")
        root = lower_hex(doc["root"], statedb.DIGEST_SIZE)
        count = json_int(doc["count"], 0, MAX_GENERATION)
        if (root == statedb.ZERO) != (count == 0):
            raise ValueError("an empty tree has root zero, and only it")
        return cls(tree, root, count)


def _views_from_json(doc: Any) -> dict[str, _Tree]:
    if not isinstance(doc, list):
        raise TypeError("views")
    out: dict[str, _Tree] = {}
    for entry in doc:
        if not isinstance(entry, dict) or "store" not in entry:
            raise ValueError("view members")
        store = check_store_identity(entry["store"])
        tree = _Tree.from_json(
            {k: v for k, v in entry.items() if k != "store"},
            json_int(entry.get("tree"), 1, 2**31 - 1),
        )
        if tree.count == 0 or (out and store <= max(out)):
            raise ValueError("an empty view, or views not sorted by store")
        out[store] = tree
    if len({t.tree for t in out.values()}) != len(out):
        raise ValueError("two views share a tree")
    return out


#: Trees whose number is fixed, so the head names them without a ``tree`` member.
_FIXED_TREES = (statedb.MARKS_TREE, statedb.REVISIONS_TREE)
_EMPTY_REVISIONS = _Tree(statedb.REVISIONS_TREE, statedb.ZERO, 0)


@dataclass(frozen=True)
class _Head:
    policy: State  # all but the trees' contents; recorded: this head's _Recorded
    marks: _Tree
    views: dict[str, _Tree]
    revisions: _Tree = _EMPTY_REVISIONS


def rows_for(
    database: statedb.StateDatabase,
    db: sqlite3.Connection | None,
    tree: _Tree,
    changes: Mapping[str, int],
    rows: dict[int, dict[str, bytes]],
) -> _Tree:
    """``tree`` with ``changes`` raised in it; its node rows added to ``rows``."""
    root, added, nodes = database.plan(db, tree.tree, tree.root, changes)
    if nodes:
        rows.setdefault(tree.tree, {}).update(nodes)
    return _Tree(tree.tree, root, tree.count + added)


class _Recorded:
    """The marks and views of one head of a container (trust.MarkReader), as a state read
    at one moment has them.  A lookup walks the 5 nodes of a name's path from that head's
    root: through the nodes verified before, then through the rows read for it; if the file
    changed meanwhile (another writer committed), through the head and path read again in
    one statement, which must verify (a mark only grows, so the newer one is as good)."""

    def __init__(self, container: ContainerState, head: _Head, data: bytes) -> None:
        self._c = container
        self._head = head
        self._data = data

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Recorded)
            and other._c is self._c
            and hmac.compare_digest(other._data, self._data)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def count(self) -> int:
        return self._head.marks.count

    def _value(self, pick: Callable[[_Head], _Tree | None], name: str) -> int:
        tree = pick(self._head)
        if tree is None:  # no such view in this head: a newer one may have it
            tree = pick(self._c._head(self._c._db.read(MAX_STATE_SIZE)[0]))
            if tree is None:
                return 0
        db = self._c._db
        value = db.lookup(tree.root, name, tree=tree.tree)
        if value is None:
            value = db.lookup(tree.root, name, db.read_path(tree.tree, name), tree=tree.tree)
        if value is None:  # changed meanwhile, or edited: read head and path at once
            data, rows = db.read(MAX_STATE_SIZE, [(tree.tree, name)])
            now = pick(self._c._head(data))
            if now is None or now.tree != tree.tree:
                raise VerificationError(STATE_EDITED.format(name=self._c.name))
            value = db.lookup(now.root, name, rows.get(now.tree, {}), tree=now.tree)
            if value is None:
                raise VerificationError(STATE_EDITED.format(name=self._c.name))
        return value

    def generation(self, name: str) -> int:
        return self._value(lambda head: head.marks, name)

    def held(self, store: str, name: str) -> int:
        return self._value(lambda head: head.views.get(store), name)

    def view(self, store: str) -> dict[str, int]:
        with self._c._db.transaction() as db:
            view = self._c._read_head(db).views.get(store)
            return {} if view is None else self._c._db.walk(db, view.tree, view.root)

    def marks(self) -> dict[str, int]:
        with self._c._db.transaction() as db:
            head = self._c._read_head(db)
            return self._c._db.walk(db, head.marks.tree, head.marks.root)

    def revision(self, name: str, generation: int) -> int:
        return self._value(lambda head: head.revisions, statedb.revision_key(name, generation))

    def revisions(self) -> dict[tuple[str, int], int]:
        with self._c._db.transaction() as db:
            tree = self._c._read_head(db).revisions
            entries = self._c._db.walk(db, tree.tree, tree.root)
        return {statedb.parse_revision_key(key): value for key, value in entries.items()}


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """``path``, created empty and exclusively, held under flock for the block."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            import fcntl  # noqa: PLC0415  (POSIX only)

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: no cleaner to keep away
            pass
        yield
    finally:
        os.close(fd)
