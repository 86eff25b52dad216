"""RFC 9180's published base-mode vectors through keyblob's receiver-side key schedule
(``providers.hpke_schedule``), with the recipient's DH done by a callable that wraps
``cryptography``'s ECDH / X25519, as a token's ``CKM_ECDH1_DERIVE`` would do it.
Third-party data, read in place (../shared/vectors/hpke/SOURCE.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from keyblob.providers import hpke_schedule
from support import shared_vectors

P256, X25519 = 0x0010, 0x0020
AES_256_GCM = 2


def entries() -> list[dict[str, Any]]:
    path = shared_vectors("hpke") / "rfc9180_base_p256_x25519.json"
    return [
        e
        for e in json.loads(path.read_text())
        if e["mode"] == 0 and e["kdf_id"] == 1 and e["aead_id"] == AES_256_GCM
    ]


def receiver_dh(entry: dict[str, Any]) -> tuple[hpke.KEM, Callable[[bytes], bytes]]:
    sk = bytes.fromhex(entry["skRm"])
    if entry["kem_id"] == P256:
        private = ec.derive_private_key(int.from_bytes(sk, "big"), ec.SECP256R1())

        def dh_p256(enc: bytes) -> bytes:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)
            return private.exchange(ec.ECDH(), peer)

        return hpke.KEM.P256, dh_p256
    assert entry["kem_id"] == X25519
    xprivate = x25519.X25519PrivateKey.from_private_bytes(sk)
    return hpke.KEM.X25519, lambda enc: xprivate.exchange(
        x25519.X25519PublicKey.from_public_bytes(enc)
    )


@pytest.mark.parametrize("kem_id", [P256, X25519], ids=["p256", "x25519"])
def test_rfc9180_base_aes256gcm(kem_id: int) -> None:
    (entry,) = [e for e in entries() if e["kem_id"] == kem_id]
    kem, dh = receiver_dh(entry)
    enc, pkr = bytes.fromhex(entry["enc"]), bytes.fromhex(entry["pkRm"])
    info = bytes.fromhex(entry["info"])
    schedule = hpke_schedule.key_schedule(enc, pkr, dh, info, kem=kem)
    assert schedule.shared_secret.hex() == entry["shared_secret"]
    assert schedule.key.hex() == entry["key"]
    assert schedule.base_nonce.hex() == entry["base_nonce"]
    assert schedule.exporter_secret.hex() == entry["exporter_secret"]
    assert len(entry["encryptions"]) == 257
    for sequence, e in enumerate(entry["encryptions"]):
        aad, ct = bytes.fromhex(e["aad"]), bytes.fromhex(e["ct"])
        assert schedule.nonce(sequence).hex() == e["nonce"]
        assert schedule.open(aad, ct, sequence).hex() == e["pt"]
    first = entry["encryptions"][0]
    opened = hpke_schedule.open_base(
        enc,
        pkr,
        dh,
        info=info,
        aad=bytes.fromhex(first["aad"]),
        ciphertext=bytes.fromhex(first["ct"]),
        kem=kem,
    )
    assert opened.hex() == first["pt"]
