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
    """The next pool starts its forkserver anew, as a new keyblob command does."""
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        server._stop()


def load() -> str:
    """The 1-minute load average: other work on the cores takes them from the pool."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def timed(work) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


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
            fresh_pool()
            entries = blobs.check_store(container, store, jobs=jobs)
            if len(entries) != total or not all(e.ok for e in entries):
                raise SystemExit("the check did not pass every blob")

        runs: dict[str, list[float]] = {"one": [], "two": [], "raw": []}
        for r in range(args.rounds):
            order = ["one", "two", "raw"] if r % 2 == 0 else ["raw", "two", "one"]
            for which in order:
                work = raw if which == "raw" else (lambda j=1 if which == "one" else 2: check(j))
                runs[which].append(timed(work))
        one, two, rawt = (statistics.median(runs[k]) for k in ("one", "two", "raw"))
        print(f"\nload average after the rounds: {load()}")
        print(f"\nstore check of {total:,} blobs, medians of {args.rounds} rounds (s):")
        print(f"  check 1 proc     {one:8.2f}   ({total / one:,.0f} blobs/s)")
        print(f"  check 2 proc     {two:8.2f}   ({total / two:,.0f} blobs/s)")
        print(f"  raw verify       {rawt:8.2f}   ({rawt / total * 1e6:.1f} us per verify)")
        print(f"  raw / cores      {rawt / CORES:8.2f}")
        print(f"  speed-up, 1 proc / 2 proc         {one / two:5.2f}   (target >= 1.7)")
        print(f"  2 proc / (raw / cores)            {two / (rawt / CORES):5.2f}   (target <= 1.3)")
        print(f"  1 proc / raw                      {one / rawt:5.2f}")
        print(f"  all runs: {', '.join(f'{k} {v}' for k, v in runs.items())}")

        print("\nbreak-even (check_entries of the first n entries; pool started fresh):")
        listing = [(n, store.generations(n)) for n in store.names()]
        flat = [(n, g) for n, gs in listing for g in gs]
        for n in (250, 500, 1000, 1500, 2000, 4000, 8000):
            if n > total:
                break
            part = [(name, [g for nn, g in flat[:n] if nn == name]) for name, _ in listing]
            part = [(name, gs) for name, gs in part if gs]
            times = {}
            for jobs in (1, 2, 1, 2):
                fresh_pool()
                t = timed(
                    lambda j=jobs, some=part: list(
                        blobs.check_entries(container, store, some, jobs=j)
                    )
                )
                times.setdefault(jobs, []).append(t)
            alone, pooled = min(times[1]), min(times[2])
            print(
                f"  n={n:5d}  in process {alone * 1e3:7.1f} ms  pool of 2 {pooled * 1e3:7.1f} ms"
                f"  {'pool' if pooled < alone else 'in process'} wins"
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
            t = timed(
                lambda a=argv: subprocess.run(a, env=env, stdout=subprocess.DEVNULL, check=True)
            )
            print(f"  {label:12s} {t:6.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
