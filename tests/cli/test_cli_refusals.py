"""Refusals (issue 11 item 10): malformed, unsupported and unverifiable input all exit 3,
and an import at an occupied (name, generation) is a refusal that says what to do, not
"run the command again"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from keyblob.cli import build_parser

PASS = "s3cret passphrase"


class Shell:
    def __init__(self, capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int]):
        self.capsys, self.main = capsys, main

    def __call__(self, home: Path, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = self.main(["--home", str(home), *argv])
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def kb(capsys, monkeypatch, keyblob_main) -> Shell:
    """Runs twice: without and with the agent holding the containers (conftest.py)."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    return Shell(capsys, keyblob_main)


def _files(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders for p in f.rglob("*") if p.is_file()}


def test_malformed_unsupported_and_unverified_all_exit_3(kb, tmp_path):
    home = tmp_path / "home"
    kb(home, "init")
    kb(home, "new", "k")
    good = tmp_path / "good.kb"
    kb(home, "export", "k", "-o", str(good))
    blob = good.read_bytes()
    cases = {
        "malformed": b"KBLB" + b"\x00" * 10,
        "unsupported": b"KBLB\x02" + blob[5:],
        "verification": blob[:-1] + bytes([blob[-1] ^ 1]),
    }
    for what, data in cases.items():
        path = tmp_path / f"{what}.kb"
        path.write_bytes(data)
        for command in ("verify", "import"):
            status, _, err = kb(home, command, str(path))
            assert status == 3, (what, command, err)
            assert err.startswith(f"keyblob: error: refused {path}: "), err
    epilog = build_parser().epilog or ""
    assert "3 refused (malformed, unsupported, or failed verification)" in epilog


@pytest.fixture
def alice_and_bob(kb, tmp_path) -> tuple[Path, Path, Path]:
    """Bob trusts Alice; both made their own payroll generation 1, Alice's for Bob too.
    Returns the two homes and Alice's blob."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    kb(alice, "init")
    kb(bob, "init")
    alice_pub, bob_pub = tmp_path / "alice.pub", tmp_path / "bob.pub"
    kb(alice, "pubkey", "-o", str(alice_pub))
    kb(bob, "pubkey", "-o", str(bob_pub))
    assert kb(bob, "trust", "add", str(alice_pub))[0] == 0
    assert kb(alice, "new", "payroll", "--to", str(bob_pub))[0] == 0
    assert kb(bob, "new", "payroll")[0] == 0
    blob = tmp_path / "alice-payroll.kb"
    kb(alice, "export", "payroll", "-o", str(blob))
    return alice, bob, blob


def test_import_at_an_occupied_generation_is_refused(kb, alice_and_bob):
    alice, bob, blob = alice_and_bob
    alice_id = kb(alice, "show", "payroll", "--json")[1].split('"signer": "')[1][:8]
    bob_doc = kb(bob, "show", "payroll", "--json")[1]
    bob_id = bob_doc.split('"signer": "')[1][:8]
    bob_key = bob_doc.split('"key_id": "')[1][:8]
    alice_key = kb(alice, "show", "payroll", "--json")[1].split('"key_id": "')[1][:8]
    before = _files(bob)
    for _ in range(2):  # the same answer each time: retrying cannot help, and is not suggested
        status, out, err = kb(bob, "import", str(blob))
        assert (status, out) == (3, "")
        assert err.splitlines() == [
            f"keyblob: error: refused {blob}: the store already holds a different blob of "
            f"payroll generation 1 (key id {bob_key}, signed by sg-{bob_id} (this "
            f"container)); this one has key id {alice_key}, signed by sg-{alice_id} "
            "(default): nothing was changed",
            "keyblob: hint: a stored blob is never replaced; to use this key, import it into "
            "another store (keyblob --store DIR import FILE), or ask its signer to rotate "
            "payroll past generation 1 and import the new one",
        ]
        assert _files(bob) == before
    # What the hint says works: Alice's next generation imports.
    kb(alice, "rotate", "payroll", "--to", str(blob.parent / "bob.pub"))
    kb(alice, "export", "payroll", "-o", str(blob))
    status, out, _ = kb(bob, "import", str(blob))
    assert status == 0 and out.startswith("imported payroll generation 2")


def test_import_of_the_same_blob_again_succeeds(kb, alice_and_bob):
    _, bob, _ = alice_and_bob
    own = bob.parent / "own.kb"
    kb(bob, "export", "payroll", "-o", str(own))
    before = _files(bob / "blobs")
    status, out, _ = kb(bob, "import", str(own))
    assert status == 0 and out.startswith("imported payroll generation 1")
    assert _files(bob / "blobs") == before


def test_import_over_a_stored_blob_that_does_not_verify(kb, alice_and_bob):
    _, bob, blob = alice_and_bob
    stored = bob / "blobs" / "payroll" / "1.kb"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    status, _, err = kb(bob, "import", str(blob))
    assert status == 3
    assert "a different blob of payroll generation 1 (one that does not verify here)" in err
    assert stored.read_bytes() == bytes(data)  # kept as it was: never replaced
