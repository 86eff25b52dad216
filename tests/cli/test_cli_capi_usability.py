"""`keyblob capi` as people use it (issue 12 item 5, and the issue 11 review of pinned
CryptoAPI signers): each test reproduces the problem first."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hostile_keys import rsa_of
from keyblob import mscapi

PASS = "capi passphrase"
AES = mscapi.CapiKey.new(mscapi.AlgId.AES_256, bytes(range(32)))


@pytest.fixture(scope="module")
def keys():
    """A Windows exchange key pair, a signer, and a second signer of 1024 bits."""
    return (
        rsa.generate_private_key(65537, 2048),
        rsa.generate_private_key(65537, 2048),
        rsa.generate_private_key(65537, 1024),
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _pub(path: Path, key, alg=mscapi.AlgId.RSA_SIGN) -> Path:
    return _write(path, mscapi.PublicKeyBlob.from_public_key(key.public_key(), alg).to_bytes())


def _signed(tmp_path: Path, exchange, signer) -> dict[str, Path]:
    blob = mscapi.build_simpleblob(AES, exchange.public_key())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig = mscapi.sign_hash(signer, blob, legacy=True)
    return {
        "sb": _write(tmp_path / "k.sb", blob),
        "sig": _write(tmp_path / "k.sig", sig),
        "signer": _pub(tmp_path / f"signer{signer.key_size}.pub", signer),
        "priv": _write(
            tmp_path / "kx.priv", mscapi.PrivateKeyBlob.from_private_key(exchange).to_bytes()
        ),
        "key": _write(
            tmp_path / "k.plain",
            mscapi.PlaintextKeyBlob(mscapi.AlgId.AES_256, AES.unsafe_raw_bytes()).to_bytes(),
        ),
    }


def _home(kb, f) -> None:
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("capi", "import-keypair", f["priv"])[0] == 0


# -- the issue 11 review: pins and notes -----------------------------------------------------


def test_no_pin_hint_for_a_signer_trust_add_refuses(kb, tmp_path, keys):
    """An RSA-512 signer used with --legacy was told "pin it once: keyblob trust add",
    which refuses keys under 1024 bits."""
    f = _signed(tmp_path, keys[0], rsa_of(512))
    _home(kb, f)
    argv = ("capi", "import-simpleblob", f["sb"], "--name", "old", "--signature", f["sig"])
    status, _, err = kb(*argv, "--signer", f["signer"], "--legacy")
    assert status == 0 and "has fingerprint" in err and "pin it once" not in err
    status, _, err = kb("trust", "add", f["signer"])
    assert status == 2  # what the hint would have led to


def test_a_pinned_signer_that_did_not_sign_gives_no_size_warning(kb, tmp_path, keys):
    exchange, signer, small = keys
    f = _signed(tmp_path, exchange, signer)
    _home(kb, f)
    assert kb("trust", "add", _pub(tmp_path / "small.pub", small))[0] == 0
    assert kb("trust", "add", f["signer"])[0] == 0
    argv = ("capi", "import-simpleblob", f["sb"], "--name", "p", "--signature", f["sig"])
    status, _, err = kb(*argv)
    assert status == 0 and "signed by pinned CryptoAPI signer" in err
    assert "RSA-1024" not in err and "legacy size" not in err


def test_legacy_errors_name_the_option_not_the_library(kb, tmp_path):
    rc4 = _write(
        tmp_path / "rc4.plain",
        mscapi.PlaintextKeyBlob(mscapi.AlgId.RC4, bytes(16)).to_bytes(),
    )
    assert kb("init")[0] == 0
    assert kb("new", "old", "--algorithm", "capi-rc4", "--legacy")[0] == 0
    status, _, err = kb("capi", "encrypt", "old", "-i", rc4, "-o", tmp_path / "x")
    assert status == 2 and "needs --legacy" in err and "library" not in err
    assert "legacy=True" not in err


# -- capi decrypt: nothing before the first byte that could be known ------------------------


def test_misaligned_ciphertext_writes_nothing_to_a_pipe(tmp_path, keys):
    """64 bytes of garbage reached standard output before "decryption failed"."""
    import subprocess
    import sys

    f = _signed(tmp_path, keys[0], keys[1])
    ct = mscapi.encrypt(AES, b"x" * 100)
    bad = _write(tmp_path / "bad.enc", ct[:-3])  # truncated: not whole blocks
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYBLOB_")}
    done = subprocess.run(
        [sys.executable, "-m", "keyblob", "capi", "decrypt", "--key", str(f["key"]), "-i", bad],
        capture_output=True,
        env=env,
        check=False,
    )
    assert done.returncode == 3 and done.stdout == b""
    assert b"not a whole, non-zero number of 16-byte CALG_AES_256 blocks" in done.stderr
    # Standard input redirected from a file is checked the same way.
    with open(bad, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "keyblob", "capi", "decrypt", "--key", str(f["key"])],
            stdin=stdin,
            capture_output=True,
            env=env,
            check=False,
        )
    assert done.returncode == 3 and done.stdout == b""
    # A bad IV length, too.
    good = _write(tmp_path / "good.enc", ct)
    done = subprocess.run(
        [sys.executable, "-m", "keyblob", "capi", "decrypt", "--key", str(f["key"]), "-i", good,
         "--iv", "00"],
        capture_output=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == b""


def test_decrypt_refuses_a_terminal(tmp_path, keys):
    from support import run_in_terminal

    f = _signed(tmp_path, keys[0], keys[1])
    good = _write(tmp_path / "good.enc", mscapi.encrypt(AES, b"x" * 100))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYBLOB_")}
    status, out = run_in_terminal(
        ["capi", "decrypt", "--key", str(f["key"]), "-i", str(good)], [], env
    )
    assert status == 2 and "refusing to write decrypted data to a terminal" in out
    assert "x" * 16 not in out


# -- capi decrypt -o DIR: names -------------------------------------------------------------


def test_decrypted_names():
    from keyblob.cli.capi import decrypted_name

    assert decrypted_name("x.enc") == "x"
    assert decrypted_name("x.ciphertext") == "x.ciphertext.dec"
    assert decrypted_name("x.ciphertext", ".ciphertext") == "x"
    assert decrypted_name("x.enc", ".ciphertext") == "x.enc.dec"
    assert decrypted_name(".enc") == ".enc.dec"


def test_a_folder_never_gets_plaintext_under_a_ciphertext_name(kb, tmp_path, keys):
    f = _signed(tmp_path, keys[0], keys[1])
    a = _write(tmp_path / "a.ciphertext", mscapi.encrypt(AES, b"plain a"))
    b = _write(tmp_path / "b.enc", mscapi.encrypt(AES, b"plain b"))
    out = tmp_path / "out"
    out.mkdir()
    status, _, err = kb("capi", "decrypt", "--key", f["key"], "-i", a, "-i", b, "-o", out)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.ciphertext.dec", "b"]
    assert f"{a} -> {out / 'a.ciphertext.dec'}" in err
    out2 = tmp_path / "out2"
    out2.mkdir()
    status, _, err = kb(
        "capi", "decrypt", "--key", f["key"], "-i", a, "-o", out2, "--suffix", ".ciphertext"
    )
    assert status == 0 and (out2 / "a").read_bytes() == b"plain a"
    status, _, err = kb("capi", "decrypt", "--key", f["key"], "-i", a, "-o", tmp_path / "f",
                        "--suffix", ".x")  # fmt: skip
    assert status == 2 and "--suffix goes with -o DIR" in err


# -- RSA key options read every format convert reads ---------------------------------------


def test_key_options_read_pem_der_xml_and_take_a_public_half(kb, tmp_path, keys):
    exchange, signer, _ = keys
    f = _signed(tmp_path, exchange, signer)
    pem_signer = _write(
        tmp_path / "signer.pem",
        signer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    xml_private = _write(
        tmp_path / "kx.xml", mscapi.dump_rsa_key(exchange, mscapi.KeyFormat.XML, public_only=False)
    )
    status, out, err = kb(
        "capi", "unwrap", f["sb"], "--private", xml_private, "--signature", f["sig"],
        "--signer", pem_signer, "--info",
    )  # fmt: skip
    assert status == 0 and out == "CALG_AES_256, 256-bit key (32 bytes)\n", err
    assert f"--signer {pem_signer} holds a private key: only its public half is used" in err
    # --private needs the private key.
    der_public = _write(
        tmp_path / "kx.der",
        exchange.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    status, _, err = kb(
        "capi", "unwrap", f["sb"], "--private", der_public, "--signature", f["sig"],
        "--signer", pem_signer, "--info",
    )  # fmt: skip
    assert status == 2 and "--private needs the key pair" in err
    # --to: a PEM public key of the recipient.
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("new", "p", "--algorithm", "capi-aes-256")[0] == 0
    status, _, err = kb(
        "capi", "export-simpleblob", "p", "--to", der_public, "-o", tmp_path / "p.sb",
        "--signature-out", tmp_path / "p.sig",
    )  # fmt: skip
    assert status == 0, err
    assert mscapi.unwrap_simpleblob((tmp_path / "p.sb").read_bytes(), exchange).key_size == 32


# -- capi convert: an encrypted private key, and a warning for one in the clear -------------


def test_convert_writes_an_encrypted_pem_and_warns_about_a_clear_one(kb, tmp_path, keys):
    priv = _write(tmp_path / "kx.priv", mscapi.PrivateKeyBlob.from_private_key(keys[0]).to_bytes())
    status, _, err = kb("capi", "convert", priv, "--to", "pem", "-o", tmp_path / "clear.pem")
    assert status == 0 and "holds the private key in the clear" in err
    pw = _write(tmp_path / "pw", b"key file passphrase\n")
    out = tmp_path / "enc.pem"
    status, _, err = kb(
        "--passphrase-file", pw, "capi", "convert", priv, "--to", "pem", "--encrypt", "-o", out
    )
    assert status == 0 and "private, encrypted" in err and "in the clear" not in err
    assert b"ENCRYPTED PRIVATE KEY" in out.read_bytes()
    loaded = serialization.load_pem_private_key(out.read_bytes(), b"key file passphrase")
    assert loaded.private_numbers() == keys[0].private_numbers()
    # It reads back with the same passphrase file.
    status, _, _ = kb(
        "--passphrase-file", pw, "capi", "convert", out, "--to", "msblob", "--public",
        "-o", tmp_path / "back.pub",
    )  # fmt: skip
    assert status == 0
    status, _, err = kb("capi", "convert", priv, "--to", "xml", "--encrypt", "-o", tmp_path / "x")
    assert status == 2 and "pem or der" in err


def test_an_unsigned_import_is_refused_before_the_unlock(kb, tmp_path, keys, monkeypatch):
    f = _signed(tmp_path, keys[0], keys[1])
    _home(kb, f)
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # an unlock would fail with "no passphrase"
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "p")
    assert status == 3 and "no --signature" in err and "passphrase" not in err


def test_a_key_file_that_does_not_parse_is_named(kb, tmp_path, keys):
    f = _signed(tmp_path, keys[0], keys[1])
    junk = _write(tmp_path / "junk.key", b"not a key at all")
    status, _, err = kb(
        "capi", "unwrap", f["sb"], "--private", f["priv"], "--signature", f["sig"],
        "--signer", junk, "--info",
    )  # fmt: skip
    assert status == 3 and f"keyblob: error: {junk}: not PEM, DER" in err
