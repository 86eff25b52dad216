"""blobs.import_simpleblob: the CryptoAPI import's check order lives in the library
(issue 11 review): signed, signer pinned and in scope, signature verified, then unwrap, then
store.  Each refusal stores nothing and never reaches the unwrap."""

from __future__ import annotations

import os
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import keyblob
from keyblob import blobs, mscapi
from keyblob.errors import LegacyAlgorithmWarning, UsageError, VerificationError
from keyblob.keys import Suite
from keyblob.providers.software import SoftwareContainer
from keyblob.trust import CapiSigner, State


@pytest.fixture(scope="module")
def signers() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The real signer, an attacker, and a small (RSA-1024) pinned signer."""
    return (
        rsa.generate_private_key(65537, 2048),
        rsa.generate_private_key(65537, 2048),
        rsa.generate_private_key(65537, 1024),
    )


def _spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pin(container: SoftwareContainer, key: rsa.RSAPrivateKey, names=None) -> None:
    signer = CapiSigner(_spki(key), "win", 0, names)
    container.update_state(lambda s: s.with_capi_signer(signer))


@pytest.fixture
def home(make_container, monkeypatch):
    """An rsa container, a SIMPLEBLOB wrapped for it, and a record of every unwrap."""
    container = make_container(suite=Suite.RSA)
    exchange = serialization.load_der_public_key(container.exchange_public)
    assert isinstance(exchange, rsa.RSAPublicKey)
    session = mscapi.CapiKey.new(mscapi.AlgId.AES_256, os.urandom(32))
    blob = mscapi.build_simpleblob(session, exchange)
    unwraps: list[bytes] = []
    real = SoftwareContainer.capi_unwrap

    def spy(self, simpleblob, *, authenticated):
        unwraps.append(simpleblob)
        return real(self, simpleblob, authenticated=authenticated)

    monkeypatch.setattr(SoftwareContainer, "capi_unwrap", spy)
    return container, blob, session, unwraps


def _import(container, store, blob, **kw):
    kw.setdefault("name", "payroll")
    kw.setdefault("signature", None)
    return blobs.import_simpleblob(container, store, blob, **kw)


def _refused(home, store, error, match, **kw):
    container, blob, _, unwraps = home
    with pytest.raises(error, match=match):
        _import(container, store, blob, **kw)
    assert unwraps == [] and store.latest("payroll") is None  # nothing unwrapped or stored


def test_a_signed_blob_from_any_signer_imports_while_nothing_is_pinned(home, store, signers):
    container, blob, session, unwraps = home
    done = _import(
        container,
        store,
        blob,
        signature=mscapi.sign_hash(signers[0], blob),
        signer=signers[0].public_key(),
    )
    assert done.signature.authenticated and done.signature.pinned is None
    assert done.signature.public == _spki(signers[0]) and done.signature.bits == 2048
    assert done.session.unsafe_raw_bytes() == session.unsafe_raw_bytes()
    assert unwraps == [blob] and store.latest("payroll") == 1


def test_no_signature_is_refused(home, store):
    _refused(home, store, VerificationError, "it is not signed")


def test_unsigned_is_accepted_only_when_asked_and_nothing_is_pinned(home, store, signers):
    container, blob, _, _ = home
    _pin(container, signers[0])
    _refused(home, store, VerificationError, "only from its 1 pinned", unsigned=True)
    container.update_state(lambda s: s.without_capi_signer(_spki(signers[0])))
    done = _import(container, store, blob, unsigned=True)
    assert not done.signature.authenticated and store.latest("payroll") == 1


def test_a_signature_and_unsigned_contradict(home, store, signers):
    sig = mscapi.sign_hash(signers[0], home[1])
    _refused(home, store, UsageError, "contradict", signature=sig, unsigned=True)


def test_a_signature_needs_a_signer_when_nothing_is_pinned(home, store, signers):
    sig = mscapi.sign_hash(signers[0], home[1])
    _refused(home, store, UsageError, "signer's public key", signature=sig)


def test_an_unpinned_signer_is_refused_once_any_is_pinned(home, store, signers):
    container, blob, _, _ = home
    _pin(container, signers[0])
    sig = mscapi.sign_hash(signers[1], blob)  # the attacker signed, and gives their key
    kw = {"signature": sig, "signer": signers[1].public_key()}
    _refused(home, store, VerificationError, "is not a pinned CryptoAPI signer", **kw)
    _refused(home, store, VerificationError, "none of the 1 pinned", signature=sig)


def test_a_pinned_signer_out_of_its_scope_is_refused_before_its_signature(home, store, signers):
    container, blob, _, _ = home
    _pin(container, signers[0], ("web-*",))
    good = mscapi.sign_hash(signers[0], blob)
    _refused(home, store, VerificationError, "trusted only for", signature=good)
    # Given with its key, the scope is checked before the signature: a bad one says scope.
    bad = bytes(256)
    kw = {"signature": bad, "signer": signers[0].public_key()}
    _refused(home, store, VerificationError, "trusted only for", **kw)
    assert _import(container, store, blob, name="web-1", signature=good).signature.pinned


def test_a_bad_signature_is_refused_before_the_unwrap(home, store, signers):
    blob = home[1]
    sig = bytearray(mscapi.sign_hash(signers[0], blob))
    sig[5] ^= 1
    kw = {"signature": bytes(sig), "signer": signers[0].public_key()}
    _refused(home, store, VerificationError, "signature", **kw)


def test_only_the_pinned_signer_that_signed_meets_the_size_rule(home, store, signers):
    """Issue 11 review (b): with several pinned signers, the RSA-1024 one that did not sign
    warned of its size; the search runs with the rule off, then the rule meets the signer."""
    container, blob, _, _ = home
    _pin(container, signers[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _pin(container, signers[0])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        done = _import(container, store, blob, signature=mscapi.sign_hash(signers[0], blob))
    assert done.signature.pinned is not None and done.signature.bits == 2048
    assert [w for w in seen if issubclass(w.category, LegacyAlgorithmWarning)] == []
    # The small one, when it is the one that signed, still warns.
    with pytest.warns(LegacyAlgorithmWarning, match="RSA-1024"):
        _import(
            container,
            store,
            blob,
            name="other",
            signature=mscapi.sign_hash(signers[2], blob, legacy=True),
        )


def test_the_signature_check_without_a_home(signers):
    blob = b"any bytes"
    sig = mscapi.sign_hash(signers[0], blob)
    found = blobs.check_simpleblob_signature(
        State(), blob, name=None, signature=sig, signer=signers[0].public_key()
    )
    assert found.authenticated and found.pinned is None
    with pytest.raises(VerificationError):
        blobs.check_simpleblob_signature(
            State(), blob, name=None, signature=sig, signer=signers[1].public_key()
        )


def test_the_recipe_is_public():
    assert keyblob.import_simpleblob is blobs.import_simpleblob
