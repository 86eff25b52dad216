"""P4 across machines (issue 11 item 12): two real containers, in two homes, share one
directory store.  When one rotates, the other's next load of the name raises its own
high-water mark, so a later rollback of the store to the older generation is refused for it
too, not only for the container that rotated."""

from __future__ import annotations

from pathlib import Path

import pytest

PASS = "s3cret passphrase"


@pytest.fixture
def shared(tmp_path, capsys, monkeypatch, keyblob_main):
    """``run(home, *argv)`` against the shared store; Alice and Bob trust each other, and
    Alice's payroll generation 1 is wrapped for Bob too, who has used it.  Each test runs
    twice: without and with the agent holding both containers (conftest.py)."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    store = tmp_path / "shared-store"

    def run(home: Path, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = keyblob_main(["--home", str(home), "--store", str(store), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home in (alice, bob):
        assert run(home, "init")[0] == 0
        assert run(home, "pubkey", "-o", str(home.with_suffix(".pub")))[0] == 0
    assert run(alice, "trust", "add", str(bob.with_suffix(".pub")))[0] == 0
    assert run(bob, "trust", "add", str(alice.with_suffix(".pub")))[0] == 0
    assert run(alice, "new", "payroll", "--to", str(bob.with_suffix(".pub")))[0] == 0
    assert run(bob, "show", "payroll")[0] == 0
    return run, alice, bob, store


@pytest.mark.parametrize(
    "load",
    [("show", "payroll"), ("export", "payroll", "-o", "{tmp}/out.kb"), ("encrypt", "payroll")],
    ids=lambda argv: argv[0],
)
def test_a_load_of_the_other_containers_rotation_blocks_its_rollback(shared, tmp_path, load):
    run, alice, bob, store = shared
    assert run(alice, "rotate", "payroll", "--to", str(bob.with_suffix(".pub")))[0] == 0
    argv = [a.format(tmp=tmp_path) for a in load]
    if argv[0] == "encrypt":
        plain = tmp_path / "plain"
        plain.write_bytes(b"salaries")
        argv += ["-i", str(plain), "-o", str(tmp_path / "sealed")]
    status, _, err = run(bob, *argv)  # Bob loads generation 2: his mark rises to 2
    assert status == 0, err
    (store / "payroll" / "2.kb").unlink()  # the store rolled back to generation 1
    for home in (alice, bob):
        status, _, err = run(home, "show", "payroll")
        assert status == 3, (home.name, err)
        assert err.startswith(
            "keyblob: error: refused payroll: rolled back: the store's newest payroll is "
            "generation 1, but this container has already seen generation 2\n"
        )
    status, _, err = run(bob, "encrypt", "payroll", "-i", str(bob.with_suffix(".pub")), "-o", "-")
    assert status == 3 and "rolled back" in err
