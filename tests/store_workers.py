"""The processes the store torture tests start (tests/contract/test_store_concurrency.py and
test_store_crash.py): ``python tests/store_workers.py MODE CONFIG`` with CONFIG a JSON object.

- ``mixed``: one user of a shared store: unlock a container, open the store from its URL, say
  ``ready``, wait for a line on stdin, run random new/rotate/load operations through the
  library, retrying a lost compare-and-set (ConflictError) itself, and print what happened as
  one JSON list.
- ``first-put``: open a store nothing has written to yet, and put one item on the start line.
- ``replace-race``: open the store, say ``ready``, and on the start line try, for each
  generation of ``rounds``, to replace ``base`` with this worker's own bytes; print which it
  won as one JSON list.
- ``zygote``: import and unlock once, then for every line read on stdin fork one writer, print
  ``pid N``, wait for it (the test SIGKILLs it) and print ``exit STATUS``.  The writer opens
  the store itself, says ``ready`` and writes until it is killed.  Forking a prepared process
  makes each of the hundreds of kills cost milliseconds instead of a Python start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from keyblob import (
    Home,
    IgnoredEntryWarning,
    PublicKeyFile,
    SessionKey,
    SoftwareContainer,
    UsageError,
    blobs,
    open_store,
)
from keyblob.errors import ConflictError, NotFoundError, ReplaceConflictError
from keyblob.storage import MAX_ITEM_SIZE

# Not imported from support: this file runs as a script, without pytest's path.
PASSPHRASE = b"correct horse battery staple"
#: A lost compare-and-set is retried; this many in a row for one operation is a livelock.
MAX_RETRIES = 200
OPERATIONS = ("new", "rotate", "load")
WEIGHTS = (1, 2, 2)


def say(line: str) -> None:
    """One line on stdout in one write: a zygote and its writer share the pipe, and with
    PYTHONUNBUFFERED print() writes the text and its newline apart."""
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def payload(generation: int) -> bytes:
    """The largest item a store takes, saying in every 8-byte word which generation it is."""
    return generation.to_bytes(8, "big") * (MAX_ITEM_SIZE // 8)


def digest(key: SessionKey) -> str:
    """What the logs say about a key: a hash, so that equal keys can be compared."""
    return hashlib.sha256(key.unsafe_raw_bytes()).hexdigest()


def public_file(home: Path, name: str) -> PublicKeyFile:
    suite, exchange, signature = Home(home).public_keys(name)
    return PublicKeyFile(suite, name, exchange, signature)


def _operate(
    container: SoftwareContainer, store: Any, op: str, name: str, peers: list[PublicKeyFile]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"op": op, "name": name, "conflicts": 0}
    while True:
        try:
            if op == "new":
                key = blobs.generate(container, store, name, to=peers)
            elif op == "rotate":
                key = blobs.rotate(container, store, name)
            else:
                key = blobs.load(container, store, name)
        except ConflictError:
            # Another writer took the generation first: what a user does, run it again.
            entry["conflicts"] += 1
            if entry["conflicts"] > MAX_RETRIES:
                raise
            continue
        except UsageError as e:
            if op != "new" or "exists already" not in str(e):
                raise
            entry["outcome"] = "exists"
        except NotFoundError:
            if op == "new":
                raise
            entry["outcome"] = "absent"
        else:
            entry.update(
                outcome="ok", generation=key.generation, key_id=key.key_id.hex, digest=digest(key)
            )
        return entry


def mixed(config: dict[str, Any]) -> None:
    warnings.simplefilter("error", IgnoredEntryWarning)  # nothing in the store is damaged
    container = Home(Path(config["home"])).open(config["container"], PASSPHRASE)
    peers = [public_file(Path(home), name) for home, name in config["peers"]]
    store = open_store(config["url"])
    store.names()  # connected before the start line
    rng = random.Random(config["seed"])
    print("ready", flush=True)
    sys.stdin.readline()
    log = []
    for _ in range(config["operations"]):
        op = rng.choices(OPERATIONS, WEIGHTS)[0]
        log.append(_operate(container, store, op, rng.choice(config["names"]), peers))
    print(json.dumps(log), flush=True)


def first_put(config: dict[str, Any]) -> None:
    """Open the store (nothing made yet), say ``ready``, and on the start line put one item:
    many of these at once race to create a database's schema."""
    store = open_store(config["url"])
    print("ready", flush=True)
    sys.stdin.readline()
    store.put(config["name"], 1, b"first")
    print(json.dumps(store.generations(config["name"])), flush=True)


def replace_race(config: dict[str, Any]) -> None:
    store = open_store(config["url"])
    store.latest(config["name"])  # connected before the start line
    print("ready", flush=True)
    sys.stdin.readline()
    mine = config["me"].encode()
    won = []
    for generation in range(1, config["rounds"] + 1):
        try:
            store.replace(config["name"], generation, b"base", mine)
        except ReplaceConflictError:
            continue
        won.append(generation)
    print(json.dumps(won), flush=True)


def _put_forever(config: dict[str, Any], _: SoftwareContainer | None) -> None:
    store = open_store(config["url"])
    generation = (store.latest(config["name"]) or 0) + 1
    say("ready")
    while True:
        store.put(config["name"], generation, payload(generation))
        generation += 1


def _rotate_forever(config: dict[str, Any], container: SoftwareContainer | None) -> None:
    assert container is not None
    store = open_store(config["url"])
    store.latest(config["name"])  # connected before "ready"
    say("ready")
    while True:
        blobs.rotate(container, store, config["name"])


def _replace_forever(config: dict[str, Any], _: SoftwareContainer | None) -> None:
    """Replace ``name`` generation 1, ``payload(n)``, with ``payload(n + 1)``, forever."""
    store = open_store(config["url"])
    current = store.get(config["name"], 1)
    say("ready")
    while True:
        n = int.from_bytes(current[:8], "big")
        following = payload(n + 1)
        store.replace(config["name"], 1, current, following)
        current = following


def _rewrap_forever(config: dict[str, Any], _: SoftwareContainer | None) -> None:
    """``keyblob rewrap --all`` over and over, with the container as it is now (the test
    rotates its keys between kills: the zygote's copy would be stale)."""
    container = Home(Path(config["home"])).open(config["container"], PASSPHRASE)
    store = open_store(config["url"])
    store.names()  # connected before "ready"
    say("ready")
    while True:
        blobs.rewrap(container, store, jobs=1)


WRITERS = {
    "put": _put_forever,
    "rotate": _rotate_forever,
    "replace": _replace_forever,
    "rewrap": _rewrap_forever,
}


def zygote(config: dict[str, Any]) -> None:
    writer = WRITERS[config["writer"]]
    container = None
    if "home" in config:
        container = Home(Path(config["home"])).open(config["container"], PASSPHRASE)
    warnings.simplefilter("error", IgnoredEntryWarning)  # a torn entry would be ignored
    # Opening connects to nothing, but imports the backend's driver: once, here, not in
    # every writer (psycopg takes longer to import than a writer lives).
    open_store(config["url"])
    while sys.stdin.readline():
        pid = os.fork()
        if pid == 0:
            try:
                writer(config, container)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(70)  # the writer never ends on its own: any exit is a failure
        say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    {"mixed": mixed, "first-put": first_put, "replace-race": replace_race, "zygote": zygote}[
        sys.argv[1]
    ](json.loads(sys.argv[2]))
