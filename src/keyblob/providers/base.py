"""The small interface every provider (software home, PKCS#11 token) implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from keyblob.keys import KeyId, Suite
from keyblob.trust import State


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
