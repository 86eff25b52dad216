"""FORMAT.md 3: the 8192-byte limit of a public key file counts the binary file, i.e. the
decoded bytes of an armored one, and is checked before any field; the largest well-formed
file (version 2 pq, a 200-byte label) fits it."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from keyblob.errors import FormatError
from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import PUBLIC_KEY
from keyblob.format.pubkey import MAX_FILE_SIZE
from keyblob.keys import Suite
from keyblob.providers import suites


def _file() -> bytes:
    exchange = suites.public_bytes(x25519.X25519PrivateKey.generate())
    signature = suites.public_bytes(ed25519.Ed25519PrivateKey.generate())
    return PublicKeyFile(Suite.X25519, "alice", exchange, signature).to_bytes()


def test_the_limit_is_8192() -> None:
    assert MAX_FILE_SIZE == 8192


def test_8193_bytes_is_refused_by_size_8192_by_layout() -> None:
    data = _file()
    with pytest.raises(FormatError, match="over the 8192-byte limit"):
        PublicKeyFile.from_bytes(data + bytes(8193 - len(data)))
    with pytest.raises(FormatError) as e:
        PublicKeyFile.from_bytes(data + bytes(8192 - len(data)))
    assert "8192" not in str(e.value)  # within the limit: the trailing bytes are the fault


def test_the_largest_pq_file_fits() -> None:
    exchange = suites.public_bytes(suites.XWingPrivateKey.generate())
    key = suites.HybridSignaturePrivateKey.generate()
    label = "é" * 100  # 200 bytes of UTF-8
    unsigned = PublicKeyFile(Suite.PQ, label, exchange, suites.public_bytes(key), bytes(3373))
    signed = PublicKeyFile(
        Suite.PQ, label, exchange, unsigned.signature, key.sign(unsigned.label_message())
    )
    data = signed.to_bytes()
    assert len(data) == 6788
    assert PublicKeyFile.from_bytes(dearmor(armor(data, PUBLIC_KEY), PUBLIC_KEY)) == signed


def test_the_armor_is_not_counted() -> None:
    data = _file()
    padded = armor(data, PUBLIC_KEY) + b"\n" * 8192
    assert len(padded) > 8192
    assert PublicKeyFile.from_bytes(dearmor(padded, PUBLIC_KEY)).to_bytes() == data
    with pytest.raises(FormatError, match="over the 8192-byte limit"):
        PublicKeyFile.from_bytes(
            dearmor(armor(data + bytes(8193 - len(data)), PUBLIC_KEY), PUBLIC_KEY)
        )
