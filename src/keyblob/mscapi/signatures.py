"""CryptSignHash / CryptVerifySignature: PKCS#1 v1.5 signatures, byte-reversed.

``EM = 00 01 FF..FF 00 || DigestInfo || H`` (or ``|| H`` alone with CRYPT_NOHASHOID), RSA
with the private key, stored least-significant byte first, always exactly the modulus
length (CRYPTOAPI-FORMATS.md section 9).  Signing goes through ``cryptography``'s PKCS#1
v1.5 with ``NoDigestInfo`` over the exact payload; verifying recovers the payload with
``cryptography`` (which checks the type 1 padding) and compares it, in constant time, with
the payloads Windows accepts.
"""

from __future__ import annotations

import hmac
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from keyblob.errors import UsageError, VerificationError
from keyblob.mscapi import _primitives
from keyblob.mscapi.algids import HASH_SIZES, LEGACY_HASHES, AlgId, warn_legacy
from keyblob.mscapi.keysize import RsaUse, check_rsa_size

#: DigestInfo prefixes (section 9, plus the standard MD2/MD4 ones for verifying old data).
DIGEST_INFO: dict[AlgId, bytes] = {
    AlgId.MD2: bytes.fromhex("3020300c06082a864886f70d020205000410"),
    AlgId.MD4: bytes.fromhex("3020300c06082a864886f70d020405000410"),
    AlgId.MD5: bytes.fromhex("3020300c06082a864886f70d020505000410"),
    AlgId.SHA1: bytes.fromhex("3021300906052b0e03021a05000414"),
    AlgId.SHA_256: bytes.fromhex("3031300d060960864801650304020105000420"),
    AlgId.SHA_384: bytes.fromhex("3041300d060960864801650304020205000430"),
    AlgId.SHA_512: bytes.fromhex("3051300d060960864801650304020305000440"),
}
SIGN_HASHES = frozenset(DIGEST_INFO) | {AlgId.SSL3_SHAMD5}
_BAD_SIGNATURE = "signature verification failed"
#: The key's role in messages about its size (docs/MSCAPI.md 5).
SIGNER_ROLE = "signer's key"
SIGNING_ROLE = "signature key"


def _check_signer(public_key: rsa.RSAPublicKey, legacy: bool) -> None:
    check_rsa_size(
        public_key, RsaUse.READ, legacy=legacy, role=SIGNER_ROLE, action="verifying", stacklevel=4
    )


def _hash_alg(hash_alg: AlgId | int) -> AlgId:
    try:
        alg = AlgId(hash_alg)
    except ValueError:
        raise UsageError(f"0x{int(hash_alg):08x} is not a hash ALG_ID") from None
    if alg not in SIGN_HASHES:
        raise UsageError(f"{alg.calg_name} is not a signature hash")
    return alg


def _payload(hash_alg: AlgId, digest: bytes, no_hash_oid: bool) -> bytes:
    if len(digest) != HASH_SIZES[hash_alg]:
        raise UsageError(f"a {hash_alg.calg_name} value is {HASH_SIZES[hash_alg]} bytes")
    # CALG_SSL3_SHAMD5 has no OID: it is always signed bare (vector sign_ssl3_shamd5).
    if no_hash_oid or hash_alg is AlgId.SSL3_SHAMD5:
        return digest
    return DIGEST_INFO[hash_alg] + digest


def _signing_hash(hash_alg: AlgId | int, legacy: bool) -> AlgId:
    """The hash to sign with: known, and legacy only when allowed (then warned once)."""
    alg = _hash_alg(hash_alg)
    if alg in LEGACY_HASHES:
        if not legacy:
            raise UsageError(f"{alg.calg_name} is legacy: signing with it needs legacy=True")
        warn_legacy(alg.calg_name, stacklevel=4)  # the caller of sign_digest / sign_hash
    return alg


def _check_signing_key(private_key: rsa.RSAPrivateKey, legacy: bool) -> None:
    check_rsa_size(
        private_key, RsaUse.WRITE, legacy=legacy, role=SIGNING_ROLE, action="signing", stacklevel=4
    )


def _sign(private_key: rsa.RSAPrivateKey, alg: AlgId, digest: bytes, no_hash_oid: bool) -> bytes:
    payload = _payload(alg, digest, no_hash_oid)
    try:
        signature = private_key.sign(payload, padding.PKCS1v15(), utils.NoDigestInfo())
    except ValueError:
        raise UsageError("the key is too small for this hash") from None
    return signature[::-1]


def sign_digest(
    private_key: rsa.RSAPrivateKey,
    digest: bytes,
    *,
    hash_alg: AlgId | int = AlgId.SHA_256,
    no_hash_oid: bool = False,
    legacy: bool = False,
) -> bytes:
    """CryptSignHash over a hash value already computed (HP_HASHVAL).

    Raises:
        UsageError: an unknown hash, a digest of the wrong length, or a legacy hash (MD2,
            MD4, MD5, SHA-1, SSL3_SHAMD5) without ``legacy=True``.
        WeakKeyError: a key under 2048 bits without ``legacy=True`` (a UsageError).
    """
    _check_signing_key(private_key, legacy)
    return _sign(private_key, _signing_hash(hash_alg, legacy), digest, no_hash_oid)


def sign_hash(
    private_key: rsa.RSAPrivateKey,
    data: bytes,
    *,
    hash_alg: AlgId | int = AlgId.SHA_256,
    no_hash_oid: bool = False,
    legacy: bool = False,
) -> bytes:
    """CryptCreateHash + CryptHashData(``data``) + CryptSignHash.

    The key and the hash are checked (and a legacy one refused) before ``data`` is hashed.

    Returns:
        The signature, least-significant byte first, exactly the modulus length.

    Raises:
        UsageError: as :func:`sign_digest`.
        WeakKeyError: as :func:`sign_digest`.
        UnsupportedError: MD2/MD4 without the legacy backend.
    """
    _check_signing_key(private_key, legacy)
    alg = _signing_hash(hash_alg, legacy)
    return _sign(private_key, alg, _primitives.digest(alg, data), no_hash_oid)


def verify_digest(
    public_key: rsa.RSAPublicKey,
    signature: bytes,
    digest: bytes,
    *,
    hash_alg: AlgId | int,
    no_hash_oid: bool | None = None,
    legacy: bool = False,
) -> None:
    """CryptVerifySignature over a hash value.

    Args:
        public_key: the signer's key.
        signature: as CryptSignHash wrote it (least-significant byte first).
        digest: the hash value.
        hash_alg: the hash ALG_ID.
        no_hash_oid: None accepts the signature with or without DigestInfo, as Windows
            does with flags 0 (vectors ``verify_signature_*_nohashoid``); True requires the
            bare form (CRYPT_NOHASHOID); False requires the DigestInfo.
        legacy: accept a signer under 1024 bits (docs/MSCAPI.md 5); one of 1024 to 2047
            bits is accepted with a warning either way.

    Raises:
        VerificationError: the signature does not verify (one fixed message); also for a
            signature that is not exactly the modulus length, which Windows refuses first
            (vector ``verify_signature_truncated``).
        UsageError: an unknown hash or a digest of the wrong length.
        WeakKeyError: a signer under 1024 bits without ``legacy=True`` (a UsageError).
    """
    _check_signer(public_key, legacy)
    _verify(public_key, signature, digest, _hash_alg(hash_alg), no_hash_oid)


def _verify(
    public_key: rsa.RSAPublicKey,
    signature: bytes,
    digest: bytes,
    alg: AlgId,
    no_hash_oid: bool | None,
) -> None:
    """:func:`verify_digest` once the signer's size was checked."""
    if alg in LEGACY_HASHES:
        warn_legacy(alg.calg_name, stacklevel=4)
    with_oid = _payload(alg, digest, False)
    bare = _payload(alg, digest, True)
    size = (public_key.key_size + 7) // 8
    if len(signature) != size:  # the sizes are public: saying them reveals nothing
        raise VerificationError(
            f"{_BAD_SIGNATURE}: {len(signature)} bytes, but a {public_key.key_size}-bit "
            f"signer's signatures are {size} bytes"
        )
    try:
        recovered = public_key.recover_data_from_signature(
            signature[::-1], padding.PKCS1v15(), None
        )
    except (InvalidSignature, ValueError):
        raise VerificationError(_BAD_SIGNATURE) from None
    ok_oid = hmac.compare_digest(recovered, with_oid) and no_hash_oid is not True
    ok_bare = hmac.compare_digest(recovered, bare) and no_hash_oid is not False
    if not (ok_oid or ok_bare):
        raise VerificationError(_BAD_SIGNATURE)


def verify_stream_signature(
    public_key: rsa.RSAPublicKey,
    signature: bytes,
    src: BinaryIO,
    *,
    hash_alg: AlgId | int = AlgId.SHA_256,
    legacy: bool = False,
) -> None:
    """:func:`verify_signature` over everything ``src`` yields, read 1 MiB at a time.

    The signer's size is checked before anything is read.

    Raises:
        as :func:`verify_signature`.
    """
    _check_signer(public_key, legacy)
    alg = _hash_alg(hash_alg)
    h = _primitives.Hasher(alg)
    while chunk := src.read(1 << 20):
        h.update(chunk)
    _verify(public_key, signature, h.value(), alg, None)


def verify_signature(
    public_key: rsa.RSAPublicKey,
    signature: bytes,
    data: bytes,
    *,
    hash_alg: AlgId | int = AlgId.SHA_256,
    no_hash_oid: bool | None = None,
    legacy: bool = False,
) -> None:
    """CryptCreateHash + CryptHashData(``data``) + CryptVerifySignature.

    ``legacy`` as for :func:`verify_digest`.

    Raises:
        VerificationError: the signature does not verify (one fixed message).
        UsageError: an unknown hash.
        WeakKeyError: a signer under 1024 bits without ``legacy=True`` (a UsageError).
        UnsupportedError: MD2/MD4 without the legacy backend.
    """
    _check_signer(public_key, legacy)
    alg = _hash_alg(hash_alg)
    _verify(public_key, signature, _primitives.digest(alg, data), alg, no_hash_oid)
