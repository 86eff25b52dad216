"""``store check`` of many blobs: one process against a pool of two, against the raw
Ed25519 verify of the same blobs divided by the cores (issue 13's performance target).

Run from the repository root (the project installed, e.g. editable, in the active venv)::

    python bench/bench_check.py              # 10^5 blobs, ~4 min on 2 cores
    python bench/bench_check.py --quick      # 10^4 blobs, well under a minute

The store: ``--names`` keys of ``--generations`` generations each (default 10,000 x 10 =
10^5 blobs), made by one x25519 container through the library (``blobs._export``, then
``DirectoryStore.put``: the real signed blobs, without the cost of ``rotate``'s checks), in a
directory store on a tmpfs (/dev/shm) so that the figures show CPU, not the disk.

Measured, interleaved over ``--rounds`` rounds (order swapped every round), medians:

- ``check 1 proc``: ``blobs.check_store(jobs=1)``: read, parse, check, all in this process;
- ``check 2 proc``: ``blobs.check_store(jobs=2)``: this process reads, two workers check,
  the pool's start-up included (a fresh forkserver each time, as for a new command);
- ``raw verify``: ``Ed25519PublicKey.verify`` of the same (signature, message) pairs in a
  bare loop, parsed beforehand; ``raw / cores`` divides it by the cores used (2).

Targets: check 1 proc / check 2 proc >= 1.7; check 2 proc / (raw / cores) <= 1.3.

Each is reported twice: as measured (wall time), and as it would be on two idle cores, from
the CPU time of every process involved (the workers' included: they are reaped with the
forkserver): a pool of two on idle cores takes its CPU time / 2.  On a machine whose other
work leaves the pool less than two cores (the load average is printed), only the second
says what the code does.

Then the break-even that sets ``keyblob.pool.MIN_POOL_ITEMS``: ``check_entries`` of the
first n entries in this process and on a fresh pool of two, for growing n.  And the CLI once
each way (``keyblob store check --jobs 1`` / default), output to /dev/null.

Nothing is asserted; everything is reported.
"""

from __future__ import annotations

import argparse
import multiprocessing.forkserver
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyblob import Algorithm, Home, KdfParams, Suite, blobs, pool
from keyblob.storage.directory import DirectoryStore

PASSPHRASE = b"bench passphrase, not a secret"
FLOOR_KDF = KdfParams(memory_kib=8192, iterations=1, lanes=1)
CORES = 2


def build(root: Path, names: int, generations: int) -> tuple[Home, DirectoryStore]:
    home = Home(root / "home")
    container = home.create("default", PASSPHRASE, Suite.X25519, kdf=FLOOR_KDF)
    store = DirectoryStore(root / "store")
    recipients = blobs._recipient_keys(container, [])
    for i in range(names):
        name = f"key-{i:06d}"
        for generation in range(1, generations + 1):
            encoded, _ = blobs._export(
                container,
                name=name,
                generation=generation,
                algorithm=Algorithm.AES_256_GCM,
                recipients=recipients,
                key=None,
                random=secrets.token_bytes,
                now=lambda: 1_700_000_000,
            )
            store.put(name, generation, encoded)
        container.update_state(lambda s, n=name: s.seen(n, generations))
    return home, store


def fresh_pool() -> None:
    """Stop the forkserver (and reap it, with the CPU time of the workers it reaped): the
    next pool starts anew, as a new keyblob command does."""
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        server._stop()


def load() -> str:
    """The 1-minute load average: other work on the cores takes them from the pool."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(work) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process and every worker) of ``work``.  The
    workers are the forkserver's children: their CPU time is counted once the forkserver
    is stopped and reaped (RUSAGE_CHILDREN includes the descendants each child reaped)."""
    fresh_pool()
    cpu, children, started = time.process_time(), _children_cpu(), time.perf_counter()
    work()
    wall = time.perf_counter() - started
    fresh_pool()
    return wall, time.process_time() - cpu + _children_cpu() - children


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=10_000)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1,000 x 10 blobs, 2 rounds")
    args = p.parse_args()
    if args.quick:
        args.names, args.rounds = 1_000, 2
    total = args.names * args.generations
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="kb-bench-check-", dir=base))
    started = time.perf_counter()
    try:
        print(
            f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
            f"{os.cpu_count()} cores, start method {pool._context().get_start_method()}, "
            f"load average {load()}"
        )
        home, store = build(root, args.names, args.generations)
        print(
            f"built {total:,} blobs ({args.names:,} names x {args.generations}) in "
            f"{time.perf_counter() - started:.1f} s in {root}"
        )
        container = home.open("default", PASSPHRASE)
        public = ed25519.Ed25519PublicKey.from_public_bytes(container.signature_public)
        pairs = []
        for name in store.names():
            for generation in store.generations(name):
                blob = blobs.decode(store.get(name, generation))
                pairs.append((blob.signature, blob.signed_message()))

        def raw() -> None:
            for signature, message in pairs:
                public.verify(signature, message)

        def check(jobs: int) -> None:
            entries = blobs.check_store(container, store, jobs=jobs)
            if len(entries) != total or not all(e.ok for e in entries):
                raise SystemExit("the check did not pass every blob")

        runs: dict[str, list[tuple[float, float]]] = {"one": [], "two": [], "raw": []}
        for r in range(args.rounds):
            order = ["one", "two", "raw"] if r % 2 == 0 else ["raw", "two", "one"]
            for which in order:
                work = raw if which == "raw" else (lambda j=1 if which == "one" else 2: check(j))
                runs[which].append(timed(work))
        wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
        print(f"\nload average after the rounds: {load()}")
        print(f"\nstore check of {total:,} blobs, medians of {args.rounds} rounds (s):")
        print("                   wall      CPU (all processes)")
        for key, label in (("one", "check 1 proc"), ("two", "check 2 proc"), ("raw", "raw verify")):
            print(f"  {label:14s} {wall[key]:8.2f}  {cpu[key]:8.2f}")
        per_verify = cpu["raw"] / total * 1e6
        print(f"  raw / cores    {wall['raw'] / CORES:8.2f}  ({per_verify:.1f} us CPU per verify)")
        print("  measured (wall):")
        speedup = wall["one"] / wall["two"]
        print(f"    1 proc / 2 proc             {speedup:5.2f}   (target >= 1.7)")
        ratio = wall["two"] / (wall["raw"] / CORES)
        print(f"    2 proc / (raw / cores)      {ratio:5.2f}   (target <= 1.3)")
        print("  on 2 idle cores (the CPU time shared evenly: what the load above hides):")
        print(f"    1 proc / 2 proc             {cpu['one'] / (cpu['two'] / CORES):5.2f}")
        print(f"    2 proc / (raw / cores)      {cpu['two'] / cpu['raw']:5.2f}")
        print(f"  1 proc / raw (CPU)            {cpu['one'] / cpu['raw']:5.2f}")
        print(f"  pool CPU / 1 proc CPU         {cpu['two'] / cpu['one']:5.2f}  (the pool's cost)")
        print(f"  all runs (wall, CPU): {runs}")

        print("\nbreak-even (check_entries of the first n entries; pool started fresh):")
        start_wall, start_cpu = timed(
            lambda: list(pool.ordered_map(blobs._check_items, None, [], workers=CORES))
        )
        print(
            f"  starting a pool of 2: {start_wall * 1e3:.0f} ms wall, {start_cpu * 1e3:.0f} ms CPU"
        )
        alone_us = cpu["one"] / total
        pooled_us = cpu["two"] / total / CORES
        saved = alone_us - pooled_us
        even = f"{start_wall / saved:,.0f} entries" if saved > 0 else "never"
        print(
            f"  per entry: {alone_us * 1e6:.0f} us in process, {pooled_us * 1e6:.0f} us on the "
            f"pool of 2 (idle cores): break-even at {even}"
        )
        listing = [(n, store.generations(n)) for n in store.names()]
        flat = [(n, g) for n, gs in listing for g in gs]
        for n in (250, 500, 1000, 1500, 2000, 4000, 8000):
            if n > total:
                break
            part = [(name, [g for nn, g in flat[:n] if nn == name]) for name, _ in listing]
            part = [(name, gs) for name, gs in part if gs]
            times: dict[int, list[float]] = {}
            for jobs in (1, 2, 1, 2):
                t, _ = timed(
                    lambda j=jobs, some=part: list(
                        blobs.check_entries(container, store, some, jobs=j)
                    )
                )
                times.setdefault(jobs, []).append(t)
            alone, pooled = min(times[1]), min(times[2])
            print(
                f"  n={n:5d}  in process {alone * 1e3:7.1f} ms  pool of 2 {pooled * 1e3:7.1f} ms"
                f"  {'pool' if pooled < alone else 'in process'} wins (wall)"
            )
        print(f"  (keyblob.pool.MIN_POOL_ITEMS = {pool.MIN_POOL_ITEMS})")

        print("\nthe CLI, keyblob store check (output to /dev/null, one run each, s):")
        env = {
            **os.environ,
            "KEYBLOB_HOME": str(root / "home"),
            "KEYBLOB_STORE": str(root / "store"),
            "KEYBLOB_PASSPHRASE": PASSPHRASE.decode(),
        }
        for label, extra in (("--jobs 1", ["--jobs", "1"]), ("default (2)", [])):
            argv = [sys.executable, "-m", "keyblob", "store", "check", *extra]
            t, _ = timed(
                lambda a=argv: subprocess.run(a, env=env, stdout=subprocess.DEVNULL, check=True)
            )
            print(f"  {label:12s} {t:6.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
