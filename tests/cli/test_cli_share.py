"""keyblob share and unshare (issue 16 item 1): the same key wrapped for another recipient
list, as the next revision of its (name, generation) (FORMAT.md 2.2.11, 2.6.1).

Two real containers in two homes share one directory store.  Each test runs twice: without
and with the agent holding both containers (conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PASS = "s3cret passphrase"


@pytest.fixture
def two(tmp_path, capsys, monkeypatch, keyblob_main):
    """``run(home, *argv)`` against one store; Bob trusts Alice (whose blobs he loads);
    Alice has a payroll key and a file encrypted under it before any sharing."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    store = tmp_path / "store"

    def run(home: Path, *argv: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        status = keyblob_main(["--home", str(home), "--store", str(store), *map(str, argv)])
        out, err = capsys.readouterr()
        return status, out, err

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home in (alice, bob):
        assert run(home, "init")[0] == 0
        assert run(home, "pubkey", "-o", home.with_suffix(".pub"))[0] == 0
    assert run(bob, "trust", "add", alice.with_suffix(".pub"))[0] == 0
    assert run(alice, "new", "payroll")[0] == 0
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"salaries, before any sharing")
    assert run(alice, "encrypt", "payroll", "-i", plain, "-o", sealed)[0] == 0
    return run, alice, bob, store, sealed


def test_share_then_the_new_recipient_decrypts_old_data(two, tmp_path):
    run, alice, bob, store, sealed = two
    out = tmp_path / "opened"
    status, _, err = run(bob, "decrypt", sealed, "-o", out)
    assert status == 3, err
    assert "not wrapped for this container" in err
    assert not out.exists()
    status, stdout, err = run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))
    assert status == 0, err
    assert stdout.startswith("shared payroll generation 1 (key id ")
    assert "added kx-" in stdout and "(default)" not in stdout  # alice does not trust bob
    assert "now revision 1, 2 recipients" in stdout
    status, _, err = run(bob, "decrypt", sealed, "-o", out)
    assert status == 0, err
    assert out.read_bytes() == b"salaries, before any sharing"
    status, stdout, _ = run(alice, "show", "payroll")
    assert "revision     1" in stdout
    # again: nothing to change, nothing written
    before = (store / "payroll" / "1.kb").read_bytes()
    status, stdout, err = run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))
    assert status == 0, err
    assert "nothing to change, revision 1, 2 recipients" in stdout
    assert (store / "payroll" / "1.kb").read_bytes() == before


def test_share_json_and_inspect_show_the_revision(two):
    run, alice, bob, store, _ = two
    status, stdout, err = run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"), "--json")
    assert status == 0, err
    doc = json.loads(stdout)
    (g,) = doc["generations"]
    assert (doc["name"], g["generation"], g["revision"], g["changed"]) == ("payroll", 1, 1, True)
    assert [r["label"] for r in g["recipients"]] == ["this container", None]
    assert len(g["added"]) == 1 and g["removed"] == []
    status, stdout, _ = run(alice, "inspect", store / "payroll" / "1.kb")
    assert status == 0
    assert "flags" in stdout and "1 (revised)" in stdout
    assert "revision                    1" in stdout


def test_unshare_removes_the_recipient_and_says_what_it_cannot_do(two, tmp_path):
    run, alice, bob, store, sealed = two
    assert run(alice, "trust", "add", bob.with_suffix(".pub"))[0] == 0
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    shared = (store / "payroll" / "1.kb").read_bytes()
    fingerprint = json.loads(run(bob, "inspect", bob.with_suffix(".pub"), "--json")[1])[
        "fingerprint"
    ]
    status, stdout, err = run(alice, "unshare", "payroll", "--recipient", fingerprint[:16])
    assert status == 0, err
    assert "unshared payroll generation 1" in stdout
    assert "removed kx-" in stdout and "(default)" in stdout  # bob's label
    assert "now revision 2, 1 recipient" in stdout
    assert "may have kept a copy" in err
    assert "keyblob rotate payroll" in err
    status, stdout, _ = run(alice, "show", "payroll", "--json")
    assert json.loads(stdout)["recipient_labels"] == ["this container"]
    assert json.loads(stdout)["revision"] == 2
    status, _, err = run(bob, "decrypt", sealed, "-o", tmp_path / "out")
    assert status == 3 and "not wrapped for this container" in err
    # the earlier recipient list put back by the store: refused for the owner, latest and
    # explicit generation alike
    (store / "payroll" / "1.kb").write_bytes(shared)
    for argv in (("show", "payroll"), ("export", "payroll", "--generation", "1", "-o", "-")):
        status, _, err = run(alice, *argv)
        assert status == 3, (argv, err)
        assert err.startswith(
            "keyblob: error: refused payroll: rolled back: payroll generation 1 is revision 1, "
            "older than revision 2 this container has already seen (an older recipient list "
            "was put back)"
        ), err
    status, _, err = run(alice, "decrypt", sealed, "-o", tmp_path / "again")
    assert status == 3 and "older recipient list" in err
    assert not (tmp_path / "again").exists()


def test_unshare_by_key_id_and_of_the_own_key(two):
    run, alice, bob, _store, _ = two
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    doc = json.loads(run(alice, "show", "payroll", "--json")[1])
    own, theirs = doc["recipients"]
    status, _, err = run(alice, "unshare", "payroll", "--recipient", f"kx-{own[:8]}")
    assert status == 2, err
    assert "own exchange key" in err
    status, stdout, err = run(
        alice, "unshare", "payroll", "--recipient", f"KX-{theirs[:10].upper()}", "--json"
    )
    assert status == 0, err
    doc = json.loads(stdout)
    assert doc["recipient"] == theirs
    assert [r["key_id"] for r in doc["generations"][0]["removed"]] == [theirs]
    assert "may have kept a copy" in err
    status, _, err = run(alice, "unshare", "payroll", "--recipient", "zz")
    assert status == 2 and "not a recipient id" in err


def test_the_original_blob_put_back_is_refused(two, tmp_path):
    run, alice, bob, store, sealed = two
    original = (store / "payroll" / "1.kb").read_bytes()
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    (store / "payroll" / "1.kb").write_bytes(original)
    status, _, err = run(alice, "decrypt", sealed, "-o", tmp_path / "out")
    assert status == 3 and "revision 0, older than revision 1" in err
    status, _, err = run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))
    assert status == 3 and "revision 0, older than revision 1" in err


def test_an_older_generation_put_back_is_refused_as_before(two):
    run, alice, bob, store, _ = two
    first = (store / "payroll" / "1.kb").read_bytes()
    assert run(alice, "rotate", "payroll")[0] == 0
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    (store / "payroll" / "2.kb").unlink()
    (store / "payroll" / "1.kb").write_bytes(first)
    status, _, err = run(alice, "show", "payroll")
    assert status == 3
    assert "rolled back: the store's newest payroll is generation 1" in err


def test_share_every_generation_or_one(two, tmp_path):
    run, alice, bob, _store, sealed = two
    assert run(alice, "rotate", "payroll")[0] == 0
    assert run(alice, "rotate", "payroll")[0] == 0
    status, stdout, err = run(
        alice, "share", "payroll", "--to", bob.with_suffix(".pub"), "--generation", "2"
    )
    assert status == 0, err
    assert "payroll generation 2" in stdout and "generation 1" not in stdout
    status, stdout, err = run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"), "--all")
    assert status == 0, err
    assert "shared payroll generation 1" in stdout
    assert "payroll generation 2 (key id" in stdout and "nothing to change" in stdout
    assert "shared payroll generation 3" in stdout
    assert run(bob, "decrypt", sealed, "-o", tmp_path / "out")[0] == 0
    status, _, err = run(
        alice, "share", "payroll", "--to", bob.with_suffix(".pub"), "--generation", "1", "--all"
    )
    assert status == 2 and "not both" in err


def test_share_needs_the_present_recipients_public_keys(two, tmp_path):
    run, alice, bob, store, _ = two
    carol = tmp_path / "carol"
    assert run(carol, "init")[0] == 0
    assert run(carol, "pubkey", "-o", carol.with_suffix(".pub"))[0] == 0
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    before = (store / "payroll" / "1.kb").read_bytes()
    status, _, err = run(alice, "share", "payroll", "--to", carol.with_suffix(".pub"))
    assert status == 2, err
    assert "pass its public key file with --to" in err
    assert (store / "payroll" / "1.kb").read_bytes() == before
    status, stdout, err = run(
        alice,
        "share",
        "payroll",
        "--to",
        carol.with_suffix(".pub"),
        "--to",
        bob.with_suffix(".pub"),
    )
    assert status == 0, err
    assert "now revision 2, 3 recipients" in stdout


def test_a_planted_revision_signed_by_an_untrusted_key_is_ignored(two, tmp_path):
    """Mallory makes her own payroll generation 2, revised (shared once), wrapped for Alice,
    and plants it in the store: Alice passes over it as over any planted generation (2.9),
    and her revision marks are not raised by it."""
    run, alice, bob, store, sealed = two
    mallory = tmp_path / "mallory"
    own = tmp_path / "mallory-store"
    assert run(mallory, "init")[0] == 0

    def as_mallory(*argv: str | Path) -> int:
        return run(mallory, "--store", own, *argv)[0]

    assert as_mallory("new", "payroll", "--to", alice.with_suffix(".pub")) == 0
    assert as_mallory("rotate", "payroll", "--to", alice.with_suffix(".pub")) == 0
    assert (
        as_mallory(
            "share", "payroll", "--to", bob.with_suffix(".pub"), "--to", alice.with_suffix(".pub")
        )
        == 0
    )
    planted = (own / "payroll" / "2.kb").read_bytes()
    (store / "payroll" / "2.kb").write_bytes(planted)
    status, stdout, err = run(alice, "show", "payroll", "--json")
    assert status == 0, err
    assert json.loads(stdout)["generation"] == 1
    assert "ignored payroll generation 2" in err and "not a trusted signer" in err
    assert run(alice, "decrypt", sealed, "-o", tmp_path / "out")[0] == 0
    # sharing still works on the genuine generation, and the planted one is left alone
    status, stdout, err = run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))
    assert status == 0, err
    assert "shared payroll generation 1" in stdout
    assert (store / "payroll" / "2.kb").read_bytes() == planted


def test_import_of_a_later_revision_replaces_the_stored_one(two, tmp_path):
    run, alice, bob, _store, _ = two
    copy = tmp_path / "copy"
    assert run(alice, "export", "payroll", "-o", tmp_path / "r0.kb")[0] == 0
    assert run(alice, "--store", copy, "import", tmp_path / "r0.kb")[0] == 0
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    assert run(alice, "export", "payroll", "-o", tmp_path / "r1.kb")[0] == 0
    status, _, err = run(alice, "--store", copy, "import", tmp_path / "r1.kb")
    assert status == 0, err
    assert (copy / "payroll" / "1.kb").read_bytes() == (tmp_path / "r1.kb").read_bytes()
    status, _, err = run(alice, "--store", copy, "import", tmp_path / "r0.kb")
    assert status == 3 and "older than revision 1" in err
    assert (copy / "payroll" / "1.kb").read_bytes() == (tmp_path / "r1.kb").read_bytes()


@pytest.mark.parametrize("seen_by", [("list",), ("show", "payroll")], ids=["list", "show"])
def test_a_container_that_saw_the_new_revision_refuses_the_old_one(two, seen_by):
    run, alice, bob, store, _ = two
    original = (store / "payroll" / "1.kb").read_bytes()
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    status, _, err = run(bob, *seen_by)  # bob verifies revision 1: his mark rises
    assert status == 0, err
    (store / "payroll" / "1.kb").write_bytes(original)
    status, _, err = run(bob, "show", "payroll")
    assert status == 3, err
    assert "revision 0, older than revision 1" in err


def test_sharing_a_blob_another_container_signed_says_who_signs_it_now(two, tmp_path):
    run, alice, bob, _store, sealed = two
    carol = tmp_path / "carol"
    assert run(carol, "init")[0] == 0
    assert run(carol, "pubkey", "-o", carol.with_suffix(".pub"))[0] == 0
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    # bob (who trusts alice, and is a recipient) shares alice's key with carol
    status, stdout, err = run(
        bob,
        "share",
        "payroll",
        "--to",
        carol.with_suffix(".pub"),
        "--to",
        alice.with_suffix(".pub"),
    )
    assert status == 0, err
    assert "now revision 2, 3 recipients" in stdout
    assert "was signed by sg-" in err and "(default)" in err
    assert "it is now signed by this container" in err
    # alice does not trust bob: she refuses bob's blob until she does
    status, _, err = run(alice, "decrypt", sealed, "-o", tmp_path / "out")
    assert status == 3 and "not a trusted signer" in err
    assert run(alice, "trust", "add", bob.with_suffix(".pub"))[0] == 0
    assert run(alice, "decrypt", sealed, "-o", tmp_path / "out")[0] == 0
    assert run(carol, "trust", "add", bob.with_suffix(".pub"))[0] == 0
    assert run(carol, "decrypt", sealed, "-o", tmp_path / "carols")[0] == 0
