"""Crash safety (threat model P8), per backend: a writer SIGKILLed at random instants never
leaves a torn or unreadable entry, and the previous generation always loads.

A prepared process forks one writer per kill (``zygote`` in tests/store_workers.py), so each
kill costs milliseconds; the writer opens the store from its URL itself, says ``ready``, and
writes until it is killed ``uniform(0, MAX_DELAY)`` seconds later.  Two writers: the store's
own ``put`` of the largest items, and the library's ``rotate`` of a real key (store write and
high-water mark both).  Every backend gets ``KILLS`` kills of each, and ``FIRST_WRITE_KILLS``
of a writer making an emptied store (a SQL store's schema, the folder) with its first put.

PostgreSQL finishes a statement the writer had sent before it died: the checks wait until
the server has ended the dead writer's session (found by its ``application_name``).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from keyblob import Home, IgnoredEntryWarning, Suite, blobs, open_store
from keyblob.storage import Store
from store_workers import PASSPHRASE, payload
from support import FAST_KDF

WORKERS = Path(__file__).resolve().parents[1] / "store_workers.py"
SRC = Path(blobs.__file__).resolve().parents[1]
KILLS = 200
FIRST_WRITE_KILLS = 40  # each on an emptied store
WRITER_APP = "keyblob-crash-writer"  # the PostgreSQL writers' application_name
MAX_DELAY = 0.04  # seconds between the writer being ready and the kill


class Zygote:
    """The process that forks the writers (tests/store_workers.py ``zygote``)."""

    def __init__(self, config: dict[str, Any], tmp_path: Path) -> None:
        self._errors = tmp_path / "zygote.stderr"
        with self._errors.open("wb") as errors:
            self._process = subprocess.Popen(
                [sys.executable, str(WORKERS), "zygote", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                bufsize=0,
                env={**os.environ, "PYTHONPATH": str(SRC)},
            )
        self._buffer = b""

    def _line(self) -> str:
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], 60)
            chunk = os.read(fd, 4096) if ready else b""
            assert chunk, f"the writers' process stopped answering: {self.errors()}"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def errors(self) -> str:
        return self._errors.read_text(errors="replace")[-4000:]

    def kill_a_writer(self, delay: float) -> None:
        """Start a writer, let it write for ``delay`` s once ready, SIGKILL it."""
        assert self._process.stdin is not None
        self._process.stdin.write(b"go\n")
        pid, ready = None, False
        while pid is None or not ready:
            line = self._line()
            if line.startswith("pid "):
                pid = int(line[4:])
            else:
                # Anything but "ready" means the writer failed on its own: show why.
                assert line == "ready", f"{line}: {self.errors()}"
                ready = True
        select.select([], [], [], delay)
        os.kill(pid, signal.SIGKILL)  # still our unreaped child's pid: cannot be reused
        assert self._line() == f"exit {-signal.SIGKILL}", self.errors()

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        finally:
            self._process.kill()
            self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Any]:
    started: list[Zygote] = []

    def start(config: dict[str, Any]) -> Zygote:
        started.append(Zygote(config, tmp_path))
        return started[-1]

    yield start
    for z in started:
        z.close()


def writer_url(url: str) -> str:
    """The URL the writers open: on PostgreSQL, with a name to find their sessions by."""
    if url.startswith("postgresql:"):
        return f"{url}{'&' if '?' in url else '?'}application_name={WRITER_APP}"
    return url


@pytest.fixture
def settled(store_url: str) -> Iterator[Any]:
    """``settled()`` returns once nothing a killed writer started can still change the
    store: at once for a file or SQLite (the writer did its writing itself), and on
    PostgreSQL when the server has ended the writer's session, finishing or rolling back
    what it had sent."""
    if not store_url.startswith("postgresql:"):
        yield lambda: None
        return
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as db:

        def wait() -> None:
            for _ in range(3000):
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND datname = current_database()",
                    (WRITER_APP,),
                ).fetchone()
                if row == (0,):
                    return
                select.select([], [], [], 0.01)
            raise AssertionError("a killed writer's session is still open after 30 s")

        yield wait


def _backend_checks(url: str, name: str, generations: list[int]) -> None:
    """What only one backend can show: the directory's leftovers are temp files, which the
    store ignores; the SQLite file passes its own integrity check."""
    if url.startswith("sqlite:"):
        with closing(sqlite3.connect(url.removeprefix("sqlite://"))) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    elif ":" not in url:
        # A kill before the first put even made the folder leaves nothing at all.
        folder = Path(url) / name
        entries = set(os.listdir(folder)) if folder.exists() else set()
        for leftover in entries - {f"{g}.kb" for g in generations}:
            assert leftover.startswith(".") and leftover.endswith(".tmp"), leftover


@pytest.mark.slow
def test_put_survives_sigkill_at_random_instants(store_url: str, zygote: Any, settled: Any) -> None:
    rng = random.Random(20240601)
    store = open_store(store_url)
    # Made before the kills: a SQL store makes its schema on the first write, which takes
    # longer than most writers live (a kill during it is harmless, but nothing gets written).
    store.put("victim", 1, payload(1))
    writers = zygote({"writer": "put", "url": writer_url(store_url), "name": "victim"})
    checked = 0
    for _ in range(KILLS):
        writers.kill_a_writer(rng.uniform(0, MAX_DELAY))
        settled()
        generations = store.generations("victim")
        # Writes are sequential, so the visible generations are exactly 1..latest ...
        assert generations == list(range(1, len(generations) + 1))
        # ... and each new one, and the one before them, holds its full payload.
        for generation in generations[max(0, checked - 1) :]:
            assert store.get("victim", generation) == payload(generation), generation
        checked = len(generations)
        assert store.names() == (["victim"] if generations else [])
        _backend_checks(store_url, "victim", generations)
    # The writers made progress, nothing earlier was damaged, and the store still accepts
    # the next generation.
    written = store.generations("victim")
    assert len(written) >= KILLS // 4
    for generation in written:
        assert store.get("victim", generation) == payload(generation), generation
    store.put("victim", len(written) + 1, payload(len(written) + 1))
    assert store.latest("victim") == len(written) + 1


@pytest.mark.slow
def test_replace_survives_sigkill_at_random_instants(
    store_url: str, zygote: Any, settled: Any
) -> None:
    """A writer replacing one entry again and again (compare-and-set, FORMAT.md 5.3, 5.5),
    killed at random instants: the entry always holds one whole payload, never older than
    the one seen before the kill, and the next replace from it works."""
    rng = random.Random(20240605)
    store = open_store(store_url)
    store.put("victim", 1, payload(1))
    writers = zygote({"writer": "replace", "url": writer_url(store_url), "name": "victim"})
    seen = 1
    for _ in range(KILLS):
        writers.kill_a_writer(rng.uniform(0, MAX_DELAY))
        settled()
        current = store.get("victim", 1)
        n = int.from_bytes(current[:8], "big")
        assert current == payload(n)  # whole: one payload, not a mix of two
        assert n >= seen  # never back
        seen = n
        assert store.generations("victim") == [1]
        _backend_checks(store_url, "victim", [1])
    assert seen > KILLS // 4  # the writers made progress
    store.replace("victim", 1, payload(seen), payload(seen + 1))
    assert store.get("victim", 1) == payload(seen + 1)


def _latest_loads(container: Any, store: Store, name: str, floor: int) -> int:
    """The newest generation loads and verifies, with nothing ignored; so does the one
    before it.  Returns the newest."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)  # a torn entry would be skipped
        newest = blobs.load(container, store, name)
        generations = store.generations(name)
        assert generations == list(range(1, len(generations) + 1))
        assert newest.generation == generations[-1] >= floor
        if newest.generation > 1:
            previous = blobs.open_stored(container, store, name, newest.generation - 1)
            assert previous.key is not None
    return newest.generation


@pytest.mark.slow
def test_rotate_survives_sigkill_at_random_instants(
    store_url: str, zygote: Any, settled: Any, tmp_path: Path
) -> None:
    rng = random.Random(20240603)
    home = tmp_path / "home"
    container = Home(home).create("c", PASSPHRASE, Suite.X25519, kdf=FAST_KDF)
    store = open_store(store_url)
    blobs.generate(container, store, "victim")
    config = {"writer": "rotate", "url": writer_url(store_url), "name": "victim"}
    writers = zygote({**config, "home": str(home), "container": "c"})
    newest = 1
    for _ in range(KILLS):
        writers.kill_a_writer(rng.uniform(0, MAX_DELAY))
        settled()
        # Never back: whatever the kill interrupted, the container is not locked out (a
        # blob stored but not yet recorded in the state is simply the newest).
        newest = _latest_loads(container, store, "victim", newest)
        assert container.state().generation_floor("victim") == newest
        _backend_checks(store_url, "victim", store.generations("victim"))
    assert newest > KILLS // 4  # the writers made progress
    for generation in store.generations("victim"):
        assert blobs.open_stored(container, store, "victim", generation).key is not None
    assert blobs.rotate(container, store, "victim").generation == newest + 1


def _empty(url: str) -> None:
    """Take the store back to nothing: no folder, no database file, no tables."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite://")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(path + suffix).unlink(missing_ok=True)
    elif url.startswith("postgresql:"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DROP TABLE IF EXISTS keyblob_blobs, keyblob_set_aside, keyblob_meta")
    else:
        shutil.rmtree(url, ignore_errors=True)


@pytest.mark.slow
def test_first_write_survives_sigkill_at_random_instants(
    store_url: str, zygote: Any, settled: Any
) -> None:
    """Killed while its first write makes the store itself (a SQL store's schema, the
    folder), a writer leaves the store without it or with all of it: what is there reads,
    and the next write works."""
    rng = random.Random(20240604)
    writers = zygote({"writer": "put", "url": writer_url(store_url), "name": "victim"})
    for _ in range(FIRST_WRITE_KILLS):
        _empty(store_url)
        # Shorter than the others: most kills land in or just after the first write.
        writers.kill_a_writer(rng.uniform(0, MAX_DELAY / 3))
        settled()
        store = open_store(store_url)
        try:
            generations = store.generations("victim")
            assert generations == list(range(1, len(generations) + 1))
            assert store.names() == (["victim"] if generations else [])
            for generation in generations:
                assert store.get("victim", generation) == payload(generation), generation
            following = len(generations) + 1
            store.put("victim", following, payload(following))
            assert store.latest("victim") == following
            _backend_checks(store_url, "victim", store.generations("victim"))
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()


REWRAP_KILLS = 120
REWRAP_NAMES = 24
REWRAP_MAX_DELAY = 0.15  # a pass over REWRAP_NAMES entries takes about that long


@pytest.mark.slow
def test_rewrap_survives_sigkill_and_a_rerun_finishes(
    store_url: str, zygote: Any, settled: Any, tmp_path: Path
) -> None:
    """``rewrap`` (issue 16) killed at random instants: every name still loads, with the
    same session key, after every kill (each entry holds its old blob or its new one); when
    the writers have moved every entry to the new keys, the test forgets the old keys and
    rotates again, so the kills keep landing inside real re-wraps; at the end a rerun
    finishes the job."""
    from keyblob.keys import KeyRole

    both = [KeyRole.EXCHANGE, KeyRole.SIGNATURE]
    rng = random.Random(20261206)
    home = Home(tmp_path / "home")
    container = home.create("c", PASSPHRASE, Suite.X25519, kdf=FAST_KDF)
    store = open_store(store_url)
    keys = {}
    for i in range(REWRAP_NAMES):
        key = blobs.generate(container, store, f"k{i:02}")
        keys[key.name] = key.unsafe_raw_bytes()
    blobs.rotate_own_keys(container, both)
    config = {"writer": "rewrap", "url": writer_url(store_url), "container": "c"}
    writers = zygote({**config, "home": str(home.path)})
    rounds = 0
    partial = 0  # kills after which some entries were done and some not
    for _ in range(REWRAP_KILLS):
        writers.kill_a_writer(rng.uniform(0, REWRAP_MAX_DELAY))
        settled()
        opened = home.open("c", PASSPHRASE)
        with warnings.catch_warnings():
            warnings.simplefilter("error", IgnoredEntryWarning)  # nothing torn or ignored
            for name, raw in keys.items():
                verified = blobs.open_latest(opened, store, name)
                assert verified.key is not None and verified.key.unsafe_raw_bytes() == raw
        needing = blobs.entries_needing_old_keys(opened, store, jobs=1)
        if not needing:  # every entry on the new keys: start another round
            blobs.forget_old_keys(opened, store, jobs=1)
            blobs.rotate_own_keys(opened, both, store=store)  # as keys rotate does
            rounds += 1
        elif len(needing) < REWRAP_NAMES:
            partial += 1
    assert rounds >= 2 and partial >= 2, (rounds, partial)  # the kills hit real re-wraps
    opened = home.open("c", PASSPHRASE)
    report = blobs.rewrap(opened, store, jobs=1)  # the rerun finishes
    assert not report.failed
    assert blobs.entries_needing_old_keys(opened, store, jobs=1) == []
    blobs.forget_old_keys(opened, store, jobs=1)
    for name, raw in keys.items():
        verified = blobs.open_latest(opened, store, name)
        assert verified.key is not None and verified.key.unsafe_raw_bytes() == raw
