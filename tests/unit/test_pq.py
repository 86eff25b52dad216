"""The pq suite's own rules (FORMAT.md 1.2, 1.3, 2.4, 2.5, 2.8): X-Wing keys kept as their
32-byte seed, a wrap that is plain RFC 9180 HPKE with KEM MLKEM768-X25519 (opened by a bare
``cryptography`` HPKE call and the reverse), a hybrid signature whose two halves must both
verify, ML-KEM-768 keys held to FIPS 203's modulus check, and the sizes the limits rest on.
Ed25519 and X25519 halves against hostile points: tests/unit/test_ed25519_small_order.py."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, mlkem, x25519

from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.format import KeyBlob, armor, dearmor
from keyblob.format.armor import BLOB, MAX_ARMOR_SIZE
from keyblob.format.blob import MAX_BLOB_SIZE, Header, Recipient
from keyblob.format.pubkey import mlkem768_public_problem
from keyblob.keys import Algorithm, KeyId, Suite
from keyblob.providers import suites

BARE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def test_sizes() -> None:
    exchange, signature = suites.generate(Suite.PQ)
    assert len(suites.public_bytes(exchange)) == 1216
    assert len(suites.public_bytes(signature)) == 1984
    assert len(suites.private_bytes(exchange)) == 32
    assert len(suites.private_bytes(signature)) == 64
    assert len(suites.sign(signature, b"m")) == 3373
    public = suites.load_exchange_public(Suite.PQ, suites.public_bytes(exchange))
    assert len(suites.wrap(public, bytes(32), b"context")) == 1120 + 32 + 16
    assert hpke.KEM.MLKEM768_X25519.enc_length() == 1120


def test_keys_round_trip_through_their_seeds() -> None:
    exchange, signature = suites.generate(Suite.PQ)
    again_x = suites.load_exchange_private(Suite.PQ, suites.private_bytes(exchange))
    again_s = suites.load_signature_private(Suite.PQ, suites.private_bytes(signature))
    assert suites.public_bytes(again_x) == suites.public_bytes(exchange)
    assert suites.public_bytes(again_s) == suites.public_bytes(signature)
    public = suites.load_signature_public(Suite.PQ, suites.public_bytes(signature))
    suites.verify(public, suites.sign(again_s, b"m"), b"m")


def test_the_x_wing_seed_expands_as_x_wing_does() -> None:
    """expandDecapsulationKey: SHAKE256(seed, 96) = ML-KEM-768 d || z, then the X25519 key."""
    seed = bytes(range(32))
    expanded = hashlib.shake_256(seed).digest(96)
    kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key()
    classic = x25519.X25519PrivateKey.from_private_bytes(expanded[64:]).public_key()
    assert suites.public_bytes(suites.XWingPrivateKey(seed)) == (
        kem.public_bytes_raw() + classic.public_bytes_raw()
    )


def test_the_hybrid_seed_is_the_two_seeds() -> None:
    seed = bytes(range(64))
    key = suites.HybridSignaturePrivateKey(seed)
    assert suites.private_bytes(key) == seed
    lattice = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed[:32]).public_key()
    classic = ed25519.Ed25519PrivateKey.from_private_bytes(seed[32:]).public_key()
    assert suites.public_bytes(key) == lattice.public_bytes_raw() + classic.public_bytes_raw()


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_stored_exchange_seed_of_another_length_is_refused(size: int) -> None:
    with pytest.raises(FormatError):
        suites.load_exchange_private(Suite.PQ, bytes(size))


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_stored_signature_seeds_of_another_length_are_refused(size: int) -> None:
    with pytest.raises(FormatError):
        suites.load_signature_private(Suite.PQ, bytes(size))


def test_a_keyblob_wrap_opens_with_bare_cryptography_hpke() -> None:
    exchange, _ = suites.generate(Suite.PQ)
    public = suites.load_exchange_public(Suite.PQ, suites.public_bytes(exchange))
    wrapped = suites.wrap(public, b"k" * 32, b"the wrap context")
    assert BARE.decrypt(wrapped, exchange._key, info=b"the wrap context") == b"k" * 32  # type: ignore[union-attr]
    with pytest.raises(InvalidTag):
        BARE.decrypt(wrapped, exchange._key, info=b"another context")  # type: ignore[union-attr]


def test_a_bare_cryptography_hpke_seal_unwraps_in_keyblob() -> None:
    exchange, _ = suites.generate(Suite.PQ)
    public = suites.load_exchange_public(Suite.PQ, suites.public_bytes(exchange))
    wrapped = BARE.encrypt(b"k" * 32, public._key, info=b"ctx")  # type: ignore[union-attr]
    assert suites.unwrap(exchange, wrapped, b"ctx") == b"k" * 32
    with pytest.raises(VerificationError, match="does not open"):
        suites.unwrap(exchange, wrapped, b"other")


@pytest.mark.parametrize("where", [0, 1087, 1088, 1119, 1120, -1])
def test_any_flipped_byte_of_a_wrap_fails_with_one_message(where: int) -> None:
    exchange, _ = suites.generate(Suite.PQ)
    public = suites.load_exchange_public(Suite.PQ, suites.public_bytes(exchange))
    wrapped = bytearray(suites.wrap(public, b"k" * 32, b"ctx"))
    wrapped[where] ^= 0x01
    with pytest.raises(VerificationError, match="does not open"):
        suites.unwrap(exchange, bytes(wrapped), b"ctx")
    with pytest.raises(VerificationError, match="does not open"):
        suites.unwrap(exchange, bytes(wrapped[:-1]), b"ctx")


def test_both_halves_of_the_signature_must_verify() -> None:
    mine = suites.HybridSignaturePrivateKey.generate()
    other = suites.HybridSignaturePrivateKey.generate()
    public = suites.load_signature_public(Suite.PQ, suites.public_bytes(mine))
    good, forged = mine.sign(b"message"), other.sign(b"message")
    suites.verify(public, good, b"message")
    for mixed in (forged[:3309] + good[3309:], good[:3309] + forged[3309:]):
        with pytest.raises(VerificationError, match="does not verify"):
            suites.verify(public, mixed, b"message")
    with pytest.raises(VerificationError):
        suites.verify(public, good, b"another message")
    for broken in (good[:-1], good + b"\x00", good[3309:], good[:3309], bytes(3373)):
        with pytest.raises(VerificationError):
            suites.verify(public, broken, b"message")


def test_the_ml_dsa_half_uses_the_empty_context() -> None:
    key = suites.HybridSignaturePrivateKey.generate()
    signature = key.sign(b"message")
    lattice = key._mldsa.public_key()
    lattice.verify(signature[:3309], b"message")  # empty context (FIPS 204 5.2)
    lattice.verify(signature[:3309], b"message", b"")
    with pytest.raises(InvalidSignature):
        lattice.verify(signature[:3309], b"message", b"keyblob")


def test_an_ml_kem_key_with_a_coefficient_of_q_is_refused() -> None:
    good = suites.public_bytes(suites.XWingPrivateKey.generate())
    assert mlkem768_public_problem(good[:1184]) is None
    # the first coefficient is the low 12 bits of bytes 0 and 1: set it to q = 3329 = 0xd01
    bad = bytes([0x01, (good[1] & 0xF0) | 0x0D]) + good[2:]
    assert mlkem768_public_problem(bad[:1184]) is not None
    with pytest.raises(ValueError):  # OpenSSL refuses it too (FIPS 203 7.2)
        mlkem.MLKEM768PublicKey.from_public_bytes(bad[:1184])
    with pytest.raises(FormatError, match="ML-KEM-768 half is not an encapsulation key"):
        suites.load_exchange_public(Suite.PQ, bad)
    # the second coefficient of a triple: the high 12 bits of bytes 1 and 2
    bad = good[:1] + bytes([(good[1] & 0x0F) | 0x10, 0xD0]) + good[3:]
    with pytest.raises(FormatError, match="ML-KEM-768 half"):
        suites.load_exchange_public(Suite.PQ, bad)


@pytest.mark.parametrize("size", [0, 1215, 1217, 1984])
def test_exchange_keys_of_another_length_are_refused(size: int) -> None:
    with pytest.raises(FormatError):
        suites.load_exchange_public(Suite.PQ, bytes(size))


@pytest.mark.parametrize("size", [0, 1983, 1985, 1216])
def test_signature_keys_of_another_length_are_refused(size: int) -> None:
    with pytest.raises(FormatError):
        suites.load_signature_public(Suite.PQ, bytes(size))


def test_keys_do_not_pickle_or_show_their_seeds() -> None:
    exchange, signature = suites.generate(Suite.PQ)
    for key in (exchange, signature, exchange.public_key(), signature.public_key()):
        with pytest.raises(TypeError):
            pickle.dumps(key)
    assert suites.private_bytes(exchange).hex() not in repr(exchange)
    assert suites.private_bytes(signature).hex()[:16] not in repr(signature)


def test_pq_keys_have_no_pem_form() -> None:
    exchange, signature = suites.generate(Suite.PQ)
    with pytest.raises(UsageError, match="no PEM form"):
        suites.public_pem(Suite.PQ, suites.public_bytes(exchange))
    with pytest.raises(UsageError, match="no PEM form"):
        suites.public_pem(Suite.PQ, suites.public_bytes(signature), signature=True)


def test_the_largest_pq_blob_is_23049_bytes_and_fits_the_limit() -> None:
    header = Header(
        Suite.PQ, Algorithm.CAPI_RC2, 1, 0, KeyId(bytes(16)), KeyId(bytes(16)), "k" * 128
    )
    recipients = tuple(Recipient(KeyId(bytes([i]) * 16), bytes(1120 + 64 + 16)) for i in range(16))
    data = KeyBlob(header, recipients, bytes(3373)).to_bytes()
    assert len(data) == 23049 <= MAX_BLOB_SIZE == 32768
    assert KeyBlob.from_bytes(data).to_bytes() == data
    with pytest.raises(FormatError, match="32768-byte limit"):
        KeyBlob.from_bytes(data + bytes(32769 - len(data)))
    # every blob the binary limit admits can be armored (FORMAT.md 2.8, 4)
    assert KeyBlob.from_bytes(dearmor(armor(data, BLOB), BLOB)) == KeyBlob.from_bytes(data)
    assert len(armor(bytes(MAX_BLOB_SIZE), BLOB)) == 44421 <= MAX_ARMOR_SIZE == 65536
