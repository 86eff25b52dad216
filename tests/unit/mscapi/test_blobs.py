"""PUBLICKEYBLOB / PRIVATEKEYBLOB / SIMPLEBLOB / PLAINTEXTKEYBLOB: layout, strictness, round
trips, and every single-bit flip and truncation raising a keyblob error."""

from __future__ import annotations

import contextlib
import functools
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from keyblob.errors import FormatError, KeyblobError, UnsupportedError, UsageError
from keyblob.mscapi import (
    AlgId,
    CapiKey,
    PlaintextKeyBlob,
    PrivateKeyBlob,
    PublicKeyBlob,
    SimpleBlob,
    build_simpleblob,
    describe,
    looks_like_capi_blob,
)


@functools.cache
def rsa_key(bits: int = 1024) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def test_public_layout() -> None:
    key = rsa_key(2048)
    data = PublicKeyBlob.from_public_key(key.public_key()).to_bytes()
    assert len(data) == 276
    assert data[:20] == bytes.fromhex("0602000000a40000525341310008000001000100")
    n = key.public_key().public_numbers().n
    assert data[20:] == n.to_bytes(256, "little")


def test_private_layout_and_round_trip() -> None:
    key = rsa_key(2048)
    blob = PrivateKeyBlob.from_private_key(key, AlgId.RSA_SIGN)
    data = blob.to_bytes()
    assert len(data) == 1172
    assert data[:12] == bytes.fromhex("070200000024000052534132")
    assert PrivateKeyBlob.from_bytes(data) == blob
    assert blob.to_private_key().private_numbers() == key.private_numbers()
    assert "prime1" not in repr(blob)  # secrets stay out of repr
    assert blob.public_blob().to_public_key().public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        (0, 0x07, "bType"),
        (1, 3, "bVersion"),
        (2, 1, "reserved"),
        (5, 0x66, "aiKeyAlg"),
        (8, 0x00, "magic"),
        (12, 0x01, "bitlen"),
        (16, 0x00, "pubexp"),
    ],
)
def test_public_header_fields_are_checked(offset: int, value: int, field: str) -> None:
    data = bytearray(PublicKeyBlob.from_public_key(rsa_key().public_key()).to_bytes())
    data[offset] = value
    with pytest.raises(FormatError, match=field):
        PublicKeyBlob.from_bytes(bytes(data))


def test_public_trailing_and_top_byte() -> None:
    data = PublicKeyBlob.from_public_key(rsa_key().public_key()).to_bytes()
    with pytest.raises(FormatError, match="trailing"):
        PublicKeyBlob.from_bytes(data + b"\x00")
    with pytest.raises(FormatError, match="modulus"):
        PublicKeyBlob.from_bytes(data[:-1] + b"\x00")


@pytest.mark.parametrize(
    ("field", "offset"),
    [("prime1", 148), ("exponent1", 276), ("exponent2", 340), ("coefficient", 404)],
)
def test_private_crt_consistency(field: str, offset: int) -> None:
    data = bytearray(PrivateKeyBlob.from_private_key(rsa_key()).to_bytes())
    data[offset] ^= 0x02
    with pytest.raises(FormatError, match=field) as caught:
        PrivateKeyBlob.from_bytes(bytes(data))
    assert f"offset {offset}" in str(caught.value)


def test_private_exponent_inconsistent() -> None:
    data = bytearray(PrivateKeyBlob.from_private_key(rsa_key()).to_bytes())
    data[500] ^= 0x10
    with pytest.raises(FormatError, match="privateExponent"):
        PrivateKeyBlob.from_bytes(bytes(data))


def test_exponent_too_large_and_wrong_alg() -> None:
    n = rsa_key().public_key().public_numbers().n
    big_e = rsa.RSAPublicNumbers(2**33 + 1, n).public_key()
    with pytest.raises(UsageError, match="32 bits"):
        PublicKeyBlob.from_public_key(big_e)
    with pytest.raises(UsageError):
        PublicKeyBlob.from_public_key(rsa_key().public_key(), AlgId.AES_256)


def test_plaintextkeyblob() -> None:
    blob = PlaintextKeyBlob(AlgId.AES_256, bytes(range(32)))
    data = blob.to_bytes()
    assert len(data) == 44 and data[:12] == bytes.fromhex("080200001066000020000000")
    assert PlaintextKeyBlob.from_bytes(data) == blob
    with pytest.raises(FormatError, match="dwKeySize"):  # a 16-byte key under CALG_AES_256
        PlaintextKeyBlob.from_bytes(data[:8] + (16).to_bytes(4, "little") + bytes(16))
    with pytest.raises(UsageError, match="does not fit a PLAINTEXTKEYBLOB"):
        PlaintextKeyBlob(AlgId.AES_256, bytes(16)).to_bytes()
    # An RC2 key longer than 16 bytes (a SIMPLEBLOB may carry one) is written only as the
    # IPsec HMAC key that from_bytes(hmac_key=True) reads back.
    long_rc2 = PlaintextKeyBlob(AlgId.RC2, bytes(20))
    with pytest.raises(UsageError, match="20-byte CALG_RC2 key"):
        long_rc2.to_bytes()
    hmac = PlaintextKeyBlob(AlgId.RC2, bytes(20), hmac_key=True)
    assert PlaintextKeyBlob.from_bytes(hmac.to_bytes(), hmac_key=True) == hmac
    with pytest.raises(FormatError, match="trailing"):
        PlaintextKeyBlob.from_bytes(data + b"\x00")
    with pytest.raises(UnsupportedError, match="aiKeyAlg"):
        PlaintextKeyBlob.from_bytes(data[:4] + (0x6666).to_bytes(4, "little") + data[8:])
    assert "key=" not in repr(blob)


def test_simpleblob_structure() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = build_simpleblob(CapiKey.new(AlgId.AES_256, bytes(32)), rsa_key(2048).public_key())
    assert len(data) == 268 and data[:12] == bytes.fromhex("010200001066000000a40000")
    blob = SimpleBlob.from_bytes(data)
    assert blob.to_bytes() == data
    with pytest.raises(FormatError, match="wrap ALG_ID"):
        SimpleBlob.from_bytes(data[:8] + b"\x00\x24\x00\x00" + data[12:])
    with pytest.raises(UnsupportedError):
        SimpleBlob.from_bytes(data[:4] + b"\x00\xa4\x00\x00" + data[8:])


def test_describe() -> None:
    data = PrivateKeyBlob.from_private_key(rsa_key()).to_bytes()
    kind, fields = describe(data)
    assert kind == "PRIVATEKEYBLOB"
    names = [f.name for f in fields]
    assert names[:4] == ["bType", "bVersion", "reserved", "aiKeyAlg"]
    assert names[-1] == "privateExponent"
    assert all("secret" in f.value for f in fields[8:])
    assert looks_like_capi_blob(data)
    assert not looks_like_capi_blob(b"-----BEGIN")
    with pytest.raises(FormatError):
        describe(b"\x05\x02\x00\x00\x00\x00\x00\x00")
    with pytest.raises(UnsupportedError):
        describe(b"\x0b\x02\x00\x00\x00\x00\x00\x00")


# --- property tests -----------------------------------------------------------------------


def _blobs() -> dict[str, bytes]:
    key = rsa_key(1024)
    return {
        "public": PublicKeyBlob.from_public_key(key.public_key()).to_bytes(),
        "private": PrivateKeyBlob.from_private_key(key).to_bytes(),
        "plaintext": PlaintextKeyBlob(AlgId.AES_128, bytes(16)).to_bytes(),
    }


PARSERS = {
    "public": PublicKeyBlob.from_bytes,
    "private": PrivateKeyBlob.from_bytes,
    "plaintext": PlaintextKeyBlob.from_bytes,
}


#: Where a flip changes a value but not the structure: a public exponent or modulus byte, a
#: plaintext key byte.  The parser cannot know; the signature over the blob catches those.
VALUE_REGION = {"public": 16, "plaintext": 12, "private": None}


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_every_bit_flip_and_truncation_raises(kind: str) -> None:
    """Exhaustive: every single-bit flip and every truncation is refused with a keyblob
    error, never a traceback (or, inside a value region, parses to exactly the new bytes)."""
    data = _blobs()[kind]
    parse = PARSERS[kind]
    region = VALUE_REGION[kind]
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        # Bit 7 of byte 5 turns CALG_RSA_KEYX (0xA400) into CALG_RSA_SIGN (0x2400): another
        # valid slot, as in the vector privatekeyblob_512_signature_slot.
        slot_flip = kind != "plaintext" and i == 5 * 8 + 7
        if slot_flip or (region is not None and i // 8 >= region):
            with contextlib.suppress(KeyblobError):
                assert parse(bytes(flipped)).to_bytes() == bytes(flipped)
            continue
        with pytest.raises(KeyblobError):
            parse(bytes(flipped))
    for n in range(len(data)):
        prefix = data[:n]
        if kind == "private" and n >= len(data) - 64:
            # Windows accepts privateExponent cut down to half (see the vectors).
            assert parse(prefix).to_bytes() == data
            continue
        with pytest.raises(KeyblobError):
            parse(prefix)


@settings(max_examples=50, deadline=None)
@given(
    alg=st.sampled_from([AlgId.AES_128, AlgId.AES_192, AlgId.AES_256, AlgId.RC4]), data=st.data()
)
def test_plaintext_round_trip(alg: AlgId, data: st.DataObject) -> None:
    size = data.draw(
        st.sampled_from(
            {AlgId.AES_128: [16], AlgId.AES_192: [24], AlgId.AES_256: [32]}.get(
                alg, list(range(5, 17))
            )
        )
    )
    key = data.draw(st.binary(min_size=size, max_size=size))
    encoded = PlaintextKeyBlob(alg, key).to_bytes()
    assert PlaintextKeyBlob.from_bytes(encoded).to_bytes() == encoded


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=700))
def test_random_bytes_never_traceback(raw: bytes) -> None:
    for parse in (*PARSERS.values(), SimpleBlob.from_bytes, describe):
        with contextlib.suppress(KeyblobError):
            parse(raw)  # type: ignore[operator]


def test_keys_and_algids_tell_the_same_cryptoapi_facts() -> None:
    """keys.Algorithm keeps its own copy of the CryptoAPI table (keys.py cannot import
    keyblob.mscapi); the two must agree on every ALG_ID they share."""
    from keyblob.keys import Algorithm
    from keyblob.mscapi.algids import SESSION_ALGORITHMS

    capi = [a for a in Algorithm if a.capi_alg_id is not None]
    assert capi
    for algorithm in capi:
        info = SESSION_ALGORITHMS[AlgId(algorithm.capi_alg_id)]
        assert algorithm.key_sizes == info.sizes_for_simpleblob(), algorithm
        assert algorithm.key_size == info.default_size, algorithm
        assert algorithm.legacy == info.legacy, algorithm
    stored = {AlgId(a.capi_alg_id) for a in capi}
    assert stored == set(SESSION_ALGORITHMS) - {AlgId.TLS1_MASTER}
