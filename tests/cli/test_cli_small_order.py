"""Issue 11 item 1 at the command line: a public key file whose signature key is the
identity cannot be trusted, and a blob "signed" with R = identity, S = 0 is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from keyblob import Home
from keyblob.cli import main
from keyblob.format import KeyBlob, PublicKeyFile, armor
from keyblob.format.armor import PUBLIC_KEY
from keyblob.keys import KeyRole, Suite, key_id_for
from keyblob.trust import TrustedSigner

PASS = "s3cret passphrase"
IDENTITY = bytes([1]) + bytes(31)
IDENTITY_ID = key_id_for(Suite.X25519, KeyRole.SIGNATURE, IDENTITY)


@pytest.fixture
def kb(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    home = tmp_path / "home"

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--home", str(home), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    run.home = home  # type: ignore[attr-defined]
    assert run("init")[0] == 0
    return run


def _identity_pubkey_file(path: Path) -> Path:
    exchange = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    path.write_bytes(
        armor(PublicKeyFile(Suite.X25519, "mallory", exchange, IDENTITY).to_bytes(), PUBLIC_KEY)
    )
    return path


def _forged_blob(kb, tmp_path: Path) -> Path:
    """The victim's own blob, re-labelled as signed by the identity key: R = identity, S = 0."""
    assert kb("new", "payroll")[0] == 0
    exported = tmp_path / "payroll.kb"
    assert kb("export", "payroll", "-o", str(exported))[0] == 0
    blob = KeyBlob.from_bytes(exported.read_bytes())
    header = replace(blob.header, signer_id=IDENTITY_ID, generation=2)
    forged = tmp_path / "forged.kb"
    forged.write_bytes(KeyBlob(header, blob.recipients, IDENTITY + bytes(32)).to_bytes())
    return forged


def test_trust_add_refuses_the_identity_as_signature_key(kb, tmp_path):
    path = _identity_pubkey_file(tmp_path / "mallory.pub")
    status, out, err = kb("trust", "add", str(path))
    assert status == 3, err
    lines = [line for line in err.splitlines() if line.startswith("keyblob: error:")]
    assert len(lines) == 1 and "small-order Ed25519 point" in lines[0], err
    assert "Traceback" not in err and out == ""
    assert "mallory" not in kb("trust", "list")[1]


def test_import_of_a_blob_forged_with_r_identity_s_zero_is_refused(kb, tmp_path):
    forged = _forged_blob(kb, tmp_path)
    kb("trust", "add", str(_identity_pubkey_file(tmp_path / "mallory.pub")))  # refused
    status, _, err = kb("import", str(forged))
    assert status == 3 and "not a trusted signer" in err, err
    assert kb("show", "payroll", "--json")[1].count('"generation": 1') == 1


def test_a_state_that_already_trusts_the_identity_refuses_its_forgery(kb, tmp_path):
    """A trust entry written before this check existed: refused at use, and removable."""
    forged = _forged_blob(kb, tmp_path)
    container = Home(kb.home).open("default", PASS.encode())
    signer = TrustedSigner(
        IDENTITY_ID, Suite.X25519, IDENTITY, container.exchange_public, "mallory", 0
    )
    container.update_state(lambda s: s.with_signer(signer))
    status, _, err = kb("import", str(forged))
    assert status == 3, err
    assert "is trusted, but its key cannot be used" in err and "small-order" in err
    assert f"keyblob trust remove {IDENTITY_ID.hex}" in err
    assert kb("verify", str(forged))[0] == 3
    assert kb("trust", "remove", IDENTITY_ID.hex)[0] == 0
