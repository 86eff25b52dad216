"""Many users of one store at once, per backend (issue 13): 8 processes x 200 mixed
new/rotate/load operations on a few shared names, through the library.

What the users are: four containers, each in its own home (four machines of a team), that
trust each other and wrap every key for all four; two processes run on each home at once (two
jobs on one machine), so writers race both inside one home (its state lock) and across homes
(only the store's compare-and-set keeps them apart).  A lost compare-and-set (ConflictError)
is retried by the worker, as a user runs the command again (tests/store_workers.py).

Afterwards, from the store and the workers' logs: every name loads and verifies for every
container; its generations are exactly 1..N; each was reported written by exactly one
operation, with the key that loads from it now; every load returned the key written at the
generation it reported; nothing a worker reported written is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from keyblob import Home, IgnoredEntryWarning, KeyId, Suite, blobs, open_store
from keyblob.trust import TrustedSigner
from store_workers import PASSPHRASE, digest, public_file
from support import FAST_KDF

WORKERS = Path(__file__).resolve().parents[1] / "store_workers.py"
SRC = Path(blobs.__file__).resolve().parents[1]
HOMES = 4
PROCESSES = 8
OPERATIONS = 200
NAMES = ["alpha", "beta", "gamma", "delta"]


def _homes(tmp_path: Path) -> list[tuple[Path, str]]:
    """Four containers that trust one another."""
    made = []
    for i in range(HOMES):
        home = tmp_path / f"home{i}"
        Home(home).create(f"c{i}", PASSPHRASE, Suite.X25519, kdf=FAST_KDF)
        made.append((home, f"c{i}"))
    for home, name in made:
        container = Home(home).open(name, PASSPHRASE)
        for other_home, other in made:
            if other != name:
                pub = public_file(other_home, other)
                signer = TrustedSigner(
                    pub.signature_id, pub.suite, pub.signature, pub.exchange, pub.label, 0
                )
                container.update_state(lambda s, signer=signer: s.with_signer(signer))
    return made


def _run_together(mode: str, configs: list[dict[str, Any]]) -> list[Any]:
    """Start one worker per config (tests/store_workers.py), wait until each is ready, start
    them all at once, and return what each printed, as JSON."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKERS), mode, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        for config in configs
    ]
    try:
        # Everyone is unlocked and connected before anyone starts: the operations overlap.
        for worker in workers:
            assert worker.stdout is not None and worker.stdin is not None
            ready = worker.stdout.readline()
            assert ready == "ready\n", worker.communicate(timeout=60)[1]
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = []
        for worker in workers:
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err
            outputs.append(json.loads(out))
        return outputs
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def _run_workers(url: str, homes: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    configs = []
    for i in range(PROCESSES):
        home, name = homes[i % HOMES]
        configs.append(
            {
                "url": url,
                "home": str(home),
                "container": name,
                "peers": [[str(h), n] for h, n in homes],
                "seed": 1300 + i,
                "operations": OPERATIONS,
                "names": NAMES,
            }
        )
    return [entry for log in _run_together("mixed", configs) for entry in log]


def test_first_writers_make_the_schema_once(store_url: str) -> None:
    """Eight processes write to a store nothing has written to yet, at the same moment: a
    SQL store's schema is made by one of them, and every write succeeds."""
    configs = [{"url": store_url, "name": f"first{i}"} for i in range(PROCESSES)]
    assert _run_together("first-put", configs) == [[1]] * PROCESSES
    assert open_store(store_url).names() == sorted(c["name"] for c in configs)


REPLACE_ROUNDS = 300


def test_two_replacers_racing_exactly_one_wins(store_url: str) -> None:
    """Two processes replace the same old bytes at once, slot after slot: of each pair of
    compare-and-sets exactly one wins, and the slot holds the winner's bytes (FORMAT.md
    5.3, 5.5)."""
    store = open_store(store_url)
    for generation in range(1, REPLACE_ROUNDS + 1):
        store.put("shared", generation, b"base")
    configs = [
        {"url": store_url, "name": "shared", "me": me, "rounds": REPLACE_ROUNDS}
        for me in ("first", "second")
    ]
    first, second = (set(won) for won in _run_together("replace-race", configs))
    assert first.isdisjoint(second)
    assert first | second == set(range(1, REPLACE_ROUNDS + 1))
    for generation in range(1, REPLACE_ROUNDS + 1):
        winner = b"first" if generation in first else b"second"
        assert store.get("shared", generation) == winner


@pytest.mark.slow
def test_many_writers_lose_nothing(store_url: str, tmp_path: Path) -> None:
    homes = _homes(tmp_path)
    log = _run_workers(store_url, homes)
    assert len(log) == PROCESSES * OPERATIONS
    # The workers raced for real: some compare-and-set was lost and retried.
    assert sum(entry["conflicts"] for entry in log) > 0
    writes = [e for e in log if e["op"] != "load" and e["outcome"] == "ok"]
    # No generation was reported made twice: of two writers of one slot, one lost.
    made = Counter((e["name"], e["generation"]) for e in writes)
    assert [slot for slot, count in made.items() if count > 1] == []
    written = {(e["name"], e["generation"]): e for e in writes}

    store = open_store(store_url)
    containers = [Home(home).open(name, PASSPHRASE) for home, name in homes]
    assert store.names() == sorted({name for name, _ in written})
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)
        for name in store.names():
            generations = store.generations(name)
            # 1..N, no gap, and every stored generation was reported by its writer ...
            assert generations == list(range(1, len(generations) + 1)), name
            assert {g for n, g in written if n == name} == set(generations), name
            # ... and holds the key the writer reported, verified and unwrapped.
            for generation in generations:
                entry = written[name, generation]
                key = blobs.open_stored(
                    containers[generation % HOMES],
                    store,
                    name,
                    generation,
                    key_id=KeyId.from_hex(entry["key_id"]),
                ).key
                assert key is not None and digest(key) == entry["digest"], (name, generation)
            # Every container loads the newest.
            for container in containers:
                assert blobs.load(container, store, name).generation == generations[-1]
    # Every load returned a key that was written, at the generation it was written as.
    for entry in log:
        if entry["op"] == "load" and entry["outcome"] == "ok":
            assert written[entry["name"], entry["generation"]]["digest"] == entry["digest"]
    # The mix ran: names made, rotated many times, loaded.
    outcomes = Counter((e["op"], e["outcome"]) for e in log)
    assert outcomes["new", "ok"] == len(NAMES)
    assert outcomes["rotate", "ok"] > 100 and outcomes["load", "ok"] > 100
