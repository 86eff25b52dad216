"""The new user's transcript of issue 12, end to end: two colleagues sharing keys through
one store folder, with labels and grouped fingerprints shown; an attacker who can write the
store plants a newer blob under Alice's key name, which never locks her out and which
``store check`` / ``store set-aside`` deal with; then an administrator migrates Windows
CryptoAPI files (the committed samples that tests/cli/test_docs_migration.py walks through).

Each step asserts its exit status and the lines a user relies on."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import PUBLIC_KEY

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples" / "capi"
ALICE = "Alice Martin <alice@example.com>"
BOB = "Bob Stone <bob@example.com>"
GROUPED = re.compile(r"(?:[0-9a-f]{4} ){7}[0-9a-f]{4}")


class User:
    """One person at their shell: their own home, the shared store."""

    def __init__(
        self,
        home: Path,
        store: Path,
        capsys: pytest.CaptureFixture[str],
        main: Callable[[list[str]], int],
    ) -> None:
        self.home, self.store, self.capsys, self.main = home, store, capsys, main

    def __call__(self, command: str, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        options = ["--home", str(self.home), "--store", str(self.store)]
        # After the command, as people type them (issue 12 item 2: options anywhere).
        status = self.main([command, *argv, *options])
        out, err = self.capsys.readouterr()
        return status, out, err


def _fingerprint(text: str) -> str:
    found = GROUPED.search(text)
    assert found, text
    return found.group(0)


def test_two_colleagues_an_attacker_and_a_migration(tmp_path, capsys, monkeypatch, keyblob_main):
    """Runs twice: without and with the agent holding every container (conftest.py)."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "correct horse battery staple")
    monkeypatch.delenv("KEYBLOB_STORE", raising=False)
    monkeypatch.delenv("KEYBLOB_CONTAINER", raising=False)
    shared = tmp_path / "shared"
    alice = User(tmp_path / "alice", shared, capsys, keyblob_main)
    bob = User(tmp_path / "bob", shared, capsys, keyblob_main)
    mallory = User(tmp_path / "mallory", tmp_path / "mallory-store", capsys, keyblob_main)
    alice_pub, bob_pub, mallory_pub = (tmp_path / f"{n}.pub" for n in ("alice", "bob", "mallory"))

    # -- Two colleagues: each creates a container with a label, hands out a public key file.
    status, out, _ = alice("init", "--label", ALICE)
    assert status == 0 and 'created container "default" (suite x25519)' in out
    assert f"label          {ALICE}" in out
    assert bob("init", "--label", BOB)[0] == 0
    status, _, err = alice("pubkey", "-o", str(alice_pub))
    assert status == 0 and f"wrote the public keys of {ALICE!r}" in err
    alice_fp = _fingerprint(err)
    status, _, err = bob("pubkey", "-o", str(bob_pub))
    bob_fp = _fingerprint(err)

    # Bob looks at Alice's file, reads the fingerprint aloud with her, then trusts it.
    status, out, _ = bob("inspect", str(alice_pub))
    assert status == 0 and "keyblob public key file v2 (armored)" in out
    assert f"label          {ALICE}" in out and "signed by its signature key" in out
    assert f"fingerprint    {alice_fp}" in out
    status, out, _ = bob("trust", "add", str(alice_pub))
    assert status == 0 and re.match(rf"trusted sg-[0-9a-f]{{8}} \({re.escape(ALICE)}\)", out)
    assert f"fingerprint {alice_fp}" in out
    assert alice("trust", "add", str(bob_pub))[0] == 0
    status, out, _ = alice("trust", "list")
    assert status == 0
    own, other = out.splitlines()
    assert ALICE in own and alice_fp in own and own.endswith("this container (always trusted)")
    assert BOB in other and bob_fp in other and "for all names" in other

    # A label edited on the way is refused; the file as Bob made it is not.
    real = PublicKeyFile.from_bytes(dearmor(bob_pub.read_bytes(), PUBLIC_KEY))
    assert real.label_signature is not None
    edited = tmp_path / "bob-edited.pub"
    edited.write_bytes(
        armor(
            PublicKeyFile(
                real.suite,
                "Bob Stone <bob@evil.example>",
                real.exchange,
                real.signature,
                real.label_signature,
            ).to_bytes(),
            PUBLIC_KEY,
        )
    )
    status, _, err = alice("new", "x", "--to", str(edited))
    assert status == 3 and "its label is not signed by its signature key" in err

    # Alice makes a key for both of them in the shared store and encrypts with it.
    status, out, err = alice("new", "payroll", "--to", str(bob_pub))
    assert status == 0 and out.startswith("payroll  generation 1  aes-256-gcm")
    assert "not a trusted container" not in err  # Bob is trusted: nothing to compare
    status, out, _ = alice("show", "payroll")
    recipients = next(line for line in out.splitlines() if line.startswith("recipients"))
    assert "(this container)" in recipients and f"({BOB})" in recipients
    assert "signer       sg-" in out and "(this container)" in out
    plain = tmp_path / "salaries.csv"
    plain.write_bytes(b"name,salary\nalice,1\nbob,2\n")
    sealed = tmp_path / "salaries.csv.kb"
    assert alice("encrypt", "payroll", "-i", str(plain), "-o", str(sealed))[0] == 0
    status, _, err = bob("decrypt", "-i", str(sealed), "-o", str(tmp_path / "bob.csv"))
    assert status == 0, err
    assert (tmp_path / "bob.csv").read_bytes() == plain.read_bytes()
    status, out, _ = bob("list")
    assert status == 0 and f"({ALICE})" in out

    # -- The attacker: a third home, the same label as Alice, another fingerprint.
    assert mallory("init", "--label", ALICE)[0] == 0
    status, _, err = mallory("pubkey", "-o", str(mallory_pub))
    assert _fingerprint(err) != alice_fp
    status, out, _ = bob("inspect", str(mallory_pub))
    assert status == 0 and ALICE in out and alice_fp not in out
    # Mallory makes her own payroll, wrapped for Alice, and plants generation 2 in the store.
    assert mallory("new", "payroll", "--to", str(alice_pub))[0] == 0
    assert mallory("rotate", "payroll", "--to", str(alice_pub))[0] == 0
    shutil.copy(mallory.store / "payroll" / "2.kb", shared / "payroll" / "2.kb")

    # Alice's encrypt still works, with her generation 1, and says what it ignored.
    again = tmp_path / "again.kb"
    status, _, err = alice("encrypt", "payroll", "-i", str(plain), "-o", str(again))
    assert status == 0, err
    assert "keyblob: warning: ignored payroll generation 2: signed by sg-" in err
    assert "which is not a trusted signer; run keyblob store check" in err
    status, _, err = bob("decrypt", "-i", str(again), "-o", str(tmp_path / "again.csv"))
    assert status == 0 and (tmp_path / "again.csv").read_bytes() == plain.read_bytes()

    # store check lists it; set-aside moves it (its bytes kept); the store checks clean.
    status, out, err = alice("store", "check")
    assert status == 3
    assert re.search(r"payroll\s+1\s+newest\s+sg-[0-9a-f]{8} \(this container\)", out)
    assert re.search(r"payroll\s+2\s+FAILS\s+signed by sg-[0-9a-f]{8}, which is not a trusted", out)
    assert "keyblob: error: 1 of 2 entries" in err and "keyblob store set-aside" in err
    status, out, _ = alice("store", "check", "payroll", "--json")
    assert [e["ok"] for e in json.loads(out)["entries"]] == [True, False]
    status, out, _ = alice("store", "set-aside")
    assert status == 0 and out.startswith("set aside payroll generation 2: signed by sg-")
    assert alice("store", "check")[0] == 0
    # Rotate works: generation 2 is Alice's now, for both of them.
    status, out, err = alice("rotate", "payroll", "--to", str(bob_pub))
    assert status == 0 and out.startswith("payroll  generation 2"), err
    assert "warning" not in err
    status, out, err = bob("show", "payroll")
    assert status == 0 and "generation   2" in out and "warning" not in err
    assert "signer       sg-" in out and f"({ALICE})" in out

    # -- The Windows migration: an administrator's rsa container takes over a CryptoAPI key
    # pair and reads what a Windows program encrypted.
    work = tmp_path / "capi"
    shutil.copytree(SAMPLES, work)
    admin = User(tmp_path / "admin", tmp_path / "admin-store", capsys, keyblob_main)
    status, out, _ = admin("init", "--suite", "rsa", "--label", "Payroll administrator")
    assert status == 0 and "(suite rsa)" in out and "Payroll administrator" in out
    status, out, _ = admin("capi", "import-keypair", str(work / "exchange.privblob"))
    assert status == 0 and "as the exchange key of 'default'" in out and "RSA-2048" in out
    status, out, _ = admin("trust", "add", str(work / "signer.pubblob"))
    assert status == 0 and out.startswith("trusted CryptoAPI signer 'signer' (RSA-2048")
    status, out, err = admin(
        "capi",
        "import-simpleblob",
        str(work / "payroll.simpleblob"),
        "--name",
        "payroll",
        "--signature",
        str(work / "payroll.sig"),
    )
    assert status == 0, err
    assert "imported" in out and "payroll generation 1 (capi-aes-256, CALG_AES_256)" in out
    clear = work / "salaries.out.csv"
    status, _, err = admin(
        "capi", "decrypt", "payroll", "-i", str(work / "salaries.csv.enc"), "-o", str(clear)
    )
    assert status == 0, err
    assert clear.read_bytes() == (SAMPLES / "salaries.csv").read_bytes()
    # A substituted SIMPLEBLOB (not signed by the pinned signer) is refused, nothing stored.
    status, _, err = admin(
        "capi",
        "import-simpleblob",
        str(work / "substituted.simpleblob"),
        "--name",
        "other",
        "--signature",
        str(work / "payroll.sig"),
    )
    assert status == 3, err
    status, out, _ = admin("list", "--json")
    assert [k["name"] for k in json.loads(out)["keys"]] == ["payroll"]
    status, out, _ = admin("trust", "list")
    own, pinned = out.splitlines()
    assert "Payroll administrator" in own and "this container" in own
    assert pinned.startswith("capi-rsa") and "CryptoAPI signer" in pinned
