"""The PostgreSQL store beyond the contract: its schema and version, upgrades, the
password kept out of every message, the missing extra, libpq's environment and options.

Each test gets a fresh database on the server KEYBLOB_TEST_PG names (tests/support.py);
without one it skips, and fails under KEYBLOB_REQUIRE_INTEROP=1.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from keyblob.errors import NotFoundError, StorageError, StoreUpgradeWarning, UsageError
from keyblob.storage import open_store, sql
from keyblob.storage.postgres import PostgresStore, _scrub
from keyblob.storage.sql import Upgrade
from support import postgres_database

_PG_ENV = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPASSFILE", "PGSSLMODE")


@pytest.fixture(autouse=True)
def _no_pg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own PG* settings unless it sets them."""
    for name in _PG_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def url(request: pytest.FixtureRequest) -> str:
    return postgres_database(request)


def parts(url: str) -> Any:
    return urlsplit(url)


def with_password(url: str, password: str | None) -> str:
    """``url`` with its password replaced (None: removed)."""
    p = urlsplit(url)
    user = p.username or ""
    auth = f"{user}:{password}@" if password is not None else f"{user}@"
    return urlunsplit(p._replace(netloc=f"{auth}{p.hostname}:{p.port}"))


def admin(url: str) -> Any:
    return psycopg.connect(url, autocommit=True)


def tables(url: str) -> set[str]:
    with admin(url) as db:
        rows = db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {name for (name,) in rows}


def version_rows(url: str) -> list[tuple[str, str]]:
    with admin(url) as db:
        return list(db.execute("SELECT key, value FROM keyblob_meta"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- location, identity and the password ------------------------------------------------


def test_identity_and_location_hold_no_password(url: str) -> None:
    p = parts(url)
    assert p.password  # the test server's URL carries one
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    expected = f"postgresql://{p.username}@{p.hostname}:{p.port}{p.path}"
    assert store.identity == expected
    assert store.location == expected
    assert repr(store) == f"PostgresStore({expected!r})"
    store.put("k", 1, b"x")
    for text in (store.identity, store.location, repr(store), store.set_aside("k", 1)):
        assert p.password not in text
    other = open_store(url.replace("postgresql://", "postgres://", 1) + "?sslmode=disable")
    assert other.identity == expected  # same database: same identity, options left out


def test_identity_fills_in_libpq_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.example")
    monkeypatch.setenv("PGPORT", "6543")
    monkeypatch.setenv("PGUSER", "alice")
    assert PostgresStore("postgresql:///keys").identity == "postgresql://alice@db.example:6543/keys"
    # the database defaults to the user's name, as libpq does
    assert PostgresStore("postgresql://").identity == "postgresql://alice@db.example:6543/alice"
    # the URL wins over the environment
    assert PostgresStore("postgresql://bob:pw@h2:1/other").identity == "postgresql://bob@h2:1/other"
    assert PostgresStore("postgresql://u@[::1]:5/d").identity == "postgresql://u@[::1]:5/d"
    socket_dir = PostgresStore("postgresql://u@%2Fvar%2Frun%2Fpostgresql/d")
    assert socket_dir.identity == "postgresql://u@%2Fvar%2Frun%2Fpostgresql:6543/d"


def test_password_never_in_connection_failures(url: str) -> None:
    secret = "s3cr3t-Pw-9f"
    p = parts(url)
    cases = [
        # nothing listens there
        f"postgresql://{p.username}:{secret}@127.0.0.1:{closed_port()}/db",
        # the server says no
        with_password(url, secret),
        # percent-encoded in the URL
        f"postgresql://{p.username}:{secret.replace('-', '%2D')}@127.0.0.1:{closed_port()}/db",
    ]
    for bad in cases:
        store = open_store(bad)
        for operation in (store.names, lambda s=store: s.put("k", 1, b"x")):
            with pytest.raises(StorageError) as info:
                operation()
            message = str(info.value)
            assert secret not in message and "s3cr3t" not in message, message
            assert "\n" not in message
            assert message.startswith(f"cannot connect to {store.location}: ")
            assert info.value.__cause__ is None  # psycopg's own exception is not chained
            assert info.value.__suppress_context__
    with pytest.raises(StorageError, match="password authentication failed"):
        open_store(with_password(url, secret)).names()


@pytest.mark.parametrize(
    "bad",
    [
        "postgresql://user:s3cr3t@[db/keys",
        "postgresql://user:s3cr3t@db/keys?bogus=1",
        "postgres://user:s3cr3t@db:notaport/keys",
    ],
)
def test_password_never_in_url_errors(bad: str) -> None:
    try:
        store = open_store(bad)
    except UsageError as e:
        assert "s3cr3t" not in str(e)
        assert str(e).startswith("invalid PostgreSQL URL: ")
        return
    with pytest.raises(StorageError) as info:  # libpq refuses it only when connecting
        store.names()
    assert "s3cr3t" not in str(info.value)


def test_scrub() -> None:
    url = "postgresql://u:hunter2@h/d"
    assert "hunter2" not in _scrub(f'bad URI: "{url}"\n', url)
    assert _scrub("a\n\tb  c\n", url) == "a b c"
    assert _scrub("connect postgres://x:y@z/w failed", url) == "connect postgres://x:***@z/w failed"
    assert _scrub("user=u password='p w' host=h", url) == "user=u password=*** host=h"
    assert _scrub("password=abc dbname=d", url) == "password=*** dbname=d"
    assert _scrub("the word hunter2", url, "hunter2") == "the word ***"


# -- the missing extra ---------------------------------------------------------------------


def test_missing_psycopg_is_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    monkeypatch.delitem(sys.modules, "keyblob.storage.postgres")
    with pytest.raises(UsageError) as info:
        open_store("postgresql://user:s3cr3t@db/keys")
    assert str(info.value) == (
        "the postgresql store needs psycopg: pip install 'keyblob[postgres]'"
    )


def test_missing_psycopg_in_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from keyblob.cli import main

    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "keyblob.storage.postgres")
    status = main(["--home", str(tmp_path), "list", "--store", "postgresql://u:s3cr3t@db/k"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines()[0] == (
        "keyblob: error: the postgresql store needs psycopg: pip install 'keyblob[postgres]'"
    )
    assert "s3cr3t" not in err and "Traceback" not in err


# -- libpq's environment and options -----------------------------------------------------


def test_pgpassword_is_honoured(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    password = parts(url).password
    bare = with_password(url, None)
    with pytest.raises(StorageError, match="password"):  # nothing gives one: refused
        open_store(bare).names()
    monkeypatch.setenv("PGPASSWORD", password)
    store = open_store(bare)
    store.put("k", 1, b"x")
    assert store.get("k", 1) == b"x"


def test_pg_environment_fills_the_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = parts(url)
    for name, value in {
        "PGHOST": p.hostname,
        "PGPORT": str(p.port),
        "PGUSER": p.username,
        "PGPASSWORD": p.password,
    }.items():
        monkeypatch.setenv(name, value)
    store = open_store(f"postgresql://{p.path}")
    store.put("k", 1, b"x")
    assert store.identity == f"postgresql://{p.username}@{p.hostname}:{p.port}{p.path}"
    assert open_store(url).get("k", 1) == b"x"  # the same database


def test_pgpass_file_is_honoured(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = parts(url)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{p.hostname}:{p.port}:*:{p.username}:{p.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))  # ~/.pgpass by another name
    store = open_store(with_password(url, None))
    store.put("k", 1, b"x")
    assert store.names() == ["k"]


def test_sslmode_passes_through(url: str) -> None:
    assert open_store(url + "?sslmode=disable").names() == []
    store = open_store(url + "?sslmode=require")
    try:
        store.names()
    except StorageError as e:  # a server without TLS: libpq applied the option
        assert "SSL" in str(e)
    else:  # a server with TLS: the connection uses it
        assert store._db is not None and store._db.pgconn.ssl_in_use


def test_connect_options(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(url)
    store.names()
    assert store._db is not None
    assert store._db.execute("SHOW application_name").fetchone() == ("keyblob",)
    named = open_store(url + "?application_name=payroll")
    named.names()
    assert named._db is not None
    assert named._db.execute("SHOW application_name").fetchone() == ("payroll",)


# -- the schema --------------------------------------------------------------------------


def test_reads_make_no_schema(url: str) -> None:
    store = open_store(url)
    assert store.names() == []
    assert store.generations("k") == []
    assert store.latest("k") is None
    with pytest.raises(NotFoundError):
        store.get("k", 1)
    with pytest.raises(NotFoundError):
        store.set_aside("k", 1)
    assert tables(url) == set()


def test_first_write_makes_the_schema(url: str) -> None:
    with admin(url) as db:  # another application's table in the same database
        db.execute("CREATE TABLE app_settings (k text, v text)")
    store = open_store(url)
    store.put("k", 1, b"blob")
    assert tables(url) == {"app_settings", "keyblob_meta", "keyblob_blobs", "keyblob_set_aside"}
    assert version_rows(url) == [("schema_version", "1")]
    with admin(url) as db:
        assert list(db.execute("SELECT name, generation, data FROM keyblob_blobs")) == [
            ("k", 1, b"blob")
        ]
        columns = db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'keyblob_blobs' ORDER BY ordinal_position"
        ).fetchall()
        assert columns == [("name", "text"), ("generation", "bigint"), ("data", "bytea")]
        key = db.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'keyblob_blobs'::regclass "
            "AND i.indisprimary ORDER BY a.attnum"
        ).fetchall()
        assert key == [("name",), ("generation",)]


def test_check_constraints_hold_for_an_honest_writer(url: str) -> None:
    open_store(url).put("k", 1, b"x")
    with admin(url) as db:
        for name, generation, data in [
            ("Bad", 1, b"x"),
            ("../x", 1, b"x"),
            ("a\n", 1, b"x"),
            ("k", 0, b"x"),
            ("k", 3, b"x" * 65537),
        ]:
            with pytest.raises(psycopg.errors.CheckViolation):
                db.execute(
                    "INSERT INTO keyblob_blobs VALUES (%s, %s, %s)", (name, generation, data)
                )


def test_concurrent_first_writers_make_one_schema(url: str) -> None:
    """Two stores racing to make the schema: the advisory lock lets one do it."""
    import threading

    stores = [open_store(url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            stores[i].put(f"k{i}", 1, b"x")
        except BaseException as e:  # collected and checked below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert open_store(url).names() == ["k0", "k1", "k2", "k3"]


def test_newer_schema_is_refused_and_untouched(url: str) -> None:
    open_store(url).put("k", 1, b"x")
    with admin(url) as db:
        db.execute("UPDATE keyblob_meta SET value = '2' WHERE key = 'schema_version'")
    store = open_store(url)
    operations: list[Callable[[], object]] = [
        lambda: store.put("k", 2, b"y"),
        lambda: store.get("k", 1),
        store.names,
        lambda: store.generations("k"),
        lambda: store.latest("k"),
        lambda: store.set_aside("k", 1),
    ]
    for operation in operations:
        with pytest.raises(StorageError) as info:
            operation()
        assert str(info.value) == (
            f"the store {store.location} has schema version 2, newer than this keyblob's "
            "(1): upgrade keyblob to use it; it was not changed"
        )
    assert version_rows(url) == [("schema_version", "2")]
    with admin(url) as db:
        assert list(db.execute("SELECT name, generation, data FROM keyblob_blobs")) == [
            ("k", 1, b"x")
        ]
        assert list(db.execute("SELECT count(*) FROM keyblob_set_aside")) == [(0,)]


def test_a_writer_opened_before_an_upgrade_cannot_write(url: str) -> None:
    old = open_store(url)
    old.put("k", 1, b"x")
    with admin(url) as db:
        db.execute("UPDATE keyblob_meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="newer than this keyblob's"):
        old.put("k", 2, b"y")
    with pytest.raises(StorageError, match="newer than this keyblob's"):
        old.set_aside("k", 1)
    with admin(url) as db:
        assert list(db.execute("SELECT generation FROM keyblob_blobs")) == [(1,)]


def use_version_2(monkeypatch: pytest.MonkeyPatch, *steps: str) -> None:
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 2)
    statements = steps or ("CREATE TABLE keyblob_test_v2 (x integer)",)
    monkeypatch.setattr(sql, "UPGRADES", {1: Upgrade(sqlite=(), postgresql=statements)})


def test_upgrade_with_a_message(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(url).put("k", 1, b"x")
    use_version_2(monkeypatch)
    store = open_store(url)
    with pytest.warns(StoreUpgradeWarning) as caught:
        assert store.get("k", 1) == b"x"
    assert [str(w.message) for w in caught] == [
        f"upgraded the store {store.location} from schema version 1 to 2"
    ]
    assert "keyblob_test_v2" in tables(url)
    assert version_rows(url) == [("schema_version", "2")]
    store.put("k", 2, b"y")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_store(url).generations("k") == [1, 2]


def test_new_database_goes_through_the_same_steps(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_version_2(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_store(url).put("k", 1, b"x")
    assert "keyblob_test_v2" in tables(url)
    assert version_rows(url) == [("schema_version", "2")]


def test_failed_upgrade_changes_nothing(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(url).put("k", 1, b"x")
    use_version_2(monkeypatch, "CREATE TABLE keyblob_half (x integer)", "NOT SQL AT ALL")
    store = open_store(url)
    with pytest.raises(StorageError) as info:
        store.names()
    message = str(info.value)
    assert message.startswith(
        f"cannot upgrade the store {store.location} from schema version 1 to 2: "
    )
    assert message.endswith("; it was not changed") and "\n" not in message
    assert "keyblob_half" not in tables(url)
    assert version_rows(url) == [("schema_version", "1")]


# -- hostile rows and connections ----------------------------------------------------------


def test_rows_edited_by_hand(url: str) -> None:
    store = open_store(url)
    store.put("k", 1, b"one")
    store.put("k", 2, b"two")
    with admin(url) as db:
        db.execute("ALTER TABLE keyblob_blobs DROP CONSTRAINT keyblob_blobs_generation_check")
        db.execute("ALTER TABLE keyblob_blobs DROP CONSTRAINT keyblob_blobs_name_check")
        db.execute("INSERT INTO keyblob_blobs VALUES ('k', -5, 'x'), ('k', 0, 'x')")
        db.execute("INSERT INTO keyblob_blobs VALUES ('Not-A-Name', 1, 'x'), ('../x', 1, 'x')")
    assert store.names() == ["k"]
    assert store.generations("k") == [1, 2]
    assert store.latest("k") == 2
    with admin(url) as db:  # the data column turned into text
        db.execute("ALTER TABLE keyblob_blobs ALTER COLUMN data TYPE text USING 'text'")
    with pytest.raises(StorageError, match="not a byte string") as info:
        store.get("k", 1)
    assert not isinstance(info.value, NotFoundError)


def test_several_rows_for_one_slot(url: str) -> None:
    store = open_store(url)
    store.put("k", 1, b"one")
    with admin(url) as db:
        db.execute("ALTER TABLE keyblob_blobs DROP CONSTRAINT keyblob_blobs_pkey")
        db.execute("INSERT INTO keyblob_blobs VALUES ('k', 1, '\\x00'::bytea)")
    with pytest.raises(StorageError, match="several rows"):
        store.get("k", 1)
    assert store.generations("k") == [1]


def test_set_aside_keeps_the_bytes_as_evidence(url: str) -> None:
    store = open_store(url)
    store.put("k", 2, b"first")
    first = store.set_aside("k", 2)
    store.put("k", 2, b"second")
    second = store.set_aside("k", 2)
    assert first == f"{store.location}, table keyblob_set_aside, id 1"
    assert second == f"{store.location}, table keyblob_set_aside, id 2"
    with admin(url) as db:
        rows = list(db.execute("SELECT id, name, generation, data FROM keyblob_set_aside"))
        assert rows == [(1, "k", 2, b"first"), (2, "k", 2, b"second")]


def test_a_lost_connection_is_one_error_then_reconnects(url: str) -> None:
    store = open_store(url)
    store.put("k", 1, b"x")
    assert store._db is not None
    pid = store._db.info.backend_pid
    with admin(url) as db:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StorageError) as info:
        store.get("k", 1)
    assert str(info.value).startswith(f"cannot read {store.location}: ")
    assert "\n" not in str(info.value)
    assert store.get("k", 1) == b"x"  # the next operation connects again


def test_close_ends_the_session(url: str) -> None:
    with open_store(url) as store:  # type: ignore[attr-defined]
        store.put("k", 1, b"x")
        pid = store._db.info.backend_pid
    with admin(url) as db:
        rows = db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        assert rows.fetchone() == (0,)
    with pytest.raises(StorageError, match="is closed"):
        store.names()


def test_arguments_are_checked_before_connecting() -> None:
    store = PostgresStore(f"postgresql://u:pw@127.0.0.1:{closed_port()}/d")
    with pytest.raises(UsageError):
        store.put("K", 1, b"x")
    with pytest.raises(UsageError):
        store.get("k", 0)
    with pytest.raises(UsageError):
        store.put("k", 1, b"x" * 65537)
    assert store._db is None


def test_a_forked_child_leaves_the_parent_session_alone(url: str) -> None:
    store = open_store(url)
    store.put("k", 1, b"x")
    assert isinstance(store, PostgresStore) and store._db is not None
    parent_session = store._db.info.backend_pid
    pid = os.fork()
    if pid == 0:  # child: the same object makes its own connection; no cleanup at exit
        code = 1
        try:
            store.put("k", 2, b"from the child")
            code = 0 if store.get("k", 1) == b"x" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._db.info.backend_pid == parent_session
    assert store.get("k", 2) == b"from the child"  # the parent's session still works
