"""The command line on the SQL stores: ``--store sqlite:…`` and ``postgresql://…`` (and
KEYBLOB_STORE) work like a folder, failures are one line with exit 1, no password shown,
and the command closes its connection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from keyblob.storage import sqlite as sqlite_module
from support import postgres_database, secret_of

PASS = "correct horse battery staple"


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    return postgres_database(request)


def test_keys_live_in_the_database(kb, sql_url: str, tmp_path: Path) -> None:
    assert kb("init")[0] == 0
    status, out, _ = kb("new", "payroll", "--store", sql_url)
    assert status == 0 and "payroll  generation 1" in out
    assert not secret_of(sql_url) or secret_of(sql_url) not in out
    assert kb("rotate", "payroll", "--store", sql_url)[0] == 0
    status, out, _ = kb("list", "--store", sql_url)
    assert status == 0 and "payroll    2" in out
    (tmp_path / "plain").write_bytes(b"salaries")
    assert (
        kb(
            "encrypt",
            "payroll",
            "-i",
            tmp_path / "plain",
            "-o",
            tmp_path / "enc",
            "--store",
            sql_url,
        )[0]
        == 0
    )
    assert kb("decrypt", "-i", tmp_path / "enc", "-o", tmp_path / "dec", "--store", sql_url)[0] == 0
    assert (tmp_path / "dec").read_bytes() == b"salaries"
    assert not (tmp_path / "home" / "blobs").exists()  # nothing went to the default store


def test_keyblob_store_variable(kb, sql_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kb("init")[0] == 0
    monkeypatch.setenv("KEYBLOB_STORE", sql_url)
    assert kb("new", "payroll")[0] == 0
    status, out, _ = kb("show", "payroll", "--json")
    assert status == 0 and '"generation": 1' in out


def test_missing_sqlite_file_is_said_before_the_passphrase(kb, tmp_path: Path) -> None:
    assert kb("init")[0] == 0
    missing = tmp_path / "typo.db"
    status, _, err = kb("list", "--store", f"sqlite:///{missing}")
    assert status == 4
    assert err.splitlines()[0] == f"keyblob: error: store database {missing} does not exist"
    assert not missing.exists()  # reading created nothing


def test_unreachable_postgresql_is_one_line(kb) -> None:
    assert kb("init")[0] == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://keyblob:s3cr3t-pw@127.0.0.1:{port}/keys"
    for argv in (["new", "payroll"], ["list"], ["show", "payroll"]):
        status, out, err = kb(*argv, "--store", url)
        assert status == 1, argv
        lines = err.splitlines()
        assert lines[0].startswith(
            f"keyblob: error: cannot connect to postgresql://keyblob@127.0.0.1:{port}/keys: "
        )
        assert "s3cr3t" not in out + err and "Traceback" not in err


def test_locked_sqlite_is_one_line(kb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 0.05)
    url = f"sqlite:///{tmp_path}/keys.db"
    assert kb("init")[0] == 0
    assert kb("new", "payroll", "--store", url)[0] == 0
    other = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        status, _, err = kb("rotate", "payroll", "--store", url)
    finally:
        other.close()
    assert status == 1
    assert f"cannot write to {tmp_path}/keys.db: database is locked" in err.splitlines()[0]


def test_commands_close_their_connection(
    kb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    original = sqlite_module.SqliteStore.close

    def spy(self: sqlite_module.SqliteStore) -> None:
        closed.append(self.location)
        original(self)

    monkeypatch.setattr(sqlite_module.SqliteStore, "close", spy)
    url = f"sqlite:///{tmp_path}/keys.db"
    assert kb("init")[0] == 0
    assert kb("new", "payroll", "--store", url)[0] == 0
    assert kb("show", "nothing", "--store", url)[0] == 4  # closed on failure too
    assert closed == [f"{tmp_path}/keys.db"] * 2


def test_upgrade_is_said_once(kb, sql_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyblob.storage import sql
    from keyblob.storage.sql import Upgrade

    assert kb("init")[0] == 0
    assert kb("new", "payroll", "--store", sql_url)[0] == 0
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 2)
    step = Upgrade(sqlite=("CREATE TABLE keyblob_v2 (x)",), postgresql=("SELECT 1",))
    monkeypatch.setattr(sql, "UPGRADES", {1: step})
    status, out, err = kb("list", "--store", sql_url)
    assert status == 0 and "payroll" in out
    upgraded = [line for line in err.splitlines() if "upgraded the store" in line]
    assert len(upgraded) == 1
    assert upgraded[0].startswith("keyblob: warning: upgraded the store ")
    assert upgraded[0].endswith(" from schema version 1 to 2")
    assert not secret_of(sql_url) or secret_of(sql_url) not in err
    status, _, err = kb("list", "--store", sql_url)
    assert status == 0 and "upgraded" not in err
