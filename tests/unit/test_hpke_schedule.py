"""providers.hpke_schedule against ``cryptography``'s own HPKE, both ways, and its refusals:
every failure is the one VerificationError message, and a bad ``enc`` never reaches the DH."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyblob.errors import UsageError, VerificationError
from keyblob.providers import hpke_schedule

SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
POINT = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
INFO = b"keyblob header bytes"


def point(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(*POINT)


def ecdh(private: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    def dh(peer: bytes) -> bytes:
        return private.exchange(
            ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer)
        )

    return dh


def test_opens_what_cryptography_seals() -> None:
    recipient = ec.generate_private_key(ec.SECP256R1())
    for size in (0, 1, 32, 1000):
        message = os.urandom(size)
        sealed = SUITE.encrypt(message, recipient.public_key(), info=INFO)
        enc, ct = sealed[:65], sealed[65:]
        opened = hpke_schedule.open_base(
            enc, point(recipient), ecdh(recipient), info=INFO, aad=b"", ciphertext=ct
        )
        assert opened == message


def test_cryptography_opens_what_this_schedule_seals() -> None:
    """The sender's DH(skE, pkR) equals the receiver's, so the same schedule seals; the
    ciphertext then opens with cryptography's HPKE: the two schedules agree bit for bit."""
    recipient, ephemeral = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    recipient_dh = ecdh(ephemeral)  # the sender's side: skE with pkR
    schedule = hpke_schedule.key_schedule(
        point(ephemeral), point(recipient), lambda _enc: recipient_dh(point(recipient)), INFO
    )
    message = b"a session key, 32 bytes long...."
    ct = AESGCM(schedule.key).encrypt(schedule.base_nonce, message, b"")
    assert SUITE.decrypt(point(ephemeral) + ct, recipient, info=INFO) == message


def sealed_case() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    recipient = ec.generate_private_key(ec.SECP256R1())
    sealed = SUITE.encrypt(b"secret", recipient.public_key(), info=INFO)
    return recipient, sealed[:65], sealed[65:]


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    "what",
    ["ct", "tag", "info", "aad", "recipient_public", "recipient_off_curve", "enc_on_curve", "dh"],
)
def test_every_change_fails_with_one_message(what: str) -> None:
    recipient, enc, ct = sealed_case()
    pkr, info, aad = point(recipient), INFO, b""
    dh = ecdh(recipient)
    if what == "ct":
        ct = flip(ct, 0)
    elif what == "tag":
        ct = flip(ct, len(ct) - 1)
    elif what == "info":
        info = flip(info, 3)
    elif what == "aad":
        aad = b"x"
    elif what == "recipient_public":
        pkr = point(ec.generate_private_key(ec.SECP256R1()))
    elif what == "recipient_off_curve":
        pkr = flip(pkr, 64)
    elif what == "enc_on_curve":
        enc = point(ec.generate_private_key(ec.SECP256R1()))  # valid, but not the sender's
    else:
        dh = ecdh(ec.generate_private_key(ec.SECP256R1()))  # another private key
    with pytest.raises(VerificationError) as caught:
        hpke_schedule.open_base(enc, pkr, dh, info=info, aad=aad, ciphertext=ct)
    assert str(caught.value) == hpke_schedule.OPEN_FAILED


@pytest.mark.parametrize(
    "bad_enc", ["off_curve", "compressed", "short", "long", "infinity"], ids=str
)
def test_a_malformed_enc_never_reaches_the_dh(bad_enc: str) -> None:
    recipient, enc, ct = sealed_case()
    if bad_enc == "off_curve":
        enc = flip(enc, 64)
    elif bad_enc == "compressed":
        enc = recipient.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
    elif bad_enc == "short":
        enc = enc[:64]
    elif bad_enc == "long":
        enc += b"\x00"
    else:
        enc = b"\x00" * 65
    calls: list[bytes] = []

    def dh(peer: bytes) -> bytes:
        calls.append(peer)
        return ecdh(recipient)(peer)

    with pytest.raises(VerificationError, match=hpke_schedule.OPEN_FAILED):
        hpke_schedule.open_base(enc, point(recipient), dh, info=INFO, aad=b"", ciphertext=ct)
    assert calls == []


@pytest.mark.parametrize("output", [b"", b"\x00" * 32, b"\x01" * 31, b"\x01" * 33])
def test_a_dh_output_of_the_wrong_shape_is_refused(output: bytes) -> None:
    recipient, enc, ct = sealed_case()
    with pytest.raises(VerificationError, match=hpke_schedule.OPEN_FAILED):
        hpke_schedule.open_base(
            enc, point(recipient), lambda _e: output, info=INFO, aad=b"", ciphertext=ct
        )


def test_the_schedule_never_prints_its_secrets() -> None:
    recipient, enc, _ = sealed_case()
    schedule = hpke_schedule.key_schedule(enc, point(recipient), ecdh(recipient), INFO)
    assert schedule.key.hex() not in repr(schedule)
    assert schedule.shared_secret.hex() not in repr(schedule)


def test_an_all_zero_dh_output_stops_the_schedule() -> None:
    """X25519 with a low-order point gives 32 zero bytes (RFC 9180 7.1.4): refused before
    any key is derived from it."""
    enc = public = b"\x09" + b"\x00" * 31
    with pytest.raises(VerificationError, match=hpke_schedule.OPEN_FAILED):
        hpke_schedule.key_schedule(enc, public, lambda _e: b"\x00" * 32, INFO, kem=hpke.KEM.X25519)


def test_another_kem_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="MLKEM768_X25519"):
        hpke_schedule.key_schedule(b"", b"", lambda _e: b"", INFO, kem=hpke.KEM.MLKEM768_X25519)
