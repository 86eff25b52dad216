"""Interop: OpenSSL 3 reads the MSBLOB keys keyblob writes and keyblob reads the ones it
writes, byte-exact both ways, for 1024 to 4096 bits (``openssl rsa -inform/-outform MSBLOB``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import support
from keyblob.mscapi import PrivateKeyBlob, PublicKeyBlob


@pytest.mark.parametrize("bits", [1024, 2048, 3072, 4096])
def test_both_directions(bits: int, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    ours_priv = PrivateKeyBlob.from_private_key(key).to_bytes()
    ours_pub = PublicKeyBlob.from_public_key(key.public_key()).to_bytes()
    # OpenSSL writes: we read, and re-encode byte for byte.
    theirs_priv = support.openssl("rsa", "-in", str(pem), "-outform", "MSBLOB")
    theirs_pub = support.openssl("rsa", "-in", str(pem), "-pubout", "-outform", "MSBLOB")
    assert theirs_priv == ours_priv
    assert theirs_pub == ours_pub
    parsed = PrivateKeyBlob.from_bytes(theirs_priv)
    assert parsed.to_private_key().private_numbers() == key.private_numbers()
    assert PublicKeyBlob.from_bytes(theirs_pub).to_bytes() == theirs_pub
    # We write: OpenSSL reads, checks, and converts back to the same DER (3.0 writes PKCS#8).
    (tmp_path / "ours.priv").write_bytes(ours_priv)
    (tmp_path / "ours.pub").write_bytes(ours_pub)
    check = support.openssl(
        "rsa", "-inform", "MSBLOB", "-in", str(tmp_path / "ours.priv"), "-noout", "-check"
    )
    assert b"RSA key ok" in check
    der = support.openssl(
        "rsa", "-inform", "MSBLOB", "-in", str(tmp_path / "ours.priv"), "-outform", "DER"
    )
    assert der == key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_der = support.openssl(
        "rsa",
        "-pubin",
        "-inform",
        "MSBLOB",
        "-in",
        str(tmp_path / "ours.pub"),
        "-pubout",
        "-outform",
        "DER",
    )
    assert pub_der == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
