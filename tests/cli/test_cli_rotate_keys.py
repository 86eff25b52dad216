"""`keyblob keys rotate`, `keyblob rewrap`, `keyblob keys forget-old` (docs/CLI.md; FORMAT.md
5.1.2, 2.7 step 2): a container's own key pairs replaced while every stored key keeps its
name, generation and key id, and old data keeps opening; the limits on an earlier
signature key; forget-old's refusals."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from keyblob import Home, IgnoredEntryWarning, UsageError, VerificationError, blobs
from keyblob.format import KeyBlob, Recipient
from keyblob.keys import KeyRole
from keyblob.providers import suites
from keyblob.storage.directory import DirectoryStore
from support import run_in_terminal

PASS = "correct horse battery staple rotate"
NAMES = ("payroll", "backup", "mail")


def _encrypted(kb, tmp_path, name):
    """A file encrypted under ``name``'s current key, and its plaintext."""
    plain = f"the {name} data".encode()
    (tmp_path / f"{name}.in").write_bytes(plain)
    status, _, err = kb(
        "encrypt", name, "-i", tmp_path / f"{name}.in", "-o", tmp_path / f"{name}.ct"
    )
    assert status == 0, err
    return tmp_path / f"{name}.ct", plain


def _decrypts(kb, tmp_path, ct, plain):
    out = tmp_path / "out"
    out.unlink(missing_ok=True)
    status, _, err = kb("decrypt", "-i", ct, "-o", out)
    assert status == 0, err
    assert out.read_bytes() == plain


def _doc(tmp_path):
    return json.loads((tmp_path / "home/containers/default/container.json").read_text())


def test_rotate_rewrap_forget_keeps_every_name_opening_old_data(kb, tmp_path, keyblob_main):
    assert kb("init")[0] == 0
    files = []
    for name in NAMES:
        assert kb("new", name)[0] == 0
        files.append(_encrypted(kb, tmp_path, name))
    assert kb("rotate", "mail")[0] == 0  # a second generation, under the old keys too
    files.append(_encrypted(kb, tmp_path, "mail"))
    before = json.loads(kb("show", "payroll", "--json")[1])

    status, out, err = kb("keys", "rotate", "--json")
    assert status == 0, err
    rotated = json.loads(out)
    assert rotated["rotated"] == ["exchange", "signature"]
    assert {o["role"] for o in rotated["old"]} == {"exchange", "signature"}
    assert [e["role"] for e in _doc(tmp_path)["previous"]] == ["exchange", "signature"]
    for ct, plain in files:  # before rewrap: the old keys open and verify
        _decrypts(kb, tmp_path, ct, plain)
    shown = json.loads(kb("show", "payroll", "--json")[1])
    assert shown["signer_label"].startswith("this container (an earlier key")
    assert shown["recipient_labels"] == ["this container (an old key, until keyblob rewrap)"]

    status, _, err = kb("keys", "forget-old")
    assert status == 1
    assert err.count("\n") == 1 and "4 stored entries still need the old keys" in err
    assert "run keyblob rewrap --all" in err and "generation" in err
    assert "previous" in _doc(tmp_path)  # refused: nothing removed

    status, out, err = kb("rewrap", "--all", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert (report["entries"], report["rewrapped"], report["current"]) == (4, 4, 0)
    assert report["failed"] == [] and report["unverified"] == 0
    after = json.loads(kb("show", "payroll", "--json")[1])
    assert (after["name"], after["generation"], after["key_id"]) == (
        before["name"],
        before["generation"],
        before["key_id"],
    )
    assert after["signer"] != before["signer"]
    status, out, _ = kb("rewrap", "--all", "--json")  # a rerun: nothing left to do
    assert status == 0 and (json.loads(out)["rewrapped"], json.loads(out)["current"]) == (0, 4)

    status, out, err = kb("keys", "forget-old")
    assert status == 0, err
    assert "removed 2 old keys" in out
    assert "previous" not in _doc(tmp_path)
    for ct, plain in files:  # after forget-old: every name opens its old data
        _decrypts(kb, tmp_path, ct, plain)
    status, out, _ = kb("keys", "forget-old")
    assert status == 0 and "keeps no old keys" in out


def test_rewrap_of_named_keys_only(kb, tmp_path, keyblob_main):
    assert kb("init")[0] == 0
    for name in NAMES:
        assert kb("new", name)[0] == 0
    assert kb("keys", "rotate", "--exchange")[0] == 0
    assert "previous" in _doc(tmp_path) and [e["role"] for e in _doc(tmp_path)["previous"]] == [
        "exchange"
    ]
    status, out, err = kb("rewrap", "payroll", "mail", "--json")
    assert status == 0, err
    assert json.loads(out)["rewrapped"] == 2
    status, _, err = kb("keys", "forget-old")
    assert status == 1 and err.count("\n") == 1
    assert "1 stored entry still needs the old keys (e.g. backup generation 1)" in err
    assert kb("rewrap", "backup")[0] == 0
    assert kb("keys", "forget-old")[0] == 0


def test_rewrap_usage_and_not_found(kb):
    assert kb("init")[0] == 0
    assert kb("rewrap")[0] == 2
    assert kb("new", "payroll")[0] == 0
    assert kb("rewrap", "payroll", "--all")[0] == 2
    status, _, err = kb("rewrap", "nothing-here")
    assert status == 4 and "no key named nothing-here" in err


def test_rewrap_and_forget_old_refuse_jobs_out_of_range_before_the_passphrase(kb, monkeypatch):
    assert kb("init")[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # no terminal either: the unlock would fail
    for argv in (("rewrap", "--all"), ("keys", "forget-old")):
        for jobs in ("0", "65"):
            status, _, err = kb(*argv, "--jobs", jobs)
            assert status == 2 and f"--jobs {jobs}: give 1 to 64 processes" in err


def test_rewrap_shows_a_bar_of_entries_on_a_terminal_unless_quiet(kb):
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    assert kb("keys", "rotate", "--exchange")[0] == 0

    status, output = run_in_terminal(["rewrap", "--all", "--quiet"], [], {**os.environ})
    assert status == 0, output
    assert "rewrap:" not in output
    status, output = run_in_terminal(["rewrap", "--all"], [], {**os.environ})
    assert status == 0, output
    assert "rewrap:" in output and "entry" in output  # tqdm's bar, counting entries


def test_rotate_signature_only_old_signatures_still_verify(kb, tmp_path, keyblob_main):
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    ct, plain = _encrypted(kb, tmp_path, "payroll")
    assert kb("keys", "rotate", "--signature")[0] == 0
    _decrypts(kb, tmp_path, ct, plain)  # the earlier signature key speaks for generation 1
    status, out, _ = kb("store", "check", "--json")
    assert status == 0, out
    assert kb("rotate", "payroll")[0] == 0  # signed with the new key
    assert kb("rewrap", "--all")[0] == 0
    assert kb("keys", "forget-old")[0] == 0
    _decrypts(kb, tmp_path, ct, plain)  # the earlier public key stays in the state


# -- the limits of an earlier signature key (FORMAT.md 2.7 step 2), with the old key in hand


def _forged(old, name, generation, *, revision=0, to):
    """A blob signed by the old signature key ``old`` (a container opened before it was
    rotated), wrapped for the exchange key ``to`` (id, public)."""
    from keyblob.format import Header
    from keyblob.keys import Algorithm, KeyId, Suite

    header = Header(
        suite=Suite.X25519,
        algorithm=Algorithm.AES_256_GCM,
        generation=generation,
        created=1,
        key_id=KeyId(b"\x07" * 16),
        signer_id=old.signature_id,
        name=name,
        revision=revision,
    )
    kid, public = to
    key = bytes(32)
    wrapped = (Recipient(kid, suites.wrap(public, key, header.wrap_context(kid))),)
    return KeyBlob.signed(header, wrapped, old.sign).to_bytes()


def test_an_earlier_signature_key_never_introduces_a_generation_or_a_revision(kb, tmp_path):
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    home = Home(tmp_path / "home")
    old = home.open("default", PASS.encode())  # holds the old signature key
    assert kb("keys", "rotate", "--signature")[0] == 0
    new = home.open("default", PASS.encode())
    store = DirectoryStore(tmp_path / "home" / "blobs")
    to = (new.exchange_id, suites.load_exchange_public(new.suite, new.exchange_public))
    assert old.signature_id != new.signature_id

    # Generation 2 was never seen: the old key cannot make it, though its signature is valid.
    store.put("payroll", 2, _forged(old, "payroll", 2, to=to))
    with pytest.warns(IgnoredEntryWarning, match="replaced.*above the newest generation"):
        opened = blobs.open_latest(new, store, "payroll")
    assert opened.header.generation == 1
    # Generation 1, once rewrap re-signed it (a revision mark), is the new key's only.
    assert kb("rewrap", "--all", "--quiet")[0] == 0
    new = home.open("default", PASS.encode())
    mark = new.state().revision_floor("payroll", 1)
    assert mark == 1 << 24  # rewrap wrote the first revision of epoch 1
    with pytest.raises(VerificationError, match="re-signed since with a later key"):
        blobs.verify(new, _forged(old, "payroll", 1, revision=mark, to=to))
    with pytest.raises(VerificationError, match="not the one this container has seen"):
        blobs.verify(new, _forged(old, "payroll", 1, revision=mark + 1, to=to))
    forged = _forged(old, "payroll", 1, revision=mark + 1, to=to)
    # The control: the same blob signed by the current key is accepted by the signer check.
    good = KeyBlob.from_bytes(forged)
    again = KeyBlob.signed(
        replace(good.header, signer_id=new.signature_id), good.recipients, new.sign
    )
    verified = blobs.verify(new, again.to_bytes(), unwrap=False)
    assert verified.header.revision == mark + 1


def test_rotate_through_the_agent_is_refused_by_the_library(tmp_path):
    """The agent's client makes no keys: rotate_own_keys refuses what is not RotatingKeys."""
    from keyblob.providers.base import RotatingKeys

    home = Home(tmp_path / "h")
    c = home.create("c", PASS.encode(), kdf=__import__("support").FAST_KDF)
    assert isinstance(c, RotatingKeys)

    class NotRotating:
        name = "c"

    with pytest.raises(UsageError, match="agent"):
        blobs.rotate_own_keys(NotRotating(), [KeyRole.EXCHANGE])  # type: ignore[arg-type]


# -- epochs are this container's own (FORMAT.md 2.7 step 2, 5.2.8) ---------------------------


def _homes(tmp_path, capsys, monkeypatch):
    """``run(home, *argv)``: keyblob on ``home``, every home on one directory store."""
    from keyblob.cli import main

    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    store = tmp_path / "store"

    def run(home, *argv):
        capsys.readouterr()
        status = main(["--home", str(home), "--store", str(store), *map(str, argv)])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_a_revision_another_container_wrote_at_a_higher_epoch_does_not_lock_this_one_out(
    tmp_path, capsys, monkeypatch
):
    """Bob, who has replaced his signature key 3 times, re-wraps Alice's key at his epoch 3;
    Alice re-wraps it after him (revision 3 << 24 + 1, her key), then replaces her
    signature key for the first time.  Her earlier key must still speak for that revision,
    and rewrap must move it: an epoch counted as "this container's rotations" refused it."""
    run = _homes(tmp_path, capsys, monkeypatch)
    alice, bob, carol = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"
    for home in (alice, bob, carol):
        assert run(home, "init")[0] == 0
        assert run(home, "pubkey", "-o", home.with_suffix(".pub"))[0] == 0
    assert run(bob, "trust", "add", alice.with_suffix(".pub"))[0] == 0
    assert run(alice, "new", "payroll")[0] == 0
    plain, sealed, out = tmp_path / "plain", tmp_path / "sealed", tmp_path / "out"
    plain.write_bytes(b"salaries")
    assert run(alice, "encrypt", "payroll", "-i", plain, "-o", sealed)[0] == 0
    assert run(alice, "share", "payroll", "--to", bob.with_suffix(".pub"))[0] == 0
    for _ in range(3):
        assert run(bob, "keys", "rotate")[0] == 0
    status, report, err = run(bob, "rewrap", "payroll", "--json")
    assert status == 0 and json.loads(report)["rewrapped"] == 1, err
    assert run(bob, "pubkey", "-o", bob.with_suffix(".pub"))[0] == 0
    assert run(alice, "trust", "add", bob.with_suffix(".pub"))[0] == 0
    assert json.loads(run(alice, "show", "payroll", "--json")[1])["revision"] == 3 << 24
    assert run(alice, "trust", "add", carol.with_suffix(".pub"))[0] == 0  # known for rewrap
    assert run(alice, "share", "payroll", "--to", carol.with_suffix(".pub"))[0] == 0
    shown = json.loads(run(alice, "show", "payroll", "--json")[1])
    assert (shown["revision"], shown["signer_label"]) == ((3 << 24) + 1, "this container")

    assert run(alice, "keys", "rotate", "--signature")[0] == 0
    state = Home(alice).open("default", PASS.encode()).state()
    assert [p.epoch for p in state.previous] == [3] and state.epoch == 4
    status, _, err = run(alice, "decrypt", sealed, "-o", out)
    assert status == 0, err  # the earlier key speaks for the revision it signed
    assert out.read_bytes() == b"salaries"
    status, report, err = run(alice, "rewrap", "--all", "--json")
    assert status == 0, err
    assert (json.loads(report)["rewrapped"], json.loads(report)["unverified"]) == (1, 0)
    assert json.loads(run(alice, "show", "payroll", "--json")[1])["revision"] == 4 << 24
    assert run(alice, "keys", "forget-old")[0] == 0
    out.unlink()
    assert run(alice, "decrypt", sealed, "-o", out)[0] == 0
    assert out.read_bytes() == b"salaries"


def _files(tmp_path):
    folder = tmp_path / "home" / "containers" / "default"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_rotation_refused_for_the_old_key_bound_changes_nothing(kb, tmp_path):
    """FORMAT.md 5.1.2: 8 old pairs kept, a 9th is refused (exit 2) before anything is
    written: the state (so its ``previous`` list) and container.json stay byte for byte."""
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    for _ in range(8):
        assert kb("keys", "rotate", "--exchange")[0] == 0
    before = _files(tmp_path)
    assert {"container.json", "state.db"} <= before.keys()
    for argv in (["--signature"], [], ["--exchange"]):
        status, _, err = kb("keys", "rotate", *argv)
        assert status == 2 and err.count("\n") == 1, err
        assert "keeps 8 old keys already (at most 8)" in err
        assert _files(tmp_path) == before
    assert Home(tmp_path / "home").open("default", PASS.encode()).state().previous == ()
    assert kb("rewrap", "--all", "--quiet")[0] == 0
    assert kb("keys", "forget-old")[0] == 0
    assert kb("keys", "rotate", "--signature")[0] == 0  # room again


def test_a_rotation_past_epoch_255_is_refused_and_changes_nothing(kb, tmp_path):
    """An epoch is 8 bits: a signature key is replaced with the highest epoch of any mark
    (here one another container's re-wrap could have set), and the container's epoch is
    one above it, at most 255."""
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    home = Home(tmp_path / "home")
    home.open("default", PASS.encode()).update_state(
        lambda s: s.with_revisions({("ledger", 1): (254 << 24) + 5})
    )
    assert kb("keys", "rotate", "--signature")[0] == 0  # the control: epoch 254, then 255
    state = home.open("default", PASS.encode()).state()
    assert [p.epoch for p in state.previous] == [254] and state.epoch == 255
    before = _files(tmp_path)
    status, _, err = kb("keys", "rotate", "--signature")
    assert status == 1 and err.count("\n") == 1, err
    assert "its epoch would be 255 + 1, above 255" in err
    assert _files(tmp_path) == before
    assert kb("keys", "rotate", "--exchange")[0] == 0  # the exchange key has no epoch
    assert kb("rewrap", "--all", "--quiet")[0] == 0  # and re-wraps still find a revision
    mark = home.open("default", PASS.encode()).state().revision_floor("payroll", 1)
    assert mark == 255 << 24


def test_a_rotation_that_fails_after_the_state_write_leaves_a_harmless_entry(
    kb, tmp_path, monkeypatch
):
    """FORMAT.md 5.1.2: the state lists the current key as an earlier one before
    container.json is written.  If that write fails (here: the disk is full), the key stays
    current and trusted as such, its re-wraps carry the next epoch, and the rotation done
    again lists it with an epoch that still covers them."""
    import errno

    from keyblob import ProviderError
    from keyblob.providers import software

    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    ct, plain = _encrypted(kb, tmp_path, "payroll")
    home = Home(tmp_path / "home")
    container = home.open("default", PASS.encode())
    current = container.signature_id
    json_before = _doc(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(software, "write_atomic", full)
        with pytest.raises(ProviderError, match="No space left on device"):
            blobs.rotate_own_keys(
                container, [KeyRole.SIGNATURE], store=DirectoryStore(tmp_path / "home" / "blobs")
            )
    assert _doc(tmp_path) == json_before
    state = home.open("default", PASS.encode()).state()
    assert [(p.key_id, p.epoch) for p in state.previous] == [(current, 0)]
    # Still the current key: its blobs load, and a re-wrap (of the exchange key) by it
    # writes the next epoch.
    _decrypts(kb, tmp_path, ct, plain)
    assert kb("keys", "rotate", "--exchange")[0] == 0
    assert kb("rewrap", "--all", "--quiet")[0] == 0
    state = home.open("default", PASS.encode()).state()
    assert state.revision_floor("payroll", 1) == 1 << 24
    status, out, err = kb("store", "check", "--json")
    assert status == 0 and all(e["ok"] for e in json.loads(out)["entries"]), err
    # Rotated again: the same key listed last, now with epoch 1, which covers its re-wrap.
    assert kb("keys", "rotate", "--signature")[0] == 0
    state = home.open("default", PASS.encode()).state()
    assert [(p.key_id, p.epoch) for p in state.previous] == [(current, 1)]
    _decrypts(kb, tmp_path, ct, plain)
    status, out, err = kb("rewrap", "--all", "--json")
    assert status == 0 and json.loads(out)["rewrapped"] == 1, err
    assert kb("keys", "forget-old")[0] == 0
    _decrypts(kb, tmp_path, ct, plain)


def test_an_earlier_signature_key_never_speaks_for_a_generation_made_after_it(kb, tmp_path):
    """A new generation is written at the container's epoch (FORMAT.md 2.6 step 2), its
    mark raised with the high-water mark: the replaced key, of a lower epoch, cannot put
    its own blob in its place, at revision 0 or at that revision."""
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    home = Home(tmp_path / "home")
    old = home.open("default", PASS.encode())
    assert kb("keys", "rotate", "--signature")[0] == 0
    assert kb("rotate", "payroll")[0] == 0
    assert json.loads(kb("show", "payroll", "--json")[1])["revision"] == 1 << 24
    new = home.open("default", PASS.encode())
    assert new.state().revision_floor("payroll", 2) == 1 << 24
    to = (new.exchange_id, suites.load_exchange_public(new.suite, new.exchange_public))
    with pytest.raises(VerificationError, match="not the one this container has seen"):
        blobs.verify(new, _forged(old, "payroll", 2, to=to), unwrap=False)
    with pytest.raises(VerificationError, match="re-signed since with a later key"):
        blobs.verify(new, _forged(old, "payroll", 2, revision=1 << 24, to=to), unwrap=False)
    # The control: generation 1, made before the rotation, is still the old key's.
    (earlier,) = new.state().previous
    blobs.check_earlier_signer(new.state(), earlier, "payroll", 1, 0)
    with pytest.raises(VerificationError, match="re-signed since with a later key"):
        blobs.check_earlier_signer(new.state(), earlier, "payroll", 2, 1 << 24)


def test_the_limit_an_earlier_key_speaks_for_marks_of_its_epoch_or_below_whoever_set_them():
    """FORMAT.md 2.7 step 2, Limit: an epoch says when, not who.  A mark another container
    set at an epoch not above the earlier key's is spoken for by that key (at exactly that
    revision, of a generation seen); once this container re-wraps the generation, above
    the key's epoch, it is not."""
    import os

    from keyblob.keys import KeyRole, Suite, key_id_for
    from keyblob.trust import PreviousSigner, State

    public = os.urandom(32)
    earlier = PreviousSigner(key_id_for(Suite.X25519, KeyRole.SIGNATURE, public), public, 1, 3)
    state = State(marks={"payroll": 1}).with_previous(earlier)
    set_elsewhere = state.with_revisions({("payroll", 1): (2 << 24) + 7})
    blobs.check_earlier_signer(set_elsewhere, earlier, "payroll", 1, (2 << 24) + 7)
    rewrapped_here = set_elsewhere.with_revisions({("payroll", 1): blobs.next_revision(state, 0)})
    assert blobs.next_revision(state, (2 << 24) + 7) == 4 << 24
    with pytest.raises(VerificationError, match="re-signed since with a later key"):
        blobs.check_earlier_signer(rewrapped_here, earlier, "payroll", 1, 4 << 24)
