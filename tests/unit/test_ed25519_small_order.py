"""Issue 11 item 1: a small-order Ed25519 key "verifies" R = identity, S = 0 for every
message, so nobody may trust one; and the X25519 encodings HPKE's kem_context would disagree
on (FORMAT.md 1.3, 2.5, 3)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from keyblob import blobs
from keyblob.errors import FormatError, VerificationError
from keyblob.format import KeyBlob, PublicKeyFile
from keyblob.format.pubkey import ED25519_SMALL_ORDER, FIELD_PRIME
from keyblob.keys import KeyRole, Suite, key_id_for
from keyblob.providers import suites
from keyblob.trust import TrustedSigner

P = FIELD_PRIME
D = -121665 * pow(121666, -1, P) % P  # edwards25519's d (RFC 8032 5.1)
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = bytes([1]) + bytes(31)
FORGED = IDENTITY + bytes(32)  # R = identity, S = 0


def _raw(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _y(encoded: bytes) -> int:
    return int.from_bytes(encoded, "little") & (2**255 - 1)


# -- the table is right: eight distinct points of the curve, each of order dividing 8 ----------


def test_the_table_holds_the_eight_torsion_points() -> None:
    assert len(set(ED25519_SMALL_ORDER)) == 8  # the torsion subgroup has exactly 8 points
    probe = x25519.X25519PrivateKey.generate()
    for encoded in ED25519_SMALL_ORDER:
        y, sign = _y(encoded), encoded[31] >> 7
        assert y < P
        x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
        assert pow(x2, (P - 1) // 2, P) in (0, 1)  # some x exists: the point is on the curve
        assert not (x2 == 0 and sign)  # x = 0 has one canonical encoding, sign bit clear
        if y == 1:
            assert encoded == IDENTITY
            continue
        # the birational map to Curve25519: u = (1 + y) / (1 - y); X25519 of a point of order
        # dividing 8 with any (clamped, so a multiple of 8) private key is all zero
        u = (1 + y) * pow(1 - y, -1, P) % P
        with pytest.raises(ValueError):
            probe.exchange(x25519.X25519PublicKey.from_public_bytes(u.to_bytes(32, "little")))


NONCANONICAL = {
    "identity, sign bit set": IDENTITY[:31] + b"\x80",
    "order 2, sign bit set": bytes.fromhex("ec" + "ff" * 30 + "ff"),
    "y = p (order 4)": bytes.fromhex("ed" + "ff" * 30 + "7f"),
    "y = p, sign bit set": bytes.fromhex("ed" + "ff" * 31),
    "y = p + 1 (identity)": bytes.fromhex("ee" + "ff" * 30 + "7f"),
    "y = p + 1, sign bit set": bytes.fromhex("ee" + "ff" * 31),
    "y = 2^255 - 1": bytes.fromhex("ff" * 31 + "7f"),
}


@pytest.mark.parametrize("encoded", ED25519_SMALL_ORDER, ids=lambda e: e.hex()[:8] + e.hex()[-2:])
def test_a_small_order_signature_key_is_refused(encoded: bytes) -> None:
    with pytest.raises(FormatError, match="small-order Ed25519 point"):
        suites.load_signature_public(Suite.X25519, encoded)
    with pytest.raises(FormatError, match="small-order"):
        suites.check_public_keys(Suite.X25519, _raw(x25519.X25519PrivateKey.generate()), encoded)


@pytest.mark.parametrize("encoded", NONCANONICAL.values(), ids=NONCANONICAL.keys())
def test_a_noncanonical_signature_key_is_refused(encoded: bytes) -> None:
    with pytest.raises(FormatError, match=r"small-order|non-canonical"):
        suites.load_signature_public(Suite.X25519, encoded)


def test_every_y_from_p_up_is_refused_and_ordinary_keys_pass() -> None:
    for y in range(P, 2**255):
        for sign in (0, 1):
            encoded = (y | sign << 255).to_bytes(32, "little")
            with pytest.raises(FormatError):
                suites.load_signature_public(Suite.X25519, encoded)
    for _ in range(20):
        key = _raw(ed25519.Ed25519PrivateKey.generate())
        suites.load_signature_public.cache_clear()
        suites.load_signature_public(Suite.X25519, key)


# -- R and S -----------------------------------------------------------------------------------


def test_the_forgery_that_cofactorless_openssl_accepts_is_refused() -> None:
    identity = ed25519.Ed25519PublicKey.from_public_bytes(IDENTITY)
    identity.verify(FORGED, b"any message at all")  # the attack, in plain cryptography
    with pytest.raises(VerificationError):  # refused by R even if such a key got through
        suites.verify(identity, FORGED, b"any message at all")


def _r_identity_signature(private: ed25519.Ed25519PrivateKey, message: bytes) -> bytes:
    """A signature with R = identity that cofactorless verification accepts under an ordinary
    key: S = H(R || A || M) * a mod L (the signer's own scalar a; integer arithmetic only)."""
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] = (h[31] & 127) | 64
    a = int.from_bytes(h, "little")
    k = int.from_bytes(hashlib.sha512(IDENTITY + _raw(private) + message).digest(), "little")
    return IDENTITY + (k * a % L).to_bytes(32, "little")


def test_a_small_order_r_is_refused_under_an_ordinary_key() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    signature = _r_identity_signature(private, b"message")
    private.public_key().verify(signature, b"message")  # OpenSSL accepts it
    public = suites.load_signature_public(Suite.X25519, _raw(private))
    with pytest.raises(VerificationError, match="does not verify"):
        suites.verify(public, signature, b"message")
    suites.verify(public, private.sign(b"message"), b"message")  # an ordinary one passes


def test_s_of_l_or_more_is_refused() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    signature = private.sign(b"message")
    s = int.from_bytes(signature[32:], "little")
    public = suites.load_signature_public(Suite.X25519, _raw(private))
    with pytest.raises(VerificationError):
        suites.verify(public, signature[:32] + (s + L).to_bytes(32, "little"), b"message")


# -- where keys are read -----------------------------------------------------------------------


def test_a_public_key_file_with_the_identity_cannot_be_checked_in() -> None:
    exchange = _raw(x25519.X25519PrivateKey.generate())
    data = PublicKeyFile(Suite.X25519, "mallory", exchange, IDENTITY).to_bytes()
    pub = PublicKeyFile.from_bytes(data)  # the layout is fine: the key is what is refused
    with pytest.raises(FormatError, match="small-order"):
        suites.check_public_keys(pub.suite, pub.exchange, pub.signature)


def _forge(blob: bytes) -> bytes:
    parsed = KeyBlob.from_bytes(blob)
    signer = key_id_for(Suite.X25519, KeyRole.SIGNATURE, IDENTITY)
    header = replace(parsed.header, signer_id=signer)
    return KeyBlob(header, parsed.recipients, FORGED).to_bytes()


def test_a_state_that_trusts_the_identity_does_not_accept_its_forgeries(
    make_container, store
) -> None:
    """A trust entry made before keys were checked: the forged blob is refused at use."""
    alice = make_container("alice")
    blobs.generate(alice, store, "payroll")
    signer = TrustedSigner(
        key_id_for(Suite.X25519, KeyRole.SIGNATURE, IDENTITY),
        Suite.X25519,
        IDENTITY,
        alice.exchange_public,
        "mallory",
        0,
    )
    alice.update_state(lambda s: s.with_signer(signer))
    forged = _forge(store.get("payroll", 1))
    with pytest.raises(VerificationError, match=r"cannot be used: .*small-order") as e:
        blobs.verify(alice, forged)
    assert any("trust remove" in hint for hint in e.value.hints)


# -- X25519: bit 255 and u >= p (kem_context uses pkR as given) --------------------------------


def test_an_exchange_key_with_bit_255_set_is_refused() -> None:
    private = x25519.X25519PrivateKey.generate()
    canonical = _raw(private)
    flipped = canonical[:31] + bytes([canonical[31] | 0x80])
    # why: HPKE puts pkR as given into kem_context, so a wrap for the flipped encoding does
    # not open for the key's owner, whose pkR is the canonical one
    hpke = suites._HPKE
    wrapped = hpke.encrypt(b"k" * 32, x25519.X25519PublicKey.from_public_bytes(flipped), b"i")
    with pytest.raises(InvalidTag):
        hpke.decrypt(wrapped, private, info=b"i")
    with pytest.raises(FormatError, match="bit 255"):
        suites.load_exchange_public(Suite.X25519, flipped)
    suites.load_exchange_public(Suite.X25519, canonical)


@pytest.mark.parametrize("u", [P, P + 1, P + 9, 2**255 - 1], ids=["p", "p+1", "p+9", "2^255-1"])
def test_an_exchange_key_of_u_at_least_p_is_refused(u: int) -> None:
    with pytest.raises(FormatError, match="non-canonical"):
        suites.load_exchange_public(Suite.X25519, u.to_bytes(32, "little"))


# -- the pq suite: its Ed25519 and X25519 halves get the same rules (FORMAT.md 1.3) -------------


def _pq_signature_key(ed25519_half: bytes) -> bytes:
    return suites.public_bytes(suites.HybridSignaturePrivateKey.generate())[:1952] + ed25519_half


@pytest.mark.parametrize(
    "encoded",
    [*ED25519_SMALL_ORDER, *NONCANONICAL.values()],
    ids=[e.hex()[:8] + e.hex()[-2:] for e in ED25519_SMALL_ORDER] + list(NONCANONICAL),
)
def test_a_pq_signature_key_with_a_hostile_ed25519_half_is_refused(encoded: bytes) -> None:
    with pytest.raises(FormatError, match="Ed25519 half is"):
        suites.load_signature_public(Suite.PQ, _pq_signature_key(encoded))
    exchange = suites.public_bytes(suites.XWingPrivateKey.generate())
    with pytest.raises(FormatError):
        suites.check_public_keys(Suite.PQ, exchange, _pq_signature_key(encoded))


def test_a_pq_signature_with_the_small_order_forgery_as_ed25519_half_is_refused() -> None:
    """The Ed25519 half R = identity, S = 0 under the identity key passes OpenSSL; with a
    valid ML-DSA half it must still fail: the key is refused, and so is R."""
    private = suites.HybridSignaturePrivateKey.generate()
    lattice = private.sign(b"message")[:3309]
    key = suites.HybridSignaturePublicKey(
        private.public_key()._mldsa, ed25519.Ed25519PublicKey.from_public_bytes(IDENTITY)
    )
    with pytest.raises(VerificationError):
        suites.verify(key, lattice + FORGED, b"message")


def test_a_pq_ed25519_half_with_r_identity_or_s_over_l_is_refused() -> None:
    private = suites.HybridSignaturePrivateKey.generate()
    public = suites.load_signature_public(Suite.PQ, suites.public_bytes(private))
    good = private.sign(b"message")
    suites.verify(public, good, b"message")
    classic = private._ed25519
    r_identity = _r_identity_signature(classic, b"message")
    classic.public_key().verify(r_identity, b"message")  # OpenSSL accepts that half
    with pytest.raises(VerificationError):
        suites.verify(public, good[:3309] + r_identity, b"message")
    s = int.from_bytes(good[3309 + 32 :], "little")
    with pytest.raises(VerificationError):
        suites.verify(public, good[: 3309 + 32] + (s + L).to_bytes(32, "little"), b"message")


@pytest.mark.parametrize(
    "half",
    [bytes(32), (1).to_bytes(32, "little"), P.to_bytes(32, "little"), None],
    ids=["u=0", "u=1", "u=p", "bit_255"],
)
def test_a_pq_exchange_key_with_a_hostile_x25519_half_is_refused(half: bytes | None) -> None:
    good = suites.public_bytes(suites.XWingPrivateKey.generate())
    if half is None:
        half = good[1184:1215] + bytes([good[1215] | 0x80])
    with pytest.raises(FormatError, match="X25519 half is"):
        suites.load_exchange_public(Suite.PQ, good[:1184] + half)
    suites.load_exchange_public(Suite.PQ, good)
