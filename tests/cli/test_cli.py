"""End-to-end command-line transcripts: output, files and exit statuses (DESIGN.md)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import state_support as ss
from keyblob.cli import main
from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import PUBLIC_KEY
from support import run_in_terminal

PASS = "s3cret passphrase"


class Shell:
    """Runs ``keyblob`` in-process against one home, the way a user's shell would."""

    def __init__(
        self,
        home: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        main: Callable[[list[str]], int],
    ):
        self.home = home
        self.main = main
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)

    def __call__(self, *argv: str, home: Path | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = self.main(["--home", str(home or self.home), *argv])
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def kb(tmp_path, capsys, monkeypatch, keyblob_main) -> Shell:
    """Runs twice: without and with the agent holding the containers (conftest.py)."""
    return Shell(tmp_path / "home", capsys, monkeypatch, keyblob_main)


def test_procedure_end_to_end(kb, tmp_path):
    status, out, _ = kb("init")
    assert status == 0 and 'created container "default" (suite x25519)' in out
    assert "kx-" in out and "sg-" in out
    status, out, _ = kb("new", "payroll")
    assert status == 0 and out.startswith("payroll  generation 1  aes-256-gcm  key id ")
    status, out, _ = kb("show", "payroll", "--json")
    doc = json.loads(out)
    assert {"name", "generation", "key_id", "algorithm", "created", "signer", "recipients"} <= set(
        doc
    )
    assert (doc["name"], doc["generation"], doc["algorithm"]) == ("payroll", 1, "aes-256-gcm")
    blob = tmp_path / "payroll.kb"
    assert kb("export", "payroll", "-o", str(blob))[0] == 0
    status, out, _ = kb("inspect", str(blob))
    assert status == 0 and "signer_id" in out and "recipient[0].wrapped" in out
    status, out, _ = kb("verify", str(blob), "--json")
    assert status == 0 and json.loads(out)["valid"] is True
    assert kb("rotate", "payroll")[1].startswith("payroll  generation 2")
    status, out, _ = kb("list", "--json")
    keys = json.loads(out)["keys"]
    assert [(k["name"], k["generation"]) for k in keys] == [("payroll", 2)]


def test_home_is_private(kb):
    kb("init")
    assert stat.S_IMODE(kb.home.stat().st_mode) == 0o700
    for path in kb.home.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_home_readable_by_others_is_refused(kb):
    kb("init")
    kb.home.chmod(0o755)
    status, _, err = kb("new", "payroll")
    assert status == 1
    assert "can be read or written by others (mode 755): run chmod 700" in err
    assert not (kb.home / "blobs").exists()


@pytest.mark.not_through_agent(reason="tests a wrong passphrase: the agent asks none")
def test_wrong_passphrase_exit_5_nothing_changed(kb, monkeypatch):
    kb("init")
    kb("new", "payroll")
    snapshot = {p: p.read_bytes() for p in kb.home.rglob("*") if p.is_file()}
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "wrong")
    status, _, err = kb("rotate", "payroll")
    assert status == 5 and "wrong passphrase" in err
    assert {p: p.read_bytes() for p in kb.home.rglob("*") if p.is_file()} == snapshot


@pytest.mark.not_through_agent(reason="tests --passphrase-file: the agent asks no passphrase")
def test_passphrase_file(kb, tmp_path, monkeypatch):
    kb("init")
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    pf = tmp_path / "pass.txt"
    pf.write_text(PASS + "\n")
    assert kb("--passphrase-file", str(pf), "new", "k")[0] == 0
    pf.write_text("nope\n")
    assert kb("--passphrase-file", str(pf), "new", "k2")[0] == 5
    pf.write_text("x" * 5000)  # the wrong file given: a usage error, not a refused blob
    status, _, err = kb("--passphrase-file", str(pf), "new", "k3")
    assert status == 2
    assert f"{pf}: larger than 4096 bytes: too large for a passphrase file" in err


def test_edited_state_is_refused(kb):
    """Only the state's authentication stands in the way: payroll's bucket as it was before
    the rotation (a valid node, a legal high-water mark) would let a rollback through, and
    nothing else is wrong."""
    kb("init")
    kb("new", "payroll")
    folder = kb.home / "containers" / "default"
    bucket = ss.bucket_of("payroll")
    old = ss.nodes(folder)[(0, bucket)]
    kb("rotate", "payroll")
    assert ss.nodes(folder)[(0, bucket)] != old
    ss.set_node(folder, 0, bucket, old)  # as if generation 2 had never been seen
    (kb.home / "blobs" / "payroll" / "2.kb").unlink()  # the rollback it would allow
    status, _, err = kb("show", "payroll")
    assert status == 3 and "modified outside keyblob" in err


def test_substitution_attack_transcript(kb, tmp_path):
    """The procedure's attack through the command line, exactly as a user would meet it."""
    victim, attacker = tmp_path / "victim", tmp_path / "attacker"
    kb("init", home=victim)
    kb("new", "payroll", home=victim)
    victim_pub = tmp_path / "victim.pub"
    assert kb("pubkey", "-o", str(victim_pub), home=victim)[0] == 0
    kb("init", home=attacker)
    kb("--store", str(tmp_path / "evil"), "new", "payroll", "--to", str(victim_pub), home=attacker)
    evil = tmp_path / "evil" / "payroll" / "1.kb"
    target = victim / "blobs" / "payroll" / "1.kb"
    target.write_bytes(evil.read_bytes())
    status, _, err = kb("show", "payroll", home=victim)
    assert status == 3 and "which is not a trusted signer" in err
    status, _, err = kb("import", str(evil), home=victim)
    assert status == 3
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"keyblob: error: refused {evil}: signed by sg-")
    assert lines[1].startswith("keyblob: hint:") and "trust add" in lines[2]
    # The victim decides to trust the other container: now it imports.
    attacker_pub = tmp_path / "attacker.pub"
    kb("pubkey", "-o", str(attacker_pub), home=attacker)
    status, out, _ = kb("trust", "add", str(attacker_pub), home=victim)
    assert status == 0 and "fingerprint" in out
    assert kb("show", "payroll", home=victim)[0] == 0


def test_sharing_and_trust_commands(kb, tmp_path):
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    kb("init", home=alice)
    kb("init", "--container", "bob", home=bob)
    bob_pub, alice_pub = tmp_path / "bob.pub", tmp_path / "alice.pub"
    kb("--container", "bob", "pubkey", "-o", str(bob_pub), home=bob)
    kb("pubkey", "-o", str(alice_pub), home=alice)
    assert kb("new", "payroll", "--to", str(bob_pub), home=alice)[0] == 0
    blob = tmp_path / "payroll.kb"
    kb("export", "payroll", "-o", str(blob), "--armor", home=alice)
    assert blob.read_text().startswith("-----BEGIN KEYBLOB-----\n")
    assert kb("--container", "bob", "import", str(blob), home=bob)[0] == 3
    kb("--container", "bob", "trust", "add", str(alice_pub), home=bob)
    status, out, _ = kb("--container", "bob", "trust", "list", "--json", home=bob)
    signers = json.loads(out)
    assert [s["own"] for s in signers] == [True, False]
    status, out, _ = kb("--container", "bob", "import", str(blob), home=bob)
    assert status == 0 and out.startswith("imported payroll generation 1")
    alice_id = signers[1]["key_id"]
    assert kb("--container", "bob", "trust", "remove", alice_id[:10], home=bob)[0] == 0
    assert kb("--container", "bob", "show", "payroll", home=bob)[0] == 3
    assert kb("--container", "bob", "trust", "remove", alice_id, home=bob)[0] == 4


def test_rollback_transcript(kb, tmp_path):
    kb("init")
    kb("new", "payroll")
    old = tmp_path / "old.kb"
    kb("export", "payroll", "-o", str(old))
    kb("rotate", "payroll")
    folder = kb.home / "blobs" / "payroll"
    (folder / "2.kb").write_bytes(old.read_bytes())
    status, _, err = kb("show", "payroll")
    assert status == 3 and "signed as generation 1" in err
    (folder / "2.kb").unlink()
    status, _, err = kb("show", "payroll")
    assert status == 3 and "rolled back" in err
    assert "keyblob: hint: an older blob was put in place of a newer one" in err
    status, _, err = kb("verify", str(old))
    assert status == 3 and "rolled back" in err


def test_errors_and_statuses(kb, tmp_path):
    status, _, err = kb("show", "payroll")
    assert status == 4 and "no container 'default'" in err and "keyblob init" in err
    kb("init")
    assert kb("init")[0] == 1  # exists already
    assert kb("show", "payroll")[0] == 4
    status, _, err = kb("list")
    assert status == 0 and "no keys" in err
    status, _, err = kb("new", "Bad/Name")
    assert status == 2 and "invalid name" in err
    assert kb("verify", str(tmp_path / "missing.kb"))[0] == 4
    junk = tmp_path / "junk.kb"
    junk.write_bytes(b"KBLB\x02" + b"\x00" * 100)
    status, _, err = kb("verify", str(junk))
    assert status == 3 and "version 2 is not supported" in err
    big = tmp_path / "big.kb"
    big.write_bytes(b"\x00" * 200_000)
    status, _, err = kb("import", str(big))
    assert status == 3 and "larger than" in err and "too large for a key blob" in err
    assert main(["frobnicate"]) == 2  # a usage error is a status, as any other error


def test_list_reports_refused_entries(kb):
    kb("init")
    kb("new", "good")
    kb("new", "bad")
    path = kb.home / "blobs" / "bad" / "1.kb"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    status, out, err = kb("list")
    assert status == 3
    assert "good" in out and "bad" not in out
    assert "refused bad: the signature does not verify" in err


def test_rsa_suite(kb):
    status, out, _ = kb("init", "--suite", "rsa", "--bits", "2048")
    assert status == 0 and "suite rsa" in out
    assert kb("new", "k", "--algorithm", "chacha20-poly1305")[0] == 0
    doc = json.loads(kb("show", "k", "--json")[1])
    assert doc["suite"] == "rsa" and doc["algorithm"] == "chacha20-poly1305"
    assert kb("init", "--container", "x", "--bits", "2048")[0] == 2


def test_pubkey_pem(kb):
    kb("init")
    status, out, _ = kb("pubkey", "--format", "pem")
    assert status == 0 and out.count("-----BEGIN PUBLIC KEY-----") == 2


def test_inspect_needs_no_secret(kb, tmp_path, monkeypatch):
    kb("init")
    kb("new", "payroll")
    blob = tmp_path / "p.kb"
    kb("export", "payroll", "-o", str(blob), "--armor")
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    status, out, _ = kb("inspect", str(blob), "--json")
    doc = json.loads(out)
    assert status == 0 and doc["verified"] is False
    names = [f["name"] for f in doc["fields"]]
    assert names[:3] == ["magic", "version", "suite"] and names[-1] == "signature"


def test_no_key_bytes_in_any_output(kb, tmp_path):
    from keyblob import Home, blobs, open_store

    kb("init")
    outputs = []
    for argv in (
        ("new", "k"),
        ("show", "k"),
        ("show", "k", "--json"),
        ("list", "--json"),
        ("rotate", "k"),
    ):
        outputs.append("".join(kb(*argv)[1:]))
    container = Home(kb.home).open("default", PASS.encode())
    store = open_store(str(kb.home / "blobs"))
    for generation in (1, 2):
        raw = blobs.load(container, store, "k", generation=generation).unsafe_raw_bytes()
        for text in outputs:
            assert raw.hex() not in text.lower()


def test_subprocess_entry_points(tmp_path):
    env = {**os.environ, "KEYBLOB_HOME": str(tmp_path / "h"), "KEYBLOB_PASSPHRASE": PASS}
    run = subprocess.run(
        [sys.executable, "-m", "keyblob", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0 and "exit status" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "keyblob", "show", "x"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 4 and run.stderr.startswith("keyblob: error: no container")
    assert "Traceback" not in run.stderr


def test_passphrase_prompt_does_not_echo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KEYBLOB_PASSPHRASE"}
    env["KEYBLOB_HOME"] = str(tmp_path / "h")
    mismatched = ["first one", "second one"] * 3  # three tries, each pair differing
    status, out = run_in_terminal(["init"], mismatched, env)
    assert status == 2 and "differ" in out and "first one" not in out
    assert not (tmp_path / "h" / "containers" / "default").exists()
    status, out = run_in_terminal(["init"], ["typed secret", "typed secret"], env)
    assert status == 0 and "created container" in out and "typed secret" not in out
    status, out = run_in_terminal(["new", "k"], ["typed secret"], env)
    assert status == 0 and "generation 1" in out
    status, out = run_in_terminal(["new", "j"], ["wrong"] * 3, env)
    assert status == 5 and "wrong passphrase" in out


def test_no_passphrase_without_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KEYBLOB_PASSPHRASE"}
    env["KEYBLOB_HOME"] = str(tmp_path / "h")
    run = subprocess.run(
        [sys.executable, "-m", "keyblob", "init"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert run.returncode == 2 and "no passphrase: set KEYBLOB_PASSPHRASE" in run.stderr


def test_inspect_public_key_file_and_plain_outputs(kb, tmp_path):
    kb("init")
    pub = tmp_path / "me.pub"
    kb("pubkey", "-o", str(pub))
    status, out, _ = kb("inspect", str(pub))
    assert status == 0 and "keyblob public key file v2 (armored)" in out and "sg-" in out
    doc = json.loads(kb("inspect", str(pub), "--json")[1])
    assert doc["kind"] == "public key file" and len(doc["signature_key_id"]) == 32
    kb("new", "k")
    blob = tmp_path / "k.kb"
    kb("export", "k", "-o", str(blob))
    status, out, _ = kb("verify", str(blob))
    assert status == 0 and out.startswith(f"{blob}: valid: k generation 1")
    status, out, _ = kb("trust", "list")
    assert status == 0 and "this container (always trusted)" in out


def test_damaged_public_key_files_are_refused(kb, tmp_path):
    kb("init")
    pub = tmp_path / "me.pub"
    kb("pubkey", "-o", str(pub))
    from keyblob.format.armor import PUBLIC_KEY, armor, dearmor

    raw = bytearray(dearmor(pub.read_bytes(), PUBLIC_KEY))
    raw[7] = 1  # a reserved byte, in canonical armor
    bad = tmp_path / "bad.pub"
    bad.write_bytes(armor(bytes(raw), PUBLIC_KEY))
    for argv in (("trust", "add", str(bad)), ("new", "k", "--to", str(bad))):
        status, _, err = kb(*argv)
        assert status == 3 and "not a keyblob public key file" in err, err
    bad.write_bytes(b"garbage")
    status, _, err = kb("trust", "add", str(bad))
    assert status == 3 and err.count("\n") == 1


def test_debug_shows_the_traceback(kb, capsys):
    assert kb("init")[0] == 0
    capsys.readouterr()
    assert main(["--home", str(kb.home), "--debug", "show", "nothing"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "NotFoundError" in err
    assert err.splitlines()[-1].startswith("keyblob: error: ")


def test_a_public_key_file_swapped_in_transit(kb, tmp_path):
    """Alice sends alice.pub; on the way, Mallory puts her own exchange key in it and keeps
    Alice's signature key.  The fingerprint Bob is shown covers both keys, so it is not the
    one Alice sees; and once Bob trusts the real file, the swapped one is refused."""
    alice, bob, mallory = tmp_path / "alice", tmp_path / "bob", tmp_path / "mallory"
    for home in (alice, bob, mallory):
        kb("init", home=home)
    alice_pub, mallory_pub = tmp_path / "alice.pub", tmp_path / "mallory.pub"
    status, _, err = kb("pubkey", "-o", str(alice_pub), home=alice)
    alice_grouped = err.split("fingerprint ")[1].split(":")[0]  # as read aloud
    alice_fp = alice_grouped.replace(" ", "")
    assert status == 0 and len(alice_fp) == 32 and len(alice_grouped) == 39
    kb("pubkey", "-o", str(mallory_pub), home=mallory)
    real = PublicKeyFile.from_bytes(dearmor(alice_pub.read_bytes(), PUBLIC_KEY))
    evil = PublicKeyFile.from_bytes(dearmor(mallory_pub.read_bytes(), PUBLIC_KEY))
    swapped = PublicKeyFile(real.suite, real.label, evil.exchange, real.signature)
    swapped_pub = tmp_path / "swapped.pub"
    swapped_pub.write_bytes(armor(swapped.to_bytes(), PUBLIC_KEY))
    assert swapped.signature_id == real.signature_id  # the same sg- id ...

    status, out, _ = kb("inspect", str(swapped_pub))
    assert status == 0 and f"sg-{real.signature_id.short}" in out
    assert alice_grouped not in out  # ... but not the same fingerprint
    status, out, _ = kb("inspect", str(alice_pub), "--json")
    assert json.loads(out)["fingerprint"] == alice_fp

    # Before Bob trusts anyone, --to says whose fingerprint to compare.
    status, _, err = kb("new", "k0", "--to", str(swapped_pub), home=bob)
    assert status == 0 and "not a trusted container" in err and alice_grouped not in err
    # Bob trusts the real file, having compared fingerprints with Alice.
    status, out, _ = kb("trust", "add", str(alice_pub), home=bob)
    assert status == 0 and f"fingerprint {alice_grouped}" in out
    status, out, _ = kb("trust", "list", "--json", home=bob)
    assert json.loads(out)[1]["fingerprint"] == alice_fp
    # Now the swapped file is refused, and nothing is stored.
    status, _, err = kb("new", "payroll", "--to", str(swapped_pub), home=bob)
    assert status == 3 and "known here with another exchange key" in err
    assert not (bob / "blobs" / "payroll").exists()
    status, _, err = kb("new", "payroll", "--to", str(alice_pub), home=bob)
    assert status == 0 and "not a trusted container" not in err
    # Trusting the swapped file now is refused too; the real one again is a no-op.
    status, _, err = kb("trust", "add", str(swapped_pub), home=bob)
    assert status == 3 and "known here with another exchange key" in err
    status, out, _ = kb("trust", "add", str(alice_pub), home=bob)
    assert status == 0 and out.startswith("already trusted: sg-")
    status, out, _ = kb("trust", "list", "--json", home=bob)
    assert [s["fingerprint"] for s in json.loads(out)][1:] == [alice_fp]
    # Alice's own file, swapped, is refused by Alice too.
    status, _, err = kb("new", "mine", "--to", str(swapped_pub), home=alice)
    assert status == 3 and "known here with another exchange key" in err
    # Its own key cannot be removed; the fingerprint trust list shows removes a signer.
    own_fp = json.loads(kb("trust", "list", "--json", home=bob)[1])[0]["fingerprint"]
    status, _, err = kb("trust", "remove", own_fp, home=bob)
    assert status == 2 and "own signature key: it is always trusted" in err
    assert kb("trust", "remove", alice_fp[:12], home=bob)[0] == 0
    status, out, _ = kb("trust", "list", "--json", home=bob)
    assert [s["own"] for s in json.loads(out)] == [True]


def test_a_low_order_exchange_key_is_refused_not_a_traceback(kb, tmp_path):
    kb("init")
    pub = tmp_path / "me.pub"
    kb("pubkey", "-o", str(pub))
    real = PublicKeyFile.from_bytes(dearmor(pub.read_bytes(), PUBLIC_KEY))
    bad = tmp_path / "bad.pub"
    bad.write_bytes(
        armor(PublicKeyFile(real.suite, "bad", bytes(32), bytes(32)).to_bytes(), PUBLIC_KEY)
    )
    for argv in (("trust", "add", str(bad)), ("new", "k", "--to", str(bad))):
        status, _, err = kb(*argv)
        assert status == 3 and "low-order X25519 point" in err and "Traceback" not in err
    assert not (kb.home / "blobs" / "k").exists()


@pytest.mark.not_through_agent(reason="tests the passphrase's bytes: the agent asks none")
@pytest.mark.skipif(sys.getfilesystemencoding() != "utf-8", reason="needs a UTF-8 locale")
def test_a_passphrase_in_the_environment_is_taken_as_bytes(kb, monkeypatch):
    """A KEYBLOB_PASSPHRASE the locale cannot decode (Latin-1 bytes under UTF-8) is its
    raw bytes, not a traceback; text is its UTF-8 encoding, as at the prompt."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "caf\udce9")  # the bytes b"caf\xe9"
    assert kb("init")[0] == 0
    assert kb("new", "k")[0] == 0
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "café")  # b"caf\xc3\xa9": another passphrase
    assert kb("new", "k2")[0] == 5


def test_list_reports_a_name_whose_blobs_were_all_deleted(kb):
    kb("init")
    kb("new", "payroll")
    kb("new", "backups")
    for blob in (kb.home / "blobs" / "payroll").iterdir():
        blob.unlink()
    (kb.home / "blobs" / "payroll").rmdir()
    status, out, err = kb("list", "--json")
    doc = json.loads(out)
    assert status == 0 and [k["name"] for k in doc["keys"]] == ["backups"]
    assert doc["refused"] == [] and doc["missing"] == [{"name": "payroll", "seen": 1}]
    assert "payroll: this container has seen generation 1, but" in err
    assert kb("show", "payroll")[0] == 3


def test_list_calls_missing_only_names_this_store_held(kb, tmp_path):
    """Issue 13 item 4: a container using two stores.  Each store's list is clean; a name
    deleted from one is missing there only; its mark still guards it in both."""
    kb("init")
    other = str(tmp_path / "other")
    assert kb("new", "payroll")[0] == 0
    assert kb("--store", other, "new", "backups")[0] == 0
    for store in ([], ["--store", other]):
        status, out, err = kb(*store, "list", "--json")
        assert status == 0 and json.loads(out)["missing"] == [] and err == "", (store, err)
    (tmp_path / "other" / "backups" / "1.kb").unlink()
    status, out, err = kb("--store", other, "list", "--json")
    assert json.loads(out)["missing"] == [{"name": "backups", "seen": 1}]
    assert "backups: this container has seen generation 1, but" in err
    status, out, err = kb("list", "--json")
    assert status == 0 and json.loads(out)["missing"] == [] and err == ""
    # The same folder by another path is the same store.
    os.symlink(tmp_path / "other", tmp_path / "link")
    status, out, _ = kb("--store", str(tmp_path / "link"), "list", "--json")
    assert json.loads(out)["missing"] == [{"name": "backups", "seen": 1}]
    # The mark is the container's, whichever store: generation 1 of payroll copied in
    # after a rotation is a rollback in the other store too.
    kb("rotate", "payroll")
    os.makedirs(tmp_path / "other" / "payroll")
    os.link(kb.home / "blobs" / "payroll" / "1.kb", tmp_path / "other" / "payroll" / "1.kb")
    assert kb("--store", other, "show", "payroll")[0] == 3


def test_list_records_what_it_opened_in_one_state_write(kb, tmp_path, monkeypatch):
    """A store listed for the first time (a copy, or names of a migrated home): every name
    it holds goes into its view in one state write, not one per name (counted where every
    provider writes the home's state, the agent's too)."""
    from keyblob.providers.homestate import ContainerState

    kb("init")
    for i in range(6):
        kb("new", f"k{i}")
    shutil.copytree(kb.home / "blobs", tmp_path / "copy")
    writes = []
    original = ContainerState.update_state

    def counted(self, change):
        writes.append(1)
        return original(self, change)

    monkeypatch.setattr(ContainerState, "update_state", counted)
    assert kb("--store", str(tmp_path / "copy"), "list")[0] == 0
    assert len(writes) == 1
    assert kb("--store", str(tmp_path / "copy"), "list")[0] == 0  # nothing new: no write
    assert len(writes) == 1
    for name in ("k0", "k1"):
        (tmp_path / "copy" / name / "1.kb").unlink()
    status, out, err = kb("--store", str(tmp_path / "copy"), "list", "--json")
    assert status == 0 and "k0: this container has seen generation 1" in err
    assert [m["name"] for m in json.loads(out)["missing"]] == ["k0", "k1"]


def test_verify_json_of_a_missing_file_is_json(kb, tmp_path):
    kb("init")
    status, out, _ = kb("verify", str(tmp_path / "nope.kb"), "--json")
    assert status == 4 and json.loads(out)["valid"] is False


@pytest.mark.parametrize(("suite", "code"), [("p256", 4), ("pq", 3)])
def test_suite_procedure_and_same_suite_sharing(kb, tmp_path, suite, code):
    """init --suite p256 (or pq), new, export, load (show), rotate; sharing between two
    containers of the suite; its key offered to an x25519 container is refused by the
    existing rule.  Through the agent too (the ``kb`` fixture's second run)."""
    alice, bob, xavier = tmp_path / "alice", tmp_path / "bob", tmp_path / "xavier"
    status, out, _ = kb("init", "--suite", suite, home=alice)
    assert status == 0 and f'created container "default" (suite {suite})' in out
    assert kb("init", "--suite", suite, "--bits", "2048", home=tmp_path / "no")[0] == 2
    kb("init", "--suite", suite, "--container", "bob", home=bob)
    kb("init", "--container", "xavier", home=xavier)
    alice_pub, bob_pub = tmp_path / "alice.pub", tmp_path / "bob.pub"
    kb("pubkey", "-o", str(alice_pub), home=alice)
    kb("--container", "bob", "pubkey", "-o", str(bob_pub), home=bob)
    assert PublicKeyFile.from_bytes(dearmor(alice_pub.read_bytes(), PUBLIC_KEY)).suite.label == (
        suite
    )
    assert kb("new", "payroll", "--to", str(bob_pub), home=alice)[0] == 0
    doc = json.loads(kb("show", "payroll", "--json", home=alice)[1])
    assert doc["suite"] == suite and doc["generation"] == 1
    blob = tmp_path / "payroll.kb"
    assert kb("export", "payroll", "-o", str(blob), home=alice)[0] == 0
    assert blob.read_bytes()[5] == code  # the suite byte of the blob (FORMAT.md 2.1)
    assert kb("--container", "bob", "import", str(blob), home=bob)[0] == 3  # not trusted yet
    assert kb("--container", "bob", "trust", "add", str(alice_pub), home=bob)[0] == 0
    status, out, _ = kb("--container", "bob", "import", str(blob), home=bob)
    assert status == 0 and out.startswith("imported payroll generation 1")
    assert kb("verify", str(blob), "--json", home=alice)[0] == 0
    status, out, _ = kb("rotate", "payroll", "--to", str(bob_pub), home=alice)
    assert status == 0 and out.startswith("payroll  generation 2")
    # other suite: the existing rule and message, nothing trusted
    status, _, err = kb("--container", "xavier", "trust", "add", str(alice_pub), home=xavier)
    assert status == 2
    assert f"is a {suite} key; container 'xavier' uses x25519" in err
    status, _, err = kb("--container", "xavier", "import", str(blob), home=xavier)
    assert status == 3 and f"uses suite {suite}" in err


def test_a_trusted_signers_blob_whose_key_for_us_does_not_open(kb, tmp_path):
    """A bit flip the signature cannot catch: Alice (trusted) signed a blob whose wrapped key
    for Bob is damaged.  Every check before the unwrap passes; the unwrap refuses it (through
    the agent: inside the agent, with the same status and line), and nothing is stored."""
    from keyblob import Home
    from keyblob.format import KeyBlob

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    kb("init", home=alice)
    kb("init", home=bob)
    alice_pub, bob_pub = tmp_path / "alice.pub", tmp_path / "bob.pub"
    kb("pubkey", "-o", str(alice_pub), home=alice)
    kb("pubkey", "-o", str(bob_pub), home=bob)
    assert kb("trust", "add", str(alice_pub), home=bob)[0] == 0
    assert kb("new", "payroll", "--to", str(bob_pub), home=alice)[0] == 0
    good = KeyBlob.from_bytes((alice / "blobs" / "payroll" / "1.kb").read_bytes())
    signer = Home(alice).open("default", PASS.encode())
    recipients = tuple(
        r
        if r.key_id == signer.exchange_id
        else replace(r, wrapped=r.wrapped[:-1] + bytes([r.wrapped[-1] ^ 1]))  # Bob's
        for r in good.recipients
    )
    bad = tmp_path / "bad.kb"
    bad.write_bytes(KeyBlob.signed(good.header, recipients, signer.sign).to_bytes())
    for command in ("verify", "import"):
        status, out, err = kb(command, str(bad), home=bob)
        assert (status, out) == (3, ""), err
        assert err == (
            f"keyblob: error: refused {bad}: the wrapped key does not open with this "
            "container's exchange key\n"
        )
    assert not (bob / "blobs" / "payroll").exists()
