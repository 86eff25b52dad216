"""`keyblob capi` on a token container (SoftHSM2, ``softhsm_token``): the Windows exchange
key imported into the token with ``capi import-keypair``, then ``capi import-simpleblob`` and
``capi decrypt`` through it, as tests/cli/test_cli_capi.py does for a software container;
and what a token container refuses, in one line with its exit status."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, ObjectClass

import support
from keyblob import mscapi
from keyblob.providers import pkcs11 as token_provider
from support import SoftHSMToken

PASS = "not used: a token container takes its PIN"


@pytest.fixture
def token_home(
    softhsm_token: SoftHSMToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kb
) -> Iterator[Path]:
    """``keyblob init --provider pkcs11`` done in the kb home; the container's objects are
    destroyed in the token afterwards."""
    monkeypatch.setenv("KEYBLOB_PIN", softhsm_token.pin)
    status, _, err = kb(
        "init", "--provider", "pkcs11", "--module", softhsm_token.module, "--token",
        softhsm_token.label,
    )  # fmt: skip
    assert status == 0, err
    folder = tmp_path / "home" / "containers" / "default"
    base = json.loads((folder / "container.json").read_bytes())["state"]["label"]
    base = base.removesuffix("/state")
    yield folder
    # keyblob.cli.main does not close the container it opened (a command's process ends
    # there): log out what the in-process commands left, as their process exit would.
    for key, login in list(token_provider._LOGINS.items()):
        if key[1] == softhsm_token.label:
            del token_provider._LOGINS[key]
            login.session.close()
    with token_provider.open_session(
        softhsm_token.module, softhsm_token.label, softhsm_token.pin
    ) as opened:
        for obj in list(opened.session.get_objects()):
            label = obj[Attribute.LABEL]
            if isinstance(label, str) and label.startswith(base + "/"):
                obj.destroy()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _windows_files(tmp_path: Path, plain: bytes) -> dict[str, Path]:
    """What a Windows program following the procedure leaves on disk (2048-bit keys)."""
    exchange, signer = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    session = mscapi.CapiKey.new(mscapi.AlgId.AES_256, os.urandom(32))
    blob = mscapi.build_simpleblob(session, exchange.public_key())
    return {
        "priv": _write(
            tmp_path / "kx.priv", mscapi.PrivateKeyBlob.from_private_key(exchange).to_bytes()
        ),
        "sigpriv": _write(
            tmp_path / "sg.priv",
            mscapi.PrivateKeyBlob.from_private_key(signer, mscapi.AlgId.RSA_SIGN).to_bytes(),
        ),
        "signer": _write(
            tmp_path / "sg.pub",
            mscapi.PublicKeyBlob.from_public_key(
                signer.public_key(), alg_id=mscapi.AlgId.RSA_SIGN
            ).to_bytes(),
        ),
        "sb": _write(tmp_path / "key.sb", blob),
        "sig": _write(tmp_path / "key.sig", mscapi.sign_hash(signer, blob)),
        "ct": _write(tmp_path / "data.enc", mscapi.encrypt(session, plain)),
    }


def test_import_keypair_then_simpleblob_then_decrypt(kb, tmp_path, token_home, softhsm_token):
    f = _windows_files(tmp_path, b"salaries" * 100)
    signed = ["--signature", f["sig"], "--signer", f["signer"]]
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "payroll", *signed)
    assert status == 2 and "holds no CryptoAPI exchange key" in err, err
    assert "keyblob capi import-keypair PRIVATEKEYBLOB" in err
    status, out, err = kb("capi", "import-keypair", f["priv"])
    assert status == 0, err
    assert "as the exchange key of 'default'" in out and "in PKCS#11 token" in out
    assert "sensitive, not extractable" in out
    record = json.loads((token_home / "container.json").read_bytes())
    assert record["suite"] == "p256" and record["capi_exchange"]["label"].endswith("/capi-exchange")
    status, out, err = kb("capi", "import-simpleblob", f["sb"], "--name", "payroll", *signed)
    assert status == 0 and "capi-aes-256" in out and "CALG_AES_256" in out, err
    status, out, err = kb("capi", "decrypt", "payroll", "-i", f["ct"])
    assert status == 0 and out == "salaries" * 100, err
    # The stored key is wrapped to the container's own p256 exchange key, in the token.
    status, out, _ = kb("show", "payroll", "--json")
    assert status == 0 and '"algorithm": "capi-aes-256"' in out
    # A damaged SIMPLEBLOB that is signed is refused; nothing is stored.
    damaged = bytearray(f["sb"].read_bytes())
    damaged[12] ^= 1
    bad = _write(tmp_path / "bad.sb", bytes(damaged))
    status, _, err = kb(
        "capi", "import-simpleblob", bad, "--name", "other", "--signature", f["sig"],
        "--signer", f["signer"],
    )  # fmt: skip
    assert status == 3, err  # the signature is over the undamaged blob
    status, _, err = kb("capi", "import-simpleblob", bad, "--name", "other", "--unsigned")
    assert status == 0 and "damaged blob yields a random key" in err, err
    status, _, err = kb("capi", "decrypt", "other", "-i", f["ct"], "-o", tmp_path / "out")
    assert status == 3 and not (tmp_path / "out").exists(), err


def test_a_wine_simpleblob_through_the_command_line(kb, tmp_path, token_home):
    case = support.shared_vectors("cryptoapi") / "wine-rsaenh" / "import_private_simpleblob_rc4"
    expected = json.loads((case / "manifest.json").read_bytes())["expected"]
    status, out, err = kb("capi", "import-keypair", case / "privatekeyblob.bin")
    assert status == 0 and "(RSA-1024)" in out, err
    assert "RSA-1024, a legacy size" in err  # said once, before the PIN
    status, _, err = kb(
        "capi", "import-simpleblob", case / "simpleblob.bin", "--name", "wine", "--unsigned"
    )
    assert status == 0, err
    status, out, err = kb("capi", "decrypt", "wine", "-i", case / "ciphertext.bin")
    assert status == 0, err
    assert out.encode("latin-1").hex() == expected["plaintext_hex"]


def test_what_the_command_line_refuses_on_a_token_container(
    kb, tmp_path, token_home, softhsm_token
):
    f = _windows_files(tmp_path, b"x")
    status, _, err = kb("capi", "import-keypair", f["sigpriv"])
    assert status == 2 and "--slot exchange" in err and "only" in err, err
    status, _, err = kb("capi", "import-keypair", f["priv"], "--slot", "signature")
    assert status == 2 and "--slot exchange" in err, err
    weak = support.shared_vectors("cryptoapi") / "wine-rsaenh" / "keypair_512_exchange"
    status, _, err = kb("capi", "import-keypair", weak / "privatekeyblob.bin")
    assert status == 2 and "512" in err, err
    assert "capi_exchange" not in json.loads((token_home / "container.json").read_bytes())
    assert kb("capi", "import-keypair", f["priv"])[0] == 0
    other = _write(
        tmp_path / "other.priv",
        mscapi.PrivateKeyBlob.from_private_key(rsa.generate_private_key(65537, 2048)).to_bytes(),
    )
    status, _, err = kb("capi", "import-keypair", other)
    assert status == 2 and "already holds a CryptoAPI exchange key" in err, err
    assert kb("capi", "import-keypair", other, "--force")[0] == 0
    # No CryptoAPI signature key in a token container: export-simpleblob is refused, and
    # writes nothing.
    assert kb("new", "k", "--algorithm", "capi-aes-256")[0] == 0
    status, _, err = kb(
        "capi", "export-simpleblob", "k", "--to", f["priv"], "-o", tmp_path / "o.sb",
        "--signature-out", tmp_path / "o.sig",
    )  # fmt: skip
    assert status == 2 and "no CryptoAPI signature key" in err, err
    assert not (tmp_path / "o.sb").exists() and not (tmp_path / "o.sig").exists()
    # The private key never leaves the token: nothing in the home holds it.
    with token_provider.open_session(
        softhsm_token.module, softhsm_token.label, softhsm_token.pin
    ) as opened:
        label = json.loads((token_home / "container.json").read_bytes())["capi_exchange"]["label"]
        (private,) = opened.session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}
        )
        assert private[Attribute.SENSITIVE] is True and private[Attribute.EXTRACTABLE] is False
