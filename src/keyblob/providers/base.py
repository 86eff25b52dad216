"""The small interface every provider (software home, PKCS#11 token) implements, and the
CryptoAPI operations some containers add to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from keyblob.errors import UsageError, VerificationError
from keyblob.keys import KeyId, KeyRole, Suite, key_id_for
from keyblob.trust import State

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyblob import mscapi
    from keyblob.providers.homestate import ContainerState


#: What unwrap_as raises for a key id that is not one of the container's exchange keys.
NOT_OWN_EXCHANGE = "container {name!r} holds no exchange key kx-{key_id}"
#: FORMAT.md 5.1.2 ``previous``: at most this many old key pairs are kept (a 4096-bit RSA
#: entry is about 4 KB of the file's 65536 bytes); rotating again needs keys forget-old.
MAX_OLD_KEYS = 8


def check_old_key_room(name: str, kept: int, roles: Sequence[KeyRole]) -> None:
    """Refuse a rotation of ``roles`` that would keep more than MAX_OLD_KEYS old pairs in
    container ``name``, which keeps ``kept`` already.  Every rotating provider checks it,
    and so does :func:`keyblob.blobs.rotate_own_keys`, before it writes the state.

    Raises:
        UsageError: no role, or too many old pairs.
    """
    if not roles:
        raise UsageError("nothing to rotate: name --exchange and/or --signature")
    if kept + len(roles) > MAX_OLD_KEYS:
        raise UsageError(
            f"container {name!r} keeps {kept} old keys already (at most {MAX_OLD_KEYS}): "
            "run keyblob rewrap --all, then keyblob keys forget-old"
        )


@dataclass(frozen=True)
class OldKey:
    """A key pair the container used before ``keys rotate`` (FORMAT.md 5.1 ``previous``):
    its role, key id and public key, and when it was replaced (Unix seconds).  Its private
    half stays in the container until ``keys forget-old``."""

    role: KeyRole
    key_id: KeyId
    public: bytes
    until: int


class Provider(Protocol):
    """An unlocked container: two key pairs whose private halves never leave it in the clear,
    and the authenticated state (trusted signers, high-water marks) that goes with them."""

    @property
    def name(self) -> str: ...

    @property
    def suite(self) -> Suite: ...

    @property
    def exchange_public(self) -> bytes: ...

    @property
    def signature_public(self) -> bytes: ...

    @property
    def exchange_id(self) -> KeyId: ...

    @property
    def signature_id(self) -> KeyId: ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` with the container's signature key."""
        ...

    @property
    def exchange_ids(self) -> tuple[KeyId, ...]:
        """The key ids of every exchange key the container can open with: the current one
        first, then those ``keys rotate`` replaced and ``keys forget-old`` has not removed."""
        ...

    @property
    def old_keys(self) -> tuple[OldKey, ...]:
        """The key pairs ``keys rotate`` replaced that the container still holds."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Open a key wrapped to the exchange key; raises VerificationError on any failure."""
        ...

    def unwrap_as(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        """Open a key wrapped to the exchange key ``key_id`` (one of :attr:`exchange_ids`).

        Raises:
            VerificationError: not one of this container's exchange keys, or any failure
                to open.
        """
        ...

    def state(self) -> State:
        """The authenticated state as it is now; raises VerificationError if it was edited."""
        ...

    def update_state(self, change: Callable[[State], State]) -> State:
        """Apply ``change`` to the state under a lock and store it atomically.

        ``change`` runs while the lock is held, so it may check the state and act on it
        (write the store) with no other process in between.  If it raises, the state is
        not written and the exception propagates.
        """
        ...


class ContainerKeys:
    """What every provider's container shows the same way: its name, suite, two public keys
    and their key ids (computed once, as every blob names them), and its authenticated state
    (``_state``, a homestate.ContainerState the subclass makes with its own MAC)."""

    _state: ContainerState

    def __init__(
        self,
        name: str,
        suite: Suite,
        exchange_public: bytes,
        signature_public: bytes,
        old: tuple[OldKey, ...] = (),
    ) -> None:
        self._name = name
        self._suite = suite
        self._set_public(KeyRole.EXCHANGE, exchange_public)
        self._set_public(KeyRole.SIGNATURE, signature_public)
        self._old = old

    def _set_public(self, role: KeyRole, public: bytes) -> None:
        key_id = key_id_for(self._suite, role, public)
        if role is KeyRole.EXCHANGE:
            self._exchange_public, self._exchange_id = public, key_id
        else:
            self._signature_public, self._signature_id = public, key_id

    @property
    def name(self) -> str:
        return self._name

    @property
    def suite(self) -> Suite:
        return self._suite

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

    @property
    def old_keys(self) -> tuple[OldKey, ...]:
        return self._old

    @property
    def exchange_ids(self) -> tuple[KeyId, ...]:
        return (
            self._exchange_id,
            *(k.key_id for k in self._old if k.role is KeyRole.EXCHANGE),
        )

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self.unwrap_as(self._exchange_id, wrapped, context)

    def unwrap_as(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        if key_id not in self.exchange_ids:
            raise VerificationError(NOT_OWN_EXCHANGE.format(name=self._name, key_id=key_id.short))
        return self._unwrap_with(key_id, wrapped, context)

    def _unwrap_with(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        """Open with the exchange key ``key_id``, one of :attr:`exchange_ids` (checked)."""
        raise NotImplementedError

    def state(self) -> State:
        return self._state.state()

    def update_state(self, change: Callable[[State], State]) -> State:
        return self._state.update_state(change)


@runtime_checkable
class RotatingKeys(Protocol):
    """A container that makes its own new key pairs (``keys rotate``) and removes the old
    ones (``keys forget-old``): the software and token providers, not the agent's client
    (those commands unlock the container themselves)."""

    @property
    def name(self) -> str: ...

    def rotate_keys(self, roles: tuple[KeyRole, ...], *, now: int) -> tuple[OldKey, ...]:
        """New key pairs for ``roles``, made in the provider; the replaced pairs are kept
        (FORMAT.md 5.1, 5.1.1 ``previous``).  Returns the replaced pairs.

        Raises:
            UsageError: too many old key pairs are kept already.
            ProviderError: the container file (or the token) could not be written.
        """
        ...

    def forget_old_keys(self) -> tuple[OldKey, ...]:
        """Remove every old key pair (sealed private keys; token objects); returns them."""
        ...


@runtime_checkable
class CapiKeys(Protocol):
    """A container that does CryptoAPI work with RSA keys of its own (docs/MSCAPI.md): an
    rsa-suite software container (its own key pairs), or a token container (a Windows
    exchange key imported into the token).  Each method refuses, with a UsageError that
    says why, what the container at hand cannot do."""

    @property
    def name(self) -> str: ...

    def capi_unwrap(self, simpleblob: bytes, *, authenticated: bool) -> mscapi.CapiKey:
        """CryptImportKey(SIMPLEBLOB) with the CryptoAPI exchange key, without a padding
        oracle (:func:`keyblob.mscapi.unwrap_simpleblob`'s rules)."""
        ...

    def capi_sign(self, data: bytes, *, hash_alg: mscapi.AlgId, legacy: bool = False) -> bytes:
        """CryptSignHash over ``data`` with the CryptoAPI signature key (AT_SIGNATURE)."""
        ...

    def capi_import_key_pair(self, role: KeyRole, key: rsa.RSAPrivateKey, *, force: bool) -> str:
        """Make ``key`` the container's CryptoAPI ``role`` key pair (``capi import-keypair``);
        returns where it now lives, in words ("sealed at rest")."""
        ...
