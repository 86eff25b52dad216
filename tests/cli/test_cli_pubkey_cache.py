"""Issue 12 item 4: `keyblob pubkey` needs no passphrase.  The signed public key file is
kept in the container's folder (FORMAT.md 5) whenever the label is signed, and served only
while its label signature verifies and its keys are the container's; otherwise pubkey
unlocks and makes it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyblob import Home, publickeys
from keyblob.cli import main
from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import PUBLIC_KEY

PASS = "s3cret passphrase"
ALICE = "Alice Martin <alice@example.com>"


def run(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["--home", str(home), *argv])
    out, err = capsys.readouterr()
    return status, out, err


def kept(home: Path) -> Path:
    return home / "containers" / "default" / "public.kbpub"


def fields(data: bytes) -> tuple[object, ...]:
    """What a public key file says (PSS label signatures of the rsa suite are randomized)."""
    pub = publickeys.read(data)
    return pub.version, pub.suite, pub.label, pub.exchange, pub.signature, pub.label_signed


def unlocked_file(home: Path) -> bytes:
    """The file the unlocked path makes, independent of the kept one."""
    container = Home(home).open("default", PASS.encode())
    return armor(publickeys.make(container).to_bytes(), PUBLIC_KEY)


@pytest.fixture(params=["x25519", "rsa"])
def home(request, tmp_path, capsys, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    """A container made with `init --label`; KEYBLOB_PASSPHRASE unset afterwards (and the
    tests' standard input is no terminal)."""
    path = tmp_path / "home"
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    argv = ["init", "--label", ALICE, "--suite", request.param]
    if request.param == "rsa":
        argv += ["--bits", "2048"]
    assert run(capsys, path, *argv)[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    return path


def test_pubkey_after_init_needs_no_passphrase(home, tmp_path, capsys, monkeypatch):
    assert kept(home).stat().st_mode & 0o777 == 0o600
    out_file = tmp_path / "alice.pub"
    status, _, err = run(capsys, home, "pubkey", "-o", str(out_file))
    assert status == 0, err
    assert "passphrase" not in err and "note:" not in err
    assert out_file.read_bytes() == kept(home).read_bytes()
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    assert fields(out_file.read_bytes()) == fields(unlocked_file(home))
    pub = publickeys.read(out_file.read_bytes())
    assert pub.label == ALICE and pub.label_signed
    assert err.splitlines()[-1].replace(" ", "").startswith(f"fingerprint{pub.fingerprint}")
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    status, out, err = run(capsys, home, "pubkey", "--format", "pem")
    assert status == 0 and ALICE in out and out.count("BEGIN PUBLIC KEY") == 2, err


def test_msblob_needs_no_passphrase_even_without_a_kept_file(home, tmp_path, capsys):
    """A PUBLICKEYBLOB holds no label: container.json's public keys are all it needs."""
    kept(home).unlink()
    out_file = tmp_path / "alice.msblob"
    status, _, err = run(capsys, home, "pubkey", "--format", "msblob", "-o", str(out_file))
    if "rsa-suite" in err:  # an x25519 container has no PUBLICKEYBLOB: a usage error
        assert status == 2
        return
    assert status == 0 and "passphrase" not in err, err
    assert out_file.read_bytes()[:1] == b"\x06"  # PUBLICKEYBLOB
    assert "container 'default'" in err and not kept(home).exists()


def test_label_set_rewrites_the_kept_file(home, capsys, monkeypatch):
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    assert run(capsys, home, "label", "set", "Alice M. <am@example.com>")[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    assert publickeys.read(kept(home).read_bytes()).label == "Alice M. <am@example.com>"
    status, out, err = run(capsys, home, "pubkey")
    assert status == 0 and "passphrase" not in err, err
    assert publickeys.read(out.encode()).label == "Alice M. <am@example.com>"


def _edit_label(path: Path) -> None:
    pub = PublicKeyFile.from_bytes(dearmor(path.read_bytes(), PUBLIC_KEY))
    assert pub.label_signature is not None
    edited = PublicKeyFile(
        pub.suite, pub.label.replace("Alice", "Alica"), pub.exchange, pub.signature,
        pub.label_signature,
    )  # fmt: skip
    path.write_bytes(armor(edited.to_bytes(), PUBLIC_KEY))


def test_an_edited_kept_file_is_never_served(home, capsys, monkeypatch):
    _edit_label(kept(home))
    status, out, err = run(capsys, home, "pubkey")
    assert status == 2 and out == "" and "no passphrase" in err, err
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    status, out, err = run(capsys, home, "pubkey")
    assert status == 0 and "did not match" in err, err
    assert publickeys.read(out.encode()).label == ALICE
    assert publickeys.read(kept(home).read_bytes()).label == ALICE  # made again


def test_a_kept_file_of_other_keys_is_never_served(home, tmp_path, capsys, monkeypatch):
    """Another container's file, properly signed, in this container's folder."""
    other = tmp_path / "other"
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    assert run(capsys, other, "init", "--label", ALICE)[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    kept(home).write_bytes(kept(other).read_bytes())
    status, out, err = run(capsys, home, "pubkey")
    assert status == 2 and out == "" and "no passphrase" in err, err
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    status, out, _ = run(capsys, home, "pubkey")
    assert status == 0
    assert fields(out.encode()) == fields(unlocked_file(home))
    assert fields(out.encode()) != fields(kept(other).read_bytes())


def test_a_container_without_a_kept_file_still_works_by_unlocking(home, capsys, monkeypatch):
    """A container made before keyblob kept the file."""
    kept(home).unlink()
    status, _, err = run(capsys, home, "pubkey")
    assert status == 2 and "no passphrase" in err
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    status, out, err = run(capsys, home, "pubkey")
    assert status == 0 and "needs no passphrase from now on" in err, err
    assert fields(out.encode()) == fields(unlocked_file(home))
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    status, out2, err = run(capsys, home, "pubkey")
    assert status == 0 and "note:" not in err and fields(out2.encode()) == fields(out.encode())
