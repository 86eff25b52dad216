"""CryptSignHash / CryptVerifySignature compatibility."""

from __future__ import annotations

import functools

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyblob.errors import UsageError, VerificationError
from keyblob.mscapi import AlgId, LegacyAlgorithmWarning, sign_digest, sign_hash, verify_signature

HASHES = {
    AlgId.MD5: hashes.MD5(),
    AlgId.SHA1: hashes.SHA1(),
    AlgId.SHA_256: hashes.SHA256(),
    AlgId.SHA_384: hashes.SHA384(),
    AlgId.SHA_512: hashes.SHA512(),
}


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("alg", sorted(HASHES))
def test_sign_matches_pkcs1_reversed(alg: AlgId) -> None:
    key = rsa_key()
    legacy = alg in (AlgId.MD5, AlgId.SHA1)
    if legacy:
        with pytest.warns(LegacyAlgorithmWarning):
            sig = sign_hash(key, b"blob bytes", hash_alg=alg, legacy=True)
    else:
        sig = sign_hash(key, b"blob bytes", hash_alg=alg)
    assert len(sig) == 256
    key.public_key().verify(sig[::-1], b"blob bytes", padding.PKCS1v15(), HASHES[alg])
    verify_signature(key.public_key(), sig, b"blob bytes", hash_alg=alg)
    verify_signature(key.public_key(), sig, b"blob bytes", hash_alg=alg, no_hash_oid=False)
    with pytest.raises(VerificationError):
        verify_signature(key.public_key(), sig, b"blob bytes", hash_alg=alg, no_hash_oid=True)


def test_no_hash_oid() -> None:
    key = rsa_key()
    sig = sign_hash(key, b"x", no_hash_oid=True)
    verify_signature(key.public_key(), sig, b"x")
    verify_signature(key.public_key(), sig, b"x", no_hash_oid=True)
    with pytest.raises(VerificationError):
        verify_signature(key.public_key(), sig, b"x", no_hash_oid=False)


def test_failures_are_one_message() -> None:
    """Every signature of the right length that fails says the same (no oracle); one of
    the wrong length says its length, which anyone who has the file and the key knows."""
    key = rsa_key()
    sig = sign_hash(key, b"x")
    messages = set()
    for bad in (bytes(256), sig[:10] + b"\x01" + sig[11:]):
        with pytest.raises(VerificationError) as caught:
            verify_signature(key.public_key(), bad, b"x")
        messages.add(str(caught.value))
    with pytest.raises(VerificationError) as caught:
        verify_signature(key.public_key(), sig, b"y")
    messages.add(str(caught.value))
    assert messages == {"signature verification failed"}
    for bad, size in ((sig[:-1], 255), (sig + b"\x00", 257), (b"", 0)):
        with pytest.raises(VerificationError) as caught:
            verify_signature(key.public_key(), bad, b"x")
        assert str(caught.value) == (
            f"signature verification failed: {size} bytes, but a 2048-bit signer's "
            "signatures are 256 bytes"
        )


def test_legacy_hash_needs_flag() -> None:
    with pytest.raises(UsageError, match="legacy"):
        sign_hash(rsa_key(), b"x", hash_alg=AlgId.SHA1)
    with pytest.raises(UsageError):
        sign_hash(rsa_key(), b"x", hash_alg=AlgId.AES_256)


def test_a_legacy_hash_is_refused_before_the_data_is_hashed(monkeypatch) -> None:
    from keyblob.mscapi import signatures

    def no_hashing(*_a: object) -> bytes:
        raise AssertionError("hashed before the hash was checked")

    monkeypatch.setattr(signatures._primitives, "digest", no_hashing)
    for alg in (AlgId.MD2, AlgId.MD5):
        with pytest.raises(UsageError, match="needs legacy=True"):
            sign_hash(rsa_key(), b"x" * 1000, hash_alg=alg)


def test_the_legacy_warning_names_the_callers_line() -> None:
    for sign in (sign_hash, sign_digest):
        data = b"x" if sign is sign_hash else bytes(20)
        with pytest.warns(LegacyAlgorithmWarning) as caught:
            sign(rsa_key(), data, hash_alg=AlgId.SHA1, legacy=True)
        assert caught[0].filename == __file__


def test_a_stream_verifies_as_its_bytes_do() -> None:
    import io

    from keyblob.mscapi import verify_stream_signature

    key = rsa_key()
    data = bytes(range(256)) * 9000  # over two 1 MiB pieces
    sig = sign_hash(key, data)
    verify_stream_signature(key.public_key(), sig, io.BytesIO(data))
    with pytest.raises(VerificationError, match="signature verification failed"):
        verify_stream_signature(key.public_key(), sig, io.BytesIO(data + b"!"))
