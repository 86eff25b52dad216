"""CryptEncrypt / CryptDecrypt: defaults, padding, streaming, legacy gating, CryptDeriveKey."""

from __future__ import annotations

import io
import warnings

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from keyblob.errors import UsageError, VerificationError
from keyblob.mscapi import (
    DECRYPT_FAILED,
    AlgId,
    CapiKey,
    Decryptor,
    LegacyAlgorithmWarning,
    Mode,
    cbc_mac,
    decrypt,
    decrypt_file,
    derive_key,
    encrypt,
    encrypt_file,
)

AES = CapiKey.new(AlgId.AES_256, bytes(range(32)))


def test_aes_is_cbc_zero_iv_pkcs7() -> None:
    plain = b"A" * 68
    enc = Cipher(algorithms.AES(AES.unsafe_raw_bytes()), modes.CBC(bytes(16))).encryptor()
    padder = padding.PKCS7(128).padder()
    expected = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    ct = encrypt(AES, plain)
    assert ct == expected and len(ct) == 80
    assert len(encrypt(AES, b"B" * 32)) == 48  # aligned input: a whole padding block
    assert decrypt(AES, ct) == plain
    iv = b"\x01" * 16
    assert decrypt(AES, encrypt(AES, plain, iv=iv), iv=iv) == plain
    with pytest.raises(UsageError):
        encrypt(AES, plain, iv=b"short")


@pytest.mark.parametrize(
    "alg,size", [(AlgId.TRIPLE_DES, 24), (AlgId.TRIPLE_DES_112, 16), (AlgId.DES, 8)]
)
def test_des_family_is_legacy(alg: AlgId, size: int) -> None:
    key = CapiKey.new(alg, bytes(range(size)))
    with pytest.raises(UsageError, match="legacy"):
        encrypt(key, b"x" * 68)
    with pytest.warns(LegacyAlgorithmWarning):
        ct = encrypt(key, b"x" * 68, legacy=True)
    assert len(ct) == 72
    with pytest.warns(LegacyAlgorithmWarning):
        assert decrypt(key, ct) == b"x" * 68
    with pytest.warns(LegacyAlgorithmWarning):  # a MAC checks old data: allowed, warned
        assert cbc_mac(key, b"x" * 68) == ct[-8:]


def test_bad_padding_and_length_one_message() -> None:
    ct = encrypt(AES, b"hello")
    messages = set()
    for bad in (ct[:-1], ct[:-1] + bytes([ct[-1] ^ 0x80]), b"", ct + b"\x00" * 16):
        try:
            decrypt(AES, bad)
        except VerificationError as e:
            messages.add(str(e))
    assert messages == {DECRYPT_FAILED}


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=10))
def test_streaming_matches_one_shot(plain: bytes, cuts: list[int]) -> None:
    ct = encrypt(AES, plain)
    dec = Decryptor(AES)
    out, pos = b"", 0
    for n in cuts:
        out += dec.update(ct[pos : pos + n])
        pos += n
    out += dec.update(ct[pos:]) + dec.finalize()
    assert out == plain


def test_files_in_constant_memory() -> None:
    plain = bytes(range(256)) * 1000
    src, mid, dst = io.BytesIO(plain), io.BytesIO(), io.BytesIO()
    encrypt_file(AES, src, mid)
    assert mid.getvalue() == encrypt(AES, plain)
    mid.seek(0)
    assert decrypt_file(AES, mid, dst) == len(plain)
    assert dst.getvalue() == plain


def test_rc4_and_salt() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key40 = CapiKey.new(AlgId.RC4, b"\x01" * 5)
        assert key40.salt == bytes(11) and key40.cipher_key() == b"\x01" * 5 + bytes(11)
        assert "\\x01" not in repr(key40)
        ct = encrypt(key40, b"hello world", legacy=True)
        assert len(ct) == 11 and decrypt(key40, ct) == b"hello world"
        with pytest.raises(UsageError):
            encrypt(key40, b"x", iv=bytes(8), legacy=True)
        for size in range(5, 17):  # every RC4 length, including ones cryptography lacks
            key = CapiKey.new(AlgId.RC4, bytes(size), salt=b"")
            try:
                assert decrypt(key, encrypt(key, b"abc", legacy=True)) == b"abc"
            except Exception as e:  # only the documented refusal is allowed
                assert type(e).__name__ == "UnsupportedError"


def test_key_lengths_checked() -> None:
    with pytest.raises(UsageError):
        CapiKey.new(AlgId.AES_256, bytes(16))
    with pytest.raises(UsageError):
        CapiKey.new(AlgId.RC2, bytes(17))  # only a SIMPLEBLOB may carry it
    assert CapiKey.new(AlgId.RC2, bytes(17), simpleblob=True).effective_bits == 136


def test_derive_key_rules() -> None:
    # wincrypto's known answers (also in the vectors): MD5/RC4 truncates, SHA1/AES expands.
    rc4 = derive_key(AlgId.MD5, b"Test", AlgId.RC4)
    assert rc4.unsafe_raw_bytes().hex() == "0cbc6611f5540bd0809a388dc95a615b"
    aes = derive_key(AlgId.SHA1, b"Test", AlgId.AES_192)
    assert aes.key_size == 24
    sha2 = derive_key(AlgId.SHA_256, b"Test", AlgId.AES_256)
    import hashlib

    assert sha2.unsafe_raw_bytes() == hashlib.sha256(b"Test").digest()
    rc4_40 = derive_key(AlgId.MD5, b"Test", AlgId.RC4, key_bits=40)
    assert rc4_40.salt == bytes(11)
    assert derive_key(AlgId.MD5, b"Test", AlgId.RC4, key_bits=40, no_salt=True).salt == b""


def test_cfb_and_ecb_modes() -> None:
    for mode in (Mode.ECB, Mode.CFB):
        ct = encrypt(AES, b"x" * 23, mode=mode)
        assert len(ct) == 32 and decrypt(AES, ct, mode=mode) == b"x" * 23


def test_a_capikey_is_only_made_by_new() -> None:
    with pytest.raises(TypeError, match=r"CapiKey\.new"):
        CapiKey(object(), AlgId.AES_256, bytes(3), b"", None)  # would skip the length check
