"""Wycheproof ML-KEM-768 and ML-DSA-65 vectors through the primitives as keyblob's pq suite
uses them (FORMAT.md 1.3, 2.4, 2.5).  Third-party data, read in place (mldsa.md beside them
says how to apply the ML-DSA files).

ML-KEM-768: key generation from the 64-byte seed d || z (what an X-Wing seed expands into);
decapsulation with implicit rejection (what opening a pq wrap runs); and encapsulation keys
that FIPS 203's modulus check refuses, refused by keyblob as the ML-KEM half of a pq exchange
key (``suites.load_exchange_public``), by its own byte check and by ``cryptography`` alike.
Encapsulation from a given m is not exposed by ``cryptography``: the encaps file's valid keys
are checked to load and to round-trip an encapsulation, not its exact bytes.

ML-DSA-65: key generation from the 32-byte seed (the first half of a pq signature seed);
verification through ``suites.verify`` with the vector's signature as the ML-DSA half of a
hybrid signature whose Ed25519 half is valid, so the result is the ML-DSA verdict (empty
context, keyblob's); vectors with a non-empty context go to the primitive directly.  Signing
is hedged in ``cryptography`` (fresh randomness), so signatures are compared by verifying,
not byte for byte; vectors given only as mu (flag ``Internal``) are counted and skipped.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, mlkem

from keyblob.errors import FormatError, VerificationError
from keyblob.format.pubkey import mlkem768_public_problem
from keyblob.keys import Suite
from keyblob.providers import suites
from support import shared_vectors

ED25519 = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ED25519_PUBLIC = ED25519.public_key().public_bytes_raw()
X25519_HALF = suites.public_bytes(suites.XWingPrivateKey(bytes(32)))[1184:]


def _tests(name: str, algorithm: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    doc = json.loads((shared_vectors("wycheproof") / name).read_text())
    assert doc["algorithm"] == algorithm
    out = [(group, t) for group in doc["testGroups"] for t in group["tests"]]
    assert len(out) == doc["numberOfTests"]
    return out


def _hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def test_ml_kem_768_key_generation_from_the_seed() -> None:
    cases = _tests("mlkem_768_keygen_seed_test.json", "ML-KEM")
    for _, t in cases:
        assert t["result"] == "valid"
        key = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(t["seed"]))
        ek = key.public_key().public_bytes_raw()
        assert ek.hex() == t["ek"], t["tcId"]
        assert mlkem768_public_problem(ek) is None
    assert len(cases) == 100


def test_ml_kem_768_decapsulation() -> None:
    cases = _tests("mlkem_768_test.json", "ML-KEM")
    valid = 0
    for _, t in cases:
        where = f"tcId {t['tcId']} ({t.get('comment')})"
        seed, c = bytes.fromhex(t["seed"]), bytes.fromhex(t["c"])
        try:
            key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
            assert key.public_key().public_bytes_raw().hex() == t["ek"], where
            shared = key.decapsulate(c)
        except ValueError:
            assert t["result"] == "invalid", where
            continue
        assert t["result"] == "valid", where
        assert shared.hex() == t["K"], where
        valid += 1
    assert valid == 153


def test_ml_kem_768_encapsulation_keys() -> None:
    cases = _tests("mlkem_768_encaps_test.json", "ML-KEM")
    refused = 0
    for _, t in cases:
        where = f"tcId {t['tcId']} ({t.get('comment')}, {t.get('flags')})"
        ek = bytes.fromhex(t["ek"])
        try:
            public = suites.load_exchange_public(Suite.PQ, ek + X25519_HALF)
        except FormatError:
            assert t["result"] == "invalid", where
            assert len(ek) != 1184 or mlkem768_public_problem(ek) is not None, where
            with pytest.raises(ValueError):  # cryptography (OpenSSL) refuses it as well
                mlkem.MLKEM768PublicKey.from_public_bytes(ek)
            refused += 1
            continue
        assert t["result"] == "valid", where
        assert public.public_bytes_raw()[:1184] == ek  # type: ignore[union-attr]
        shared, c = mlkem.MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
        assert len(c) == 1088 and len(shared) == 32
    assert refused == 132


def _hybrid_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        key = suites.load_signature_public(Suite.PQ, public + ED25519_PUBLIC)
        suites.verify(key, signature + ED25519.sign(message), message)
    except (FormatError, VerificationError):
        return False
    return True


def test_ml_dsa_65_verification() -> None:
    cases = _tests("mldsa_65_verify_test.json", "ML-DSA-65")
    through_keyblob = direct = 0
    for group, t in cases:
        where = f"tcId {t['tcId']} ({t.get('comment')}, {t.get('flags')})"
        public, message = bytes.fromhex(group["publicKey"]), bytes.fromhex(t["msg"])
        signature, context = bytes.fromhex(t["sig"]), _hex(t.get("ctx")) or b""
        if not context:
            ok = _hybrid_verify(public, signature, message)
            assert ok == (t["result"] == "valid"), where
            through_keyblob += 1
            continue
        try:  # keyblob signs with the empty context; the primitive is checked with others
            mldsa.MLDSA65PublicKey.from_public_bytes(public).verify(signature, message, context)
            ok = True
        except (InvalidSignature, ValueError):
            ok = False
        assert ok == (t["result"] == "valid"), where
        direct += 1
    assert through_keyblob + direct == len(cases) and through_keyblob > 150


def test_ml_dsa_65_key_generation_and_signing_from_the_seed() -> None:
    cases = _tests("mldsa_65_sign_seed_test.json", "ML-DSA-65")
    checked = internal = 0
    for group, t in cases:
        where = f"tcId {t['tcId']} ({t.get('comment')}, {t.get('flags')})"
        seed = _hex(group.get("privateSeed"))
        if seed is None or len(seed) != 32:
            assert t["result"] == "invalid", where
            with pytest.raises(FormatError):
                suites.HybridSignaturePrivateKey((seed or b"") + bytes(32))
            continue
        key = suites.HybridSignaturePrivateKey(seed + ED25519.private_bytes_raw())
        assert suites.public_bytes(key)[:1952].hex() == group["publicKey"], where
        if "msg" not in t:
            internal += 1  # mu only (flag Internal): keyblob never signs a mu
            continue
        message, context = bytes.fromhex(t["msg"]), _hex(t.get("ctx")) or b""
        lattice = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
        if t["result"] == "invalid":
            with pytest.raises(ValueError):
                lattice.sign(message, context)
            continue
        given = bytes.fromhex(t["sig"])
        lattice.public_key().verify(given, message, context)
        lattice.public_key().verify(lattice.sign(message, context), message, context)
        if not context:  # keyblob's own signatures: both halves, verified by keyblob
            public = suites.load_signature_public(Suite.PQ, suites.public_bytes(key))
            suites.verify(public, suites.sign(key, message), message)
            suites.verify(public, given + ED25519.sign(message), message)
        checked += 1
    assert internal == 17 and checked > 80
