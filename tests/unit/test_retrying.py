"""blobs.retrying: a lost compare-and-set (ConflictError) is run again, a bounded number of
times; nothing else is.  generate turns a conflict on a new name into "exists already"."""

from __future__ import annotations

import pytest

from keyblob import blobs
from keyblob.errors import ConflictError, StorageError, UsageError
from keyblob.storage.directory import DirectoryStore


class LosingStore:
    """A store that loses the first ``losses`` puts to "another writer" (ConflictError),
    or fails them with ``error``; reads go to the real store."""

    def __init__(self, store: DirectoryStore, losses: int, error: Exception | None = None):
        self._store = store
        self.losses = losses
        self.error = error
        self.puts = 0

    def __getattr__(self, name: str):  # get, generations, latest, names, location...
        return getattr(self._store, name)

    def put(self, name: str, generation: int, data: bytes) -> None:
        self.puts += 1
        if self.losses:
            self.losses -= 1
            if self.error is not None:
                raise self.error
            raise ConflictError(name, generation, self._store.location)
        self._store.put(name, generation, data)


def no_sleep(_: float) -> None:
    pass


def test_rotate_is_run_again_until_it_wins(make_container, store) -> None:
    container = make_container()
    blobs.generate(container, store, "payroll")
    losing = LosingStore(store, losses=2)
    said: list[tuple[str, int, int, int]] = []

    key = blobs.retrying(
        lambda: blobs.rotate(container, losing, "payroll"),
        on_retry=lambda e, attempt, attempts: said.append(
            (e.name, e.generation, attempt, attempts)
        ),
        sleep=no_sleep,
    )

    assert key.generation == 2
    assert losing.puts == 3
    assert said == [("payroll", 2, 2, 5), ("payroll", 2, 3, 5)]
    assert store.generations("payroll") == [1, 2]
    assert blobs.load(container, store, "payroll").key_id == key.key_id


def test_gives_up_after_the_bound_with_the_last_conflict(make_container, store) -> None:
    container = make_container()
    blobs.generate(container, store, "payroll")
    losing = LosingStore(store, losses=10)
    pauses: list[float] = []

    with pytest.raises(ConflictError) as info:
        blobs.retrying(
            lambda: blobs.rotate(container, losing, "payroll"), attempts=3, sleep=pauses.append
        )

    assert losing.puts == 3
    assert info.value.generation == 2
    assert "another writer made payroll generation 2 first" in str(info.value)
    assert "run the command again" in str(info.value)
    # Two pauses, short and jittered: full jitter under 50 ms, then under 100 ms.
    assert len(pauses) == 2
    assert 0 <= pauses[0] <= 0.05 and 0 <= pauses[1] <= 0.1
    assert store.generations("payroll") == [1]
    assert container.state().generation_floor("payroll") == 1  # nothing recorded


def test_other_storage_errors_are_not_retried(make_container, store) -> None:
    container = make_container()
    blobs.generate(container, store, "payroll")
    losing = LosingStore(store, losses=1, error=StorageError("disk full"))

    with pytest.raises(StorageError, match="disk full") as info:
        blobs.retrying(lambda: blobs.rotate(container, losing, "payroll"), sleep=no_sleep)

    assert type(info.value) is StorageError
    assert losing.puts == 1


def test_the_pauses_are_random_and_capped() -> None:
    pauses: list[float] = []

    def lose() -> None:
        raise ConflictError("k", 1, "here")

    with pytest.raises(ConflictError):
        blobs.retrying(lose, attempts=9, sleep=pauses.append)
    assert len(pauses) == 8
    assert all(0 <= p <= blobs.MAX_BACKOFF for p in pauses)
    assert len(set(pauses)) > 1  # jittered: 8 equal draws from up to 1001 values won't happen


@pytest.mark.parametrize("attempts", [0, -1, True, 2.0])
def test_attempts_must_be_a_positive_int(attempts) -> None:
    with pytest.raises(UsageError):
        blobs.retrying(lambda: None, attempts=attempts)


def test_one_attempt_does_not_retry() -> None:
    calls = []

    def lose() -> None:
        calls.append(1)
        raise ConflictError("k", 1, "here")

    with pytest.raises(ConflictError):
        blobs.retrying(lose, attempts=1, on_retry=lambda *a: calls.append(2), sleep=no_sleep)
    assert calls == [1]


def test_new_of_a_name_another_writer_just_created_is_exists_already(make_container, store) -> None:
    container = make_container()
    losing = LosingStore(store, losses=1)

    with pytest.raises(UsageError, match="payroll exists already: another writer created it"):
        blobs.retrying(lambda: blobs.generate(container, losing, "payroll"), sleep=no_sleep)

    assert losing.puts == 1  # not retried: a second attempt could only find the name taken
    assert container.state().generation_floor("payroll") == 0
