"""The 4 MiB bound on state.json holds for what keyblob writes (issue 11 review, finding 2):
a change that would pass it fails with one line and exit 1, and the state before it stays
readable, instead of a written state that every later command refuses."""

from __future__ import annotations

from pathlib import Path

from keyblob import Home
from keyblob.cli import main
from keyblob.keys import MAX_GENERATION
from keyblob.providers.software import MAX_STATE_SIZE
from keyblob.trust import State

PASS = "s3cret passphrase"


def test_a_trust_add_past_the_bound_fails_cleanly(tmp_path, capsys, monkeypatch):
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
    # Alice's state filled with marks to less than one name (151 bytes) under the bound.
    container = Home(alice).open("default", PASS.encode())
    path = alice / "containers" / "default" / "state.json"
    size = path.stat().st_size
    count = (MAX_STATE_SIZE - size) // 151
    names = {f"{i:05d}".ljust(128, "n"): MAX_GENERATION for i in range(count)}
    container.update_state(lambda _: State(high_water=names))
    before = path.read_bytes()
    assert MAX_STATE_SIZE - 151 < len(before) <= MAX_STATE_SIZE

    status, out, err = run(alice, "trust", "add", str(tmp_path / "bob.pub"))
    assert (status, out) == (1, ""), err
    assert err.startswith(
        "keyblob: error: container 'default': the change would make its home state "
    )
    assert f"({count} names, 1 signers), over the {MAX_STATE_SIZE}-byte bound; nothing" in err
    assert err.count("\n") == 2 and "\nkeyblob: hint: a trusted signer may be storing" in err
    assert path.read_bytes() == before
    status, out, err = run(alice, "trust", "list")  # the state still opens
    assert status == 0 and out.count("\n") == 1 and "this container" in out, (out, err)
