"""The home's files against a hostile writer: what a container.json or the state may cost
(FORMAT.md 5.1, 5.2), container.json's exact shape (5.1), and the lock file (5)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

import state_support as ss
from keyblob import FormatError, Home, KdfParams, PassphraseError, ProviderError
from keyblob.keys import MAX_GENERATION
from keyblob.providers import homestate, software
from keyblob.providers.homestate import MAX_STATE_SIZE
from keyblob.providers.software import SoftwareContainer
from keyblob.trust import TrustedSigner
from support import FAST_KDF, PASSPHRASE


def _home(tmp_path: Path) -> tuple[Home, SoftwareContainer, Path]:
    home = Home(tmp_path / "h")
    container = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    return home, container, tmp_path / "h" / "containers" / "c"


def _forbid_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on any Argon2id derivation fails the test: a refusal must come before it."""

    def derive(*_: object) -> None:
        pytest.fail("the KDF ran on a container file that should have been refused")

    monkeypatch.setattr(software, "_derive", derive)


# -- item 6: the KDF ceiling ---------------------------------------------------------------


def test_the_default_and_the_ceiling_are_valid() -> None:
    assert KdfParams().check() == KdfParams(65536, 3, 4)
    KdfParams(memory_kib=256 * 1024, iterations=8, lanes=64).check()  # checked, not derived


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("memory_kib", 256 * 1024 + 1, "memory"),
        ("memory_kib", 1024 * 1024, "memory"),  # 1 GiB: ~1 GiB and 10-17 s per command
        ("memory_kib", 4 * 1024 * 1024, "memory"),
        ("iterations", 9, "iterations"),
        ("iterations", 64, "iterations"),
        ("lanes", 65, "lanes"),
    ],
)
def test_kdf_parameters_above_the_ceiling_are_refused_before_any_derivation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: int, match: str
) -> None:
    home, _, folder = _home(tmp_path)
    _forbid_derivation(monkeypatch)
    path = folder / "container.json"
    doc = json.loads(path.read_text())
    doc["kdf"][field] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=match):
        home.open("c", PASSPHRASE)
    with pytest.raises(FormatError, match=match):
        KdfParams(**{"memory_kib": 65536, "iterations": 3, "lanes": 4, field: value}).check()


# -- item 6: the size of the state (a version 1 state.json, the head of state.db) ----------


def test_a_hostile_state_over_the_bound_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 MiB of empty objects: ~125 MiB to parse (25 bytes of memory per byte) before the
    MAC could be checked.  Refused on its size alone, as state.json and as the head."""
    home, container, folder = _home(tmp_path)
    reopened = home.open("c", PASSPHRASE)
    hostile = b"[" + b"{}," * (5 * 1024 * 1024 // 3) + b"{}]"

    def parse(_: bytes) -> None:
        pytest.fail("an oversized state was parsed")

    monkeypatch.setattr(software, "strict_json", parse)
    monkeypatch.setattr(homestate, "canonical_json_value", parse)
    good = ss.head_bytes(folder)
    ss.set_head(folder, hostile)
    for reader in (container, reopened):
        with pytest.raises(software.VerificationError, match="over the 4194304-byte bound"):
            reader.state()
    ss.set_head(folder, good)
    ss.make_v1(container, {})
    (folder / "state.json").write_bytes(hostile)
    for reader in (container, reopened):
        with pytest.raises(software.VerificationError, match="over the 4194304-byte bound"):
            reader.state()


def test_a_hostile_state_at_the_bound_costs_what_format_md_says(tmp_path: Path) -> None:
    """The worst shape found (empty objects, ~25 bytes of memory per byte) just under the
    bound: refused as edited, having cost no more than the ~100 MiB FORMAT.md 5.2 states."""
    import tracemalloc

    _, container, folder = _home(tmp_path)
    count = (MAX_STATE_SIZE - 2) // 3
    hostile = b"[" + b"{}," * (count - 1) + b"{}]"
    good = ss.head_bytes(folder)
    ss.set_head(folder, hostile)
    for make_v1 in (False, True):
        if make_v1:
            ss.set_head(folder, good)
            ss.make_v1(container, {})
            (folder / "state.json").write_bytes(hostile)
        tracemalloc.start()
        try:
            with pytest.raises(software.VerificationError, match="modified outside keyblob"):
                container.state()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 128 << 20, f"{peak >> 20} MiB"


def test_names_past_the_old_bound_leave_the_head_small(tmp_path: Path) -> None:
    """30,000 names of 128 characters at the highest generation: over the 4 MiB a version
    1 state could hold (issue 11 review, finding 2, refused 28,000).  The marks are in the
    trees now; the head (FORMAT.md 5.2) stays the same size."""
    home, container, folder = _home(tmp_path)
    before = len(ss.head_bytes(folder))
    names = {f"{i:05d}".ljust(128, "n"): MAX_GENERATION for i in range(30_000)}
    container.update_state(lambda s: s.with_marks(names))
    assert len(ss.head_bytes(folder)) <= before + len("30000")  # only the count grew
    assert home.open("c", PASSPHRASE).state().all_marks() == names
    container.update_state(lambda s: s.seen("after", 1))  # and it still takes more
    assert home.open("c", PASSPHRASE).state().generation_floor("after") == 1


def test_a_head_over_the_bound_is_refused_and_the_old_state_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer refuses a head every reader would refuse (the bound lowered here so that
    a few signers pass it), and the state before the change still opens."""
    home, container, folder = _home(tmp_path)
    container.update_state(lambda s: s.seen("before", 3))
    old = ss.head_bytes(folder)
    monkeypatch.setattr(homestate, "MAX_STATE_SIZE", len(old) + 100)
    signer = _trusted()
    with pytest.raises(ProviderError) as e:
        container.update_state(lambda s: s.with_signer(signer).seen("during", 1))
    message = str(e.value)
    assert message.startswith("container 'c': the change would make the head of its home state ")
    assert message.endswith(
        f"bytes (1 signers, 0 stores), over the {len(old) + 100}-byte bound; nothing was changed"
    )
    assert "\n" not in message
    assert ss.head_bytes(folder) == old
    for reader in (container, home.open("c", PASSPHRASE)):
        assert reader.state().all_marks() == {"before": 3}


def _trusted() -> TrustedSigner:
    from keyblob.keys import KeyRole, Suite, key_id_for

    public = bytes(range(32))
    return TrustedSigner(
        key_id_for(Suite.X25519, KeyRole.SIGNATURE, public), Suite.X25519, public, public, "t", 1
    )


def test_a_state_over_the_bound_says_what_is_wrong(tmp_path: Path) -> None:
    """A version 1 state between 4 and 16 MiB, as a keyblob before the 4 MiB bound could
    write: refused as over the bound (FORMAT.md 5.2.1), not as an edit, with the way out."""
    home, container, folder = _home(tmp_path)
    ss.make_v1(container, {})
    with (folder / "state.json").open("r+b") as f:
        f.truncate(MAX_STATE_SIZE + 1)  # sparse: costs no disk
    for reader in (container, home.open("c", PASSPHRASE)):
        with pytest.raises(software.VerificationError) as e:
            reader.state()
        assert str(e.value) == (
            f"the home state of container 'c' is over the {MAX_STATE_SIZE}-byte bound keyblob "
            "writes: this keyblob did not write it"
        )
        assert "16 MiB" in e.value.hints[0]


# -- item 7: the lock file -----------------------------------------------------------------


def test_a_symlink_at_the_lock_is_refused_and_its_target_not_created(tmp_path: Path) -> None:
    _, container, folder = _home(tmp_path)
    target = tmp_path / "created-by-keyblob"
    (folder / "lock").unlink(missing_ok=True)
    (folder / "lock").symlink_to(target)
    with pytest.raises(ProviderError, match="symlink"):
        container.update_state(lambda s: s.seen("x", 1))
    assert not target.exists() and not target.is_symlink()
    assert container.state().all_marks() == {}  # nothing was changed either


def test_a_fifo_or_folder_at_the_lock_is_refused(tmp_path: Path) -> None:
    _, container, folder = _home(tmp_path)
    (folder / "lock").unlink(missing_ok=True)
    os.mkfifo(folder / "lock", 0o600)  # an open without O_NONBLOCK could wait for a writer
    with pytest.raises(ProviderError, match="not a regular file"):
        container.update_state(lambda s: s.seen("x", 1))
    (folder / "lock").unlink()
    (folder / "lock").mkdir()
    with pytest.raises(ProviderError, match="lock"):
        container.update_state(lambda s: s.seen("x", 1))


def test_a_lock_others_can_write_is_refused(tmp_path: Path) -> None:
    _, container, folder = _home(tmp_path)
    container.update_state(lambda s: s.seen("x", 1))  # makes the lock file
    (folder / "lock").chmod(0o666)
    with pytest.raises(ProviderError, match="chmod 600"):
        container.update_state(lambda s: s.seen("x", 2))


@pytest.mark.parametrize("file", ["container.json", "state.db"])
def test_a_fifo_or_symlink_at_a_home_file_is_refused_without_blocking(
    tmp_path: Path, file: str
) -> None:
    """A FIFO would block the open until someone writes to it; a symlink could lead
    anywhere.  Both are refused at once, the symlink's target never read."""
    home, container, folder = _home(tmp_path)
    real = tmp_path / "real"
    os.replace(folder / file, real)
    os.mkfifo(folder / file, 0o600)
    with pytest.raises(ProviderError, match="not a regular file"):
        home.open("c", PASSPHRASE).state() if file == "state.db" else home.open("c", PASSPHRASE)
    (folder / file).unlink()
    (folder / file).symlink_to(real)
    with pytest.raises(ProviderError, match="symlink"):
        container.state() if file == "state.db" else home.open("c", PASSPHRASE)


# -- item 10, FORMAT.md 5.1: container.json's exact shape ---------------------------------


def _edited(tmp_path: Path, edit) -> Home:  # type: ignore[no-untyped-def]
    home, _, folder = _home(tmp_path)
    path = folder / "container.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return home


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("created"),
        lambda d: d.update(created="2026-01-01"),
        lambda d: d.update(created=1.5),
        lambda d: d.update(created=True),
        lambda d: d.update(created=None),
        lambda d: d.update(created=-1),
        lambda d: d.update(created=2**63),
        lambda d: d.update(comment="hello"),  # an extra member
        lambda d: d["kdf"].update(secret="AAAA"),
        lambda d: d["exchange"].update(note="x"),
        lambda d: d["signature"].pop("sealed"),
        lambda d: d.update(signature=[]),
        lambda d: d["exchange"].update(public=7),
        lambda d: d.pop("exchange"),
        lambda d: d.update(check=base64.b64encode(bytes(31)).decode()),
        lambda d: d.update(check=base64.b64encode(bytes(33)).decode()),
        lambda d: d.update(check=""),
    ],
    ids=[
        "created missing",
        "created a string",
        "created a float",
        "created true",
        "created null",
        "created negative",
        "created over 2^63-1",
        "extra member",
        "extra kdf member",
        "extra entry member",
        "entry member missing",
        "entry not an object",
        "entry member not a string",
        "entry missing",
        "check 31 bytes",
        "check 33 bytes",
        "check empty",
    ],
)
def test_container_file_shape_is_exact_and_checked_before_the_kdf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit
) -> None:  # type: ignore[no-untyped-def]
    home = _edited(tmp_path, edit)
    _forbid_derivation(monkeypatch)
    with pytest.raises(FormatError):
        home.open("c", PASSPHRASE)


def test_created_zero_and_any_integer_are_accepted(tmp_path: Path) -> None:
    home = _edited(tmp_path, lambda d: d.update(created=0))
    assert home.open("c", PASSPHRASE).name == "c"


def test_a_check_of_the_right_size_that_differs_is_a_wrong_passphrase(tmp_path: Path) -> None:
    home = _edited(tmp_path, lambda d: d.update(check=base64.b64encode(bytes(32)).decode()))
    with pytest.raises(PassphraseError):
        home.open("c", PASSPHRASE)
