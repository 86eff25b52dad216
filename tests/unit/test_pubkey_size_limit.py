"""FORMAT.md 3: the 4096-byte limit of a public key file counts the binary file, i.e. the
decoded bytes of an armored one, and is checked before any field."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from keyblob.errors import FormatError
from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import PUBLIC_KEY
from keyblob.keys import Suite
from keyblob.providers import suites


def _file() -> bytes:
    exchange = suites.public_bytes(x25519.X25519PrivateKey.generate())
    signature = suites.public_bytes(ed25519.Ed25519PrivateKey.generate())
    return PublicKeyFile(Suite.X25519, "alice", exchange, signature).to_bytes()


def test_4097_bytes_is_refused_by_size_4096_by_layout() -> None:
    data = _file()
    with pytest.raises(FormatError, match="over the 4096-byte limit"):
        PublicKeyFile.from_bytes(data + bytes(4097 - len(data)))
    with pytest.raises(FormatError) as e:
        PublicKeyFile.from_bytes(data + bytes(4096 - len(data)))
    assert "4096" not in str(e.value)  # within the limit: the trailing bytes are the fault


def test_the_armor_is_not_counted() -> None:
    data = _file()
    padded = armor(data, PUBLIC_KEY) + b"\n" * 4096
    assert len(padded) > 4096
    assert PublicKeyFile.from_bytes(dearmor(padded, PUBLIC_KEY)).to_bytes() == data
    with pytest.raises(FormatError, match="over the 4096-byte limit"):
        PublicKeyFile.from_bytes(
            dearmor(armor(data + bytes(4097 - len(data)), PUBLIC_KEY), PUBLIC_KEY)
        )
