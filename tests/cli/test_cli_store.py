"""Issue 12 item 3's way out in the command line: ``keyblob store check`` lists the entries
that fail verification here (exit 3), ``keyblob store set-aside`` moves those in the owner's
way, keeping their bytes (FORMAT.md 2.9); the warning for an ignored entry is printed at
each use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from keyblob.cli import main

PASS = "s3cret passphrase"


@pytest.fixture
def planted(tmp_path, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    """The owner's payroll at generations 1-2 in a shared store, and an attacker's
    generation 3 (wrapped for the owner, signed by the attacker) planted beside them."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    store, theirs = tmp_path / "shared-store", tmp_path / "attacker-store"
    owner, attacker = tmp_path / "owner", tmp_path / "attacker"

    def run(home: Path, where: Path, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--home", str(home), "--store", str(where), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    for home in (owner, attacker):
        assert run(home, store, "init")[0] == 0
    pub = str(tmp_path / "owner.pub")
    assert run(owner, store, "pubkey", "-o", pub)[0] == 0
    assert run(owner, store, "new", "payroll")[0] == 0
    assert run(owner, store, "rotate", "payroll")[0] == 0
    assert run(attacker, theirs, "new", "payroll", "--to", pub)[0] == 0
    for _ in range(2):
        assert run(attacker, theirs, "rotate", "payroll", "--to", pub)[0] == 0
    shutil.copy(theirs / "payroll" / "3.kb", store / "payroll" / "3.kb")
    return lambda *argv: run(owner, store, *argv), store


def test_store_check_lists_the_planted_entry(planted):
    run, _ = planted
    status, out, err = run("store", "check")
    assert status == 3, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "GEN", "STATUS", "SIGNER", "/", "REASON"]
    assert lines[1].split()[:3] == ["payroll", "1", "old"]  # below the high-water mark
    assert lines[2].split()[:3] == ["payroll", "2", "newest"]
    assert "(this container)" in lines[2]
    assert lines[3].split()[:3] == ["payroll", "3", "FAILS"]
    assert "which is not a trusted signer" in lines[3]
    assert "keyblob: error: 1 of 3 entries" in err
    assert "keyblob store set-aside" in err
    status, out, _ = run("store", "check", "payroll", "--json")
    assert status == 3
    doc = json.loads(out)
    assert [(e["generation"], e["ok"], e["current"]) for e in doc["entries"]] == [
        (1, True, False),
        (2, True, True),
        (3, False, False),
    ]
    assert doc["entries"][1]["signer_label"] == "this container"
    assert (
        doc["entries"][2]["signer"] is None
        and "not a trusted signer" in doc["entries"][2]["reason"]
    )
    assert run("store", "check", "other")[0] == 0  # no entry of that name: nothing fails


def test_the_warning_is_printed_at_each_use(planted, tmp_path):
    run, _ = planted
    plain = tmp_path / "plain"
    plain.write_bytes(b"salaries")
    for i in range(2):
        status, _, err = run("encrypt", "payroll", "-i", str(plain), "-o", str(tmp_path / f"{i}"))
        assert status == 0, err
        assert err.count("keyblob: warning: ignored payroll generation 3:") == 1, err


def test_set_aside_moves_the_planted_entry_and_keeps_its_bytes(planted, tmp_path):
    run, store = planted
    planted_bytes = (store / "payroll" / "3.kb").read_bytes()
    # A valid entry is never moved; a missing one is not found.
    status, _, err = run("store", "set-aside", "payroll", "2")
    assert status == 2 and "verifies here" in err
    status, _, err = run("store", "set-aside", "payroll", "9")
    assert status == 4, err
    status, out, err = run("store", "set-aside")
    assert status == 0, err
    assert out.startswith("set aside payroll generation 3: signed by sg-")
    assert "kept in " in out
    assert not (store / "payroll" / "3.kb").exists()
    kept = list((store / ".set-aside" / "payroll").iterdir())
    assert [p.read_bytes() for p in kept] == [planted_bytes]
    status, out, err = run("store", "check")
    assert status == 0 and "FAILS" not in out
    status, out, err = run("store", "set-aside", "--json")
    assert status == 0 and json.loads(out)["set_aside"] == []
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    status, _, err = run("encrypt", "payroll", "-i", str(plain), "-o", str(tmp_path / "c"))
    assert status == 0 and "warning" not in err
    status, out, err = run("rotate", "payroll")
    assert status == 0 and "generation 3" in out
