"""`keyblob keys rotate`, `keyblob rewrap`, `keyblob keys forget-old` (docs/CLI.md; FORMAT.md
5.1.2, 2.7 step 2): a container's own key pairs replaced while every stored key keeps its
name, generation and key id, and old data keeps opening; the limits on an earlier
signature key; forget-old's refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from keyblob import Home, IgnoredEntryWarning, UsageError, VerificationError, blobs
from keyblob.format import KeyBlob, Recipient
from keyblob.keys import KeyRole
from keyblob.providers import suites
from keyblob.storage.directory import DirectoryStore

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
