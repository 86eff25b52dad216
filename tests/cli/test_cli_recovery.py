"""Recovery recipients and `keyblob recover` (docs/RECOVERY.md, docs/CLI.md "Recovery",
FORMAT.md 8), end to end with exit statuses: a laptop's keys come back on a fresh home from a
recovery container or a passphrase kit, and only what the lost container signed does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keyblob.format import KeyBlob

PASS = "recovery test passphrase"
KIT_PASS = "break glass: nine otters sing"
RECOVERY_HOME_PASS = "offline recovery container passphrase"


@pytest.fixture
def kb(tmp_path, capsys, monkeypatch, keyblob_main):
    """``kb(*argv, home=NAME) -> (status, stdout, stderr)`` on the home ``tmp_path/NAME``."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)

    def run(*argv: str | os.PathLike[str], home: str = "laptop") -> tuple[int, str, str]:
        capsys.readouterr()
        status = keyblob_main(["--home", str(tmp_path / home), *[str(a) for a in argv]])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def _stored(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*.kb"))}


def _recipients(kb, name: str, home: str = "laptop") -> list[str]:
    status, out, _ = kb("show", name, "--json", home=home)
    assert status == 0
    return json.loads(out)["recipients"]


@pytest.fixture
def laptop(kb, tmp_path):
    """A laptop whose keys are also wrapped for an offline recovery container: payroll
    (generations 1 and 2) and notes, each with a file encrypted under it; and a fresh
    machine with a new container ("new")."""
    # The recovery container has a passphrase of its own.
    offline_pass = _secret(tmp_path / "offline.pass", RECOVERY_HOME_PASS)
    status, _, err = kb("--passphrase-file", offline_pass, "init", home="offline")
    assert status == 0, err
    kb("--passphrase-file", offline_pass, "pubkey", "-o", tmp_path / "offline.pub", home="offline")
    kb("init")
    kb("pubkey", "-o", tmp_path / "laptop.pub")
    status, _, err = kb("recovery", "add", tmp_path / "offline.pub", "--label", "the safe")
    assert status == 0, err
    files = {}
    for name, rotate in (("payroll", True), ("notes", False)):
        assert kb("new", name)[0] == 0
        plain = tmp_path / f"{name}-1.txt"
        plain.write_bytes(f"{name} generation 1\n".encode() * 100)
        assert kb("encrypt", name, "-i", plain, "-o", f"{plain}.kb")[0] == 0
        files[f"{plain}.kb"] = plain.read_bytes()
        if rotate:
            assert kb("rotate", name)[0] == 0
            plain = tmp_path / f"{name}-2.txt"
            plain.write_bytes(f"{name} generation 2\n".encode())
            assert kb("encrypt", name, "-i", plain, "-o", f"{plain}.kb")[0] == 0
            files[f"{plain}.kb"] = plain.read_bytes()
    kb("init", home="new")
    return {
        "files": files,
        "store": tmp_path / "laptop" / "blobs",
        "offline_pass": offline_pass,
        "laptop_pub": tmp_path / "laptop.pub",
    }


def test_recovery_recipients_are_in_every_new_blob(kb, tmp_path, laptop) -> None:
    status, out, _ = kb("recovery", "list", "--json")
    assert status == 0
    (row,) = json.loads(out)
    assert (row["kind"], row["label"]) == ("container", "the safe")
    for name in ("payroll", "notes"):
        assert row["key_id"] in _recipients(kb, name)
    status, out, _ = kb("recovery", "list")
    assert out.startswith(f"kx-{row['key_id'][:8]}  container")
    status, _, err = kb("recovery", "remove", row["key_id"][:8])
    assert status == 0 and f"keyblob unshare NAME --recipient {row['key_id'][:8]}" in err
    assert kb("new", "later")[0] == 0
    assert row["key_id"] not in _recipients(kb, "later")
    assert kb("recovery", "remove", row["key_id"][:8])[0] == 4


def test_adding_says_that_stored_blobs_are_not_rewritten(kb, tmp_path) -> None:
    kb("init", home="offline")
    kb("pubkey", "-o", tmp_path / "offline.pub", home="offline")
    kb("init")
    kb("new", "early")
    status, out, err = kb("recovery", "add", tmp_path / "offline.pub")
    assert status == 0
    assert "fingerprint " in out
    assert "not wrapped for it" in err and "keyblob rewrap --all" in err
    assert "keyblob share NAME --all --to" in err
    assert len(_recipients(kb, "early")) == 1  # not rewritten
    kb("pubkey", "-o", tmp_path / "own.pub")
    assert kb("recovery", "add", tmp_path / "own.pub")[0] == 2


def test_rewrap_all_wraps_earlier_blobs_for_a_recovery_recipient_added_later(kb, tmp_path) -> None:
    """What the hint of `recovery add` promises: `rewrap --all` re-wraps this container's
    own blobs for the recovery recipient, keeping their key id; a blob another (trusted)
    container signed in the same store is left to its owner, never re-signed here."""
    store = tmp_path / "shared"
    kb("init", home="offline")
    kb("pubkey", "-o", tmp_path / "offline.pub", home="offline")
    kb("init", home="colleague")
    kb("pubkey", "-o", tmp_path / "colleague.pub", home="colleague")
    kb("init")
    kb("pubkey", "-o", tmp_path / "laptop.pub")
    assert kb("trust", "add", tmp_path / "colleague.pub")[0] == 0
    assert kb("--store", store, "new", "early")[0] == 0
    assert (
        kb("--store", store, "new", "theirs", "--to", tmp_path / "laptop.pub", home="colleague")[0]
        == 0
    )
    theirs = (store / "theirs").read_bytes() if (store / "theirs").is_file() else None
    before = _stored(store)
    _, out, _ = kb("--store", store, "show", "early", "--json")
    key_id = json.loads(out)["key_id"]
    assert kb("recovery", "add", tmp_path / "offline.pub")[0] == 0
    status, _, err = kb("--store", store, "rewrap", "--all")
    assert status == 0, err
    status, out, _ = kb("--store", store, "show", "early", "--json")
    shown = json.loads(out)
    assert status == 0 and shown["key_id"] == key_id
    assert len(shown["recipients"]) == 2 and shown["revision"] >= 1
    after = _stored(store)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed and all(k.startswith("early") for k in changed), changed
    assert theirs is None or (store / "theirs").read_bytes() == theirs
    # A second run has nothing left to do.
    assert kb("--store", store, "rewrap", "--all")[0] == 0
    assert _stored(store) == after


def test_recover_from_a_recovery_container_on_a_fresh_home(kb, tmp_path, laptop) -> None:
    store = laptop["store"]
    before = _stored(store)
    laptop_kx = _recipients(kb, "notes")[0]
    # As docs/RECOVERY.md says: the new container takes the recovery recipient again first.
    assert kb("recovery", "add", tmp_path / "offline.pub", home="new")[0] == 0
    status, out, err = kb(
        "--store", store, "recover", "--all",
        "--signer", laptop["laptop_pub"],
        "--recovery-home", tmp_path / "offline",
        "--recovery-passphrase-file", laptop["offline_pass"],
        home="new",
    )  # fmt: skip
    assert status == 0, err
    assert "signed by the lost container" in out
    assert "recovered 3 keys of 3" in out
    after = _stored(store)
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)
    for path, plain in laptop["files"].items():
        status, _, err = kb(
            "--store", store, "decrypt", "-i", path, "-o", f"{path}.out", home="new"
        )
        assert status == 0, err
        assert Path(f"{path}.out").read_bytes() == plain
    # Same name, generation and key id; signed by the new container; still recoverable.
    status, out, _ = kb("--store", store, "show", "payroll", "--json", home="new")
    shown = json.loads(out)
    assert shown["signer_label"] == "this container"
    offline_kx = json.loads(kb("recovery", "list", "--json")[1])[0]["key_id"]
    assert offline_kx in shown["recipients"]
    # The laptop's own exchange key is not wrapped for again.
    assert laptop_kx not in shown["recipients"]
    # Again: nothing left to do.
    status, out, _ = kb(
        "--store", store, "recover", "--all", "--json",
        "--signer", laptop["laptop_pub"],
        "--recovery-home", tmp_path / "offline",
        "--recovery-passphrase-file", laptop["offline_pass"],
        home="new",
    )  # fmt: skip
    assert status == 0
    doc = json.loads(out)
    assert (doc["total"], doc["recovered"], doc["readable"]) == (3, 0, 3)
    assert _stored(store) == after
    # The new container rotates what it recovered: every recipient is known to it.
    status, _, err = kb("--store", store, "rotate", "payroll", home="new")
    assert status == 0, err
    status, out, _ = kb("--store", store, "show", "payroll", "--json", home="new")
    assert json.loads(out)["generation"] == 3 and offline_kx in json.loads(out)["recipients"]


@pytest.mark.not_through_agent(
    reason="exits 3 after recovering the others (as store copy does): a second run, which the "
    "agent variant makes of every refusal, finds them readable and says so"
)
def test_a_blob_not_signed_by_the_lost_container_is_not_recovered(kb, tmp_path, laptop) -> None:
    store = laptop["store"]
    # Mallory's container wraps a key for the recovery container too and puts it in the
    # store: a valid blob, but not the lost container's.
    kb("init", home="mallory")
    assert (
        kb("--store", store, "new", "planted", "--to", tmp_path / "offline.pub", home="mallory")[0]
        == 0
    )
    # And a blob of the laptop's whose signature was broken in the store.
    broken = store / "notes" / "1.kb"
    data = bytearray(broken.read_bytes())
    data[-1] ^= 1
    broken.write_bytes(bytes(data))
    planted = _stored(store)
    status, out, err = kb(
        "--store", store, "recover", "--all",
        "--signer", laptop["laptop_pub"],
        "--recovery-home", tmp_path / "offline",
        "--recovery-passphrase-file", laptop["offline_pass"],
        home="new",
    )  # fmt: skip
    assert status == 3, err
    assert "recovered 2 keys of 4; 2 not recoverable:" in out
    assert "planted generation 1: signed by sg-" in out and "not by the lost container" in out
    assert "notes generation 1: the signature does not verify" in out
    after = _stored(store)
    for key in (f"planted{os.sep}1.kb", f"notes{os.sep}1.kb"):
        assert after[key] == planted[key]
    assert kb("--store", store, "show", "planted", home="new")[0] == 3


@pytest.mark.not_through_agent(reason="checks the kit file the command writes in the home")
def test_a_passphrase_kit_opens_with_that_passphrase_only(kb, tmp_path) -> None:
    kit_pass = _secret(tmp_path / "kit.pass", KIT_PASS)
    kb("init")
    kb("pubkey", "-o", tmp_path / "laptop.pub")
    status, out, err = kb("recovery", "add", "--passphrase", "--recovery-passphrase-file", kit_pass)
    assert status == 0, err
    (kit,) = (tmp_path / "laptop" / "containers" / "default").glob("recovery-*.kbkit")
    assert kit.stat().st_mode & 0o777 == 0o600
    assert "262144 KiB, 4 passes" in out and "keep a copy of the kit away" in err
    row = json.loads(kb("recovery", "list", "--json")[1])[0]
    assert row["kind"] == "passphrase" and kit.name == f"recovery-{row['key_id'][:8]}.kbkit"
    assert b"nine otters" not in kit.read_bytes()
    kb("new", "diary")
    assert row["key_id"] in _recipients(kb, "diary")
    plain = tmp_path / "diary.txt"
    plain.write_bytes(b"dear diary\n")
    kb("encrypt", "diary", "-i", plain, "-o", tmp_path / "diary.kb")
    store = tmp_path / "laptop" / "blobs"
    kb("init", home="new")
    # The same kit, taken again by the new container: its public key only, no passphrase.
    status, out, err = kb("recovery", "add", kit, home="new")
    assert status == 0 and f"kx-{row['key_id'][:8]}" in out and "keyblob rewrap --all" in err
    before = _stored(store)

    def recover(passphrase_file: Path) -> tuple[int, str, str]:
        return kb(
            "--store", store, "recover", "diary",
            "--signer", tmp_path / "laptop.pub", "--kit", kit,
            "--recovery-passphrase-file", passphrase_file,
            home="new",
        )  # fmt: skip

    for wrong in ("break glass: nine otters sang", PASS):
        status, _, err = recover(_secret(tmp_path / "wrong.pass", wrong))
        assert status == 5, err
        assert "wrong passphrase for the recovery kit" in err
        assert _stored(store) == before
    status, out, err = recover(kit_pass)
    assert status == 0, err
    assert "recovered 1 keys of 1" in out
    assert (
        kb(
            "--store",
            store,
            "decrypt",
            "-i",
            tmp_path / "diary.kb",
            "-o",
            tmp_path / "d.out",
            home="new",
        )[0]
        == 0
    )
    assert (tmp_path / "d.out").read_bytes() == b"dear diary\n"
    status, out, _ = kb("--store", store, "show", "diary", "--json", home="new")
    assert row["key_id"] in json.loads(out)["recipients"]
    assert kb("--store", store, "rotate", "diary", home="new")[0] == 0


@pytest.mark.not_through_agent(reason="the edited kit is refused before any container is opened")
def test_an_edited_kit_is_refused(kb, tmp_path) -> None:
    kit_pass = _secret(tmp_path / "kit.pass", KIT_PASS)
    kb("init")
    kb("pubkey", "-o", tmp_path / "laptop.pub")
    kit = tmp_path / "r.kbkit"
    assert (
        kb("recovery", "add", "--passphrase", "-o", kit, "--recovery-passphrase-file", kit_pass)[0]
        == 0
    )
    kb("new", "k")
    store = tmp_path / "laptop" / "blobs"
    before = _stored(store)
    data = kit.read_bytes()
    kb("init", home="new")
    edited = tmp_path / "edited.kbkit"
    for i in range(0, len(data), 7):
        changed = bytearray(data)
        changed[i] ^= 0x04
        edited.write_bytes(bytes(changed))
        status, _, err = kb(
            "--store", store, "recover", "--all",
            "--signer", tmp_path / "laptop.pub", "--kit", edited,
            "--recovery-passphrase-file", kit_pass,
            home="new",
        )  # fmt: skip
        assert status == 3, (i, err)
        assert err.startswith(f"keyblob: error: refused {edited}: recovery kit: ")
    assert _stored(store) == before
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x04
    edited.write_bytes(bytes(changed))
    status, _, err = kb("recovery", "add", edited, home="new")
    assert status == 3 and "recovery kit" in err
    assert json.loads(kb("recovery", "list", "--json", home="new")[1]) == []


@pytest.mark.not_through_agent(
    reason="through the agent the command is given no container passphrase to compare with"
)
def test_a_kit_passphrase_equal_to_the_containers_is_warned_about(kb, tmp_path) -> None:
    kb("init")
    same = _secret(tmp_path / "same.pass", PASS)
    status, _, err = kb("recovery", "add", "--passphrase", "--recovery-passphrase-file", same)
    assert status == 0
    assert "warning: the recovery passphrase is the container's" in err


def test_the_kit_passphrase_from_the_environment_and_its_absence(kb, tmp_path, monkeypatch) -> None:
    kb("init")
    folder = tmp_path / "laptop" / "containers" / "default"
    status, _, err = kb("recovery", "add", "--passphrase")  # no terminal under pytest
    assert status == 2 and err.count("\n") == 1
    assert "set KEYBLOB_RECOVERY_PASSPHRASE, use --recovery-passphrase-file" in err
    monkeypatch.setenv("KEYBLOB_RECOVERY_PASSPHRASE", "")
    status, _, err = kb("recovery", "add", "--passphrase")
    assert status == 2 and "the recovery passphrase is empty" in err
    assert "an empty KEYBLOB_RECOVERY_PASSPHRASE" in err
    assert not list(folder.glob("*.kbkit"))
    monkeypatch.setenv("KEYBLOB_RECOVERY_PASSPHRASE", KIT_PASS)
    status, _, err = kb("recovery", "add", "--passphrase")
    assert status == 0, err
    assert len(list(folder.glob("*.kbkit"))) == 1


def test_recovery_remove_refuses_a_short_id_before_the_passphrase(kb, monkeypatch) -> None:
    kb("init")
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # no terminal either: the unlock would fail
    status, _, err = kb("recovery", "remove", "kx-1234")
    assert status == 2 and "give at least the first 8 hex digits" in err
    assert "keyblob recovery list shows them" in err


def test_recover_says_a_file_given_as_name_is_one(kb, tmp_path) -> None:
    kb("init")
    given = tmp_path / "payroll.txt"
    given.write_text("not a key name\n")
    status, _, err = kb("recover", given, "--signer", given, "--kit", given)
    assert status == 2 and f"{given} is a file; NAME is a key name" in err


def test_a_kit_is_never_written_over_a_file(kb, tmp_path) -> None:
    kit_pass = _secret(tmp_path / "kit.pass", KIT_PASS)
    kb("init")
    there = tmp_path / "there.kbkit"
    there.write_bytes(b"keep me")
    status, _, err = kb(
        "recovery", "add", "--passphrase", "-o", there, "--recovery-passphrase-file", kit_pass
    )
    assert status == 2 and "exists" in err
    assert there.read_bytes() == b"keep me"
    assert json.loads(kb("recovery", "list", "--json")[1]) == []


def test_more_than_16_recipients_is_refused(kb, tmp_path) -> None:
    kb("init")
    pubs = []
    for i in range(15):
        home = f"peer{i}"
        kb("init", home=home)
        pubs.append(tmp_path / f"{home}.pub")
        kb("pubkey", "-o", pubs[-1], home=home)
    kb("recovery", "add", pubs[0])
    kb("recovery", "add", pubs[1])
    to = [a for p in pubs[2:] for a in ("--to", p)]  # 13 + own + 2 recovery = 16
    assert kb("new", "sixteen", *to)[0] == 0
    assert len(_recipients(kb, "sixteen")) == 16
    kb("init", home="extra")
    kb("pubkey", "-o", tmp_path / "extra.pub", home="extra")
    status, _, err = kb("new", "seventeen", *to, "--to", tmp_path / "extra.pub")
    assert status == 2
    assert err.count("\n") == 1 and "over the 16 a blob holds" in err
    assert not (tmp_path / "laptop" / "blobs" / "seventeen").exists()
    for pub in pubs[2:]:
        assert kb("recovery", "add", pub)[0] == 0
    status, _, err = kb("recovery", "add", tmp_path / "extra.pub")
    assert status == 2 and "15 recovery recipients already" in err
    assert "keyblob recovery remove one first" in err
    # A 16th as a new kit: refused when it is recorded, and the kit written is removed.
    kit_pass = _secret(tmp_path / "kit.pass", KIT_PASS)
    kit = tmp_path / "refused.kbkit"
    status, _, err = kb(
        "recovery", "add", "--passphrase", "-o", kit, "--recovery-passphrase-file", kit_pass
    )
    assert status == 2 and "15 recovery recipients already" in err
    assert not kit.exists()
    assert kb("new", "all-recovery")[0] == 0
    assert len(_recipients(kb, "all-recovery")) == 16


def test_usage(kb, tmp_path, laptop) -> None:
    common = ("--signer", laptop["laptop_pub"], "--kit", tmp_path / "none.kbkit")
    assert kb("recover", *common, home="new")[0] == 2  # neither NAME nor --all
    assert kb("recover", "--all", "--signer", laptop["laptop_pub"], home="new")[0] == 2
    assert kb("recover", "--all", *common, home="new")[0] == 4  # no such kit
    assert kb("recovery", "add")[0] == 2
    assert kb("recovery", "add", "--passphrase", laptop["laptop_pub"])[0] == 2


def test_blobs_recovered_are_revised(kb, tmp_path, laptop) -> None:
    store = laptop["store"]
    kb(
        "--store", store, "recover", "payroll",
        "--signer", laptop["laptop_pub"],
        "--recovery-home", tmp_path / "offline",
        "--recovery-passphrase-file", laptop["offline_pass"],
        home="new",
    )  # fmt: skip
    old = KeyBlob.from_bytes((store / "notes" / "1.kb").read_bytes())
    new = KeyBlob.from_bytes((store / "payroll" / "2.kb").read_bytes())
    assert old.header.revision == 0 and new.header.revision == 1


def test_the_lost_container_is_not_wrapped_for_even_when_trusted(kb, tmp_path, laptop) -> None:
    # Trusting OLD.pub is not needed, and not advised; if it was done, the laptop's exchange
    # key (perhaps in a thief's hands) still gets none of the recovered keys.
    store = laptop["store"]
    laptop_kx = _recipients(kb, "notes")[0]
    assert kb("trust", "add", laptop["laptop_pub"], home="new")[0] == 0
    status, _, err = kb(
        "--store", store, "recover", "notes",
        "--signer", laptop["laptop_pub"],
        "--recovery-home", tmp_path / "offline",
        "--recovery-passphrase-file", laptop["offline_pass"],
        home="new",
    )  # fmt: skip
    assert status == 0, err
    status, out, _ = kb("--store", store, "show", "notes", "--json", home="new")
    shown = json.loads(out)["recipients"]
    # Nor the recovery key: the new container did not take it as a recovery recipient.
    assert laptop_kx not in shown and len(shown) == 1


def test_a_recovery_key_of_another_suite_is_refused_before_its_passphrase(kb, tmp_path) -> None:
    kit_pass = _secret(tmp_path / "kit.pass", KIT_PASS)
    kb("init", "--suite", "p256")
    kb("pubkey", "-o", tmp_path / "laptop.pub")
    kit = tmp_path / "p256.kbkit"
    assert (
        kb("recovery", "add", "--passphrase", "-o", kit, "--recovery-passphrase-file", kit_pass)[0]
        == 0
    )
    assert b'"suite":"p256"' in kit.read_bytes()
    kb("init", home="new")
    status, out, err = kb(
        "recover", "--all", "--signer", tmp_path / "laptop.pub", "--kit", kit,
        "--recovery-passphrase-file", tmp_path / "no-such-file",
        home="new",
    )  # fmt: skip
    assert status == 2 and "the recovery key is of suite p256" in err
    assert out == ""


def test_the_kit_passphrase_is_typed_twice_and_never_echoed(tmp_path) -> None:
    from support import run_in_terminal

    env = {**os.environ, "KEYBLOB_HOME": str(tmp_path / "laptop"), "KEYBLOB_PASSPHRASE": PASS}
    assert run_in_terminal(["init"], [], env)[0] == 0
    folder = tmp_path / "laptop" / "containers" / "default"
    status, out = run_in_terminal(["recovery", "add", "--passphrase"], ["one", "two"] * 3, env)
    assert status == 2 and "differ" in out
    assert not list(folder.glob("*.kbkit"))
    typed = "typed kit passphrase, long enough"
    status, out = run_in_terminal(["recovery", "add", "--passphrase"], [typed, typed], env)
    assert status == 0, out
    assert "Passphrase for the new recovery kit:" in out and typed not in out
    (kit,) = folder.glob("*.kbkit")
    assert run_in_terminal(["pubkey", "-o", str(tmp_path / "laptop.pub")], [], env)[0] == 0
    assert run_in_terminal(["new", "k"], [], env)[0] == 0
    new = {**env, "KEYBLOB_HOME": str(tmp_path / "new")}
    assert run_in_terminal(["init"], [], new)[0] == 0
    argv = ["--store", str(tmp_path / "laptop" / "blobs"), "recover", "--all"]
    argv += ["--signer", str(tmp_path / "laptop.pub"), "--kit", str(kit)]
    status, out = run_in_terminal(argv, [typed], new)
    assert status == 0 and "Recovery passphrase:" in out and "recovered 1 keys of 1" in out
    assert typed not in out
