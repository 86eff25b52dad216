"""The lifecycle members of the home state (FORMAT.md 5.2.8): revision marks in their own
hash tree, retired generations, recovery recipients and earlier signature keys.  Each round
trips through a fresh open; a state without them is byte for byte what keyblob wrote before;
an edit without the state key fails the MAC; a member that breaks its field rules under a
valid MAC is malformed; a revision leaf swapped, deleted or put back is refused."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest

import state_support as ss
from keyblob.errors import FormatError, ProviderError, UsageError, VerificationError
from keyblob.keys import MAX_GENERATION, KeyRole, Suite, key_id_for
from keyblob.providers import statedb
from keyblob.providers.software import Home
from keyblob.trust import PreviousSigner, RecoveryRecipient, State, TrustedSigner
from support import FAST_KDF, PASSPHRASE

EDITED = "modified outside keyblob"
MALFORMED = "home state: "
LIFECYCLE = {"revisions", "retired", "recovery", "previous", "removed"}


@pytest.fixture
def home(tmp_path):
    return Home(tmp_path / "h")


@pytest.fixture
def c(home):
    return home.create("c", PASSPHRASE, kdf=FAST_KDF)


def fresh(home):
    """The container as another process would open it (no cache)."""
    return home.open("c", PASSPHRASE)


def _recipient(label="Recovery", kind="container", suite=Suite.X25519):
    public = os.urandom(32)
    return RecoveryRecipient(
        key_id_for(suite, KeyRole.EXCHANGE, public), public, label, 1_700_000_000, kind
    )


def _previous(until=1_700_000_500, suite=Suite.X25519, epoch=0):
    public = os.urandom(32)
    return PreviousSigner(key_id_for(suite, KeyRole.SIGNATURE, public), public, until, epoch)


def _trusted(label="Bob"):
    public = os.urandom(32)
    return TrustedSigner(
        key_id_for(Suite.X25519, KeyRole.SIGNATURE, public),
        Suite.X25519,
        public,
        os.urandom(32),
        label,
        1_700_000_000,
    )


def rkey(name, generation):
    return ss.bucket_of(f"{name}@{generation}")


# -- the State API ---------------------------------------------------------------------------


def test_revision_marks_keep_the_higher_and_check_their_ranges():
    state = State().with_revisions({("payroll", 3): 2})
    assert state.revision_floor("payroll", 3) == 2
    assert state.revision_floor("payroll", 2) == 0  # per (name, generation)
    assert state.revision_floor("other", 3) == 0
    assert state.with_revisions({("payroll", 3): 1}).revision_floor("payroll", 3) == 2
    assert state.with_revisions({("payroll", 3): 7}).revision_floor("payroll", 3) == 7
    assert State().with_revisions({("a", MAX_GENERATION): 2**32 - 1}).revisions
    for bad in (("payroll", 3, 0), ("payroll", 3, 2**32), ("payroll", 0, 1), ("Bad", 1, 1)):
        with pytest.raises(UsageError):
            State().with_revisions({bad[:2]: bad[2]})


def test_seen_records_a_revision_only_when_given_and_higher():
    state = State()
    assert state.seen("payroll", 1) == state.with_marks({"payroll": 1})  # as before
    assert state.seen("payroll", 1).revisions == {}
    once = state.seen("payroll", 2, revision=3)
    assert once.generation_floor("payroll") == 2 and once.revision_floor("payroll", 2) == 3
    assert once.seen("payroll", 2, revision=3) is once  # nothing new: the same object
    assert once.seen("payroll", 2, revision=1) is once


def test_a_retirement_is_only_ever_raised_and_keeps_generation_2_or_later():
    state = State().with_retired("payroll", 3)
    assert state.retired_below("payroll") == 3 and state.retired_below("other") == 0
    assert state.with_retired("payroll", 2) is state  # never lowered
    assert state.with_retired("payroll", 5).retired_below("payroll") == 5
    for below in (0, 1, MAX_GENERATION + 1, True):
        with pytest.raises(UsageError):
            State().with_retired("payroll", below)
    with pytest.raises(UsageError):
        State().with_retired("Payroll", 2)


def test_recovery_recipients_and_previous_keys_are_kept_once_in_order():
    a, b = _recipient("A"), _recipient("B", "passphrase")
    state = State().with_recovery(a).with_recovery(b)
    assert state.recovery == (a, b)
    renamed = state.with_recovery(RecoveryRecipient(a.key_id, a.exchange, "A2", 5, a.kind))
    assert [r.label for r in renamed.recovery] == ["A2", "B"]
    assert renamed.recovery[0].added == a.added  # keeps its place and date
    assert state.without_recovery(a.key_id).recovery == (b,)
    with pytest.raises(ValueError):
        _recipient(kind="other")
    p, q = _previous(1), _previous(2, epoch=3)
    assert State().epoch == 0
    state = State().with_previous(p).with_previous(q)
    assert state.previous == (p, q) and state.with_previous(q) is state
    assert state.previous_signer(q.key_id) == q
    assert state.epoch == 4  # one above the last earlier key's


def test_an_earlier_key_listed_last_is_replaced_only_by_a_higher_epoch():
    """The current key left last in ``previous`` by a rotation that failed after the state
    write (FORMAT.md 5.1.2) is listed again by the next rotation, with a higher epoch."""
    p, q = _previous(1), _previous(2, epoch=3)
    state = State().with_previous(p).with_previous(q)
    later = replace(q, until=9, epoch=7)
    assert state.with_previous(later).previous == (p, later)
    assert state.with_previous(later).epoch == 8
    with pytest.raises(UsageError, match="never lowered"):
        state.with_previous(replace(q, epoch=2))
    with pytest.raises(UsageError, match="listed again"):
        state.with_previous(p)  # a key replaced since never comes back
    with pytest.raises(UsageError, match="above the one before"):
        state.with_previous(_previous(3, epoch=3))
    for epoch in (-1, 255, True, 1.0):
        with pytest.raises(ValueError, match="epoch"):
            replace(p, epoch=epoch)


def test_a_removed_signer_is_remembered_until_trusted_again():
    bob = _trusted()
    state = State().with_signer(bob)
    assert state.without_signer(bob.key_id).removed == ()  # not asked to remember
    gone = state.without_signer(bob.key_id, removed=1_700_000_900)
    assert gone.trusted == () and gone.removed_signer(bob.key_id).label == "Bob"
    assert gone.removed_signer(bob.key_id).removed == 1_700_000_900
    assert gone.without_signer(bob.key_id, removed=5) is gone  # not trusted: nothing to do
    back = gone.with_signer(bob)
    assert back.signer(bob.key_id) == bob and back.removed == ()


# -- persisted -------------------------------------------------------------------------------


def test_every_new_member_round_trips_through_a_fresh_open(home, c):
    r, p = _recipient(), _previous()
    c.update_state(
        lambda s: (
            s.seen("payroll", 3, revision=2)
            .with_revisions({("payroll", 2): 5, ("ledger", 1): 1})
            .with_retired("payroll", 2)
            .with_recovery(r)
            .with_previous(p)
        )
    )
    state = fresh(home).state()
    assert state.revision_floor("payroll", 3) == 2
    assert state.revision_floor("payroll", 2) == 5
    assert state.revision_floor("ledger", 1) == 1
    assert state.revision_floor("ledger", 2) == 0
    assert state.all_revisions() == {("payroll", 3): 2, ("payroll", 2): 5, ("ledger", 1): 1}
    assert state.retired_below("payroll") == 2
    assert state.recovery == (r,) and state.previous == (p,)
    assert state.revisions == {}  # read through the tree, not held in the head
    head = ss.head(c._folder)
    assert head["revisions"]["count"] == 3 and "tree" not in head["revisions"]
    assert head["retired"] == {"payroll": 2}
    # Raised, never lowered, in the tree as in the marks.
    c.update_state(lambda s: s.with_revisions({("payroll", 2): 4, ("payroll", 3): 9}))
    state = fresh(home).state()
    assert (state.revision_floor("payroll", 2), state.revision_floor("payroll", 3)) == (5, 9)
    assert ss.head(c._folder)["revisions"]["count"] == 3
    # Removing the recovery recipient leaves no empty member behind.
    c.update_state(lambda s: s.without_recovery(r.key_id))
    assert "recovery" not in ss.head(c._folder) and fresh(home).state().recovery == ()
    bob = _trusted()
    c.update_state(lambda s: s.with_signer(bob))
    c.update_state(lambda s: s.without_signer(bob.key_id, removed=1_700_000_900))
    (removed,) = fresh(home).state().removed
    assert (removed.key_id, removed.label, removed.removed) == (bob.key_id, "Bob", 1_700_000_900)


def test_a_revision_is_stored_under_name_at_generation_in_tree_2_31(c):
    c.update_state(lambda s: s.with_revisions({("payroll", 12): 3}))
    nodes = ss.nodes(c._folder)
    bucket = nodes[(statedb.REVISIONS_TREE, rkey("payroll", 12))]
    assert bucket == b"\x02\x00\x01" + bytes([10]) + b"payroll@12" + (3).to_bytes(8, "big")
    assert {tree for tree, _ in nodes} == {statedb.REVISIONS_TREE}


def test_the_longest_revision_key_fits_a_bucket(home, c):
    name = "n" * 128
    c.update_state(lambda s: s.with_revisions({(name, MAX_GENERATION): 2**32 - 1}))
    assert fresh(home).state().revision_floor(name, MAX_GENERATION) == 2**32 - 1


def test_a_state_without_the_new_members_is_written_as_before(home, c):
    c.update_state(lambda s: s.seen("payroll", 2))
    before = ss.head_bytes(c._folder)
    assert not LIFECYCLE & ss.head(c._folder).keys()
    fresh(home).state().revision_floor("payroll", 2)  # reading changes nothing
    assert ss.head_bytes(c._folder) == before
    # A change of the marks only: the same members as a keyblob before 5.2.8 wrote.
    c.update_state(lambda s: s.seen("payroll", 3))
    assert not LIFECYCLE & ss.head(c._folder).keys()


def test_a_change_of_other_members_keeps_every_revision_mark(home, c):
    c.update_state(lambda s: s.with_revisions({("payroll", 1): 2}).with_retired("x", 4))
    c.update_state(lambda s: s.with_retired("payroll", 2).seen("other", 1))
    state = fresh(home).state()
    assert state.revision_floor("payroll", 1) == 2
    assert (state.retired_below("x"), state.retired_below("payroll")) == (4, 2)


# -- edits without the key: the MAC ----------------------------------------------------------


@pytest.fixture
def full(c):
    bob = _trusted()
    c.update_state(
        lambda s: (
            s.with_revisions({("payroll", 3): 2, ("backup", 1): 4})
            .with_retired("payroll", 3)
            .with_recovery(_recipient())
            .with_previous(_previous())
            .with_signer(bob)
            .without_signer(bob.key_id, removed=1_700_000_900)
            .with_signer(_trusted("Carol"))
        )
    )
    return c


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("retired"),
        lambda d: d.update(retired={"payroll": 2}),
        lambda d: d.pop("recovery"),
        lambda d: d["recovery"][0].update(label="Mallory"),
        lambda d: d.pop("previous"),
        lambda d: d["previous"][0].update(until=2**40),
        lambda d: d["previous"][0].update(epoch=d["previous"][0]["epoch"] + 9),
        lambda d: d.pop("revisions"),
        lambda d: d["revisions"].update(count=1),
        lambda d: d.pop("removed"),
        lambda d: d["removed"][0].update(label="Mallory"),
    ],
    ids=[
        "retired-deleted",
        "retired-lowered",
        "recovery-deleted",
        "recovery-relabelled",
        "previous-deleted",
        "previous-extended",
        "previous-epoch-raised",
        "revisions-deleted",
        "revisions-count",
        "removed-deleted",
        "removed-relabelled",
    ],
)
def test_an_edit_of_a_new_member_fails_the_mac(home, full, edit):
    doc = ss.head(full._folder)
    edit(doc)
    ss.set_head(full._folder, ss.canonical(doc) + b"\n")
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()


def _revision_refused(home, name="payroll", generation=3):
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state().revision_floor(name, generation)


def test_a_revision_leaf_put_back_after_a_raise_is_refused(home, full):
    pos = rkey("payroll", 3)
    old = ss.nodes(full._folder)[(statedb.REVISIONS_TREE, pos)]
    full.update_state(lambda s: s.with_revisions({("payroll", 3): 3}))
    assert fresh(home).state().revision_floor("payroll", 3) == 3
    ss.set_node(full._folder, statedb.REVISIONS_TREE, pos, old)
    _revision_refused(home)


def test_two_revision_leaves_swapped_are_refused(home, full):
    a, b = rkey("payroll", 3), rkey("backup", 1)
    assert a != b
    rows = ss.nodes(full._folder)
    ss.set_node(full._folder, statedb.REVISIONS_TREE, a, rows[(statedb.REVISIONS_TREE, b)])
    ss.set_node(full._folder, statedb.REVISIONS_TREE, b, rows[(statedb.REVISIONS_TREE, a)])
    _revision_refused(home)
    _revision_refused(home, "backup", 1)


@pytest.mark.parametrize("level", range(5))
def test_a_revision_node_flipped_or_deleted_is_refused(home, full, level):
    pos = hashlib.sha256(b"payroll@3").hexdigest()[:level]
    body = bytearray(ss.nodes(full._folder)[(statedb.REVISIONS_TREE, pos)])
    body[-1] ^= 1
    ss.set_node(full._folder, statedb.REVISIONS_TREE, pos, bytes(body))
    _revision_refused(home)
    ss.set_node(full._folder, statedb.REVISIONS_TREE, pos, None)
    _revision_refused(home)


def test_a_marks_leaf_moved_into_the_revisions_tree_is_refused(home, full):
    full.update_state(lambda s: s.seen("payroll", 3))
    marks = ss.nodes(full._folder)
    # The marks tree's root put where the revisions tree's root is: another digest.
    ss.set_node(full._folder, statedb.REVISIONS_TREE, "", marks[(0, "")])
    _revision_refused(home)


# -- well MAC'd, but malformed ---------------------------------------------------------------


def _key_id_of(role, public_b64):
    import base64

    return key_id_for(Suite.X25519, role, base64.b64decode(public_b64)).hex


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(retired={}),
        lambda d: d.update(retired=[]),
        lambda d: d.update(retired={"payroll": 1}),
        lambda d: d.update(retired={"payroll": "3"}),
        lambda d: d.update(retired={"Payroll": 3}),
        lambda d: d.update(retired={"payroll": 2**63}),
        lambda d: d.update(recovery=[]),
        lambda d: d["recovery"][0].update(kind="phone"),
        lambda d: d["recovery"][0].update(key_id="00" * 16),
        lambda d: d["recovery"][0].update(label=" padded"),
        lambda d: d["recovery"][0].update(added=-1),
        lambda d: d["recovery"][0].update(names=["*"]),
        lambda d: d["recovery"][0].pop("kind"),
        lambda d: d["recovery"].append(dict(d["recovery"][0])),
        lambda d: d.update(previous=[]),
        lambda d: d["previous"][0].update(key_id="00" * 16),
        lambda d: d["previous"][0].update(until=-1),
        lambda d: d["previous"][0].update(extra=1),
        lambda d: d["previous"][0].pop("until"),
        lambda d: d["previous"][0].pop("epoch"),
        lambda d: d["previous"][0].update(epoch=-1),
        lambda d: d["previous"][0].update(epoch=255),
        lambda d: d["previous"][0].update(epoch="1"),
        lambda d: d["previous"].append(dict(d["previous"][0])),
        lambda d: d["previous"][0].update(public=d["previous"][0]["public"].rstrip("=")),
        lambda d: d.update(revisions={"count": 0, "root": "00" * 32}),
        lambda d: d["revisions"].update(tree=2**31),
        lambda d: d["revisions"].update(root="00" * 32),
        lambda d: d.update(revisions=[]),
        lambda d: d.update(removed=[]),
        lambda d: d["removed"][0].update(removed="1"),
        lambda d: d["removed"][0].update(label=""),
        lambda d: d["removed"][0].update(key_id="AB" * 16),
        lambda d: d["removed"][0].pop("label"),
        lambda d: d["removed"].append(dict(d["removed"][0])),
        lambda d: d["removed"][0].update(key_id=d["trusted"][0]["key_id"]),
    ],
)
def test_a_malformed_new_member_under_a_valid_mac_is_refused(home, full, edit):
    doc = ss.head(full._folder)
    edit(doc)
    ss.set_head(full._folder, ss.signed(full._keys.state, doc))
    with pytest.raises(FormatError, match=MALFORMED):
        fresh(home).state()


@pytest.mark.parametrize("step", [0, 1])
def test_earlier_keys_are_listed_in_increasing_epochs(home, full, step):
    """FORMAT.md 5.2.8: each earlier key's epoch is above the one before it (a rotation
    gives the key it replaces at least the container's epoch, one above the last); step 1
    is the control."""
    import base64

    doc = ss.head(full._folder)
    second = _previous(epoch=doc["previous"][0]["epoch"] + step)
    doc["previous"].append(
        {
            "key_id": second.key_id.hex,
            "public": base64.b64encode(second.public).decode(),
            "until": second.until,
            "epoch": second.epoch,
        }
    )
    ss.set_head(full._folder, ss.signed(full._keys.state, doc))
    if step:
        assert fresh(home).state().previous[1] == second
    else:
        with pytest.raises(FormatError, match=MALFORMED):
            fresh(home).state()


def test_the_control_a_valid_edit_under_the_key_reads(home, full):
    """The control of the test above: the same route, a well-formed edit, is read."""
    doc = ss.head(full._folder)
    doc["retired"] = {"payroll": 9}
    ss.set_head(full._folder, ss.signed(full._keys.state, doc))
    assert fresh(home).state().retired_below("payroll") == 9


def test_a_recovery_key_id_of_another_suite_is_malformed(home, full):
    doc = ss.head(full._folder)
    entry = doc["recovery"][0]
    import base64

    public = base64.b64decode(entry["exchange"])
    entry["key_id"] = key_id_for(Suite.P256, KeyRole.EXCHANGE, public).hex
    ss.set_head(full._folder, ss.signed(full._keys.state, doc))
    with pytest.raises(FormatError, match="recovery recipient's key id"):
        fresh(home).state()


def test_a_version_1_state_refuses_the_head_only_members(tmp_path, home, c):
    """A state.json (5.2.1) never had them: a version 1 document holding one is malformed."""
    c.update_state(lambda s: s.seen("payroll", 1))
    ss.make_v1(c, {"payroll": 1})
    path = c._folder / "state.json"
    import json

    doc = json.loads(path.read_bytes())
    doc["retired"] = {"payroll": 2}
    path.write_bytes(ss.signed(c._keys.state, doc))
    with pytest.raises(FormatError, match=MALFORMED):
        fresh(home).state()


def test_a_version_1_state_migrates_with_the_new_members(tmp_path, home, c):
    c.update_state(lambda s: s.seen("payroll", 1))
    ss.make_v1(c, {"payroll": 1})
    fresh(home).update_state(
        lambda s: s.with_retired("payroll", 2).with_revisions({("payroll", 1): 2})
    )
    state = fresh(home).state()
    assert state.generation_floor("payroll") == 1 and state.retired_below("payroll") == 2
    assert state.revision_floor("payroll", 1) == 2


# -- the revisions tree's buckets ------------------------------------------------------------


def test_revision_buckets_are_strict():
    pos = rkey("payroll", 3)
    kind = statedb.REVISIONS
    body = statedb.encode_bucket({"payroll@3": 2})
    assert statedb.decode_bucket(body, pos, kind) == {"payroll@3": 2}
    with pytest.raises(ValueError):  # a revision key is not a name
        statedb.decode_bucket(body, pos)
    with pytest.raises(ValueError):  # over 2^32-1
        statedb.decode_bucket(body[:-8] + (2**32).to_bytes(8, "big"), pos, kind)
    with pytest.raises(ValueError):
        statedb.decode_bucket(body[:-8] + bytes(8), pos, kind)
    for key in ("payroll@03", "payroll@0", "payroll", "payroll@3@4", "Payroll@3", "@3"):
        with pytest.raises(ValueError):
            statedb.decode_bucket(statedb.encode_bucket({key: 2}), ss.bucket_of(key), kind)
    with pytest.raises(ValueError):  # a name is not a revision key either
        statedb.decode_bucket(statedb.encode_bucket({"payroll": 1}), ss.bucket_of("payroll"), kind)
    big = f"x@{2**63}"
    with pytest.raises(ValueError):
        statedb.decode_bucket(statedb.encode_bucket({big: 1}), ss.bucket_of(big), kind)


def test_a_full_revisions_bucket_refuses_the_update_and_names_it(home, c, monkeypatch):
    monkeypatch.setattr(statedb, "MAX_BUCKET", 1)
    c.update_state(lambda s: s.with_revisions({("a", 1): 1}))
    other = next(f"n{i}" for i in range(10**6) if rkey(f"n{i}", 1) == rkey("a", 1))  # one bucket
    before = ss.head_bytes(c._folder)
    with pytest.raises(ProviderError, match=f"like '{other}@1''s already have revision marks"):
        c.update_state(lambda s: s.with_revisions({(other, 1): 1}))
    assert ss.head_bytes(c._folder) == before
