"""What a container has decided to accept: its trusted signers and, per key name, the
highest generation it has seen (the rollback high-water mark).

This is pure policy and its canonical encoding; the provider keeps it authenticated with a
key that only the passphrase unlocks (FORMAT.md 5).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from keyblob.errors import FormatError, NotFoundError, UsageError, VerificationError
from keyblob.format.pubkey import fingerprint, key_id_for
from keyblob.keys import KEY_ID_SIZE, MAX_GENERATION, KeyId, KeyRole, Suite, check_name

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
        """Raises FormatError when ``data`` is not a state document (FORMAT.md 5.2)."""
        try:
            high_water = {
                check_name(k): json_int(v, 1, MAX_GENERATION) for k, v in data["high_water"].items()
            }
            trusted = tuple(
                TrustedSigner(
                    key_id=KeyId(lower_hex(s["key_id"], KEY_ID_SIZE)),
                    suite=Suite.from_label(s["suite"]),
                    public=canonical_b64(s["public"]),
                    exchange=canonical_b64(s["exchange"]),
                    label=check_name(s["label"]),
                    added=json_int(s["added"], 0, MAX_GENERATION),
                )
                for s in data["trusted"]
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError("home state: not a valid state document") from None
        if len({s.key_id for s in trusted}) != len(trusted):
            raise FormatError("home state: a trusted signer appears twice")
        if any(s.key_id != key_id_for(s.suite, KeyRole.SIGNATURE, s.public) for s in trusted):
            raise FormatError("home state: a trusted signer's key id is not its key's")
        return cls(high_water, trusted)


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


# -- strict reading of the home's JSON files (FORMAT.md 5) -----------------------------------
# A MAC over a re-encoding is only as good as the parse under it: one document must have
# one meaning, so duplicate keys, non-integers posing as integers and alternative encodings
# of the same bytes are refused (ValueError / TypeError, which callers turn into their error).


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes) -> Any:
    """Parse UTF-8 JSON (no BOM, no UTF-16/32), refusing a duplicate object key at any
    depth, and NaN / Infinity."""
    text = data.decode("utf-8")  # json.loads(bytes) would also take UTF-16 and UTF-32
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def json_int(value: Any, low: int | None = None, high: int | None = None) -> int:
    """A JSON integer (not a float, a string or a boolean), within [low, high] if given."""
    if type(value) is not int:
        raise TypeError("not a JSON integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError("out of range")
    return value


def lower_hex(text: Any, size: int) -> bytes:
    """``size`` bytes written as exactly 2 * size lower-case hex digits."""
    if not isinstance(text, str) or not re.fullmatch(f"[0-9a-f]{{{2 * size}}}", text):
        raise ValueError("not lower-case hex of the expected length")
    return bytes.fromhex(text)


def canonical_b64(text: Any) -> bytes:
    """Padded RFC 4648 base64 with zero unused bits: the one encoding of its bytes."""
    out = base64.b64decode(text, validate=True)
    if base64.b64encode(out).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return out


def find_signer(signers: tuple[TrustedSigner, ...], prefix: str) -> TrustedSigner:
    """The one signer whose hex id, or fingerprint (FORMAT.md 3.1), starts with ``prefix``.

    Raises:
        UsageError: the prefix is not hex, shorter than 8 digits, or ambiguous.
        NotFoundError: no signer matches.
    """
    prefix = prefix.lower().removeprefix("sg-")
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError("give at least the first 8 hex digits of the signer id")
    matches = [
        s
        for s in signers
        if s.key_id.hex.startswith(prefix)
        or fingerprint(s.suite, s.exchange, s.public).startswith(prefix)
    ]
    if not matches:
        raise NotFoundError(f"no trusted signer has an id or fingerprint starting with {prefix}")
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
