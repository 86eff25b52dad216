"""The optional ``capi_exchange`` member of a token container's container.json (FORMAT.md
5.1.1): read back as written, and every malformed form refused before a token is touched."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyblob import FormatError
from keyblob.keys import Suite
from keyblob.providers import suites
from keyblob.providers.homestate import check_private_folder

pkcs11 = pytest.importorskip("keyblob.providers.pkcs11", reason="python-pkcs11 is in the dev extra")

RSA_KEY = rsa.generate_private_key(65537, 2048)


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _capi(public: bytes) -> dict[str, str]:
    return {
        "public": base64.b64encode(public).decode(),
        "label": "keyblob/c/0011aabb/capi-exchange",
        "id": hashlib.sha256(public).digest()[:16].hex(),
    }


def _doc() -> dict[str, Any]:
    exchange, signature = (
        base64.b64encode(suites.public_bytes(k)).decode() for k in suites.generate(Suite.P256)
    )
    return {
        "format": "keyblob-pkcs11-container/v1",
        "name": "c",
        "suite": "p256",
        "created": 1765000000,
        "pkcs11": {"module": "/usr/lib/softhsm/libsofthsm2.so", "token": "t", "serial": "0a1b"},
        "exchange": {"public": exchange, "label": "keyblob/c/0011aabb/exchange", "id": "00" * 16},
        "signature": {
            "public": signature,
            "label": "keyblob/c/0011aabb/signature",
            "id": "11" * 16,
        },
        "state": {"label": "keyblob/c/0011aabb/state", "id": "22" * 16},
        "capi_exchange": _capi(_spki(RSA_KEY)),
    }


def _record(tmp_path: Path, doc: dict[str, Any]) -> Any:
    folder = tmp_path / "home" / "containers" / "c"
    folder.mkdir(parents=True)
    for path in (tmp_path / "home", tmp_path / "home" / "containers", folder):
        path.chmod(0o700)
    (folder / "container.json").write_bytes(json.dumps(doc).encode())
    (folder / "container.json").chmod(0o600)
    check_private_folder(folder, "folder")
    from keyblob.providers.software import Home

    home = Home(tmp_path / "home")
    return home._token_record("c", home._read_doc("c"))


def test_capi_exchange_is_read_back_as_written(tmp_path: Path) -> None:
    doc = _doc()
    record = _record(tmp_path, doc)
    assert record.capi_exchange.public == _spki(RSA_KEY)
    assert record.capi_exchange.label == doc["capi_exchange"]["label"]
    assert record.base == "keyblob/c/0011aabb"
    assert record.to_json() == doc  # canonical: what is read is what is written
    del doc["capi_exchange"]  # optional: a container without it
    assert pkcs11.TokenRecord.from_json(doc, "c").capi_exchange is None


def _broken() -> list[tuple[str, Any]]:
    p256 = ec.generate_private_key(ec.SECP256R1())
    spki = _spki(RSA_KEY)
    return [
        ("an extra member", lambda c: c.update(extra="x")),
        ("a missing id", lambda c: c.pop("id")),
        ("an id that is not its public key's", lambda c: c.update(id="33" * 16)),
        ("an EC public key", lambda c: c.update(_capi(_spki(p256)))),
        ("not DER", lambda c: c.update(public=base64.b64encode(b"\x30\x03abc").decode())),
        ("trailing bytes", lambda c: c.update(_capi(spki + b"\x00"))),
        ("a base64 with a line break", lambda c: c.update(public=c["public"] + "\n")),
        ("a label with a control character", lambda c: c.update(label="a\x01b")),
        ("no member at all", lambda c: c.clear()),
    ]


@pytest.mark.parametrize("why", [why for why, _ in _broken()])
def test_a_malformed_capi_exchange_is_refused(tmp_path: Path, why: str) -> None:
    edit = dict(_broken())[why]
    doc = _doc()
    edit(doc["capi_exchange"])
    with pytest.raises(FormatError, match="not a valid keyblob-pkcs11-container/v1 file"):
        _record(tmp_path, doc)


def test_a_1024_bit_capi_key_is_accepted_and_a_512_bit_one_refused(tmp_path: Path) -> None:
    """CryptoAPI's rule for reading (docs/MSCAPI.md 5), not the rsa suite's: Windows keys of
    1024 bits are read (with a warning, when used); under 1024 never."""
    doc = _doc()
    doc["capi_exchange"] = _capi(_spki(rsa.generate_private_key(65537, 1024)))
    assert pkcs11.TokenRecord.from_json(doc, "c").capi_exchange is not None
    # cryptography makes no RSA key under 1024 bits: a 512-bit public key from its numbers
    n = (1 << 511) | 1 | (1 << 100)
    doc["capi_exchange"] = _capi(
        rsa.RSAPublicNumbers(65537, n)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(FormatError):
        pkcs11.TokenRecord.from_json(doc, "c")
