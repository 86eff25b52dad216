"""Past the 4 MiB that bounded a version 1 state.json (issue 11 review, finding 2: 28,000
names of 128 characters were refused, and before that check locked the container out): the
marks now live in the hash trees of state.db (FORMAT.md 5.2), so a container with more names
than that still takes a trusted signer and new names, and its head stays small."""

from __future__ import annotations

from pathlib import Path

import state_support as ss
from keyblob import Home
from keyblob.cli import main
from keyblob.keys import MAX_GENERATION

PASS = "s3cret passphrase"


def test_names_past_the_old_bound_leave_every_command_working(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)

    def run(home: Path, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--home", str(home), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home in (alice, bob):
        assert run(home, "init")[0] == 0
    assert run(bob, "pubkey", "-o", str(tmp_path / "bob.pub"))[0] == 0
    container = Home(alice).open("default", PASS.encode())
    names = {f"{i:05d}".ljust(128, "n"): MAX_GENERATION for i in range(30_000)}
    container.update_state(lambda s: s.with_marks(names))
    status, out, err = run(alice, "trust", "add", str(tmp_path / "bob.pub"))
    assert status == 0 and "fingerprint" in out, err
    assert run(alice, "new", "payroll")[0] == 0
    status, out, err = run(alice, "list")
    assert status == 0 and out.count("\n") == 2 and err == ""  # no name missing: none held
    head = ss.head(alice / "containers" / "default")
    assert (
        head["marks"]["count"] == 30_001
        and len(ss.head_bytes(alice / "containers" / "default")) < 2048
    )
