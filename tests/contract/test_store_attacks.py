"""The store cannot make keyblob accept anything, whatever backend it is (issue 13).

The core attacks of the threat model (tests/unit/test_blobs.py, test_planted.py) run again
on every backend, with the stored entries edited behind the store's back the way an attacker
with access would: files in the folder, rows changed with ``sqlite3`` in the SQLite file and
with ``psycopg`` in the PostgreSQL database (table ``keyblob_blobs``, FORMAT.md 5.5).  Then
``keyblob store check`` names a planted row, and rows no honest writer makes (bad names,
generations, types and sizes, written with the schema's checks off) are never used.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyblob import (
    Algorithm,
    BadEntryError,
    FormatError,
    Home,
    IgnoredEntryWarning,
    SoftwareContainer,
    StorageError,
    Suite,
    VerificationError,
    blobs,
    open_store,
)
from keyblob.cli import main
from keyblob.keys import check_name
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, Store
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE, postgres_database, public_file, trust

TABLE = "keyblob_blobs"  # FORMAT.md 5.5


class Tamper:
    """Edits the entries of the store at ``url`` directly: what an attacker does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.backend = (
            "sqlite"
            if url.startswith("sqlite:")
            else "postgresql"
            if url.startswith("postgresql:")
            else "directory"
        )
        self._db: Any = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _sql(self, statement: str, *params: object) -> int:
        """Run ``statement`` (``?`` placeholders) and return how many rows it changed."""
        if self._db is None:
            if self.backend == "sqlite":
                self._db = sqlite3.connect(self.url.removeprefix("sqlite://"), isolation_level=None)
            else:
                import psycopg

                self._db = psycopg.connect(self.url, autocommit=True)
        if self.backend == "postgresql":
            statement = statement.replace("?", "%s")
        return int(self._db.execute(statement, params).rowcount)

    def _file(self, name: str, generation: object) -> Path:
        return Path(self.url) / name / f"{generation}.kb"

    def replace(self, name: str, generation: int, data: bytes) -> None:
        """Overwrite the bytes stored at (name, generation)."""
        if self.backend == "directory":
            path = self._file(name, generation)
            assert path.exists()
            path.write_bytes(data)
        else:
            sql = f"UPDATE {TABLE} SET data = ? WHERE name = ? AND generation = ?"
            assert self._sql(sql, data, name, generation) == 1

    def delete(self, name: str, generation: int) -> None:
        if self.backend == "directory":
            self._file(name, generation).unlink()
        else:
            sql = f"DELETE FROM {TABLE} WHERE name = ? AND generation = ?"
            assert self._sql(sql, name, generation) == 1

    def move(self, name: str, generation: int, to_name: str, to_generation: int) -> None:
        """Relabel an entry: the same bytes under another name and generation."""
        if self.backend == "directory":
            target = self._file(to_name, to_generation)
            target.parent.mkdir(exist_ok=True)
            self._file(name, generation).rename(target)
        else:
            sql = f"UPDATE {TABLE} SET name = ?, generation = ? WHERE name = ? AND generation = ?"
            assert self._sql(sql, to_name, to_generation, name, generation) == 1

    def insert_raw(self, name: object, generation: object, data: object) -> None:
        """Add a row no honest writer makes, with the schema's own checks switched off
        (they keep an honest writer honest, not an attacker out)."""
        if self.backend == "directory":
            path = Path(self.url) / str(name) / f"{generation}.kb"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data if isinstance(data, bytes) else str(data).encode())
            return
        if self.backend == "sqlite":
            self._sql("PRAGMA ignore_check_constraints = ON")
        else:
            checks = self._db_rows(
                "SELECT conname FROM pg_constraint WHERE conrelid = ?::regclass AND contype = 'c'",
                TABLE,
            )
            for (check,) in checks:
                self._sql(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{check}"')
        sql = f"INSERT INTO {TABLE} (name, generation, data) VALUES (?, ?, ?)"
        assert self._sql(sql, name, generation, data) == 1

    def _db_rows(self, statement: str, *params: object) -> list[Any]:
        self._sql("SELECT 1")  # connected
        if self.backend == "postgresql":
            statement = statement.replace("?", "%s")
        return list(self._db.execute(statement, params).fetchall())


@pytest.fixture
def tamper(store_url: str) -> Iterator[Tamper]:
    editor = Tamper(store_url)
    yield editor
    editor.close()


@pytest.fixture
def store(store_url: str) -> Store:
    return open_store(store_url)


def _container(tmp_path: Path, name: str) -> SoftwareContainer:
    return Home(tmp_path / f"home-{name}").create(name, PASSPHRASE, Suite.X25519, kdf=FAST_KDF)


@pytest.fixture
def owner(tmp_path: Path) -> SoftwareContainer:
    return _container(tmp_path, "owner")


@pytest.fixture
def attacker(tmp_path: Path) -> SoftwareContainer:
    return _container(tmp_path, "attacker")


def planted_blob(
    attacker: SoftwareContainer, owner: SoftwareContainer, name: str, generation: int
) -> bytes:
    """A well-formed blob of ``name`` at ``generation``, wrapped for ``owner``, signed by
    ``attacker`` (whom ``owner`` does not trust)."""
    encoded, _ = blobs._export(
        attacker,
        name=name,
        generation=generation,
        algorithm=Algorithm.AES_256_GCM,
        recipients=blobs._recipient_keys(attacker, [public_file(owner)]),
        key=None,
        random=secrets.token_bytes,
        now=lambda: 0,
    )
    return encoded


# -- P2: the procedure's own attack -----------------------------------------------------


def test_substituted_blob_is_refused_until_trusted(owner, attacker, store, tamper, tmp_path):
    blobs.generate(owner, store, "payroll")
    evil_store = DirectoryStore(tmp_path / "evil")
    evil = blobs.generate(attacker, evil_store, "payroll", to=[public_file(owner)])
    tamper.replace("payroll", 1, evil_store.get("payroll", 1))
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.load(owner, store, "payroll")
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.rotate(owner, store, "payroll")
    # The edit did take: only an explicit trust decision makes the key loadable.
    trust(owner, attacker)
    assert blobs.load(owner, store, "payroll") == evil


def test_signature_is_checked_before_unwrap(owner, store, tamper, monkeypatch):
    blobs.generate(owner, store, "payroll")
    data = bytearray(store.get("payroll", 1))
    data[-1] ^= 1  # the signature only
    tamper.replace("payroll", 1, bytes(data))
    calls = []
    monkeypatch.setattr(type(owner), "unwrap_as", lambda self, *a: calls.append(a))
    with pytest.raises(VerificationError, match="signature"):
        blobs.load(owner, store, "payroll")
    assert calls == []


# -- P4: rollback and deletion ----------------------------------------------------------


def test_deleting_the_newest_is_a_rollback(owner, store, tamper):
    blobs.generate(owner, store, "payroll")
    blobs.rotate(owner, store, "payroll")
    old = store.get("payroll", 1)
    tamper.delete("payroll", 2)
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.load(owner, store, "payroll")
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.rotate(owner, store, "payroll")
    # Generation 1 put back as generation 2: signed as 1, so still refused.
    tamper.insert_raw("payroll", 2, old)
    with pytest.raises(VerificationError, match="signed as generation 1"):
        blobs.load(owner, store, "payroll")
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.import_blob(owner, store, old)


def test_deleting_everything_is_a_rollback(owner, store, tamper):
    blobs.generate(owner, store, "payroll")
    tamper.delete("payroll", 1)
    assert store.names() == []
    for attempt in (
        lambda: blobs.load(owner, store, "payroll"),
        lambda: blobs.generate(owner, store, "payroll"),
    ):
        with pytest.raises(VerificationError, match="rolled back: the store has no payroll"):
            attempt()


def test_relabelled_old_generation_is_ignored(owner, store, tamper):
    """Generation 1 moved (not copied) to generation 3: an entry signed as another
    generation is never used; generation 2 stays the newest, and 1 is gone for good."""
    blobs.generate(owner, store, "payroll")
    mine = blobs.rotate(owner, store, "payroll")
    tamper.move("payroll", 1, "payroll", 3)
    with pytest.warns(IgnoredEntryWarning, match="ignored payroll generation 3: .*generation 1"):
        assert blobs.load(owner, store, "payroll") == mine


# -- P3: binding --------------------------------------------------------------------------


def test_cross_name_swap_is_refused(owner, store, tamper):
    blobs.generate(owner, store, "alpha")
    blobs.generate(owner, store, "beta")
    tamper.replace("beta", 1, store.get("alpha", 1))
    with pytest.raises(VerificationError, match="for key 'alpha', not 'beta'"):
        blobs.load(owner, store, "beta")


def test_renamed_entry_is_refused(owner, store, tamper):
    """The row itself moved to another name (no copy left under the old one)."""
    blobs.generate(owner, store, "alpha")
    tamper.move("alpha", 1, "gamma", 1)
    assert store.names() == ["gamma"]
    with pytest.raises(VerificationError, match="for key 'alpha', not 'gamma'"):
        blobs.load(owner, store, "gamma")
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.load(owner, store, "alpha")


# -- P7: bit flips and truncations, written into the store -------------------------------


def test_every_byte_flipped_in_the_store_is_refused(owner, store, tamper):
    """One bit in every byte (a different bit each time), edited in place; the genuine
    bytes, put back, load again (so the edits did reach what the store returns)."""
    mine = blobs.generate(owner, store, "payroll")
    genuine = store.get("payroll", 1)
    for i in range(len(genuine)):
        flipped = bytearray(genuine)
        flipped[i] ^= 1 << (i % 8)
        tamper.replace("payroll", 1, bytes(flipped))
        assert store.get("payroll", 1) == bytes(flipped)
        with pytest.raises((FormatError, VerificationError)):
            blobs.load(owner, store, "payroll")
    for cut in (b"", genuine[:1], genuine[: len(genuine) // 2], genuine[:-1], genuine + b"\0"):
        tamper.replace("payroll", 1, cut)
        with pytest.raises(FormatError):
            blobs.load(owner, store, "payroll")
    tamper.replace("payroll", 1, genuine)
    assert blobs.load(owner, store, "payroll") == mine


# -- FORMAT.md 2.9: planted entries -------------------------------------------------------


def test_planted_newer_row_is_ignored_and_named_by_check(owner, attacker, store, tamper):
    blobs.generate(owner, store, "payroll")
    mine = blobs.rotate(owner, store, "payroll")
    tamper.insert_raw("payroll", 3, planted_blob(attacker, owner, "payroll", 3))
    with pytest.warns(IgnoredEntryWarning, match=r"ignored payroll generation 3: .*not a trusted"):
        assert blobs.load(owner, store, "payroll") == mine
    assert owner.state().generation_floor("payroll") == 2
    failing = [(e.name, e.generation) for e in blobs.check_store(owner, store) if not e.ok]
    assert failing == [("payroll", 3)]
    moved = blobs.set_aside_untrusted(owner, store, "payroll")
    assert [(m.name, m.generation) for m in moved] == [("payroll", 3)]
    assert store.generations("payroll") == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)
        assert blobs.rotate(owner, store, "payroll").generation == 3


#: Rows no honest writer makes, keyed by what is wrong: (name, generation, data), with
#: ``GENUINE`` standing for a copy of the owner's generation 1 and ``PLANTED`` for an
#: attacker's blob of payroll generation 3 wrapped for the owner.  None may be used, none may
#: stop the owner, and no store may hand back a name or generation keyblob would refuse.
GENUINE, PLANTED = "genuine", "planted"
HOSTILE_ROWS: dict[str, tuple[object, object, object]] = {
    "generation-0": ("payroll", 0, GENUINE),
    "negative-generation": ("payroll", -3, GENUINE),
    "last-generation": ("payroll", MAX_GENERATION, PLANTED),
    "uppercase-name": ("PAYROLL", 3, PLANTED),
    "name-with-space": ("payroll ", 3, PLANTED),
    "empty-name": ("", 3, PLANTED),
    "long-name": ("p" * 129, 3, PLANTED),
    "empty-data": ("payroll", 3, b""),
}
#: What only a SQLite column takes (any value of any type), and a name with a slash or NUL.
SQLITE_ROWS: dict[str, tuple[object, object, object]] = {
    "name-with-slash": ("payroll/../payroll", 3, PLANTED),
    "name-with-nul": ("payroll\0", 3, PLANTED),
    "generation-as-text": ("payroll", "3", PLANTED),
    "generation-as-real": ("payroll", 3.0, PLANTED),
    "generation-overflow": ("payroll", 2.0**64, PLANTED),
    "data-as-text": ("payroll", 3, "not bytes"),
    "name-as-blob": (b"payroll", 3, PLANTED),
}


def _hostile_row_is_never_used(
    row: tuple[object, object, object],
    owner: SoftwareContainer,
    attacker: SoftwareContainer,
    store: Store,
    tamper: Tamper,
) -> None:
    name, generation, data = row
    mine = blobs.generate(owner, store, "payroll")
    if data == GENUINE:
        data = store.get("payroll", 1)
    elif data == PLANTED:
        data = planted_blob(attacker, owner, "payroll", 3)
    tamper.insert_raw(name, generation, data)
    # Whatever the store makes of the row, the owner gets its own key: never the planted
    # one, never a refusal, never a crash.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredEntryWarning)
        assert blobs.load(owner, store, "payroll") == mine
        for listed in store.names():
            check_name(listed)
            for g in store.generations(listed):
                assert 1 <= g <= MAX_GENERATION
        for entry in blobs.check_store(owner, store):
            assert entry.ok == ((entry.name, entry.generation) == ("payroll", 1)), entry


@pytest.mark.parametrize("case", HOSTILE_ROWS)
def test_hostile_rows_are_never_used(case, owner, attacker, store, tamper):
    _hostile_row_is_never_used(HOSTILE_ROWS[case], owner, attacker, store, tamper)


@pytest.mark.parametrize(
    "case",
    list(SQLITE_ROWS),
)
def test_hostile_sqlite_values_are_never_used(case, owner, attacker, tmp_path):
    url = f"sqlite:///{tmp_path}/keys.db"
    tamper = Tamper(url)
    try:
        _hostile_row_is_never_used(SQLITE_ROWS[case], owner, attacker, open_store(url), tamper)
    finally:
        tamper.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty SQL store (what only a database can be made to hold)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    return postgres_database(request)


def test_a_second_row_for_a_generation_is_never_used(sql_url, owner, attacker):
    """The primary key dropped, an attacker's blob added as a second row for the owner's
    newest generation: which row is meant cannot be known, and neither is used."""
    store, tamper = open_store(sql_url), Tamper(sql_url)
    try:
        blobs.generate(owner, store, "payroll")
        mine = blobs.rotate(owner, store, "payroll")
        planted = planted_blob(attacker, owner, "payroll", 2)
        if tamper.backend == "sqlite":  # SQLite drops no constraint: the table is made anew
            for statement in (
                f"ALTER TABLE {TABLE} RENAME TO old_blobs",
                f"CREATE TABLE {TABLE} (name, generation, data)",
                f"INSERT INTO {TABLE} SELECT * FROM old_blobs",
                "DROP TABLE old_blobs",
            ):
                tamper._sql(statement)
        else:
            tamper._sql(f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey")
        tamper.insert_raw("payroll", 2, planted)
        with pytest.raises(StorageError, match="several rows"):
            store.get("payroll", 2)
        with pytest.raises(StorageError, match="several rows"):
            blobs.load(owner, store, "payroll")
        # The planted row gone, the owner's own row is there as it was.
        sql = f"DELETE FROM {TABLE} WHERE data = ?"
        assert tamper._sql(sql, planted) == 1
        assert blobs.load(owner, store, "payroll") == mine
    finally:
        tamper.close()


def test_oversized_newer_entry_is_ignored(owner, store, tamper):
    """An entry the store will not hand over (FINDINGS.md 1, fixed) is passed over like one
    that fails verification, never a lock-out: an INSERT-only attacker cannot block the
    owner, and store set-aside moves it."""
    mine = blobs.generate(owner, store, "payroll")
    tamper.insert_raw("payroll", 2, b"\0" * (MAX_ITEM_SIZE + 1))
    with pytest.warns(IgnoredEntryWarning, match="ignored payroll generation 2"):
        assert blobs.load(owner, store, "payroll") == mine
    moved = blobs.set_aside_untrusted(owner, store, "payroll")
    assert [(m.name, m.generation) for m in moved] == [("payroll", 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert blobs.load(owner, store, "payroll") == mine


def test_oversized_entry_is_refused_not_returned(owner, store, tamper):
    blobs.generate(owner, store, "payroll")
    tamper.insert_raw("payroll", 2, b"\0" * (MAX_ITEM_SIZE + 1))
    with pytest.raises(BadEntryError, match="larger than"):
        store.get("payroll", 2)


# -- issue 13 item 5: the command line names the planted row ----------------------------


def test_store_check_names_a_planted_row(attacker, store_url, store, tamper, tmp_path, capsys):
    """``keyblob store check URL``-style use (``--store``): exit 3, the planted row and the
    junk row named by name and generation; ``store set-aside`` moves the planted one where
    no lookup sees it, and the owner's newest is untouched."""
    home = tmp_path / "cli-home"

    def kb(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--home", str(home), "--store", store_url, *argv])
        out, err = capsys.readouterr()
        return status, out, err

    # The home made with the tests' fast KDF: the commands then unlock in milliseconds.
    cli_owner = Home(home).create("default", CLI_PASS.encode(), Suite.X25519, kdf=FAST_KDF)
    assert kb("new", "payroll")[0] == 0
    assert kb("rotate", "payroll")[0] == 0
    tamper.insert_raw("payroll", 3, planted_blob(attacker, cli_owner, "payroll", 3))
    tamper.insert_raw("junk", 1, b"not a key blob")
    status, out, err = kb("store", "check", "--json")
    assert status == 3, err
    entries = {(e["name"], e["generation"]): e for e in json.loads(out)["entries"]}
    assert {slot: e["ok"] for slot, e in entries.items()} == {
        ("junk", 1): False,
        ("payroll", 1): True,
        ("payroll", 2): True,
        ("payroll", 3): False,
    }
    assert "not a trusted signer" in entries["payroll", 3]["reason"]
    status, out, err = kb("store", "check")
    assert status == 3
    failing = [line.split()[:3] for line in out.splitlines() if "FAILS" in line]
    assert failing == [["junk", "1", "FAILS"], ["payroll", "3", "FAILS"]]
    assert "keyblob: error: 2 of 4 entries" in err
    status, out, err = kb("store", "set-aside")
    assert status == 0, err
    assert out.startswith("set aside payroll generation 3: signed by sg-")
    assert store.generations("payroll") == [1, 2]
    status, out, err = kb("store", "check", "payroll")
    assert status == 0 and "FAILS" not in out, err


@pytest.fixture(autouse=True)
def _cli_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", CLI_PASS)


CLI_PASS = "cli passphrase"
