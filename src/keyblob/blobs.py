"""The recipe: export a session key as a signed key blob, and import one back.

This is the one place where the check order of an import lives (FORMAT.md 2.7):

1. parse (strict, canonical, bounded);
2. the blob's suite is the container's, and the signer is trusted: the container's own
   signature key, or one the user added whose scope allows the blob's name;
3. the signature is valid;
4. the name (and key id, generation) are the ones that were asked for;
5. the generation is not below the container's high-water mark for that name and, when the
   latest generation is asked for, the store has not lost the newest one; nor below the
   container's retirement of the name (``keyblob retire``);
6. only then unwrap, and check the key has the algorithm's length.

Every failure of steps 2-6 raises ``VerificationError`` with one fixed message per check.

It also decides what a store entry that fails verification means (FORMAT.md 2.9): the newest
generation is the newest that passes steps 1-4 at or above the high-water mark, the entries
above it are reported (:class:`IgnoredEntryWarning`), listed (:func:`check_store`) and can be
moved aside (:func:`set_aside_untrusted`); a valid blob is never moved.

Whole stores are checked (:func:`check_store`) and copied (:func:`copy_store`) through steps
1-4 on worker processes (:mod:`keyblob.pool`) that are given :class:`CheckPolicy`, the public
half of the checks, and the stored bytes: nothing else.  A write that loses a compare-and-set
to another writer (:class:`~keyblob.errors.ConflictError`) is run again by :func:`retrying`.

And the check order of a CryptoAPI import (docs/MSCAPI.md 7.2), :func:`import_simpleblob`:

1. parse the SIMPLEBLOB's public structure; the name is valid;
2. it is signed (unless the caller explicitly accepts an unsigned one and no CryptoAPI
   signer is pinned), and once any signer is pinned, its signer is one of them and its
   scope allows the name;
3. the signature verifies (the RSA size rule applies to the signer that made it only);
4. only then unwrap with the container's exchange key;
5. store it as a signed key blob.
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import functools
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from keyblob.errors import (
    BadEntryError,
    ConflictError,
    FormatError,
    IgnoredEntryWarning,
    KeyblobError,
    NotFoundError,
    ProviderError,
    StorageError,
    UsageError,
    VerificationError,
)
from keyblob.format import Header, KeyBlob, PublicKeyFile, Recipient
from keyblob.format.armor import BLOB, dearmor, is_armored
from keyblob.format.blob import MAX_RECIPIENTS, MAX_REVISION
from keyblob.keys import (
    MAX_GENERATION,
    Algorithm,
    KeyId,
    KeyRole,
    SessionKey,
    Suite,
    _make_session_key,
    check_name,
    key_id_for,
)
from keyblob.providers import suites
from keyblob.providers.base import (
    CapiKeys,
    OldKey,
    Provider,
    RotatingKeys,
    check_old_key_room,
)
from keyblob.storage import Store
from keyblob.trust import (
    MAX_EPOCH,
    CapiSigner,
    PreviousSigner,
    State,
    require_capi_signer,
    require_trusted,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyblob import mscapi

#: Fixed messages, one per check (never an oracle: none says more than which check failed).
WRONG_NAME = "the blob is for key {actual!r}, not {expected!r}"
WRONG_KEY_ID = "the blob holds key id {actual}, not the expected {expected}"
WRONG_GENERATION = (
    "the store holds it as generation {stored}, but it is signed as generation {signed}"
)
ROLLED_BACK = (
    "rolled back: {name} generation {generation} is older than generation {floor}, "
    "which this container has already seen"
)
REVISION_ROLLED_BACK = (
    "rolled back: {name} generation {generation} is revision {revision}, older than revision "
    "{floor} this container has already seen (an older recipient list was put back)"
)
MISSING_LATEST = (
    "rolled back: the store's newest {name} is generation {latest}, but this container "
    "has already seen generation {floor}"
)
MISSING_NAME = (
    "rolled back: the store has no {name}, but this container has already seen its "
    "generation {floor}"
)
NOT_A_RECIPIENT = "the blob is not wrapped for this container's exchange key {kx}"
WRONG_SUITE = "the blob uses suite {blob}, but this container uses suite {own}"
SWAPPED_EXCHANGE = (
    "public key file {label!r}: its signature key {signer} is known here with another "
    "exchange key; the file was changed after that key was trusted"
)
UNUSABLE_SIGNER = "{signer} is trusted, but its key cannot be used: {why}"
EARLIER_SIGNER = (
    "signed by {signer}, a signature key this container replaced, which is trusted only for "
    "what it signed before: {name} generation {generation} {why}"
)
BAD_KEY_LENGTH = "the unwrapped key has the wrong length for its algorithm"
OCCUPIED = (
    "the store already holds a different blob of {name} generation {generation} ({stored}); "
    "this one has key id {key_id}, signed by {signer}: nothing was changed"
)
IGNORED = "ignored {name} generation {generation}: {reason}; run keyblob store check"
CHECK_HINT = (
    "list the entries that fail verification with: keyblob store check; move those no "
    "trusted signer made aside with: keyblob store set-aside {name}"
)
LAST_GENERATION = (
    "{name} generation {generation} is taken by an entry that fails verification here, and "
    "no generation comes after it"
)
VALID_ENTRY = (
    "{name} generation {generation} verifies here: only entries that fail verification "
    "are moved aside"
)
NO_KEY = "no key named {name} in {store}"
NOT_A_RECIPIENT_HINTS = (
    "this generation was not wrapped for this container: only a container it was wrapped for "
    "can open it; ask a holder of the key to share it with you (keyblob share NAME --to "
    "your public key file), or to re-export it for you",
    "rotating, or a new key wrapped --to your public key file, makes a new key that opens "
    "only data encrypted after it, never this file",
)
RETIRED = "{name} generation {generation} was retired (keyblob retire {name} --below {below})"
RETIRED_HINT = (
    "a retired generation is never used again by this container: data encrypted under it "
    "is no longer readable here",
)
RESTORE_HINT = (
    "an older blob was put in place of a newer one, or the newest was deleted; "
    "restore the newest from a backup",
)


def _did_you_mean(store: Store, name: str) -> tuple[str, ...]:
    """No generation of ``name`` is stored: the one hint naming the stored names closest
    to it, if any is close."""
    close = difflib.get_close_matches(name, store.names(), n=3)
    return (f"did you mean {' or '.join(close)}?",) if close else ()


def _no_key(store: Store, name: str) -> NotFoundError:
    return NotFoundError(
        NO_KEY.format(name=name, store=store.location), hints=_did_you_mean(store, name)
    )


def _missing_hints(store: Store) -> tuple[str, ...]:
    where = f"or {store.location} is not the store this container's keys are in (--store)"
    return (*RESTORE_HINT, where)


@dataclass(frozen=True)
class Skipped:
    """A store entry above the generation used that failed verification: not used."""

    name: str
    generation: int
    reason: str


@dataclass(frozen=True)
class Verified:
    """A blob that passed every check, with the session key it holds (if it was unwrapped),
    and the newer entries passed over to find it (FORMAT.md 2.9)."""

    blob: KeyBlob
    encoded: bytes
    key: SessionKey | None
    skipped: tuple[Skipped, ...] = ()

    @property
    def header(self) -> Header:
        return self.blob.header

    @property
    def recipients(self) -> tuple[KeyId, ...]:
        return tuple(r.key_id for r in self.blob.recipients)


def decode(data: bytes) -> KeyBlob:
    """Parse a key blob, binary or armored (step 1).

    Raises:
        FormatError: not a well-formed version 1 key blob.
    """
    if is_armored(data):
        data = dearmor(data, BLOB)
    return KeyBlob.from_bytes(data)


def _recipient_keys(
    provider: Provider, to: Sequence[PublicKeyFile]
) -> list[tuple[KeyId, suites.ExchangePublic]]:
    out = [
        (
            provider.exchange_id,
            suites.load_exchange_public(provider.suite, provider.exchange_public),
        )
    ]
    for pub in to:
        if pub.suite is not provider.suite:
            raise UsageError(
                f"recipient {pub.label!r} uses suite {pub.suite.label}; this container uses "
                f"{provider.suite.label}"
            )
        if all(pub.exchange_id != kid for kid, _ in out):
            out.append((pub.exchange_id, suites.load_exchange_public(pub.suite, pub.exchange)))
    return out


def with_recovery_recipients(
    provider: Provider, state: State, recipients: list[tuple[KeyId, suites.ExchangePublic]]
) -> list[tuple[KeyId, suites.ExchangePublic]]:
    """``recipients`` and, after them, the container's recovery recipients (FORMAT.md 5.2:
    every new blob is wrapped for them as well), each once.

    Raises:
        UsageError: that would be more than the 16 recipients a blob holds (2.3).
    """
    out = list(recipients)
    for r in state.recovery:
        if all(r.key_id != kid for kid, _ in out):
            out.append((r.key_id, suites.load_exchange_public(provider.suite, r.exchange)))
    if len(out) > MAX_RECIPIENTS:
        extra = len(out) - len(recipients)
        raise UsageError(
            f"{len(recipients)} recipients and {extra} recovery recipients make {len(out)}, "
            f"over the {MAX_RECIPIENTS} a blob holds: give fewer --to, or remove a recovery "
            "recipient (keyblob recovery list)"
        )
    return out


def check_known_exchange(provider: Provider, state: State, pub: PublicKeyFile) -> None:
    """A public key file whose signature key this container knows (its own, or trusted)
    must carry the exchange key known with it: a swapped exchange key is how a file
    tampered with in transit would get session keys wrapped for someone else (FORMAT.md 3.1).

    Raises:
        VerificationError: the file pairs a known signature key with another exchange key.
    """
    if pub.signature_id == provider.signature_id:
        known: bytes | None = provider.exchange_public
    else:
        signer = state.signer(pub.signature_id)
        known = signer.exchange if signer is not None else None
    if known is not None and known != pub.exchange:
        raise VerificationError(
            SWAPPED_EXCHANGE.format(label=pub.label, signer=f"sg-{pub.signature_id.short}"),
            hints=("compare the file's fingerprint with its owner: keyblob inspect FILE",),
        )


def _export(
    provider: Provider,
    *,
    name: str,
    generation: int,
    algorithm: Algorithm,
    recipients: list[tuple[KeyId, suites.ExchangePublic]],
    key: bytes | None,
    random: Callable[[int], bytes],
    now: Callable[[], int],
    revision: int = 0,
) -> tuple[bytes, SessionKey]:
    """FORMAT.md 2.6, export steps 1-5; ``revision``: the first of the container's epoch
    (0 until it first replaced its signature key)."""
    # 1. a fresh session key (unless one made elsewhere is being stored) and a random key id
    key_bytes = random(algorithm.key_size) if key is None else key
    key_id = KeyId(random(16))
    header = Header(  # 2. the header
        suite=provider.suite,
        algorithm=algorithm,
        generation=generation,
        created=now(),
        key_id=key_id,
        signer_id=provider.signature_id,
        name=name,
        revision=revision,
    )
    wrapped = tuple(  # 3. one wrap per recipient, bound to the header and the recipient
        Recipient(rid, suites.wrap(public, key_bytes, header.wrap_context(rid)))
        for rid, public in recipients
    )
    blob = KeyBlob.signed(header, wrapped, provider.sign)  # 4-5. sign every byte before; encode
    session = _make_session_key(
        name=name,
        key_id=key_id,
        generation=generation,
        algorithm=algorithm,
        created=header.created,
        key=key_bytes,
    )
    return blob.to_bytes(), session


def _now() -> int:
    return int(time.time())


def generate(
    provider: Provider,
    store: Store,
    name: str,
    *,
    algorithm: Algorithm = Algorithm.AES_256_GCM,
    to: Sequence[PublicKeyFile] = (),
    legacy: bool = False,
    _key: bytes | None = None,
) -> SessionKey:
    """Make a new session key ``name`` (generation 1), export it signed, and store it.

    The key is wrapped for the container itself and for every public key file in ``to``.
    A legacy CryptoAPI algorithm (DES, 3DES, RC2, RC4) needs ``legacy=True``.

    Raises:
        UsageError: invalid name, ``name`` exists already (use :func:`rotate`; also when
            another writer created it while this call ran: a ConflictError of generation 1
            is reported so, since a retry could only find the name taken), or a legacy
            algorithm without ``legacy=True``.
        VerificationError: the home state was tampered with, or the store lost ``name``.
        StorageError: the store could not be written.
    """
    check_name(name)
    _check_legacy(algorithm, legacy)
    recipients = _recipient_keys(provider, to)

    def is_new(state: State) -> None:
        latest = store.latest(name)
        if latest is not None:
            raise UsageError(
                f"{name} exists already (generation {latest}): use keyblob rotate {name}"
            )
        if floor := state.generation_floor(name):
            raise VerificationError(
                MISSING_NAME.format(name=name, floor=floor),
                hints=_missing_hints(store),
            )

    try:
        return _store_new(
            provider,
            store,
            name=name,
            generation=1,
            algorithm=algorithm,
            recipients=recipients,
            key=_key,
            to=to,
            check=is_new,
        )
    except ConflictError:
        # Another writer created the name between the check and the put.  Running this
        # again could only find that the name exists: no retry (retrying), the usual answer.
        raise UsageError(
            f"{name} exists already: another writer created it while this ran: "
            f"use keyblob rotate {name}"
        ) from None


def _store_new(
    provider: Provider,
    store: Store,
    *,
    name: str,
    generation: int,
    algorithm: Algorithm,
    recipients: list[tuple[KeyId, suites.ExchangePublic]],
    key: bytes | None,
    to: Sequence[PublicKeyFile],
    check: Callable[[State], None] = lambda state: None,
) -> SessionKey:
    """Export, store and record ``generation`` of ``name`` as one step under the state lock.

    The state is read once; the ``to`` files are checked against it (FORMAT.md 3.1), then
    ``check`` sees it, and the high-water mark is written only after the blob is durable in
    the store.  No other keyblob process can change the state between the checks and the
    record.
    """
    made: list[SessionKey] = []

    def record(state: State) -> State:
        for pub in to:
            check_known_exchange(provider, state, pub)
        check(state)
        _check_retired(state, name, generation)  # never a new blob below a retirement
        # At the container's epoch (FORMAT.md 2.6 step 2): an earlier signature key, whose
        # epoch is below it, never speaks for a generation made since (2.7 step 2 c).
        revision = state.epoch << EPOCH_SHIFT
        encoded, session = _export(
            provider,
            name=name,
            generation=generation,
            algorithm=algorithm,
            recipients=with_recovery_recipients(provider, state, recipients),
            key=key,
            random=secrets.token_bytes,
            now=_now,
            revision=revision,
        )
        store.put(name, generation, encoded)  # create-only: never overwrites a concurrent writer
        made.append(session)
        return state.seen(name, generation, store=store.identity, revision=revision)

    provider.update_state(record)
    return made[0]


def rotate(
    provider: Provider,
    store: Store,
    name: str,
    *,
    algorithm: Algorithm | None = None,
    to: Sequence[PublicKeyFile] = (),
    legacy: bool = False,
    _key: bytes | None = None,
) -> SessionKey:
    """Make the next generation of ``name``: a new key, verified predecessor, same recipients.

    The latest generation is loaded and fully verified first (:func:`open_latest`: entries
    above it that fail verification are reported, not used); the new generation is above
    every stored one.  Its other recipients are
    wrapped for again when their public keys are known (given in ``to`` or trusted).

    Raises:
        NotFoundError: no generation of ``name`` is stored.
        VerificationError: no generation at or above the high-water mark verifies (or
            rollback).
        UsageError: a previous recipient's public key is unknown: pass it in ``to``; a
            legacy algorithm without ``legacy=True``; or no generation is left above every
            stored one (an entry at the last generation: :func:`set_aside_untrusted`).
        ConflictError: another writer stored the next generation first; nothing was
            changed, and running this again (:func:`retrying`) rotates from theirs.
    """
    current = open_latest(provider, store, name)
    algorithm = algorithm or current.header.algorithm
    _check_legacy(algorithm, legacy)
    recipients = _recipient_keys(provider, to)
    known = {kid for kid, _ in recipients}
    state = provider.state()
    by_id = {key_id_for(s.suite, KeyRole.EXCHANGE, s.exchange): s.exchange for s in state.trusted}
    recovery = {r.key_id for r in state.recovery}  # added again under the lock (_store_new)
    for rid in current.recipients:
        if rid in known or rid in recovery:
            continue
        exchange = by_id.get(rid)
        if exchange is None:
            raise UsageError(
                f"{name} generation {current.header.generation} is also wrapped for "
                f"kx-{rid.short}, whose public key is not trusted here: "
                "pass its public key file with --to"
            )
        recipients.append((rid, suites.load_exchange_public(provider.suite, exchange)))
        known.add(rid)
    # Above every occupied slot (a planted entry too: the put is create-only) and the mark.
    occupied = max(store.latest(name) or 0, state.generation_floor(name))
    if occupied >= MAX_GENERATION:
        hint = f"move it aside: keyblob store set-aside {name}, then rotate again"
        if current.header.generation >= MAX_GENERATION:
            raise UsageError(f"{name} is at its last generation: store the key under a new name")
        raise UsageError(
            LAST_GENERATION.format(name=name, generation=MAX_GENERATION), hints=(hint,)
        )
    return _store_new(
        provider,
        store,
        name=name,
        generation=max(occupied, current.header.generation) + 1,
        algorithm=algorithm,
        recipients=recipients,
        key=_key,
        to=to,
    )


# -- Re-wrapping one (name, generation): share, unshare, rewrap (FORMAT.md 2.6.1) ------------

#: A target recipient list: exchange key ids with their public keys, as _recipient_keys
#: makes them.
Recipients = Sequence[tuple[KeyId, suites.ExchangePublic]]


@dataclass(frozen=True)
class Rewrapped:
    """What :func:`rewrap_blob` did to one (name, generation)."""

    name: str
    generation: int
    key_id: KeyId
    #: The revision stored now: one above the one read, or the one read if nothing changed.
    revision: int
    #: The recipients of the blob stored now, in its order.
    recipients: tuple[KeyId, ...]
    added: tuple[KeyId, ...]
    removed: tuple[KeyId, ...]
    #: Who had signed the blob that was read (a re-wrap is signed by this container: when
    #: another container had signed it, only containers that trust this one accept it now).
    signed_before: KeyId | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def rewrap_blob(
    provider: Provider,
    store: Store,
    name: str,
    generation: int,
    recipients: Recipients,
) -> Rewrapped:
    """Wrap the session key of the stored (``name``, ``generation``) for exactly
    ``recipients``, as its next revision, and replace the stored entry with it by
    compare-and-set (FORMAT.md 2.6.1).

    The entry is verified first (import steps 1-5, the revision rule included) and unwrapped
    in the provider; the new blob keeps name, generation, key id, algorithm, created time and
    session key, is signed by this container, and has the next revision of this container's
    epoch (:func:`next_revision`).  The container's own
    exchange key must be among ``recipients`` (it is put first; the others keep their order).
    When the entry already has exactly these recipients nothing is written (a rerun after
    success).  The revision mark is raised in the same state write as the high-water mark,
    under the state lock, after the store holds the new bytes.

    Raises:
        UsageError: ``recipients`` lacks this container's own key, repeats one, or has more
            than 16; or the entry is at the last revision.
        NotFoundError: nothing is stored there.
        VerificationError, FormatError: the entry does not verify here (or is older than a
            revision already seen).
        ReplaceConflictError: another writer changed the entry between the read and the
            replace; nothing was changed, and running this again (:func:`retrying`) starts
            from theirs.
    """
    check_name(name)
    target = _target(provider, recipients)
    verified = open_stored(provider, store, name, generation, unwrap=False, record=False)
    return _rewrap_verified(provider, store, verified, target)


def _rewrap_verified(
    provider: Provider,
    store: Store,
    verified: Verified,
    target: list[tuple[KeyId, suites.ExchangePublic]],
) -> Rewrapped:
    """:func:`rewrap_blob` from its read on: ``verified`` (the entry as read from ``store``,
    steps 1-5) wrapped for ``target`` (checked by :func:`_target`), the stored bytes replaced
    by compare-and-set against those read."""
    h = verified.header
    name, generation = h.name, h.generation
    before = verified.recipients
    wanted = tuple(rid for rid, _ in target)
    if set(before) == set(wanted):  # already so: a rerun, or nothing asked
        record_seen(provider, store, {name: generation}, revisions={(name, generation): h.revision})
        return Rewrapped(name, generation, h.key_id, h.revision, before, (), (), h.signer_id)
    try:  # the next revision, of this container's epoch (FORMAT.md 2.7 step 2)
        revision = next_revision(provider.state(), h.revision)
    except UsageError:
        raise UsageError(
            f"{name} generation {generation} is at its last revision: rotate it "
            f"(keyblob rotate {name}) and share the new generation"
        ) from None
    raw = _unwrap_raw(provider, verified.blob)  # 6. in the provider, after steps 1-5
    header = replace(h, signer_id=provider.signature_id, revision=revision)
    new = _signed_again(provider, header, raw, target).to_bytes()
    identity = store.identity

    def record(state: State) -> State:
        store.replace(name, generation, verified.encoded, new)  # compare-and-set
        return state.seen(name, generation, store=identity, revision=header.revision)

    provider.update_state(record)
    return Rewrapped(
        name,
        generation,
        h.key_id,
        header.revision,
        wanted,
        tuple(r for r in wanted if r not in before),
        tuple(r for r in before if r not in wanted),
        h.signer_id,
    )


def _target(
    provider: Provider, recipients: Recipients
) -> list[tuple[KeyId, suites.ExchangePublic]]:
    """The target list, the container's own key first (FORMAT.md 2.3), checked."""
    ids = [rid for rid, _ in recipients]
    if len(set(ids)) != len(ids):
        raise UsageError("a recipient is given twice")
    if provider.exchange_id not in ids:
        raise UsageError(
            f"this container's own exchange key kx-{provider.exchange_id.short} must stay a "
            "recipient"
        )
    if len(ids) > MAX_RECIPIENTS:
        raise UsageError(f"a key blob has at most {MAX_RECIPIENTS} recipients, not {len(ids)}")
    own = [(rid, pub) for rid, pub in recipients if rid == provider.exchange_id]
    return own + [(rid, pub) for rid, pub in recipients if rid != provider.exchange_id]


def known_recipients(
    provider: Provider,
    state: State,
    wanted: Iterable[KeyId],
    to: Sequence[PublicKeyFile] = (),
    *,
    what: str,
) -> list[tuple[KeyId, suites.ExchangePublic]]:
    """The public keys of the exchange key ids ``wanted``, from this container, the files
    ``to`` and the trusted signers (in that order of preference).

    Raises:
        UsageError: a key id whose public key is none of them (``what`` names the blob).
    """
    by_id = {rid: public for rid, public in _recipient_keys(provider, to)}
    for signer in state.trusted:
        rid = key_id_for(signer.suite, KeyRole.EXCHANGE, signer.exchange)
        if rid not in by_id and signer.suite is provider.suite:
            by_id[rid] = suites.load_exchange_public(signer.suite, signer.exchange)
    out = []
    for rid in wanted:
        public = by_id.get(rid)
        if public is None:
            raise UsageError(
                f"{what} is also wrapped for kx-{rid.short}, whose public key is not trusted "
                "here: pass its public key file with --to"
            )
        out.append((rid, public))
    return out


def _chosen_generations(
    provider: Provider, store: Store, name: str, generation: int | None, every: bool
) -> tuple[list[int], list[Skipped]]:
    """Which generations share/unshare change: the newest (by :func:`open_latest`'s rules),
    the one asked for, or with ``every`` each stored one that verifies (the others are
    returned as skipped, never changed)."""
    if generation is not None and every:
        raise UsageError("give a generation or --all, not both")
    if generation is not None:
        return [generation], []
    if not every:
        return [
            open_latest(provider, store, name, unwrap=False, record=False).header.generation
        ], []
    state = provider.state()
    policy = CheckPolicy.of(provider, state)
    stored = store.generations(name)
    if not stored:
        raise _no_key(store, name)
    chosen, skipped = [], []
    for g in stored:
        try:
            data = store.get(name, g)
            verified = _verify_at(policy, name, g, data, key_id=None, marks=state)
            _check_retired(state, name, g)  # a retired generation is left as it is
            _check_revision(state, verified.header)
        except (FormatError, VerificationError, NotFoundError, BadEntryError) as e:
            skipped.append(Skipped(name, g, str(e)))
            continue
        chosen.append(g)
    if not chosen:
        raise VerificationError(f"no stored generation of {name} verifies here")
    return chosen, skipped


@dataclass(frozen=True)
class Shared:
    """What :func:`share` or :func:`unshare` did: one result per generation changed (or
    already so), and the generations passed over because they do not verify here."""

    results: tuple[Rewrapped, ...]
    skipped: tuple[Skipped, ...] = ()


def share(
    provider: Provider,
    store: Store,
    name: str,
    to: Sequence[PublicKeyFile],
    *,
    generation: int | None = None,
    every: bool = False,
    on_retry: Callable[[ConflictError, int, int], None] | None = None,
) -> Shared:
    """Wrap the existing session key of ``name`` for the recipients in ``to`` as well (same
    key id: data encrypted under it opens for them), keeping its present recipients.

    The newest generation by default, ``generation`` only, or with ``every`` each stored
    generation that verifies here.  Each is re-wrapped as by :func:`rewrap_blob`, under
    :func:`retrying` (a lost compare-and-set starts again from what is stored).

    Raises:
        UsageError: no file given, a file of another suite, both ``generation`` and
            ``every``, a present recipient whose public key is unknown (pass it in ``to``),
            or more than 16 recipients.
        NotFoundError, VerificationError, FormatError: as for :func:`open_latest` and
            :func:`open_stored`; a file pairing a known signature key with another exchange
            key (:func:`check_known_exchange`).
        ConflictError: every attempt lost to another writer.
    """
    check_name(name)
    if not to:
        raise UsageError("share needs at least one public key file (--to FILE)")
    state = provider.state()
    for pub in to:
        check_known_exchange(provider, state, pub)
    _recipient_keys(provider, to)  # suites checked before anything is read
    chosen, skipped = _chosen_generations(provider, store, name, generation, every)
    added = [pub.exchange_id for pub in to]

    def one(g: int) -> Rewrapped:
        present = open_stored(provider, store, name, g, unwrap=False, record=False)
        # This container's own key first: a blob not wrapped for it fails at the unwrap
        # ("not a recipient"), not as a request to drop it.
        wanted = list(dict.fromkeys([provider.exchange_id, *present.recipients, *added]))
        return _rewrap_to(provider, store, present, wanted, to)

    return Shared(_each(chosen, one, on_retry), tuple(skipped))


def unshare(
    provider: Provider,
    store: Store,
    name: str,
    recipient: KeyId,
    *,
    generation: int | None = None,
    every: bool = False,
    to: Sequence[PublicKeyFile] = (),
    on_retry: Callable[[ConflictError, int, int], None] | None = None,
) -> Shared:
    """Wrap the session key of ``name`` again without ``recipient``: later loads of the
    stored blob no longer include it.  A removed recipient may have kept the key (or the
    earlier blob): only a new key (:func:`rotate`) cuts them off from later data.

    Generations are chosen as by :func:`share`; one that ``recipient`` is not a recipient of
    is left as it is (its result has no change).  ``to``: public key files of remaining
    recipients that are not trusted here.

    Raises:
        UsageError: ``recipient`` is this container's own exchange key, or as :func:`share`.
        NotFoundError, VerificationError, FormatError, ConflictError: as for :func:`share`.
    """
    check_name(name)
    if recipient == provider.exchange_id:
        raise UsageError(
            f"kx-{recipient.short} is this container's own exchange key: it cannot be "
            "removed (a key blob is always wrapped for the container that signs it)"
        )
    _recipient_keys(provider, to)
    chosen, skipped = _chosen_generations(provider, store, name, generation, every)

    def one(g: int) -> Rewrapped:
        present = open_stored(provider, store, name, g, unwrap=False, record=False)
        if recipient not in present.recipients:  # not a recipient (any more): nothing to do
            h = present.header
            return Rewrapped(name, g, h.key_id, h.revision, present.recipients, (), (), h.signer_id)
        wanted = [
            r for r in dict.fromkeys([provider.exchange_id, *present.recipients]) if r != recipient
        ]
        return _rewrap_to(provider, store, present, wanted, to)

    return Shared(_each(chosen, one, on_retry), tuple(skipped))


def _rewrap_to(
    provider: Provider,
    store: Store,
    present: Verified,
    wanted: Sequence[KeyId],
    to: Sequence[PublicKeyFile],
) -> Rewrapped:
    """One generation of :func:`share` or :func:`unshare`: the entry ``present``, read and
    verified once, re-wrapped for the key ids ``wanted`` (their public keys as
    :func:`known_recipients` finds them)."""
    h = present.header
    what = f"{h.name} generation {h.generation}"
    recipients = known_recipients(provider, provider.state(), wanted, to, what=what)
    return _rewrap_verified(provider, store, present, _target(provider, recipients))


def _each(
    generations: Sequence[int],
    one: Callable[[int], Rewrapped],
    on_retry: Callable[[ConflictError, int, int], None] | None,
) -> tuple[Rewrapped, ...]:
    """``one`` for each generation, each retried on a lost compare-and-set; in order, so
    an interruption leaves the earlier ones done (a rerun skips them: nothing to do)."""
    return tuple(retrying(functools.partial(one, g), on_retry=on_retry) for g in generations)


@dataclass(frozen=True)
class Retirement:
    """What :func:`retire` did: generations of ``name`` below ``below`` are retired (they
    were below ``before`` already; 0: none), ``newest`` is the newest generation, verified."""

    name: str
    below: int
    before: int
    newest: int

    @property
    def changed(self) -> bool:
        return self.below != self.before


def retire(provider: Provider, store: Store, name: str, below: int) -> Retirement:
    """Retire every generation of ``name`` below ``below`` (FORMAT.md 5.2.8): from now on
    no load of one succeeds (a VerificationError naming the retirement, before any unwrap)
    and no new blob is written below it.  Recorded in the authenticated state; a retirement
    is never lowered.

    The newest generation is loaded and verified first (and recorded as seen: a store that
    later lacks it is a rollback), and must stay usable: ``below`` is at most its generation.

    Raises:
        UsageError: ``below`` under 2, above the newest generation (that would retire every
            generation: rotate first), or under the present retirement (never lowered).
        NotFoundError: the store has no generation of ``name``.
        VerificationError, FormatError: as :func:`open_latest`.
    """
    check_name(name)
    if type(below) is not int or below < 2:
        raise UsageError("--below must be 2 or more: it is the oldest generation that stays usable")
    newest = open_latest(provider, store, name, unwrap=False).header.generation
    if below > newest:
        raise UsageError(
            f"{name}'s newest generation is {newest}: retiring below {below} would retire "
            f"every generation; make a new one first (keyblob rotate {name}), then retire "
            "below it"
        )
    before: list[int] = []

    def change(state: State) -> State:
        present = state.retired_below(name)
        if below < present:
            raise UsageError(
                f"{name} is already retired below generation {present}: a retirement is never "
                f"lowered (generations {below} to {present - 1} stay retired)"
            )
        before.append(present)
        return state.with_retired(name, below)

    provider.update_state(change)
    return Retirement(name, below, before[0], newest)


def store_key(
    provider: Provider,
    store: Store,
    name: str,
    key: bytes,
    *,
    algorithm: Algorithm,
    rotate_existing: bool = False,
    to: Sequence[PublicKeyFile] = (),
) -> SessionKey:
    """Store a session key made elsewhere (a CryptoAPI SIMPLEBLOB) as a signed key blob.

    As generation 1 of a new name, or with ``rotate_existing`` as the next generation of an
    existing one.  Importing a legacy key is allowed (it is only read); it warns.

    Raises:
        UsageError: the key's length does not fit ``algorithm``, or the name exists (and
            ``rotate_existing`` is False).
        NotFoundError, VerificationError: as for :func:`rotate` with ``rotate_existing``.
    """
    if len(key) not in algorithm.key_sizes:
        raise UsageError(f"a {algorithm.label} key cannot be {len(key)} bytes long")
    if not rotate_existing and (latest := store.latest(name)) is not None:
        raise UsageError(
            f"{name} exists already (generation {latest}): store the key as its next "
            "generation with --rotate, or choose another --name"
        )
    # legacy=True: importing a legacy key is allowed; generate/rotate give its one warning.
    if rotate_existing:
        return rotate(provider, store, name, algorithm=algorithm, to=to, legacy=True, _key=key)
    return generate(provider, store, name, algorithm=algorithm, to=to, legacy=True, _key=key)


def _warn_legacy(algorithm: Algorithm) -> None:
    """The one LegacyAlgorithmWarning, under the CryptoAPI name (CALG_RC4...) mscapi uses."""
    # Imported here: only legacy keys need it, and keyblob.mscapi costs start-up time.
    from keyblob.mscapi.algids import alg_name, warn_legacy  # noqa: PLC0415

    warn_legacy(alg_name(algorithm.capi_alg_id) if algorithm.capi_alg_id else algorithm.label)


def _check_legacy(algorithm: Algorithm, allowed: bool) -> None:
    if not algorithm.legacy:
        return
    if not allowed:
        raise UsageError(
            f"{algorithm.label} is a legacy algorithm, kept to read old data: "
            "new keys need --legacy"
        )
    _warn_legacy(algorithm)


@dataclass(frozen=True)
class CheckPolicy:
    """What import steps 1-4 need, and nothing secret: the container's suite, its own
    signature public key, and the signers it trusts (public keys and scopes).

    Frozen and picklable: it is all that signature-check workers get (:mod:`keyblob.pool`).
    No private key, passphrase or high-water mark is in it.
    """

    suite: Suite
    own_id: KeyId
    own_public: bytes
    #: The trusted signers only (no high-water mark, no CryptoAPI signer).
    trust: State = field(default_factory=State)
    #: The container's earlier signature keys (FORMAT.md 5.2.8 ``previous``): trusted only
    #: within the limits of :func:`check_earlier_signer`, which needs the marks.
    previous: tuple[PreviousSigner, ...] = ()

    def earlier(self, key_id: KeyId) -> PreviousSigner | None:
        """The earlier signature key ``key_id`` of this container, if it is one (and not
        the current key)."""
        if key_id == self.own_id:
            return None
        return next((p for p in self.previous if p.key_id == key_id), None)

    @classmethod
    def of(cls, provider: Provider, state: State) -> CheckPolicy:
        """The policy of ``provider`` with the trusted signers of ``state``."""
        return cls(
            provider.suite,
            provider.signature_id,
            provider.signature_public,
            State(trusted=state.trusted),
            state.previous,
        )


def _verify(
    provider: Provider,
    state: State,
    data: bytes,
    *,
    name: str | None,
    key_id: KeyId | None,
) -> Verified:
    """FORMAT.md 2.7, import steps 1-4.  The callers run step 5 (it depends on where the
    blob came from) and only then step 6, :func:`_unwrapped`."""
    return _verify_under(
        CheckPolicy.of(provider, state), data, name=name, key_id=key_id, marks=state
    )


#: FORMAT.md 2.7 step 2: the top 8 bits of a revision are its epoch.  A container writes
#: its re-wraps at its current epoch or above (:func:`next_revision`), and gives each
#: signature key it replaces the highest epoch it may have signed at (:func:`rotate_own_keys`).
EPOCH_SHIFT = 24


def epoch_of(revision: int) -> int:
    """The epoch of a revision (FORMAT.md 2.7 step 2): ``revision >> 24``."""
    return revision >> EPOCH_SHIFT


def next_revision(state: State, revision: int) -> int:
    """The revision a container writes when it re-signs a blob of revision ``revision``
    (``rewrap``, ``share``, ``unshare``, ``recover``): the next one, and at least the first
    of the container's current epoch, ``state.epoch << 24`` (FORMAT.md 2.6.1, 2.7 step 2),
    so that no earlier signature key of it can speak for it.

    Raises:
        UsageError: no revision is left (2**32 - 1 reached).
    """
    following = max(revision + 1, state.epoch << EPOCH_SHIFT)
    if following > MAX_REVISION:
        raise UsageError("this generation has no revision left: rotate the key instead")
    return following


def check_earlier_signer(
    state: State, signer: PreviousSigner, name: str, generation: int, revision: int
) -> None:
    """Step 2 for an earlier signature key of this container (FORMAT.md 2.7 step 2).  A
    key replaced with epoch e (5.2.8: every revision mark was of epoch e or below then, and
    this container has written at epoch e + 1 or above since) speaks only for what it could
    have signed and this container has seen: a generation <= hw(name) (it never introduces
    a generation), at exactly the revision mark of (name, generation) (it never introduces
    a revision), whose epoch is <= e (once ``rewrap`` or ``share`` re-signed that generation
    with a later key, above e, the old key no longer speaks for it).

    Raises:
        VerificationError: outside those limits.
    """
    floor = state.generation_floor(name)
    mark = state.revision_floor(name, generation)
    why = None
    if generation > floor:
        why = f"is above the newest generation this container has seen ({floor})"
    elif revision != mark:
        why = f"is at revision {revision}, not the one this container has seen ({mark})"
    elif epoch_of(mark) > signer.epoch:
        why = "was re-signed since with a later key"
    if why is not None:
        raise VerificationError(
            EARLIER_SIGNER.format(
                signer=f"sg-{signer.key_id.short}", name=name, generation=generation, why=why
            ),
            hints=("the blob may have been forged with an old key; run keyblob store check",),
        )


def _verify_under(
    policy: CheckPolicy,
    data: bytes,
    *,
    name: str | None,
    key_id: KeyId | None,
    marks: State | None,
) -> Verified:
    """Steps 1-4 with public data only: what :func:`_verify` and the workers run.

    ``marks``: the state whose marks limit an earlier signature key (step 2,
    :func:`check_earlier_signer`).  None only in a worker, which has no marks: the caller
    (:func:`check_entries`) then applies that limit to every entry an earlier key signed.
    """
    blob = decode(data)  # 1. parse
    h = blob.header
    if h.suite is not policy.suite:
        raise VerificationError(WRONG_SUITE.format(blob=h.suite.label, own=policy.suite.label))
    earlier = policy.earlier(h.signer_id)
    if earlier is not None:  # 2. an earlier key of this container: only within its limits
        if marks is not None:
            check_earlier_signer(marks, earlier, h.name, h.generation, h.revision)
        signer_public = earlier.public
    else:  # 2. the signer is trusted, for this name
        signer_public = require_trusted(
            policy.own_id, policy.own_public, policy.trust, h.signer_id, h.name
        )
    try:  # a key trusted before keys were checked (FORMAT.md 1.3) verifies nothing
        public = suites.load_signature_public(h.suite, signer_public)
    except FormatError as e:
        raise VerificationError(
            UNUSABLE_SIGNER.format(signer=f"sg-{h.signer_id.short}", why=e),
            hints=(f"remove it: keyblob trust remove {h.signer_id.hex}",),
        ) from None
    suites.verify(public, blob.signature, blob.signed_message())  # 3. signature
    if name is not None and h.name != name:  # 4. what was asked for
        raise VerificationError(WRONG_NAME.format(actual=h.name, expected=name))
    if key_id is not None and h.key_id != key_id:
        raise VerificationError(WRONG_KEY_ID.format(actual=h.key_id.short, expected=key_id.short))
    return Verified(blob, blob.to_bytes(), None)  # the parsed bytes: canonical


def _check_floor(state: State, header: Header) -> None:
    """Step 5: the generation is not below the high-water mark."""
    floor = state.generation_floor(header.name)
    if header.generation < floor:
        raise VerificationError(
            ROLLED_BACK.format(name=header.name, generation=header.generation, floor=floor),
            hints=RESTORE_HINT,
        )
    _check_revision(state, header)


def _check_revision(state: State, header: Header) -> None:
    """Step 5, revision (FORMAT.md 2.7): for every load, latest or not, the blob's revision
    is not below the highest this container has seen for its (name, generation): a re-wrap
    (share, unshare, rewrap) cannot be undone by putting the earlier bytes back."""
    floor = state.revision_floor(header.name, header.generation)
    if header.revision < floor:
        raise VerificationError(
            REVISION_ROLLED_BACK.format(
                name=header.name,
                generation=header.generation,
                revision=header.revision,
                floor=floor,
            ),
            hints=(
                "someone who can write the store put back an earlier recipient list of this "
                "key; restore the newest from a backup, or share it again",
            ),
        )


def _check_retired(state: State, name: str, generation: int) -> None:
    """Step 5: ``generation`` of ``name`` is not retired (FORMAT.md 5.2.8 ``retired``).

    Raises:
        VerificationError: it is, naming the retirement.
    """
    below = state.retired_below(name)
    if generation < below:
        raise VerificationError(
            RETIRED.format(name=name, generation=generation, below=below), hints=RETIRED_HINT
        )


def _unwrapped(provider: Provider, verified: Verified) -> Verified:
    """Step 6: unwrap for this container; the key must fit its algorithm."""
    h = verified.blob.header
    raw = _unwrap_raw(provider, verified.blob)
    key = _make_session_key(
        name=h.name,
        key_id=h.key_id,
        generation=h.generation,
        algorithm=h.algorithm,
        created=h.created,
        key=raw,
    )
    return replace(verified, key=key)


def _unwrap_raw(provider: Provider, blob: KeyBlob) -> bytes:
    """Step 6's unwrap, with whichever of this container's exchange keys the blob names:
    the current one first, then those keys rotate replaced (FORMAT.md 2.7 step 6)."""
    h = blob.header
    mine = next((r for r in map(blob.recipient, provider.exchange_ids) if r is not None), None)
    if mine is None:
        raise VerificationError(
            NOT_A_RECIPIENT.format(kx=f"kx-{provider.exchange_id.short}"),
            hints=NOT_A_RECIPIENT_HINTS,
        )
    raw = provider.unwrap_as(mine.key_id, mine.wrapped, h.wrap_context(mine.key_id))
    if len(raw) not in h.algorithm.key_sizes:
        raise VerificationError(BAD_KEY_LENGTH)
    return raw


def open_latest(
    provider: Provider, store: Store, name: str, *, unwrap: bool = True, record: bool = True
) -> Verified:
    """Load, verify and (by default) unwrap the newest generation of ``name``.

    ``record=False`` leaves the high-water mark and the store's view as they are: the
    caller records what it opened with :func:`record_seen` (a listing: one state write for
    every name, not one per name).

    The newest is the highest stored generation that passes import steps 1-4 and is at or
    above the high-water mark (FORMAT.md 2.7 step 5, 2.9).  Entries above it that fail
    verification (planted, damaged, copied from another slot) are never used: each is
    reported with an :class:`IgnoredEntryWarning` and in ``skipped``.

    Raises:
        NotFoundError: the store has no generation of ``name``.
        VerificationError: any check failed, including a rollback or a lost newest generation;
            when no entry at or above the mark verifies, the newest entry's refusal.
        FormatError: the newest entry is not a key blob and none at or above the mark
            verifies.
    """
    check_name(name)
    state = provider.state()
    # The mark before the listing, never after: a mark read later may already hold what a
    # concurrent writer stored after the listing was taken, and would look like a rollback.
    floor = state.generation_floor(name)
    stored = store.generations(name)
    if not stored:
        if floor:
            raise VerificationError(
                MISSING_NAME.format(name=name, floor=floor),
                hints=_missing_hints(store),
            )
        raise _no_key(store, name)
    if stored[-1] < floor:
        raise VerificationError(
            MISSING_LATEST.format(name=name, latest=stored[-1], floor=floor), hints=RESTORE_HINT
        )
    skipped: list[Skipped] = []
    first: KeyblobError | None = None
    # Never below the mark: what an attacker deletes or plants cannot make an older
    # generation acceptable (2.7 step 5).
    for generation in (g for g in reversed(stored) if g >= floor):
        try:
            verified = _verified_at(provider, store, state, name, generation, key_id=None)
        except (FormatError, VerificationError, NotFoundError, BadEntryError) as e:
            first = first or e
            skipped.append(Skipped(name, generation, str(e)))
            continue
        break
    else:
        if first is None:  # unreachable: stored[-1] >= floor gives one candidate
            raise _no_key(store, name)
        # Nothing at or above the mark verifies: the newest entry's refusal, as ever.
        raise type(first)(str(first), hints=(*first.hints, CHECK_HINT.format(name=name)))
    for entry in skipped:
        warnings.warn(
            IgnoredEntryWarning(
                IGNORED.format(name=name, generation=entry.generation, reason=entry.reason)
            ),
            stacklevel=2,
        )
    verified = replace(verified, skipped=tuple(skipped))
    return _finish(provider, store, state, verified, unwrap=unwrap, record=record)


def open_stored(
    provider: Provider,
    store: Store,
    name: str,
    generation: int,
    *,
    key_id: KeyId | None = None,
    unwrap: bool = True,
    record: bool = True,
) -> Verified:
    """Load, verify and (by default) unwrap generation ``generation`` of ``name``, which
    need not be the newest: data encrypted under it stays readable after a rotation.  The
    signature still binds name, generation (and ``key_id``, if given), and the revision is
    not below one seen (FORMAT.md 2.7 step 5).  ``record=False``: as for
    :func:`open_latest`.

    Raises:
        NotFoundError: that generation is not stored.
        VerificationError: any check failed.
        FormatError: the stored bytes are not a key blob.
    """
    check_name(name)
    state = provider.state()
    # Known from the request alone: refused before the store is read (so whatever the
    # stored bytes are, the answer names the retirement).
    _check_retired(state, name, generation)
    try:
        verified = _verified_at(provider, store, state, name, generation, key_id=key_id)
    except NotFoundError as e:
        if not store.generations(name):
            raise NotFoundError(str(e), hints=_did_you_mean(store, name)) from None
        raise
    return _finish(provider, store, state, verified, unwrap=unwrap, record=record)


def _verified_at(
    provider: Provider,
    store: Store,
    state: State,
    name: str,
    generation: int,
    *,
    key_id: KeyId | None,
) -> Verified:
    """Steps 1-4 for the entry stored at (name, generation), signed as that generation."""
    policy = CheckPolicy.of(provider, state)
    data = store.get(name, generation)
    return _verify_at(policy, name, generation, data, key_id=key_id, marks=state)


def _verify_at(
    policy: CheckPolicy,
    name: str,
    generation: int,
    data: bytes,
    *,
    key_id: KeyId | None,
    marks: State | None,
) -> Verified:
    """Steps 1-4 for ``data``, stored at (name, generation): signed as that name and
    generation (``marks``: as :func:`_verify_under`)."""
    verified = _verify_under(policy, data, name=name, key_id=key_id, marks=marks)
    h = verified.header
    if h.generation != generation:
        raise VerificationError(WRONG_GENERATION.format(stored=generation, signed=h.generation))
    return verified


def _finish(
    provider: Provider,
    store: Store,
    state: State,
    verified: Verified,
    *,
    unwrap: bool,
    record: bool,
) -> Verified:
    """The retirement (step 5), step 6 (if asked), then raise the high-water mark, and
    record that ``store`` holds the name (FORMAT.md 5.2.6: what ``list`` may later call
    missing there)."""
    h = verified.header
    _check_retired(state, h.name, h.generation)
    _check_revision(state, h)  # 5. (revision) before any unwrap
    if unwrap:
        verified = _unwrapped(provider, verified)
    if record:
        record_seen(
            provider,
            store,
            {h.name: h.generation},
            state,
            revisions={(h.name, h.generation): h.revision} if h.revision else None,
        )
    return verified


def record_seen(
    provider: Provider,
    store: Store,
    seen: Mapping[str, int],
    state: State | None = None,
    *,
    revisions: Mapping[tuple[str, int], int] | None = None,
) -> None:
    """Raise the high-water marks of ``seen`` (names and generations that verified) and
    the revision marks of ``revisions`` ((name, generation) -> revision), and record that
    ``store`` held them (FORMAT.md 5.2.6), in one state write; none when that changes
    nothing (``state``: the state they were checked against, to look them up in).

    Raises:
        VerificationError, ProviderError: the state could not be read or written.
    """
    state = state if state is not None else provider.state()
    identity = store.identity
    changed = {n: g for n, g in seen.items() if state.seen(n, g, store=identity) is not state}
    raised = {
        (n, g): r for (n, g), r in (revisions or {}).items() if r > state.revision_floor(n, g)
    }
    if changed or raised:  # else: no lock taken
        provider.update_state(
            lambda s: s.with_marks(changed, store=identity).with_revisions(raised)
        )


@dataclass(frozen=True)
class Entry:
    """One store entry as this container sees it (:func:`check_store`).

    ``ok``: it passes import steps 1-4 here (``reason`` is empty); else ``reason`` says why
    not.  ``below_mark``: its generation is below the high-water mark (an older generation,
    kept to read old data).  ``current``: it is the generation :func:`open_latest` uses.
    """

    name: str
    generation: int
    ok: bool
    reason: str
    signer: KeyId | None
    below_mark: bool
    current: bool


@dataclass(frozen=True)
class SetAside:
    """An entry :func:`set_aside_untrusted` moved, why, and where the store keeps it."""

    name: str
    generation: int
    reason: str
    location: str


def _entry(
    provider: Provider, store: Store, state: State, name: str, generation: int
) -> tuple[KeyId | None, str]:
    """The signer of a valid entry and ``""``, or None and why it fails steps 1-4."""
    try:
        return _verified_at(
            provider, store, state, name, generation, key_id=None
        ).header.signer_id, ""
    except (FormatError, VerificationError, NotFoundError, BadEntryError) as e:
        return None, str(e)


# -- Whole stores: every entry checked, on every core (keyblob.pool) ---------------------

#: Entries per chunk sent to a worker, and the bytes at which a chunk closes early: large
#: enough that pickling and queueing cost little per blob, small enough to keep both
#: workers busy to the end and memory bounded (MAX_ITEM_SIZE blobs).
CHUNK_ENTRIES = 256
CHUNK_BYTES = 1 << 20

# One stored entry on its way to a check: (name, generation, its bytes), or in place of
# the bytes, why they could not be read (a str).
_Item = tuple[str, int, bytes | str]


def _check_items(policy: CheckPolicy, chunk: list[_Item]) -> list[tuple[bytes | None, str, int]]:
    """Steps 1-4 for each item: (the signer's key id, "", the blob's revision) or (None, why
    it fails, 0).  Runs in a worker: it sees the policy (public) and the stored bytes,
    nothing else."""
    out: list[tuple[bytes | None, str, int]] = []
    for name, generation, data in chunk:
        if isinstance(data, str):  # unreadable: the reason was found by the parent
            out.append((None, data, 0))
            continue
        try:
            # No marks here: check_entries limits an earlier key's entries (step 2).
            verified = _verify_at(policy, name, generation, data, key_id=None, marks=None)
        except (FormatError, VerificationError) as e:
            out.append((None, str(e), 0))
        else:
            h = verified.header
            out.append((h.signer_id.value, "", h.revision))
    return out


def _read_items(store: Store, listing: Iterable[tuple[str, Sequence[int]]]) -> Iterator[_Item]:
    for name, generations in listing:
        for generation in generations:
            try:
                yield name, generation, store.get(name, generation)
            except (NotFoundError, BadEntryError) as e:  # deleted since listed, too large...
                yield name, generation, str(e)


def _chunked(items: Iterable[_Item]) -> Iterator[list[_Item]]:
    chunk: list[_Item] = []
    size = 0
    for item in items:
        chunk.append(item)
        size += len(item[2])
        if len(chunk) >= CHUNK_ENTRIES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@dataclass(frozen=True)
class Checked:
    """One stored entry and what steps 1-4 found (:func:`check_entries`)."""

    name: str
    generation: int
    #: The stored bytes as read (None: they could not be read; ``reason`` says why).
    data: bytes | None
    #: The signer of an entry that passes; None when it fails.
    signer: KeyId | None
    #: Why it fails; empty when it passes.
    reason: str

    @property
    def ok(self) -> bool:
        return not self.reason


def check_entries(
    provider: Provider,
    store: Store,
    listing: Sequence[tuple[str, Sequence[int]]],
    *,
    jobs: int | None = None,
) -> Iterator[Checked]:
    """Read each (name, generations) of ``listing`` from ``store`` and check every entry as
    an import would, steps 1-4 (FORMAT.md 2.7: signer trusted for the name, signature, name
    and generation); yields them in ``listing``'s order.  Nothing is unwrapped, and the
    high-water marks are neither checked nor raised.

    The signature checks run on :func:`keyblob.pool.workers_for` worker processes (``jobs``:
    that many; 1: in this process), given the :class:`CheckPolicy` and the stored bytes
    only.  Close the iterator (or exhaust it) to stop the workers.

    Raises:
        StorageError: the store failed otherwise than on one entry.
        KeyblobError: a worker process ended abnormally.
    """
    # Imported here: multiprocessing and concurrent.futures are most of a command's
    # imports, and only a whole-store check uses them.
    from keyblob import pool  # noqa: PLC0415

    state = provider.state()
    policy = CheckPolicy.of(provider, state)
    count = sum(len(generations) for _, generations in listing)
    # The marks an earlier key's entries are checked against: read all at once for a large
    # listing (one pass over the trees), looked up one by one for a small one.
    marks = _snapshot(state) if policy.previous and count >= SNAPSHOT_ENTRIES else state
    items = _read_items(store, listing)
    # The bytes read go to the check and come back with its result, in the same order.
    sent: collections.deque[_Item] = collections.deque()

    def kept(chunk: list[_Item]) -> list[_Item]:
        sent.extend(chunk)
        return chunk

    results = pool.ordered_map(
        _check_items,
        policy,
        (kept(chunk) for chunk in _chunked(items)),
        workers=pool.workers_for(count, jobs),
    )
    with contextlib.closing(results):
        for found, why, revision in results:
            name, generation, data = sent.popleft()
            signer, reason = found, why
            earlier = None if signer is None else policy.earlier(KeyId(signer))
            if earlier is not None:  # step 2's limit on an earlier key, which needs the marks
                try:
                    check_earlier_signer(marks, earlier, name, generation, revision)
                except VerificationError as e:
                    signer, reason = None, str(e)
            yield Checked(
                name,
                generation,
                data if isinstance(data, bytes) else None,
                None if signer is None else KeyId(signer),
                reason,
            )


#: From this many entries, check_entries reads every mark at once rather than one by one.
SNAPSHOT_ENTRIES = 256


def _snapshot(state: State) -> State:
    """``state`` with every high-water and revision mark read into memory (one pass)."""
    if state.recorded is None:
        return state
    revisions = dict(state.recorded.revisions())
    for key, value in state.revisions.items():
        revisions[key] = max(revisions.get(key, 0), value)
    return replace(state, marks=state.all_marks(), revisions=revisions, recorded=None)


def _listing(store: Store, names: Iterable[str]) -> list[tuple[str, list[int]]]:
    out = []
    for name in names:
        check_name(name)
        out.append((name, store.generations(name)))
    return out


def check_store(
    provider: Provider,
    store: Store,
    names: Sequence[str] | None = None,
    *,
    jobs: int | None = None,
) -> list[Entry]:
    """Every entry of ``names`` (default: every name in the store), checked as an import
    would (steps 1-4), sorted by name and generation.  Nothing is unwrapped or changed.
    The signature checks use every core for a large store (:func:`check_entries`).

    Raises:
        UsageError: an invalid name.
        StorageError: the store cannot be listed.
        KeyblobError: a worker process ended abnormally.
    """
    if isinstance(names, str):  # a str is a Sequence of one-letter names
        raise UsageError("names is a list of names, not one name")
    state = provider.state()
    listing = _listing(store, sorted(set(names)) if names is not None else store.names())
    rows: dict[str, list[Checked]] = {name: [] for name, _ in listing}
    for checked in check_entries(provider, store, listing, jobs=jobs):
        # Without the bytes: a store of many large (planted) entries must not fill memory.
        rows[checked.name].append(replace(checked, data=None))
    out: list[Entry] = []
    for name, checks in rows.items():
        floor = state.generation_floor(name)
        current = max(
            (c.generation for c in checks if c.ok and c.generation >= floor), default=None
        )
        out.extend(
            Entry(
                name,
                c.generation,
                c.ok,
                c.reason,
                c.signer,
                c.generation < floor,
                c.generation == current,
            )
            for c in checks
        )
    return out


@dataclass(frozen=True)
class NotCopied:
    """An entry :func:`copy_store` did not copy, and why."""

    name: str
    generation: int
    reason: str


@dataclass
class CopyReport:
    """What :func:`copy_store` did."""

    #: Entries written to the destination.
    copied: int = 0
    #: Entries the destination held already, byte for byte (a copy run again).
    skipped: int = 0
    #: Entries that fail verification here: not copied.
    refused: list[NotCopied] = field(default_factory=list)
    #: Entries whose (name, generation) the destination holds with other bytes: kept there.
    conflicts: list[NotCopied] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.copied + self.skipped + len(self.refused) + len(self.conflicts)


DESTINATION_HOLDS_OTHER = (
    "the destination holds other bytes at this name and generation; they were kept"
)


def copy_store(
    provider: Provider,
    source: Store,
    destination: Store,
    *,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Copy every generation of every name from ``source`` to ``destination``, each entry
    checked on the way as :func:`check_entries` does (steps 1-4: old generations are copied
    too, so the high-water mark is not applied, and nothing is unwrapped).

    An entry that fails is not copied (``refused``).  One the destination holds already with
    the same bytes is counted as ``skipped``, so a copy that was stopped is finished by
    running it again; one it holds with other bytes is never overwritten (``conflicts``).
    Each put is atomic: a copy killed at any instant leaves only complete entries.
    Neither store's set-aside area is read or written, and the home's state is not changed.
    ``progress(done, total)`` is called once before the first entry and after each.

    Raises:
        StorageError: either store failed (what was copied before stays, complete).
        KeyblobError: a worker process ended abnormally.
    """
    listing = _listing(source, source.names())
    total = sum(len(generations) for _, generations in listing)
    report = CopyReport()
    present: tuple[str, set[int]] = ("", set())  # the destination's generations of a name
    if progress is not None:
        progress(0, total)
    for done, checked in enumerate(check_entries(provider, source, listing, jobs=jobs), 1):
        name, generation = checked.name, checked.generation
        if checked.data is None or not checked.ok:
            report.refused.append(NotCopied(name, generation, checked.reason))
        else:
            if present[0] != name:
                present = (name, set(destination.generations(name)))
            if generation not in present[1] and _put(destination, name, generation, checked.data):
                report.copied += 1
            elif _holds(destination, name, generation, checked.data):
                report.skipped += 1
            else:
                report.conflicts.append(NotCopied(name, generation, DESTINATION_HOLDS_OTHER))
        if progress is not None:
            progress(done, total)
    return report


def _put(store: Store, name: str, generation: int, data: bytes) -> bool:
    """Put ``data``; False when another writer stored that (name, generation) first."""
    try:
        store.put(name, generation, data)
    except ConflictError:
        return False
    return True


def _holds(store: Store, name: str, generation: int, data: bytes) -> bool:
    """Whether ``store`` holds exactly ``data`` at (name, generation)."""
    try:
        return store.get(name, generation) == data
    except NotFoundError:  # taken away since it was listed: not a copy of this one
        return False


# -- Retrying a lost compare-and-set ---------------------------------------------------------

_T = TypeVar("_T")

#: How many times the CLI's rotate runs in all before it reports the conflict.
ATTEMPTS = 5
#: The pause before retry n is random, 0 to BACKOFF * 2**(n-1) seconds ("full jitter"), at
#: most MAX_BACKOFF: writers that collided do not collide again in step.
BACKOFF = 0.05
MAX_BACKOFF = 1.0


def retrying(
    operation: Callable[[], _T],
    *,
    attempts: int = ATTEMPTS,
    on_retry: Callable[[ConflictError, int, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run ``operation``; when it loses a compare-and-set (:class:`ConflictError`: another
    writer stored that generation first), run it again after a short random pause, up to
    ``attempts`` times in all.  ``on_retry(error, attempt, attempts)`` is called before
    each new attempt (``attempt`` counts from 2).

    For operations that decide their generation from what is stored, as :func:`rotate`
    does: each attempt starts again from the newest.  :func:`generate` needs none (a name
    created meanwhile exists: it raises UsageError).

    Raises:
        ConflictError: every attempt lost; the last one's, unchanged.
        UsageError: ``attempts`` is below 1.
        Exception: whatever else ``operation`` raises, at once and unchanged.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise UsageError(f"attempts must be 1 or more, not {attempts!r}")
    attempt = 1
    while True:
        try:
            return operation()
        except ConflictError as e:
            if attempt >= attempts:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(e, attempt, attempts)
            ceiling = min(MAX_BACKOFF, BACKOFF * 2 ** (attempt - 2))
            sleep(secrets.randbelow(int(ceiling * 1000) + 1) / 1000)


def set_aside_untrusted(
    provider: Provider,
    store: Store,
    name: str | None = None,
    *,
    generation: int | None = None,
) -> list[SetAside]:
    """Move aside the entries that fail verification here and are in this container's
    way, keeping their bytes in the store's set-aside area (FORMAT.md 2.9, 5.3).

    In the way: above the generation :func:`open_latest` uses (they are reported at each
    use, and take the generations a rotation needs); for a name with no such generation,
    given as ``name``, every entry that fails.  Without ``name`` only names with a
    generation in use here are looked at: in a shared store, a name nothing verifies for
    here may be another container's, so it is moved only when named.  An entry that
    verifies is never moved; asked for by ``generation``, it is refused.  Each entry is
    checked again just before it is moved.

    Raises:
        UsageError: an invalid name or generation, ``generation`` without ``name``, or the
            entry at ``generation`` verifies.
        NotFoundError: nothing is stored at ``generation``.
        StorageError: the store failed (entries moved before stay moved).
    """
    state = provider.state()
    if generation is not None:
        if name is None:
            raise UsageError("a generation to set aside needs the key name")
        store.get(name, generation)  # NotFoundError when there is nothing
        targets = [(name, generation)]
    else:
        entries = check_store(provider, store, [name] if name is not None else None)
        current = {e.name: e.generation for e in entries if e.current}
        targets = [
            (e.name, e.generation)
            for e in entries
            if not e.ok
            and (e.generation > current[e.name] if e.name in current else e.name == name)
        ]
    moved = []
    for entry_name, entry_generation in targets:
        signer, reason = _entry(provider, store, state, entry_name, entry_generation)
        if signer is not None:
            if generation is not None:
                raise UsageError(VALID_ENTRY.format(name=entry_name, generation=entry_generation))
            continue  # replaced by a valid one since the check: it stays
        location = store.set_aside(entry_name, entry_generation)
        moved.append(SetAside(entry_name, entry_generation, reason, location))
    return moved


def load(
    provider: Provider,
    store: Store,
    name: str,
    *,
    generation: int | None = None,
    key_id: KeyId | None = None,
) -> SessionKey:
    """Import a stored session key, as CryptImportKey does, after every check.

    Without ``generation`` the newest is loaded and rollback is checked.  With it (and the
    ``key_id`` that data encrypted under that generation names) an older generation can be
    opened, so old data stays readable; the signature still binds name, generation and id.

    Raises:
        NotFoundError: nothing stored under that name (and generation).
        VerificationError: any check failed.
        FormatError: the stored bytes are not a key blob.
    """
    if generation is None:
        verified = open_latest(provider, store, name)
    else:
        verified = open_stored(provider, store, name, generation, key_id=key_id)
    if verified.key is None:  # unreachable: unwrap=True always sets it
        raise VerificationError(BAD_KEY_LENGTH)
    return verified.key


def verify(
    provider: Provider, data: bytes, *, name: str | None = None, unwrap: bool = True
) -> Verified:
    """Check a blob (not from the store) without storing it: every step, unwrap included.

    Raises:
        FormatError: not a key blob.
        VerificationError: any check failed (an older generation than seen counts as one).
    """
    state = provider.state()
    verified = _verify(provider, state, data, name=name, key_id=None)
    # 5. not retired (named first: more telling than a rollback), and no rollback
    _check_retired(state, verified.header.name, verified.header.generation)
    _check_floor(state, verified.header)
    return _unwrapped(provider, verified) if unwrap else verified


def import_blob(
    provider: Provider, store: Store, data: bytes, *, name: str | None = None
) -> Verified:
    """Verify a blob from elsewhere and, only if every check passes, add it to the store.

    A blob that is a later revision of the one stored at its (name, generation) (same key
    id, the stored one verifying here at a lower revision) replaces it by compare-and-set
    (FORMAT.md 2.7): a re-wrap made elsewhere.

    Raises:
        FormatError: not a key blob.
        VerificationError: any check failed, or the store already holds a different blob
            at that name and generation that this one is not a later revision of
            (FORMAT.md 2.7); nothing was stored or changed.
        ReplaceConflictError: the stored blob changed while this ran; nothing was changed.
        StorageError: the store could not be written.
    """
    verified = verify(provider, data, name=name)
    h = verified.header
    try:
        store.put(h.name, h.generation, verified.encoded)
    except StorageError as e:
        try:
            stored = store.get(h.name, h.generation)
        except KeyblobError:
            raise e from None  # nothing there (or unreadable): the put failed for itself
        if stored == verified.encoded:
            raise
        if not _is_later_revision(provider, h, stored):
            raise _occupied(provider, h, stored) from None
        store.replace(h.name, h.generation, stored, verified.encoded)
    identity = store.identity
    provider.update_state(
        lambda s: s.seen(h.name, h.generation, store=identity, revision=h.revision)
    )
    return verified


def _is_later_revision(provider: Provider, header: Header, stored: bytes) -> bool:
    """Whether ``header`` is a later revision of the blob ``stored`` at its (name,
    generation): that one passes steps 1-4 here, is signed as that generation, has the
    same key id and a lower revision.  Never for an entry that does not verify: a stored
    blob is only ever replaced by a re-wrap of itself."""
    state = provider.state()
    try:
        theirs = _verify_at(
            CheckPolicy.of(provider, state),
            header.name,
            header.generation,
            stored,
            key_id=None,
            marks=state,
        ).header
    except (FormatError, VerificationError):
        return False
    return theirs.key_id == header.key_id and theirs.revision < header.revision


def _occupied(provider: Provider, header: Header, stored: bytes) -> VerificationError:
    """FORMAT.md 2.7: the store holds another blob at the imported (name, generation).
    Who signed each is said (the stored one only if it verifies); a retry cannot help."""
    state = provider.state()

    def signer(key_id: KeyId) -> str:
        trusted = state.signer(key_id)
        if key_id == provider.signature_id:
            return f"sg-{key_id.short} (this container)"
        return f"sg-{key_id.short} ({trusted.label})" if trusted else f"sg-{key_id.short}"

    try:
        theirs = _verify(provider, state, stored, name=header.name, key_id=None).header
        stored_by = f"key id {theirs.key_id.short}, signed by {signer(theirs.signer_id)}"
    except (FormatError, VerificationError):
        stored_by = "one that does not verify here"
    return VerificationError(
        OCCUPIED.format(
            name=header.name,
            generation=header.generation,
            stored=stored_by,
            key_id=header.key_id.short,
            signer=signer(header.signer_id),
        ),
        hints=(
            "a stored blob is never replaced; to use this key, import it into another "
            "store (keyblob --store DIR import FILE), or ask its signer to rotate "
            f"{header.name} past generation {header.generation} and import the new one",
        ),
    )


# -- CryptoAPI imports (docs/MSCAPI.md 7.2) -------------------------------------------------

UNSIGNED_SIMPLEBLOB = (
    "it is not signed; a SIMPLEBLOB is checked against its signer's CryptSignHash signature "
    "before it is unwrapped"
)
UNSIGNED_PINNED = (
    "it is not signed, and this container takes SIMPLEBLOBs only from its {count} pinned "
    "CryptoAPI signer(s)"
)
NO_PINNED_MATCH = "the signature verifies under none of the {count} pinned CryptoAPI signer(s)"


@dataclass(frozen=True)
class CapiSignature:
    """What step 2-3 of a CryptoAPI import found about a SIMPLEBLOB's signature."""

    #: DER SubjectPublicKeyInfo of the key the signature verified under; None: unsigned.
    public: bytes | None
    #: That key's size in bits (0 when unsigned).
    bits: int
    #: The pinned signer it is, when any is pinned.
    pinned: CapiSigner | None

    @property
    def authenticated(self) -> bool:
        return self.public is not None


@dataclass(frozen=True)
class CapiImport:
    """The result of :func:`import_simpleblob`."""

    session: SessionKey
    signature: CapiSignature


def check_simpleblob_signature(
    state: State,
    simpleblob: bytes,
    *,
    name: str | None,
    signature: bytes | None,
    signer: rsa.RSAPublicKey | None = None,
    hash_alg: mscapi.AlgId | None = None,
    legacy: bool = False,
    unsigned: bool = False,
) -> CapiSignature:
    """Steps 2-3 of a CryptoAPI import (module docstring): who signed ``simpleblob``, and
    whether the container (``state``: its pinned CryptoAPI signers) accepts them for
    ``name``.  Without a home, give ``State()``: nothing is pinned.

    Args:
        signature: the CryptSignHash signature over ``simpleblob``; None only with
            ``unsigned``.
        signer: the signer's public key; may be left out once signers are pinned (the one
            whose key the signature verifies under is found).
        hash_alg: the hash it was made with (default CALG_SHA_256).
        legacy: accept a signer under 1024 bits, or a legacy hash (warns).
        unsigned: accept a blob without a signature, when nothing is pinned.

    Raises:
        UsageError: ``signature`` and ``unsigned`` together, a signature with no signer and
            nothing pinned, or a signer under 1024 bits without ``legacy``
            (:class:`~keyblob.errors.WeakKeyError`).
        VerificationError: not signed, a signer that is not pinned (or not for ``name``),
            or a signature that does not verify.
    """
    from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

    alg = mscapi.AlgId.SHA_256 if hash_alg is None else hash_alg
    pinned = state.capi_signers
    if unsigned and signature is not None:
        raise UsageError("a signature and unsigned=True contradict each other: give one")
    if signature is None:  # 2. signed
        if not unsigned:
            raise VerificationError(UNSIGNED_SIMPLEBLOB)
        if pinned:
            raise VerificationError(
                UNSIGNED_PINNED.format(count=len(pinned)),
                hints=("keyblob trust list shows them; give the blob's signature",),
            )
        return CapiSignature(None, 0, None)
    if signer is None:
        if not pinned:
            raise UsageError(
                "a signature needs the signer's public key, or a pinned CryptoAPI signer"
            )
        signer = _pinned_signer(pinned, signature, simpleblob, alg)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    spki = signer.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    by = require_capi_signer(state, spki, name)  # 2. pinned, and for this name
    # 3. verified; the size rule (and a legacy hash's warning) for this signer only
    mscapi.verify_signature(signer, signature, simpleblob, hash_alg=alg, legacy=legacy)
    return CapiSignature(spki, signer.key_size, by)


def _pinned_signer(
    pinned: Sequence[CapiSigner], signature: bytes, simpleblob: bytes, hash_alg: mscapi.AlgId
) -> rsa.RSAPublicKey:
    """The key of the pinned signer the signature verifies under.  The size rule is off
    while searching (a pinned key that did not sign must not warn or refuse); the caller
    applies it to the one found."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

    for candidate in pinned:
        key = serialization.load_der_public_key(candidate.public)
        if not isinstance(key, rsa.RSAPublicKey):  # pinned keys are RSA (trust.State)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mscapi.verify_signature(key, signature, simpleblob, hash_alg=hash_alg, legacy=True)
        except VerificationError:
            continue
        return key
    raise VerificationError(
        NO_PINNED_MATCH.format(count=len(pinned)),
        hints=("the blob may have been substituted; keyblob trust list shows the pinned signers",),
    )


def import_simpleblob(
    provider: Provider,
    store: Store,
    simpleblob: bytes,
    *,
    name: str,
    signature: bytes | None,
    signer: rsa.RSAPublicKey | None = None,
    hash_alg: mscapi.AlgId | None = None,
    legacy: bool = False,
    unsigned: bool = False,
    rotate_existing: bool = False,
) -> CapiImport:
    """Import a CryptoAPI SIMPLEBLOB as key ``name`` (module docstring, steps 1-5).

    Arguments as :func:`check_simpleblob_signature`; ``rotate_existing`` as
    :func:`store_key`.  A failure leaves nothing stored.

    Raises:
        FormatError, UnsupportedError: not a SIMPLEBLOB, or an algorithm keyblob does not
            store.
        UsageError: as :func:`check_simpleblob_signature` and :func:`store_key`.
        VerificationError: as :func:`check_simpleblob_signature`, or a signed blob that the
            container's exchange key does not open.
        ProviderError: the provider does no CryptoAPI work (not ``CapiKeys``).
    """
    from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

    parsed = mscapi.SimpleBlob.from_bytes(simpleblob)  # 1. the public structure
    algorithm = Algorithm.for_capi(int(parsed.alg_id))
    check_name(name)
    found = check_simpleblob_signature(  # 2-3.
        provider.state(),
        simpleblob,
        name=name,
        signature=signature,
        signer=signer,
        hash_alg=hash_alg,
        legacy=legacy,
        unsigned=unsigned,
    )
    if not isinstance(provider, CapiKeys):
        raise ProviderError(
            f"container {provider.name!r} cannot unwrap a SIMPLEBLOB: it has no CryptoAPI "
            "exchange key (an rsa-suite software container, or a token container after "
            "keyblob capi import-keypair)"
        )
    capi_key = provider.capi_unwrap(simpleblob, authenticated=found.authenticated)  # 4.
    session = store_key(  # 5.
        provider,
        store,
        name,
        capi_key.unsafe_raw_bytes(),
        algorithm=algorithm,
        rotate_existing=rotate_existing,
    )
    return CapiImport(session, found)


# -- Recovery (docs/RECOVERY.md): every key of a lost container, back to a new one -------


class Unwrapper(Protocol):
    """What opens a wrapped key for :func:`recover`: a recovery container (a Provider) or an
    opened recovery kit (:class:`keyblob.providers.recoverykit.RecoveryKey`)."""

    @property
    def exchange_id(self) -> KeyId: ...

    @property
    def exchange_public(self) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


#: What :func:`recover` did with one stored (name, generation).
RECOVERED = "recovered"
READABLE = "readable"  # the new container opens it already: nothing to do
NOT_RECOVERED = "not recovered"

NOT_THE_LOST_SIGNER = "signed by sg-{signer}, not by the lost container sg-{lost}"
NOT_FOR_RECOVERY = "not wrapped for the recovery key kx-{kx} (it was made before it was added)"


@dataclass(frozen=True)
class Recovered:
    """The outcome for one stored (name, generation)."""

    name: str
    generation: int
    outcome: str  # RECOVERED, READABLE or NOT_RECOVERED
    reason: str = ""
    #: Recipients of the old blob that the new one is not wrapped for: their public keys
    #: are not known here (their holders can be given the key again with keyblob share).
    dropped: tuple[KeyId, ...] = ()


def recover(
    provider: Provider,
    store: Store,
    key: Unwrapper,
    lost: PublicKeyFile,
    names: Sequence[str] | None = None,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> list[Recovered]:
    """Give ``provider`` (a new container) every stored key that the lost container
    ``lost`` signed, opened with ``key`` (a recovery recipient of those blobs).

    For each stored (name, generation) of ``names`` (default: every name in ``store``), in
    this order, stopping at the first failure (that entry is not recovered, the others go
    on): it parses and is of the container's suite; its signer is ``lost``'s signature key
    and the signature verifies with that key (FORMAT.md 2.5), before anything is unwrapped;
    it is signed as the name and generation it is stored at; its revision is not below the
    new container's mark.  A blob the new container can already open (trusted signer, and
    wrapped for it) is left as it is.  Then the key is unwrapped with ``key``, wrapped again
    for the new container, its recovery recipients and the old blob's other recipients whose
    public keys are known here as trusted signers' (never the lost container's; the recovery
    key itself only if it is one of the new container's recovery recipients), signed by the
    new container with the same name, generation, key id and creation time at the next
    revision of its epoch (:func:`next_revision`), and put in place of the old blob
    (compare-and-set); the marks are recorded.  ``lost`` need not be trusted.

    Raises:
        UsageError: ``lost`` is of another suite, or is the new container itself.
        VerificationError, ProviderError: the state could not be read or written.
        StorageError: the store could not be listed.
    """
    if lost.suite is not provider.suite:
        raise UsageError(
            f"the lost container's key file is of suite {lost.suite.label}; the new container "
            f"uses {provider.suite.label}: make the new one with keyblob init --suite "
            f"{lost.suite.label}"
        )
    if lost.signature_id == provider.signature_id:
        raise UsageError("--signer is this container's own key file, not the lost container's")
    lost_public = suites.load_signature_public(lost.suite, lost.signature)
    state = provider.state()
    policy = CheckPolicy.of(provider, state)
    known = _known_exchange_keys(provider, state)
    known.pop(lost.exchange_id, None)  # the lost laptop's key is never wrapped for again
    run = _Recovery(provider, store, key, lost, lost_public, policy, state, known)
    listed = names if names is not None else store.names()
    work = [(n, g) for n in listed for g in store.generations(n)]
    out: list[Recovered] = []
    marks: dict[str, int] = {}
    revisions: dict[tuple[str, int], int] = {}
    try:
        for i, (name, generation) in enumerate(work):
            if progress is not None:
                progress(f"{name} generation {generation}", i)
            try:
                done = run.one(name, generation)
            except (
                FormatError,
                VerificationError,
                BadEntryError,
                NotFoundError,
                ConflictError,
                UsageError,  # more than 16 recipients: this entry only
            ) as e:
                out.append(Recovered(name, generation, NOT_RECOVERED, str(e)))
                continue
            out.append(done[0])
            marks[name] = max(marks.get(name, 0), generation)
            if done[1]:
                revisions[(name, generation)] = done[1]
    finally:
        # What was stored is recorded even when the run stops early (a store failure, a
        # signal): the marks of the blobs already replaced must not be lost.
        if marks:
            identity = store.identity
            provider.update_state(
                lambda s: s.with_marks(marks, store=identity).with_revisions(revisions)
            )
    return out


@dataclass(frozen=True)
class _Recovery:
    """What every entry of one :func:`recover` run is checked and re-made with."""

    provider: Provider
    store: Store
    key: Unwrapper
    lost: PublicKeyFile
    lost_public: suites.SignaturePublic
    policy: CheckPolicy
    state: State
    known: Mapping[KeyId, bytes]

    def one(self, name: str, generation: int) -> tuple[Recovered, int]:
        """One (name, generation) of :func:`recover`: its outcome and the revision to record."""
        data = self.store.get(name, generation)
        blob = decode(data)  # 1. parse
        h = blob.header
        if h.suite is not self.provider.suite:
            raise VerificationError(
                WRONG_SUITE.format(blob=h.suite.label, own=self.provider.suite.label)
            )
        if blob.recipient(self.provider.exchange_id) is not None:
            with contextlib.suppress(VerificationError, FormatError):
                _verify_at(self.policy, name, generation, data, key_id=None, marks=self.state)
                return Recovered(name, generation, READABLE), h.revision
        if h.signer_id != self.lost.signature_id:  # 2. the lost container signed it
            raise VerificationError(
                NOT_THE_LOST_SIGNER.format(
                    signer=h.signer_id.short, lost=self.lost.signature_id.short
                )
            )
        suites.verify(self.lost_public, blob.signature, blob.signed_message())  # 3. with its key
        if h.name != name:  # 4. stored where it was signed for
            raise VerificationError(WRONG_NAME.format(actual=h.name, expected=name))
        if h.generation != generation:
            raise VerificationError(WRONG_GENERATION.format(stored=generation, signed=h.generation))
        _check_revision(self.state, h)  # 5. not below the revision this container has seen
        if h.revision >= MAX_REVISION:
            raise VerificationError(f"{name} generation {generation} is at its last revision")
        entry = blob.recipient(self.key.exchange_id)  # 6. only now unwrap
        if entry is None:
            raise VerificationError(NOT_FOR_RECOVERY.format(kx=self.key.exchange_id.short))
        raw = self.key.unwrap(entry.wrapped, h.wrap_context(entry.key_id))
        if len(raw) not in h.algorithm.key_sizes:
            raise VerificationError(BAD_KEY_LENGTH)
        recipients = [
            (
                self.provider.exchange_id,
                suites.load_exchange_public(self.provider.suite, self.provider.exchange_public),
            )
        ]
        dropped: list[KeyId] = []
        for r in blob.recipients:
            if r.key_id in (self.lost.exchange_id, self.provider.exchange_id):
                continue
            public = self.known.get(r.key_id)
            if public is None:
                dropped.append(r.key_id)
                continue
            recipients.append((r.key_id, suites.load_exchange_public(self.provider.suite, public)))
        recipients = with_recovery_recipients(self.provider, self.state, recipients)
        header = replace(
            h,
            signer_id=self.provider.signature_id,
            revision=next_revision(self.state, h.revision),
        )
        new = _signed_again(self.provider, header, raw, recipients).to_bytes()
        # Compare-and-set: an entry changed since it was read conflicts, nothing is lost.
        self.store.replace(name, generation, data, new)
        return Recovered(name, generation, RECOVERED, dropped=tuple(dropped)), header.revision


# -- keys rotate, rewrap, keys forget-old (FORMAT.md 5.1.2, 2.7 step 2) --------------------

FORGET_REFUSED = (
    "{count} stored {entries} still {need} the old keys (e.g. {name} generation {generation}): "
    "run keyblob rewrap --all"
)
UNKNOWN_RECIPIENT = (
    "recipient kx-{kx} is not known here (neither a trusted container's exchange key nor a "
    "recovery recipient): its wrap cannot be made again; trust its public key file, then run "
    "keyblob rewrap again"
)
EPOCHS_USED_UP = (
    "container {name!r} cannot replace its signature key again: its epoch would be "
    "{epoch} + 1, above 255 (FORMAT.md 5.2.8); make a new container"
)
NOT_ROTATING = (
    "container {name!r} is held by the keyblob agent, which does not make keys: "
    "run keyblob agent lock, then this command again"
)


def rotate_own_keys(
    provider: Provider,
    roles: Sequence[KeyRole],
    *,
    store: Store | None = None,
    now: int | None = None,
) -> tuple[OldKey, ...]:
    """``keyblob keys rotate``: new key pairs for ``roles`` in the container's provider;
    the replaced ones are kept (FORMAT.md 5.1.2).  A replaced signature key is first added
    to the state's ``previous`` list (5.2.8) with its epoch, so that what it signed stays
    verifiable within the limits of import step 2 (:func:`check_earlier_signer`).  With
    ``store``, the revision marks of the entries the current key signed are recorded in
    the same state write (those a crash or another writer left unrecorded): once the key
    is an earlier one, it speaks only for the revision marked.

    Every refusal comes before anything is written.  The provider can still fail after
    the state write (the container file or the token); that leaves the current key as the
    last ``previous`` entry, which a later rotation replaces (:meth:`State.with_previous`).

    Raises:
        UsageError: no role, too many old keys kept, or a provider that cannot rotate.
        ProviderError: the container's epochs are used up, or the container file, the
            token or the state could not be written.
    """
    if not isinstance(provider, RotatingKeys):
        raise UsageError(NOT_ROTATING.format(name=provider.name))
    when = _now() if now is None else now
    ordered = tuple(r for r in (KeyRole.EXCHANGE, KeyRole.SIGNATURE) if r in roles)
    # The provider's own bound (5.1.2), checked here as well: before the state write.
    check_old_key_room(provider.name, len(provider.old_keys), ordered)
    if KeyRole.SIGNATURE in ordered:  # the state first: a crash after it loses nothing
        unrecorded = {} if store is None else _unrecorded_revisions(provider, store)
        state = provider.state()
        # The key may have signed at any epoch up to the highest mark seen (a re-wrap of a
        # blob another container wrote continues from its epoch): it keeps that one.
        highest = max((*state.all_revisions().values(), *unrecorded.values()), default=0)
        epoch = max(state.epoch, epoch_of(highest))
        if epoch >= MAX_EPOCH:
            raise ProviderError(EPOCHS_USED_UP.format(name=provider.name, epoch=epoch))
        earlier = PreviousSigner(provider.signature_id, provider.signature_public, when, epoch)
        provider.update_state(lambda s: s.with_revisions(unrecorded).with_previous(earlier))
    return provider.rotate_keys(ordered, now=when)


def record_revisions(provider: Provider, store: Store, *, jobs: int | None = None) -> int:
    """Raise the revision mark of every entry of ``store`` that verifies here and was
    signed by the current key at a revision above its mark; returns how many.

    Raises:
        StorageError: the store failed otherwise than on one entry.
        VerificationError, ProviderError: the state could not be read or written.
    """
    marks = _unrecorded_revisions(provider, store, jobs=jobs)
    if marks:
        provider.update_state(lambda s: s.with_revisions(marks))
    return len(marks)


def _unrecorded_revisions(
    provider: Provider, store: Store, *, jobs: int | None = None
) -> dict[tuple[str, int], int]:
    """The revisions of the entries of ``store`` that verify here and were signed by the
    current key above their marks (what a crash between a store write and the state
    write left unrecorded), by (name, generation)."""
    state = provider.state()
    marks: dict[tuple[str, int], int] = {}
    listing = _listing(store, store.names())
    for checked in check_entries(provider, store, listing, jobs=jobs):
        if checked.ok and checked.data is not None and checked.signer == provider.signature_id:
            revision = decode(checked.data).header.revision
            if revision > state.revision_floor(checked.name, checked.generation):
                marks[(checked.name, checked.generation)] = revision
    return marks


def _old_ids(provider: Provider, state: State) -> tuple[set[KeyId], set[KeyId]]:
    """This container's old exchange key ids (kept in container.json) and earlier
    signature key ids (the state's, and those container.json keeps)."""
    exchange = {k.key_id for k in provider.old_keys if k.role is KeyRole.EXCHANGE}
    signature = {p.key_id for p in state.previous}
    signature |= {k.key_id for k in provider.old_keys if k.role is KeyRole.SIGNATURE}
    exchange.discard(provider.exchange_id)
    signature.discard(provider.signature_id)
    return exchange, signature


def _needs_rewrap(
    blob: KeyBlob, old: tuple[set[KeyId], set[KeyId]], own: KeyId, recovery: frozenset[KeyId]
) -> bool:
    """Whether a valid blob names an old exchange key of this container as a recipient,
    was signed by an earlier signature key of it, or was signed by it (``own``: its current
    signature key) and lacks one of its recovery recipients (added after the blob was
    made): what ``rewrap`` moves to the current keys.  A blob another container signed is
    not re-signed for recovery's sake: that would change its signer under its owner."""
    exchange, signature = old
    ids = {r.key_id for r in blob.recipients}
    signer = blob.header.signer_id
    missing = not recovery <= ids and (signer == own or signer in signature)
    return signer in signature or bool(ids & exchange) or missing


def _rewrapped(
    provider: Provider, state: State, blob: KeyBlob, others: Mapping[KeyId, bytes]
) -> KeyBlob:
    """``blob`` (verified, steps 1-5) made again: unwrapped with whichever key of this
    container it names (step 6), wrapped for the current exchange key and every other
    recipient it had, signed with the current signature key; same name, generation, key id
    and created, the next revision (:func:`next_revision`).

    Raises:
        VerificationError: the unwrap fails, or a recipient is not known here.
        UsageError: the revision is at its maximum.
    """
    h = blob.header
    raw = _unwrap_raw(provider, blob)  # step 6
    own = set(provider.exchange_ids)
    recipients = [
        (provider.exchange_id, suites.load_exchange_public(h.suite, provider.exchange_public))
    ]
    for r in blob.recipients:
        if r.key_id in own:
            continue
        public = others.get(r.key_id)
        if public is None:
            raise VerificationError(UNKNOWN_RECIPIENT.format(kx=r.key_id.short))
        recipients.append((r.key_id, suites.load_exchange_public(h.suite, public)))
    recipients = with_recovery_recipients(provider, state, recipients)
    header = replace(h, signer_id=provider.signature_id, revision=next_revision(state, h.revision))
    return _signed_again(provider, header, raw, _target(provider, recipients))


def _signed_again(provider: Provider, header: Header, raw: bytes, target: Recipients) -> KeyBlob:
    """Export steps 3-5 for a re-wrap (``share``, ``unshare``, ``rewrap``): the session key
    ``raw`` wrapped for each of ``target`` under ``header`` (the next revision), signed by
    this container."""
    wrapped = tuple(
        Recipient(rid, suites.wrap(public, raw, header.wrap_context(rid))) for rid, public in target
    )
    return KeyBlob.signed(header, wrapped, provider.sign)


def _known_exchange_keys(provider: Provider, state: State) -> dict[KeyId, bytes]:
    """The exchange public keys this container knows by key id: its trusted signers' and
    its recovery recipients' (authenticated state), never one taken from a blob."""
    out = {
        key_id_for(provider.suite, KeyRole.EXCHANGE, s.exchange): s.exchange
        for s in state.trusted
        if s.suite is provider.suite
    }
    out.update({r.key_id: r.exchange for r in state.recovery})
    return out


@dataclass(frozen=True)
class NotRewrapped:
    """An entry :func:`rewrap` left as it was, and why."""

    name: str
    generation: int
    reason: str


@dataclass
class RewrapReport:
    """What :func:`rewrap` did."""

    #: Entries re-wrapped for the current keys and replaced.
    rewrapped: int = 0
    #: Entries already on the current keys (a rerun finds those it did before).
    current: int = 0
    #: Entries that fail verification here (another container's, planted): not touched.
    unverified: int = 0
    #: Entries that needed the old keys and could not be re-wrapped.
    failed: list[NotRewrapped] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.rewrapped + self.current + self.unverified + len(self.failed)


#: Threads that write a directory store's replaced entries while rewrap signs the next
#: ones, and the most writes in flight (bench/README.md: on ext4, 4 threads took the
#: durable replace from 6.0 to 1.1 ms per entry, 16 to 0.8 ms).
WRITE_THREADS = 8
IN_FLIGHT = 32

#: Revision marks recorded in one state write while rewrap runs (a crash loses at most
#: these; a rerun records them again, see :func:`rewrap`).
MARK_BATCH = 512


def rewrap(
    provider: Provider,
    store: Store,
    names: Sequence[str] | None = None,
    *,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """``keyblob rewrap``: every stored entry of ``names`` (default: every name) that
    verifies here (steps 1-5) and names an old exchange key of this container, or was signed
    by an earlier signature key of it, is re-wrapped (:func:`_rewrapped`) and replaced in
    the store with a compare-and-set: each entry holds its old blob or its new one, never
    anything else, whenever the process stops.  A rerun finds the entries already done on
    the current keys and finishes the rest.

    The signature checks run on worker processes (:func:`check_entries`); unwrap, wrap and
    sign run here, where the keys are.  ``progress(done, total)`` is called with done 0
    first, then after each entry.  The revision mark of each replaced entry is raised in
    the state (in batches); an entry on the current keys whose revision is above its mark
    has its mark raised too, so a rerun after a crash records what the crash lost.

    Raises:
        UsageError: an invalid name.
        StorageError: the store failed otherwise than on one entry.
        VerificationError, ProviderError: the state could not be read or written.
    """
    if isinstance(names, str):
        raise UsageError("names is a list of names, not one name")
    state = provider.state()
    old = _old_ids(provider, state)
    others = _known_exchange_keys(provider, state)
    recovery = frozenset(r.key_id for r in state.recovery)
    listing = _listing(store, sorted(set(names)) if names is not None else store.names())
    total = sum(len(g) for _, g in listing)
    seen = _snapshot(state) if total >= SNAPSHOT_ENTRIES else state  # the revision marks
    report = RewrapReport()
    marks: dict[tuple[str, int], int] = {}

    def flush() -> None:
        if marks:
            batch = dict(marks)
            provider.update_state(lambda s: s.with_revisions(batch))
            marks.clear()

    # Durable writes to a directory store overlap on threads (each an fsync that releases
    # the GIL; one entry's replace is as atomic as ever), while this thread unwraps, wraps
    # and signs the next entries.  A SQL store's connection is used from one thread only.
    # Imported here, as check_entries imports the pool: only a whole-store command needs it.
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from keyblob.storage.directory import DirectoryStore  # noqa: PLC0415

    threads = WRITE_THREADS if isinstance(store, DirectoryStore) and total > 1 else 0
    pending: collections.deque[tuple[str, int, int, Future[None]]] = collections.deque()

    def settle(keep: int) -> None:
        """Account for the writes started, oldest first, until at most ``keep`` remain
        in flight (and any that finished already)."""
        while pending and (len(pending) > keep or pending[0][3].done()):
            name, generation, revision, done = pending.popleft()
            try:
                done.result()
            except (UsageError, ConflictError, BadEntryError) as e:
                report.failed.append(NotRewrapped(name, generation, str(e)))
            else:
                report.rewrapped += 1
                marks[(name, generation)] = revision
            if len(marks) >= MARK_BATCH:
                flush()
            if progress is not None:
                progress(report.total, total)

    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(max(threads, 1)) as writer:
        for checked in check_entries(provider, store, listing, jobs=jobs):
            name, generation = checked.name, checked.generation
            if not checked.ok or checked.data is None:
                report.unverified += 1
            else:
                blob = decode(checked.data)
                floor = seen.revision_floor(name, generation)
                if blob.header.revision < floor:  # an older revision put back: not ours
                    report.unverified += 1
                elif not _needs_rewrap(blob, old, provider.signature_id, recovery):
                    report.current += 1
                    if blob.header.revision > floor:
                        marks[(name, generation)] = blob.header.revision
                else:
                    try:
                        new = _rewrapped(provider, state, blob, others)
                    except (VerificationError, UsageError) as e:
                        report.failed.append(NotRewrapped(name, generation, str(e)))
                    else:
                        write = writer.submit(
                            store.replace, name, generation, checked.data, new.to_bytes()
                        )
                        pending.append((name, generation, new.header.revision, write))
                        settle(IN_FLIGHT if threads else 0)
                        continue  # settle() reports its progress
            if len(marks) >= MARK_BATCH:
                flush()
            if progress is not None:
                progress(report.total, total)
        settle(0)
    flush()
    return report


def entries_needing_old_keys(
    provider: Provider, store: Store, *, jobs: int | None = None
) -> list[tuple[str, int]]:
    """Every (name, generation) of ``store`` whose blob verifies here and still needs an
    old key of this container: it names an old exchange key and not the current one (only
    an old key opens it), or an earlier signature key signed it (not yet rewrapped)."""
    state = provider.state()
    exchange, signature = _old_ids(provider, state)
    out = []
    listing = _listing(store, store.names())
    for checked in check_entries(provider, store, listing, jobs=jobs):
        if not checked.ok or checked.data is None:
            continue
        blob = decode(checked.data)
        ids = {r.key_id for r in blob.recipients}
        only_old = provider.exchange_id not in ids and bool(ids & exchange)
        if only_old or blob.header.signer_id in signature:
            out.append((checked.name, checked.generation))
    return out


def forget_old_keys(
    provider: Provider, store: Store, *, jobs: int | None = None
) -> tuple[OldKey, ...]:
    """``keyblob keys forget-old``: remove the container's old key pairs (FORMAT.md 5.1.2;
    a token's old objects are destroyed), refused while a stored blob still needs them.
    The earlier signature public keys stay in the state's ``previous`` list.

    Raises:
        UsageError: a provider that cannot rotate (the agent's client).
        ProviderError: blobs still need the old keys (nothing was changed), or the
            container file or token could not be written.
    """
    if not isinstance(provider, RotatingKeys):
        raise UsageError(NOT_ROTATING.format(name=provider.name))
    if not provider.old_keys:
        return ()
    needing = entries_needing_old_keys(provider, store, jobs=jobs)
    if needing:
        name, generation = needing[0]
        raise ProviderError(
            FORGET_REFUSED.format(
                count=len(needing),
                entries="entry" if len(needing) == 1 else "entries",
                need="needs" if len(needing) == 1 else "need",
                name=name,
                generation=generation,
            )
        )
    return provider.forget_old_keys()
