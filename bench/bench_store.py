"""Store performance (issue 13): put, get and names as a store grows, against bare floors.

Run from the repository root (the project installed, e.g. editable, in the active venv)::

    python bench/bench_store.py --quick                  # smoke run, well under a minute
    python bench/bench_store.py                          # 10^4, 10^5, 10^6 blobs per backend
    python bench/bench_store.py --backends directory,sqlite --sizes 10000,100000
    KEYBLOB_TEST_PG=postgresql://... python bench/bench_store.py --backends postgresql

For each backend (directory, SQLite, PostgreSQL: the last only with ``KEYBLOB_TEST_PG``, a
server where the bench may create and drop a database) it builds one store per size, each
holding that many blobs: one generation of each of that many names, opaque random bytes of
the size of a real x25519 key blob (measured with the library at start).  The stores are
filled by a bulk path that bypasses the store (files written without fsync then one
``sync``; one ``executemany`` transaction; ``COPY``): setup only.  Every measured operation
goes through the ``Store`` API, on a store opened with ``open_store(url)``.

- **get**: latency p50 / p99 of ``get`` of a random stored (name, generation), the sizes
  interleaved round by round so that load on the machine hits every size alike.  Target
  (issue 13): p50 and p99 at the largest size <= 1.5 x the same at the smallest.
- **put** of a new name against the backend's **floor**, the same durable write done bare,
  in the same store, rounds interleaved (order swapped each round):

  - directory: ``mkdir`` + fsync of the root, then the write of
    :func:`keyblob.atomic.write_atomic` (temp file, unnamed where Linux allows; write,
    fsync, link, folder fsync) as bare ``os`` calls;
  - SQLite: bare ``sqlite3`` with the store's journal mode and ``synchronous`` setting
    (read back from the store's own connection), one ``INSERT`` per transaction;
  - PostgreSQL: bare psycopg, one ``INSERT`` per transaction, into the store's own table.

  Target: put throughput >= 0.8 x the floor's (floor median / put median).
- **names**: the time of one ``names()`` call, with a bare listing beside it (``scandir`` of
  the root; ``SELECT DISTINCT name ... ORDER BY name``) for context.  No target.

Nothing is asserted; everything is printed, with how long each part took.  ``--json`` keeps
the samples' summaries.  ``--profile`` adds cProfile of put and get at the smallest size;
``--breakdown`` times the directory and SQLite puts layer by layer against their floors
(on ``--dir``: use a tmpfs, where an fsync costs nothing and the layers show).  Store
internals (the SQLite connection, ``_errors``, ``_insert``) are used read-only to build the
floors and the breakdown.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import os
import platform
import pstats
import random
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from keyblob import blobs
from keyblob.errors import StorageError
from keyblob.keys import Suite
from keyblob.providers.software import Home, KdfParams
from keyblob.storage import Store, open_store, sql, sqlite
from keyblob.storage.sql import BLOBS

BACKENDS = ("directory", "sqlite", "postgresql")
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
GET_TARGET = 1.5  # largest size / smallest, p50 and p99
PUT_TARGET = 0.8  # put throughput / floor throughput
# Space per blob of the directory store (a 4 KiB folder block and a 4 KiB file block on
# ext4; a page per file on tmpfs) with a margin, and inodes (a folder and a file): sizes
# that would not fit beside each other in the free space are left out, and said so.
DIR_BYTES_PER_BLOB = 3 * 4096
DIR_INODES_PER_BLOB = 2


# -- timing helpers ---------------------------------------------------------------------


def now() -> int:
    return time.perf_counter_ns()


def pct(samples: list[int], q: float) -> float:
    """The q-quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))])


def us(ns: float) -> str:
    return f"{ns / 1000:,.1f}"


def count(n: int) -> str:
    """10^4 style for powers of ten, else digits."""
    exp = len(str(n)) - 1
    return f"10^{exp}" if n == 10**exp else f"{n:,}"


class Clock:
    """Prints progress with the time since start, and records how long each part took."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.parts: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def part(self, label: str) -> Iterator[None]:
        self.say(f"{label} ...")
        t0 = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - t0
            self.parts[label] = took
            self.say(f"{label}: {took:.1f} s")


def blob_name(i: int) -> str:
    """The i-th filled name: sorted like its index, 12 characters like a real one."""
    return f"key-{i:08d}"


def real_blob_size(work: Path) -> int:
    """The size of a real x25519 key blob under a name as long as the bench's."""
    home = Home(work / "size-home")
    home.create("size", b"bench", Suite.X25519, kdf=KdfParams(memory_kib=8192, iterations=1))
    container = home.open("size", b"bench")
    store = open_store(str(work / "size-store"))
    blobs.generate(container, store, blob_name(0))
    size = len(store.get(blob_name(0), 1))
    shutil.rmtree(work / "size-home")
    shutil.rmtree(work / "size-store")
    return size


# -- backends ---------------------------------------------------------------------------


class Backend:
    """One store of one size, the bulk fill that bypasses it, and its bare floor."""

    kind = ""

    def __init__(self, work: Path, size: int, blob_size: int) -> None:
        self.work = work
        self.size = size
        self.blob_size = blob_size
        self.url = ""
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    def fill(self, n: int) -> None:
        """Put blobs 0..n-1 (generation 1) without the store's API: setup only."""
        raise NotImplementedError

    def settle(self) -> None:
        """Make the filled blobs durable, as a store that was written over time is."""

    def floor_put(self, name: str, data: bytes) -> None:
        """The same durable write as ``store.put(name, 1, data)``, as bare calls."""
        raise NotImplementedError

    def bare_names(self) -> int:
        """List the names without the store's API; return how many."""
        raise NotImplementedError

    def settings(self) -> str:
        """The durability settings the floor copies, for the report."""
        return ""

    def close(self) -> None:
        """Close connections and remove the store."""
        closer = getattr(self._store, "close", None)
        if closer is not None:
            closer()
        self._store = None


def _fsync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryBackend(Backend):
    kind = "directory"

    def __init__(self, work: Path, size: int, blob_size: int) -> None:
        super().__init__(work, size, blob_size)
        self.root = os.path.join(work, f"dir-{size}")
        os.mkdir(self.root, 0o700)
        self.url = self.root
        # As write_atomic does where Linux allows: an unnamed temp file named by linkat.
        self.unnamed = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")

    def fill(self, n: int) -> None:
        root = self.root
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        size = self.blob_size
        for i in range(n):
            folder = f"{root}/{blob_name(i)}"
            os.mkdir(folder, 0o700)
            fd = os.open(f"{folder}/1.kb", flags, 0o600)
            os.write(fd, os.urandom(size))
            os.close(fd)

    def settle(self) -> None:
        os.sync()

    def floor_put(self, name: str, data: bytes) -> None:
        root = self.root
        folder = f"{root}/{name}"
        os.mkdir(folder, 0o700)
        _fsync_folder(root)  # the new folder is durable in the root
        if self.unnamed:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.link(f"/proc/self/fd/{fd}", f"{folder}/1.kb", src_dir_fd=fd)  # linkat
            os.close(fd)
        else:
            tmp = f"{folder}/.1.kb.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.link(tmp, f"{folder}/1.kb")
            os.unlink(tmp)
            os.close(fd)
        _fsync_folder(folder)

    def bare_names(self) -> int:
        with os.scandir(self.root) as entries:
            return len(sorted(e.name for e in entries))

    def settings(self) -> str:
        kind = "unnamed (O_TMPFILE)" if self.unnamed else "named"
        return f"{kind} temp file; fsyncs: root, file, name folder"

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.root, ignore_errors=True)


class SqliteBackend(Backend):
    kind = "sqlite"
    # The store's own table (FORMAT.md 5.5): the store creates it, the bulk fill and the
    # floor write it.
    insert = f"INSERT INTO {BLOBS} (name, generation, data) VALUES (?, ?, ?)"
    listing = f"SELECT DISTINCT name FROM {BLOBS} ORDER BY name"

    def __init__(self, work: Path, size: int, blob_size: int) -> None:
        super().__init__(work, size, blob_size)
        self.path = os.path.join(work, f"store-{size}.db")
        self.url = f"sqlite:///{self.path}"
        # The store makes its schema on its first write: blob 0 goes through the API.
        self.store.put(blob_name(0), 1, os.urandom(blob_size))
        self._bare: sqlite3.Connection | None = None
        self.journal_mode = ""
        self.synchronous = -1

    def _connect(self) -> sqlite3.Connection:
        """A bare connection with the store's durability settings."""
        if self._bare is None:
            probe = sqlite3.connect(self.path)
            try:
                self.journal_mode = probe.execute("PRAGMA journal_mode").fetchone()[0]
            finally:
                probe.close()
            self.synchronous = self._store_synchronous()
            # Autocommit, as the store's connection: one INSERT is one transaction.
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._bare = conn
        return self._bare

    def _store_synchronous(self) -> int:
        """``synchronous`` is per connection: read it from the store's own."""
        conn = getattr(self.store, "_db", None)
        if not isinstance(conn, sqlite3.Connection):
            raise RuntimeError("the SQLite store keeps no connection in _db: update the bench")
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    def fill(self, n: int) -> None:
        conn = self._connect()
        size = self.blob_size
        conn.execute("BEGIN")
        rows = ((blob_name(i), 1, os.urandom(size)) for i in range(1, n))
        conn.executemany(self.insert, rows)
        conn.execute("COMMIT")

    def settle(self) -> None:
        self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def floor_put(self, name: str, data: bytes) -> None:
        self._connect().execute(self.insert, (name, 1, data))

    def bare_names(self) -> int:
        return len(self._connect().execute(self.listing).fetchall())

    def settings(self) -> str:
        self._connect()
        level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(self.synchronous, "?")
        return f"journal_mode={self.journal_mode}, synchronous={level}"

    def close(self) -> None:
        if self._bare is not None:
            self._bare.close()
            self._bare = None
        super().close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)


class PostgresBackend(Backend):
    kind = "postgresql"
    insert = f"INSERT INTO {BLOBS} (name, generation, data) VALUES (%s, %s, %s)"
    copy = f"COPY {BLOBS} (name, generation, data) FROM STDIN"
    listing = f"SELECT DISTINCT name FROM {BLOBS} ORDER BY name"

    def __init__(self, work: Path, size: int, blob_size: int, server: str) -> None:
        import psycopg  # noqa: PLC0415

        super().__init__(work, size, blob_size)
        self.server = server
        self.db = f"kbbench_{size}_{secrets.token_hex(4)}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db}"')
        self.url = urlunsplit(urlsplit(server)._replace(path=f"/{self.db}"))
        # The store makes its schema on its first write: blob 0 goes through the API.
        self.store.put(blob_name(0), 1, os.urandom(blob_size))
        # Autocommit, as the store's connection: one INSERT is one transaction.
        self._bare = psycopg.connect(self.url, autocommit=True)

    def fill(self, n: int) -> None:
        size = self.blob_size
        with self._bare.transaction(), self._bare.cursor() as cur, cur.copy(self.copy) as copy:
            for i in range(1, n):
                copy.write_row((blob_name(i), 1, os.urandom(size)))

    def settle(self) -> None:
        # What autovacuum would have done for a table that grew over time.
        self._bare.execute(f"VACUUM ANALYZE {BLOBS}")

    def floor_put(self, name: str, data: bytes) -> None:
        self._bare.execute(self.insert, (name, 1, data))

    def bare_names(self) -> int:
        return len(self._bare.execute(self.listing).fetchall())

    def settings(self) -> str:
        rows = [
            self._bare.execute(f"SHOW {knob}").fetchone()
            for knob in ("synchronous_commit", "fsync")
        ]
        shown = ", ".join(
            f"{k}={r[0] if r else '?'}"
            for k, r in zip(("synchronous_commit", "fsync"), rows, strict=True)
        )
        return f"one INSERT per transaction (autocommit); server {shown}"

    def close(self) -> None:
        import psycopg  # noqa: PLC0415

        self._bare.close()
        super().close()
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


# -- the measures -----------------------------------------------------------------------


def measure_gets(stores: list[Backend], n: int, warmup: int) -> dict[int, list[int]]:
    """``n`` gets of random stored blobs per store, the stores taken in turn each round."""
    rng = random.Random(13)
    out: dict[int, list[int]] = {b.size: [] for b in stores}
    for r in range(warmup + n):
        order = stores if r % 2 == 0 else stores[::-1]
        for b in order:
            name = blob_name(rng.randrange(b.size))
            store = b.store
            t0 = now()
            store.get(name, 1)
            took = now() - t0
            if r >= warmup:
                out[b.size].append(took)
    return out


# Puts and floor writes run in short blocks, not one by one: a SQLite connection that
# commits after another connection's commit finds the WAL changed and drops its page cache
# (~10 us on tmpfs), which one-by-one alternation would charge to every write of both.
PUT_BLOCK = 10


def measure_puts(
    stores: list[Backend], n: int, warmup: int, data: bytes
) -> dict[int, tuple[list[int], list[int]]]:
    """About ``n`` puts of new names and as many floor writes per store, in blocks of
    PUT_BLOCK, the first of each block untimed; the stores and the order of put and floor
    swap every round, so that drift hits both alike."""
    out: dict[int, tuple[list[int], list[int]]] = {b.size: ([], []) for b in stores}
    rounds = -(-n // (PUT_BLOCK - 1))
    for r in range(warmup + rounds):
        for b in stores if r % 2 == 0 else stores[::-1]:
            lib_s, floor_s = out[b.size]
            store = b.store

            def lib(i: int, store: Store = store) -> None:
                store.put(f"put-{i:07d}", 1, data)

            def floor(i: int, b: Backend = b) -> None:
                b.floor_put(f"floor-{i:07d}", data)

            pairs = ((lib, lib_s), (floor, floor_s))
            for fn, sink in pairs if r % 2 == 0 else pairs[::-1]:
                for j in range(PUT_BLOCK):
                    t0 = now()
                    fn(r * PUT_BLOCK + j)
                    took = now() - t0
                    if r >= warmup and j > 0:
                        sink.append(took)
    return out


def measure_names(b: Backend, budget_s: float) -> dict[str, Any]:
    """``names()`` and the bare listing, repeated while within ``budget_s`` (at least once)."""
    lib: list[int] = []
    bare: list[int] = []
    found = listed = 0
    spent = 0.0
    while not lib or (spent < budget_s and len(lib) < 5):
        t0 = now()
        found = len(b.store.names())
        lib.append(now() - t0)
        t0 = now()
        listed = b.bare_names()
        bare.append(now() - t0)
        spent += (lib[-1] + bare[-1]) / 1e9
    return {
        "names": found,
        "bare_names": listed,
        "runs": len(lib),
        "lib_median_ns": statistics.median(lib),
        "bare_median_ns": statistics.median(bare),
    }


def profile_ops(b: Backend, n: int, data: bytes, top: int = 14) -> dict[str, list[str]]:
    """cProfile ``n`` puts and ``n`` gets on ``b``: the top functions by own time."""
    out = {}
    rng = random.Random(7)
    ops: dict[str, Callable[[int], Any]] = {
        "put": lambda i: b.store.put(f"prof-{i:06d}", 1, data),
        "get": lambda _i: b.store.get(blob_name(rng.randrange(b.size)), 1),
    }
    for label, fn in ops.items():
        prof = cProfile.Profile()
        for i in range(n):
            prof.enable()
            fn(i)
            prof.disable()
        stats = pstats.Stats(prof)
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        rows = []
        for (filename, line, func), (_cc, ncalls, tt, ct, _callers) in raw.items():
            where = func if filename == "~" else f"{Path(filename).name}:{line}({func})"
            rows.append((tt, ct, ncalls, where))
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        out[label] = [f"total own time {total / n * 1e6:,.1f} us per op (profiled)"] + [
            f"{tt / n * 1e6:9.1f} own {ct / n * 1e6:9.1f} cum {nc / n:6.1f} calls  {w}"
            for tt, ct, nc, w in rows[:top]
        ]
    return out


# -- breakdown: where a put goes beyond its floor -------------------------------------


def _breakdown_rounds(variants: dict[str, Callable[[str], Any]], n: int) -> dict[str, float]:
    """Each variant ``n`` times in blocks of 20 (first untimed), the order reversed every
    round; median ns of each, keyed by label."""
    block = 20
    out: dict[str, list[int]] = {k: [] for k in variants}
    labels = list(variants)
    for r in range(n // (block - 1) + 2):
        for k in labels if r % 2 == 0 else labels[::-1]:
            fn = variants[k]
            for j in range(block):
                name = f"b{labels.index(k)}-{r:05d}-{j:02d}"
                t0 = now()
                fn(name)
                took = now() - t0
                if r >= 2 and j > 0:
                    out[k].append(took)
    return {k: float(statistics.median(v)) for k, v in out.items()}


def breakdown_directory(work: Path, n: int, blob: int) -> dict[str, float]:
    """The directory store's put against its floor plus, step by step, the system calls the
    store adds, and the put without its stale-temp-file scan."""
    import fcntl  # noqa: PLC0415

    import keyblob.atomic  # noqa: PLC0415

    b = DirectoryBackend(work, 1000, blob)
    b.fill(1000)
    store, root, data = b.store, b.root, os.urandom(blob)
    scan = keyblob.atomic.remove_stale_temp_files

    def floor_and_extras(name: str) -> None:
        os.stat(root)  # _ensure_root
        os.mkdir(f"{root}/{name}", 0o700)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(f"{root}/{name}", flags)  # _open_folder: no symlink
        os.fstat(fd)
        os.fchmod(fd, 0o700)
        _fsync_folder(root)
        with os.scandir(fd) as entries:  # remove_stale_temp_files
            list(entries)
        tmp = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=fd)
        fcntl.flock(tmp, fcntl.LOCK_EX | fcntl.LOCK_NB)  # _hold
        os.write(tmp, data)
        os.fsync(tmp)
        os.link(f"/proc/self/fd/{tmp}", "1.kb", src_dir_fd=tmp, dst_dir_fd=fd)
        os.close(tmp)
        os.fsync(fd)
        os.close(fd)

    def put_without_scan(name: str) -> None:
        keyblob.atomic.remove_stale_temp_files = lambda *_a, **_k: None  # type: ignore[assignment]
        try:
            store.put(name, 1, data)
        finally:
            keyblob.atomic.remove_stale_temp_files = scan

    variants: dict[str, Callable[[str], Any]] = {
        "floor": lambda name: b.floor_put(name, data),
        "floor + the store's extra system calls (no Python)": floor_and_extras,
        "store.put without the stale-temp scan": put_without_scan,
        "store.put": lambda name: store.put(name, 1, data),
    }
    try:
        return _breakdown_rounds(variants, n)
    finally:
        b.close()


class _PlainErrors:
    """SqliteStore._errors as a class instead of a generator context manager: the same
    lock, closed check and error translation (the change the breakdown measures)."""

    __slots__ = ("store", "verb")

    def __init__(self, store: Any, verb: str) -> None:
        self.store, self.verb = store, verb

    def __enter__(self) -> None:
        self.store._lock.acquire()
        try:
            self.store._refuse_if_closed()
        except BaseException:
            self.store._lock.release()
            raise

    def __exit__(self, kind: Any, e: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(e, sqlite3.Error):
                reason = sqlite._reason(e)
                raise StorageError(f"cannot {self.verb} {self.store.location}: {reason}") from e
        finally:
            self.store._lock.release()
        return False


def breakdown_sqlite(work: Path, n: int, blob: int) -> dict[str, float]:
    """The SQLite store's put and get against the floor and the store's own layers."""
    b = SqliteBackend(work, 10_000, blob)
    b.fill(10_000)
    b.settle()
    store, data = b.store, os.urandom(blob)
    b._connect()  # the floor's connection, opened before the timing
    db = store._db  # type: ignore[attr-defined]
    version = str(sql.SCHEMA_VERSION)
    plain = sqlite.SqliteStore(b.path)
    plain._errors = lambda verb: _PlainErrors(plain, verb)  # type: ignore[method-assign]
    rng = random.Random(5)

    def locked(name: str) -> None:
        with store._lock:  # type: ignore[attr-defined]
            db.execute(sqlite._INSERT, (name, 1, data, version))

    def errors(name: str) -> None:
        with store._errors("write to"):  # type: ignore[attr-defined]
            store._writable().execute(sqlite._INSERT, (name, 1, data, version))  # type: ignore[attr-defined]

    variants: dict[str, Callable[[str], Any]] = {
        "floor (bare connection, plain INSERT)": lambda name: b.floor_put(name, data),
        "store's connection, plain INSERT": lambda name: db.execute(b.insert, (name, 1, data)),
        "+ the version guard in the INSERT": lambda name: db.execute(
            sqlite._INSERT, (name, 1, data, version)
        ),
        "+ the store's RLock": locked,
        "+ _errors (generator context manager) + _writable": errors,
        "store._insert": lambda name: store._insert(name, 1, data),  # type: ignore[attr-defined]
        "store.put": lambda name: store.put(name, 1, data),
        "store.put, _errors as a class": lambda name: plain.put(name, 1, data),
        "store.get": lambda _n: store.get(blob_name(rng.randrange(10_000)), 1),
        "store.get, _errors as a class": lambda _n: plain.get(blob_name(rng.randrange(10_000)), 1),
    }
    try:
        return _breakdown_rounds(variants, n)
    finally:
        plain.close()
        b.close()


def print_breakdown(label: str, medians: dict[str, float], floor: str) -> None:
    print(f"\n-- breakdown: {label} (medians, us; ratio = floor / this)")
    base = medians[floor]
    for k, v in medians.items():
        print(f"   {us(v):>9}  {base / v:5.2f}  {k}")


# -- running ----------------------------------------------------------------------------


def make_backend(kind: str, work: Path, size: int, blob_size: int) -> Backend:
    if kind == "directory":
        return DirectoryBackend(work, size, blob_size)
    if kind == "sqlite":
        return SqliteBackend(work, size, blob_size)
    server = os.environ.get("KEYBLOB_TEST_PG", "")
    return PostgresBackend(work, size, blob_size, server)


def run_backend(
    kind: str, sizes: list[int], work: Path, args: argparse.Namespace, *, clock: Clock, blob: int
) -> dict[str, Any]:
    res: dict[str, Any] = {"sizes": sizes, "fill_s": {}, "settle_s": {}}
    stores: list[Backend] = []
    data = os.urandom(blob)
    try:
        for size in sizes:
            with clock.part(f"{kind}: fill {count(size)}"):
                b = make_backend(kind, work, size, blob)
                stores.append(b)
                t0 = time.monotonic()
                b.fill(size)
                res["fill_s"][size] = time.monotonic() - t0
                t0 = time.monotonic()
                b.settle()
                res["settle_s"][size] = time.monotonic() - t0
        res["settings"] = stores[0].settings()
        res["load_before"] = os.getloadavg()
        with clock.part(f"{kind}: get x {args.gets} per size"):
            gets = measure_gets(stores, args.gets, warmup=min(200, args.gets))
        res["get"] = {
            size: {"n": len(s), "p50_ns": pct(s, 0.50), "p99_ns": pct(s, 0.99)}
            for size, s in gets.items()
        }
        with clock.part(f"{kind}: put and floor x {args.puts} per size"):
            puts = measure_puts(stores, args.puts, warmup=2, data=data)
        res["put"] = {}
        for size, (lib_s, floor_s) in puts.items():
            lib_m, floor_m = statistics.median(lib_s), statistics.median(floor_s)
            res["put"][size] = {
                "n": len(lib_s),
                "lib_median_ns": lib_m,
                "lib_p99_ns": pct(lib_s, 0.99),
                "floor_median_ns": floor_m,
                "floor_p99_ns": pct(floor_s, 0.99),
                "ratio": floor_m / lib_m,  # put throughput / floor throughput
                "ratio_mean": statistics.fmean(floor_s) / statistics.fmean(lib_s),
            }
        res["names"] = {}
        for b in stores:
            with clock.part(f"{kind}: names at {count(b.size)}"):
                res["names"][b.size] = measure_names(b, budget_s=args.names_budget)
        if args.profile:
            with clock.part(f"{kind}: profile at {count(stores[0].size)}"):
                res["profile"] = profile_ops(stores[0], min(args.puts, 200), data)
        res["load_after"] = os.getloadavg()
        # Printed before the clean-up: removing 10^6 files can take many minutes.
        print_backend(kind, res)
    finally:
        with clock.part(f"{kind}: clean up"):
            for b in stores:
                b.close()
    return res


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "UNMET"


def print_header(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"== keyblob store bench ({res['mode']}) {m['date']}")
    print(f"   {m['nproc']} CPU, Python {m['python']}, SQLite {m['sqlite']}, {m['platform']}")
    print(f"   stores in {res['dir']} ({res['fs']}); load average at start {m['loadavg_at_start']}")
    print(f"   blobs: opaque random bytes of {res['blob_size']} B (a real x25519 key blob)")


def print_backend(kind: str, r: dict[str, Any]) -> None:
    """One backend's tables, with each target's verdict."""
    sizes = r["sizes"]
    print(f"\n-- {kind}: sizes {', '.join(count(s) for s in sizes)}; {r['settings']}")
    print(
        f"   load average before the measures {tuple(round(x, 2) for x in r['load_before'])},"
        f" after {tuple(round(x, 2) for x in r['load_after'])}"
    )
    fills = ", ".join(
        f"{count(s)} {r['fill_s'][s]:.1f} s + settle {r['settle_s'][s]:.1f} s" for s in sizes
    )
    print(f"   bulk fill (setup, not the Store API): {fills}")
    print(f"   {'blobs':>9} {'get n':>6} {'p50 us':>9} {'p99 us':>9}")
    for s in sizes:
        g = r["get"][s]
        print(f"   {count(s):>9} {g['n']:>6} {us(g['p50_ns']):>9} {us(g['p99_ns']):>9}")
    lo, hi = r["get"][sizes[0]], r["get"][sizes[-1]]
    for q in ("p50", "p99"):
        ratio = hi[f"{q}_ns"] / lo[f"{q}_ns"]
        print(
            f"   get {q} {count(sizes[-1])} / {count(sizes[0])}: {ratio:.2f}"
            f" (target <= {GET_TARGET}): {verdict(ratio <= GET_TARGET)}"
        )
    print(
        f"   {'blobs':>9} {'put n':>6} {'put us':>9} {'put/s':>8} {'p99 us':>9}"
        f" {'floor us':>9} {'floor/s':>8} {'p99 us':>9} {'ratio':>6} {'(mean)':>7}"
    )
    for s in sizes:
        p = r["put"][s]
        print(
            f"   {count(s):>9} {p['n']:>6} {us(p['lib_median_ns']):>9}"
            f" {1e9 / p['lib_median_ns']:>8,.0f} {us(p['lib_p99_ns']):>9}"
            f" {us(p['floor_median_ns']):>9} {1e9 / p['floor_median_ns']:>8,.0f}"
            f" {us(p['floor_p99_ns']):>9} {p['ratio']:>6.2f} {p['ratio_mean']:>7.2f}"
            f"  {verdict(p['ratio'] >= PUT_TARGET)}"
        )
    print(
        f"   ratio = put throughput / floor throughput (floor median / put median),"
        f" target >= {PUT_TARGET}; (mean): the same from the means"
    )
    print(f"   {'blobs':>9} {'names()':>10} {'per name':>9} {'bare':>10} {'runs':>5}")
    for s in sizes:
        n = r["names"][s]
        print(
            f"   {count(s):>9} {n['lib_median_ns'] / 1e6:>8,.1f}ms"
            f" {n['lib_median_ns'] / max(n['names'], 1):>7,.0f}ns"
            f" {n['bare_median_ns'] / 1e6:>8,.1f}ms {n['runs']:>5}"
        )
    for label, lines in r.get("profile", {}).items():
        print(f"   cProfile {label} at {count(sizes[0])}:")
        for line in lines:
            print(f"     {line}")
    sys.stdout.flush()


def print_parts(res: dict[str, Any]) -> None:
    print("\n-- time per part (s)")
    for label, took in res["parts"].items():
        print(f"   {took:8.1f}  {label}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 10^3 and 10^4: a smoke run")
    ap.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated, from: directory, sqlite, postgresql (default: all three;"
        " postgresql needs KEYBLOB_TEST_PG)",
    )
    ap.add_argument("--sizes", help="comma-separated blob counts (default 10^4,10^5,10^6)")
    ap.add_argument(
        "--pg-max", type=int, help="largest size for postgresql (default: all the sizes)"
    )
    ap.add_argument(
        "--dir-max", type=int, help="largest size for the directory store (default: all)"
    )
    ap.add_argument("--gets", type=int, help="measured gets per size (default 5000; quick 500)")
    ap.add_argument("--puts", type=int, help="puts and floor writes per size (300; quick 40)")
    ap.add_argument("--names-budget", type=float, default=2.0, help="seconds for names()")
    ap.add_argument("--dir", help="folder for the stores (default: the temp folder)")
    ap.add_argument("--profile", action="store_true", help="cProfile put and get")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the directory and SQLite puts layer by layer against their floors",
    )
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else list(QUICK_SIZES if args.quick else FULL_SIZES)
    )
    sizes.sort()
    args.gets = args.gets or (500 if args.quick else 5000)
    args.puts = args.puts or (40 if args.quick else 300)
    kinds = [k.strip() for k in args.backends.split(",") if k.strip()]
    unknown = set(kinds) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if "postgresql" in kinds and not os.environ.get("KEYBLOB_TEST_PG"):
        ap.error("postgresql needs KEYBLOB_TEST_PG: a server where the bench may create a db")
    parent = Path(args.dir or tempfile.gettempdir())

    clock = Clock()
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "argv": sys.argv[1:],
        "backends": {},
    }
    work = Path(tempfile.mkdtemp(prefix="keyblob-bench-store-", dir=parent))
    res["dir"] = str(parent)
    with contextlib.suppress(OSError):
        res["fs"] = next(
            line.split()[2]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == os.path.realpath(_mount_point(parent))
        )
    res.setdefault("fs", "?")
    try:
        res["blob_size"] = real_blob_size(work)
        print_header(res)
        for kind in kinds:
            mine = sizes
            cap = {"postgresql": args.pg_max, "directory": args.dir_max}.get(kind)
            if cap is not None:
                mine = [s for s in sizes if s <= cap] or [min(sizes)]
            if kind == "directory":
                # Every size's store exists at once: they must fit together.
                fs = os.statvfs(work)
                free, inodes = fs.f_bavail * fs.f_frsize, fs.f_favail
                fitting = [
                    s
                    for k, s in enumerate(mine)
                    if sum(mine[: k + 1]) * DIR_BYTES_PER_BLOB < free
                    and sum(mine[: k + 1]) * DIR_INODES_PER_BLOB < inodes
                ]
                if fitting != mine:
                    note = (
                        f"directory: {free / 2**30:.0f} GiB and {inodes:,} inodes free:"
                        f" sizes cut to {', '.join(count(s) for s in fitting)}"
                    )
                    print(f"   note: {note}")
                    res.setdefault("notes", []).append(note)
                mine = fitting or mine[:1]
            res["backends"][kind] = run_backend(
                kind, mine, work, args, clock=clock, blob=res["blob_size"]
            )
            res["parts"] = clock.parts
            if args.json:  # after each backend: a later one may take long or fail
                Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
        if args.breakdown:
            n = 200 if args.quick else 3000
            res["breakdown"] = {}
            for kind, fn in (("directory", breakdown_directory), ("sqlite", breakdown_sqlite)):
                with clock.part(f"{kind}: breakdown x {n}"):
                    res["breakdown"][kind] = fn(work, n, res["blob_size"])
                print_breakdown(kind, res["breakdown"][kind], next(iter(res["breakdown"][kind])))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["parts"] = clock.parts
    res["elapsed_s"] = time.monotonic() - clock.start
    print_parts(res)
    print(f"\n(total {res['elapsed_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


def _mount_point(path: Path) -> str:
    path = Path(os.path.realpath(path))
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
