"""`keyblob capi convert`: any RSA key format in, the requested one out, byte-exact with
openssl where openssl writes the same format."""

from __future__ import annotations

import os
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import support
from keyblob import mscapi
from keyblob.cli import main

BITS = [1024, 2048, 3072, 4096]


@pytest.fixture(scope="module")
def keys():
    return {bits: rsa.generate_private_key(65537, bits) for bits in BITS}


@pytest.fixture
def kb(capsysbinary, monkeypatch):
    monkeypatch.delenv("KEYBLOB_PASSPHRASE", raising=False)

    def run(*argv):
        capsysbinary.readouterr()
        status = main([str(a) for a in argv])
        out, err = capsysbinary.readouterr()
        return status, out, err.decode()

    return run


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize("bits", BITS)
def test_round_trip_every_format(kb, keys, tmp_path, bits):
    key = keys[bits]
    pem = tmp_path / "k.pem"
    pem.write_bytes(_pem(key))
    previous = pem
    for fmt in ("msblob", "xml", "der", "pem"):
        out = tmp_path / f"k.{fmt}"
        status, _, err = kb("capi", "convert", previous, "--to", fmt, "-o", out)
        assert status == 0, err
        assert oct(out.stat().st_mode & 0o777) == "0o600"
        assert mscapi.load_rsa_key(out.read_bytes()).key.private_numbers() == key.private_numbers()
        previous = out
    assert (tmp_path / "k.pem").read_bytes() == _pem(key)


@pytest.mark.parametrize("bits", BITS)
def test_byte_exact_with_openssl(kb, keys, tmp_path, bits):
    pem = tmp_path / "k.pem"
    pem.write_bytes(_pem(keys[bits]))
    blob = tmp_path / "k.msblob"
    kb("capi", "convert", pem, "--to", "msblob", "-o", blob)
    assert blob.read_bytes() == support.openssl("rsa", "-in", str(pem), "-outform", "MSBLOB")
    pub = tmp_path / "k.pubblob"
    kb("capi", "convert", pem, "--to", "msblob", "--public", "-o", pub)
    assert pub.read_bytes() == support.openssl(
        "rsa", "-in", str(pem), "-pubout", "-outform", "MSBLOB"
    )
    # openssl's MSBLOB back to PEM gives what openssl pkey writes.
    back = tmp_path / "back.pem"
    kb("capi", "convert", blob, "--to", "pem", "-o", back)
    assert back.read_bytes() == support.openssl("pkey", "-inform", "MSBLOB", "-in", str(blob))
    pub_pem = tmp_path / "pub.pem"
    kb("capi", "convert", pub, "--to", "pem", "-o", pub_pem)
    assert pub_pem.read_bytes() == support.openssl(
        "pkey", "-pubin", "-inform", "MSBLOB", "-in", str(pub)
    )


def test_dotnet_xml(kb, keys, tmp_path):
    key = keys[2048]
    xml = support.dotnet_xml(key).decode()
    (tmp_path / "k.xml").write_text(xml)
    status, _, err = kb(
        "capi", "convert", tmp_path / "k.xml", "--to", "pem", "-o", tmp_path / "k.pem"
    )
    assert status == 0, err
    assert (tmp_path / "k.pem").read_bytes() == _pem(key)
    kb("capi", "convert", tmp_path / "k.pem", "--to", "xml", "-o", tmp_path / "again.xml")
    assert (tmp_path / "again.xml").read_text() == xml  # what .NET's ToXmlString writes


def test_encrypted_input_and_errors(kb, keys, tmp_path, monkeypatch):
    key = keys[1024]
    enc = tmp_path / "enc.pem"
    enc.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hunter2"),
        )
    )
    status, _, err = kb("capi", "convert", enc, "--to", "msblob", "-o", tmp_path / "o")
    assert status == 2 and "--passphrase-file" in err and not (tmp_path / "o").exists()
    pf = tmp_path / "pass"
    pf.write_text("wrong\n")
    status, _, err = kb(
        "--passphrase-file", pf, "capi", "convert", enc, "--to", "msblob", "-o", tmp_path / "o"
    )
    assert status == 5 and not (tmp_path / "o").exists()
    pf.write_text("hunter2\n")
    assert (
        kb("--passphrase-file", pf, "capi", "convert", enc, "--to", "msblob", "-o", tmp_path / "o")[
            0
        ]
        == 0
    )
    # KEYBLOB_PASSPHRASE (a container's) is tried on a key file only without
    # --passphrase-file, and a failure says so.
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "the container's")
    status, _, err = kb("capi", "convert", enc, "--to", "msblob", "-o", tmp_path / "o2")
    assert status == 5 and "the passphrase tried was KEYBLOB_PASSPHRASE" in err
    out = tmp_path / "o2"
    assert kb("--passphrase-file", pf, "capi", "convert", enc, "--to", "msblob", "-o", out)[0] == 0
    (tmp_path / "junk").write_bytes(os.urandom(64))
    status, _, err = kb("capi", "convert", tmp_path / "junk", "--to", "pem")
    assert status == 3 and err.count("\n") == 1 and "no format matches" in err
    blob = mscapi.PrivateKeyBlob.from_private_key(key).to_bytes()
    (tmp_path / "cut").write_bytes(blob[:100])
    status, _, err = kb("capi", "convert", tmp_path / "cut", "--to", "pem")
    assert status == 3 and "PRIVATEKEYBLOB" in err and "truncated" in err


def test_private_key_never_to_a_terminal(kb, keys, tmp_path, monkeypatch):
    (tmp_path / "k.pem").write_bytes(_pem(keys[1024]))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, out, err = kb("capi", "convert", tmp_path / "k.pem", "--to", "pem")
    assert status == 2 and "terminal" in err and out == b""
    status, out, _ = kb("capi", "convert", tmp_path / "k.pem", "--to", "pem", "--public")
    assert status == 0 and out.startswith(b"-----BEGIN PUBLIC KEY-----")
    status, out, _ = kb("capi", "convert", tmp_path / "k.pem", "--to", "pem", "--force")
    assert status == 0 and b"PRIVATE KEY" in out
