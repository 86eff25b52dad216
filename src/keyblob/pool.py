"""The worker processes of whole-store work (``store check``, ``store copy``): the signature
checks of many blobs spread over the cores, with nothing secret in any worker.

What this module owns: how workers are started, how many, when a pool is worth starting at
all, and an ordered map with a bounded number of chunks in flight.  It knows no blob: the
caller gives a function (importable by name, as pickling needs) and the data it runs on.

- **No fork.**  A worker never shares the parent's memory, where the unlocked container's
  private keys are: it is started with ``forkserver`` (a fresh interpreter, which forks the
  workers from itself, never from the parent; Linux and macOS) or, where there is none,
  ``spawn`` (Windows).  ``fork`` would copy every key into every worker.
- **Only what is passed.**  A worker gets one shared value when it starts and then chunks of
  items, all pickled: a type that refuses pickling (an unlocked container, a session key)
  cannot cross by mistake.  The caller passes public data only (keyblob.blobs.CheckPolicy).
- **No inherited secret.**  A new interpreter inherits the environment:
  ``KEYBLOB_PASSPHRASE`` (and ``PGPASSWORD``) are taken out of it for the instant the
  workers are started, and put back.
- Ctrl-C (SIGINT) reaches the parent, which stops the pool; workers ignore it.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from keyblob.errors import KeyblobError

__all__ = ["MAX_WORKERS", "MIN_POOL_ITEMS", "available_workers", "ordered_map", "workers_for"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: Below this many items the work runs in the calling process: starting the workers (the
#: forkserver's interpreter and its imports, then one fork per worker: 200-330 ms of wall
#: time here) costs more than a second core saves on fewer blobs (about 80 us per x25519
#: entry), a break-even of 2,500-4,000 entries.  Measured with bench/bench_check.py
#: ("break-even"; bench/README.md); the upper end, as a pool that barely pays is not worth
#: its processes.
MIN_POOL_ITEMS = 4000

#: The parent reads the store alone, so past a few workers it is the bottleneck (measured
#: only up to 2 cores: the cap keeps a 64-core server from starting 64 interpreters).
MAX_WORKERS = 8

#: Variables a worker must not inherit: the container's passphrase, a database password.
SECRET_VARIABLES = ("KEYBLOB_PASSPHRASE", "PGPASSWORD")

# Seconds a started worker waits for the others (a worker that cannot start at all ends the
# pool with BrokenProcessPool instead of a hang).
_START_TIMEOUT = 60

# Chunks in flight per worker: one running, one queued, so that no worker waits for the
# parent between chunks; more would only hold more blobs in memory.
_IN_FLIGHT_PER_WORKER = 2


def available_workers() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one), at most
    :data:`MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity call
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def workers_for(count: int, requested: int | None = None) -> int:
    """How many worker processes ``count`` items get: 1 means "in this process, no pool".

    ``requested`` (``--jobs``) is taken as given, even for a few items; without it, a pool of
    :func:`available_workers` is started only for :data:`MIN_POOL_ITEMS` items or more.
    """
    if requested is not None:
        return max(1, requested)
    return available_workers() if count >= MIN_POOL_ITEMS else 1


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _without_secret_variables() -> Iterator[None]:
    """While the workers (and a forkserver) start, the secret variables are not in the
    environment they copy; afterwards they are back as they were."""
    saved = {name: os.environ.pop(name) for name in SECRET_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# In a worker: the shared value it was started with.
_shared: Any = None


def _start_worker(shared: Any, started: threading.Barrier) -> None:
    global _shared  # noqa: PLW0603 - one value per worker process, set once at its start
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _shared = shared
    # A worker holds its own end of the task queue open, so it would wait for tasks for
    # ever once the parent is killed (SIGKILL, a crash), and keep the forkserver alive:
    # it watches the parent (the process that asked for it, not the forkserver) instead.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    # No worker takes a task before all are started: so each of the first submits starts
    # a new one (the executor starts workers only while none is idle), and all of them
    # start while the secret variables are out of the environment.
    started.wait(timeout=_START_TIMEOUT)


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()
    os._exit(1)


def _run_chunk(function: Callable[[Any, list[Any]], list[Any]], chunk: list[Any]) -> list[Any]:
    return function(_shared, chunk)


def _ready() -> None:
    """A no-op task: one per worker, submitted first, so that every worker starts at a
    known moment (see :func:`_start_worker`)."""


def ordered_map(
    function: Callable[[S, list[T]], list[R]],
    shared: S,
    chunks: Iterable[list[T]],
    *,
    workers: int,
) -> Generator[R, None, None]:
    """``function(shared, chunk)`` for each chunk, results yielded in the chunks' order.

    With ``workers`` of 1, in this process; else on that many worker processes, with at most
    two chunks per worker read ahead of the results (memory stays bounded, however large
    the store).  ``function`` must be a module-level function; it should turn expected
    failures into results, as an exception it raises ends the map here.

    Raises:
        KeyblobError: a worker process ended abnormally (killed, out of memory).
    """
    if workers <= 1:
        for chunk in chunks:
            yield from function(shared, chunk)
        return
    if function.__module__ != "__main__" and _context().get_start_method() == "forkserver":
        # Imported once in the forkserver, not once per worker.
        _context().set_forkserver_preload(["__main__", function.__module__])
    context = _context()
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(shared, context.Barrier(workers)),
    )
    try:
        with _without_secret_variables():
            for ready in [executor.submit(_ready) for _ in range(workers)]:
                ready.result()
        pending: collections.deque[Future[list[R]]] = collections.deque()
        source = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < workers * _IN_FLIGHT_PER_WORKER:
                try:
                    chunk = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(executor.submit(_run_chunk, function, chunk))
            if not pending:
                return
            yield from pending.popleft().result()
    except BrokenProcessPool as e:
        raise KeyblobError(
            "a worker process checking signatures ended abnormally (killed, or out of "
            "memory); nothing was decided from its part",
            hints=("run the command again; --jobs 1 checks in this process only",),
        ) from e
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
