"""The SQLite store beyond the contract: its schema and version, upgrades, the file it
makes (and the reads that make none), WAL and durability, and rows edited by hand."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyblob.errors import NotFoundError, StorageError, StoreUpgradeWarning, UsageError
from keyblob.storage import open_store, sql
from keyblob.storage import sqlite as sqlite_module
from keyblob.storage.sql import Upgrade
from keyblob.storage.sqlite import SqliteStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of our own, as another program (or an attacker) would open the file."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    with raw(path) as db:
        return {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def version_rows(path: Path) -> list[tuple[str, str]]:
    with raw(path) as db:
        return list(db.execute("SELECT key, value FROM keyblob_meta"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- URLs, location, identity ----------------------------------------------------------


def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cases = {
        f"sqlite:///{tmp_path}/a.db": tmp_path / "a.db",  # four slashes: the same path
        f"sqlite://{tmp_path}/b.db": tmp_path / "b.db",
        f"sqlite:{tmp_path}/c.db": tmp_path / "c.db",
        f"sqlite://localhost{tmp_path}/d.db": tmp_path / "d.db",
        f"SQLITE://{tmp_path}/with%20space.db": tmp_path / "with space.db",
        "sqlite:relative.db": Path("relative.db"),
    }
    for url, expected in cases.items():
        store = open_store(url)
        assert isinstance(store, SqliteStore), url
        assert store.path == expected and store.location == str(expected), url
        assert store.identity == "sqlite:" + os.path.realpath(expected), url
        assert repr(store) == f"SqliteStore({store.identity!r})"
    relative = open_store("sqlite:relative.db")
    relative.put("k", 1, b"x")
    assert (tmp_path / "relative.db").is_file()
    assert relative.identity == f"sqlite:{os.path.realpath(tmp_path)}/relative.db"


def test_identity_resolves_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    via_link = SqliteStore(tmp_path / "link" / "keys.db")
    direct = SqliteStore(tmp_path / "real" / "keys.db")
    assert via_link.identity == direct.identity == f"sqlite:{tmp_path.resolve()}/real/keys.db"
    assert via_link.location != direct.location


# -- the file and the schema -----------------------------------------------------------


def test_reads_create_nothing(path: Path) -> None:
    store = SqliteStore(path)
    assert store.names() == []
    assert store.generations("k") == []
    assert store.latest("k") is None
    with pytest.raises(NotFoundError):
        store.get("k", 1)
    with pytest.raises(NotFoundError):
        store.set_aside("k", 1)
    assert not store.exists()
    assert list(path.parent.iterdir()) == []


def test_reads_of_an_empty_file_make_no_schema(path: Path) -> None:
    path.write_bytes(b"")  # an empty file is an empty SQLite database
    store = SqliteStore(path)
    assert store.names() == []
    with pytest.raises(NotFoundError):
        store.set_aside("k", 1)
    store.close()
    assert tables(path) == set()


def test_first_write_makes_the_schema(path: Path) -> None:
    store = SqliteStore(path)
    store.put("k", 1, b"blob")
    assert path.stat().st_mode & 0o777 == 0o600
    assert tables(path) == {"keyblob_meta", "keyblob_blobs", "keyblob_set_aside", "sqlite_sequence"}
    assert version_rows(path) == [("schema_version", "1")]
    with raw(path) as db:
        assert list(db.execute("SELECT name, generation, data FROM keyblob_blobs")) == [
            ("k", 1, b"blob")
        ]
        columns = [row[1] for row in db.execute("PRAGMA table_info(keyblob_blobs)")]
        assert columns == ["name", "generation", "data"]  # nothing parsed from the blob
        keys = [row[1] for row in db.execute("PRAGMA table_info(keyblob_blobs)") if row[5]]
        assert keys == ["name", "generation"]


def test_wal_and_full_synchronous(path: Path) -> None:
    store = SqliteStore(path)
    store.put("k", 1, b"x")
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # synchronous is per connection: the store's own, FULL (2) fsyncs every commit.
    assert store._db is not None
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)
    assert store._db.execute("PRAGMA busy_timeout").fetchone() == (10000,)


def test_check_constraints_hold_for_an_honest_writer(path: Path) -> None:
    SqliteStore(path).put("k", 1, b"x")
    with raw(path) as db:
        for name, generation, data in [
            ("Bad", 1, b"x"),
            ("../x", 1, b"x"),
            ("k", 0, b"x"),
            ("k", 2, "text"),
            ("k", 3, b"x" * 65537),
        ]:
            with pytest.raises(sqlite3.IntegrityError):
                db.execute("INSERT INTO keyblob_blobs VALUES (?, ?, ?)", (name, generation, data))


def test_newer_schema_is_refused_and_untouched(path: Path) -> None:
    SqliteStore(path).put("k", 1, b"x")
    with raw(path) as db:
        db.execute("UPDATE keyblob_meta SET value = '2' WHERE key = 'schema_version'")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    before = digest(path)
    store = SqliteStore(path)
    for operation in (
        lambda: store.put("k", 2, b"y"),
        lambda: store.get("k", 1),
        store.names,
        lambda: store.generations("k"),
        lambda: store.latest("k"),
        lambda: store.set_aside("k", 1),
    ):
        with pytest.raises(StorageError) as info:
            operation()
        assert not isinstance(info.value, NotFoundError)
        assert str(info.value) == (
            f"the store {path} has schema version 2, newer than this keyblob's (1): "
            "upgrade keyblob to use it; it was not changed"
        )
    store.close()
    assert digest(path) == before
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    with raw(path) as db:
        assert list(db.execute("SELECT name, generation FROM keyblob_blobs")) == [("k", 1)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "holds 0 schema_version rows"),
        (["1", "1"], "holds 2 schema_version rows"),
        (["01"], "not a version number"),
        (["one"], "not a version number"),
        (["0"], "not a version number"),
        (["-1"], "not a version number"),
    ],
)
def test_unreadable_version_is_refused(path: Path, rows: list[str], message: str) -> None:
    SqliteStore(path).put("k", 1, b"x")
    with raw(path) as db:
        db.execute("DROP TABLE keyblob_meta")
        db.execute("CREATE TABLE keyblob_meta (key TEXT, value TEXT)")
        for value in rows:
            db.execute("INSERT INTO keyblob_meta VALUES ('schema_version', ?)", (value,))
    store = SqliteStore(path)
    with pytest.raises(StorageError, match=message):
        store.names()
    with pytest.raises(StorageError, match=message):
        store.put("k", 2, b"y")


def test_tables_without_a_version_are_refused(path: Path) -> None:
    SqliteStore(path).put("k", 1, b"x")
    with raw(path) as db:
        db.execute("DROP TABLE keyblob_meta")
    with pytest.raises(StorageError, match="no keyblob_meta"):
        SqliteStore(path).names()
    with raw(path) as db:
        db.execute("CREATE TABLE keyblob_meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO keyblob_meta VALUES ('schema_version', '1')")
        db.execute("DROP TABLE keyblob_set_aside")
    with pytest.raises(StorageError, match="tables are missing"):
        SqliteStore(path).get("k", 1)


def test_other_tables_are_left_alone(path: Path) -> None:
    with raw(path) as db:
        db.execute("CREATE TABLE app_settings (k TEXT, v TEXT)")
        db.execute("INSERT INTO app_settings VALUES ('theme', 'dark')")
    store = SqliteStore(path)
    assert store.names() == []  # another application's file: no keyblob tables yet
    store.put("k", 1, b"x")
    with raw(path) as db:
        assert list(db.execute("SELECT * FROM app_settings")) == [("theme", "dark")]


# -- upgrades ----------------------------------------------------------------------------


def use_version_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this keyblob's schema a test-only version 2: one table more."""
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(
        sql,
        "UPGRADES",
        {
            1: Upgrade(
                sqlite=("CREATE TABLE keyblob_test_v2 (x INTEGER)",),
                postgresql=("CREATE TABLE keyblob_test_v2 (x integer)",),
            )
        },
    )


def test_upgrade_runs_the_steps_once_with_a_message(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(path).put("k", 1, b"x")
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(
        sql,
        "UPGRADES",
        {1: Upgrade(sqlite=("CREATE TABLE keyblob_test_v2 (x INTEGER)",), postgresql=())},
    )
    store = SqliteStore(path)
    with pytest.warns(StoreUpgradeWarning) as caught:
        assert store.get("k", 1) == b"x"  # a read upgrades too: data unchanged
    assert [str(w.message) for w in caught] == [
        f"upgraded the store {path} from schema version 1 to 2"
    ]
    assert "keyblob_test_v2" in tables(path)
    assert version_rows(path) == [("schema_version", "2")]
    store.put("k", 2, b"y")  # the version guard now expects 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second upgrade, no second message
        assert SqliteStore(path).generations("k") == [1, 2]


def test_new_database_goes_through_the_same_steps(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_version_2(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # creating is no upgrade: no message
        SqliteStore(path).put("k", 1, b"x")
    assert "keyblob_test_v2" in tables(path)
    assert version_rows(path) == [("schema_version", "2")]


def test_failed_upgrade_changes_nothing(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteStore(path).put("k", 1, b"x")
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 2)
    step = Upgrade(sqlite=("CREATE TABLE keyblob_half (x)", "NOT SQL AT ALL"), postgresql=())
    monkeypatch.setattr(sql, "UPGRADES", {1: step})
    with pytest.raises(StorageError) as info:
        SqliteStore(path).names()
    assert str(info.value).startswith(
        f"cannot upgrade the store {path} from schema version 1 to 2: "
    )
    assert str(info.value).endswith("; it was not changed")
    assert "keyblob_half" not in tables(path)  # one transaction: the first step is undone
    assert version_rows(path) == [("schema_version", "1")]


def test_missing_step_is_refused(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteStore(path).put("k", 1, b"x")
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(sql, "UPGRADES", {1: Upgrade(sqlite=(), postgresql=())})
    with pytest.raises(StorageError, match="no upgrade from schema version 2 to 3"):
        SqliteStore(path).names()
    assert version_rows(path) == [("schema_version", "1")]


def test_a_writer_opened_before_an_upgrade_cannot_write(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = SqliteStore(path)
    old.put("k", 1, b"x")  # this connection saw version 1
    with raw(path) as db:  # a newer keyblob upgrades the file meanwhile
        db.execute("UPDATE keyblob_meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="newer than this keyblob's"):
        old.put("k", 2, b"y")
    with pytest.raises(StorageError, match="newer than this keyblob's"):
        old.set_aside("k", 1)
    with raw(path) as db:
        assert list(db.execute("SELECT generation FROM keyblob_blobs")) == [(1,)]


# -- hostile rows --------------------------------------------------------------------------


def edit(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with raw(path) as db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        for statement, params in statements:
            db.execute(statement, params)


def test_rows_of_the_wrong_type(path: Path) -> None:
    store = SqliteStore(path)
    store.put("k", 1, b"one")
    insert = "INSERT INTO keyblob_blobs VALUES (?, ?, ?)"
    edit(
        path,
        (insert, ("k", 2, "text, not bytes")),
        (insert, ("k", 3, 12345)),
        (insert, ("k", "4x", b"a generation that is text")),
        (insert, ("k", 2.5, b"a real generation")),
        (insert, ("k", -1, b"a negative generation")),
        (insert, (b"blobname", 1, b"a name that is a blob")),
        (insert, ("Not-A-Name", 1, b"invalid name")),
        (insert, ("../x", 1, b"invalid name")),
    )
    assert store.names() == ["k"]
    assert store.generations("k") == [1, 2, 3]
    assert store.latest("k") == 3
    for generation in (2, 3):
        with pytest.raises(StorageError, match="not a byte string") as info:
            store.get("k", generation)
        assert not isinstance(info.value, NotFoundError)
    assert store.get("k", 1) == b"one"


def test_several_rows_for_one_slot(path: Path) -> None:
    """A database whose primary key was dropped: which row is meant cannot be known."""
    store = SqliteStore(path)
    store.put("k", 1, b"one")
    store.close()
    edit(
        path,
        ("ALTER TABLE keyblob_blobs RENAME TO old", ()),
        ("CREATE TABLE keyblob_blobs (name TEXT, generation INTEGER, data BLOB)", ()),
        ("INSERT INTO keyblob_blobs SELECT * FROM old", ()),
        ("INSERT INTO keyblob_blobs VALUES ('k', 1, X'00')", ()),
    )
    store = SqliteStore(path)
    with pytest.raises(StorageError, match="several rows"):
        store.get("k", 1)
    assert store.generations("k") == [1]  # counted once


def test_not_a_database(tmp_path: Path, path: Path) -> None:
    path.write_bytes(b"this is no SQLite file" * 10)
    store = SqliteStore(path)
    for operation in (store.names, lambda: store.put("k", 1, b"x")):
        with pytest.raises(StorageError) as info:
            operation()
        assert str(info.value) in (
            f"cannot read {path}: file is not a database",
            f"cannot write to {path}: file is not a database",
        )
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(StorageError, match="not a regular file"):
        SqliteStore(folder).put("k", 1, b"x")
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="not a regular file"):  # never opened: no hang
        SqliteStore(fifo).names()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot create .*: No such file or directory"):
        SqliteStore(tmp_path / "nowhere" / "keys.db").put("k", 1, b"x")


def test_locked_database(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 0.05)
    store = SqliteStore(path)
    store.put("k", 1, b"x")
    with raw(path) as other:
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        waiting = SqliteStore(path)
        with pytest.raises(StorageError) as info:
            waiting.put("k", 2, b"y")
        assert str(info.value) == f"cannot write to {path}: database is locked"
        assert waiting.get("k", 1) == b"x"  # WAL: readers are not blocked
        other.execute("ROLLBACK")
    waiting.put("k", 2, b"y")  # the same store works once the lock is gone
    assert store.generations("k") == [1, 2]


def test_set_aside_keeps_the_bytes_as_evidence(path: Path) -> None:
    store = SqliteStore(path)
    store.put("k", 2, b"first")
    first = store.set_aside("k", 2)
    store.put("k", 2, b"second")
    second = store.set_aside("k", 2)
    assert first == f"{path}, table keyblob_set_aside, id 1"
    assert second == f"{path}, table keyblob_set_aside, id 2"
    with raw(path) as db:
        rows = list(db.execute("SELECT id, name, generation, data FROM keyblob_set_aside"))
        assert rows == [(1, "k", 2, b"first"), (2, "k", 2, b"second")]
        assert list(db.execute("SELECT count(*) FROM keyblob_blobs")) == [(0,)]


def test_oversized_row_is_set_aside_whole(path: Path) -> None:
    store = SqliteStore(path)
    store.put("k", 1, b"x")
    edit(path, ("UPDATE keyblob_blobs SET data = ?", (b"\xaa" * 70000,)))
    store.set_aside("k", 1)
    with raw(path) as db:
        assert list(db.execute("SELECT length(data) FROM keyblob_set_aside")) == [(70000,)]


def test_context_manager_and_usage_errors_first(path: Path) -> None:
    with SqliteStore(path) as store:
        store.put("k", 1, b"x")
    with pytest.raises(StorageError, match="is closed"):
        store.names()
    unused = SqliteStore(path / "below-a-file")  # arguments are refused before any I/O
    with pytest.raises(UsageError):
        unused.put("K", 1, b"x")
    with pytest.raises(UsageError):
        unused.get("k", 0)
    with pytest.raises(UsageError):
        unused.put("k", 1, "text")  # type: ignore[arg-type]


def test_a_forked_child_gets_its_own_connection(path: Path) -> None:
    store = SqliteStore(path)
    store.put("k", 1, b"x")
    pid = os.fork()
    if pid == 0:  # child: write through the same object, then leave without cleanup
        code = 1
        try:
            store.put("k", 2, b"from the child")
            code = 0 if store.get("k", 1) == b"x" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("k", 2) == b"from the child"
    store.put("k", 3, b"parent still works")
    assert store.generations("k") == [1, 2, 3]


# -- the specification ---------------------------------------------------------------------

FORMAT_MD = Path(__file__).resolve().parents[3] / "docs" / "FORMAT.md"


def ddl_block(engine: str) -> str:
    text = FORMAT_MD.read_text(encoding="utf-8")
    heading = f"#### Schema version 1, {engine}\n\n```sql\n"
    start = text.index(heading) + len(heading)
    return text[start : text.index("```", start)]


@pytest.mark.parametrize(("engine", "title"), [("sqlite", "SQLite"), ("postgresql", "PostgreSQL")])
def test_format_md_gives_the_exact_ddl(engine: str, title: str) -> None:
    assert ddl_block(title) == "".join(f"{s};\n" for s in sql._CREATE[engine])


def test_a_database_made_from_format_md_is_read(path: Path) -> None:
    """Another implementation following FORMAT.md 5.5 alone makes a store keyblob reads."""
    with raw(path) as db:
        db.executescript(ddl_block("SQLite"))
        db.execute("INSERT INTO keyblob_blobs VALUES ('k', 7, X'00FF')")
    store = SqliteStore(path)
    assert store.generations("k") == [7]
    assert store.get("k", 7) == b"\x00\xff"
    store.put("k", 8, b"more")
