"""The small interface every provider (software home, PKCS#11 token) implements, and the
CryptoAPI operations some containers add to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from keyblob.keys import KeyId, KeyRole, Suite, key_id_for
from keyblob.trust import State

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyblob import mscapi
    from keyblob.providers.homestate import ContainerState


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

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Open a key wrapped to the exchange key; raises VerificationError on any failure."""
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
        self, name: str, suite: Suite, exchange_public: bytes, signature_public: bytes
    ) -> None:
        self._name = name
        self._suite = suite
        self._set_public(KeyRole.EXCHANGE, exchange_public)
        self._set_public(KeyRole.SIGNATURE, signature_public)

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

    def state(self) -> State:
        return self._state.state()

    def update_state(self, change: Callable[[State], State]) -> State:
        return self._state.update_state(change)


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
