"""Per-key export and import per second for the pq suite, against x25519 and rsa-3072, in
one run (issue 16 item 5).

Run from the repository root (the project installed in the active venv)::

    python bench/bench_pq.py                 # full run, about 40 s on 2 cores
    python bench/bench_pq.py --quick         # smoke run
    python bench/bench_pq.py --json out.json

Three software containers in one home on a tmpfs (/dev/shm when present), each with its own
directory store there (as bench_core.py does, to keep the disk out): ``x25519``, ``rsa``
(3072 bits, the suite's default) and ``pq``.  Per key:

- ``export``: ``blobs.generate`` of a fresh name (new key, wrap to the container's own
  exchange key, sign, store, state update);
- ``import``: ``blobs.load`` of one of 16 stored names (read, parse, verify, state check,
  unwrap).

Beside them, the suite's own cryptography on the same keys (``suites.wrap`` + ``suites.sign``
of a blob-sized message for export; ``suites.verify`` + ``suites.unwrap`` for import), so
that the share of the suite's primitives in each operation shows.

Rounds: each case runs a block of calls, the cases in turn (order rotated every round); a
block gives its median; the ratios pq / x25519 and pq / rsa are taken within a round (the
machine is shared: rounds differ more than cases), then their median and range over the
rounds are shown.  Nothing is asserted; everything is reported.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_core import CHEAP_KDF, PASSPHRASE, POOL, machine, now
from keyblob import blobs
from keyblob.keys import Suite
from keyblob.providers import suites
from keyblob.providers.software import Home
from keyblob.storage import open_store

SUITES = {"x25519": Suite.X25519, "rsa": Suite.RSA, "pq": Suite.PQ}
OPS = ("export", "import")
KINDS = ("keyblob", "suite crypto")


class Setup:
    """The three containers, their stores and their pools of stored names, on ``root``."""

    def __init__(self, root: Path) -> None:
        home = Home(root / "home")
        self.containers: dict[str, Any] = {}
        self.stores: dict[str, Any] = {}
        for label, suite in SUITES.items():
            home.create(label, PASSPHRASE, suite, bits=3072, kdf=CHEAP_KDF)
            self.containers[label] = home.open(label, PASSPHRASE)
            self.stores[label] = open_store(str(root / f"blobs-{label}"))
        self.pool = [f"pool{i}" for i in range(POOL)]
        for label, c in self.containers.items():
            for name in self.pool:
                blobs.generate(c, self.stores[label], name)
        self.counter = 0

    def case(self, label: str, op: str, kind: str) -> Callable[[int], Any]:
        c, store = self.containers[label], self.stores[label]
        if kind == "keyblob":
            if op == "export":

                def export(i: int) -> None:
                    self.counter += 1
                    blobs.generate(c, store, f"n{self.counter}")

                return export
            return lambda i: blobs.load(c, store, self.pool[i % POOL])
        suite = SUITES[label]
        public = suites.load_exchange_public(suite, c.exchange_public)
        verifier = suites.load_signature_public(suite, c.signature_public)
        context = secrets.token_bytes(120)  # a wrap context: label, core header, recipient id
        message = secrets.token_bytes(200)  # a one-recipient blob's signed bytes, about
        wrapped = suites.wrap(public, secrets.token_bytes(32), context)
        signature = c.sign(message)
        if op == "export":
            return lambda i: (
                suites.wrap(public, secrets.token_bytes(32), context),
                c.sign(message),
            )
        return lambda i: (suites.verify(verifier, signature, message), c.unwrap(wrapped, context))


def run(setup: Setup, rounds: int, block: int) -> dict[str, Any]:
    cases = [(label, op, kind) for label in SUITES for op in OPS for kind in KINDS]
    samples: dict[tuple[str, str, str], list[float]] = {k: [] for k in cases}
    fns = {k: setup.case(*k) for k in cases}
    for fn in fns.values():  # warm up every path once
        for i in range(3):
            fn(i)
    for r in range(rounds):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        for key in order:
            times = []
            for i in range(block):
                t0 = now()
                fns[key](i)
                times.append(now() - t0)
            samples[key].append(float(statistics.median(times)))
    out: dict[str, Any] = {"cases": {}, "ratios": {}}
    for (label, op, kind), values in samples.items():
        median = statistics.median(values)
        out["cases"][f"{label} {op} {kind}"] = {
            "median_us": median / 1000,
            "per_second": 1e9 / median,
            "rounds_us": [v / 1000 for v in values],
        }
    for op in OPS:
        for kind in KINDS:
            pq = samples[("pq", op, kind)]
            for base in ("x25519", "rsa"):
                ratios = [p / b for p, b in zip(pq, samples[(base, op, kind)], strict=True)]
                out["ratios"][f"{op} {kind} pq/{base}"] = {
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                }
    return out


def report(res: dict[str, Any]) -> None:
    print(f"# bench_pq: {res['machine']['date']}, rounds {res['rounds']} x block {res['block']}")
    print(f"# cryptography {res['machine']['cryptography']}, {res['machine']['openssl']}")
    print(f"# load average at start {res['machine']['loadavg_at_start']}")
    print()
    print("| suite | op | keyblob µs | keyblob /s | suite crypto µs | crypto share |")
    print("|---|---|---|---|---|---|")
    for label in SUITES:
        for op in OPS:
            lib = res["cases"][f"{label} {op} keyblob"]
            raw = res["cases"][f"{label} {op} suite crypto"]
            share = raw["median_us"] / lib["median_us"]
            print(
                f"| {label} | {op} | {lib['median_us']:,.1f} | {lib['per_second']:,.0f} | "
                f"{raw['median_us']:,.1f} | {share:.0%} |"
            )
    print()
    print("| ratio (time, pq over base) | median | range over rounds |")
    print("|---|---|---|")
    for name, r in res["ratios"].items():
        print(f"| {name} | {r['median']:.2f}x | {r['min']:.2f}-{r['max']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run (3 rounds of 5)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    rounds, block = (3, 5) if args.quick else (args.rounds, args.block)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="bench-pq-", dir=base))
    try:
        info = machine()
        setup = Setup(root)
        res = {"machine": info, "rounds": rounds, "block": block, **run(setup, rounds, block)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
