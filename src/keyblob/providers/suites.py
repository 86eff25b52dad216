"""The cryptography of each suite, on top of pyca ``cryptography``: key generation, key
encodings, wrap/unwrap of a session key and signatures (FORMAT.md 1.2, 2.4, 2.5).

Public operations (wrap, verify) need no provider; private ones (unwrap, sign) take the
private key object, which only a provider holds.  Failures of a private operation become
``VerificationError`` with a fixed message: the caller learns nothing else.
"""

from __future__ import annotations

import functools
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, x25519

from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.format.pubkey import ed25519_point_problem, x25519_public_problem
from keyblob.keys import Suite

ExchangePrivate: TypeAlias = x25519.X25519PrivateKey | rsa.RSAPrivateKey
SignaturePrivate: TypeAlias = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
ExchangePublic: TypeAlias = x25519.X25519PublicKey | rsa.RSAPublicKey
SignaturePublic: TypeAlias = ed25519.Ed25519PublicKey | rsa.RSAPublicKey

RSA_BITS = (2048, 3072, 4096)
DEFAULT_RSA_BITS = 3072
RSA_PUBLIC_EXPONENT = 65537
PSS_SALT_SIZE = 32
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, RFC 8032 5.1

_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_SHA256 = hashes.SHA256()
_PSS = padding.PSS(mgf=padding.MGF1(_SHA256), salt_length=PSS_SALT_SIZE)

UNWRAP_FAILED = "the wrapped key does not open with this container's exchange key"
BAD_SIGNATURE = "the signature does not verify"


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(_SHA256), algorithm=_SHA256, label=label)


def generate(
    suite: Suite, bits: int = DEFAULT_RSA_BITS
) -> tuple[ExchangePrivate, SignaturePrivate]:
    """A fresh (exchange, signature) pair of private keys for ``suite``."""
    if suite is Suite.X25519:
        return x25519.X25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    if suite is Suite.RSA:
        if bits not in RSA_BITS:
            raise UsageError(f"RSA keys are 2048, 3072 or 4096 bits, not {bits}")
        return (
            rsa.generate_private_key(RSA_PUBLIC_EXPONENT, bits),
            rsa.generate_private_key(RSA_PUBLIC_EXPONENT, bits),
        )
    raise UsageError(f"suite {suite.label} is not implemented")


def public_bytes(key: ExchangePrivate | SignaturePrivate) -> bytes:
    """The public half as the formats carry it: raw 32 bytes, or DER SubjectPublicKeyInfo."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: ExchangePrivate | SignaturePrivate) -> bytes:
    """Unencrypted private key bytes (raw 32, or PKCS#8 DER), to be sealed by the caller."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_exchange_private(suite: Suite, data: bytes) -> ExchangePrivate:
    """Load a private exchange key that comes out of authenticated storage.

    RSA keys were validated when they entered the home, so re-validation (tens of
    milliseconds per load) is skipped here.
    """
    if suite is Suite.X25519:
        return x25519.X25519PrivateKey.from_private_bytes(data)
    key = serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError("stored exchange key is not an RSA key")
    return key


def load_signature_private(suite: Suite, data: bytes) -> SignaturePrivate:
    """Load a private signature key that comes out of authenticated storage."""
    if suite is Suite.X25519:
        return ed25519.Ed25519PrivateKey.from_private_bytes(data)
    key = serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError("stored signature key is not an RSA key")
    return key


def _rsa_public(data: bytes, what: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(data)
    except ValueError:
        raise FormatError(f"{what} public key is not a DER SubjectPublicKeyInfo") from None
    except UnsupportedAlgorithm:  # an algorithm OID that cryptography does not know
        raise FormatError(f"{what} public key is not an RSA key (unknown algorithm)") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size not in RSA_BITS:
        raise FormatError(f"{what} public key is not an RSA key of 2048, 3072 or 4096 bits")
    if key.public_numbers().e != RSA_PUBLIC_EXPONENT:
        raise FormatError(f"{what} public key does not use the exponent 65537")
    # Key ids hash the encoded bytes: one key must have one encoding, hence one id.
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if spki != data:
        raise FormatError(f"{what} public key is not in canonical DER")
    return key


@functools.lru_cache(maxsize=256)
def load_exchange_public(suite: Suite, data: bytes) -> ExchangePublic:
    """Raises FormatError when ``data`` is not an exchange public key of the suite."""
    if suite is Suite.X25519:
        problem = x25519_public_problem(data)
        if problem is not None:
            raise FormatError(f"exchange public key is {problem}")
        key = x25519.X25519PublicKey.from_public_bytes(data)
        try:  # X25519 refuses an all-zero shared secret: refuse the key now, not at a wrap
            _low_order_probe().exchange(key)
        except ValueError:
            raise FormatError("exchange public key is a low-order X25519 point") from None
        return key
    return _rsa_public(data, "exchange")


@functools.cache
def _low_order_probe() -> x25519.X25519PrivateKey:
    # Any private key: a shared secret of zero means a low-order point (RFC 7748 section 6.1).
    return x25519.X25519PrivateKey.generate()


@functools.lru_cache(maxsize=256)  # public keys: loading RSA DER costs tens of µs
def load_signature_public(suite: Suite, data: bytes) -> SignaturePublic:
    """Raises FormatError when ``data`` is not a signature public key of the suite."""
    if suite is Suite.X25519:
        problem = ed25519_point_problem(data)
        if problem is not None:  # a small-order key would verify forgeries (FORMAT.md 1.3)
            raise FormatError(f"signature public key is {problem}")
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        except ValueError:
            raise FormatError("signature public key is not an Ed25519 key") from None
    return _rsa_public(data, "signature")


def check_public_keys(suite: Suite, exchange: bytes, signature: bytes) -> None:
    """Raises FormatError unless both are usable public keys of ``suite``."""
    load_exchange_public(suite, exchange)
    load_signature_public(suite, signature)


def wrap(public: ExchangePublic, key: bytes, context: bytes) -> bytes:
    """Wrap ``key`` to ``public``, bound to ``context`` (HPKE info / OAEP label)."""
    if isinstance(public, rsa.RSAPublicKey):
        return public.encrypt(key, _oaep(context))
    return _HPKE.encrypt(key, public, info=context)


def unwrap(private: ExchangePrivate, wrapped: bytes, context: bytes) -> bytes:
    """Open a wrapped key; any failure is the same ``VerificationError``."""
    try:
        if isinstance(private, rsa.RSAPrivateKey):
            return private.decrypt(wrapped, _oaep(context))
        return _HPKE.decrypt(wrapped, private, info=context)
    except (InvalidTag, ValueError):
        raise VerificationError(UNWRAP_FAILED) from None


def sign(private: SignaturePrivate, message: bytes) -> bytes:
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(message, _PSS, _SHA256)
    return private.sign(message)


def verify(public: SignaturePublic, signature: bytes, message: bytes) -> None:
    """Raises VerificationError unless ``signature`` is valid for ``message``.

    Ed25519 (FORMAT.md 2.5): besides OpenSSL's cofactorless check, R must not be a
    small-order point (nor non-canonical) and S must be below L, whatever OpenSSL does.
    """
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _PSS, _SHA256)
        else:
            if len(signature) != 64 or not _ed25519_r_and_s_ok(signature):
                raise InvalidSignature
            public.verify(signature, message)
    except InvalidSignature:
        raise VerificationError(BAD_SIGNATURE) from None


def _ed25519_r_and_s_ok(signature: bytes) -> bool:
    return (
        ed25519_point_problem(signature[:32]) is None
        and int.from_bytes(signature[32:], "little") < ED25519_ORDER
    )


def public_pem(suite: Suite, data: bytes, *, signature: bool = False) -> bytes:
    """A public key as PEM SubjectPublicKeyInfo, for tools outside keyblob."""
    key = load_signature_public(suite, data) if signature else load_exchange_public(suite, data)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
