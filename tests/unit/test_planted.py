"""A blob planted in the store by someone this container does not trust (FORMAT.md 2.9).

It is never accepted, and it never locks the owner out: the newest generation that
verifies, at or above the high-water mark, is used and the planted entry is reported; it
can be listed (:func:`blobs.check_store`) and moved aside (:func:`blobs.set_aside_untrusted`).
"""

from __future__ import annotations

import os
import secrets
import warnings

import pytest

from keyblob import (
    Algorithm,
    Home,
    Suite,
    UsageError,
    VerificationError,
    blobs,
)
from keyblob.errors import IgnoredEntryWarning
from keyblob.storage import MAX_GENERATION
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE, TOKEN_P256, public_file, trust

#: Each test runs with the owner's container in software (x25519 and pq), and in the PKCS#11
#: test token.
pytestmark = pytest.mark.parametrize(
    "suite", [Suite.X25519, Suite.PQ, TOKEN_P256], ids=["x25519", "pq", TOKEN_P256], indirect=True
)


def plant(attacker, store, name: str, generation: int, to) -> bytes:
    """What an attacker with write access to the store does: a validly formed blob, wrapped
    for the owner, signed by the attacker's own (untrusted) key, at ``generation``."""
    encoded, _ = blobs._export(
        attacker,
        name=name,
        generation=generation,
        algorithm=Algorithm.AES_256_GCM,
        recipients=blobs._recipient_keys(attacker, [public_file(to)]),
        key=None,
        random=secrets.token_bytes,
        now=lambda: 0,
    )
    store.put(name, generation, encoded)
    return encoded


@pytest.fixture
def owner(make_container, suite):
    return make_container("owner", suite=suite)


@pytest.fixture
def attacker(owner, tmp_path):
    """The attacker's own container, of the owner's suite, in software (not in the
    owner's token)."""
    home = Home(tmp_path / "attacker")
    return home.create("attacker", PASSPHRASE, owner.suite, kdf=FAST_KDF)


def _owned(owner, store, generations: int = 2):
    key = blobs.generate(owner, store, "payroll")
    for _ in range(generations - 1):
        key = blobs.rotate(owner, store, "payroll")
    return key


def test_planted_newer_blob_is_ignored_and_reported(owner, attacker, store):
    mine = _owned(owner, store)
    plant(attacker, store, "payroll", 3, owner)
    with pytest.warns(IgnoredEntryWarning, match=r"ignored payroll generation 3: .*not a trusted"):
        key = blobs.load(owner, store, "payroll")
    assert key == mine and key.generation == 2  # never the planted key
    with pytest.warns(IgnoredEntryWarning):
        v = blobs.open_latest(owner, store, "payroll", unwrap=False)
    assert v.header.generation == 2
    assert [(s.name, s.generation) for s in v.skipped] == [("payroll", 3)]
    assert "not a trusted signer" in v.skipped[0].reason
    assert owner.state().generation_floor("payroll") == 2  # the planted one is not "seen"


@pytest.mark.parametrize(
    "garbage", [b"", b"garbage", b"\x00" * 20000], ids=["empty", "text", "oversized-blob"]
)
def test_garbage_newer_entry_is_ignored(owner, store, garbage):
    mine = _owned(owner, store)
    store.put("payroll", 3, garbage)
    with pytest.warns(IgnoredEntryWarning, match="ignored payroll generation 3"):
        assert blobs.load(owner, store, "payroll") == mine


def test_planted_at_last_generation(owner, attacker, store):
    mine = _owned(owner, store)
    plant(attacker, store, "payroll", MAX_GENERATION, owner)
    with pytest.warns(IgnoredEntryWarning):
        assert blobs.load(owner, store, "payroll") == mine
    # No generation above the planted one exists: rotation needs it moved aside first.
    with (
        pytest.warns(IgnoredEntryWarning),
        pytest.raises(UsageError, match="no generation comes after it") as info,
    ):
        blobs.rotate(owner, store, "payroll")
    assert info.value.hints == (
        "move it aside: keyblob store set-aside payroll, then rotate again",
    )
    moved = blobs.set_aside_untrusted(owner, store, "payroll")
    assert [(m.name, m.generation) for m in moved] == [("payroll", MAX_GENERATION)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)
        assert blobs.rotate(owner, store, "payroll").generation == 3


def test_rotate_goes_past_a_planted_blob(owner, attacker, store):
    _owned(owner, store)
    plant(attacker, store, "payroll", 3, owner)
    plant(attacker, store, "payroll", 9, owner)
    with pytest.warns(IgnoredEntryWarning):
        new = blobs.rotate(owner, store, "payroll")
    assert new.generation == 10  # above every occupied slot, so the put cannot collide
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)
        assert blobs.load(owner, store, "payroll") == new  # the newest is ours: no report
    assert owner.state().generation_floor("payroll") == 10


def test_planted_blob_is_never_accepted(owner, attacker, store):
    plant(attacker, store, "payroll", 1, owner)  # a name the owner has not made yet
    with pytest.raises(VerificationError, match="not a trusted signer") as info:
        blobs.load(owner, store, "payroll")
    assert any("keyblob store check" in h for h in info.value.hints)
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.rotate(owner, store, "payroll")
    with pytest.raises(UsageError, match="exists already"):
        blobs.generate(owner, store, "payroll")
    assert blobs.set_aside_untrusted(owner, store) == []  # not named: maybe someone else's
    assert [m.generation for m in blobs.set_aside_untrusted(owner, store, "payroll")] == [1]
    assert blobs.generate(owner, store, "payroll").generation == 1


def test_rollback_still_refused_when_the_mark_is_above_every_valid_generation(
    owner, attacker, store, tmp_path
):
    _owned(owner, store, generations=3)
    # The attacker keeps generations 1-2, drops 3, and plants 4 and 5.
    other = DirectoryStore(tmp_path / "other")
    for g in (1, 2):
        other.put("payroll", g, store.get("payroll", g))
    plant(attacker, other, "payroll", 4, owner)
    plant(attacker, other, "payroll", 5, owner)
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.load(owner, other, "payroll")
    with pytest.raises(VerificationError):
        blobs.rotate(owner, other, "payroll")
    assert owner.state().generation_floor("payroll") == 3


def test_replayed_old_blob_at_a_newer_slot_is_ignored(owner, store):
    _owned(owner, store, generations=2)
    store.put("payroll", 3, store.get("payroll", 1))  # ours, but signed as generation 1
    with pytest.warns(IgnoredEntryWarning, match="signed as generation 1"):
        assert blobs.load(owner, store, "payroll").generation == 2


def test_a_container_that_trusts_the_signer_accepts_it(owner, attacker, make_container, store):
    """ "Untrusted" is per container: who trusts the signer sees a valid blob."""
    _owned(owner, store)
    friend = make_container("friend", suite=owner.suite)
    trust(friend, attacker)
    encoded = plant(attacker, store, "payroll", 3, friend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)
        assert blobs.open_latest(friend, store, "payroll", unwrap=False).encoded == encoded
    with pytest.warns(IgnoredEntryWarning):
        assert blobs.open_latest(owner, store, "payroll", unwrap=False).header.generation == 2
    # Nothing the friend trusts is moved aside by the friend; the owner moves it.
    assert blobs.set_aside_untrusted(friend, store, "payroll") == []
    assert [m.generation for m in blobs.set_aside_untrusted(owner, store, "payroll")] == [3]


def test_check_store_reports_every_entry(owner, attacker, store):
    _owned(owner, store, generations=2)
    plant(attacker, store, "payroll", 3, owner)
    store.put("other", 1, b"junk")
    report = blobs.check_store(owner, store)
    rows = {(e.name, e.generation): e for e in report}
    assert set(rows) == {("payroll", 1), ("payroll", 2), ("payroll", 3), ("other", 1)}
    assert rows["payroll", 2].ok and rows["payroll", 2].current
    assert rows["payroll", 1].ok and not rows["payroll", 1].current
    assert rows["payroll", 1].below_mark
    assert not rows["payroll", 3].ok and "not a trusted signer" in rows["payroll", 3].reason
    assert not rows["other", 1].ok
    assert [(e.name, e.generation) for e in blobs.check_store(owner, store, ["other"])] == [
        ("other", 1)
    ]


def test_set_aside_moves_only_the_planted_and_keeps_them(owner, attacker, store):
    _owned(owner, store, generations=2)
    planted = plant(attacker, store, "payroll", 3, owner)
    store.put("junk", 1, b"junk")
    before = {(n, g): store.get(n, g) for n in ("payroll",) for g in (1, 2)}
    moved = blobs.set_aside_untrusted(owner, store)
    assert [(m.name, m.generation) for m in moved] == [("payroll", 3)]
    assert store.generations("payroll") == [1, 2]
    # A name nothing verifies for here may be another container's: moved only when named.
    assert store.names() == ["junk", "payroll"]
    moved += blobs.set_aside_untrusted(owner, store, "junk")
    assert store.names() == ["payroll"]
    assert {(n, g): store.get(n, g) for (n, g) in before} == before
    where = {m.name: m.location for m in moved}
    with open(where["payroll"], "rb") as f:  # kept as evidence
        assert f.read() == planted
    assert os.path.dirname(os.path.dirname(where["junk"])) == os.path.join(
        store.location, ".set-aside"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredEntryWarning)
        assert blobs.load(owner, store, "payroll").generation == 2
    assert blobs.set_aside_untrusted(owner, store) == []


def test_set_aside_refuses_a_valid_entry(owner, store):
    _owned(owner, store, generations=2)
    store.put("payroll", 3, store.get("payroll", 1))  # fails here (signed as generation 1)
    store.put("payroll", 4, store.get("payroll", 2))
    moved = blobs.set_aside_untrusted(owner, store, "payroll")
    assert [m.generation for m in moved] == [3, 4]
    with pytest.raises(UsageError, match="verifies"):
        blobs.set_aside_untrusted(owner, store, "payroll", generation=1)
    assert store.generations("payroll") == [1, 2]
