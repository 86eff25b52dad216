"""The p256 suite's own rules (FORMAT.md 1.3, 2.4, 2.5): SEC1 uncompressed public keys
checked on read, raw low-S ``r || s`` signatures, and a wrap that is plain RFC 9180 HPKE,
opened by a bare ``cryptography`` HPKE call and the reverse."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from keyblob.errors import FormatError, VerificationError
from keyblob.keys import Suite
from keyblob.providers import suites

N = suites.P256_ORDER
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
BARE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _pair() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    private = ec.generate_private_key(ec.SECP256R1())
    encoded = suites.public_bytes(private)
    return private, suites.load_signature_public(Suite.P256, encoded)  # type: ignore[return-value]


def test_public_key_is_sec1_uncompressed_and_round_trips() -> None:
    exchange, signature = suites.generate(Suite.P256)
    for key in (exchange, signature):
        encoded = suites.public_bytes(key)
        assert len(encoded) == 65 and encoded[0] == 4
        nums = key.public_key().public_numbers()  # type: ignore[union-attr]
        assert encoded[1:] == nums.x.to_bytes(32) + nums.y.to_bytes(32)  # type: ignore[union-attr]
        suites.check_public_keys(Suite.P256, encoded, encoded)
    scalar = suites.private_bytes(exchange)
    assert len(scalar) == 32
    again = suites.load_exchange_private(Suite.P256, scalar)
    assert suites.public_bytes(again) == suites.public_bytes(exchange)


def _bad_keys() -> dict[str, bytes]:
    good = suites.public_bytes(ec.generate_private_key(ec.SECP256R1()))
    x, y = int.from_bytes(good[1:33]), int.from_bytes(good[33:])
    compressed = bytes([2 + (y & 1)]) + x.to_bytes(32)
    return {
        "off the curve": good[:-1] + bytes([good[-1] ^ 1]),
        "identity as (0, 0)": b"\x04" + bytes(64),
        "identity as SEC1 0x00": b"\x00",
        "compressed": compressed,
        "hybrid": bytes([6 + (y & 1)]) + good[1:],
        "x = p": b"\x04" + P.to_bytes(32) + good[33:],
        "y >= p": b"\x04" + good[1:33] + P.to_bytes(32),
        "truncated": good[:64],
        "long": good + b"\x00",
    }


@pytest.mark.parametrize("what", list(_bad_keys()))
def test_bad_public_keys_are_refused_in_both_roles(what: str) -> None:
    data = _bad_keys()[what]
    with pytest.raises(FormatError):
        suites.load_exchange_public(Suite.P256, data)
    with pytest.raises(FormatError):
        suites.load_signature_public(Suite.P256, data)


@pytest.mark.parametrize("scalar", [0, N, 2**256 - 1])
def test_stored_private_scalar_out_of_range_is_refused(scalar: int) -> None:
    with pytest.raises(FormatError):
        suites.load_signature_private(Suite.P256, scalar.to_bytes(32))
    with pytest.raises(FormatError):
        suites.load_exchange_private(Suite.P256, (1).to_bytes(31))


def test_signatures_are_raw_low_s_and_verify() -> None:
    private, public = _pair()
    for i in range(64):  # about half of the raw ECDSA signatures have a high s
        message = b"m%d" % i
        signature = suites.sign(private, message)
        assert len(signature) == 64
        assert 0 < int.from_bytes(signature[32:]) <= N // 2
        suites.verify(public, signature, message)
        with pytest.raises(VerificationError):
            suites.verify(public, signature, message + b"!")


def test_high_s_is_refused_though_ecdsa_accepts_it() -> None:
    private, public = _pair()
    signature = suites.sign(private, b"msg")
    r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
    high = encode_dss_signature(r, N - s)
    public.verify(high, b"msg", ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    with pytest.raises(VerificationError):
        suites.verify(public, r.to_bytes(32) + (N - s).to_bytes(32), b"msg")


def test_normaliser_turns_high_s_into_low_s() -> None:
    private, public = _pair()
    der = private.sign(b"x", ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    for given in (s, N - s):
        raw = suites.p256_raw_signature(encode_dss_signature(r, given))
        assert raw == r.to_bytes(32) + min(s, N - s).to_bytes(32)
        suites.verify(public, raw, b"x")


def _malformed(signature: bytes) -> dict[str, bytes]:
    r = signature[:32]
    s = signature[32:]
    return {
        "empty": b"",
        "63 bytes": signature[:63],
        "65 bytes": signature + b"\x00",
        "DER": encode_dss_signature(int.from_bytes(r), int.from_bytes(s)),
        "r = 0": bytes(32) + s,
        "s = 0": r + bytes(32),
        "r = n": N.to_bytes(32) + s,
        "r = n + 1": (N + 1).to_bytes(32) + s,
        "s = n": r + N.to_bytes(32),
        "all ones": b"\xff" * 64,
    }


@pytest.mark.parametrize("what", list(_malformed(bytes(range(1, 65)))))
def test_malformed_signatures_are_refused(what: str) -> None:
    private, public = _pair()
    signature = suites.sign(private, b"msg")
    with pytest.raises(VerificationError):
        suites.verify(public, _malformed(signature)[what], b"msg")


def test_a_keyblob_wrap_opens_with_bare_cryptography_hpke() -> None:
    recipient = ec.generate_private_key(ec.SECP256R1())
    public = suites.load_exchange_public(Suite.P256, suites.public_bytes(recipient))
    wrapped = suites.wrap(public, b"k" * 32, b"context")
    assert len(wrapped) == 65 + 32 + 16
    assert BARE.decrypt(wrapped, recipient, info=b"context") == b"k" * 32
    with pytest.raises(InvalidTag):  # the info is bound
        BARE.decrypt(wrapped, recipient, info=b"other")


def test_a_bare_cryptography_hpke_seal_unwraps_in_keyblob() -> None:
    recipient = ec.generate_private_key(ec.SECP256R1())
    wrapped = BARE.encrypt(b"s" * 16, recipient.public_key(), info=b"ctx")
    assert suites.unwrap(recipient, wrapped, b"ctx") == b"s" * 16
    for broken in (wrapped[:-1], wrapped[:64], b"\x05" + wrapped[1:]):
        with pytest.raises(VerificationError, match=suites.UNWRAP_FAILED):
            suites.unwrap(recipient, broken, b"ctx")
    with pytest.raises(VerificationError, match=suites.UNWRAP_FAILED):
        suites.unwrap(recipient, wrapped, b"ctx2")
