"""The behaviour every store shares, run against each one.

Each test runs once per backend, on an empty store opened from its URL (the ``store_url``
fixture of tests/conftest.py; PostgreSQL: a fresh database on the server KEYBLOB_TEST_PG
names, skipping without one, which KEYBLOB_REQUIRE_INTEROP=1 turns into a failure).
"""

from __future__ import annotations

import pytest

from keyblob.errors import ConflictError, NotFoundError, StorageError, UsageError
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, Store, open_store


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
