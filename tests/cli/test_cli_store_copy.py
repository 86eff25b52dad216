"""keyblob store copy SRC DST and keyblob store check [URL] (issue 13 item 5): every entry
checked on the way, refusals named and not copied, never an overwrite, resumable after a
kill, the same on every backend."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from keyblob import Algorithm, Home, PublicKeyFile, Suite, blobs
from keyblob.cli import main
from keyblob.storage import open_store
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE, postgres_database, run_in_terminal

PASS = PASSPHRASE.decode()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def kb(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def fill(home: Path, store_url: str, names: int, generations: int) -> None:
    """``names`` keys of ``generations`` generations each, made through the library (a
    fast KDF: the CLI opens it with the same passphrase)."""
    container = Home(home).create("default", PASSPHRASE, Suite.X25519, kdf=FAST_KDF)
    store = open_store(store_url)
    for i in range(names):
        blobs.generate(container, store, f"key-{i:03d}")
        for _ in range(generations - 1):
            blobs.rotate(container, store, f"key-{i:03d}")


def contents(url: str) -> dict[tuple[str, int], bytes]:
    store = open_store(url)
    return {(n, g): store.get(n, g) for n in store.names() for g in store.generations(n)}


def plant_bad(home: Path, src: DirectoryStore, tmp_path: Path) -> dict[tuple[str, int], str]:
    """Three entries that fail here, and the words their refusal must contain."""
    # A bit flipped in a stored blob.
    path = src.root / "key-000" / "2.kb"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # in the signature
    path.write_bytes(bytes(data))
    # A well-formed blob of the right name and generation, signed by someone not trusted.
    stranger = Home(tmp_path / "stranger").create("default", PASSPHRASE, Suite.X25519, kdf=FAST_KDF)
    owner = Home(home).open("default", PASSPHRASE)
    planted, _ = blobs._export(
        stranger,
        name="key-001",
        generation=9,
        algorithm=Algorithm.AES_256_GCM,
        recipients=blobs._recipient_keys(
            stranger,
            [PublicKeyFile(owner.suite, "owner", owner.exchange_public, owner.signature_public)],
        ),
        key=None,
        random=secrets.token_bytes,
        now=lambda: 0,
    )
    src.put("key-001", 9, planted)
    # A valid blob of another name, stored under this one.
    src.put("key-002", 7, src.get("key-000", 1))
    return {
        ("key-000", 2): "signature",
        ("key-001", 9): "not a trusted signer",
        ("key-002", 7): "'key-000', not 'key-002'",
    }


def test_copy_checks_every_entry_and_copies_the_rest_byte_for_byte(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = str(tmp_path / "src")
    fill(home, src, names=5, generations=3)
    bad = plant_bad(home, DirectoryStore(Path(src)), tmp_path)
    dst = str(tmp_path / "dst")

    status, out, err = kb(capsys, "store", "copy", src, dst)

    assert status == 3
    assert out.startswith(f"copied 14 of 17 entries from {src} to {dst} in ")
    for (name, generation), why in bad.items():
        line = next(x for x in err.splitlines() if f"{name} generation {generation}:" in x)
        assert line.startswith("keyblob: warning: not copied: ") and why in line
    assert "keyblob: error: 3 of 17 entries were not copied: 3 fail verification here" in err
    expected = {k: v for k, v in contents(src).items() if k not in bad}
    assert contents(dst) == expected  # byte for byte, and nothing refused
    # The destination is usable as it is: every entry verifies there.
    assert kb(capsys, "store", "check", dst)[0] == 0


def test_copy_json_and_a_second_run_skips_what_is_there(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = str(tmp_path / "src")
    fill(home, src, names=3, generations=2)
    bad = plant_bad(home, DirectoryStore(Path(src)), tmp_path)
    dst = str(tmp_path / "dst")

    status, out, _ = kb(capsys, "store", "copy", src, dst, "--json")

    assert status == 3
    doc = json.loads(out)
    assert set(doc) == {
        "source",
        "destination",
        "entries",
        "copied",
        "skipped",
        "refused",
        "conflicts",
        "elapsed",
    }
    assert (doc["source"], doc["destination"]) == (src, dst)
    assert (doc["entries"], doc["copied"], doc["skipped"]) == (8, 5, 0)
    assert doc["conflicts"] == []
    assert {(r["name"], r["generation"]) for r in doc["refused"]} == set(bad)
    assert all(set(r) == {"name", "generation", "reason"} for r in doc["refused"])
    assert isinstance(doc["elapsed"], float) and doc["elapsed"] >= 0

    status, out, _ = kb(capsys, "store", "copy", src, dst, "--json")
    again = json.loads(out)
    assert (status, again["copied"], again["skipped"], len(again["refused"])) == (3, 0, 5, 3)


def test_other_bytes_in_the_destination_are_a_conflict_and_kept(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    fill(home, src, names=2, generations=2)
    theirs = b"not the source's bytes"
    DirectoryStore(Path(dst)).put("key-001", 2, theirs)

    status, out, err = kb(capsys, "store", "copy", src, dst, "--json")

    assert status == 3
    doc = json.loads(out)
    assert (doc["copied"], doc["refused"]) == (3, [])
    assert [(c["name"], c["generation"]) for c in doc["conflicts"]] == [("key-001", 2)]
    assert "kept" in doc["conflicts"][0]["reason"]
    assert DirectoryStore(Path(dst)).get("key-001", 2) == theirs  # never overwritten
    assert "1 conflict with other bytes in the destination" in err


def test_clean_copy_exits_0_and_says_nothing_on_a_pipe(home: Path, tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    fill(home, src, names=3, generations=1)

    done = subprocess.run(
        [sys.executable, "-m", "keyblob", "store", "copy", src, dst],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar on a pipe
    assert done.stdout.startswith("copied 3 of 3 entries")
    assert contents(dst) == contents(src)


def test_a_progress_bar_on_a_terminal(home: Path, tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    fill(home, src, names=3, generations=1)

    status, output = run_in_terminal(["store", "copy", src, dst], [], {**os.environ})

    assert status == 0, output
    assert "copy:" in output and "entry" in output  # tqdm's bar, counting entries
    assert contents(dst) == contents(src)


def test_sources_and_destinations_refused_before_the_passphrase(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    src = str(tmp_path / "src")
    fill(home, src, names=1, generations=1)
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # a passphrase asked for would be exit 2

    status, _, err = kb(capsys, "store", "copy", tmp_path / "missing", tmp_path / "dst")
    assert (status, "source store folder") == (4, err.split(": ")[2][:19])
    assert not (tmp_path / "dst").exists()

    status, _, err = kb(capsys, "store", "copy", f"sqlite:///{tmp_path}/none.db", src)
    assert status == 4 and "source store database" in err
    assert not (tmp_path / "none.db").exists()
    status, _, err = kb(capsys, "store", "check", f"sqlite:///{tmp_path}/none.db")
    assert status == 4 and "the store database" in err

    status, _, err = kb(capsys, "store", "copy", src, src + "/")
    assert status == 2 and "are the same store" in err

    for jobs in ("0", "65"):
        status, _, err = kb(capsys, "store", "copy", src, tmp_path / "dst", "--jobs", jobs)
        assert status == 2 and f"--jobs {jobs}: give 1 to 64 processes" in err


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.kb") if ".set-aside" not in p.parts]


def _marked(mark: str) -> list[int]:
    """The processes whose environment holds ``mark`` (Linux: /proc)."""
    if not Path("/proc/self/environ").exists():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def _left_behind(mark: str) -> list[int]:
    """The processes holding ``mark`` that are still there after a few seconds (the
    forkserver ends a moment after the last process that used it)."""
    deadline = time.monotonic() + 20
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _marked(mark)


@pytest.mark.parametrize("backend", ["directory", "sqlite", "postgresql"])
def test_a_copy_killed_midway_leaves_complete_entries_and_finishes_when_run_again(
    home: Path, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    src = str(tmp_path / "src")
    fill(home, src, names=40, generations=5)
    if backend == "directory":
        dst = str(tmp_path / "dst")
    elif backend == "sqlite":
        dst = f"sqlite:///{tmp_path}/dst.db"
    else:
        dst = postgres_database(request)
    argv = [sys.executable, "-m", "keyblob", "store", "copy", src, dst, "--jobs", "2"]
    mark = f"KEYBLOB_TEST_MARK={secrets.token_hex(8)}"  # in the environment of its workers

    copying = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KEYBLOB_TEST_MARK": mark.split("=")[1]},
    )
    deadline = time.monotonic() + 60
    store = open_store(dst)
    while time.monotonic() < deadline and copying.poll() is None:
        if sum(len(store.generations(n)) for n in store.names()) >= 20:
            break
        time.sleep(0.005)
    copying.send_signal(signal.SIGKILL)
    copying.wait()
    assert copying.returncode == -signal.SIGKILL, "the copy ended before it was killed"

    # Its workers (and their forkserver) see the parent gone and end: none is left behind.
    assert _left_behind(mark) == []

    partial = contents(dst)
    source = contents(src)
    assert 20 <= len(partial) < len(source)
    assert all(source[k] == v for k, v in partial.items())  # complete entries only

    again = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["skipped"] >= len(partial)  # one in flight may have been made durable since
    assert doc["copied"] + doc["skipped"] == len(source) == 200
    assert contents(dst) == source


def test_copy_folder_to_sqlite_to_postgresql_and_back_is_byte_identical(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], request
) -> None:
    folder = str(tmp_path / "src")
    fill(home, folder, names=4, generations=3)
    sqlite = f"sqlite:///{tmp_path}/keys.db"
    postgres = postgres_database(request)
    back = str(tmp_path / "back")

    for source, destination in ((folder, sqlite), (sqlite, postgres), (postgres, back)):
        status, out, err = kb(capsys, "store", "copy", source, destination, "--json")
        assert status == 0, err
        assert json.loads(out)["copied"] == 12

    assert contents(back) == contents(postgres) == contents(sqlite) == contents(folder)
    assert len(contents(back)) == 12
    assert kb(capsys, "--store", postgres, "store", "check")[0] == 0
    # One database twice: refused, and the message names it without its password.
    status, _, err = kb(capsys, "store", "copy", postgres, postgres)
    assert status == 2 and "are the same store" in err
    password = urlsplit(postgres).password
    assert password and password not in err


def test_check_a_store_by_url_names_the_bad_entries(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    fill(home, str(src), names=5, generations=3)
    bad = plant_bad(home, DirectoryStore(src), tmp_path)

    status, out, err = kb(capsys, "store", "check", src)

    assert status == 3
    failing = {
        (line.split()[0], int(line.split()[1])): line
        for line in out.splitlines()[1:]
        if " FAILS " in line
    }
    assert set(failing) == set(bad)
    for key, why in bad.items():
        assert why in failing[key]
    assert f"3 of 17 entries in {src} fail verification here" in err

    # The default store (HOME/blobs) has nothing yet; the URL wins over --store.
    assert kb(capsys, "store", "check")[0] == 0
    assert kb(capsys, "--store", tmp_path / "elsewhere", "store", "check", src)[0] == 3
    # A URL and names: only those names.
    status, out, _ = kb(capsys, "store", "check", src, "key-003", "--json")
    doc = json.loads(out)
    assert status == 0 and doc["store"] == str(src)
    assert {e["name"] for e in doc["entries"]} == {"key-003"}
    # Without a /, a folder's name is a key name: a hint says how to give the folder.
    os.chdir(tmp_path)
    status, out, err = kb(capsys, "store", "check", "src")
    assert status == 0 and "give it as a path: keyblob store check ./src" in err


def test_check_by_a_sqlite_url_finds_a_planted_row(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    fill(home, url, names=2, generations=2)
    store = open_store(url)
    store.put("key-000", 3, store.get("key-001", 2))  # a valid blob in another name's row

    status, out, err = kb(capsys, "store", "check", url, "--jobs", "2")

    assert status == 3
    line = next(x for x in out.splitlines() if x.startswith("key-000") and " 3 " in x)
    assert "FAILS" in line and "'key-001', not 'key-000'" in line
    assert "1 of 5 entries" in err


def test_a_copy_ended_by_sigterm_stops_its_workers_and_resumes(home: Path, tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    fill(home, src, names=40, generations=5)
    argv = [sys.executable, "-m", "keyblob", "store", "copy", src, dst, "--jobs", "2"]
    mark = f"KEYBLOB_TEST_MARK={secrets.token_hex(8)}"

    copying = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KEYBLOB_TEST_MARK": mark.split("=")[1]},
    )
    store = DirectoryStore(Path(dst))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and copying.poll() is None:
        if sum(len(store.generations(n)) for n in store.names()) >= 20:
            break
        time.sleep(0.005)
    copying.send_signal(signal.SIGTERM)
    _, err = copying.communicate(timeout=60)

    assert copying.returncode == 143, err  # through the command's cleanup (CLI.md)
    assert err == "keyblob: error: terminated by a signal\n"
    assert _left_behind(mark) == []  # the pool was shut down
    source = contents(src)
    assert all(source[k] == v for k, v in contents(dst).items())
    again = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert contents(dst) == source
