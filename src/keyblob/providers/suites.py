"""The cryptography of each suite, on top of pyca ``cryptography``: key generation, key
encodings, wrap/unwrap of a session key and signatures (FORMAT.md 1.2, 1.3, 2.4, 2.5).

P-256 signatures travel as raw ``r || s`` (32 + 32 bytes, low S); DER exists only at the
``cryptography`` call, converted here and nowhere else.

The ``pq`` suite's keys are pairs that ``cryptography`` has no single object for: an X-Wing
exchange key (ML-KEM-768 + X25519, kept as its 32-byte seed) and a hybrid signature key
(ML-DSA-65 + Ed25519, kept as the two 32-byte seeds); :class:`XWingPrivateKey` and
:class:`HybridSignaturePrivateKey` hold them, with their public halves.

Public operations (wrap, verify) need no provider; private ones (unwrap, sign) take the
private key object, which only a provider holds.  Failures of a private operation become
``VerificationError`` with a fixed message: the caller learns nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed25519,
    mldsa,
    mlkem,
    padding,
    rsa,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.format.pubkey import (
    MLDSA65_KEY_SIZE,
    MLKEM768_KEY_SIZE,
    PQ_EXCHANGE_KEY_SIZE,
    PQ_SIGNATURE_KEY_SIZE,
    ed25519_point_problem,
    mlkem768_public_problem,
    p256_public_problem,
    x25519_public_problem,
)
from keyblob.keys import Suite

# cryptography's serialization package (PEM/DER/SSH loaders, and with them x509's and the
# DH modules) is imported by the functions that use it: a command that only verifies,
# wraps and unwraps raw keys (every x25519 command) never loads it.

#: The pq suite (FORMAT.md 1.2, 1.3): sizes of its keys, seeds, enc and signatures.
XWING_SEED_SIZE = 32
PQ_ENC_SIZE = 1120  # ML-KEM-768 ciphertext (1088) || X25519 ephemeral public key (32)
MLDSA65_SIGNATURE_SIZE = 3309
ED25519_SIGNATURE_SIZE = 64
PQ_SIGNATURE_SIZE = MLDSA65_SIGNATURE_SIZE + ED25519_SIGNATURE_SIZE  # 3373
PQ_SIGNATURE_SEED_SIZE = 64  # ML-DSA-65 seed xi (32) || Ed25519 private key (32)
#: The ML-DSA context string of the pq signature (FIPS 204 5.2): empty, since every message
#: keyblob signs already starts with its own domain-separation label (FORMAT.md 2.5, 3.2).
MLDSA_CONTEXT = b""


class XWingPublicKey:
    """An X-Wing (MLKEM768-X25519) public key: ML-KEM-768 encapsulation key (1184 bytes)
    then X25519 public key (32 bytes), 1216 bytes (FORMAT.md 1.3)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, mlkem_key: mlkem.MLKEM768PublicKey, x25519_key: x25519.X25519PublicKey):
        self._key = hpke.MLKEM768X25519PublicKey(mlkem_key, x25519_key)
        self._raw = mlkem_key.public_bytes_raw() + x25519_key.public_bytes_raw()

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("keys are not pickled")


class XWingPrivateKey:
    """An X-Wing private key, its 32-byte seed: SHAKE256(seed, 96) gives the ML-KEM-768
    seed d || z (64 bytes) and the X25519 private key (32 bytes), as X-Wing's
    expandDecapsulationKey does (FORMAT.md 1.3)."""

    __slots__ = ("_key", "_public", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != XWING_SEED_SIZE:
            raise FormatError("an X-Wing private key is a 32-byte seed")
        expanded = hashlib.shake_256(seed).digest(96)
        mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        x25519_key = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        self._seed = bytes(seed)
        self._key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
        self._public = XWingPublicKey(mlkem_key.public_key(), x25519_key.public_key())

    @classmethod
    def generate(cls) -> XWingPrivateKey:
        return cls(os.urandom(XWING_SEED_SIZE))

    def public_key(self) -> XWingPublicKey:
        return self._public

    def seed_bytes(self) -> bytes:
        return self._seed

    def __repr__(self) -> str:
        return "<XWingPrivateKey>"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("keys are not pickled")


class HybridSignaturePublicKey:
    """A pq signature public key: ML-DSA-65 (1952 bytes) then Ed25519 (32 bytes)."""

    __slots__ = ("_ed25519", "_mldsa", "_raw")

    def __init__(self, mldsa_key: mldsa.MLDSA65PublicKey, ed25519_key: ed25519.Ed25519PublicKey):
        self._mldsa = mldsa_key
        self._ed25519 = ed25519_key
        self._raw = mldsa_key.public_bytes_raw() + ed25519_key.public_bytes_raw()

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raises InvalidSignature unless both halves verify (FORMAT.md 2.5)."""
        if len(signature) != PQ_SIGNATURE_SIZE:
            raise InvalidSignature
        classic = signature[MLDSA65_SIGNATURE_SIZE:]
        if not _ed25519_r_and_s_ok(classic):
            raise InvalidSignature
        self._ed25519.verify(classic, message)
        self._mldsa.verify(signature[:MLDSA65_SIGNATURE_SIZE], message, MLDSA_CONTEXT)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("keys are not pickled")


class HybridSignaturePrivateKey:
    """A pq signature private key: the ML-DSA-65 seed and the Ed25519 private key, 32 bytes
    each (FORMAT.md 1.3)."""

    __slots__ = ("_ed25519", "_mldsa", "_public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != PQ_SIGNATURE_SEED_SIZE:
            raise FormatError("a pq signature private key is two 32-byte seeds")
        self._mldsa = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed[:32])
        self._ed25519 = ed25519.Ed25519PrivateKey.from_private_bytes(seed[32:])
        self._public = HybridSignaturePublicKey(
            self._mldsa.public_key(), self._ed25519.public_key()
        )

    @classmethod
    def generate(cls) -> HybridSignaturePrivateKey:
        return cls(os.urandom(PQ_SIGNATURE_SEED_SIZE))

    def public_key(self) -> HybridSignaturePublicKey:
        return self._public

    def seed_bytes(self) -> bytes:
        return self._mldsa.private_bytes_raw() + self._ed25519.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """ML-DSA-65 (hedged, empty context) then Ed25519, over the same message."""
        return self._mldsa.sign(message, MLDSA_CONTEXT) + self._ed25519.sign(message)

    def __repr__(self) -> str:
        return "<HybridSignaturePrivateKey>"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("keys are not pickled")


ExchangePrivate: TypeAlias = (
    x25519.X25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | XWingPrivateKey
)
SignaturePrivate: TypeAlias = (
    ed25519.Ed25519PrivateKey
    | rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | HybridSignaturePrivateKey
)
ExchangePublic: TypeAlias = (
    x25519.X25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey | XWingPublicKey
)
SignaturePublic: TypeAlias = (
    ed25519.Ed25519PublicKey
    | rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | HybridSignaturePublicKey
)

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
_HPKE_PQ = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
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
    if suite is Suite.PQ:
        return XWingPrivateKey.generate(), HybridSignaturePrivateKey.generate()
    raise UsageError(f"suite {suite.label} is not implemented")


def public_bytes(key: ExchangePrivate | SignaturePrivate) -> bytes:
    """The public half as the formats carry it: raw 32 bytes, a SEC1 uncompressed point
    (65 bytes), DER SubjectPublicKeyInfo, or the pq suite's concatenated halves."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    if isinstance(key, XWingPrivateKey | HybridSignaturePrivateKey):
        return key.public_key().public_bytes_raw()
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
    """Unencrypted private key bytes (raw 32; P-256: the scalar, 32 bytes big-endian; pq:
    the seeds, 32 or 64 bytes; or PKCS#8 DER), to be sealed by the caller."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    if isinstance(key, XWingPrivateKey | HybridSignaturePrivateKey):
        return key.seed_bytes()
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
    if suite is Suite.PQ:
        if len(data) != XWING_SEED_SIZE:
            raise FormatError("stored exchange key is not an X-Wing seed")
        return XWingPrivateKey(data)
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
    if suite is Suite.PQ:
        if len(data) != PQ_SIGNATURE_SEED_SIZE:
            raise FormatError("stored signature key is not an ML-DSA-65 and Ed25519 seed pair")
        return HybridSignaturePrivateKey(data)
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
        return _x25519_public(data, "exchange public key")
    if suite is Suite.P256:
        return _p256_public(data, "exchange")
    if suite is Suite.PQ:
        return _xwing_public(data)
    return _rsa_public(data, "exchange")


def _x25519_public(data: bytes, what: str) -> x25519.X25519PublicKey:
    problem = x25519_public_problem(data)
    if problem is not None:
        raise FormatError(f"{what} is {problem}")
    key = x25519.X25519PublicKey.from_public_bytes(data)
    try:  # X25519 refuses an all-zero shared secret: refuse the key now, not at a wrap
        _low_order_probe().exchange(key)
    except ValueError:
        raise FormatError(f"{what} is a low-order X25519 point") from None
    return key


def _xwing_public(data: bytes) -> XWingPublicKey:
    """A pq exchange key (FORMAT.md 1.3): an ML-KEM-768 encapsulation key that passes FIPS
    203's modulus check, then an X25519 key held to the x25519 suite's rules."""
    if len(data) != PQ_EXCHANGE_KEY_SIZE:
        raise FormatError(f"exchange public key is not {PQ_EXCHANGE_KEY_SIZE} bytes")
    problem = mlkem768_public_problem(data[:MLKEM768_KEY_SIZE])
    if problem is not None:
        raise FormatError(f"exchange public key's ML-KEM-768 half is {problem}")
    try:  # cryptography (OpenSSL) runs the same check: belt and braces, one message
        kem = mlkem.MLKEM768PublicKey.from_public_bytes(data[:MLKEM768_KEY_SIZE])
    except ValueError:
        raise FormatError("exchange public key's ML-KEM-768 half is not a key") from None
    classic = _x25519_public(data[MLKEM768_KEY_SIZE:], "exchange public key's X25519 half")
    return XWingPublicKey(kem, classic)


@functools.cache
def _low_order_probe() -> x25519.X25519PrivateKey:
    # Any private key: a shared secret of zero means a low-order point (RFC 7748 section 6.1).
    return x25519.X25519PrivateKey.generate()


@functools.lru_cache(maxsize=256)  # public keys: loading RSA DER costs tens of µs
def load_signature_public(suite: Suite, data: bytes) -> SignaturePublic:
    """Raises FormatError when ``data`` is not a signature public key of the suite."""
    if suite is Suite.X25519:
        return _ed25519_public(data, "signature public key")
    if suite is Suite.P256:
        return _p256_public(data, "signature")
    if suite is Suite.PQ:
        if len(data) != PQ_SIGNATURE_KEY_SIZE:
            raise FormatError(f"signature public key is not {PQ_SIGNATURE_KEY_SIZE} bytes")
        try:  # every 1952-byte string is an ML-DSA-65 key (FIPS 204 pkDecode has no failure)
            lattice = mldsa.MLDSA65PublicKey.from_public_bytes(data[:MLDSA65_KEY_SIZE])
        except ValueError:
            raise FormatError("signature public key's ML-DSA-65 half is not a key") from None
        classic = _ed25519_public(data[MLDSA65_KEY_SIZE:], "signature public key's Ed25519 half")
        return HybridSignaturePublicKey(lattice, classic)
    return _rsa_public(data, "signature")


def _ed25519_public(data: bytes, what: str) -> ed25519.Ed25519PublicKey:
    problem = ed25519_point_problem(data)
    if problem is not None:  # a small-order key would verify forgeries (FORMAT.md 1.3)
        raise FormatError(f"{what} is {problem}")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise FormatError(f"{what} is not an Ed25519 key") from None


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
    if isinstance(public, XWingPublicKey):
        return _HPKE_PQ.encrypt(key, public._key, info=context)
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
        if isinstance(private, XWingPrivateKey):
            # enc is an ML-KEM ciphertext (any 1088 bytes decapsulate, implicit rejection)
            # and an X25519 key; a wrong one gives another secret and the AEAD fails.
            return _HPKE_PQ.decrypt(wrapped, private._key, info=context)
        return _HPKE.decrypt(wrapped, private, info=context)
    except (InvalidTag, ValueError):
        raise VerificationError(UNWRAP_FAILED) from None


def sign(private: SignaturePrivate, message: bytes) -> bytes:
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(message, _PSS, _SHA256)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return p256_raw_signature(private.sign(message, _ECDSA))
    return private.sign(message)  # Ed25519, or the pq hybrid (HybridSignaturePrivateKey.sign)


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
    pq: ML-DSA-65 and Ed25519 (with the Ed25519 rules above) must both verify.
    """
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _PSS, _SHA256)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            der = p256_der_signature(signature)
            if der is None:
                raise InvalidSignature
            public.verify(der, message, _ECDSA)
        elif isinstance(public, HybridSignaturePublicKey):
            public.verify(signature, message)
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
    """A public key as PEM SubjectPublicKeyInfo, for tools outside keyblob.

    Raises:
        UsageError: a pq key: its halves together have no SubjectPublicKeyInfo.
    """
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - above

    key = load_signature_public(suite, data) if signature else load_exchange_public(suite, data)
    if isinstance(key, XWingPublicKey | HybridSignaturePublicKey):
        raise UsageError("pq public keys have no PEM form (no standard encodes the pair)")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
