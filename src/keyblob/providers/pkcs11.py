"""The PKCS#11 token provider's key operations: containers of the ``p256`` suite whose two
private keys live in a token (an HSM, a smart card, SoftHSM2) and never leave it.

What this module owns:

- loading a PKCS#11 module (one per process: python-pkcs11 initialises one library) and
  opening a logged-in session on a token by its label;
- generating the container's two P-256 key pairs in the token (private, sensitive, not
  extractable; the exchange key may only derive, the signature key may only sign), or
  adopting pairs a token already holds, found by label;
- :class:`TokenContainer`: the Provider protocol's key operations (``sign``: ``CKM_ECDSA``
  over a SHA-256 digest computed here, SoftHSM2 2.6.1 has no ``CKM_ECDSA_SHA256``;
  ``unwrap``: RFC 9180 in process, hpke_schedule.py, with the recipient's DH in the token,
  ``CKM_ECDH1_DERIVE`` with ``CKD_NULL``);
- translating every PKCS#11 failure into a keyblob error with a one-line message: a wrong
  or invalid PIN and a locked PIN are ``PassphraseError``; a missing module, token or key is
  ``NotFoundError``; anything else is ``ProviderError``.  No message holds a PIN.

The authenticated state (``state``, ``update_state``) of a token container is not here yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import KDF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from keyblob.errors import (
    FormatError,
    NotFoundError,
    PassphraseError,
    ProviderError,
    VerificationError,
)
from keyblob.format.pubkey import p256_public_problem
from keyblob.keys import KeyId, KeyRole, Suite, check_name, key_id_for
from keyblob.providers import hpke_schedule, suites

#: The curve's CKA_EC_PARAMS: the named curve secp256r1 (prime256v1), DER.
P256_PARAMS = encode_named_curve_parameters("secp256r1")
_POINT_SIZE = 65  # an uncompressed SEC1 point
_DER_POINT_PREFIX = b"\x04\x41"  # CKA_EC_POINT as a DER OCTET STRING of the point
_ROLE_WORDS = {KeyRole.EXCHANGE: "exchange", KeyRole.SIGNATURE: "signature"}

#: The modules loaded in this process, by path (python-pkcs11 initialises one library).
_MODULES: dict[str, Any] = {}


def key_label(name: str, role: KeyRole) -> str:
    """The CKA_LABEL keyblob gives the ``role`` key pair of container ``name``."""
    return f"keyblob/{check_name(name)}/{_ROLE_WORDS[role]}"


def key_object_id(label: str) -> bytes:
    """The CKA_ID keyblob gives a key pair it generates: 16 bytes of SHA-256 of its label
    (the public and private objects of a pair share it, as PKCS#11 tools expect)."""
    return hashlib.sha256(label.encode("utf-8")).digest()[:16]


@contextlib.contextmanager
def _token_errors(token: str, action: str) -> Iterator[None]:
    """Translate the PKCS#11 failures of ``action`` on token ``token`` (its label)."""
    try:
        yield
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
        raise PassphraseError(f"wrong PIN for PKCS#11 token {token!r}") from None
    except p11.PinLocked:
        raise PassphraseError(
            f"the user PIN of PKCS#11 token {token!r} is locked (too many wrong PINs)",
            hints=("the token's security officer can unlock it or set a new PIN",),
        ) from None
    except p11.PinExpired:
        raise PassphraseError(f"the user PIN of PKCS#11 token {token!r} has expired") from None
    except (p11.NoSuchToken, p11.SlotIDInvalid):
        raise NotFoundError(f"no PKCS#11 token labelled {token!r}") from None
    except p11.UserAlreadyLoggedIn:
        raise ProviderError(
            f"PKCS#11 token {token!r} is already logged in by this process: close its other "
            "session first"
        ) from None
    except (
        p11.TokenNotPresent,
        p11.DeviceRemoved,
        p11.SessionClosed,
        p11.SessionHandleInvalid,
        p11.KeyHandleInvalid,
        p11.ObjectHandleInvalid,
    ) as e:
        raise ProviderError(
            f"PKCS#11 token {token!r} went away during {action} ({type(e).__name__}): "
            "removed, re-initialised or closed"
        ) from e
    except p11.PKCS11Error as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProviderError(f"PKCS#11 token {token!r}: {action} failed: {detail}") from e


def load_module(path: str) -> Any:
    """python-pkcs11's library for the module at ``path``, loaded once per process.

    The path comes from the caller (a home's own configuration or the command line), never
    from a blob, a store or a public key file.

    Raises:
        NotFoundError: no file at ``path``.
        ProviderError: it does not load as a PKCS#11 module, or another module is loaded.
    """
    path = os.path.abspath(path)
    if path in _MODULES:
        return _MODULES[path]
    if not os.path.isfile(path):
        raise NotFoundError(f"no PKCS#11 module at {path}")
    if _MODULES:
        (other,) = _MODULES
        raise ProviderError(
            f"cannot load the PKCS#11 module {path}: this process already uses {other}"
        )
    try:
        library = pkcs11.lib(path)
    except p11.PKCS11Error as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProviderError(f"cannot load the PKCS#11 module {path}: {detail}") from e
    _MODULES[path] = library
    return library


@dataclass
class TokenSession:
    """A logged-in read-write session on one token; ``close`` logs out."""

    token: str  # the token's label
    session: Any = field(repr=False)

    def close(self) -> None:
        with _token_errors(self.token, "closing the session"):
            self.session.close()

    def __enter__(self) -> TokenSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(module: str, token: str, pin: str) -> TokenSession:
    """Log in to the token labelled ``token`` on ``module`` with the user ``pin``.

    Raises:
        PassphraseError: the PIN is wrong, invalid or locked.
        NotFoundError: no such module or token.
        ProviderError: anything else the module reports.
    """
    library = load_module(module)
    with _token_errors(token, "login"):
        session = library.get_token(token_label=token).open(user_pin=pin, rw=True)
    return TokenSession(token, session)


def _public_point(key: Any, what: str) -> bytes:
    """The 65-byte SEC1 point of a public key object (CKA_EC_POINT: a DER OCTET STRING,
    or the bare point as some tokens give it), checked to be a P-256 point."""
    data = bytes(key[Attribute.EC_POINT])
    if len(data) == len(_DER_POINT_PREFIX) + _POINT_SIZE and data.startswith(_DER_POINT_PREFIX):
        data = data[len(_DER_POINT_PREFIX) :]
    try:
        if what == "exchange":
            suites.load_exchange_public(Suite.P256, data)
        else:
            suites.load_signature_public(Suite.P256, data)
    except FormatError:
        raise ProviderError(f"the token's {what} public key is not a P-256 point") from None
    return data


class TokenContainer:
    """A ``p256`` container whose private keys are objects in a token.

    Made by :func:`generate_keys` or :func:`adopt_keys`; valid while its session is open.
    """

    def __init__(
        self,
        name: str,
        session: TokenSession,
        *,
        exchange_private: Any,
        signature_private: Any,
        exchange_public: bytes,
        signature_public: bytes,
    ) -> None:
        self._name = check_name(name)
        self._session = session
        self._exchange_private = exchange_private
        self._signature_private = signature_private
        self._exchange_public = exchange_public
        self._signature_public = signature_public
        # Computed once, as the software provider does: every blob names them.
        self._exchange_id = key_id_for(Suite.P256, KeyRole.EXCHANGE, exchange_public)
        self._signature_id = key_id_for(Suite.P256, KeyRole.SIGNATURE, signature_public)

    def __repr__(self) -> str:
        return f"TokenContainer({self._name!r}, token={self._session.token!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def suite(self) -> Suite:
        return Suite.P256

    @property
    def token(self) -> str:
        return self._session.token

    @property
    def exchange_public(self) -> bytes:
        return self._exchange_public

    @property
    def signature_public(self) -> bytes:
        return self._signature_public

    @property
    def exchange_id(self) -> KeyId:
        return self._exchange_id

    @property
    def signature_id(self) -> KeyId:
        return self._signature_id

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256 of ``message``, in the token; raw ``r || s``, low S."""
        digest = hashlib.sha256(message).digest()
        with _token_errors(self.token, "signing"):
            raw = bytes(self._signature_private.sign(digest, mechanism=Mechanism.ECDSA))
        if len(raw) != 2 * suites.P256_SCALAR_SIZE:
            raise ProviderError(f"PKCS#11 token {self.token!r} gave a malformed ECDSA signature")
        r = int.from_bytes(raw[: suites.P256_SCALAR_SIZE])
        s = int.from_bytes(raw[suites.P256_SCALAR_SIZE :])
        return suites.p256_low_s(r, s)

    def _dh(self, enc: bytes) -> bytes:
        """The raw x-coordinate of ECDH with ``enc``, by the token: a session secret that is
        read once, then destroyed."""
        with _token_errors(self.token, "key agreement"):
            shared = self._exchange_private.derive_key(
                KeyType.GENERIC_SECRET,
                8 * suites.P256_SCALAR_SIZE,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, enc),
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            try:
                return bytes(shared[Attribute.VALUE])
            finally:
                shared.destroy()

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Open ``wrapped`` (HPKE ``enc || ciphertext``, ``context`` as info); any failure
        of the ciphertext is the software provider's one VerificationError.  The token's
        own failures are ProviderError: they say nothing about the ciphertext."""
        enc, ciphertext = wrapped[: suites.P256_ENC_SIZE], wrapped[suites.P256_ENC_SIZE :]
        if p256_public_problem(enc) is not None:  # FORMAT.md 1.3, before the token sees it
            raise VerificationError(suites.UNWRAP_FAILED)
        try:
            return hpke_schedule.open_base(
                enc,
                self._exchange_public,
                self._dh,
                info=context,
                aad=b"",
                ciphertext=ciphertext,
            )
        except VerificationError:
            raise VerificationError(suites.UNWRAP_FAILED) from None


def generate_keys(session: TokenSession, name: str) -> TokenContainer:
    """Generate container ``name``'s two P-256 key pairs in the token, as token objects
    labelled :func:`key_label`: private keys private, sensitive, never extractable, the
    exchange key allowed only to derive and the signature key only to sign.

    Raises:
        ProviderError: the token already holds a key with one of the labels, or refused.
    """
    pairs: dict[KeyRole, tuple[Any, Any]] = {}
    for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
        label = key_label(name, role)
        with _token_errors(session.token, "looking for keys"):
            taken = list(session.session.get_objects({Attribute.LABEL: label}))
        if taken:
            raise ProviderError(
                f"PKCS#11 token {session.token!r} already holds a key labelled {label!r}",
                hints=("adopt it instead, or choose another container name",),
            )
    try:
        for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
            pairs[role] = _generate_pair(session, key_label(name, role), role)
        return _container(session, name, pairs)
    except BaseException:
        with contextlib.suppress(Exception):  # nothing half-made stays in the token
            for public, private in pairs.values():
                private.destroy()
                public.destroy()
        raise


def _generate_pair(session: TokenSession, label: str, role: KeyRole) -> tuple[Any, Any]:
    derive = role is KeyRole.EXCHANGE
    with _token_errors(session.token, "key generation"):
        public, private = session.session.generate_keypair(
            KeyType.EC,
            store=True,
            label=label,
            id=key_object_id(label),
            capabilities=MechanismFlag.DERIVE if derive else MechanismFlag.SIGN,
            public_template={
                Attribute.EC_PARAMS: P256_PARAMS,
                Attribute.VERIFY: not derive,
                Attribute.ENCRYPT: False,
                Attribute.WRAP: False,
                Attribute.DERIVE: False,
            },
            private_template={
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.DERIVE: derive,
                Attribute.SIGN: not derive,
                Attribute.SIGN_RECOVER: False,
                Attribute.DECRYPT: False,
                Attribute.UNWRAP: False,
            },
        )
    return public, private


def adopt_keys(
    session: TokenSession,
    name: str,
    *,
    exchange_label: str | None = None,
    signature_label: str | None = None,
) -> TokenContainer:
    """The container ``name`` over key pairs the token already holds, found by label
    (by default :func:`key_label`'s).  Each pair must be one P-256 private key and its
    public key, the private key sensitive and not extractable, and able to do its one
    operation: a trial derive and a trial signature check that the public key is its own.

    Raises:
        NotFoundError: no key with a label.
        ProviderError: several, or a key that does not qualify.
    """
    labels = {
        KeyRole.EXCHANGE: exchange_label or key_label(name, KeyRole.EXCHANGE),
        KeyRole.SIGNATURE: signature_label or key_label(name, KeyRole.SIGNATURE),
    }
    pairs = {role: _find_pair(session, label, role) for role, label in labels.items()}
    return _container(session, name, pairs)


def _find_pair(session: TokenSession, label: str, role: KeyRole) -> tuple[Any, Any]:
    found: list[Any] = []
    for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
        with _token_errors(session.token, "looking for keys"):
            objects = list(
                session.session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label})
            )
        kind = "public" if object_class is ObjectClass.PUBLIC_KEY else "private"
        if not objects:
            raise NotFoundError(
                f"PKCS#11 token {session.token!r} holds no {kind} key labelled {label!r}"
            )
        if len(objects) > 1:
            raise ProviderError(
                f"PKCS#11 token {session.token!r} holds {len(objects)} {kind} keys labelled "
                f"{label!r}: keyblob needs exactly one"
            )
        found.append(objects[0])
    public, private = found
    needed = Attribute.DERIVE if role is KeyRole.EXCHANGE else Attribute.SIGN
    with _token_errors(session.token, "reading key attributes"):
        problems = [
            text
            for bad, text in (
                (private[Attribute.KEY_TYPE] != KeyType.EC, "not an EC key"),
                (bytes(public[Attribute.EC_PARAMS]) != P256_PARAMS, "not on the P-256 curve"),
                (private[Attribute.SENSITIVE] is not True, "not sensitive"),
                (private[Attribute.EXTRACTABLE] is not False, "extractable"),
                (private[needed] is not True, f"not allowed to {needed.name.lower()}"),
            )
            if bad
        ]
    if problems:
        raise ProviderError(
            f"refusing the key labelled {label!r} on PKCS#11 token {session.token!r}: "
            f"its private key is {problems[0]}"
        )
    return public, private


def _container(
    session: TokenSession, name: str, pairs: dict[KeyRole, tuple[Any, Any]]
) -> TokenContainer:
    """The container over two pairs, once each private key is shown to be its public
    key's: a signature that verifies, an ECDH that matches software's."""
    exchange_public = _public_point(pairs[KeyRole.EXCHANGE][0], "exchange")
    signature_public = _public_point(pairs[KeyRole.SIGNATURE][0], "signature")
    container = TokenContainer(
        name,
        session,
        exchange_private=pairs[KeyRole.EXCHANGE][1],
        signature_private=pairs[KeyRole.SIGNATURE][1],
        exchange_public=exchange_public,
        signature_public=signature_public,
    )
    probe = b"keyblob/v1/pkcs11/key-pair-check"
    try:
        suites.verify(
            suites.load_signature_public(Suite.P256, signature_public),
            container.sign(probe),
            probe,
        )
    except VerificationError:
        raise ProviderError(
            f"the signature key pair on PKCS#11 token {session.token!r} does not match: "
            "its private key does not sign for its public key"
        ) from None
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    expected = ephemeral.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), exchange_public)
    )
    enc = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    if not hmac.compare_digest(container._dh(enc), expected):
        raise ProviderError(
            f"the exchange key pair on PKCS#11 token {session.token!r} does not match: "
            "its private key does not agree with its public key"
        )
    return container
