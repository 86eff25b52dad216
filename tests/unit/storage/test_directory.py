"""DirectoryStore: layout, validation, hostile contents of the folder, modes, concurrency."""

from __future__ import annotations

import ast
import errno
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyblob.atomic
import keyblob.storage.directory as directory_module
from keyblob.errors import ConflictError, KeyblobError, NotFoundError, StorageError, UsageError
from keyblob.storage import MAX_GENERATION, MAX_ITEM_SIZE, Store, open_store
from keyblob.storage.directory import DirectoryStore

SRC = Path(keyblob.atomic.__file__).resolve().parents[1]

BAD_NAMES = ["../x", "A", ".x", "x/y", "", "a" * 129, "x\\y", "x\x00", "-x", "é", " x"]
BAD_GENERATIONS = [0, -1, MAX_GENERATION + 1, 2**64, True, 1.0, "1", None]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> DirectoryStore:
    return DirectoryStore(root)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Clear the umask, so that modes come from the store and not from the environment."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- round trip and layout -----------------------------------------------------------------


def test_round_trip_and_layout(store: DirectoryStore, root: Path) -> None:
    store.put("payroll", 1, b"blob one")
    store.put("payroll", 12, b"blob twelve")
    assert store.get("payroll", 1) == b"blob one"
    assert store.get("payroll", 12) == b"blob twelve"
    assert (root / "payroll" / "1.kb").read_bytes() == b"blob one"
    assert (root / "payroll" / "12.kb").read_bytes() == b"blob twelve"
    assert sorted(os.listdir(root / "payroll")) == ["1.kb", "12.kb"]  # no temp files left
    assert store.generations("payroll") == [1, 12]
    assert store.latest("payroll") == 12
    assert store.names() == ["payroll"]


def test_extreme_but_valid_values(store: DirectoryStore, root: Path) -> None:
    name = "a" * 128
    store.put(name, MAX_GENERATION, b"\x00" * MAX_ITEM_SIZE)
    store.put("0", 1, b"")
    assert store.get(name, MAX_GENERATION) == b"\x00" * MAX_ITEM_SIZE
    assert store.get("0", 1) == b""
    assert (root / name / "9223372036854775807.kb").is_file()
    assert store.generations(name) == [MAX_GENERATION]
    assert store.names() == ["0", name]


def test_location_and_protocol(store: DirectoryStore, root: Path) -> None:
    assert store.location == str(root)
    assert isinstance(store, Store)
    assert str(root) in repr(store)


# -- create-only put -----------------------------------------------------------------------


def test_put_same_bytes_again_is_a_no_op(store: DirectoryStore, root: Path) -> None:
    store.put("k", 1, b"same")
    before = os.stat(root / "k" / "1.kb")
    store.put("k", 1, b"same")
    after = os.stat(root / "k" / "1.kb")
    assert store.get("k", 1) == b"same"
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert os.listdir(root / "k") == ["1.kb"]


def test_conflicting_put_is_refused_and_keeps_old_bytes(store: DirectoryStore, root: Path) -> None:
    store.put("k", 3, b"original")
    with pytest.raises(StorageError) as info:
        store.put("k", 3, b"replacement")
    assert str(info.value) == (
        f"another writer made k generation 3 first (in {root}); run the command again"
    )
    assert info.value.hints == ("nothing was changed by this command",)
    assert not isinstance(info.value, NotFoundError)
    assert store.get("k", 3) == b"original"
    assert os.listdir(root / "k") == ["3.kb"]


def test_conflicting_put_with_a_prefix_of_the_old_bytes(store: DirectoryStore) -> None:
    # A comparison that stopped at the shorter length would call these equal.
    store.put("k", 1, b"abcdef")
    with pytest.raises(ConflictError):
        store.put("k", 1, b"abc")
    with pytest.raises(ConflictError):
        store.put("k", 1, b"abcdefg")
    assert store.get("k", 1) == b"abcdef"


def test_put_refuses_oversized_and_non_bytes(store: DirectoryStore, root: Path) -> None:
    with pytest.raises(UsageError, match="larger than 65536"):
        store.put("k", 1, b"x" * (MAX_ITEM_SIZE + 1))
    for data in ["text", bytearray(b"x"), memoryview(b"x"), None]:
        with pytest.raises(UsageError):
            store.put("k", 1, data)  # type: ignore[arg-type]
    assert not root.exists()


# -- not found -----------------------------------------------------------------------------


def test_missing_blob_is_not_found(store: DirectoryStore, root: Path) -> None:
    # Missing root, missing name, missing generation: the same error each time.
    for setup in (None, ("other", 1), ("k", 1)):
        if setup is not None:
            store.put(setup[0], setup[1], b"x")
        with pytest.raises(NotFoundError) as info:
            store.get("k", 2)
        assert str(info.value) == f"no blob k generation 2 in {root}"
        assert isinstance(info.value, LookupError)
        assert isinstance(info.value, StorageError)
        assert isinstance(info.value, KeyblobError)


# -- argument validation -------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_refused_before_touching_disk(
    store: DirectoryStore, root: Path, name: str
) -> None:
    with pytest.raises(UsageError):
        store.put(name, 1, b"x")
    with pytest.raises(UsageError):
        store.get(name, 1)
    with pytest.raises(UsageError):
        store.generations(name)
    with pytest.raises(UsageError):
        store.latest(name)
    assert not root.exists()
    assert not (root.parent / "x").exists()


@pytest.mark.parametrize("generation", BAD_GENERATIONS)
def test_invalid_generations_are_refused_before_touching_disk(
    store: DirectoryStore, root: Path, generation: object
) -> None:
    with pytest.raises(UsageError, match="generation"):
        store.put("k", generation, b"x")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="generation"):
        store.get("k", generation)  # type: ignore[arg-type]
    assert not root.exists()


# -- what is found on disk -----------------------------------------------------------------


def test_listing_ignores_junk_and_temp_files(store: DirectoryStore, root: Path) -> None:
    store.put("k", 2, b"two")
    folder = root / "k"
    junk_files = [
        "007.kb",
        "07.kb",
        "0.kb",
        "x.kb",
        "-1.kb",
        "+1.kb",
        " 1.kb",
        "1.kb ",
        "1.KB",
        "1.kb.bak",
        "1",
        "1.kb.tmp",
        ".1.kb.0123456789abcdef.tmp",  # what write_atomic leaves when killed
        ".3.kb",
        "9223372036854775808.kb",  # MAX_GENERATION + 1
        "99999999999999999999.kb",  # 20 digits
        "\u0661.kb",  # ARABIC-INDIC DIGIT ONE, a digit that int() would accept
    ]
    for junk in junk_files:
        (folder / junk).write_bytes(b"junk")
    (folder / "4.kb").mkdir()  # a folder with a generation's name
    os.symlink(folder / "2.kb", folder / "5.kb")  # a symlink with a generation's name
    assert store.generations("k") == [2]
    assert store.latest("k") == 2
    assert store.get("k", 2) == b"two"
    # Listing skips them, and reading one directly refuses rather than follows it.
    with pytest.raises(StorageError, match="not a regular file"):
        store.get("k", 4)
    with pytest.raises(StorageError, match="not a regular file"):
        store.get("k", 5)


def test_symlinked_blob_refused_without_o_nofollow(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows has no O_NOFOLLOW: the link itself is checked before the open.
    store.put("k", 2, b"two")
    os.symlink(root / "k" / "2.kb", root / "k" / "5.kb")
    monkeypatch.delattr(os, "O_NOFOLLOW")
    with pytest.raises(StorageError, match="not a regular file"):
        store.get("k", 5)
    assert store.get("k", 2) == b"two"


def test_names_ignores_junk_at_the_root(store: DirectoryStore, root: Path) -> None:
    store.put("good", 1, b"x")
    store.put("also-good", 7, b"y")
    for bad in ["UPPER", ".hidden", "-dash", "with space"]:
        (root / bad).mkdir()
        (root / bad / "1.kb").write_bytes(b"x")
    (root / "plainfile").write_bytes(b"x")  # a valid name, but a file
    (root / ".good.1.tmp").write_bytes(b"x")
    (root / "empty").mkdir()  # a valid name with no generation
    (root / "junkonly").mkdir()
    (root / "junkonly" / "01.kb").write_bytes(b"x")
    os.symlink(root / "good", root / "alias")  # a symlink to a real name folder
    assert store.names() == ["also-good", "good"]
    assert store.generations("empty") == []
    assert store.latest("empty") is None
    assert store.generations("junkonly") == []


def test_empty_and_missing_root(tmp_path: Path) -> None:
    for root in (tmp_path / "missing" / "deeper", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        store = DirectoryStore(root)
        assert store.names() == []
        assert store.generations("k") == []
        assert store.latest("k") is None
        with pytest.raises(NotFoundError):
            store.get("k", 1)
    assert not (tmp_path / "missing").exists()  # reads never create the root


def test_oversized_file_is_refused(store: DirectoryStore, root: Path) -> None:
    store.put("k", 1, b"x")
    (root / "k" / "2.kb").write_bytes(b"x" * (MAX_ITEM_SIZE + 1))
    (root / "k" / "3.kb").write_bytes(b"x" * MAX_ITEM_SIZE)
    with pytest.raises(StorageError, match="larger than 65536 bytes") as info:
        store.get("k", 2)
    assert not isinstance(info.value, NotFoundError)
    assert str(root / "k" / "2.kb") in str(info.value)
    assert store.get("k", 3) == b"x" * MAX_ITEM_SIZE


def test_file_growing_after_the_size_check_is_still_bounded(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("k", 1, b"small")
    blob = root / "k" / "1.kb"
    inode = blob.stat().st_ino
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        if result.st_ino == inode:  # the size check has seen "small": now it grows
            blob.write_bytes(b"x" * (MAX_ITEM_SIZE + 10))
        return result

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    with pytest.raises(StorageError, match="larger than"):
        store.get("k", 1)


def test_fifo_planted_as_a_blob_is_refused_without_blocking(
    store: DirectoryStore, root: Path
) -> None:
    store.put("k", 1, b"x")
    os.mkfifo(root / "k" / "2.kb")
    with pytest.raises(StorageError, match="not a regular file"):
        store.get("k", 2)
    assert store.generations("k") == [1]


def test_symlinked_name_folder_is_refused(store: DirectoryStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "1.kb").write_bytes(b"planted")
    store.put("real", 1, b"x")
    os.symlink(outside, store.root / "k")
    with pytest.raises(StorageError, match="symlink"):
        store.get("k", 1)
    with pytest.raises(StorageError, match="symlink"):
        store.generations("k")
    with pytest.raises(StorageError, match="symlink"):
        store.latest("k")
    with pytest.raises(StorageError, match="symlink"):
        store.put("k", 2, b"y")
    assert sorted(os.listdir(outside)) == ["1.kb"]  # nothing written through the link
    assert store.names() == ["real"]


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named fallback"])
def test_a_name_folder_swapped_for_a_symlink_after_the_check_redirects_nothing(
    store: DirectoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """Issue 11 review, finding 3: the folder was checked with lstat, then written by path
    (scan, stale-file removal, temp file, link), so a store writer who swapped it for a
    symlink in between had the victim's blob linked into, and the victim's own stale temp
    files removed from, a folder of their choosing.  The swap is made at the first thing the
    write does after the check (the scan for stale temp files)."""
    if not directory_module._AT:
        pytest.skip("no O_DIRECTORY/O_NOFOLLOW and dir_fd calls here")
    monkeypatch.setattr(keyblob.atomic, "_unnamed", keyblob.atomic._unnamed and unnamed)
    store.put("k", 1, b"one")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stale = elsewhere / ".x.0123456789abcdef.tmp"  # a dead writer's leftover of the victim
    stale.write_bytes(b"old")
    os.utime(stale, (0, 0))
    real_scandir = os.scandir
    swapped = []

    def swap_then_scan(target):  # type: ignore[no-untyped-def]
        if not swapped:
            os.rename(store.root / "k", store.root / "k.moved")
            os.symlink(elsewhere, store.root / "k")
            swapped.append(True)
        return real_scandir(target)

    monkeypatch.setattr(os, "scandir", swap_then_scan)
    store.put("k", 2, b"two")
    monkeypatch.undo()
    assert swapped
    assert sorted(os.listdir(elsewhere)) == [stale.name]  # nothing written, nothing removed
    assert stale.read_bytes() == b"old"
    # The blob went to the folder that was checked, wherever it is now.
    assert sorted(os.listdir(store.root / "k.moved")) == ["1.kb", "2.kb"]
    assert (store.root / "k.moved" / "2.kb").read_bytes() == b"two"


def test_symlinked_blob_pointing_outside_is_not_read(store: DirectoryStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not a blob")
    store.put("k", 1, b"x")
    os.symlink(secret, store.root / "k" / "2.kb")
    with pytest.raises(StorageError, match="not a regular file") as info:
        store.get("k", 2)
    assert "not a blob" not in str(info.value)
    # And put does not write through it either.
    with pytest.raises(StorageError):
        store.put("k", 2, b"y")
    assert secret.read_bytes() == b"not a blob"


def test_name_folder_that_is_a_file_is_refused(store: DirectoryStore, root: Path) -> None:
    root.mkdir()
    (root / "k").write_bytes(b"x")
    with pytest.raises(StorageError, match="not a folder"):
        store.put("k", 1, b"x")
    with pytest.raises(StorageError, match="not a folder"):
        store.get("k", 1)


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_bytes(b"x")
    store = DirectoryStore(root)
    with pytest.raises(StorageError, match="not a folder"):
        store.put("k", 1, b"x")
    with pytest.raises(StorageError, match="not a folder"):
        store.names()
    assert root.read_bytes() == b"x"


def test_root_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    store = DirectoryStore(tmp_path / "link")
    store.put("k", 1, b"x")
    assert (real / "k" / "1.kb").read_bytes() == b"x"
    assert store.names() == ["k"]


# -- creation and modes --------------------------------------------------------------------


@pytest.mark.usefixtures("no_umask")
def test_root_is_created_on_first_put_with_private_modes(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "store"
    store = DirectoryStore(root)
    store.put("k", 1, b"x")
    store.put("k", 2, b"y")
    for folder in (tmp_path / "a", tmp_path / "a" / "b", root, root / "k"):
        assert mode_of(folder) == 0o700, folder
    for blob in (root / "k" / "1.kb", root / "k" / "2.kb"):
        assert mode_of(blob) == 0o600, blob


def test_modes_under_a_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        DirectoryStore(tmp_path / "store").put("k", 1, b"x")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "store") == 0o700
    assert mode_of(tmp_path / "store" / "k") == 0o700
    assert mode_of(tmp_path / "store" / "k" / "1.kb") == 0o600


def test_create_false_refuses_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "missing"
    store = DirectoryStore(root, create=False)
    with pytest.raises(StorageError, match="does not exist"):
        store.put("k", 1, b"x")
    assert not root.exists()
    root.mkdir()
    store.put("k", 1, b"x")
    assert store.get("k", 1) == b"x"


# -- operating-system failures -------------------------------------------------------------


def test_write_failure_becomes_storage_error(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = OSError(errno.ENOSPC, "No space left on device")

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(directory_module, "write_atomic", fail)
    with pytest.raises(StorageError) as info:
        store.put("k", 1, b"x")
    message = str(info.value)
    assert message == f"cannot write {root / 'k' / '1.kb'}: No space left on device"
    assert "\n" not in message
    assert info.value.__cause__ is failure
    assert not isinstance(info.value, NotFoundError)


def test_read_failure_becomes_storage_error(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("k", 1, b"x")
    failure = PermissionError(errno.EACCES, "Permission denied")

    def fail(*args: object, **kwargs: object) -> bytes:
        raise failure

    monkeypatch.setattr(directory_module, "read_bounded", fail)
    with pytest.raises(StorageError) as info:
        store.get("k", 1)
    assert str(info.value) == f"cannot read {root / 'k' / '1.kb'}: Permission denied"
    assert info.value.__cause__ is failure
    assert not isinstance(info.value, NotFoundError)


def test_listing_failure_becomes_storage_error(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("k", 1, b"x")

    def fail(path: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "scandir", fail)
    with pytest.raises(StorageError, match=f"cannot list {root}: Permission denied"):
        store.names()
    with pytest.raises(StorageError, match="Permission denied"):
        store.generations("k")


# -- concurrency ---------------------------------------------------------------------------

WRITERS = 8


@pytest.mark.parametrize("generation", [1, 2, 3])
def test_concurrent_threads_exactly_one_wins(tmp_path: Path, generation: int) -> None:
    # Each round starts from a missing root, so the writers also race to create folders.
    store = DirectoryStore(tmp_path / "store")
    payloads = [bytes([i]) * 4096 for i in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    outcomes: list[object] = [None] * WRITERS

    def writer(i: int) -> None:
        barrier.wait()
        try:
            store.put("race", generation, payloads[i])
            outcomes[i] = "won"
        except Exception as e:  # collected and checked below
            outcomes[i] = e

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, outcome in enumerate(outcomes) if outcome == "won"]
    assert len(winners) == 1, outcomes
    for outcome in outcomes:
        if outcome != "won":
            assert type(outcome) is ConflictError, outcome
            assert "first" in str(outcome)
    assert store.get("race", generation) == payloads[winners[0]]
    assert os.listdir(tmp_path / "store" / "race") == [f"{generation}.kb"]


_CHILD_WRITER = """
import sys
from pathlib import Path
from keyblob.errors import StorageError
from keyblob.storage.directory import DirectoryStore
store = DirectoryStore(Path(sys.argv[1]))
payload = bytes([int(sys.argv[2])]) * 65536
print("ready", flush=True)
sys.stdin.readline()
try:
    store.put("race", 1, payload)
except StorageError as e:
    print("lost", e, flush=True)
else:
    print("won", flush=True)
"""


def test_concurrent_processes_exactly_one_wins(tmp_path: Path) -> None:
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD_WRITER, str(root), str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(WRITERS)
    ]
    try:
        for child in children:  # wait until every child has imported keyblob
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:  # then release them together
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert all(child.returncode == 0 for child in children), results
    verdicts = [out.split()[0] for out, _ in results]
    assert sorted(verdicts) == ["lost"] * (WRITERS - 1) + ["won"], results
    winner = verdicts.index("won")
    for out, _ in results:
        if out.startswith("lost"):
            assert out.strip() == (
                f"lost another writer made race generation 1 first (in {root}); "
                "run the command again"
            )
    assert DirectoryStore(root).get("race", 1) == bytes([winner]) * 65536
    assert os.listdir(root / "race") == ["1.kb"]


# -- open_store ----------------------------------------------------------------------------


def test_open_store_paths_and_file_urls(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "a"): tmp_path / "a",
        f"file:{tmp_path / 'b'}": tmp_path / "b",
        f"file://{tmp_path / 'c'}": tmp_path / "c",
        f"file://localhost{tmp_path / 'd'}": tmp_path / "d",
        f"file://{tmp_path / 'with%20space'}": tmp_path / "with space",
        "relative/blobs": Path("relative/blobs"),
    }
    for url, expected in cases.items():
        store = open_store(url)
        assert isinstance(store, DirectoryStore), url
        assert store.root == expected, url
        assert store.location == str(expected), url
        assert not expected.exists()  # opening creates nothing
    store = open_store(f"file://{tmp_path / 'c'}")
    store.put("k", 1, b"x")
    assert (tmp_path / "c" / "k" / "1.kb").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://otherhost/keys.db", "unsupported sqlite: URL"),
        ("sqlite:///keys.db?mode=ro", "unsupported sqlite: URL"),
        ("sqlite:", "empty sqlite: URL"),
        ("postgresql://user:hunter2@[db/keys", "invalid PostgreSQL URL"),
        ("postgres://user:hunter2@db/keys?bogus=1", "invalid PostgreSQL URL"),
        ("ftp://user:hunter2@host/x", "unsupported store URL scheme 'ftp'"),
        ("s3://bucket/x", "unsupported store URL scheme 's3'"),
        ("", "empty store URL"),
        ("file://otherhost/x", "file:"),
        ("file:///x?mode=ro", "file:"),
        ("file:", "empty file: URL"),
    ],
)
def test_open_store_refuses(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)  # a database URL may carry a password


# -- layering ------------------------------------------------------------------------------


def test_storage_imports_no_parser_and_no_crypto() -> None:
    forbidden = ("keyblob.format", "keyblob.providers", "keyblob.blobs", "cryptography")
    package = Path(directory_module.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not module.startswith(forbidden), f"{source.name} imports {module}"


def test_a_relative_root_one_level_deep_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its parent is the current folder: the folder fsyncs must not be given "".
    monkeypatch.chdir(tmp_path)
    store = open_store("blobs")
    store.put("k", 1, b"x")
    assert store.get("k", 1) == b"x"
    assert (tmp_path / "blobs" / "k" / "1.kb").read_bytes() == b"x"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_a_root_with_the_setgid_bit_is_a_store_a_group_shares(tmp_path: Path, umask: int) -> None:
    """Private by default (0700 / 0600).  Under a root an administrator made 2770 for a
    group, other members must read blobs and add generations: 2770 / 0640, whatever the
    writer's umask."""
    private, shared = tmp_path / "private", tmp_path / "shared"
    private.mkdir(mode=0o700)
    shared.mkdir()
    os.chmod(shared, 0o2770)
    old = os.umask(umask)
    try:
        for root in (private, shared):
            DirectoryStore(root).put("k", 1, b"blob")
    finally:
        os.umask(old)

    def modes(root: Path) -> tuple[int, int]:
        return (
            stat.S_IMODE(os.stat(root / "k").st_mode),
            stat.S_IMODE(os.stat(root / "k" / "1.kb").st_mode),
        )

    assert modes(private) == (0o700, 0o600)
    assert modes(shared) == (0o2770, 0o640)
    assert DirectoryStore(shared).get("k", 1) == b"blob"


def test_set_aside_layout_keeps_the_bytes(tmp_path):
    """FORMAT.md 5.3: ``<root>/.set-aside/<name>/<generation>.<16 hex>.kb``, 0700/0600."""
    import re

    store = DirectoryStore(tmp_path / "store")
    store.put("k", 3, b"planted")
    where = store.set_aside("k", 3)
    assert re.fullmatch(
        re.escape(str(tmp_path / "store" / ".set-aside" / "k")) + r"/3\.[0-9a-f]{16}\.kb", where
    )
    with open(where, "rb") as f:
        assert f.read() == b"planted"
    assert stat.S_IMODE((tmp_path / "store" / ".set-aside").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "store" / ".set-aside" / "k").stat().st_mode) == 0o700
    assert not (tmp_path / "store" / "k" / "3.kb").exists()


def test_set_aside_refuses_a_symlinked_area(tmp_path):
    store = DirectoryStore(tmp_path / "store")
    store.put("k", 3, b"planted")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "store" / ".set-aside")
    with pytest.raises(StorageError, match="symlink"):
        store.set_aside("k", 3)
    assert store.get("k", 3) == b"planted"
    assert list((tmp_path / "elsewhere").iterdir()) == []
