"""SIMPLEBLOB wrap/unwrap: byte layout, oracle-free failure, both decrypt behaviours, OAEP,
the 8 x 0x03 rollback marker, and the signature that catches what the unwrap cannot."""

from __future__ import annotations

import functools
import warnings

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyblob.errors import FormatError, KeyblobError, UsageError, VerificationError
from keyblob.mscapi import (
    AlgId,
    CapiKey,
    LegacyAlgorithmWarning,
    PlaintextKeyBlob,
    SimpleBlob,
    build_simpleblob,
    decrypt,
    encrypt,
    sign_hash,
    unwrap_simpleblob,
    unwrap_to_plaintextkeyblob,
    verify_signature,
)

AES = CapiKey.new(AlgId.AES_256, bytes(range(32)))


@functools.cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def test_round_trip_and_layout() -> None:
    key = rsa_key()
    blob = build_simpleblob(AES, key.public_key())
    assert len(blob) == 12 + 256
    # The stored field is the RSA ciphertext byte-reversed: plain PKCS#1 v1.5 decrypts it.
    assert key.decrypt(blob[12:][::-1], padding.PKCS1v15()) == AES.unsafe_raw_bytes()
    assert unwrap_simpleblob(blob, key) == AES
    plain = unwrap_to_plaintextkeyblob(blob, key)
    assert PlaintextKeyBlob.from_bytes(plain).key == AES.unsafe_raw_bytes()


def test_oaep() -> None:
    key = rsa_key()
    blob = build_simpleblob(AES, key.public_key(), oaep=True)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    assert key.decrypt(blob[12:][::-1], oaep) == AES.unsafe_raw_bytes()
    assert unwrap_simpleblob(blob, key, oaep=True) == AES
    # The same blob read as v1.5 gives a wrong key of the right size, not an error: the
    # stand-in, or (OpenSSL's implicit rejection returns pseudo-random bytes, which fit
    # the ALG_ID's length about once in 245 blobs) a synthetic key. Never the real one.
    wrong = unwrap_simpleblob(blob, key, _random=lambda n: b"\x01" * n)
    assert wrong != AES and wrong.key_size == 32


def test_rollback_marker_is_accepted() -> None:
    """PS ending in 8 x 0x03 (CRYPT_SSL2_FALLBACK) is valid PKCS#1 v1.5; Wine accepts it."""
    key = rsa_key()
    k = 256
    secret = AES.unsafe_raw_bytes()
    ps = b"\x5a" * (k - 3 - len(secret) - 8) + b"\x03" * 8
    em = int.from_bytes(b"\x00\x02" + ps + b"\x00" + secret, "big")
    numbers = key.private_numbers()
    c = pow(em, numbers.public_numbers.e, numbers.public_numbers.n).to_bytes(k, "big")
    blob = SimpleBlob(AlgId.AES_256, c[::-1]).to_bytes()
    assert unwrap_simpleblob(blob, key) == AES


def test_writer_never_uses_the_marker() -> None:
    key = rsa_key(1024)
    numbers = key.private_numbers()
    for _ in range(20):  # a 1024-bit key for speed: a legacy size, hence legacy=True
        blob = build_simpleblob(AES, key.public_key(), legacy=True)
        c = int.from_bytes(blob[12:][::-1], "big")
        em = pow(c, numbers.d, numbers.public_numbers.n).to_bytes(128, "big")
        assert em[:2] == b"\x00\x02"
        assert em[128 - 33 - 8 : 128 - 33] != b"\x03" * 8


def test_public_checks_raise() -> None:
    key = rsa_key()
    blob = build_simpleblob(AES, key.public_key())
    with pytest.raises(FormatError, match="encryptedkey"):
        unwrap_simpleblob(blob[:-1], key)
    with pytest.raises(FormatError, match="encryptedkey"):
        unwrap_simpleblob(blob + b"\x01", key)
    high = blob[:12] + b"\xff" * 256
    with pytest.raises(FormatError, match="modulus"):
        unwrap_simpleblob(high, key)
    assert unwrap_simpleblob(blob + bytes(8), key) == AES  # Windows: trailing zeros


def test_wrong_key_and_damage_give_a_random_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key, other = rsa_key(), rsa_key(1024)
    blob = build_simpleblob(AES, key.public_key())
    damaged = bytearray(blob)
    damaged[100] ^= 0x01
    stand_in = b"\xee" * 32
    # Current wheels: implicit rejection (pseudo-random bytes, usually the wrong length).
    got = unwrap_simpleblob(bytes(damaged), key, _random=lambda n: stand_in[:n])
    assert got != AES and got.key_size == 32

    # Older behaviour: decrypt raises.  Same observable result, no exception.
    def raising(self: object, ciphertext: bytes, pad: object) -> bytes:
        raise ValueError("Decryption failed")

    monkeypatch.setattr(type(key), "decrypt", raising)
    got = unwrap_simpleblob(blob, key, _random=lambda n: stand_in[:n])
    assert got.unsafe_raw_bytes() == stand_in
    monkeypatch.undo()
    with pytest.raises(FormatError):  # a 1024-bit key: the length is public and wrong
        unwrap_simpleblob(blob, other)


def test_wrong_length_key_is_replaced() -> None:
    """A valid PKCS#1 block holding 16 bytes under an AES-256 header: the stand-in."""
    key = rsa_key()
    c = key.public_key().encrypt(bytes(16), padding.PKCS1v15())
    blob = SimpleBlob(AlgId.AES_256, c[::-1]).to_bytes()
    got = unwrap_simpleblob(blob, key, _random=lambda n: b"\x07" * n)
    assert got.unsafe_raw_bytes() == b"\x07" * 32


def test_substitution_is_caught_by_the_signature() -> None:
    """The procedure's attack: a new key wrapped under the same public key.  The unwrap
    succeeds (public keys are public); the CryptSignHash signature is what refuses it."""
    exchange, signer = rsa_key(), rsa_key(1024)
    original = build_simpleblob(AES, exchange.public_key())
    signature = sign_hash(signer, original, legacy=True)  # 1024 bits: only for speed
    evil = build_simpleblob(CapiKey.new(AlgId.AES_256, b"\x66" * 32), exchange.public_key())
    verify_signature(signer.public_key(), signature, original)
    with pytest.raises(VerificationError):
        verify_signature(signer.public_key(), signature, evil)
    for i in range(0, len(original) * 8, 37):
        flipped = bytearray(original)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(VerificationError):
            verify_signature(signer.public_key(), signature, bytes(flipped))


def test_every_flip_and_truncation_never_tracebacks() -> None:
    key = rsa_key(1024)  # for speed: a legacy size, hence legacy=True
    blob = build_simpleblob(CapiKey.new(AlgId.AES_128, bytes(16)), key.public_key(), legacy=True)
    for i in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            got = unwrap_simpleblob(bytes(flipped), key)
        except KeyblobError:
            continue
        assert (
            i // 8 >= 12 or got.alg_id is not AlgId.AES_128 or got.unsafe_raw_bytes() == bytes(16)
        )
        if i // 8 >= 12:
            assert got.unsafe_raw_bytes() != bytes(16)
    for n in range(len(blob)):
        with pytest.raises(KeyblobError):
            unwrap_simpleblob(blob[:n], key)


def test_legacy_export_needs_the_flag() -> None:
    key = rsa_key()  # 2048 bits: the RC4 key, not the RSA size, is what is refused
    rc4 = CapiKey.new(AlgId.RC4, bytes(16))
    with pytest.raises(UsageError, match="legacy"):
        build_simpleblob(rc4, key.public_key())
    with pytest.warns(LegacyAlgorithmWarning):
        blob = build_simpleblob(rc4, key.public_key(), legacy=True)
    with pytest.warns(LegacyAlgorithmWarning):
        got = unwrap_simpleblob(blob, key)
    assert got == rc4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct = encrypt(rc4, b"hello", legacy=True)
        assert decrypt(got, ct) == b"hello"
    with pytest.raises(UsageError):
        unwrap_simpleblob(blob, key, key_size=40)


def test_authenticated_unwrap_reports_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the signature verified there is no oracle to hide: a wrong private key, a
    wrong length or a raising decrypt is reported instead of turned into a random key."""
    key = rsa_key()
    wrong = rsa.generate_private_key(65537, 2048)
    blob = build_simpleblob(AES, key.public_key())
    assert unwrap_simpleblob(blob, key, authenticated=True) == AES
    c = key.public_key().encrypt(bytes(16), padding.PKCS1v15())  # 16 bytes under AES-256
    short = SimpleBlob(AlgId.AES_256, c[::-1]).to_bytes()
    with pytest.raises(VerificationError, match="does not open"):
        unwrap_simpleblob(short, key, authenticated=True)

    def raising(self: object, ciphertext: bytes, pad: object) -> bytes:
        raise ValueError("Decryption failed")

    monkeypatch.setattr(type(key), "decrypt", raising)
    with pytest.raises(VerificationError, match="does not open"):
        unwrap_simpleblob(blob, key, authenticated=True)
    monkeypatch.undo()
    # A wrong 2048-bit key: OpenSSL's implicit rejection gives pseudo-random bytes whose
    # length fits 32 about once in 245 blobs; otherwise the failure is reported.  Never the
    # random stand-in an unauthenticated unwrap would return.
    stand_in = b"\x01" * 32
    try:
        got = unwrap_simpleblob(blob, wrong, authenticated=True, _random=lambda n: stand_in[:n])
    except (VerificationError, FormatError):
        return
    assert got != AES and got.unsafe_raw_bytes() != stand_in
