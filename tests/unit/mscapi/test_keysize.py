"""RSA key sizes in the CryptoAPI library (issue 11, item 2; docs/MSCAPI.md 5): the rule at
each threshold, then every library function that reads or writes with an RSA key, with real
keys of 512, 1023, 1024, 2047 and 2048 bits."""

from __future__ import annotations

import hashlib
import io
import warnings

import pytest

from hostile_keys import rsa_of
from keyblob.errors import LegacyAlgorithmWarning, UsageError, WeakKeyError
from keyblob.mscapi import (
    AlgId,
    CapiKey,
    KeyFormat,
    RsaUse,
    Verdict,
    build_simpleblob,
    dump_rsa_key,
    rsa_size_verdict,
    sign_digest,
    sign_hash,
    unwrap_simpleblob,
    unwrap_to_plaintextkeyblob,
    verify_digest,
    verify_signature,
    verify_stream_signature,
)

AES = CapiKey.new(AlgId.AES_256, bytes(range(32)))
OK, WARN, REFUSE = Verdict.OK, Verdict.WARN, Verdict.REFUSE


@pytest.mark.parametrize(
    ("bits", "read", "read_legacy", "write", "write_legacy"),
    [
        (512, REFUSE, WARN, REFUSE, WARN),
        (1023, REFUSE, WARN, REFUSE, WARN),
        (1024, WARN, WARN, REFUSE, WARN),
        (2047, WARN, WARN, REFUSE, WARN),
        (2048, OK, OK, OK, OK),
        (16384, OK, OK, OK, OK),
    ],
)
def test_the_rule(
    bits: int, read: Verdict, read_legacy: Verdict, write: Verdict, write_legacy: Verdict
) -> None:
    assert rsa_size_verdict(bits, RsaUse.READ, legacy=False) is read
    assert rsa_size_verdict(bits, RsaUse.READ, legacy=True) is read_legacy
    assert rsa_size_verdict(bits, RsaUse.WRITE, legacy=False) is write
    assert rsa_size_verdict(bits, RsaUse.WRITE, legacy=True) is write_legacy


def _size_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in record
        if issubclass(w.category, LegacyAlgorithmWarning) and "a legacy size" in str(w.message)
    ]


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2047, 2048])
def test_verifying(bits: int) -> None:
    key = rsa_of(bits)
    data = b"a SIMPLEBLOB"
    signature = sign_hash(key, data, legacy=True)  # signing is tested below
    digest = hashlib.sha256(data).digest()
    checks = [
        lambda legacy: verify_signature(key.public_key(), signature, data, legacy=legacy),
        lambda legacy: verify_digest(
            key.public_key(), signature, digest, hash_alg=AlgId.SHA_256, legacy=legacy
        ),
        lambda legacy: verify_stream_signature(
            key.public_key(), signature, io.BytesIO(data), legacy=legacy
        ),
    ]
    for check in checks:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            if bits < 1024:
                with pytest.raises(WeakKeyError) as e:
                    check(False)
                assert isinstance(e.value, UsageError) and e.value.bits == bits
                assert str(e.value) == (
                    f"the signer's key is RSA-{bits}; below 1024 bits is refused "
                    "(legacy=True reads old data anyway)"
                )
                assert e.value.reading and e.value.floor == 1024
                assert not _size_warnings(record)
            else:
                check(False)
            check(True)
        expected = (
            f"the signer's key is RSA-{bits}, a legacy size (under 2048 bits): "
            "use it only for old data"
        )
        if bits < 2048:  # once per accepted call
            assert _size_warnings(record) == [expected] * (1 if bits < 1024 else 2)
        else:
            assert not _size_warnings(record)


def test_a_small_signer_is_refused_before_the_data_is_read() -> None:
    class Unreadable(io.BytesIO):
        def read(self, *_: object) -> bytes:
            raise AssertionError("read before the signer's size was checked")

    with pytest.raises(WeakKeyError):
        verify_stream_signature(rsa_of(512).public_key(), bytes(64), Unreadable())


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2047, 2048])
def test_signing_and_wrapping(bits: int) -> None:
    key = rsa_of(bits)
    writes = [
        lambda legacy: sign_hash(key, b"x", legacy=legacy),
        lambda legacy: sign_digest(key, bytes(32), legacy=legacy),
        lambda legacy: build_simpleblob(AES, key.public_key(), legacy=legacy),
    ]
    for write in writes:
        if bits >= 2048:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                write(False)
            continue
        with pytest.raises(
            WeakKeyError, match=f"is RSA-{bits}; below 2048 bits, .* needs legacy=True"
        ):
            write(False)
        with pytest.warns(LegacyAlgorithmWarning, match=f"RSA-{bits}, a legacy size"):
            write(True)


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2047, 2048])
def test_unwrapping(bits: int) -> None:
    key = rsa_of(bits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blob = build_simpleblob(AES, key.public_key(), legacy=True)
    for unwrap in (unwrap_simpleblob, unwrap_to_plaintextkeyblob):
        if bits < 1024:
            with pytest.raises(WeakKeyError, match=f"the exchange key is RSA-{bits}; below 1024"):
                unwrap(blob, key)
            with pytest.warns(LegacyAlgorithmWarning, match=f"RSA-{bits}, a legacy size"):
                unwrap(blob, key, legacy=True)
        elif bits < 2048:
            with pytest.warns(LegacyAlgorithmWarning, match=f"RSA-{bits}, a legacy size"):
                unwrap(blob, key)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                unwrap(blob, key)


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2048])
def test_converting(bits: int) -> None:
    key = rsa_of(bits)
    for fmt in KeyFormat:
        if bits < 1024:
            with pytest.raises(WeakKeyError, match=f"the key is RSA-{bits}; below 1024"):
                dump_rsa_key(key, fmt, public_only=False)
            with pytest.warns(LegacyAlgorithmWarning):
                dump_rsa_key(key, fmt, public_only=False, legacy=True)
        elif bits < 2048:
            with pytest.warns(LegacyAlgorithmWarning, match=f"RSA-{bits}"):
                dump_rsa_key(key.public_key(), fmt, public_only=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                dump_rsa_key(key, fmt, public_only=False)
