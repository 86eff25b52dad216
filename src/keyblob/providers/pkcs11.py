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

- CryptoAPI on a token container (docs/MSCAPI.md): a Windows RSA exchange key imported
  into the token as an extra key of the container (``capi_exchange`` in container.json,
  FORMAT.md 5.1.1), which opens SIMPLEBLOBs with the token's ``CKM_RSA_PKCS`` (or
  ``CKM_RSA_PKCS_OAEP`` with SHA-1) under mscapi.simpleblob's no-oracle rules.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pkcs11
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from pkcs11 import KDF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from keyblob.atomic import write_atomic
from keyblob.errors import (
    FormatError,
    KeyblobError,
    NotFoundError,
    PassphraseError,
    ProviderError,
    UsageError,
    VerificationError,
)
from keyblob.format.pubkey import p256_public_problem
from keyblob.keys import MAX_GENERATION, KeyId, KeyRole, Suite, check_name, key_id_for
from keyblob.providers import homestate, hpke_schedule, software, suites
from keyblob.providers.base import ContainerKeys, OldKey, check_old_key_room
from keyblob.trust import canonical_b64, json_int, lower_hex

if TYPE_CHECKING:
    from keyblob import mscapi

#: The curve's CKA_EC_PARAMS: the named curve secp256r1 (prime256v1), DER.
P256_PARAMS = encode_named_curve_parameters("secp256r1")
_POINT_SIZE = 65  # an uncompressed SEC1 point
_DER_POINT_PREFIX = b"\x04\x41"  # CKA_EC_POINT as a DER OCTET STRING of the point
_ROLE_WORDS = {KeyRole.EXCHANGE: "exchange", KeyRole.SIGNATURE: "signature"}

#: The modules loaded in this process, by path (python-pkcs11 initialises one library).
_MODULES: dict[str, Any] = {}


def key_label(name: str, role: KeyRole, *, base: str | None = None) -> str:
    """The CKA_LABEL keyblob gives the ``role`` key pair of container ``name``:
    ``<base>/exchange`` or ``<base>/signature``, ``base`` by default ``keyblob/<name>``."""
    return f"{base or 'keyblob/' + check_name(name)}/{_ROLE_WORDS[role]}"


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
class _Login:
    """A login of this process on one token: its session, a digest of its PIN, its users."""

    session: Any = field(repr=False)
    pin_digest: bytes = field(repr=False)
    users: int = 1


#: The logins of this process by (module, token label).  PKCS#11 logs in an application,
#: not a session (a second C_Login fails), so the containers of one token share one session;
#: a later open must give the same PIN (compared in constant time with the first's digest).
_LOGINS: dict[tuple[str, str], _Login] = {}


@dataclass
class TokenSession:
    """A logged-in read-write session on one token, shared by everything this process opened
    on that token; the last ``close`` logs out."""

    token: str  # the token's label
    session: Any = field(repr=False)
    _login_key: tuple[str, str] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        login = _LOGINS.get(self._login_key) if self._login_key else None
        if login is not None:
            login.users -= 1
            if login.users > 0:
                return
            del _LOGINS[self._login_key]  # type: ignore[arg-type]
        with _token_errors(self.token, "closing the session"):
            self.session.close()

    def __enter__(self) -> TokenSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(b"keyblob/v1/pkcs11/pin\x00" + pin.encode("utf-8")).digest()


def open_session(module: str, token: str, pin: str) -> TokenSession:
    """Log in to the token labelled ``token`` on ``module`` with the user ``pin`` (or join
    this process's login on it, if ``pin`` is the PIN it was made with).

    Raises:
        PassphraseError: the PIN is wrong, invalid or locked.
        NotFoundError: no such module or token.
        ProviderError: anything else the module reports.
    """
    library = load_module(module)
    key = (os.path.abspath(module), token)
    login = _LOGINS.get(key)
    if login is not None:
        if not hmac.compare_digest(login.pin_digest, _pin_digest(pin)):
            raise PassphraseError(f"wrong PIN for PKCS#11 token {token!r}")
        login.users += 1
        return TokenSession(token, login.session, key)
    with _token_errors(token, "login"):
        session = library.get_token(token_label=token).open(user_pin=pin, rw=True)
    _LOGINS[key] = _Login(session, _pin_digest(pin))
    return TokenSession(token, session, key)


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


class TokenKeys(ContainerKeys):
    """The two ``p256`` key pairs of a container, their private keys objects in a token:
    the Provider protocol's key operations.

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
        old: tuple[OldKey, ...] = (),
        old_exchange: dict[KeyId, Any] | None = None,
    ) -> None:
        super().__init__(check_name(name), Suite.P256, exchange_public, signature_public, old)
        self._session = session
        self._exchange_private = exchange_private
        self._signature_private = signature_private
        #: The private key objects of the old exchange keys (FORMAT.md 5.1.1 previous).
        self._old_exchange = dict(old_exchange or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, token={self._session.token!r})"

    @property
    def token(self) -> str:
        return self._session.token

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

    def _dh(self, enc: bytes, private: Any = None) -> bytes:
        """The raw x-coordinate of ECDH with ``enc``, by the token (with the exchange key,
        or the private key object ``private``): a session secret that is read once, then
        destroyed."""
        private = self._exchange_private if private is None else private
        with _token_errors(self.token, "key agreement"):
            shared = private.derive_key(
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

    def _unwrap_with(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        """Open ``wrapped`` (HPKE ``enc || ciphertext``, ``context`` as info) with exchange
        key ``key_id``; any failure of the ciphertext is the software provider's one
        VerificationError.  The token's own failures are ProviderError: they say nothing
        about the ciphertext."""
        if key_id == self._exchange_id:
            private, public = self._exchange_private, self._exchange_public
        else:
            private = self._old_exchange[key_id]
            public = next(k.public for k in self._old if k.key_id == key_id)
        enc, ciphertext = wrapped[: suites.P256_ENC_SIZE], wrapped[suites.P256_ENC_SIZE :]
        if p256_public_problem(enc) is not None:  # FORMAT.md 1.3, before the token sees it
            raise VerificationError(suites.UNWRAP_FAILED)
        try:
            return hpke_schedule.open_base(
                enc,
                public,
                lambda e: self._dh(e, private),
                info=context,
                aad=b"",
                ciphertext=ciphertext,
            )
        except VerificationError:
            raise VerificationError(suites.UNWRAP_FAILED) from None


def generate_keys(session: TokenSession, name: str, *, base: str | None = None) -> TokenKeys:
    """Generate container ``name``'s two P-256 key pairs in the token, as token objects
    labelled :func:`key_label` (with ``base``): private keys private, sensitive, never
    extractable, the exchange key allowed only to derive and the signature key only to sign.

    Raises:
        ProviderError: the token already holds a key with one of the labels, or refused.
    """
    pairs: dict[KeyRole, tuple[Any, Any]] = {}
    for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
        label = key_label(name, role, base=base)
        with _token_errors(session.token, "looking for keys"):
            taken = list(session.session.get_objects({Attribute.LABEL: label}))
        if taken:
            raise ProviderError(
                f"PKCS#11 token {session.token!r} already holds a key labelled {label!r}",
                hints=("adopt it instead, or choose another container name",),
            )
    try:
        for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
            pairs[role] = _generate_pair(session, key_label(name, role, base=base), role)
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
) -> TokenKeys:
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
) -> TokenKeys:
    """The container over two pairs, once each private key is shown to be its public
    key's: a signature that verifies, an ECDH that matches software's."""
    exchange_public = _public_point(pairs[KeyRole.EXCHANGE][0], "exchange")
    signature_public = _public_point(pairs[KeyRole.SIGNATURE][0], "signature")
    container = TokenKeys(
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


# -- containers: two key pairs and a state key in the token, their record in the home ------

#: container.json of a token container (FORMAT.md 5.1.1).
TOKEN_CONTAINER_FORMAT = software.TOKEN_CONTAINER_FORMAT
MAX_LABEL_CHARS = 256  # a key's CKA_LABEL in container.json
MAX_TOKEN_LABEL_CHARS = 32  # CK_TOKEN_INFO.label is 32 bytes
MAX_SERIAL_CHARS = 16  # CK_TOKEN_INFO.serialNumber is 16 bytes
_ID_SIZE = 16
_HMAC_SIZE = 32
_RECORD_MEMBERS = frozenset(
    ("format", "name", "suite", "created", "pkcs11", "exchange", "signature", "state")
)
#: Members container.json may have besides those it must (FORMAT.md 5.1.1 addendum).
_OPTIONAL_MEMBERS = frozenset(("capi_exchange", "previous"))
_OLD_MEMBERS = frozenset(("role", "public", "label", "id", "until"))
_TOKEN_MEMBERS = frozenset(("module", "token", "serial"))
_PAIR_MEMBERS = frozenset(("public", "label", "id"))
_KEY_MEMBERS = frozenset(("label", "id"))


_STATE_SUFFIX = "/state"


def state_key_label(base: str) -> str:
    """The CKA_LABEL of the HMAC key that authenticates a container's state."""
    return f"{base}{_STATE_SUFFIX}"


@dataclass(frozen=True)
class KeyRef:
    """A key object in the token, as container.json names it: its label and its id."""

    label: str
    id: bytes

    @classmethod
    def of(cls, label: str) -> KeyRef:
        return cls(label, key_object_id(label))

    def to_json(self) -> dict[str, str]:
        return {"label": self.label, "id": self.id.hex()}


@dataclass(frozen=True)
class TokenRecord:
    """What the home keeps of a token container (FORMAT.md 5.1.1): where the token is, which
    objects are its keys, and the public keys (``pubkey`` needs no PIN)."""

    name: str
    created: int
    module: str
    token: str
    serial: str
    exchange: KeyRef
    signature: KeyRef
    state: KeyRef
    exchange_public: bytes
    signature_public: bytes
    #: A Windows RSA exchange key imported into the token (``capi import-keypair``).
    capi_exchange: CapiKeyRef | None = None
    #: The key pairs ``keys rotate`` replaced (FORMAT.md 5.1.1 ``previous``): role, the
    #: objects, public key, when.
    previous: tuple[OldRef, ...] = ()

    def old_keys(self) -> tuple[OldKey, ...]:
        return tuple(
            OldKey(o.role, key_id_for(Suite.P256, o.role, o.public), o.public, o.until)
            for o in self.previous
        )

    @property
    def base(self) -> str:
        """The prefix of the labels keyblob gave this container's keys: its state key's
        label without ``/state``."""
        return self.state.label.removesuffix(_STATE_SUFFIX)

    def to_json(self) -> dict[str, Any]:
        def pair(ref: KeyRef, public: bytes) -> dict[str, str]:
            return {"public": base64.b64encode(public).decode("ascii"), **ref.to_json()}

        return {
            "format": TOKEN_CONTAINER_FORMAT,
            "name": self.name,
            "suite": Suite.P256.label,
            "created": self.created,
            "pkcs11": {"module": self.module, "token": self.token, "serial": self.serial},
            "exchange": pair(self.exchange, self.exchange_public),
            "signature": pair(self.signature, self.signature_public),
            "state": self.state.to_json(),
            **(
                {}
                if self.capi_exchange is None
                else {"capi_exchange": self.capi_exchange.to_json()}
            ),
            **({"previous": [o.to_json() for o in self.previous]} if self.previous else {}),
        }

    @classmethod
    def from_json(cls, doc: Any, name: str) -> TokenRecord:
        """container.json of token container ``name``, every member checked (FORMAT.md 5.1.1).

        Raises:
            FormatError: anything out of place.
        """
        damaged = FormatError(f"container {name!r}: not a valid {TOKEN_CONTAINER_FORMAT} file")
        try:
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            _exactly(doc, _RECORD_MEMBERS | (_OPTIONAL_MEMBERS & doc.keys()))
            if doc["format"] != TOKEN_CONTAINER_FORMAT or doc["name"] != name:
                raise ValueError("format or name")
            if doc["suite"] != Suite.P256.label:
                raise ValueError("suite")
            created = json_int(doc["created"], 0, MAX_GENERATION)
            where = _exactly(doc["pkcs11"], _TOKEN_MEMBERS)
            module = _text(where["module"], 4096)
            if not os.path.isabs(module):
                raise ValueError("a relative module path")
            refs: dict[str, KeyRef] = {}
            publics: dict[str, bytes] = {}
            for role in ("exchange", "signature", "state"):
                entry = _exactly(doc[role], _KEY_MEMBERS if role == "state" else _PAIR_MEMBERS)
                refs[role] = KeyRef(
                    _text(entry["label"], MAX_LABEL_CHARS), lower_hex(entry["id"], _ID_SIZE)
                )
                if role != "state":
                    publics[role] = canonical_b64(entry["public"])
            suites.check_public_keys(Suite.P256, publics["exchange"], publics["signature"])
            previous = _old_refs(doc, name, publics)
            return cls(
                name=name,
                created=created,
                module=module,
                token=_text(where["token"], MAX_TOKEN_LABEL_CHARS),
                serial=_text(where["serial"], MAX_SERIAL_CHARS),
                exchange=refs["exchange"],
                signature=refs["signature"],
                state=refs["state"],
                exchange_public=publics["exchange"],
                signature_public=publics["signature"],
                capi_exchange=(
                    CapiKeyRef.from_json(doc["capi_exchange"]) if "capi_exchange" in doc else None
                ),
                previous=previous,
            )
        except (KeyError, TypeError, ValueError, FormatError):
            raise damaged from None


@dataclass(frozen=True)
class OldRef:
    """An entry of ``previous`` (FORMAT.md 5.1.1): a key pair ``keys rotate`` replaced,
    still in the token until ``keys forget-old``."""

    role: KeyRole
    ref: KeyRef
    public: bytes
    until: int

    def to_json(self) -> dict[str, Any]:
        return {
            "role": _ROLE_WORDS[self.role],
            "public": base64.b64encode(self.public).decode("ascii"),
            **self.ref.to_json(),
            "until": self.until,
        }


def _old_refs(doc: dict[str, Any], name: str, current: dict[str, bytes]) -> tuple[OldRef, ...]:
    """``previous`` of a token container file, every member checked: valid P-256 points,
    no key twice (among the old ones and the current ones of its role).

    Raises:
        FormatError, ValueError: anything out of place.
    """
    out: list[OldRef] = []
    seen = {(KeyRole.EXCHANGE, current["exchange"]), (KeyRole.SIGNATURE, current["signature"])}
    for role, entry, until in software.old_entries(doc, _OLD_MEMBERS, name):
        public = canonical_b64(entry["public"])
        if role is KeyRole.EXCHANGE:
            suites.load_exchange_public(Suite.P256, public)
        else:
            suites.load_signature_public(Suite.P256, public)
        if (role, public) in seen:
            raise ValueError("a previous key twice")
        seen.add((role, public))
        ref = KeyRef(_text(entry["label"], MAX_LABEL_CHARS), lower_hex(entry["id"], _ID_SIZE))
        out.append(OldRef(role, ref, public, until))
    return tuple(out)


def _exactly(value: Any, members: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or value.keys() != members:
        raise ValueError("members")
    return value


def _text(value: Any, most: int) -> str:
    """A non-empty string of at most ``most`` characters with no control character."""
    if not isinstance(value, str) or not 0 < len(value) <= most:
        raise ValueError("text")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("a control character")
    return value


class TokenContainer(TokenKeys):
    """An unlocked token container (implements ``Provider``): the key pairs of
    :class:`TokenKeys`, and the authenticated state in the home (homestate.py), whose MAC
    is HMAC-SHA256 (``CKM_SHA256_HMAC``) under a secret key that never leaves the token."""

    def __init__(self, keys: TokenKeys, record: TokenRecord, state_key: Any, folder: Path) -> None:
        super().__init__(
            keys.name,
            keys._session,
            exchange_private=keys._exchange_private,
            signature_private=keys._signature_private,
            exchange_public=keys.exchange_public,
            signature_public=keys.signature_public,
            old=keys.old_keys,
            old_exchange=keys._old_exchange,
        )
        self.record = record
        self._state_key = state_key
        self._folder = folder
        self._capi_key: _TokenRsaKey | None = None
        self._state = homestate.ContainerState(folder, self._name, Suite.P256, self._mac)

    def __reduce__(self) -> Any:
        raise TypeError("an unlocked container cannot be pickled")

    def _mac(self, data: bytes) -> bytes:
        with _token_errors(self.token, "authenticating the state"):
            tag = bytes(self._state_key.sign(data, mechanism=Mechanism.SHA256_HMAC))
        if len(tag) != _HMAC_SIZE:
            raise ProviderError(f"PKCS#11 token {self.token!r} gave a malformed HMAC")
        return tag

    # -- keys rotate / keys forget-old (FORMAT.md 5.1.1 previous) ------------------------

    def _write_record(self, record: TokenRecord) -> None:
        """Replace container.json with ``record`` (atomically: the old file or the new).

        Raises:
            ProviderError: it could not be written.
        """
        try:
            write_atomic(
                self._folder / "container.json",
                json.dumps(record.to_json(), indent=2).encode() + b"\n",
            )
        except OSError as e:
            raise ProviderError(f"cannot write container {self._name!r}: {e.strerror}") from e

    def rotate_keys(self, roles: tuple[KeyRole, ...], *, now: int) -> tuple[OldKey, ...]:
        """New P-256 key pairs for ``roles``, generated in the token as ``init`` does
        (labels under a new random base, so never an old pair's); the replaced pairs stay in
        the token and move to ``previous``.  One atomic write of container.json; if it
        fails, the new objects are destroyed.

        Raises:
            UsageError: no role, or too many old key pairs kept already.
            ProviderError: the token refused, or container.json could not be written.
        """
        check_old_key_room(self._name, len(self.record.previous), roles)
        base = f"keyblob/{self._name}/{secrets.token_hex(4)}"
        made: dict[KeyRole, tuple[Any, Any]] = {}
        try:
            for role in roles:
                made[role] = _generate_pair(
                    self._session, key_label(self._name, role, base=base), role
                )
            record = self.record
            replaced: list[OldRef] = []
            changes: dict[str, Any] = {}
            for role, (public_obj, _) in made.items():
                public = _public_point(public_obj, _ROLE_WORDS[role])
                word = _ROLE_WORDS[role]
                replaced.append(
                    OldRef(role, getattr(record, word), getattr(record, f"{word}_public"), now)
                )
                changes[word] = KeyRef.of(key_label(self._name, role, base=base))
                changes[f"{word}_public"] = public
            record = dataclasses.replace(record, previous=(*record.previous, *replaced), **changes)
            self._write_record(record)
        except BaseException:
            _destroy([obj for pair in made.values() for obj in pair])
            raise
        self.record = record
        for role, (_, private) in made.items():
            if role is KeyRole.EXCHANGE:
                self._old_exchange[self._exchange_id] = self._exchange_private
                self._exchange_private = private
            else:
                self._signature_private = private
            self._set_public(role, getattr(record, f"{_ROLE_WORDS[role]}_public"))
        self._old = record.old_keys()
        return tuple(
            OldKey(o.role, key_id_for(Suite.P256, o.role, o.public), o.public, o.until)
            for o in replaced
        )

    def forget_old_keys(self) -> tuple[OldKey, ...]:
        """Remove ``previous`` from container.json (one atomic write), then destroy the old
        objects in the token (the record never names an object that is gone).

        Raises:
            ProviderError: container.json could not be written, or the token refused to
                destroy an object (the record no longer names it either way).
        """
        old, refs = self._old, self.record.previous
        if not refs:
            return ()
        record = dataclasses.replace(self.record, previous=())
        self._write_record(record)
        self.record = record
        self._old, self._old_exchange = (), {}
        for o in refs:
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                with _token_errors(self.token, "destroying an old key"):
                    for obj in self._session.session.get_objects(
                        {
                            Attribute.CLASS: object_class,
                            Attribute.LABEL: o.ref.label,
                            Attribute.ID: o.ref.id,
                        }
                    ):
                        obj.destroy()
        return old

    # -- CryptoAPI (docs/MSCAPI.md): the imported Windows exchange key opens SIMPLEBLOBs -----

    def capi_unwrap(
        self, simpleblob: bytes, *, authenticated: bool, oaep: bool = False
    ) -> mscapi.CapiKey:
        """CryptImportKey(SIMPLEBLOB) with the container's CryptoAPI exchange key, in the
        token (``CKM_RSA_PKCS``; ``CKM_RSA_PKCS_OAEP`` with SHA-1 when ``oaep``), without a
        padding oracle: as :func:`keyblob.mscapi.unwrap_simpleblob`, whose rules apply
        unchanged (a blob that does not open gives a random key unless ``authenticated``).

        Raises:
            UsageError: no CryptoAPI exchange key was imported (``capi import-keypair``).
            NotFoundError, ProviderError: the key is gone from the token, or the token failed.
            FormatError, UnsupportedError, VerificationError: as ``unwrap_simpleblob``.
        """
        from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

        return mscapi.unwrap_simpleblob(
            simpleblob, self._capi_exchange_key(), authenticated=authenticated, oaep=oaep
        )

    def capi_sign(self, data: bytes, *, hash_alg: mscapi.AlgId, legacy: bool = False) -> bytes:
        """Refused: a token container has no CryptoAPI signature key (AT_SIGNATURE).

        Raises:
            UsageError: always.
        """
        raise UsageError(
            f"container {self._name!r} keeps its keys in PKCS#11 token {self.token!r} and has "
            "no CryptoAPI signature key: signing a SIMPLEBLOB (CryptSignHash) needs an "
            "rsa-suite software container (keyblob init --suite rsa)"
        )

    def capi_import_key_pair(self, role: KeyRole, key: rsa.RSAPrivateKey, *, force: bool) -> str:
        """Import ``key`` (validated when it was loaded) into the token as this container's
        CryptoAPI exchange key (FORMAT.md 5.1.1 addendum): a private, sensitive, never
        extractable token object allowed only to decrypt, and its public key object, both
        labelled ``<base>/capi-exchange``; then recorded in container.json.  A key already
        imported is replaced only with ``force`` (SIMPLEBLOBs wrapped for it stop opening,
        and it is destroyed in the token).  Returns where the key now lives, in words.

        Raises:
            UsageError: ``role`` is the signature key, a key keyblob does not accept, or a
                CryptoAPI exchange key exists and ``force`` is False.
            ProviderError: the token refused, or container.json could not be written;
                nothing is left behind in the token.
        """
        if role is not KeyRole.EXCHANGE:
            raise UsageError(
                f"container {self._name!r} keeps its keys in PKCS#11 token {self.token!r}: it "
                "takes a CryptoAPI exchange key (AT_KEYEXCHANGE, --slot exchange) only"
            )
        from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

        # The key only reads what Windows wrapped for it: CryptoAPI's rule for reading
        # (docs/MSCAPI.md 5: under 1024 bits refused, under 2048 warned), not the rsa suite's.
        mscapi.check_rsa_size(
            key, mscapi.RsaUse.READ, legacy=False, role=CAPI_ROLE, action="importing it"
        )
        public = suites.public_bytes(key)
        old = self.record.capi_exchange
        where = f"in PKCS#11 token {self.token!r}, sensitive, not extractable"
        if old is not None and hmac.compare_digest(old.public, public):
            try:
                self._capi_exchange_key()  # still in the token, and the same key
                return where
            except NotFoundError:
                old = None  # deleted from the token: imported again under the same record
        if old is not None and not force:
            raise UsageError(
                f"container {self._name!r} already holds a CryptoAPI exchange key "
                f"({old.label!r}): SIMPLEBLOBs wrapped for it would stop opening; "
                "use --force to replace it (it is destroyed in the token)"
            )
        ref = CapiKeyRef(capi_key_label(self.record.base), capi_key_id(public), public)
        made = _create_rsa_pair(self._session, ref, key)
        try:
            token_key = _TokenRsaKey(self.token, made[1], _rsa_public(public))
            token_key.check()
            record = dataclasses.replace(self.record, capi_exchange=ref)
            self._write_record(record)
        except BaseException:
            _destroy(list(made))
            raise
        self.record = record
        self._capi_key = token_key
        if old is not None:  # best effort: the record no longer names it
            with contextlib.suppress(KeyblobError):
                _destroy(
                    [
                        _one(self._session, ObjectClass.PRIVATE_KEY, old.ref, "key"),
                        _one(self._session, ObjectClass.PUBLIC_KEY, old.ref, "key"),
                    ]
                )
        return where

    def _capi_exchange_key(self) -> _TokenRsaKey:
        """The imported CryptoAPI exchange key, found in the token on first use and checked
        to be the recorded one (its modulus and exponent)."""
        if self._capi_key is not None:
            return self._capi_key
        ref = self.record.capi_exchange
        if ref is None:
            raise UsageError(
                f"container {self._name!r} (PKCS#11 token {self.token!r}) holds no CryptoAPI "
                "exchange key: import the Windows key pair into the token first "
                "(keyblob capi import-keypair PRIVATEKEYBLOB)"
            )
        private = _one(self._session, ObjectClass.PRIVATE_KEY, ref.ref, CAPI_ROLE)
        public = _rsa_public(ref.public)
        numbers = public.public_numbers()
        with _token_errors(self.token, "reading key attributes"):
            found = (
                int.from_bytes(bytes(private[Attribute.MODULUS])),
                int.from_bytes(bytes(private[Attribute.PUBLIC_EXPONENT])),
            )
        if found != (numbers.n, numbers.e):
            raise ProviderError(
                f"the key labelled {ref.label!r} on PKCS#11 token {self.token!r} is not "
                f"container {self._name!r}'s CryptoAPI exchange key: the token's keys were "
                "replaced"
            )
        self._capi_key = _TokenRsaKey(self.token, private, public)
        return self._capi_key

    def close(self) -> None:
        """Close the state database and log out of the token."""
        self._state.close()
        self._session.close()


def _generate_state_key(session: TokenSession, label: str) -> Any:
    """A 256-bit HMAC key in the token: private, sensitive, never extractable, allowed only
    to sign and verify (CKM_SHA256_HMAC)."""
    with _token_errors(session.token, "key generation"):
        return session.session.generate_key(
            KeyType.GENERIC_SECRET,
            8 * _HMAC_SIZE,
            label=label,
            id=key_object_id(label),
            store=True,
            mechanism=Mechanism.GENERIC_SECRET_KEY_GEN,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            template={
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.VERIFY: True,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
            },
        )


def _one(session: TokenSession, object_class: ObjectClass, ref: KeyRef, what: str) -> Any:
    """The one object of ``object_class`` with ``ref``'s label and id."""
    with _token_errors(session.token, "looking for keys"):
        found = list(
            session.session.get_objects(
                {Attribute.CLASS: object_class, Attribute.LABEL: ref.label, Attribute.ID: ref.id}
            )
        )
    if not found:
        raise NotFoundError(
            f"PKCS#11 token {session.token!r} holds no {what} labelled {ref.label!r}",
            hints=("the token was re-initialised or the key deleted: its keys are gone",),
        )
    if len(found) > 1:
        raise ProviderError(
            f"PKCS#11 token {session.token!r} holds {len(found)} objects labelled "
            f"{ref.label!r}: keyblob needs exactly one"
        )
    return found[0]


def token_serial(module: str, token: str) -> str:
    """The serial number of the token labelled ``token`` (no login needed).

    Raises:
        NotFoundError: no such module or token.
        ProviderError: anything else the module reports.
    """
    library = load_module(module)
    with _token_errors(token, "finding the token"):
        return _serial_text(library.get_token(token_label=token).serial)


def find_token(
    module: str,
    *,
    label: str | None = None,
    serial: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
) -> tuple[str, str]:
    """The (label, serial) of the one token on ``module`` that matches every given field
    (a ``pkcs11:`` URI's token attributes).

    Raises:
        NotFoundError: no token matches.
        ProviderError: several do, or the module failed.
    """
    library = load_module(module)
    given = {"token": label, "serial": serial, "manufacturer": manufacturer, "model": model}
    described = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
    with _token_errors(label or serial or "?", "finding the token"):
        tokens = list(library.get_tokens(token_label=label) if label else library.get_tokens())
        found = [
            (str(t.label), _serial_text(t.serial))
            for t in tokens
            if (serial is None or _serial_text(t.serial) == serial)
            and (manufacturer is None or str(t.manufacturer_id).strip() == manufacturer)
            and (model is None or str(t.model).strip() == model)
        ]
    if not found:
        raise NotFoundError(f"no PKCS#11 token with {described} on {module}")
    if len(found) > 1:
        raise ProviderError(
            f"{len(found)} PKCS#11 tokens match {described}: name one by its serial"
        )
    return found[0]


def _serial_text(raw: Any) -> str:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    return text.strip() or "-"


def new_container(
    folder: Path,
    name: str,
    *,
    module: str,
    token: str,
    pin: str,
    adopt: tuple[str, str] | None = None,
    serial: str | None = None,
) -> tuple[TokenRecord, TokenContainer, Callable[[], None]]:
    """Make container ``name``'s keys in the token: two P-256 pairs generated there (or,
    with ``adopt``, the pairs labelled (exchange, signature) that it holds already), and a
    new state key.  The caller writes the record to container.json and then the state; if
    that fails, it calls the third value returned, which destroys what this made in the
    token (never an adopted key) and logs out.  ``serial``: the token must have it.

    Raises:
        as :func:`open_session`, :func:`generate_keys` and :func:`adopt_keys`.
    """
    check_name(name)
    found = token_serial(module, token)
    if serial is not None and found != serial:
        raise NotFoundError(f"PKCS#11 token {token!r} has serial {found}, not {serial}")
    serial = found
    session = open_session(module, token, pin)
    base = f"keyblob/{name}/{secrets.token_hex(4)}"  # two homes may name a container alike
    made: list[Any] = []
    try:
        if adopt is None:
            keys = generate_keys(session, name, base=base)
            made += [keys._exchange_private, keys._signature_private]
            for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
                label = key_label(name, role, base=base)
                made.append(_one(session, ObjectClass.PUBLIC_KEY, KeyRef.of(label), "key"))
            refs = {r: KeyRef.of(key_label(name, r, base=base)) for r in _ROLE_WORDS}
        else:
            keys = adopt_keys(session, name, exchange_label=adopt[0], signature_label=adopt[1])
            refs = {
                role: KeyRef(label, _key_id(session, label))
                for role, label in zip((KeyRole.EXCHANGE, KeyRole.SIGNATURE), adopt, strict=True)
            }
        state_ref = KeyRef.of(state_key_label(base))
        state_key = _generate_state_key(session, state_ref.label)
        made.append(state_key)
        record = TokenRecord(
            name=name,
            created=int(time.time()),
            module=os.path.abspath(module),
            token=token,
            serial=serial,
            exchange=refs[KeyRole.EXCHANGE],
            signature=refs[KeyRole.SIGNATURE],
            state=state_ref,
            exchange_public=keys.exchange_public,
            signature_public=keys.signature_public,
        )
        container = TokenContainer(keys, record, state_key, folder)
    except BaseException:
        _destroy(made)
        session.close()
        raise

    def undo() -> None:
        _destroy(made)
        with contextlib.suppress(Exception):
            session.close()

    return record, container, undo


def _key_id(session: TokenSession, label: str) -> bytes:
    """The CKA_ID of the private key labelled ``label`` (an adopted key keeps its own)."""
    with _token_errors(session.token, "reading key attributes"):
        (private,) = session.session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}
        )
        key_id = bytes(private[Attribute.ID])
    if len(key_id) != _ID_SIZE:
        raise ProviderError(
            f"refusing the key labelled {label!r} on PKCS#11 token {session.token!r}: its "
            f"CKA_ID is {len(key_id)} bytes, keyblob records keys by a {_ID_SIZE}-byte id",
            hints=(f"set one: pkcs11-tool --set-id <{_ID_SIZE} bytes hex> on both objects",),
        )
    return key_id


def _destroy(objects: list[Any]) -> None:
    """Destroy the objects :func:`new_container` made, best effort (nothing half-made
    stays in the token)."""
    for obj in objects:
        with contextlib.suppress(Exception):
            obj.destroy()


def open_container(folder: Path, record: TokenRecord, pin: str) -> TokenContainer:
    """Log in to the container's token and find its keys: the token must be the one the
    container was made on (its serial number), and its key objects those recorded (label,
    id and public key).

    Raises:
        PassphraseError: a wrong, expired or locked PIN.
        NotFoundError: no such module, token or key; a token re-initialised (another serial).
        ProviderError: keys that are not the recorded ones, or another failure of the token.
    """
    serial = token_serial(record.module, record.token)
    if not hmac.compare_digest(serial.encode(), record.serial.encode()):
        raise NotFoundError(
            f"PKCS#11 token {record.token!r} is not the one container {record.name!r} was made "
            f"on (serial {serial}, expected {record.serial}): it was re-initialised or replaced",
            hints=("the container's keys were in the old token: restore that token",),
        )
    session = open_session(record.module, record.token, pin)
    try:
        pairs = {}
        for role, ref, public in (
            (KeyRole.EXCHANGE, record.exchange, record.exchange_public),
            (KeyRole.SIGNATURE, record.signature, record.signature_public),
        ):
            public_key = _one(session, ObjectClass.PUBLIC_KEY, ref, "public key")
            if _public_point(public_key, _ROLE_WORDS[role]) != public:
                raise ProviderError(
                    f"the key labelled {ref.label!r} on PKCS#11 token {record.token!r} is not "
                    f"container {record.name!r}'s: the token's keys were replaced"
                )
            pairs[role] = _one(session, ObjectClass.PRIVATE_KEY, ref, "private key")
        old_exchange: dict[KeyId, Any] = {}
        for old in record.previous:  # each still in the token, with its recorded key
            public_key = _one(session, ObjectClass.PUBLIC_KEY, old.ref, "old public key")
            if _public_point(public_key, _ROLE_WORDS[old.role]) != old.public:
                raise ProviderError(
                    f"the key labelled {old.ref.label!r} on PKCS#11 token {record.token!r} is "
                    f"not container {record.name!r}'s: the token's keys were replaced"
                )
            private = _one(session, ObjectClass.PRIVATE_KEY, old.ref, "old private key")
            if old.role is KeyRole.EXCHANGE:
                old_exchange[key_id_for(Suite.P256, old.role, old.public)] = private
        state_key = _one(session, ObjectClass.SECRET_KEY, record.state, "state key")
        keys = TokenKeys(
            record.name,
            session,
            exchange_private=pairs[KeyRole.EXCHANGE],
            signature_private=pairs[KeyRole.SIGNATURE],
            exchange_public=record.exchange_public,
            signature_public=record.signature_public,
            old=record.old_keys(),
            old_exchange=old_exchange,
        )
        return TokenContainer(keys, record, state_key, folder)
    except BaseException:
        with contextlib.suppress(Exception):
            session.close()
        raise


#: The OAEP parameters of keyblob's rsa suite that a token must honour to open its wraps
#: (FORMAT.md 1.2): SHA-256, MGF1-SHA-256, a label.  Tried with this label.
_OAEP_PROBE_LABEL = b"keyblob/v1/pkcs11/oaep-probe"


def rsa_oaep_problem(module: str, token: str, pin: str) -> str | None:
    """Why the token cannot open the rsa suite's wrap (RSA-OAEP with SHA-256, MGF1-SHA-256
    and the header as label), or None if it can: found by trying, with a throwaway session
    key pair, what the suite needs (SoftHSM2 2.6.1 lists CKM_RSA_PKCS_OAEP but takes only
    SHA-1 with no label).

    Raises:
        as :func:`open_session`.
    """
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: PLC0415

    session = open_session(module, token, pin)
    try:
        with _token_errors(token, "trying RSA-OAEP"):
            public, private = session.session.generate_keypair(
                KeyType.RSA,
                2048,
                store=False,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT])),
                int.from_bytes(bytes(public[Attribute.MODULUS])),
            )
        secret = secrets.token_bytes(32)
        sha256 = hashes.SHA256()
        ciphertext = numbers.public_key().encrypt(
            secret, padding.OAEP(padding.MGF1(sha256), sha256, _OAEP_PROBE_LABEL)
        )
        try:
            plain = bytes(
                private.decrypt(
                    ciphertext,
                    mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=(Mechanism.SHA256, pkcs11.MGF.SHA256, _OAEP_PROBE_LABEL),
                )
            )
        except p11.PKCS11Error as e:
            return f"it refused RSA-OAEP with SHA-256 and a label ({type(e).__name__})"
        if not hmac.compare_digest(plain, secret):
            return "its RSA-OAEP with SHA-256 and a label gave a wrong plaintext"
        return None
    finally:
        with contextlib.suppress(Exception):
            session.close()


# -- CryptoAPI: a Windows RSA exchange key imported into the token (FORMAT.md 5.1.1) -------

#: The ciphertext-dependent failures a token may report for RSA decryption (bad padding
#: most of all; SoftHSM2 2.6.1 says CKR_GENERAL_ERROR, others CKR_ENCRYPTED_DATA_INVALID).
#: Each becomes the one ValueError mscapi.unwrap_simpleblob turns into its random stand-in:
#: which one the token said must not reach the caller (docs/MSCAPI.md, oracle-free unwrap).
#: The others (session, key handle, permissions) do not depend on the ciphertext and stay
#: ProviderError.
_DECRYPT_FAILURES = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
    p11.GeneralError,
    p11.FunctionFailed,
    p11.ArgumentsBad,
)


def capi_key_label(base: str) -> str:
    """The CKA_LABEL of a container's imported CryptoAPI exchange key pair."""
    return f"{base}/capi-exchange"


def capi_key_id(public: bytes) -> bytes:
    """The CKA_ID of an imported CryptoAPI key pair: 16 bytes of SHA-256 of its public key
    (DER SubjectPublicKeyInfo), so that a replacement never shares the old pair's id."""
    return hashlib.sha256(public).digest()[:_ID_SIZE]


#: The imported key in messages about its size.
CAPI_ROLE = "CryptoAPI exchange key"


def _rsa_public(public: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(public)
    except (ValueError, UnsupportedAlgorithm):
        raise FormatError("capi_exchange.public: not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise FormatError("capi_exchange.public: not an RSA public key")
    return key


def _spki(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class CapiKeyRef:
    """The ``capi_exchange`` member of container.json: the imported key pair's objects
    (label and id) and its public key (DER SubjectPublicKeyInfo)."""

    label: str
    id: bytes
    public: bytes

    @property
    def ref(self) -> KeyRef:
        return KeyRef(self.label, self.id)

    def to_json(self) -> dict[str, str]:
        return {"public": base64.b64encode(self.public).decode("ascii"), **self.ref.to_json()}

    @classmethod
    def from_json(cls, entry: Any) -> CapiKeyRef:
        """Parsed and checked (FORMAT.md 5.1.1): a key the rsa suite accepts, canonical DER,
        and the id its public key gives.

        Raises:
            ValueError, FormatError: anything out of place.
        """
        from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

        entry = _exactly(entry, _PAIR_MEMBERS)
        public = canonical_b64(entry["public"])
        key = _rsa_public(public)
        if _spki(key) != public:
            raise ValueError("not canonical DER")
        if key.key_size < mscapi.REFUSED_RSA_BELOW:
            raise ValueError("an RSA key too small to read with")
        key_id = lower_hex(entry["id"], _ID_SIZE)
        if key_id != capi_key_id(public):
            raise ValueError("an id that is not its public key's")
        return cls(_text(entry["label"], MAX_LABEL_CHARS), key_id, public)


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1)


def _create_rsa_pair(
    session: TokenSession, ref: CapiKeyRef, key: rsa.RSAPrivateKey
) -> tuple[Any, Any]:
    """C_CreateObject for ``key``'s public and private objects, labelled and identified as
    ``ref`` says: the private key private, sensitive, not extractable, allowed only to
    decrypt; the public key allowed only to encrypt.

    Raises:
        ProviderError: the token already holds an object with that label and id, or refused.
    """
    with _token_errors(session.token, "looking for keys"):
        taken = list(
            session.session.get_objects({Attribute.LABEL: ref.label, Attribute.ID: ref.id})
        )
    if taken:
        raise ProviderError(
            f"PKCS#11 token {session.token!r} already holds an object labelled {ref.label!r} "
            "with this key's id: left over from an interrupted import?",
            hints=("delete it (pkcs11-tool --delete-object), then import again",),
        )
    numbers = key.private_numbers()
    public_numbers = numbers.public_numbers
    common = {
        Attribute.KEY_TYPE: KeyType.RSA,
        Attribute.TOKEN: True,
        Attribute.LABEL: ref.label,
        Attribute.ID: ref.id,
        Attribute.MODULUS: _int_bytes(public_numbers.n),
        Attribute.PUBLIC_EXPONENT: _int_bytes(public_numbers.e),
    }
    made: list[Any] = []
    try:
        with _token_errors(session.token, "importing the key"):
            made.append(
                session.session.create_object(
                    {
                        **common,
                        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                        Attribute.PRIVATE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.VERIFY: False,
                        Attribute.VERIFY_RECOVER: False,
                        Attribute.WRAP: False,
                        Attribute.DERIVE: False,
                    }
                )
            )
            made.append(
                session.session.create_object(
                    {
                        **common,
                        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.DECRYPT: True,
                        Attribute.SIGN: False,
                        Attribute.SIGN_RECOVER: False,
                        Attribute.UNWRAP: False,
                        Attribute.DERIVE: False,
                        Attribute.PRIVATE_EXPONENT: _int_bytes(numbers.d),
                        Attribute.PRIME_1: _int_bytes(numbers.p),
                        Attribute.PRIME_2: _int_bytes(numbers.q),
                        Attribute.EXPONENT_1: _int_bytes(numbers.dmp1),
                        Attribute.EXPONENT_2: _int_bytes(numbers.dmq1),
                        Attribute.COEFFICIENT: _int_bytes(numbers.iqmp),
                    }
                )
            )
    except BaseException:
        _destroy(made)
        raise
    return made[0], made[1]


class _TokenRsaKey:
    """A token's RSA private key presented as mscapi.unwrap_simpleblob needs it
    (``mscapi.RsaDecryptKey``): decryption runs in the token, and every failure that may
    depend on the ciphertext is the one ValueError (see ``_DECRYPT_FAILURES``)."""

    def __init__(self, token: str, private: Any, public: rsa.RSAPublicKey) -> None:
        self._token = token
        self._private = private
        self._public = public

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token={self._token!r}, bits={self.key_size})"

    def __reduce__(self) -> Any:
        raise TypeError("a token key cannot be pickled")

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def decrypt(self, ciphertext: bytes, padding: rsa_padding.AsymmetricPadding) -> bytes:
        """RSA decryption in the token.

        Raises:
            ValueError: the token could not decrypt ``ciphertext`` (one message, whatever
                the token said).
            ProviderError: a padding this adapter does not carry to the token, or a failure
                of the token that does not depend on the ciphertext.
        """
        mechanism, parameter = _mechanism(padding)
        try:
            with _token_errors(self._token, "RSA decryption"):
                try:
                    return bytes(
                        self._private.decrypt(
                            ciphertext, mechanism=mechanism, mechanism_param=parameter
                        )
                    )
                except _DECRYPT_FAILURES:
                    raise _Undecryptable from None
        except _Undecryptable:
            raise ValueError("decryption failed") from None

    def check(self) -> None:
        """A trial decryption of a random secret encrypted here to the public key: the
        token's object is this key and may decrypt with PKCS#1 v1.5.

        Raises:
            ProviderError: it is not, or may not.
        """
        secret = secrets.token_bytes(32)
        probe = self._public.encrypt(secret, rsa_padding.PKCS1v15())
        try:
            plain = self.decrypt(probe, rsa_padding.PKCS1v15())
        except ValueError:
            plain = b""
        if not hmac.compare_digest(plain, secret):
            raise ProviderError(
                f"PKCS#11 token {self._token!r} does not decrypt with the imported RSA key "
                "(CKM_RSA_PKCS)"
            )


class _Undecryptable(Exception):
    """Inside :meth:`_TokenRsaKey.decrypt`: the token could not decrypt (not an error that
    leaves it)."""


def _mechanism(padding: rsa_padding.AsymmetricPadding) -> tuple[Mechanism, Any]:
    """The token's mechanism for one of the two paddings CryptoAPI SIMPLEBLOBs use."""
    if isinstance(padding, rsa_padding.PKCS1v15):
        return Mechanism.RSA_PKCS, None
    if (
        isinstance(padding, rsa_padding.OAEP)
        and isinstance(padding.algorithm, hashes.SHA1)
        and isinstance(padding.mgf, rsa_padding.MGF1)
        and isinstance(padding.mgf._algorithm, hashes.SHA1)
        and not padding._label
    ):
        return Mechanism.RSA_PKCS_OAEP, (Mechanism.SHA_1, pkcs11.MGF.SHA1, None)
    raise ProviderError(f"no PKCS#11 mechanism for RSA padding {padding.name}")
