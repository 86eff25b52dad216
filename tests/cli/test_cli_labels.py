"""Issue 12 item 1 in the command line: container labels, signed in a version 2 public key
file (FORMAT.md 1.5, 3, 3.2), shown with grouped fingerprints wherever a key is named; and
every reader of a public key file verifies the label signature, so a label edited in
transit is refused (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyblob import Home, publickeys
from keyblob.cli import main
from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import PUBLIC_KEY
from keyblob.format.pubkey import group_fingerprint

PASS = "s3cret passphrase"
ALICE = "Alice Martin <alice@example.com>"


class Shell:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main(["--home", str(self.home), *argv])
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def homes(tmp_path, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    return Shell(tmp_path / "alice", capsys), Shell(tmp_path / "bob", capsys)


def _edited(pub_path: Path, out: Path) -> Path:
    """``pub_path`` with one letter of its label changed, its signature left as it was."""
    raw = pub_path.read_bytes()
    pub = PublicKeyFile.from_bytes(dearmor(raw, PUBLIC_KEY))
    assert pub.label_signature is not None
    edited = PublicKeyFile(
        pub.suite,
        pub.label.replace("Alice", "Alica"),
        pub.exchange,
        pub.signature,
        pub.label_signature,
    )
    out.write_bytes(armor(edited.to_bytes(), PUBLIC_KEY))
    return out


def _signed_file_from_library(home: Path, out: Path) -> Path:
    """Alice's version 2 file as the library makes it (independent of `keyblob pubkey`)."""
    container = Home(home).open("default", PASS.encode())
    publickeys.set_label(container, ALICE)
    out.write_bytes(armor(publickeys.make(container).to_bytes(), PUBLIC_KEY))
    return out


def test_an_edited_label_is_refused_by_every_reader(homes, tmp_path):
    alice, bob = homes
    assert alice("init")[0] == 0 and bob("init")[0] == 0
    good = _signed_file_from_library(alice.home, tmp_path / "alice.pub")
    bad = _edited(good, tmp_path / "alica.pub")
    assert bob("new", "payroll")[0] == 0
    for argv in (
        ("trust", "add", str(bad)),
        ("new", "other", "--to", str(bad)),
        ("rotate", "payroll", "--to", str(bad)),
        ("inspect", str(bad)),
        ("inspect", str(bad), "--json"),
    ):
        status, out, err = bob(*argv)
        assert status == 3, (argv, out, err)
        assert "its label is not signed by its signature key" in err, (argv, err)
        assert str(bad) in err
    # Nothing was trusted, nothing stored for the refused commands.
    status, out, _ = bob("trust", "list", "--json")
    assert status == 0 and len(json.loads(out)) == 1
    status, out, _ = bob("list", "--json")
    assert [k["name"] for k in json.loads(out)["keys"]] == ["payroll"]
    assert json.loads(out)["keys"][0]["generation"] == 1
    # The file as made reads everywhere.
    status, out, err = bob("trust", "add", str(good))
    assert status == 0, err
    assert ALICE in out


def test_init_label_pubkey_and_trust(homes, tmp_path):
    alice, bob = homes
    status, out, _ = alice("init", "--label", ALICE)
    assert status == 0 and ALICE in out
    assert bob("init", "--label", "Bob Stone <bob@example.com>")[0] == 0
    pub = tmp_path / "alice.pub"
    status, out, err = alice("pubkey", "-o", str(pub))
    assert status == 0, err
    read = publickeys.read(pub.read_bytes())
    assert read.version == 2 and read.label == ALICE
    grouped = group_fingerprint(read.fingerprint)
    assert grouped in err and ALICE in err
    status, out, _ = alice("inspect", str(pub))
    assert status == 0
    assert "keyblob public key file v2" in out and ALICE in out and "signed" in out
    assert grouped in out
    status, out, _ = alice("inspect", str(pub), "--json")
    doc = json.loads(out)
    assert doc["label"] == ALICE and doc["label_signed"] is True and doc["version"] == 2
    assert doc["fingerprint"] == read.fingerprint  # JSON: ungrouped
    status, out, _ = bob("trust", "add", str(pub))
    assert status == 0
    assert f"trusted sg-{read.signature_id.short} ({ALICE})" in out
    assert grouped in out
    status, out, _ = bob("trust", "list")
    assert status == 0
    lines = out.splitlines()
    assert "Bob Stone <bob@example.com>" in lines[0] and "this container" in lines[0]
    assert ALICE in lines[1] and grouped in lines[1] and "this container" not in lines[1]
    status, out, _ = bob("trust", "list", "--json")
    rows = json.loads(out)
    assert rows[0]["label"] == "Bob Stone <bob@example.com>" and rows[0]["own"] is True
    assert rows[1]["fingerprint"] == read.fingerprint
    # A blob Alice signed, imported by Bob, names her by her label.
    bob_pub = tmp_path / "bob.pub"
    assert bob("pubkey", "-o", str(bob_pub))[0] == 0
    assert alice("new", "payroll", "--to", str(bob_pub))[0] == 0
    exported = tmp_path / "payroll.kb"
    assert alice("export", "payroll", "-o", str(exported))[0] == 0
    status, out, _ = bob("import", str(exported))
    assert status == 0 and out.rstrip().endswith(f"({ALICE})")
    # trust remove takes the fingerprint as read aloud: grouped, upper case.
    status, out, _ = bob("trust", "remove", grouped.upper()[:14])
    assert status == 0 and ALICE in out


def test_label_set_and_show(homes, tmp_path):
    alice, _ = homes
    assert alice("init")[0] == 0
    status, out, _ = alice("label")
    assert status == 0 and out.strip() == "default"
    status, out, _ = alice("label", "set", "  Alice M. <alice@example.org>")
    assert status == 2  # a label does not begin with a space
    status, out, _ = alice("label", "set", ALICE)
    assert status == 0 and ALICE in out
    status, out, _ = alice("label")
    assert out.strip() == ALICE
    status, out, _ = alice("label", "--json")
    assert json.loads(out)["label"] == ALICE
    pub = tmp_path / "a.pub"
    assert alice("pubkey", "-o", str(pub))[0] == 0
    assert publickeys.read(pub.read_bytes()).label == ALICE


def test_recipients_and_notes_name_the_container(homes, tmp_path):
    alice, bob = homes
    assert alice("init", "--label", ALICE)[0] == 0
    assert bob("init", "--label", "Bob Stone")[0] == 0
    bob_pub = tmp_path / "bob.pub"
    assert bob("pubkey", "-o", str(bob_pub))[0] == 0
    fp = group_fingerprint(publickeys.read(bob_pub.read_bytes()).fingerprint)
    status, _, err = alice("new", "payroll", "--to", str(bob_pub))
    assert status == 0
    assert "'Bob Stone'" in err and fp in err
    status, out, _ = alice("show", "payroll")
    recipients = next(line for line in out.splitlines() if line.startswith("recipients"))
    assert "(this container)" in recipients
    # Bob is not trusted here: his exchange key is named by its id only.
    assert recipients.count("kx-") == 2
    assert alice("trust", "add", str(bob_pub))[0] == 0
    status, out, _ = alice("show", "payroll")
    recipients = next(line for line in out.splitlines() if line.startswith("recipients"))
    assert "(Bob Stone)" in recipients
    status, out, _ = alice("show", "payroll", "--json")
    doc = json.loads(out)
    labels = dict(zip(doc["recipients"], doc["recipient_labels"], strict=True))
    assert sorted(labels.values()) == ["Bob Stone", "this container"]
    assert doc["signer_label"] == "this container"
    own = json.loads(alice("trust", "list", "--json")[1])[0]
    assert doc["signer_fingerprint"] == own["fingerprint"]


def test_a_version_1_file_still_reads_and_says_its_label_is_unsigned(homes, tmp_path):
    alice, bob = homes
    assert alice("init", "--label", ALICE)[0] == 0 and bob("init")[0] == 0
    pub = tmp_path / "alice.pub"
    assert alice("pubkey", "-o", str(pub))[0] == 0
    v2 = publickeys.read(pub.read_bytes())
    old = tmp_path / "alice-v1.pub"  # as keyblob wrote it before labels: the container name
    old.write_bytes(
        armor(PublicKeyFile(v2.suite, "default", v2.exchange, v2.signature).to_bytes(), PUBLIC_KEY)
    )
    status, out, _ = bob("inspect", str(old))
    assert status == 0 and "keyblob public key file v1" in out
    assert "default (name; unsigned, version 1 file)" in out and "not signed" in out
    doc = json.loads(bob("inspect", str(old), "--json")[1])
    assert (doc["version"], doc["label"], doc["label_signed"]) == (1, "default", False)
    status, _, err = bob("new", "k", "--to", str(old))
    assert status == 0 and "'default (name; unsigned, version 1 file)'" in err
    status, out, _ = bob("trust", "add", str(old))
    assert status == 0 and "(default (name; unsigned, version 1 file))" in out
    assert group_fingerprint(v2.fingerprint) in out
