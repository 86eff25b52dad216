"""The cost of an encrypted PKCS#8 key is read before any passphrase is tried (issue 11,
item 5): a file with a harmless count is shown to decrypt with the real KDF, and the same
file with a hostile count is refused at once."""

from __future__ import annotations

import time

import pytest

from hostile_keys import (
    AES_256_CBC,
    HMAC_SHA256,
    PASS,
    PBES1_MD5_DES,
    PBES2,
    PBKDF2,
    PKCS12_3DES,
    SCRYPT,
    epki,
    integer,
    octets,
    oid,
    pbes2_pbkdf2,
    pbes2_scrypt,
    pem,
    seq,
    tlv,
)
from keyblob.errors import FormatError, PassphraseRequired, UnsupportedError
from keyblob.mscapi import load_rsa_key
from keyblob.mscapi.keyfiles import (
    MAX_KDF_ITERATIONS,
    MAX_SCRYPT_MEMORY,
    MAX_SCRYPT_WORK,
    check_pkcs8_encryption_cost,
)


def test_the_files_built_here_are_what_cryptography_decrypts() -> None:
    data = pbes2_pbkdf2(2048, real=True)
    assert load_rsa_key(data, passphrase=PASS).key.key_size == 2048
    assert load_rsa_key(pem(data), passphrase=PASS).key.key_size == 2048


@pytest.mark.parametrize("wrap", [bytes, pem], ids=["der", "pem"])
def test_over_the_bound_is_refused_before_the_passphrase(wrap) -> None:  # type: ignore[no-untyped-def]
    check_pkcs8_encryption_cost(pbes2_pbkdf2(MAX_KDF_ITERATIONS))  # at the bound: read
    data = wrap(pbes2_pbkdf2(MAX_KDF_ITERATIONS + 1))
    # Without a passphrase: refused, not asked for one (the file would be refused anyway).
    with pytest.raises(UnsupportedError) as e:
        load_rsa_key(data)
    assert f"{MAX_KDF_ITERATIONS + 1} PBKDF2 iterations" in str(e.value)
    assert str(MAX_KDF_ITERATIONS) in str(e.value).split("bound of ")[1]
    assert "\n" not in str(e.value) and e.value.hints


def test_legacy_pem_headers_do_not_skip_the_bound() -> None:
    """Proc-Type/DEK-Info headers on an ENCRYPTED PRIVATE KEY block: the contents are still
    an EncryptedPrivateKeyInfo, and still bounded, whichever scheme a reader then tries."""
    headers = b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n"
    data = pem(pbes2_pbkdf2(MAX_KDF_ITERATIONS + 1)).replace(b"-----\n", b"-----\n" + headers, 1)
    with pytest.raises(UnsupportedError, match="PBKDF2 iterations"):
        load_rsa_key(data)


def test_an_iteration_bomb_is_refused_at_once() -> None:
    """2^31 - 1 iterations would hold OpenSSL for minutes, deaf to Ctrl-C."""
    data = pbes2_pbkdf2(2**31 - 1, real=False)
    start = time.monotonic()
    with pytest.raises(UnsupportedError, match="2147483647 PBKDF2 iterations"):
        load_rsa_key(data, passphrase=PASS)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (1 << 20, 8, 1),  # 1 GiB of memory
        (1 << 14, 8, 64),  # 16 MiB, but 64 passes
        (2**64 - 1, 1, 1),  # an absurd N
    ],
)
def test_scrypt_over_the_bounds_is_refused(n: int, r: int, p: int) -> None:
    assert 128 * n * r > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK
    with pytest.raises(UnsupportedError, match=f"scrypt with N={n}, r={r}, p={p}"):
        load_rsa_key(pbes2_scrypt(n, r, p))


def test_scrypt_within_the_bounds_is_read() -> None:
    check_pkcs8_encryption_cost(pbes2_scrypt(1 << 14, 8, 1))  # OpenSSL's default
    with pytest.raises(PassphraseRequired):
        load_rsa_key(pbes2_scrypt(1 << 14, 8, 1))


def test_pkcs12_pbe_iterations_are_bounded() -> None:
    params = lambda count: seq(oid(PKCS12_3DES), seq(octets(bytes(8)), integer(count)))  # noqa: E731
    check_pkcs8_encryption_cost(epki(params(MAX_KDF_ITERATIONS)))
    with pytest.raises(UnsupportedError, match="PKCS#12 KDF iterations"):
        load_rsa_key(epki(params(MAX_KDF_ITERATIONS + 1)))


def test_a_scheme_nobody_bounded_is_refused() -> None:
    pbes1 = epki(seq(oid(PBES1_MD5_DES), seq(octets(bytes(8)), integer(2048))))
    with pytest.raises(UnsupportedError, match="encryption scheme"):
        load_rsa_key(pbes1)
    other_kdf = seq(oid(PBES2), seq(seq(oid(HMAC_SHA256), seq()), seq(oid(AES_256_CBC))))
    with pytest.raises(UnsupportedError, match="key derivation"):
        load_rsa_key(epki(other_kdf))


@pytest.mark.parametrize(
    "count",
    [
        b"\x02\x01\xff",  # negative
        b"\x02\x02\x00\x7f",  # a needless leading zero
        b"\x02\x00",  # empty
        b"\x04\x01\x01",  # not an INTEGER
    ],
)
def test_an_iteration_count_that_is_not_der_is_refused(count: bytes) -> None:
    kdf = seq(oid(PBKDF2), seq(octets(bytes(8)), count))
    data = epki(seq(oid(PBES2), seq(kdf, seq(oid(AES_256_CBC), octets(bytes(16))))))
    with pytest.raises(FormatError):
        load_rsa_key(data)


# A count longer than any bound, as the review's repro (issue 11 review, finding 1): 0x7f and
# 3000 0xff bytes.  Its decimal string would be over Python's 4300 digits: the message named
# it and the command printed a ValueError traceback instead of a refusal.
HUGE = b"\x7f" + b"\xff" * 3000


def _pbkdf2_count(count: bytes) -> bytes:
    kdf = seq(oid(PBKDF2), seq(octets(bytes(8)), count))
    return epki(seq(oid(PBES2), seq(kdf, seq(oid(AES_256_CBC), octets(bytes(16))))))


def _scrypt_raw(n: bytes, r: bytes, p: bytes) -> bytes:
    kdf = seq(oid(SCRYPT), seq(octets(bytes(16)), n, r, p))
    return epki(seq(oid(PBES2), seq(kdf, seq(oid(AES_256_CBC), octets(bytes(16))))))


def _pkcs12_count(count: bytes) -> bytes:
    return epki(seq(oid(PKCS12_3DES), seq(octets(bytes(8)), count)))


@pytest.mark.parametrize("wrap", [bytes, pem], ids=["der", "pem"])
@pytest.mark.parametrize(
    ("build", "what"),
    [
        (_pbkdf2_count, "iterationCount"),
        (lambda c: _scrypt_raw(c, integer(8), integer(1)), "scrypt N"),
        (lambda c: _scrypt_raw(integer(2), c, integer(1)), "scrypt r"),
        (lambda c: _scrypt_raw(integer(2), integer(1), c), "scrypt p"),
        (_pkcs12_count, "iterations"),
    ],
    ids=["pbkdf2", "scrypt-n", "scrypt-r", "scrypt-p", "pkcs12"],
)
@pytest.mark.parametrize("count", [HUGE, b"\x01" + bytes(8)], ids=["3001-bytes", "2^64"])
def test_a_count_longer_than_64_bits_is_refused_not_a_traceback(wrap, build, what, count) -> None:  # type: ignore[no-untyped-def]
    data = wrap(build(tlv(0x02, count)))
    with pytest.raises(UnsupportedError) as e:
        load_rsa_key(data, passphrase=PASS)
    message = str(e.value)
    assert message.startswith(f"encrypted PKCS#8: {what} at offset ")
    assert f"is a {len(count)}-byte integer, over keyblob's bounds (64 bits at most)" in message
    assert "\n" not in message and len(message) < 200 and e.value.hints


def test_a_count_of_64_bits_is_still_named() -> None:
    """2^64 - 1 is nine DER bytes (a leading zero): read, and refused by the bound by value."""
    with pytest.raises(UnsupportedError, match=f"{2**64 - 1} PBKDF2 iterations"):
        load_rsa_key(_pbkdf2_count(integer(2**64 - 1)))
