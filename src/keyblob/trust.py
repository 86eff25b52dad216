"""What a container has decided to accept: its trusted signers and, per key name, the
highest generation it has seen (the rollback high-water mark).

This is pure policy and its canonical encoding; the provider keeps it authenticated with a
key that only the passphrase unlocks (FORMAT.md 5).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any

from keyblob.errors import FormatError, NotFoundError, UsageError, VerificationError
from keyblob.keys import KeyId, Suite, check_name

UNTRUSTED = "signed by {signer}, which is not a trusted signer"


@dataclass(frozen=True)
class TrustedSigner:
    """A signature public key that imports accept, added explicitly by the user."""

    key_id: KeyId
    suite: Suite
    public: bytes
    exchange: bytes
    label: str
    added: int


@dataclass(frozen=True)
class State:
    """The authenticated memory of one container."""

    high_water: dict[str, int] = field(default_factory=dict)
    trusted: tuple[TrustedSigner, ...] = ()

    def generation_floor(self, name: str) -> int:
        """The highest generation of ``name`` seen so far (0 if never seen)."""
        return self.high_water.get(name, 0)

    def seen(self, name: str, generation: int) -> State:
        """This state with ``generation`` of ``name`` recorded as seen."""
        if generation <= self.generation_floor(name):
            return self
        return replace(self, high_water={**self.high_water, name: generation})

    def signer(self, key_id: KeyId) -> TrustedSigner | None:
        for signer in self.trusted:
            if signer.key_id == key_id:
                return signer
        return None

    def with_signer(self, signer: TrustedSigner) -> State:
        if self.signer(signer.key_id) is not None:
            return self
        return replace(self, trusted=(*self.trusted, signer))

    def without_signer(self, key_id: KeyId) -> State:
        """This state without the trusted signer ``key_id`` (unchanged if it is not there)."""
        return replace(self, trusted=tuple(s for s in self.trusted if s.key_id != key_id))

    # Canonical JSON: sorted keys, no white space, so that a MAC over it is well defined.
    def to_json(self) -> dict[str, Any]:
        return {
            "high_water": self.high_water,  # canonical() sorts the keys
            "trusted": [
                {
                    "key_id": s.key_id.hex,
                    "suite": s.suite.label,
                    "public": base64.b64encode(s.public).decode("ascii"),
                    "exchange": base64.b64encode(s.exchange).decode("ascii"),
                    "label": s.label,
                    "added": s.added,
                }
                for s in self.trusted
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> State:
        """Raises FormatError when ``data`` is not a state document."""
        try:
            high_water = {check_name(k): int(v) for k, v in data["high_water"].items()}
            trusted = tuple(
                TrustedSigner(
                    key_id=KeyId.from_hex(s["key_id"]),
                    suite=Suite.from_label(s["suite"]),
                    public=base64.b64decode(s["public"], validate=True),
                    exchange=base64.b64decode(s["exchange"], validate=True),
                    label=check_name(s["label"]),
                    added=int(s["added"]),
                )
                for s in data["trusted"]
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError("home state: not a valid state document") from None
        return cls(high_water, trusted)


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def find_signer(signers: tuple[TrustedSigner, ...], prefix: str) -> TrustedSigner:
    """The one signer whose hex id starts with ``prefix``.

    Raises:
        UsageError: the prefix is not hex, shorter than 8 digits, or ambiguous.
        NotFoundError: no signer matches.
    """
    prefix = prefix.lower().removeprefix("sg-")
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError("give at least the first 8 hex digits of the signer id")
    matches = [s for s in signers if s.key_id.hex.startswith(prefix)]
    if not matches:
        raise NotFoundError(f"no trusted signer has an id starting with {prefix}")
    if len(matches) > 1:
        raise UsageError(f"{prefix} matches {len(matches)} trusted signers: give more digits")
    return matches[0]


def require_trusted(own_id: KeyId, own_public: bytes, state: State, signer_id: KeyId) -> bytes:
    """The signature public key for ``signer_id`` if the container accepts it.

    Trusted means: the container's own signature key, or a key the user added explicitly.

    Raises:
        VerificationError: nobody trusted has that id.
    """
    if signer_id == own_id:
        return own_public
    signer = state.signer(signer_id)
    if signer is None:
        raise VerificationError(
            UNTRUSTED.format(signer=f"sg-{signer_id.short}"),
            hints=(
                "the blob may have been substituted; if you expect keys from that container,",
                "check its fingerprint with its owner, then run: keyblob trust add THEIR.pub",
            ),
        )
    return signer.public
