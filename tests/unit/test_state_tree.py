"""The home state of FORMAT.md 5.2 (state.db): marks in an authenticated hash tree under a
MAC'd head.  Every edit an attacker with the file can make (a node byte, a deleted node, an
old node or head replayed, two names' leaves swapped, the file deleted, the head edited, a
trigger planted) is refused; the v1 state.json is read and migrated; a writer killed at
random instants and concurrent writers lose nothing."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import state_support as ss
from keyblob import blobs
from keyblob.errors import ProviderError, VerificationError
from keyblob.providers import statedb
from keyblob.providers.homestate import MAX_STATE_SIZE
from keyblob.providers.software import Home
from keyblob.storage import open_store
from support import FAST_KDF, PASSPHRASE

EDITED = "modified outside keyblob"


@pytest.fixture
def home(tmp_path):
    return Home(tmp_path / "h")


@pytest.fixture
def c(home):
    return home.create("c", PASSPHRASE, kdf=FAST_KDF)


def fresh(home):
    """The container as another process would open it (no cache)."""
    return home.open("c", PASSPHRASE)


def _record(c, marks, store=None):
    c.update_state(lambda s: s.with_marks(marks, store=store))


# -- recorded and read back ------------------------------------------------------------------


def test_a_mark_is_recorded_and_read_back(home, c):
    assert c.state().generation_floor("payroll") == 0
    c.update_state(lambda s: s.seen("payroll", 3))
    assert c.state().generation_floor("payroll") == 3
    assert fresh(home).state().generation_floor("payroll") == 3
    c.update_state(lambda s: s.seen("payroll", 2))  # never goes down
    assert fresh(home).state().generation_floor("payroll") == 3
    assert fresh(home).state().all_marks() == {"payroll": 3}
    assert ss.head(c._folder)["marks"]["count"] == 1


def test_a_bulk_update_keeps_the_higher_mark_and_counts_names(home, c):
    _record(c, {"a": 5, "b": 1})
    _record(c, {"a": 2, "b": 4, "c": 1})
    state = fresh(home).state()
    assert state.all_marks() == {"a": 5, "b": 4, "c": 1}
    assert state.recorded is not None and state.recorded.count == 3


def test_each_update_writes_the_five_nodes_of_one_path(c):
    _record(c, {f"n{i}": 1 for i in range(3000)})
    before = ss.nodes(c._folder)
    c.update_state(lambda s: s.seen("payroll", 1))
    after = ss.nodes(c._folder)
    changed = {k for k in after if before.get(k) != after[k]}
    k = hashlib.sha256(b"payroll").hexdigest()
    assert changed == {(0, k[:level]) for level in range(5)}


def test_store_views_record_the_names_each_store_held(tmp_path, home, c):
    one, two = open_store(str(tmp_path / "one")), open_store(str(tmp_path / "two"))
    blobs.generate(c, one, "payroll")
    blobs.generate(c, two, "backup")
    state = fresh(home).state()
    assert state.held(one.identity) == {"payroll": 1}
    assert state.held(two.identity) == {"backup": 1}
    # The same folder by another path is the same store.
    os.symlink(tmp_path / "one", tmp_path / "link")
    assert open_store(str(tmp_path / "link")).identity == one.identity
    # A load through another store adds the name to that store's view, not the mark.
    for g in (1,):
        two.put("payroll", g, one.get("payroll", g))
    blobs.load(c, two, "payroll")
    assert fresh(home).state().held(two.identity) == {"backup": 1, "payroll": 1}


# -- what an attacker with the file can do ---------------------------------------------------


@pytest.fixture
def marked(c):
    """A container with many names (so every internal level is shared) and 'payroll'."""
    _record(c, {f"n{i}": 2 for i in range(500)})
    c.update_state(lambda s: s.seen("payroll", 5))
    return c


def _refused(home, name="payroll"):
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state().generation_floor(name)


@pytest.mark.parametrize("level", range(5))
def test_a_flipped_byte_in_any_node_of_the_path_is_refused(home, marked, level):
    pos = hashlib.sha256(b"payroll").hexdigest()[:level]
    body = bytearray(ss.nodes(marked._folder)[(0, pos)])
    body[-1] ^= 1
    ss.set_node(marked._folder, 0, pos, bytes(body))
    _refused(home)


@pytest.mark.parametrize("level", range(5))
def test_a_deleted_node_is_refused(home, marked, level):
    ss.set_node(marked._folder, 0, hashlib.sha256(b"payroll").hexdigest()[:level], None)
    _refused(home)


def test_deleting_every_node_is_refused(home, marked):
    with ss.closing(ss.db(marked._folder)) as db:
        db.execute("DELETE FROM node")
    _refused(home)
    _refused(home, "n1")


def test_an_old_node_replayed_is_refused(home, marked):
    """Deleting or replaying one mark: the bucket as it was before payroll went to 6."""
    pos = ss.bucket_of("payroll")
    old = ss.nodes(marked._folder)[(0, pos)]
    marked.update_state(lambda s: s.seen("payroll", 6))
    ss.set_node(marked._folder, 0, pos, old)
    _refused(home)


def test_a_whole_old_path_replayed_is_refused(home, marked):
    k = hashlib.sha256(b"payroll").hexdigest()
    old = ss.nodes(marked._folder)
    marked.update_state(lambda s: s.seen("payroll", 6))
    for level in range(5):
        ss.set_node(marked._folder, 0, k[:level], old[(0, k[:level])])
    _refused(home)  # the root no longer matches the head's


def test_an_old_head_replayed_over_new_nodes_is_refused(home, marked):
    old = ss.head_bytes(marked._folder)
    marked.update_state(lambda s: s.seen("payroll", 6))
    ss.set_head(marked._folder, old)
    _refused(home)


def test_two_names_leaves_swapped_are_refused(home, c):
    names = ["payroll", "backup"]
    assert ss.bucket_of(names[0]) != ss.bucket_of(names[1])
    _record(c, {"payroll": 3, "backup": 9})
    rows = ss.nodes(c._folder)
    a, b = (ss.bucket_of(n) for n in names)
    ss.set_node(c._folder, 0, a, rows[(0, b)])
    ss.set_node(c._folder, 0, b, rows[(0, a)])
    _refused(home, "payroll")
    _refused(home, "backup")


def test_a_leaf_of_a_store_view_moved_into_the_marks_is_refused(tmp_path, home, c):
    store = open_store(str(tmp_path / "s"))
    blobs.generate(c, store, "payroll")
    c.update_state(lambda s: s.seen("payroll", 4))  # the mark 4, the view 1
    rows = ss.nodes(c._folder)
    ss.set_node(c._folder, 0, ss.bucket_of("payroll"), rows[(1, ss.bucket_of("payroll"))])
    _refused(home)


def test_a_deleted_state_db_is_refused(home, c):
    (c._folder / "state.db").unlink()
    with pytest.raises(VerificationError, match="is missing"):
        fresh(home).state()


@pytest.mark.parametrize("where", [0, 40, -3])
def test_an_edited_head_is_refused(home, marked, where):
    data = bytearray(ss.head_bytes(marked._folder))
    data[where] ^= 1
    ss.set_head(marked._folder, bytes(data))
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()


def test_a_head_with_its_marks_root_changed_and_no_key_is_refused(home, marked):
    doc = ss.head(marked._folder)
    doc["marks"]["root"] = "00" * 32
    ss.set_head(marked._folder, ss.signed(b"not the state key".ljust(32), doc))
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()


def test_the_head_re_maced_with_the_key_is_what_the_key_holder_can_do(home, marked):
    """The control for the MAC tests: with the state key, the head says what it likes."""
    doc = ss.head(marked._folder)
    doc["marks"] = {"count": 0, "root": "00" * 32}
    ss.set_head(marked._folder, ss.signed(marked._keys.state, doc))
    assert fresh(home).state().generation_floor("payroll") == 0


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TRIGGER keep AFTER UPDATE ON head BEGIN UPDATE head SET body = old.body; END",
        "CREATE TABLE extra (x)",
        "CREATE INDEX i ON node (body)",
        "CREATE VIEW v AS SELECT * FROM head",
    ],
)
def test_a_schema_other_than_keyblobs_is_refused(home, marked, sql):
    with ss.closing(ss.db(marked._folder)) as db:
        db.execute(sql)
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()


def test_two_head_rows_or_none_are_refused(home, marked):
    with ss.closing(ss.db(marked._folder)) as db:
        db.execute("DROP TABLE head")
        db.execute(statedb.SCHEMA[0].replace("CHECK (id = 1)", "CHECK (id >= 1)"))
    # The schema now differs: refused before any row is looked at.
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()


def test_a_node_or_head_that_is_not_a_blob_or_too_large_is_refused(home, marked):
    pos = ss.bucket_of("payroll")
    with ss.closing(ss.db(marked._folder)) as db:
        db.execute("UPDATE node SET body = CAST(body AS TEXT) WHERE tree = 0 AND pos = ?", (pos,))
    _refused(home)
    ss.set_node(marked._folder, 0, pos, bytes(statedb.MAX_NODE_SIZE + 1))
    _refused(home)
    ss.set_head(marked._folder, bytes(MAX_STATE_SIZE + 1))
    with pytest.raises(VerificationError, match="over the 4194304-byte bound"):
        fresh(home).state()


def test_garbage_in_place_of_the_database_is_refused(home, c):
    (c._folder / "state.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()
    (c._folder / "state.db").write_bytes(b"")
    with pytest.raises(VerificationError, match=EDITED):
        fresh(home).state()


def test_the_database_file_must_be_private_and_not_a_symlink(tmp_path, home, c):
    path = c._folder / "state.db"
    path.chmod(0o644)
    with pytest.raises(ProviderError, match="chmod 600"):
        fresh(home).state()
    path.chmod(0o600)
    shutil.move(path, tmp_path / "elsewhere.db")
    path.symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(ProviderError, match="it is a symlink"):
        fresh(home).state()


# -- node encoding ---------------------------------------------------------------------------


def test_node_parsers_are_strict():
    pos = ss.bucket_of("payroll")
    body = statedb.encode_bucket({"payroll": 3})
    assert statedb.decode_bucket(body, pos) == {"payroll": 3}
    bad = [
        body + b"\x00",  # trailing
        body[:-1],  # truncated
        b"\x01" + body[1:],  # wrong kind
        body[:1] + b"\x00\x02" + body[3:],  # count says 2
        body[:-8] + bytes(8),  # generation 0
        body[:-8] + b"\x80" + bytes(7),  # over 2^63-1
        body.replace(b"payroll", b"Payroll"),  # not a name
    ]
    for b in bad:
        with pytest.raises(ValueError):
            statedb.decode_bucket(b, pos)
    with pytest.raises(ValueError):  # on another name's path
        statedb.decode_bucket(body, "0000" if pos != "0000" else "0001")
    a, b = _same_bucket(2)
    assert len(a) == len(b)
    two = statedb.encode_bucket({a: 1, b: 2})
    size = 1 + len(a) + 8
    swapped = two[:3] + two[3 + size :] + two[3 : 3 + size]
    assert statedb.decode_bucket(two, ss.bucket_of(a)) == {a: 1, b: 2}
    with pytest.raises(ValueError, match="sorted"):
        statedb.decode_bucket(swapped, ss.bucket_of(a))
    internal = statedb.encode_internal([statedb.ZERO] * 15 + [b"\x01" * 32])
    assert statedb.decode_internal(internal)[15] == b"\x01" * 32
    for b in (internal[:-1], internal + b"\x00", b"\x02" + internal[1:], b"\x01" + bytes(512)):
        with pytest.raises(ValueError):
            statedb.decode_internal(b)


def _same_bucket(count):
    """``count`` names of one length whose SHA-256 starts alike (one bucket)."""
    seen: dict[str, list[str]] = {}
    for i in range(100000, 10**7):
        group = seen.setdefault(ss.bucket_of(f"n{i}"), [])
        group.append(f"n{i}")
        if len(group) == count:
            return group
    raise AssertionError("unreachable")


def test_a_full_bucket_refuses_the_update_and_changes_nothing(home, c, monkeypatch):
    monkeypatch.setattr(statedb, "MAX_BUCKET", 2)
    *two, third = _same_bucket(3)
    _record(c, dict.fromkeys(two, 1))
    before = ss.head_bytes(c._folder)
    with pytest.raises(ProviderError, match="nothing was changed"):
        c.update_state(lambda s: s.seen(third, 1))
    assert ss.head_bytes(c._folder) == before


# -- version 1 -------------------------------------------------------------------------------

V1_HOME = Path(__file__).parents[1] / "vectors" / "state" / "v1-home"
V1_PASSPHRASE = b"keyblob test vector passphrase"
V1_MARKS = {"backup.2024": 7, "payroll": 3, "team-a": 1, "x": 2**63 - 1}


def _v1_home(tmp_path):
    shutil.copytree(V1_HOME, tmp_path / "v1", copy_function=shutil.copy)
    for path in (tmp_path / "v1").rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    (tmp_path / "v1").chmod(0o700)
    return Home(tmp_path / "v1")


def test_a_committed_v1_state_reads_and_migrates_on_the_first_update(tmp_path):
    home = _v1_home(tmp_path)
    folder = home.container_dir("v1")
    before = home.open("v1", V1_PASSPHRASE).state()
    assert dict(before.marks) == V1_MARKS and before.label == "Vector One"
    assert [s.label for s in before.trusted] == ["colleague"]
    assert not (folder / "state.db").exists()  # reading changes nothing
    c = home.open("v1", V1_PASSPHRASE)
    c.update_state(lambda s: s.seen("new", 1))
    assert not (folder / "state.json").exists()
    assert ss.head(folder)["format"] == "keyblob-state/v2"
    after = home.open("v1", V1_PASSPHRASE).state()
    assert after.all_marks() == {**V1_MARKS, "new": 1}
    assert after.trusted == before.trusted and after.label == before.label


def test_a_migration_that_returns_a_new_state_keeps_every_v1_mark(tmp_path):
    home = _v1_home(tmp_path)
    c = home.open("v1", V1_PASSPHRASE)
    signers = c.state().trusted
    c.update_state(lambda s: s.without_signer(signers[0].key_id).__class__(label="Other"))
    after = home.open("v1", V1_PASSPHRASE).state()
    assert after.all_marks() == V1_MARKS and after.trusted == () and after.label == "Other"


def test_after_a_crash_between_commit_and_removal_state_db_wins(tmp_path):
    home = _v1_home(tmp_path)
    folder = home.container_dir("v1")
    old = (folder / "state.json").read_bytes()
    home.open("v1", V1_PASSPHRASE).update_state(lambda s: s.seen("payroll", 4))
    (folder / "state.json").write_bytes(old)  # as if the removal never happened
    (folder / "state.json").chmod(0o600)
    c = home.open("v1", V1_PASSPHRASE)
    assert c.state().generation_floor("payroll") == 4
    c.update_state(lambda s: s.seen("other", 1))
    assert c.state().generation_floor("payroll") == 4


def test_a_v1_state_json_edited_is_refused_as_before(tmp_path):
    home = _v1_home(tmp_path)
    path = home.container_dir("v1") / "state.json"
    path.write_bytes(path.read_bytes().replace(b'"payroll":3', b'"payroll":1'))
    with pytest.raises(VerificationError, match=EDITED):
        home.open("v1", V1_PASSPHRASE).state()


def test_make_v1_helper_round_trips(home, c):
    """The helper other tests use to write a version 1 state reads back as written."""
    c.update_state(lambda s: s.seen("payroll", 2))
    ss.make_v1(c, {"payroll": 2, "other": 1})
    assert dict(fresh(home).state().marks) == {"payroll": 2, "other": 1}


# -- crash safety and concurrency ------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from keyblob.providers.software import Home, KdfParams
    c = Home(Path(sys.argv[1])).open("c", sys.argv[2].encode())
    prefix, count = sys.argv[3], int(sys.argv[4])
    shared = sys.argv[5] == "1"
    for i in range(1, count + 1):
        name = "shared" if shared and i % 2 else f"{prefix}{i}"
        c.update_state(lambda s, n=name, g=i: s.seen(n, g, store="file:/crash"))
        print(name, i, flush=True)
    """
)


def _writer(home, prefix, count, shared=False):
    return subprocess.Popen(
        [
            *(sys.executable, "-c", WRITER, str(home.path), PASSPHRASE.decode()),
            *(prefix, str(count), "1" if shared else "0"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_writer_killed_at_random_instants_leaves_a_state_that_verifies(home, c):
    """>= 200 SIGKILLs at random instants of a process recording marks: afterwards the state
    verifies, and every mark the writer reported as committed is there."""
    _record(c, {f"base{i}": 1 for i in range(300)})
    committed: dict[str, int] = {}
    rng = random.Random(13)
    kills = 0
    for round_ in range(220):
        proc = _writer(home, f"r{round_}-", 10_000)
        first = proc.stdout.readline()  # the writer is in its loop: kill it from now on
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        text = first + out
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            lines.pop()  # killed while printing: that mark was committed, but not reported
        for line in lines:
            fields = line.split()
            assert len(fields) == 2, (round_, repr(text[-300:]))
            committed[fields[0]] = int(fields[1])
        state = fresh(home).state()  # verifies the head
        for name in list(committed)[-20:]:
            assert state.generation_floor(name) == committed[name]
    assert kills >= 200
    marks = fresh(home).state().all_marks()  # every node verified
    assert all(marks[n] == g for n, g in committed.items())
    # A journal the last kill left (not hot if killed before its header was written, so
    # readers ignore it) goes with the next write; no temp file is ever left.
    fresh(home).update_state(lambda s: s.seen("final", 1))
    assert not [p for p in c._folder.iterdir() if p.name.endswith((".tmp", "-journal"))]


@pytest.mark.slow
def test_concurrent_writers_lose_no_mark_and_the_highest_wins(home, c):
    procs = [_writer(home, f"w{i}-", 60, shared=True) for i in range(4)]
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    state = fresh(home).state()
    marks = state.all_marks()
    for out in outs:
        for line in out.splitlines():
            name, generation = line.split()
            assert marks[name] >= int(generation)
    assert marks["shared"] == 59  # the highest odd generation any writer recorded
    assert len(marks) == 4 * 30 + 1
    assert state.held("file:/crash") == marks


def test_reading_while_a_writer_commits_never_sees_a_torn_state(home, c):
    proc = _writer(home, "t", 300)
    try:
        reader = fresh(home)
        while proc.poll() is None:
            reader.state().generation_floor("t1")  # raises if a read saw half a commit
    finally:
        proc.communicate()
    assert fresh(home).state().generation_floor("t300") == 300


def test_sqlite_sees_a_database_in_rollback_journal_mode(c):
    with ss.closing(sqlite3.connect(c._folder / "state.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_change_of_signers_alone_keeps_every_mark(home, marked):
    marked.update_state(lambda s: s.__class__(label="Renamed", recorded=s.recorded))
    state = fresh(home).state()
    assert state.label == "Renamed" and state.generation_floor("payroll") == 5


@pytest.mark.slow
def test_a_migration_killed_at_random_instants_leaves_v1_or_v2_with_every_mark(tmp_path):
    """FORMAT.md 5.2.4: killed while it builds, renames or removes, the home reads as the
    version 1 state or the version 2 one, each with every version 1 mark."""
    rng = random.Random(7)
    outcomes = set()
    for round_ in range(40):
        root = tmp_path / f"r{round_}"
        root.mkdir()
        home = _v1_home(root)
        proc = subprocess.Popen(
            [
                *(sys.executable, "-c", WRITER.replace('"c"', '"v1"'), str(home.path)),
                *(V1_PASSPHRASE.decode(), "m", "50", "0"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.05, 0.6))  # from interpreter start-up into the migration
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        folder = home.container_dir("v1")
        outcomes.add(((folder / "state.json").exists(), (folder / "state.db").exists()))
        marks = home.open("v1", V1_PASSPHRASE).state().all_marks()
        assert all(marks[n] >= g for n, g in V1_MARKS.items())
    assert (True, False) in outcomes and (False, True) in outcomes, outcomes
