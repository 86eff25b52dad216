"""Issue 12 item 3: a blob planted at a newer generation by an untrusted signer is never
used, and no longer blocks the owner's ``encrypt`` and ``rotate``: each use says it was
ignored (FORMAT.md 2.9).  The ``store check`` / ``store set-aside`` commands are wired in
the cli package; the library they call is tested in tests/unit/test_planted.py."""

from __future__ import annotations

import shutil

PASS = "s3cret passphrase"


def test_planted_newer_blob_is_reported_not_used(tmp_path, capsys, monkeypatch, keyblob_main):
    """Runs twice: without and with the agent holding both containers (conftest.py)."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    store, theirs = tmp_path / "shared-store", tmp_path / "attacker-store"

    def run(home, where, *argv):
        capsys.readouterr()
        status = keyblob_main(["--home", str(home), "--store", str(where), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    owner, attacker = tmp_path / "owner", tmp_path / "attacker"
    for home in (owner, attacker):
        assert run(home, store, "init")[0] == 0
    assert run(owner, store, "pubkey", "-o", str(tmp_path / "owner.pub"))[0] == 0
    assert run(owner, store, "new", "payroll")[0] == 0
    assert run(owner, store, "rotate", "payroll")[0] == 0
    # The attacker's own generation 3 of payroll, wrapped for the owner, planted in the store.
    assert run(attacker, theirs, "new", "payroll", "--to", str(tmp_path / "owner.pub"))[0] == 0
    for _ in range(2):
        to = ("--to", str(tmp_path / "owner.pub"))
        assert run(attacker, theirs, "rotate", "payroll", *to)[0] == 0
    shutil.copy(theirs / "payroll" / "3.kb", store / "payroll" / "3.kb")

    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"salaries")
    status, _, err = run(owner, store, "encrypt", "payroll", "-i", str(plain), "-o", str(sealed))
    assert status == 0, err
    assert "keyblob: warning: ignored payroll generation 3: signed by sg-" in err
    assert "not a trusted signer; run keyblob store check" in err
    status, _, err = run(owner, store, "decrypt", "-i", str(sealed), "-o", str(tmp_path / "out"))
    assert status == 0, err
    assert (tmp_path / "out").read_bytes() == b"salaries"
    status, out, err = run(owner, store, "rotate", "payroll")
    assert status == 0, err
    assert "generation 4" in out
    status, out, err = run(owner, store, "show", "payroll")
    assert status == 0 and "ignored" not in err  # the newest is the owner's own again
