"""keyblob retire NAME --below N (issue 16 item 3): retired generations are refused (exit 3,
the message names the retirement) by every way a key is loaded, before any unwrap; the
generations at or above N keep working; list and show mark them; the retirement is in the
authenticated state (it holds after a restart, and deleting it fails the MAC); it is never
lowered and never retires every generation.  ``show`` says when a stored blob's signer is no
longer trusted.  Each test runs without and with the agent (conftest.py)."""

from __future__ import annotations

import json

import pytest

import state_support as ss
from keyblob import blobs
from keyblob.errors import VerificationError
from keyblob.providers.software import Home
from keyblob.storage import open_store

PASS = "s3cret passphrase"
RETIRED_1 = "payroll generation 1 was retired (keyblob retire payroll --below 3)"
RETIRED_2 = "payroll generation 2 was retired (keyblob retire payroll --below 3)"


@pytest.fixture(autouse=True)
def _through_both(keyblob_main):
    """Every test here runs direct and through the agent (``kb`` uses keyblob_main)."""


@pytest.fixture
def three(tmp_path, kb):
    """payroll at generations 1, 2, 3, with data encrypted under 1 and under 3, and the
    blob of generation 1 exported to a file; then retired below 3."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"salaries")
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    assert kb("encrypt", "payroll", "-i", plain, "-o", tmp_path / "old.enc")[0] == 0
    assert kb("export", "payroll", "-o", tmp_path / "g1.kb")[0] == 0
    assert kb("rotate", "payroll")[0] == 0
    assert kb("rotate", "payroll")[0] == 0
    assert kb("encrypt", "payroll", "-i", plain, "-o", tmp_path / "new.enc")[0] == 0
    status, out, err = kb("retire", "payroll", "--below", "3")
    assert status == 0, err
    assert "retired payroll generations below 3" in out and "1, 2" in out
    assert "generations 3 to 3 stay usable" in out
    return tmp_path


def test_retired_generations_refuse_decrypt_show_export_and_import(three, kb):
    tmp = three
    status, _, err = kb("decrypt", tmp / "old.enc", "-o", tmp / "out")
    assert status == 3 and RETIRED_1 in err, err
    assert len(err.strip().splitlines()[0]) == len(err.splitlines()[0])
    assert not (tmp / "out").exists()  # nothing written
    status, _, err = kb("show", "payroll", "--generation", "2")
    assert status == 3 and err.startswith(f"keyblob: error: refused payroll: {RETIRED_2}"), err
    status, _, err = kb("export", "payroll", "--generation", "1", "-o", tmp / "again.kb")
    assert status == 3 and RETIRED_1 in err and not (tmp / "again.kb").exists()
    # A blob given directly: verify and import refuse it too (FORMAT.md 2.7 step 5).
    status, _, err = kb("verify", tmp / "g1.kb")
    assert status == 3 and RETIRED_1 in err
    status, _, err = kb("--store", tmp / "other", "import", tmp / "g1.kb")
    assert status == 3 and RETIRED_1 in err
    assert not (tmp / "other" / "payroll").exists()


def test_generations_at_or_above_the_retirement_keep_working(three, kb):
    tmp = three
    status, _, err = kb("decrypt", tmp / "new.enc", "-o", tmp / "out")
    assert status == 0, err
    assert (tmp / "out").read_bytes() == b"salaries"
    assert kb("show", "payroll", "--generation", "3")[0] == 0
    assert kb("export", "payroll", "-o", tmp / "g3.kb")[0] == 0
    # A rotation writes above it, as ever.
    status, out, err = kb("rotate", "payroll")
    assert status == 0 and "generation 4" in out + err, (out, err)


def test_list_and_show_mark_the_retired_generations(three, kb):
    status, out, _ = kb("list")
    assert status == 0
    (row,) = [line for line in out.splitlines() if line.startswith("payroll")]
    assert row.endswith("[generations below 3 retired]")
    status, out, _ = kb("show", "payroll")
    assert status == 0
    assert "generations  1 (retired), 2 (retired), 3" in out
    doc = json.loads(kb("show", "payroll", "--json")[1])
    assert doc["retired_below"] == 3 and doc["retired_generations"] == [1, 2]
    assert doc["generations"] == [1, 2, 3] and doc["generation"] == 3
    (key,) = json.loads(kb("list", "--json")[1])["keys"]
    assert key["retired_below"] == 3
    # A name with nothing retired says so, in text and JSON.
    assert kb("new", "ledger")[0] == 0
    (ledger,) = [k for k in json.loads(kb("list", "--json")[1])["keys"] if k["name"] == "ledger"]
    assert ledger["retired_below"] == 0
    status, out, _ = kb("list")
    (row,) = [line for line in out.splitlines() if line.startswith("ledger")]
    assert "retired" not in row


def test_a_retirement_is_never_lowered_nor_retires_everything(three, kb):
    status, _, err = kb("retire", "payroll", "--below", "2")
    assert status == 2 and "already retired below generation 3" in err
    assert "never lowered" in err
    status, _, err = kb("retire", "payroll", "--below", "4")
    assert status == 2 and "would retire every generation" in err
    assert "keyblob rotate payroll" in err
    for below in ("1", "0", "x"):
        status, _, err = kb("retire", "payroll", "--below", below)
        assert status == 2, (below, err)
    status, out, _ = kb("retire", "payroll", "--below", "3")
    assert status == 0 and "already retired; nothing changed" in out
    status, _, err = kb("retire", "nothing", "--below", "2")
    assert status == 4, err
    # Still retired below 3.
    assert kb("show", "payroll", "--generation", "2")[0] == 3
    assert kb("show", "payroll", "--generation", "3")[0] == 0


def test_retire_json(three, kb):
    assert kb("rotate", "payroll")[0] == 0
    doc = json.loads(kb("retire", "payroll", "--below", "4", "--json")[1])
    assert doc["retired_below"] == 4 and doc["before"] == 3 and doc["changed"] is True
    assert doc["retired_stored"] == [1, 2, 3] and doc["newest"] == 4


def test_the_library_refuses_before_any_unwrap_after_a_restart(three, monkeypatch):
    """The retirement is in the state: a container opened afresh (another process) refuses
    the retired generations through the library, and never unwraps for them."""
    container = Home(three / "home").open("default", PASS.encode())
    store = open_store(str(three / "home" / "blobs"))
    unwrapped = []
    real = container.unwrap_as  # every unwrap goes through it (issue 16: old keys)
    monkeypatch.setattr(container, "unwrap_as", lambda *a: unwrapped.append(a) or real(*a))
    for generation in (1, 2):
        with pytest.raises(VerificationError, match="was retired"):
            blobs.load(container, store, "payroll", generation=generation)
        with pytest.raises(VerificationError, match="was retired"):
            blobs.open_stored(container, store, "payroll", generation, unwrap=False)
    with pytest.raises(VerificationError, match="was retired"):
        blobs.verify(container, (three / "g1.kb").read_bytes())
    assert unwrapped == []
    assert blobs.load(container, store, "payroll").generation == 3
    assert blobs.load(container, store, "payroll", generation=3).generation == 3
    assert len(unwrapped) == 2  # the control: loads that pass do unwrap
    # The newest too, were it retired (only the state's key holder can set that):
    # refused for the latest load as for an explicit one.
    container.update_state(lambda s: s.with_retired("payroll", 4))
    with pytest.raises(VerificationError, match="generation 3 was retired"):
        blobs.load(container, store, "payroll")
    assert len(unwrapped) == 2


def test_a_state_with_the_retirement_deleted_fails_the_mac(three, kb):
    folder = three / "home" / "containers" / "default"
    doc = json.loads(ss.head_bytes(folder))
    assert doc.pop("retired") == {"payroll": 3}
    ss.set_head(folder, ss.canonical(doc) + b"\n")
    status, _, err = kb("decrypt", three / "old.enc", "-o", three / "out")
    assert status == 3 and "modified outside keyblob" in err, err
    assert not (three / "out").exists()


def test_new_never_writes_below_a_retirement(tmp_path, kb):
    """The guard under the state lock itself, not the high-water mark: a retirement of a
    name this container never saw (no mark) still stops a generation 1 below it."""
    assert kb("init")[0] == 0
    container = Home(tmp_path / "home").open("default", PASS.encode())
    container.update_state(lambda s: s.with_retired("payroll", 2))
    assert container.state().generation_floor("payroll") == 0
    status, _, err = kb("new", "payroll")
    assert status == 3 and "payroll generation 1 was retired" in err, err
    assert open_store(str(tmp_path / "home" / "blobs")).generations("payroll") == []


def test_capi_decrypt_of_a_retired_generation_is_refused(tmp_path, kb):
    plain = tmp_path / "plain"
    plain.write_bytes(b"legacy data")
    assert kb("init")[0] == 0
    assert kb("new", "db", "--algorithm", "capi-aes-256")[0] == 0
    status, _, err = kb("capi", "encrypt", "db", "-i", plain, "-o", tmp_path / "ct")
    assert status == 0, err
    assert kb("rotate", "db")[0] == 0
    assert kb("retire", "db", "--below", "2")[0] == 0
    status, _, err = kb("capi", "decrypt", "db", "--generation", "1", "-i", tmp_path / "ct")
    assert status == 3 and "db generation 1 was retired (keyblob retire db --below 2)" in err


def test_show_says_when_a_stored_blobs_signer_is_no_longer_trusted(tmp_path, kb):
    bob = tmp_path / "bob"
    store = tmp_path / "store"
    assert kb("init")[0] == 0
    assert kb("pubkey", "-o", tmp_path / "alice.pub")[0] == 0
    assert kb("--home", bob, "init", "--label", "Bob Builder")[0] == 0
    assert kb("--home", bob, "pubkey", "-o", tmp_path / "bob.pub")[0] == 0
    assert kb("trust", "add", tmp_path / "bob.pub")[0] == 0
    status, _, err = kb(
        "--home", bob, "--store", store, "new", "shared", "--to", tmp_path / "alice.pub"
    )
    assert status == 0, err
    assert kb("--store", store, "show", "shared")[0] == 0
    signer = json.loads(kb("--store", store, "show", "shared", "--json")[1])["signer"]
    assert kb("trust", "remove", signer[:16])[0] == 0
    status, _, err = kb("--store", store, "show", "shared")
    assert status == 3
    first = err.splitlines()[0]
    assert first.startswith(
        f"keyblob: error: refused shared: shared generation 1 is signed by sg-{signer[:8]} "
        "(Bob Builder), which is no longer trusted here: removed from the trust list 20"
    ), first
    assert "keyblob trust add THEIR.pub" in err
    status, _, err = kb("--store", store, "list")
    assert status == 3 and "no longer trusted here: removed from the trust list" in err
    # Trusted again: shown again, and no longer remembered as removed.
    assert kb("trust", "add", tmp_path / "bob.pub")[0] == 0
    assert kb("--store", store, "show", "shared")[0] == 0
    head = json.loads(ss.head_bytes(tmp_path / "home" / "containers" / "default"))
    assert "removed" not in head


def test_a_planted_blob_of_a_signer_never_trusted_is_not_called_no_longer_trusted(tmp_path, kb):
    """The substitution attack: the victim had accepted generation 1 (its own), an attacker
    put their own blob in its place.  Nothing suggests the attacker was ever trusted."""
    attacker = tmp_path / "attacker"
    assert kb("init")[0] == 0
    assert kb("new", "payroll")[0] == 0
    assert kb("show", "payroll")[0] == 0
    assert kb("pubkey", "-o", tmp_path / "victim.pub")[0] == 0
    assert kb("--home", attacker, "init")[0] == 0
    evil = tmp_path / "evil"
    argv = ("--home", attacker, "--store", evil, "new", "payroll", "--to", tmp_path / "victim.pub")
    assert kb(*argv)[0] == 0
    target = tmp_path / "home" / "blobs" / "payroll" / "1.kb"
    target.write_bytes((evil / "payroll" / "1.kb").read_bytes())
    status, _, err = kb("show", "payroll")
    assert status == 3 and "which is not a trusted signer" in err
    assert "no longer" not in err
