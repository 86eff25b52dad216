"""The cryptography of each suite, on top of pyca ``cryptography``: key generation, key
encodings, wrap/unwrap of a session key and signatures (FORMAT.md 1.2, 1.3, 2.4, 2.5).

P-256 signatures travel as raw ``r || s`` (32 + 32 bytes, low S); DER exists only at the
``cryptography`` call, converted here and nowhere else.

Public operations (wrap, verify) need no provider; private ones (unwrap, sign) take the
private key object, which only a provider holds.  Failures of a private operation become
``VerificationError`` with a fixed message: the caller learns nothing else.
"""

from __future__ import annotations

import functools
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.format.pubkey import (
    ed25519_point_problem,
    p256_public_problem,
    x25519_public_problem,
)
from keyblob.keys import Suite

# cryptography's serialization package (PEM/DER/SSH loaders, and with them x509's and the
# DH modules) is imported by the functions that use it: a command that only verifies,
# wraps and unwraps raw keys (every x25519 command) never loads it.

ExchangePrivate: TypeAlias = (
    x25519.X25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
)
SignaturePrivate: TypeAlias = (
    ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
)
ExchangePublic: TypeAlias = x25519.X25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
SignaturePublic: TypeAlias = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey

RSA_BITS = (2048, 3072, 4096)
DEFAULT_RSA_BITS = 3072
RSA_PUBLIC_EXPONENT = 65537
PSS_SALT_SIZE = 32
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, RFC 8032 5.1

#: n, the order of the P-256 base point (SEC 2 2.4.2).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_SCALAR_SIZE = 32
P256_ENC_SIZE = 65

_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_HPKE_P256 = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_P256 = ec.SECP256R1()
_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(_SHA256)
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
    if suite is Suite.P256:
        return ec.generate_private_key(_P256), ec.generate_private_key(_P256)
    raise UsageError(f"suite {suite.label} is not implemented")


def public_bytes(key: ExchangePrivate | SignaturePrivate) -> bytes:
    """The public half as the formats carry it: raw 32 bytes, a SEC1 uncompressed point
    (65 bytes), or DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: ExchangePrivate | SignaturePrivate) -> bytes:
    """Unencrypted private key bytes (raw 32; P-256: the scalar, 32 bytes big-endian; or
    PKCS#8 DER), to be sealed by the caller."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes(P256_SCALAR_SIZE)
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
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    if suite is Suite.X25519:
        return x25519.X25519PrivateKey.from_private_bytes(data)
    if suite is Suite.P256:
        return _p256_private(data, "exchange")
    key = serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError("stored exchange key is not an RSA key")
    return key


def load_signature_private(suite: Suite, data: bytes) -> SignaturePrivate:
    """Load a private signature key that comes out of authenticated storage."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    if suite is Suite.X25519:
        return ed25519.Ed25519PrivateKey.from_private_bytes(data)
    if suite is Suite.P256:
        return _p256_private(data, "signature")
    key = serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError("stored signature key is not an RSA key")
    return key


def _p256_private(data: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(data)
    if len(data) != P256_SCALAR_SIZE or not 1 <= scalar < P256_ORDER:
        raise FormatError(f"stored {what} key is not a P-256 private key")
    return ec.derive_private_key(scalar, _P256)


def _p256_public(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key: the form checked by format.pubkey, the point by OpenSSL (on the
    curve; the identity has no 65-byte encoding), and one encoding per key."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    problem = p256_public_problem(data)
    if problem is not None:
        raise FormatError(f"{what} public key is {problem}")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(_P256, data)
    except ValueError:
        raise FormatError(f"{what} public key is not a point of the P-256 curve") from None
    if (
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        != data
    ):  # cannot happen after the checks above; kept so that one key has one key id
        raise FormatError(f"{what} public key is not in canonical SEC1 form")
    return key


def _rsa_public(data: bytes, what: str) -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

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
    if suite is Suite.P256:
        return _p256_public(data, "exchange")
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
    if suite is Suite.P256:
        return _p256_public(data, "signature")
    return _rsa_public(data, "signature")


def check_public_keys(suite: Suite, exchange: bytes, signature: bytes) -> None:
    """Raises FormatError unless both are usable public keys of ``suite``."""
    load_exchange_public(suite, exchange)
    load_signature_public(suite, signature)


def wrap(public: ExchangePublic, key: bytes, context: bytes) -> bytes:
    """Wrap ``key`` to ``public``, bound to ``context`` (HPKE info / OAEP label)."""
    if isinstance(public, rsa.RSAPublicKey):
        return public.encrypt(key, _oaep(context))
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _HPKE_P256.encrypt(key, public, info=context)
    return _HPKE.encrypt(key, public, info=context)


def unwrap(private: ExchangePrivate, wrapped: bytes, context: bytes) -> bytes:
    """Open a wrapped key; any failure is the same ``VerificationError``."""
    try:
        if isinstance(private, rsa.RSAPrivateKey):
            return private.decrypt(wrapped, _oaep(context))
        if isinstance(private, ec.EllipticCurvePrivateKey):
            # enc must be a key 1.3 accepts: the form here, the curve inside cryptography
            # (tests/vectors/test_p256_wycheproof.py shows invalid-curve points refused).
            if p256_public_problem(wrapped[:P256_ENC_SIZE]) is not None:
                raise ValueError("enc")
            return _HPKE_P256.decrypt(wrapped, private, info=context)
        return _HPKE.decrypt(wrapped, private, info=context)
    except (InvalidTag, ValueError):
        raise VerificationError(UNWRAP_FAILED) from None


def sign(private: SignaturePrivate, message: bytes) -> bytes:
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(message, _PSS, _SHA256)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return p256_raw_signature(private.sign(message, _ECDSA))
    return private.sign(message)


def p256_raw_signature(der: bytes) -> bytes:
    """A DER ECDSA P-256 signature (what ``cryptography`` gives) as keyblob writes it
    (FORMAT.md 2.5): ``r || s``, 32 bytes each, big-endian, with s replaced by n - s when
    s > n/2 (both verify; keyblob accepts only the low one)."""
    return p256_low_s(*decode_dss_signature(der))


def p256_low_s(r: int, s: int) -> bytes:
    """``r || s`` as keyblob writes it (FORMAT.md 2.5), with s replaced by n - s when
    s > n/2: from ``cryptography``'s DER or a token's raw output alike."""
    if s > P256_ORDER // 2:
        s = P256_ORDER - s
    return r.to_bytes(P256_SCALAR_SIZE) + s.to_bytes(P256_SCALAR_SIZE)


def p256_der_signature(raw: bytes) -> bytes | None:
    """The DER form of a raw ``r || s`` signature keyblob accepts, or None when FORMAT.md
    2.5 refuses it: not 64 bytes, r or s zero or >= n, or s > n/2 (high S)."""
    if len(raw) != 2 * P256_SCALAR_SIZE:
        return None
    r = int.from_bytes(raw[:P256_SCALAR_SIZE])
    s = int.from_bytes(raw[P256_SCALAR_SIZE:])
    if not (0 < r < P256_ORDER and 0 < s <= P256_ORDER // 2):
        return None
    return encode_dss_signature(r, s)


def verify(public: SignaturePublic, signature: bytes, message: bytes) -> None:
    """Raises VerificationError unless ``signature`` is valid for ``message``.

    Ed25519 (FORMAT.md 2.5): besides OpenSSL's cofactorless check, R must not be a
    small-order point (nor non-canonical) and S must be below L, whatever OpenSSL does.
    ECDSA P-256: only the raw, low-S form (:func:`p256_der_signature`).
    """
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _PSS, _SHA256)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            der = p256_der_signature(signature)
            if der is None:
                raise InvalidSignature
            public.verify(der, message, _ECDSA)
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
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    key = load_signature_public(suite, data) if signature else load_exchange_public(suite, data)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
