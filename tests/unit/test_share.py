"""Re-wrapping an existing key (FORMAT.md 2.6.1): share, unshare, rewrap_blob, the revision
rule of import step 5, and imports of a later revision.

Every test that takes ``suite`` runs per suite, and with p256 in the PKCS#11 test token.
"""

from __future__ import annotations

import secrets
import warnings

import pytest

from keyblob import (
    Algorithm,
    Home,
    UsageError,
    VerificationError,
    blobs,
)
from keyblob.errors import ConflictError, IgnoredEntryWarning, ReplaceConflictError
from keyblob.format import KeyBlob, Recipient
from keyblob.format.blob import Header
from keyblob.keys import KeyId
from keyblob.providers import suites
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE, public_file, trust


def put_back(store: DirectoryStore, name: str, generation: int, data: bytes) -> None:
    """What anyone who can write the store can do: write earlier bytes over an entry."""
    (store.root / name / f"{generation}.kb").write_bytes(data)


@pytest.fixture
def pair(make_container, suite, tmp_path):
    """alice (the owner: in the token on a token run) and bob, a second home in software,
    of the suite; bob trusts alice's signatures."""
    alice = make_container("alice", suite=suite)
    bob = Home(tmp_path / "bob-home").create("bob", PASSPHRASE, alice.suite, kdf=FAST_KDF)
    trust(bob, alice)
    return alice, bob


def test_share_lets_the_new_recipient_open_the_same_key(pair, store):
    alice, bob = pair
    made = blobs.generate(alice, store, "payroll")
    before = store.get("payroll", 1)
    with pytest.raises(VerificationError, match="not wrapped for this container"):
        blobs.load(bob, store, "payroll")
    done = blobs.share(alice, store, "payroll", [public_file(bob)])
    (result,) = done.results
    assert result.changed and result.added == (bob.exchange_id,) and result.removed == ()
    assert (result.generation, result.revision, result.key_id) == (1, 1, made.key_id)
    blob = KeyBlob.from_bytes(store.get("payroll", 1))
    h, old = blob.header, KeyBlob.from_bytes(before).header
    assert (h.name, h.generation, h.key_id, h.algorithm, h.created, h.revision) == (
        old.name,
        old.generation,
        old.key_id,
        old.algorithm,
        old.created,
        1,
    )
    assert [r.key_id for r in blob.recipients] == [alice.exchange_id, bob.exchange_id]
    theirs = blobs.load(bob, store, "payroll")
    assert theirs.unsafe_raw_bytes() == made.unsafe_raw_bytes()
    assert theirs.key_id == made.key_id
    assert blobs.load(alice, store, "payroll").unsafe_raw_bytes() == made.unsafe_raw_bytes()
    assert alice.state().revision_floor("payroll", 1) == 1
    assert bob.state().revision_floor("payroll", 1) == 1  # raised by bob's own load


def test_the_earlier_recipient_list_put_back_is_refused(pair, store):
    alice, bob = pair
    blobs.generate(alice, store, "payroll")
    blobs.share(alice, store, "payroll", [public_file(bob)])
    blobs.unshare(alice, store, "payroll", bob.exchange_id)
    after = store.get("payroll", 1)
    assert KeyBlob.from_bytes(after).header.revision == 2
    # the revision-1 blob (bob still in it), validly signed by alice, put back by the store
    put_back(store, "payroll", 1, _revision(alice, store, bob, 1))
    for load in (
        lambda: blobs.load(alice, store, "payroll"),
        lambda: blobs.load(alice, store, "payroll", generation=1),
        lambda: blobs.verify(alice, store.get("payroll", 1)),
    ):
        with pytest.raises(VerificationError, match=r"revision 1, older than revision 2"):
            load()
    put_back(store, "payroll", 1, after)
    assert blobs.load(alice, store, "payroll").generation == 1


def _revision(alice, store, bob, revision: int) -> bytes:
    """A blob of payroll generation 1 at ``revision``, wrapped for alice and bob, validly
    signed by alice: what an earlier share wrote."""
    stored = KeyBlob.from_bytes(store.get("payroll", 1))
    key = blobs._unwrapped(alice, blobs.verify(alice, stored.to_bytes(), unwrap=False)).key
    header = Header(
        stored.header.suite,
        stored.header.algorithm,
        1,
        stored.header.created,
        stored.header.key_id,
        alice.signature_id,
        "payroll",
        revision,
    )
    raw = key.unsafe_raw_bytes()
    wrapped = tuple(
        Recipient(
            c.exchange_id,
            suites.wrap(
                suites.load_exchange_public(c.suite, c.exchange_public),
                raw,
                header.wrap_context(c.exchange_id),
            ),
        )
        for c in (alice, bob)
    )
    return KeyBlob.signed(header, wrapped, alice.sign).to_bytes()


def test_the_original_blob_put_back_after_share_is_refused(pair, store):
    alice, bob = pair
    blobs.generate(alice, store, "payroll")
    original = store.get("payroll", 1)
    blobs.share(alice, store, "payroll", [public_file(bob)])
    put_back(store, "payroll", 1, original)
    with pytest.raises(VerificationError, match=r"revision 0, older than revision 1"):
        blobs.load(alice, store, "payroll")
    with pytest.raises(VerificationError, match=r"an older recipient list was put back"):
        blobs.load(alice, store, "payroll", generation=1)


def test_unshare_removes_the_recipient(pair, store):
    alice, bob = pair
    made = blobs.generate(alice, store, "payroll")
    blobs.share(alice, store, "payroll", [public_file(bob)])
    assert blobs.load(bob, store, "payroll") == made
    done = blobs.unshare(alice, store, "payroll", bob.exchange_id)
    (result,) = done.results
    assert result.removed == (bob.exchange_id,) and result.revision == 2
    assert [r.key_id for r in KeyBlob.from_bytes(store.get("payroll", 1)).recipients] == [
        alice.exchange_id
    ]
    with pytest.raises(VerificationError, match="not wrapped for this container"):
        blobs.load(bob, store, "payroll")
    assert blobs.load(alice, store, "payroll").unsafe_raw_bytes() == made.unsafe_raw_bytes()
    # again: nothing to do, nothing written
    again = blobs.unshare(alice, store, "payroll", bob.exchange_id)
    assert not again.results[0].changed and again.results[0].revision == 2


def test_the_own_key_cannot_be_unshared(pair, store):
    alice, _ = pair
    blobs.generate(alice, store, "payroll")
    before = store.get("payroll", 1)
    with pytest.raises(UsageError, match="own exchange key"):
        blobs.unshare(alice, store, "payroll", alice.exchange_id)
    with pytest.raises(UsageError, match="must stay a recipient"):
        blobs.rewrap_blob(alice, store, "payroll", 1, [])
    assert store.get("payroll", 1) == before


def test_share_again_is_a_no_op(pair, store):
    alice, bob = pair
    blobs.generate(alice, store, "payroll")
    blobs.share(alice, store, "payroll", [public_file(bob)])
    after = store.get("payroll", 1)
    again = blobs.share(alice, store, "payroll", [public_file(bob)])
    assert not again.results[0].changed
    assert store.get("payroll", 1) == after


@pytest.mark.software_only("one suite is enough for the choice of generations")
def test_share_picks_the_newest_one_or_every_generation(make_container, store):
    alice, bob = make_container("alice"), make_container("bob")
    trust(bob, alice)
    first = blobs.generate(alice, store, "payroll")
    second = blobs.rotate(alice, store, "payroll")
    blobs.rotate(alice, store, "payroll")
    assert [
        r.generation for r in blobs.share(alice, store, "payroll", [public_file(bob)]).results
    ] == [3]
    with pytest.raises(VerificationError, match="not wrapped"):
        blobs.load(bob, store, "payroll", generation=2)
    blobs.share(alice, store, "payroll", [public_file(bob)], generation=2)
    assert blobs.load(bob, store, "payroll", generation=2) == second
    done = blobs.share(alice, store, "payroll", [public_file(bob)], every=True)
    assert [(r.generation, r.changed) for r in done.results] == [(1, True), (2, False), (3, False)]
    assert blobs.load(bob, store, "payroll", generation=1) == first
    with pytest.raises(UsageError, match="not both"):
        blobs.share(alice, store, "payroll", [public_file(bob)], generation=1, every=True)


@pytest.mark.software_only("the size limit is the format's, not the suite's")
def test_more_than_16_recipients_are_refused(make_container, store):
    alice = make_container("alice")
    others = [make_container(f"c{i}") for i in range(16)]
    blobs.generate(alice, store, "payroll")
    before = store.get("payroll", 1)
    with pytest.raises(UsageError, match="at most 16 recipients"):
        blobs.share(alice, store, "payroll", [public_file(c) for c in others])
    assert store.get("payroll", 1) == before


@pytest.mark.software_only("the race is the store's, not the suite's")
def test_a_lost_compare_and_set_is_retried_from_the_winner(make_container, store):
    """Another writer (bob, on another machine) re-wraps the entry between this one's read
    and its replace: the replace loses, nothing of it is stored, and the retry starts from
    theirs (both new recipients end up in the blob)."""
    alice, bob, carol, dave = (make_container(n) for n in ("alice", "bob", "carol", "dave"))
    trust(bob, alice)
    trust(bob, carol)
    trust(alice, bob)
    trust(alice, carol)  # to wrap for carol too on its retry
    blobs.generate(alice, store, "payroll", to=[public_file(bob)])

    class Racing:
        """The store, with bob's share landing just before alice's first replace."""

        def __init__(self, inner: DirectoryStore) -> None:
            self._inner = inner
            self.raced = False

        def __getattr__(self, attribute: str):
            return getattr(self._inner, attribute)

        def replace(self, name, generation, old, new):
            if not self.raced:
                self.raced = True
                if (
                    carol.exchange_id
                    in blobs.open_stored(
                        bob, self._inner, name, generation, unwrap=False
                    ).recipients
                ):
                    blobs.unshare(bob, self._inner, name, dave.exchange_id)
                else:
                    blobs.share(bob, self._inner, name, [public_file(carol)])
            return self._inner.replace(name, generation, old, new)

    racing = Racing(store)
    retries: list[int] = []
    done = blobs.share(
        alice, racing, "payroll", [public_file(dave)], on_retry=lambda e, n, m: retries.append(n)
    )
    assert retries == [2]
    assert done.results[0].revision == 2
    ids = [r.key_id for r in KeyBlob.from_bytes(store.get("payroll", 1)).recipients]
    assert ids == [alice.exchange_id, bob.exchange_id, carol.exchange_id, dave.exchange_id]
    # one attempt only: the lost compare-and-set is reported, nothing changed
    racing.raced = False
    before = store.get("payroll", 1)
    with pytest.raises(ReplaceConflictError) as info:
        blobs.rewrap_blob(
            alice,
            racing,
            "payroll",
            1,
            blobs.known_recipients(alice, alice.state(), [alice.exchange_id], what="payroll"),
        )
    assert isinstance(info.value, ConflictError)
    # bob's unshare of dave stands; alice's re-wrap (for alice alone) was not stored
    assert store.get("payroll", 1) != before
    ids = [r.key_id for r in KeyBlob.from_bytes(store.get("payroll", 1)).recipients]
    assert ids == [bob.exchange_id, alice.exchange_id, carol.exchange_id]


def _planted(attacker, owner, name: str, generation: int, revision: int) -> bytes:
    """A well-formed revised blob wrapped for the owner, signed by an untrusted key."""
    header = Header(
        attacker.suite,
        Algorithm.AES_256_GCM,
        generation,
        0,
        KeyId(secrets.token_bytes(16)),
        attacker.signature_id,
        name,
        revision,
    )
    public = suites.load_exchange_public(owner.suite, owner.exchange_public)
    wrapped = (
        Recipient(
            owner.exchange_id,
            suites.wrap(public, secrets.token_bytes(32), header.wrap_context(owner.exchange_id)),
        ),
    )
    return KeyBlob.signed(header, wrapped, attacker.sign).to_bytes()


def test_planted_revisions_are_ignored_and_raise_no_mark(pair, store, tmp_path):
    alice, bob = pair
    mallory = Home(tmp_path / "mallory").create("mallory", PASSPHRASE, alice.suite, kdf=FAST_KDF)
    made = blobs.generate(alice, store, "payroll")
    # above the newest: ignored like a planted generation (2.9)
    store.put("payroll", 2, _planted(mallory, alice, "payroll", 2, 7))
    with pytest.warns(IgnoredEntryWarning, match="payroll generation 2"):
        assert blobs.load(alice, store, "payroll") == made
    assert alice.state().revision_floor("payroll", 2) == 0
    # share still works (the planted entry is passed over), and bob opens it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredEntryWarning)
        done = blobs.share(alice, store, "payroll", [public_file(bob)])
        assert done.results[0].generation == 1
        assert blobs.load(bob, store, "payroll") == made
    # over the owner's entry, at a higher revision: refused, never used, no mark raised
    genuine = store.get("payroll", 1)
    put_back(store, "payroll", 1, _planted(mallory, alice, "payroll", 1, 9))
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.load(alice, store, "payroll", generation=1)
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.share(alice, store, "payroll", [public_file(bob)], generation=1)
    assert alice.state().revision_floor("payroll", 1) == 1
    put_back(store, "payroll", 1, genuine)
    assert blobs.load(alice, store, "payroll", generation=1) == made


def test_import_of_a_later_revision_replaces_the_stored_one(pair, tmp_path):
    alice, bob = pair
    here, there = DirectoryStore(tmp_path / "here"), DirectoryStore(tmp_path / "there")
    blobs.generate(alice, here, "payroll")
    original = here.get("payroll", 1)
    blobs.import_blob(alice, there, original)
    blobs.share(alice, here, "payroll", [public_file(bob)])
    shared = here.get("payroll", 1)
    blobs.import_blob(alice, there, shared)  # revision 1 over revision 0: a re-wrap
    assert there.get("payroll", 1) == shared
    assert blobs.load(bob, there, "payroll").key_id == KeyBlob.from_bytes(shared).header.key_id
    # the lower revision is refused (by the mark, before the store is looked at)
    with pytest.raises(VerificationError, match="older than revision 1"):
        blobs.import_blob(alice, there, original)
    assert there.get("payroll", 1) == shared


@pytest.mark.software_only("the stored-entry rule is the store's, not the suite's")
def test_import_does_not_replace_another_key_or_a_later_revision(make_container, tmp_path):
    alice, bob, carol, dave = (make_container(n) for n in ("alice", "bob", "carol", "dave"))
    for c in (bob, dave):
        trust(c, alice)
    here, there = DirectoryStore(tmp_path / "here"), DirectoryStore(tmp_path / "there")
    blobs.generate(alice, here, "payroll")
    blobs.share(alice, here, "payroll", [public_file(bob), public_file(dave)])
    first = here.get("payroll", 1)
    # the present recipients' public keys are needed again (alice trusts neither)
    blobs.share(alice, here, "payroll", [public_file(c) for c in (bob, dave, carol)])
    second = here.get("payroll", 1)
    blobs.import_blob(dave, there, second)
    # bob has seen no revision of it: the store's rule refuses the lower one
    assert bob.state().revision_floor("payroll", 1) == 0
    with pytest.raises(VerificationError, match="already holds a different blob"):
        blobs.import_blob(bob, there, first)
    assert there.get("payroll", 1) == second
    # another key at the same (name, generation), validly signed by a trusted container,
    # at a higher revision: never replaces
    erin = make_container("erin")
    trust(dave, erin)
    elsewhere = DirectoryStore(tmp_path / "elsewhere")
    files = [public_file(dave)]
    blobs.generate(erin, elsewhere, "payroll", to=files)
    for c in (carol, bob, alice):
        files.append(public_file(c))
        blobs.share(erin, elsewhere, "payroll", files)
    other = elsewhere.get("payroll", 1)
    assert KeyBlob.from_bytes(other).header.revision == 3
    with pytest.raises(VerificationError, match="already holds a different blob"):
        blobs.import_blob(dave, there, other)
    assert there.get("payroll", 1) == second


def test_sharing_a_blob_not_wrapped_for_this_container_is_refused(pair, store, tmp_path):
    """Bob trusts alice but is not a recipient: he cannot share what he cannot open."""
    alice, bob = pair
    carol = Home(tmp_path / "carol").create("carol", PASSPHRASE, alice.suite, kdf=FAST_KDF)
    blobs.generate(alice, store, "payroll")
    before = store.get("payroll", 1)
    with pytest.raises(VerificationError, match="not wrapped for this container"):
        blobs.share(bob, store, "payroll", [public_file(carol), public_file(alice)])
    assert store.get("payroll", 1) == before


@pytest.mark.software_only("the choice of generations is the recipe's, not the suite's")
def test_share_all_leaves_retired_generations_alone(make_container, store):
    alice, bob = make_container("alice"), make_container("bob")
    blobs.generate(alice, store, "payroll")
    blobs.rotate(alice, store, "payroll")
    blobs.rotate(alice, store, "payroll")
    blobs.retire(alice, store, "payroll", 2)
    first = store.get("payroll", 1)
    done = blobs.share(alice, store, "payroll", [public_file(bob)], every=True)
    assert [r.generation for r in done.results] == [2, 3]
    assert [s.generation for s in done.skipped] == [1]
    assert "retire" in done.skipped[0].reason
    assert store.get("payroll", 1) == first
