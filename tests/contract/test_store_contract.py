"""The behaviour every store shares, run against each one.

Each test runs once per backend, on an empty store opened from its URL (the ``store_url``
fixture of tests/conftest.py; PostgreSQL: a fresh database on the server KEYBLOB_TEST_PG
names, skipping without one, which KEYBLOB_REQUIRE_INTEROP=1 turns into a failure).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from keyblob.errors import (
    ConflictError,
    NotFoundError,
    ReplaceConflictError,
    StorageError,
    UsageError,
)
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, Store, open_store
from support import postgres_database, secret_of


@pytest.fixture
def store(store_url: str) -> Store:
    """An empty store of each backend (``store_url`` in tests/conftest.py)."""
    return open_store(store_url)


def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.location, str)
    assert store.location


def test_empty_store(store: Store) -> None:
    assert store.names() == []
    assert store.generations("k") == []
    assert store.latest("k") is None


def test_round_trip(store: Store) -> None:
    blobs = {("k", 1): b"one", ("k", 2): bytes(range(256)) * 4, ("other", 1): b""}
    for (name, generation), data in blobs.items():
        store.put(name, generation, data)
    for (name, generation), data in blobs.items():
        assert store.get(name, generation) == data


def test_largest_item_and_generation(store: Store) -> None:
    data = b"\xff" * MAX_ITEM_SIZE
    store.put("k", MAX_GENERATION, data)
    assert store.get("k", MAX_GENERATION) == data
    assert store.latest("k") == MAX_GENERATION
    with pytest.raises(UsageError):
        store.put("k", 1, data + b"\xff")
    assert store.generations("k") == [MAX_GENERATION]


def test_idempotent_put(store: Store) -> None:
    store.put("k", 1, b"blob")
    store.put("k", 1, b"blob")
    assert store.get("k", 1) == b"blob"
    assert store.generations("k") == [1]


def test_conflicting_put_is_refused(store: Store) -> None:
    store.put("k", 1, b"blob")
    with pytest.raises(ConflictError) as info:
        store.put("k", 1, b"other blob")
    assert str(info.value) == (
        f"another writer made k generation 1 first (in {store.location}); run the command again"
    )
    assert isinstance(info.value, StorageError) and not isinstance(info.value, NotFoundError)
    assert (info.value.name, info.value.generation) == ("k", 1)
    assert store.get("k", 1) == b"blob"


def test_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        store.get("k", 1)
    assert str(info.value) == f"no blob k generation 1 in {store.location}"
    assert isinstance(info.value, LookupError)
    store.put("k", 1, b"blob")
    with pytest.raises(NotFoundError):
        store.get("k", 2)
    with pytest.raises(NotFoundError):
        store.get("k2", 1)


def test_generations_are_ascending(store: Store) -> None:
    for generation in [5, 1, 100, 2, 10, 20]:  # out of order; 10 < 2 as text
        store.put("k", generation, f"g{generation}".encode())
    assert store.generations("k") == [1, 2, 5, 10, 20, 100]
    assert store.latest("k") == 100


def test_names_are_sorted_and_separate(store: Store) -> None:
    for name in ["zeta", "alpha", "alpha.2", "alpha-1", "a", "9"]:
        store.put(name, 1, name.encode())
    store.put("alpha", 2, b"alpha 2")
    assert store.names() == sorted(["zeta", "alpha", "alpha.2", "alpha-1", "a", "9"])
    # A name is not a prefix match: "a" does not see "alpha"'s generations.
    assert store.generations("a") == [1]
    assert store.generations("alpha") == [1, 2]
    assert store.get("a", 1) == b"a"
    assert store.get("alpha.2", 1) == b"alpha.2"


@pytest.mark.parametrize("name", ["../x", "A", ".x", "x/y", "", "a" * 129, "x%"])
def test_invalid_names(store: Store, name: str) -> None:
    with pytest.raises(UsageError):
        store.put(name, 1, b"x")
    with pytest.raises(UsageError):
        store.get(name, 1)
    with pytest.raises(UsageError):
        store.generations(name)
    with pytest.raises(UsageError):
        store.latest(name)
    assert store.names() == []


@pytest.mark.parametrize("generation", [0, -1, MAX_GENERATION + 1, True, 1.5, "1"])
def test_invalid_generations(store: Store, generation: object) -> None:
    with pytest.raises(UsageError):
        store.put("k", generation, b"x")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        store.get("k", generation)  # type: ignore[arg-type]
    assert store.names() == []


def test_set_aside_hides_the_entry_and_keeps_the_rest(store: Store) -> None:
    store.put("k", 1, b"one")
    store.put("k", 2, b"planted")
    store.put("solo", 7, b"junk")
    where = store.set_aside("k", 2)
    assert isinstance(where, str) and where
    assert store.generations("k") == [1]
    assert store.latest("k") == 1
    assert store.get("k", 1) == b"one"
    with pytest.raises(NotFoundError):
        store.get("k", 2)
    store.set_aside("solo", 7)
    assert store.names() == ["k"]  # the set-aside area is never listed as a name


def test_set_aside_twice_keeps_both(store: Store) -> None:
    store.put("k", 2, b"first")
    first = store.set_aside("k", 2)
    store.put("k", 2, b"second")  # the slot is free again
    second = store.set_aside("k", 2)
    assert first != second
    assert store.generations("k") == []
    store.put("k", 2, b"mine")
    assert store.get("k", 2) == b"mine"


def test_set_aside_of_nothing(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.set_aside("k", 1)
    store.put("k", 1, b"one")
    with pytest.raises(NotFoundError):
        store.set_aside("k", 2)
    with pytest.raises(UsageError):
        store.set_aside("../x", 1)
    with pytest.raises(UsageError):
        store.set_aside("k", 0)
    assert store.generations("k") == [1]


# -- names, bytes and sizes at their limits --------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "0", "a" * 128, "9" + "z" * 127, "a.b_c-d", "0123456789abcdefghijklmnopqrstuvwxyz._-"],
)
def test_names_at_the_limits(store: Store, name: str) -> None:
    store.put(name, 1, name.encode())
    store.put(name, MAX_GENERATION, b"last")
    assert store.get(name, 1) == name.encode()
    assert store.generations(name) == [1, MAX_GENERATION]
    assert store.latest(name) == MAX_GENERATION
    assert store.names() == [name]


def test_every_byte_value_comes_back_unchanged(store: Store) -> None:
    items = {g + 1: bytes([g]) for g in range(256)}
    items[300] = b""
    items[301] = bytes(range(256))
    items[302] = b"\x00" * 1000 + b"\xff\x00"  # NULs and a trailing NUL are kept
    items[303] = "é\n\r".encode("utf-16")  # not UTF-8, not text
    for generation, data in items.items():
        store.put("k", generation, data)
    for generation, data in items.items():
        got = store.get("k", generation)
        assert type(got) is bytes and got == data, generation
    assert store.generations("k") == sorted(items)


def test_size_bound_on_the_way_in(store: Store) -> None:
    with pytest.raises(UsageError):
        store.put("k", 1, b"\x00" * (MAX_ITEM_SIZE + 1))
    with pytest.raises(UsageError):
        store.put("k", 1, bytearray(b"x"))  # type: ignore[arg-type]
    assert store.generations("k") == []
    assert store.names() == []


def test_size_bound_on_the_way_out(store_url: str, store: Store) -> None:
    store.put("k", 1, b"small")
    store.put("k", 2, b"x" * MAX_ITEM_SIZE)
    plant(store_url, "k", 1, b"\x01" * (MAX_ITEM_SIZE + 1))  # edited behind keyblob's back
    with pytest.raises(StorageError) as info:
        store.get("k", 1)
    assert not isinstance(info.value, NotFoundError)
    assert f"larger than {MAX_ITEM_SIZE} bytes" in str(info.value)
    assert store.get("k", 2) == b"x" * MAX_ITEM_SIZE  # the bound is inclusive
    assert store.generations("k") == [1, 2]  # counted, refused when read
    with pytest.raises(StorageError, match="larger than"):  # kept, never overwritten
        store.put("k", 1, b"small")
    with pytest.raises(StorageError, match="larger than"):
        store.get("k", 1)


def test_conflict_between_two_handles(store_url: str, store: Store) -> None:
    other = open_store(store_url)
    store.put("k", 1, b"mine")
    other.put("k", 1, b"mine")  # a retry from elsewhere: a no-op
    with pytest.raises(ConflictError) as info:
        other.put("k", 1, b"theirs")
    assert (info.value.name, info.value.generation) == ("k", 1)
    other.put("k", 2, b"theirs")
    assert store.get("k", 1) == b"mine"
    assert store.generations("k") == [1, 2]
    close(other)


# -- a store that cannot be used -------------------------------------------------------


def test_unreachable_store(store_url: str, tmp_path: Path) -> None:
    """A directory or SQLite file below a regular file, a PostgreSQL server on a closed
    port: every operation fails with a one-line StorageError, and put is no conflict."""
    store = open_store(unreachable(store_url, tmp_path))
    operations: list[Callable[[], object]] = [
        lambda: store.put("k", 1, b"x"),
        store.names,
        lambda: store.generations("k"),
        lambda: store.latest("k"),
        lambda: store.get("k", 1),
        lambda: store.set_aside("k", 1),
    ]
    if backend(store_url) == "directory":  # a missing root holds nothing: reads find nothing
        operations = operations[:2]
    for operation in operations:
        with pytest.raises(StorageError) as info:
            operation()
        assert not isinstance(info.value, ConflictError)
        message = str(info.value)
        assert message and "\n" not in message
        assert "hunter2" not in message
        assert not secret_of(store_url) or secret_of(store_url) not in message
    close(store)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of each database backend: only they have a connection to close."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    return postgres_database(request)


def test_closed_store(sql_url: str) -> None:
    store = open_store(sql_url)
    store.put("k", 1, b"x")
    close(store)
    close(store)  # twice is fine
    operations: list[Callable[[], object]] = [
        lambda: store.put("k", 2, b"x"),
        store.names,
        lambda: store.generations("k"),
        lambda: store.latest("k"),
        lambda: store.get("k", 1),
        lambda: store.set_aside("k", 1),
    ]
    for operation in operations:
        with pytest.raises(StorageError, match=r"is closed$") as info:
            operation()
        assert not isinstance(info.value, NotFoundError)
    with pytest.raises(UsageError):  # arguments are still checked first
        store.get("../x", 1)
    with open_store(sql_url) as again:  # type: ignore[attr-defined]
        assert again.get("k", 1) == b"x"
    with pytest.raises(StorageError, match=r"is closed$"):
        again.names()


# -- replace: compare-and-set (FORMAT.md 5.3, 5.5) ----------------------------------------


def test_replace_swaps_exactly_the_old_bytes(store: Store) -> None:
    store.put("k", 1, b"old")
    store.put("k", 2, b"two")
    store.replace("k", 1, b"old", b"new")
    assert store.get("k", 1) == b"new"
    assert store.get("k", 2) == b"two"
    assert store.generations("k") == [1, 2]
    assert store.names() == ["k"]


def test_replace_of_other_bytes_changes_nothing(store: Store) -> None:
    store.put("k", 1, b"current")
    with pytest.raises(ReplaceConflictError) as info:
        store.replace("k", 1, b"stale", b"new")
    assert isinstance(info.value, ConflictError)  # retrying() runs it again
    assert (info.value.name, info.value.generation) == ("k", 1)
    assert "k generation 1" in str(info.value)
    assert "changed while this ran" in str(info.value)
    assert store.get("k", 1) == b"current"


def test_replace_of_nothing_is_a_conflict_and_creates_nothing(store: Store) -> None:
    with pytest.raises(ReplaceConflictError):
        store.replace("k", 1, b"old", b"new")
    store.put("other", 1, b"x")  # the store exists; still nothing at k
    with pytest.raises(ReplaceConflictError):
        store.replace("k", 1, b"old", b"new")
    assert store.generations("k") == []
    with pytest.raises(NotFoundError):
        store.get("k", 1)


def test_replace_again_after_success_is_a_no_op(store: Store) -> None:
    store.put("k", 1, b"old")
    store.replace("k", 1, b"old", b"new")
    store.replace("k", 1, b"old", b"new")  # a retry that had succeeded
    assert store.get("k", 1) == b"new"


def test_a_replaced_entry_cannot_be_replaced_from_its_old_bytes(store: Store) -> None:
    store.put("k", 1, b"one")
    store.replace("k", 1, b"one", b"two")
    store.replace("k", 1, b"two", b"three")
    with pytest.raises(ReplaceConflictError):
        store.replace("k", 1, b"one", b"two-again")
    assert store.get("k", 1) == b"three"


def test_replace_after_set_aside_is_a_conflict(store: Store) -> None:
    store.put("k", 1, b"old")
    store.set_aside("k", 1)
    with pytest.raises(ReplaceConflictError):
        store.replace("k", 1, b"old", b"new")
    with pytest.raises(NotFoundError):
        store.get("k", 1)


def test_replace_bounds_and_arguments(store: Store) -> None:
    store.put("k", 1, b"old")
    big = b"\xff" * MAX_ITEM_SIZE
    store.replace("k", 1, b"old", big)
    assert store.get("k", 1) == big
    with pytest.raises(UsageError):
        store.replace("k", 1, big, big + b"x")
    with pytest.raises(UsageError):
        store.replace("Bad", 1, b"a", b"b")
    with pytest.raises(UsageError):
        store.replace("k", 0, b"a", b"b")
    assert store.get("k", 1) == big


def test_replace_from_another_handle(store_url: str, store: Store) -> None:
    store.put("k", 1, b"old")
    other = open_store(store_url)
    try:
        other.replace("k", 1, b"old", b"theirs")
        with pytest.raises(ReplaceConflictError):
            store.replace("k", 1, b"old", b"mine")
        assert store.get("k", 1) == b"theirs"
    finally:
        close(other)


def test_replace_keeps_bytes_exactly(store: Store) -> None:
    old = bytes(range(256))
    new = bytes(reversed(range(256))) + b"\x00"
    store.put("k", 1, old)
    with pytest.raises(ReplaceConflictError):  # one byte shorter is not the same bytes
        store.replace("k", 1, old[:-1], new)
    with pytest.raises(ReplaceConflictError):
        store.replace("k", 1, old + b"\x00", new)
    store.replace("k", 1, old, new)
    assert store.get("k", 1) == new


# -- helpers -----------------------------------------------------------------------------


def backend(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql:", "postgres:")):
        return "postgresql"
    return "directory"


def close(store: Store) -> None:
    closer = getattr(store, "close", None)
    if closer is not None:
        closer()


def unreachable(url: str, tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    kind = backend(url)
    if kind == "directory":
        return str(blocker / "store")
    if kind == "sqlite":
        return f"sqlite:///{blocker}/keys.db"
    with socket.socket() as s:  # a port nothing listens on (bound, then released)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://keyblob:hunter2@127.0.0.1:{port}/keys?connect_timeout=5"


def plant(url: str, name: str, generation: int, data: bytes) -> None:
    """Replace a stored item behind keyblob's back, as an attacker with write access would
    (dropping the database's size check first)."""
    kind = backend(url)
    if kind == "directory":
        (Path(url) / name / f"{generation}.kb").write_bytes(data)
    elif kind == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"))) as db:
            db.execute("PRAGMA ignore_check_constraints = ON")
            db.execute(
                "UPDATE keyblob_blobs SET data = ? WHERE name = ? AND generation = ?",
                (data, name, generation),
            )
            db.commit()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("ALTER TABLE keyblob_blobs DROP CONSTRAINT keyblob_blobs_data_check")
            db.execute(
                "UPDATE keyblob_blobs SET data = %s WHERE name = %s AND generation = %s",
                (data, name, generation),
            )
