"""rotate retries a lost compare-and-set and says so; new reports a name created meanwhile
as existing (issue 13 item 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyblob import Home, Suite, blobs
from keyblob.cli import main
from keyblob.errors import ConflictError
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE

PASS = PASSPHRASE.decode()

# keyblob, with its rotation held after it has chosen the next generation (from what it
# read) until the other process has chosen too: both then write the same generation at once.
# The hold is before the state lock and the put; nothing else changes.
RACER = """
import os, sys, time
from keyblob import blobs
from keyblob.cli import main

sync = os.environ["RACE_SYNC"]
store_new = blobs._store_new

def held(*args, **kwargs):
    open(os.path.join(sync, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 20
    while len(os.listdir(sync)) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    return store_new(*args, **kwargs)

blobs._store_new = held
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "home"))
    container = Home(tmp_path / "home").create("default", PASSPHRASE, Suite.X25519, kdf=FAST_KDF)
    blobs.generate(container, DirectoryStore(tmp_path / "home" / "blobs"), "payroll")
    return tmp_path / "home"


def kb(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_two_rotations_at_once_both_succeed_without_a_gap(home: Path, tmp_path: Path) -> None:
    sync = tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "RACE_SYNC": str(sync)}
    argv = [sys.executable, "-c", RACER, "rotate", "payroll"]

    racers = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=60), *p.communicate()) for p in racers]

    assert [status for status, _, _ in results] == [0, 0], results
    made = sorted(int(out.split()[2]) for _, out, _ in results)
    assert made == [2, 3]
    retried = [err for _, _, err in results if err]
    assert retried == [
        "keyblob: note: another writer made payroll generation 2 first; trying again (2/5)\n"
    ]
    store = DirectoryStore(home / "blobs")
    assert store.generations("payroll") == [1, 2, 3]
    container = Home(home).open("default", PASSPHRASE)
    assert all(e.ok for e in blobs.check_store(container, store))
    assert blobs.load(container, store, "payroll").generation == 3


def test_rotate_that_always_loses_exits_1_with_the_conflict(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lose(self, name: str, generation: int, data: bytes) -> None:
        raise ConflictError(name, generation, self.location)

    monkeypatch.setattr(DirectoryStore, "put", lose)

    status, out, err = kb(capsys, "rotate", "payroll")

    assert (status, out) == (1, "")
    lines = err.splitlines()
    assert lines[:4] == [
        f"keyblob: note: another writer made payroll generation 2 first; trying again ({n}/5)"
        for n in range(2, 6)
    ]
    assert lines[4] == (
        f"keyblob: error: another writer made payroll generation 2 first (in {home}/blobs); "
        "run the command again"
    )
    assert lines[5:] == ["keyblob: hint: nothing was changed by this command"]


def test_new_of_a_name_created_meanwhile_is_exists_already(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lose(self, name: str, generation: int, data: bytes) -> None:
        raise ConflictError(name, generation, self.location)

    monkeypatch.setattr(DirectoryStore, "put", lose)

    status, out, err = kb(capsys, "new", "budget")

    assert (status, out) == (2, "")
    assert err == (
        "keyblob: error: budget exists already: another writer created it while this ran: "
        "use keyblob rotate budget\n"
    )
