"""What a container has decided to accept: its trusted signers (keyblob containers, and
CryptoAPI RSA signers pinned for ``capi import-simpleblob``), the names each may sign (its
scope), per key name the highest generation it has seen (the rollback high-water mark) and
the generations it retired, per (name, generation) the highest revision it has seen, its
recovery recipients, its own earlier signature keys (after ``keys rotate``), and the signers
it removed (``trust remove``).

This is pure policy and its canonical encoding; the provider keeps it authenticated with a
key that only the passphrase unlocks (FORMAT.md 5.2).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from keyblob.errors import FormatError, NotFoundError, UsageError, VerificationError
from keyblob.format.pubkey import fingerprint
from keyblob.keys import (
    KEY_ID_SIZE,
    MAX_GENERATION,
    MAX_REVISION,
    KeyId,
    KeyRole,
    Suite,
    check_label,
    check_name,
    key_id_for,
)

UNTRUSTED = "signed by {signer}, which is not a trusted signer"
LIST_HINT = "keyblob trust list shows each trusted signer's id and fingerprint"
OUT_OF_SCOPE = "signed by {signer}, which is trusted only for {scope}, not for {name!r}"
NOT_PINNED = "its signer (fingerprint {fingerprint}) is not a pinned CryptoAPI signer"

#: FORMAT.md 5.2: a scope holds 1 to 64 patterns of 1 to 128 characters.
MAX_PATTERNS = 64
_PATTERN = re.compile(r"[a-z0-9._*?-]{1,128}")
#: The largest DER SubjectPublicKeyInfo pinned (an RSA-16384 key is about 2100 bytes).
MAX_CAPI_PUBLIC = 4096

#: Every member a state document (FORMAT.md 5.2.1, version 1) may have, once ``mac`` is
#: taken out, and those it must have.  Anything else is refused: a member this reader does
#: not know could be a restriction (like ``names``) that it would otherwise silently ignore.
#: Version 2 (the head of 5.2) has no ``high_water``: the provider takes its tree members
#: (``marks``, ``views``) out before it hands the rest here.
#: Version 2 only (5.2.8): ``retired``, ``recovery``, ``previous`` (the revisions tree is the
#: provider's, like ``marks``).
_STATE_MEMBERS = {"format", "container", "label", "high_water", "trusted", "capi_signers"}
_STATE_REQUIRED = {"format", "container", "high_water", "trusted"}
_HEAD_MEMBERS = (_STATE_MEMBERS - {"high_water"}) | {"retired", "recovery", "previous", "removed"}
_HEAD_REQUIRED = _STATE_REQUIRED - {"high_water"}
_SIGNER_MEMBERS = {"key_id", "suite", "public", "exchange", "label", "added"}
_CAPI_MEMBERS = {"public", "label", "added"}
_RECOVERY_MEMBERS = {"key_id", "exchange", "label", "added", "kind"}
_PREVIOUS_MEMBERS = {"key_id", "public", "until", "epoch"}
_REMOVED_MEMBERS = {"key_id", "label", "removed"}
#: The kinds of recovery recipient (FORMAT.md 5.2.8).
RECOVERY_KINDS = ("container", "passphrase")


#: FORMAT.md 5.2: a store identity is 1 to 4096 characters, no control character.
MAX_IDENTITY = 4096
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_store_identity(text: Any) -> str:
    """A store's identity (:attr:`keyblob.storage.Store.identity`), as the state keys its
    view by (FORMAT.md 5.2): 1 to 4096 characters, none of them a C0 or C1 control.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_IDENTITY or _CONTROL.search(text):
        raise ValueError("not a store identity: 1 to 4096 characters, no control character")
    return text


def check_pattern(text: str) -> str:
    """A name pattern (FORMAT.md 5.2): 1 to 128 characters of ``a-z 0-9 . _ -`` and the
    wildcards ``*`` (any run of name characters, also none) and ``?`` (one name character).

    Raises:
        ValueError: anything else (upper case, ``[``, ``/``, a space, an empty pattern).
    """
    if not isinstance(text, str) or not _PATTERN.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a name pattern: use 1 to 128 of a-z 0-9 . _ - and the "
            "wildcards * (any characters) and ? (one character)"
        )
    return text


def name_matches(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` as a whole (FORMAT.md 5.2).

    The classic wildcard walk, not a regular expression: at most len(pattern) * len(name)
    steps, whatever the pattern (no backtracking blow-up).
    """
    p = n = 0
    star, mark = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]):
            p, n = p + 1, n + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, n, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            n = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def parse_scope(values: Iterable[str]) -> tuple[str, ...] | None:
    """The scope given as ``--names`` values, each a comma-separated list of patterns:
    sorted, each once; None (every name) when one of them is ``*``.

    Raises:
        UsageError: an empty item, an invalid pattern, or more than 64 patterns.
    """
    patterns: set[str] = set()
    for value in values:
        for item in value.split(","):
            try:
                patterns.add(check_pattern(item.strip()))
            except ValueError as e:
                raise UsageError(f"--names: {e}") from None
    if not patterns:
        raise UsageError("--names needs at least one pattern")
    if len(patterns) > MAX_PATTERNS:
        raise UsageError(f"--names: at most {MAX_PATTERNS} patterns")
    return None if "*" in patterns else tuple(sorted(patterns))


def describe_scope(names: tuple[str, ...] | None) -> str:
    """A scope for people: ``all names`` or ``names ops, team-*``."""
    return "all names" if names is None else "names " + ", ".join(names)


def _scope_from_json(entry: dict[str, Any]) -> tuple[str, ...] | None:
    if "names" not in entry:  # written before scopes existed, or unrestricted
        return None
    names = entry["names"]
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_PATTERNS:
        raise ValueError("names: not a list of 1 to 64 patterns")
    patterns = tuple(check_pattern(x) for x in names)
    if list(patterns) != sorted(set(patterns)):
        raise ValueError("names: not sorted, or a pattern twice")
    return patterns


def _members(entry: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise TypeError("not an object")
    if not set(entry) <= allowed | {"names"}:
        raise ValueError("unknown member")
    return entry


def capi_fingerprint(spki: bytes) -> str:
    """A CryptoAPI signer's fingerprint (docs/MSCAPI.md): the first 16 bytes of SHA-256
    over the DER SubjectPublicKeyInfo of its RSA key, as 32 lowercase hex digits."""
    return hashlib.sha256(spki).digest()[:16].hex()


@dataclass(frozen=True)
class TrustedSigner:
    """A signature public key that imports accept, added explicitly by the user.

    ``label``: the label of the public key file it came from, as read and verified
    (FORMAT.md 3): the label its owner signed (version 2), or its container name (version 1,
    and states written before labels).
    """

    key_id: KeyId
    suite: Suite
    public: bytes
    exchange: bytes
    label: str
    added: int
    #: The name patterns it may sign (FORMAT.md 5.2); None: every name.
    names: tuple[str, ...] | None = None

    def allows(self, name: str) -> bool:
        return allows(self.names, name)


@dataclass(frozen=True)
class CapiSigner:
    """A CryptoAPI RSA signature key (CryptSignHash) pinned by the user: what
    ``capi import-simpleblob`` checks a SIMPLEBLOB's signature against."""

    public: bytes  # DER SubjectPublicKeyInfo, canonical
    label: str
    added: int
    names: tuple[str, ...] | None = None

    @property
    def fingerprint(self) -> str:
        return capi_fingerprint(self.public)

    def allows(self, name: str) -> bool:
        return allows(self.names, name)


@dataclass(frozen=True)
class RecoveryRecipient:
    """An exchange public key every new blob of the container is wrapped for as well
    (FORMAT.md 5.2.8): an offline recovery container's, or one whose private key a
    passphrase seals (a break-glass copy)."""

    key_id: KeyId  # key id (1.3) of ``exchange`` in the role exchange, the container's suite
    exchange: bytes
    label: str
    added: int
    kind: str  # "container" or "passphrase"

    def __post_init__(self) -> None:
        if self.kind not in RECOVERY_KINDS:
            raise ValueError(f"a recovery recipient's kind is one of {RECOVERY_KINDS}")


#: FORMAT.md 5.2.8: an epoch is 8 bits (the top 8 bits of a revision, 2.7 step 2), so a
#: container's current epoch is at most this, and an earlier key's at most one below.
MAX_EPOCH = 255


@dataclass(frozen=True)
class PreviousSigner:
    """A signature key this container used before ``keys rotate`` (FORMAT.md 5.2.8): blobs
    it signed until ``until`` (Unix seconds of the rotation) stay verifiable, at revision
    marks of epoch ``epoch`` or below (2.7 step 2)."""

    key_id: KeyId  # key id (1.3) of ``public`` in the role signature, the container's suite
    public: bytes
    until: int
    #: The highest epoch it speaks for: the container's epoch when it was replaced, or the
    #: highest epoch of any revision mark then, whichever was higher (0 to MAX_EPOCH - 1).
    epoch: int

    def __post_init__(self) -> None:
        if type(self.epoch) is not int or not 0 <= self.epoch < MAX_EPOCH:
            raise ValueError(f"an earlier signature key's epoch is 0 to {MAX_EPOCH - 1}")


@dataclass(frozen=True)
class RemovedSigner:
    """A trusted signer the user removed (``trust remove``), remembered so that a blob it
    signed can be said to be signed by a signer no longer trusted (FORMAT.md 5.2.8)."""

    key_id: KeyId
    label: str
    removed: int  # Unix seconds


def allows(names: tuple[str, ...] | None, name: str) -> bool:
    """Whether a scope lets its signer sign ``name``."""
    return names is None or any(name_matches(p, name) for p in names)


class MarkReader(Protocol):
    """The high-water marks and store views a provider has recorded (FORMAT.md 5.2): read
    one name at a time, so that a lookup costs the same whatever the number of names."""

    @property
    def count(self) -> int:
        """How many names have a mark."""
        ...

    def generation(self, name: str) -> int:
        """The mark of ``name`` (0 if none)."""
        ...

    def held(self, store: str, name: str) -> int:
        """The highest generation of ``name`` recorded through the store ``store`` (its
        identity), 0 if that store's view never held it."""
        ...

    def view(self, store: str) -> dict[str, int]:
        """Every name the view of ``store`` holds, with its generation."""
        ...

    def marks(self) -> dict[str, int]:
        """Every mark."""
        ...

    def revision(self, name: str, generation: int) -> int:
        """The revision mark of (``name``, ``generation``) (0 if none)."""
        ...

    def revisions(self) -> dict[tuple[str, int], int]:
        """Every revision mark."""
        ...


@dataclass(frozen=True)
class State:
    """The authenticated memory of one container.

    A provider hands out its recorded marks through ``recorded`` (read lazily, name by
    name); ``marks``, ``views`` and ``revisions`` hold what this object adds to them
    (:meth:`seen`), or, for a provider that keeps its state in memory, all of them.  A mark
    never goes down: the provider writing a state keeps the higher of each.  ``retired``,
    ``recovery``, ``previous`` and ``removed`` are whole, like the signers.
    """

    marks: Mapping[str, int] = field(default_factory=dict)
    trusted: tuple[TrustedSigner, ...] = ()
    capi_signers: tuple[CapiSigner, ...] = ()
    #: The container's own label (FORMAT.md 1.5, 5.2); None: never given, so its name.
    label: str | None = None
    #: Per store identity (:attr:`keyblob.storage.Store.identity`): names it held.
    views: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    recorded: MarkReader | None = None
    #: Per (name, generation): the highest revision seen (FORMAT.md 5.2.8), added to
    #: ``recorded``'s as ``marks`` are.
    revisions: Mapping[tuple[str, int], int] = field(default_factory=dict)
    #: Per name: the lowest generation still usable (2 or more); absent: none retired.
    retired: Mapping[str, int] = field(default_factory=dict)
    #: Recipients every new blob is wrapped for as well, in the order added.
    recovery: tuple[RecoveryRecipient, ...] = ()
    #: This container's earlier signature keys, in the order they were replaced.
    previous: tuple[PreviousSigner, ...] = ()
    #: Signers removed from ``trusted`` (``trust remove``), in the order removed.
    removed: tuple[RemovedSigner, ...] = ()

    def __post_init__(self) -> None:
        if self.label is not None:
            check_label(self.label)

    def generation_floor(self, name: str) -> int:
        """The highest generation of ``name`` seen so far (0 if never seen)."""
        mark = self.marks.get(name, 0)
        if self.recorded is not None:
            mark = max(mark, self.recorded.generation(name))
        return mark

    def held_generation(self, store: str, name: str) -> int:
        """The highest generation of ``name`` recorded through ``store`` (0: never)."""
        value = self.views.get(store, {}).get(name, 0)
        if self.recorded is not None:
            value = max(value, self.recorded.held(store, name))
        return value

    def revision_floor(self, name: str, generation: int) -> int:
        """The highest revision of (``name``, ``generation``) seen so far (0: none)."""
        value = self.revisions.get((name, generation), 0)
        if self.recorded is not None:
            value = max(value, self.recorded.revision(name, generation))
        return value

    def seen(
        self, name: str, generation: int, *, store: str | None = None, revision: int = 0
    ) -> State:
        """This state with ``generation`` of ``name`` recorded as seen, and, with ``store``
        (a store identity), as held by that store, and, with ``revision`` (> 0), that
        revision of it as seen; itself when that changes nothing."""
        raise_mark = generation > self.generation_floor(name)
        raise_view = store is not None and generation > self.held_generation(store, name)
        raise_revision = revision > 0 and revision > self.revision_floor(name, generation)
        out = self
        if raise_mark or raise_view:
            out = out.with_marks({name: generation}, store=store if raise_view else None)
        if raise_revision:
            out = out.with_revisions({(name, generation): revision})
        return out

    def with_revisions(self, revisions: Mapping[tuple[str, int], int]) -> State:
        """This state with every revision mark of ``revisions`` recorded (the higher of
        each is kept), in bulk, without looking each up.

        Raises:
            UsageError: a name, generation or revision out of its range.
        """
        new = dict(self.revisions)
        for (name, generation), revision in revisions.items():
            _check_revision(name, generation, revision)
            new[name, generation] = max(new.get((name, generation), 0), revision)
        return replace(self, revisions=new)

    def all_revisions(self) -> dict[tuple[str, int], int]:
        """Every revision mark (reads them all: for listings, not for a key's path)."""
        out = self.recorded.revisions() if self.recorded is not None else {}
        for key, revision in self.revisions.items():
            out[key] = max(out.get(key, 0), revision)
        return out

    def retired_below(self, name: str) -> int:
        """The lowest generation of ``name`` still usable (0: none retired)."""
        return self.retired.get(name, 0)

    def with_retired(self, name: str, below: int) -> State:
        """This state with the generations of ``name`` below ``below`` retired; a retirement
        is only ever raised (a lower ``below`` than the present one changes nothing).

        Raises:
            UsageError: an invalid name, or ``below`` not 2 to 2^63-1.
        """
        check_name(name)
        if type(below) is not int or not 2 <= below <= MAX_GENERATION:
            raise UsageError("a retirement keeps generation 2 or later: below is 2 to 2^63-1")
        if below <= self.retired_below(name):
            return self
        return replace(self, retired={**self.retired, name: below})

    def recovery_recipient(self, key_id: KeyId) -> RecoveryRecipient | None:
        for recipient in self.recovery:
            if recipient.key_id == key_id:
                return recipient
        return None

    def with_recovery(self, recipient: RecoveryRecipient) -> State:
        """This state with ``recipient``; one already there keeps its place and its date,
        and takes the new label."""
        old = self.recovery_recipient(recipient.key_id)
        if old is None:
            return replace(self, recovery=(*self.recovery, recipient))
        new = replace(old, label=recipient.label)
        return replace(self, recovery=tuple(new if r is old else r for r in self.recovery))

    def without_recovery(self, key_id: KeyId) -> State:
        """This state without the recovery recipient ``key_id`` (unchanged if absent)."""
        return replace(self, recovery=tuple(r for r in self.recovery if r.key_id != key_id))

    def previous_signer(self, key_id: KeyId) -> PreviousSigner | None:
        for signer in self.previous:
            if signer.key_id == key_id:
                return signer
        return None

    @property
    def epoch(self) -> int:
        """The container's current epoch (FORMAT.md 5.2.8): one above the last earlier
        signature key's, 0 with none."""
        return self.previous[-1].epoch + 1 if self.previous else 0

    def with_previous(self, signer: PreviousSigner) -> State:
        """This state with ``signer`` as the last earlier signature key of the container.
        If the last entry already has its key id (the current key, listed by a rotation
        that failed or was killed before the container's file was written), ``signer``
        takes its place: that key was current all along, so it may speak for up to the
        new, higher epoch.

        Raises:
            UsageError: ``signer``'s key is listed but not last (a key replaced since), its
                epoch is below the listed one's, or not above the one before it.
        """
        listed = self.previous_signer(signer.key_id)
        if listed is not None and listed is not self.previous[-1]:
            raise UsageError("an earlier signature key of this container cannot be listed again")
        if listed is not None and signer.epoch < listed.epoch:
            raise UsageError("an earlier signature key's epoch is never lowered")
        kept = self.previous[:-1] if listed is not None else self.previous
        if kept and signer.epoch <= kept[-1].epoch:
            raise UsageError("an earlier signature key's epoch must be above the one before it")
        if listed == signer:
            return self
        return replace(self, previous=(*kept, signer))

    def with_marks(self, marks: Mapping[str, int], *, store: str | None = None) -> State:
        """This state with every mark of ``marks`` recorded (and held by ``store``, if
        given); in bulk, without looking each name up: the writer keeps the higher of each
        mark."""
        new = dict(self.marks)
        for name, generation in marks.items():
            new[name] = max(new.get(name, 0), generation)
        views = dict(self.views)
        if store is not None:
            view = dict(views.get(store, {}))
            for name, generation in marks.items():
                view[name] = max(view.get(name, 0), generation)
            views[store] = view
        return replace(self, marks=new, views=views)

    def has_marks(self) -> bool:
        """Whether any name has a mark."""
        return bool(self.marks) or (self.recorded is not None and self.recorded.count > 0)

    def all_marks(self) -> dict[str, int]:
        """Every mark (reads them all: for listings, not for a key's path)."""
        out = self.recorded.marks() if self.recorded is not None else {}
        for name, generation in self.marks.items():
            out[name] = max(out.get(name, 0), generation)
        return out

    def held(self, store: str) -> dict[str, int]:
        """The names the store ``store`` (an identity) held, each with the highest
        generation recorded through it (FORMAT.md 5.2): what ``list`` may call missing."""
        out = self.recorded.view(store) if self.recorded is not None else {}
        for name, generation in self.views.get(store, {}).items():
            out[name] = max(out.get(name, 0), generation)
        return out

    def signer(self, key_id: KeyId) -> TrustedSigner | None:
        for signer in self.trusted:
            if signer.key_id == key_id:
                return signer
        return None

    def with_signer(self, signer: TrustedSigner) -> State:
        """This state trusting ``signer``; one already trusted keeps its place and its date,
        and takes ``signer``'s scope and label (a label is its owner's to change: the newer
        file says what it is now).  Trusted again, a removed signer is no longer listed as
        removed."""
        old = self.signer(signer.key_id)
        if old is None:
            removed = tuple(r for r in self.removed if r.key_id != signer.key_id)
            return replace(self, trusted=(*self.trusted, signer), removed=removed)
        new = replace(old, names=signer.names, label=signer.label)
        return replace(self, trusted=tuple(new if s is old else s for s in self.trusted))

    def without_signer(self, key_id: KeyId, *, removed: int | None = None) -> State:
        """This state without the trusted signer ``key_id`` (unchanged if it is not there);
        with ``removed`` (Unix seconds), remembering it as removed then."""
        old = self.signer(key_id)
        if old is None:
            return self
        out = replace(self, trusted=tuple(s for s in self.trusted if s.key_id != key_id))
        if removed is not None:
            entry = RemovedSigner(key_id, old.label, removed)
            kept = tuple(r for r in self.removed if r.key_id != key_id)
            out = replace(out, removed=(*kept, entry))
        return out

    def removed_signer(self, key_id: KeyId) -> RemovedSigner | None:
        """The signer ``key_id`` if it was trusted here and removed (``trust remove``)."""
        for signer in self.removed:
            if signer.key_id == key_id:
                return signer
        return None

    def capi_signer(self, public: bytes) -> CapiSigner | None:
        for signer in self.capi_signers:
            if signer.public == public:
                return signer
        return None

    def with_capi_signer(self, signer: CapiSigner) -> State:
        """As :meth:`with_signer`, for a CryptoAPI signer (identified by its key)."""
        old = self.capi_signer(signer.public)
        if old is None:
            return replace(self, capi_signers=(*self.capi_signers, signer))
        new = replace(old, names=signer.names)
        return replace(self, capi_signers=tuple(new if s is old else s for s in self.capi_signers))

    def without_capi_signer(self, public: bytes) -> State:
        return replace(self, capi_signers=tuple(s for s in self.capi_signers if s.public != public))

    # Canonical JSON: sorted keys, no white space, so that a MAC over it is well defined.
    # Optional members are written only when they say something (a scope, a CryptoAPI
    # signer), so a state that uses neither is byte for byte what earlier versions wrote.
    def to_json(self, *, version: int = 1) -> dict[str, Any]:
        """The members of a version 1 state document (FORMAT.md 5.2.1), ``high_water``
        from ``marks``; with ``version=2``, those of the head (5.2) that this object owns,
        without any mark."""
        doc: dict[str, Any] = {
            "trusted": [
                {
                    "key_id": s.key_id.hex,
                    "suite": s.suite.label,
                    "public": _b64(s.public),
                    "exchange": _b64(s.exchange),
                    "label": s.label,
                    "added": s.added,
                    **_scope_json(s.names),
                }
                for s in self.trusted
            ],
        }
        if version == 1:
            doc["high_water"] = dict(self.marks)  # canonical() sorts the keys
        if self.label is not None:
            doc["label"] = self.label
        if self.capi_signers:
            doc["capi_signers"] = [
                {
                    "public": _b64(s.public),
                    "label": s.label,
                    "added": s.added,
                    **_scope_json(s.names),
                }
                for s in self.capi_signers
            ]
        if version == 2:
            doc.update(self._head_json())
        return doc

    def _head_json(self) -> dict[str, Any]:
        """The members only a version 2 head has (FORMAT.md 5.2.8), each absent when empty."""
        doc: dict[str, Any] = {}
        if self.retired:
            doc["retired"] = dict(self.retired)
        if self.recovery:
            doc["recovery"] = [
                {
                    "key_id": r.key_id.hex,
                    "exchange": _b64(r.exchange),
                    "label": r.label,
                    "added": r.added,
                    "kind": r.kind,
                }
                for r in self.recovery
            ]
        if self.previous:
            doc["previous"] = [
                {
                    "key_id": p.key_id.hex,
                    "public": _b64(p.public),
                    "until": p.until,
                    "epoch": p.epoch,
                }
                for p in self.previous
            ]
        if self.removed:
            doc["removed"] = [
                {"key_id": r.key_id.hex, "label": r.label, "removed": r.removed}
                for r in self.removed
            ]
        return doc

    @classmethod
    def from_json(cls, data: Any, *, suite: Suite | None = None, version: int = 1) -> State:
        """The state in a parsed, MAC-checked document (FORMAT.md 5.2.1), or with
        ``version=2`` in a head (5.2) without its tree members; with ``suite``, every
        trusted signer must be of that suite (the container's).

        Raises:
            FormatError: ``data`` is not a state document.
        """
        required, allowed = (
            (_STATE_REQUIRED, _STATE_MEMBERS) if version == 1 else (_HEAD_REQUIRED, _HEAD_MEMBERS)
        )
        try:
            if not isinstance(data, dict) or not required <= set(data) <= allowed:
                raise ValueError("members")
            high_water = {
                check_name(k): json_int(v, 1, MAX_GENERATION)
                for k, v in data.get("high_water", {}).items()
            }
            if not isinstance(data["trusted"], list):
                raise TypeError("trusted")
            trusted = tuple(
                TrustedSigner(
                    key_id=KeyId(lower_hex(s["key_id"], KEY_ID_SIZE)),
                    suite=Suite.from_label(s["suite"]),
                    public=canonical_b64(s["public"]),
                    exchange=canonical_b64(s["exchange"]),
                    label=check_label(s["label"]),
                    added=json_int(s["added"], 0, MAX_GENERATION),
                    names=_scope_from_json(s),
                )
                for s in (_members(x, _SIGNER_MEMBERS) for x in data["trusted"])
            )
            capi = data.get("capi_signers", [])
            if not isinstance(capi, list) or ("capi_signers" in data and not capi):
                raise ValueError("capi_signers: not a non-empty list")
            capi_signers = tuple(
                CapiSigner(
                    public=_capi_public(s["public"]),
                    label=check_name(s["label"]),
                    added=json_int(s["added"], 0, MAX_GENERATION),
                    names=_scope_from_json(s),
                )
                for s in (_members(x, _CAPI_MEMBERS) for x in capi)
            )
            label = check_label(data["label"]) if "label" in data else None
            retired = _retired_from_json(data)
            recovery = _recovery_from_json(data)
            previous = _previous_from_json(data)
            removed = _removed_from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError("home state: not a valid state document") from None
        if len({s.key_id for s in trusted}) != len(trusted):
            raise FormatError("home state: a trusted signer appears twice")
        if any(s.key_id != key_id_for(s.suite, KeyRole.SIGNATURE, s.public) for s in trusted):
            raise FormatError("home state: a trusted signer's key id is not its key's")
        if suite is not None and any(s.suite is not suite for s in trusted):
            raise FormatError(
                f"home state: a trusted signer is not of the container's suite {suite.label}"
            )
        if len({s.public for s in capi_signers}) != len(capi_signers):
            raise FormatError("home state: a CryptoAPI signer appears twice")
        if len({r.key_id for r in recovery}) != len(recovery):
            raise FormatError("home state: a recovery recipient appears twice")
        if len({p.key_id for p in previous}) != len(previous):
            raise FormatError("home state: a previous signature key appears twice")
        if len({r.key_id for r in removed}) != len(removed):
            raise FormatError("home state: a removed signer appears twice")
        if {r.key_id for r in removed} & {s.key_id for s in trusted}:
            raise FormatError("home state: a signer is both trusted and removed")
        if suite is not None and any(
            r.key_id != key_id_for(suite, KeyRole.EXCHANGE, r.exchange) for r in recovery
        ):
            raise FormatError("home state: a recovery recipient's key id is not its key's")
        if suite is not None and any(
            p.key_id != key_id_for(suite, KeyRole.SIGNATURE, p.public) for p in previous
        ):
            raise FormatError("home state: a previous signature key's id is not its key's")
        return cls(
            high_water,
            trusted,
            capi_signers,
            label,
            retired=retired,
            recovery=recovery,
            previous=previous,
            removed=removed,
        )


def _check_revision(name: Any, generation: Any, revision: Any) -> None:
    """A revision mark (FORMAT.md 5.2.8): a name, a generation 1 to 2^63-1, a revision 1
    to 2^32-1.

    Raises:
        UsageError: anything else.
    """
    check_name(name)
    if type(generation) is not int or not 1 <= generation <= MAX_GENERATION:
        raise UsageError("a revision mark's generation is 1 to 2^63-1")
    if type(revision) is not int or not 1 <= revision <= MAX_REVISION:
        raise UsageError("a revision mark is 1 to 2^32-1")


def _nonempty_list(data: dict[str, Any], member: str) -> list[Any]:
    """An optional list member (FORMAT.md 5.2.8): absent, or a list of at least one entry."""
    value = data.get(member, [])
    if not isinstance(value, list) or (member in data and not value):
        raise ValueError(f"{member}: not a non-empty list")
    return value


def _retired_from_json(data: dict[str, Any]) -> dict[str, int]:
    value = data.get("retired", {})
    if not isinstance(value, dict) or ("retired" in data and not value):
        raise ValueError("retired: not a non-empty object")
    return {check_name(k): json_int(v, 2, MAX_GENERATION) for k, v in value.items()}


def _recovery_from_json(data: dict[str, Any]) -> tuple[RecoveryRecipient, ...]:
    out = []
    for entry in _nonempty_list(data, "recovery"):
        r = _members(entry, _RECOVERY_MEMBERS)
        if r.keys() != _RECOVERY_MEMBERS or not isinstance(r["kind"], str):
            raise ValueError("recovery: members")
        out.append(
            RecoveryRecipient(
                key_id=KeyId(lower_hex(r["key_id"], KEY_ID_SIZE)),
                exchange=canonical_b64(r["exchange"]),
                label=check_label(r["label"]),
                added=json_int(r["added"], 0, MAX_GENERATION),
                kind=r["kind"],
            )
        )
    return tuple(out)


def _removed_from_json(data: dict[str, Any]) -> tuple[RemovedSigner, ...]:
    out = []
    for entry in _nonempty_list(data, "removed"):
        r = _members(entry, _REMOVED_MEMBERS)
        if r.keys() != _REMOVED_MEMBERS:
            raise ValueError("removed: members")
        out.append(
            RemovedSigner(
                key_id=KeyId(lower_hex(r["key_id"], KEY_ID_SIZE)),
                label=check_label(r["label"]),
                removed=json_int(r["removed"], 0, MAX_GENERATION),
            )
        )
    return tuple(out)


def _previous_from_json(data: dict[str, Any]) -> tuple[PreviousSigner, ...]:
    out = []
    for entry in _nonempty_list(data, "previous"):
        p = _members(entry, _PREVIOUS_MEMBERS)
        if p.keys() != _PREVIOUS_MEMBERS:
            raise ValueError("previous: members")
        out.append(
            PreviousSigner(
                key_id=KeyId(lower_hex(p["key_id"], KEY_ID_SIZE)),
                public=canonical_b64(p["public"]),
                until=json_int(p["until"], 0, MAX_GENERATION),
                epoch=json_int(p["epoch"], 0, MAX_EPOCH - 1),
            )
        )
    if any(a.epoch >= b.epoch for a, b in itertools.pairwise(out)):
        raise ValueError("previous: epochs not increasing")
    return tuple(out)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scope_json(names: tuple[str, ...] | None) -> dict[str, Any]:
    return {} if names is None else {"names": list(names)}


def _capi_public(text: Any) -> bytes:
    """A pinned CryptoAPI signer's key: canonical DER SubjectPublicKeyInfo of an RSA key."""
    # Imported here: only states that pin a CryptoAPI signer need an RSA parser.
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    der = canonical_b64(text)
    if not 0 < len(der) <= MAX_CAPI_PUBLIC:
        raise ValueError("CryptoAPI signer: key size")
    try:
        key = serialization.load_der_public_key(der)
    except UnsupportedAlgorithm:
        raise ValueError("CryptoAPI signer: not an RSA key") from None
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not isinstance(key, rsa.RSAPublicKey) or spki != der:
        raise ValueError("CryptoAPI signer: not the canonical DER of an RSA public key")
    return der


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


def canonical_json_value(data: bytes) -> Any:
    """:func:`strict_json`, refusing as well any value canonical_json (FORMAT.md 5.1) has no
    encoding for: ``true``, ``false``, ``null``, and numbers with a fraction or an exponent.

    The state's MAC is over the canonical re-encoding of what was parsed; with no canonical
    encoding there is nothing a MAC could be over, so such a document is refused before the
    MAC is computed, and every reader refuses it the same way (FORMAT.md 5.2).

    Raises:
        ValueError: as :func:`strict_json`, or such a value anywhere in the document.
    """
    doc = strict_json(data)
    todo = [doc]
    while todo:  # a loop, not recursion: strict_json already bounded the depth
        value = todo.pop()
        if isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
        elif type(value) not in (str, int):  # bool is a subclass of int: compared exactly
            raise ValueError("a value canonical JSON has no encoding for")
    return doc


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


def find_signer(state: State, prefix: str) -> TrustedSigner | CapiSigner:
    """The one signer whose hex id or fingerprint (FORMAT.md 3.1), or CryptoAPI signer whose
    fingerprint (docs/MSCAPI.md), starts with ``prefix``.  White space in ``prefix`` is
    ignored, so a fingerprint may be given as it is read aloud (``3f2a 9c1e …``).

    Raises:
        UsageError: the prefix is not hex, shorter than 8 digits, or ambiguous.
        NotFoundError: no signer matches.
    """
    given = prefix
    prefix = "".join(prefix.split()).lower().removeprefix("sg-")
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(
            f"{given!r} is not a signer id: give at least the first 8 hex digits of a "
            "signer's id or fingerprint",
            hints=(LIST_HINT,),
        )
    matches: list[TrustedSigner | CapiSigner] = [
        s
        for s in state.trusted
        if s.key_id.hex.startswith(prefix)
        or fingerprint(s.suite, s.exchange, s.public).startswith(prefix)
    ]
    matches += [s for s in state.capi_signers if s.fingerprint.startswith(prefix)]
    if not matches:
        raise NotFoundError(
            f"no trusted signer has an id or fingerprint starting with {prefix}",
            hints=(LIST_HINT,),
        )
    if len(matches) > 1:
        raise UsageError(f"{prefix} matches {len(matches)} trusted signers: give more digits")
    return matches[0]


def require_trusted(
    own_id: KeyId, own_public: bytes, state: State, signer_id: KeyId, name: str
) -> bytes:
    """The signature public key for ``signer_id`` if the container accepts it for ``name``
    (FORMAT.md 2.7 step 2).

    Trusted means: the container's own signature key (for every name), or a key the user
    added explicitly, for the names its scope allows.

    Raises:
        VerificationError: nobody trusted has that id, or its scope does not allow ``name``.
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
    _require_in_scope(
        signer.names,
        name,
        f"sg-{signer_id.short} ({signer.label})",
        "the blob may have been substituted; if that signer should sign this name too,",
        "widen its scope: keyblob trust add THEIR.pub --names PATTERN,...",
    )
    return signer.public


def _require_in_scope(names: tuple[str, ...] | None, name: str, signer: str, *hints: str) -> None:
    """Import step 2's scope check, for keyblob and CryptoAPI signers alike (FORMAT.md 5.2).

    Raises:
        VerificationError: the scope ``names`` does not allow ``name``.
    """
    if not allows(names, name):
        raise VerificationError(
            OUT_OF_SCOPE.format(signer=signer, scope=describe_scope(names), name=name),
            hints=hints,
        )


def require_capi_signer(state: State, public: bytes, name: str | None) -> CapiSigner | None:
    """The pinned CryptoAPI signer whose key is ``public`` (DER SubjectPublicKeyInfo), if
    the container accepts it for ``name`` (docs/MSCAPI.md 7.2, step 2).

    Until a CryptoAPI signer is pinned, any signer is accepted (the caller names it and
    shows its fingerprint): None.  Once any is pinned, only the pinned ones, each for the
    names its scope allows.

    Raises:
        VerificationError: signers are pinned and ``public`` is none of them, or its scope
            does not allow ``name``.
        UsageError: signers are pinned and no ``name`` was given to check the scope against.
    """
    if not state.capi_signers:
        return None
    signer = state.capi_signer(public)
    if signer is None:  # fail closed: once pinned, no other signer
        raise VerificationError(
            NOT_PINNED.format(fingerprint=capi_fingerprint(public)),
            hints=(
                "the signer file may have been replaced along with the blob; if you expect",
                "this signer, compare its fingerprint with its owner, then run: "
                "keyblob trust add SIGNER.pubblob",
            ),
        )
    if name is None:
        raise UsageError("a pinned CryptoAPI signer is checked for a key name: give the name")
    _require_in_scope(
        signer.names,
        name,
        f"CryptoAPI signer {signer.label!r} ({signer.fingerprint})",
        "if that signer should sign this name too, widen its scope: "
        "keyblob trust add SIGNER.pubblob --names PATTERN,...",
    )
    return signer
