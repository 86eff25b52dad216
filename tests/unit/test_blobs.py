"""The recipe: export/import and every attack of the threat model (P1-P4), per suite."""

from __future__ import annotations

import os
import pickle
import sys
import threading

import pytest

from keyblob import (
    Algorithm,
    FormatError,
    KeyblobError,
    NotFoundError,
    PublicKeyFile,
    UsageError,
    VerificationError,
    blobs,
)
from keyblob.format import KeyBlob, signed_message
from keyblob.format.blob import Header
from keyblob.keys import KeyId
from keyblob.storage.directory import DirectoryStore
from support import public_file, trust


def test_round_trip(make_container, store, suite):
    c = make_container(suite=suite)
    made = blobs.generate(c, store, "payroll")
    loaded = blobs.load(c, store, "payroll")
    assert loaded == made
    assert loaded.unsafe_raw_bytes() == made.unsafe_raw_bytes()
    assert (loaded.name, loaded.generation, loaded.algorithm) == (
        "payroll",
        1,
        Algorithm.AES_256_GCM,
    )


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_algorithms(make_container, store, algorithm):
    c = make_container()
    if algorithm.legacy:  # DES, 3DES, RC2, RC4: read old data; new keys only on request
        with pytest.raises(UsageError, match="legacy"):
            blobs.generate(c, store, "k", algorithm=algorithm)
        assert store.latest("k") is None
        with pytest.warns(UserWarning, match="legacy"):
            made = blobs.generate(c, store, "k", algorithm=algorithm, legacy=True)
    else:
        made = blobs.generate(c, store, "k", algorithm=algorithm)
    assert len(made.unsafe_raw_bytes()) == algorithm.key_size
    assert blobs.load(c, store, "k").algorithm is algorithm


@pytest.mark.parametrize("size", [5, 11, 16])
def test_store_key_made_elsewhere(make_container, store, size):
    """A CryptoAPI RC4 key of any length it allows becomes a signed blob, and rotates."""
    c = make_container()
    with pytest.warns(UserWarning, match="legacy") as caught:
        key = blobs.store_key(c, store, "old", b"k" * size, algorithm=Algorithm.CAPI_RC4)
    assert len(caught) == 1  # one warning per key, not one per layer
    assert blobs.load(c, store, "old") == key and key.unsafe_raw_bytes() == b"k" * size
    with pytest.raises(UsageError, match=r"exists already .* with --rotate"):
        blobs.store_key(c, store, "old", b"j" * size, algorithm=Algorithm.CAPI_RC4)
    with pytest.warns(UserWarning):
        key2 = blobs.store_key(
            c, store, "old", b"j" * size, algorithm=Algorithm.CAPI_RC4, rotate_existing=True
        )
    assert key2.generation == 2 and blobs.load(c, store, "old") == key2
    with pytest.raises(UsageError, match="cannot be 4 bytes"):
        blobs.store_key(c, store, "new", b"k" * 4, algorithm=Algorithm.CAPI_RC4)


def test_session_key_handle_is_opaque(make_container, store):
    c = make_container()
    key = blobs.generate(c, store, "payroll")
    raw = key.unsafe_raw_bytes()
    assert raw.hex() not in repr(key) and key.key_id.short in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(AttributeError):
        key.name = "other"
    with pytest.raises(TypeError):
        type(key)(
            object(),
            name="x",
            key_id=key.key_id,
            generation=1,
            algorithm=Algorithm.AES_256_GCM,
            created=0,
            key=raw,
        )


def test_new_refuses_existing_name(make_container, store):
    c = make_container()
    blobs.generate(c, store, "payroll")
    with pytest.raises(UsageError, match="rotate"):
        blobs.generate(c, store, "payroll")


def test_rotate_keeps_old_generations_readable(make_container, store, suite):
    c = make_container(suite=suite)
    g1 = blobs.generate(c, store, "payroll")
    g2 = blobs.rotate(c, store, "payroll")
    assert g2.generation == 2 and g2 != g1
    assert blobs.load(c, store, "payroll") == g2
    assert blobs.load(c, store, "payroll", generation=1, key_id=g1.key_id) == g1
    with pytest.raises(VerificationError, match="key id"):
        blobs.load(c, store, "payroll", generation=1, key_id=g2.key_id)


# -- P2: the procedure's own attack -----------------------------------------------------


def test_substituted_blob_is_refused_until_trusted(make_container, store, suite):
    """An attacker with write access to the store and the victim's public keys wraps a key
    of their own under the victim's exchange key and puts it where the victim's blob was."""
    victim = make_container("victim", suite=suite)
    attacker = make_container("attacker", suite=suite)
    blobs.generate(victim, store, "payroll")
    evil_store = DirectoryStore(store.root.parent / "evil")
    evil = blobs.generate(attacker, evil_store, "payroll", to=[public_file(victim)])
    # The attacker's blob unwraps for the victim (that is the danger) ...
    (store.root / "payroll" / "1.kb").write_bytes(evil_store.get("payroll", 1))
    # ... but is refused before any unwrap, because nobody trusted signed it.
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.load(victim, store, "payroll")
    # Same when it arrives as a file to import.
    with pytest.raises(VerificationError, match="not a trusted signer"):
        blobs.verify(victim, evil_store.get("payroll", 1))
    # Only an explicit trust decision changes that.
    trust(victim, attacker)
    assert blobs.load(victim, store, "payroll") == evil


def test_signature_is_checked_before_unwrap(make_container, store, monkeypatch):
    c = make_container()
    blobs.generate(c, store, "payroll")
    data = bytearray(store.get("payroll", 1))
    data[-1] ^= 1  # break the signature only
    (store.root / "payroll" / "1.kb").write_bytes(bytes(data))
    calls = []
    monkeypatch.setattr(type(c), "unwrap_as", lambda self, *a: calls.append(a))
    with pytest.raises(VerificationError, match="signature"):
        blobs.load(c, store, "payroll")
    assert calls == []


def test_foreign_suite_blob_refused(make_container, store, tmp_path):
    x = make_container("x")
    r = make_container("r", suite=type(x.suite).RSA)
    other = DirectoryStore(tmp_path / "o")
    blobs.generate(r, other, "payroll")
    with pytest.raises(VerificationError, match="suite"):
        blobs.verify(x, other.get("payroll", 1))


# -- P4: rollback -----------------------------------------------------------------------


def test_rollback_old_generation_as_latest(make_container, store, suite):
    c = make_container(suite=suite)
    blobs.generate(c, store, "payroll")
    blobs.rotate(c, store, "payroll")
    folder = store.root / "payroll"
    old = (folder / "1.kb").read_bytes()
    # Put generation 1 back as the latest: delete 2 ...
    (folder / "2.kb").unlink()
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.load(c, store, "payroll")
    # ... or copy 1 over 2: signed generation disagrees with where it is stored.
    (folder / "2.kb").write_bytes(old)
    with pytest.raises(VerificationError, match="signed as generation 1"):
        blobs.load(c, store, "payroll")
    # Importing the old blob is refused too.
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.import_blob(c, store, old)


def test_everything_deleted_after_use_is_rollback(make_container, store):
    c = make_container()
    blobs.generate(c, store, "payroll")
    (store.root / "payroll" / "1.kb").unlink()
    for attempt in (
        lambda: blobs.load(c, store, "payroll"),
        lambda: blobs.generate(c, store, "payroll"),
    ):
        with pytest.raises(VerificationError) as info:
            attempt()
        assert str(info.value) == (
            "rolled back: the store has no payroll, but this container has already seen its "
            "generation 1"
        )
        assert info.value.hints[-1].endswith(
            f"{store.location} is not the store this container's keys are in (--store)"
        )


def test_high_water_follows_other_writers(make_container, store, tmp_path):
    """A second machine sharing the store rotated: loading sees and records the newer one."""
    alice = make_container("alice")
    blobs.generate(alice, store, "payroll")
    assert alice.state().generation_floor("payroll") == 1
    # A blob of generation 3 signed by alice appears (e.g. rotated from another copy of the home).
    blobs.rotate(alice, store, "payroll")
    blobs.rotate(alice, store, "payroll")
    assert alice.state().generation_floor("payroll") == 3


# -- P3: binding ------------------------------------------------------------------------


def test_cross_name_swap_refused(make_container, store, suite):
    c = make_container(suite=suite)
    blobs.generate(c, store, "alpha")
    blobs.generate(c, store, "beta")
    (store.root / "beta" / "1.kb").write_bytes(store.get("alpha", 1))
    with pytest.raises(VerificationError, match="for key 'alpha', not 'beta'"):
        blobs.load(c, store, "beta")
    with pytest.raises(VerificationError, match="not 'beta'"):
        blobs.import_blob(c, store, store.get("alpha", 1), name="beta")


def test_wrapped_key_transplant_does_not_unwrap(make_container, store, suite):
    """A recipient's wrapped key cut out of one blob and pasted into another validly signed
    header (same signer, other name) does not open: the wrap is bound to its header."""
    c = make_container(suite=suite)
    blobs.generate(c, store, "alpha")
    alpha = KeyBlob.from_bytes(store.get("alpha", 1))
    header = Header(
        suite=alpha.header.suite,
        algorithm=alpha.header.algorithm,
        generation=1,
        created=alpha.header.created,
        key_id=KeyId(b"\x01" * 16),
        signer_id=c.signature_id,
        name="beta",
    )
    recipients = alpha.recipients
    forged = KeyBlob(header, recipients, c.sign(signed_message(header, recipients)))
    with pytest.raises(VerificationError, match="does not open"):
        blobs.import_blob(c, store, forged.to_bytes())
    assert store.latest("beta") is None
    # Control: the same construction with the genuine header verifies and unwraps.
    genuine = KeyBlob(alpha.header, recipients, c.sign(signed_message(alpha.header, recipients)))
    assert blobs.verify(c, genuine.to_bytes()).key is not None


def test_blob_not_for_this_container(make_container, store, tmp_path):
    alice, bob = make_container("alice"), make_container("bob")
    trust(bob, alice)
    blobs.generate(alice, store, "payroll")
    with pytest.raises(VerificationError, match="not wrapped for this container") as info:
        blobs.verify(bob, store.get("payroll", 1))
    assert "re-export it for you" in info.value.hints[0]


def test_sharing_with_another_container(make_container, store, tmp_path):
    alice, bob = make_container("alice"), make_container("bob")
    key = blobs.generate(alice, store, "payroll", to=[public_file(bob)])
    trust(bob, alice)
    bob_store = DirectoryStore(tmp_path / "bob-store")
    imported = blobs.import_blob(bob, bob_store, store.get("payroll", 1))
    assert imported.key == key
    assert blobs.load(bob, bob_store, "payroll") == key
    # Rotation re-wraps for bob because alice knows bob's key through --to or trust.
    with pytest.raises(UsageError, match="--to"):
        blobs.rotate(alice, store, "payroll")
    key2 = blobs.rotate(alice, store, "payroll", to=[public_file(bob)])
    assert blobs.import_blob(bob, bob_store, store.get("payroll", 2)).key == key2


# -- P7: every bit flip and every truncation ---------------------------------------------


def _all_flips(data: bytes):
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            yield i, bit, bytes(flipped)


def test_every_bit_flip_is_refused(make_container, store, suite):
    c = make_container(suite=suite)
    blobs.generate(c, store, "payroll")
    data = store.get("payroll", 1)
    for i, bit, flipped in _all_flips(data):
        with pytest.raises(KeyblobError) as info:
            blobs.verify(c, flipped)
        assert isinstance(info.value, FormatError | VerificationError), (i, bit, info.value)


def test_every_truncation_is_refused(make_container, store, suite):
    c = make_container(suite=suite)
    blobs.generate(c, store, "payroll")
    data = store.get("payroll", 1)
    for n in range(len(data)):
        with pytest.raises(FormatError):
            blobs.verify(c, data[:n])
    with pytest.raises(FormatError, match="trailing"):
        blobs.verify(c, data + b"\x00")


def test_failed_import_changes_nothing(make_container, store):
    c = make_container()
    blobs.generate(c, store, "payroll")
    before = c.state()
    data = bytearray(store.get("payroll", 1))
    data[-5] ^= 0x40
    with pytest.raises(VerificationError):
        blobs.import_blob(c, DirectoryStore(store.root.parent / "empty"), bytes(data))
    assert not (store.root.parent / "empty").exists()
    assert c.state() == before


def test_missing_and_empty(make_container, store):
    c = make_container()
    with pytest.raises(NotFoundError):
        blobs.load(c, store, "nothing")
    with pytest.raises(UsageError):
        blobs.load(c, store, "../etc/passwd")


def test_recipient_suite_must_match(make_container, store):
    from keyblob import Suite

    x = make_container("x")
    r = make_container("r", suite=Suite.RSA)
    with pytest.raises(UsageError, match="suite"):
        blobs.generate(x, store, "k", to=[public_file(r)])


def test_a_blob_not_wrapped_for_me_says_what_helps_and_what_does_not(make_container, store):
    alice, bob = make_container("alice"), make_container("bob")
    blobs.generate(alice, store, "payroll")  # for alice only
    trust(bob, alice)
    with pytest.raises(VerificationError, match="not wrapped for this container") as e:
        blobs.load(bob, store, "payroll")
    # Not "rotate --to": a new generation never opens what this one encrypted (issue 12).
    assert e.value.hints == blobs.NOT_A_RECIPIENT_HINTS
    assert "only data encrypted after it" in e.value.hints[1]


def test_only_supported_cryptoapi_algorithms_are_stored():
    from keyblob.keys import Algorithm

    assert Algorithm.for_capi(0x6610) is Algorithm.CAPI_AES_256
    expected = r"ALG_ID 0x0000660d \(it stores capi-aes-128, .*capi-rc4\)"
    with pytest.raises(UsageError, match=expected):
        Algorithm.for_capi(0x660D)  # CALG_AES, the size-less ALG_ID


def test_store_bytes_are_canonical(make_container, store):
    c = make_container()
    blobs.generate(c, store, "k")
    data = store.get("k", 1)
    assert KeyBlob.from_bytes(data).to_bytes() == data


def test_duplicate_recipient_not_written(make_container, store):
    c = make_container()
    key = blobs.generate(c, store, "k", to=[public_file(c)])  # own key given again
    assert len(KeyBlob.from_bytes(store.get("k", 1)).recipients) == 1
    assert blobs.load(c, store, "k") == key


@pytest.mark.skipif(sys.platform == "win32", reason="the state lock is POSIX flock")
def test_generate_checks_and_stores_under_the_state_lock(make_container, store):
    """Another process holding the container's lock keeps a generate from even checking
    the store: the check, the store write and the state record are one step."""
    import fcntl

    c = make_container()
    lock = os.open(c._folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    seen_by_check: list[int | None] = []
    real_latest = store.latest

    def latest(name):  # records when generate looks at the store
        seen_by_check.append(real_latest(name))
        return seen_by_check[-1]

    store.latest = latest
    worker = threading.Thread(target=blobs.generate, args=(c, store, "k"))
    worker.start()
    try:
        worker.join(0.3)
        assert worker.is_alive()  # waiting for the lock ...
        assert seen_by_check == []  # ... before its check,
        assert real_latest("k") is None  # and before its write
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    worker.join(10)
    assert seen_by_check == [None]
    assert real_latest("k") == 1
    assert c.state().generation_floor("k") == 1


def test_a_known_signer_with_another_exchange_key_is_refused(make_container, store):
    """generate(to=...) with a public key file whose signature key is this container's own,
    or a trusted one, but whose exchange key is not the one known with it: refused before
    anything is wrapped or stored."""
    alice, bob, mallory = make_container("alice"), make_container("bob"), make_container("mal")
    trust(bob, alice)
    real = public_file(alice)
    swapped = PublicKeyFile(real.suite, real.label, mallory.exchange_public, real.signature)
    for who in (alice, bob):
        with pytest.raises(VerificationError, match="known here with another exchange key"):
            blobs.generate(who, store, "k", to=[swapped])
        assert store.latest("k") is None
        assert who.state().generation_floor("k") == 0
    made = blobs.generate(bob, store, "k", to=[real])  # the real file is fine
    trust(alice, bob)
    assert blobs.load(alice, store, "k").unsafe_raw_bytes() == made.unsafe_raw_bytes()


def test_recover_refuses_a_revision_below_the_new_containers_mark(make_container, store):
    # A rolled-back entry is not re-made by recover: refused before the recovery key unwraps
    # it, and the stored bytes stay as they were.
    from keyblob.keys import KeyRole, key_id_for
    from keyblob.trust import RecoveryRecipient

    lost, offline, new = make_container("lost"), make_container("offline"), make_container("new")
    kx = key_id_for(offline.suite, KeyRole.EXCHANGE, offline.exchange_public)
    safe = RecoveryRecipient(kx, offline.exchange_public, "the safe", 0, "container")
    lost.update_state(lambda s: s.with_recovery(safe))
    blobs.generate(lost, store, "payroll")
    before = store.get("payroll", 1)
    new.update_state(lambda s: s.with_revisions({("payroll", 1): 2}))
    (done,) = blobs.recover(new, store, offline, public_file(lost))
    assert (done.name, done.generation, done.outcome) == ("payroll", 1, blobs.NOT_RECOVERED)
    assert "rolled back" in done.reason and "revision 2" in done.reason
    assert store.get("payroll", 1) == before
