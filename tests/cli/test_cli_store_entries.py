"""FORMAT.md 5.3, per command: what the directory store does with an entry that is not a
blob file (a symlink with a blob's name, a folder, a leftover temp file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keyblob import Home, blobs
from keyblob.cli import main
from keyblob.errors import StorageError
from keyblob.storage.directory import DirectoryStore

PASS = "s3cret passphrase"


def _run(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["--home", str(home), *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    home = tmp_path / "home"
    assert _run(capsys, home, "init")[0] == 0
    assert _run(capsys, home, "new", "k")[0] == 0
    assert _run(capsys, home, "rotate", "k")[0] == 0
    return home


def test_a_symlink_with_a_blobs_name_is_ignored_by_lookups_and_refused_by_number(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = home / "blobs" / "k"
    os.symlink(folder / "1.kb", folder / "3.kb")  # a valid blob, one generation up
    (folder / "4.kb").mkdir()
    (folder / ".5.kb.0123456789abcdef.tmp").write_bytes(b"leftover")
    # Listing and the newest-generation lookup do not count them...
    status, out, _ = _run(capsys, home, "list", "--json")
    assert status == 0
    assert [(k["name"], k["generation"]) for k in json.loads(out)["keys"]] == [("k", 2)]
    status, out, _ = _run(capsys, home, "show", "k", "--json")
    assert status == 0 and json.loads(out)["generation"] == 2
    assert _run(capsys, home, "export", "k", "-o", str(tmp_path / "k.kb"))[0] == 0
    # ...and asking for that generation by number refuses it: never followed, never read.
    container = Home(home).open("default", PASS.encode())
    store = DirectoryStore(home / "blobs")
    for generation in (3, 4):
        with pytest.raises(StorageError, match="not a regular file"):
            blobs.load(container, store, "k", generation=generation)
    assert blobs.load(container, store, "k").generation == 2


def test_a_symlinked_name_folder_is_skipped_by_list_and_refused_by_name(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.symlink(home / "blobs" / "k", home / "blobs" / "alias")
    status, out, _ = _run(capsys, home, "list", "--json")
    assert status == 0 and [k["name"] for k in json.loads(out)["keys"]] == ["k"]
    status, _, err = _run(capsys, home, "show", "alias")
    assert status == 1 and "symlink" in err
