"""The home state vectors (FORMAT.md 5.2.7), checked from the text of FORMAT.md alone: the
state key derived with Argon2id and HKDF (5.1), the head's MAC, every node's digest and
encoding (5.2.2; the revisions tree's keys and values, 5.2.8), the key ids of the recovery
recipient and the previous signature key (1.3), a database made from the DDL printed in
5.2.3.  Only the last test hands
the result to keyblob; the rest imports nothing from it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from support import load_script

HERE = Path(__file__).parent / "state"
ROOT = Path(__file__).parents[2]
VECTOR = json.loads((HERE / "v2.json").read_text())
ZERO = bytes(32)
REVISIONS_TREE = 2**31
NAME = r"[a-z0-9][a-z0-9._-]{0,127}"


def _state_key() -> bytes:
    doc = json.loads((HERE / VECTOR["container_json"]).read_text())
    kdf = doc["kdf"]
    master = Argon2id(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(VECTOR["passphrase"].encode())
    return HKDF(hashes.SHA256(), 32, None, b"keyblob/v1/container/state").derive(master)


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _nodes() -> dict[tuple[int, str], bytes]:
    return {(n["tree"], n["pos"]): bytes.fromhex(n["body"]) for n in VECTOR["nodes"]}


def _walk(nodes: dict[tuple[int, str], bytes], tree: int, root: bytes) -> tuple[dict, set]:
    """Every entry of a tree, each node checked against its parent's digest (5.2.2); in the
    revisions tree (5.2.8) keys are ``name@generation`` and values at most 2^32-1."""
    revisions = tree == REVISIONS_TREE
    key_re = rf"{NAME}@[1-9][0-9]{{0,18}}" if revisions else NAME
    high = 2**32 if revisions else 2**63
    entries: dict[str, int] = {}
    seen: set[tuple[int, str]] = set()
    todo = [("", root)] if root != ZERO else []
    while todo:
        pos, digest = todo.pop()
        body = nodes[(tree, pos)]
        seen.add((tree, pos))
        assert hashlib.sha256(body).digest() == digest, (tree, pos)
        if len(pos) < 4:
            assert body[0] == 1 and len(body) == 513
            children = [body[1 + 32 * i : 33 + 32 * i] for i in range(16)]
            assert any(c != ZERO for c in children)
            todo += [(pos + "0123456789abcdef"[i], c) for i, c in enumerate(children) if c != ZERO]
            continue
        assert body[0] == 2
        count, at, names = int.from_bytes(body[1:3], "big"), 3, []
        for _ in range(count):
            size = body[at]
            name = body[at + 1 : at + 1 + size].decode("ascii")
            value = int.from_bytes(body[at + 1 + size : at + 9 + size], "big")
            assert re.fullmatch(key_re, name) and 1 <= value < high
            assert not revisions or int(name.rsplit("@", 1)[1]) < 2**63
            assert hashlib.sha256(name.encode()).hexdigest()[:4] == pos
            entries[name] = value
            names.append(name)
            at += 9 + size
        assert at == len(body) and names == sorted(set(names))
    return entries, seen


def test_the_head_is_canonical_and_maced_under_the_passphrase_derived_key():
    data = VECTOR["head"].encode()
    doc = json.loads(data)
    assert data == _canonical(doc) + b"\n"
    mac = bytes.fromhex(doc.pop("mac"))
    assert hmac.compare_digest(mac, hmac.new(_state_key(), _canonical(doc), "sha256").digest())
    assert doc["format"] == "keyblob-state/v2" and doc["container"] == "v1"


def test_every_node_verifies_and_the_trees_hold_the_expected_names():
    head = json.loads(VECTOR["head"])
    nodes = _nodes()
    marks, seen = _walk(nodes, 0, bytes.fromhex(head["marks"]["root"]))
    assert marks == VECTOR["marks"] and head["marks"]["count"] == len(marks)
    for view in head["views"]:
        entries, more = _walk(nodes, view["tree"], bytes.fromhex(view["root"]))
        assert entries == VECTOR["views"][view["store"]] and view["count"] == len(entries)
        seen |= more
    revisions, more = _walk(nodes, REVISIONS_TREE, bytes.fromhex(head["revisions"]["root"]))
    assert revisions == VECTOR["revisions"] and head["revisions"]["count"] == len(revisions)
    assert set(head["revisions"]) == {"count", "root"}  # tree 2^31 is implied
    seen |= more
    assert seen == set(nodes)  # no row that no tree reaches


def _key_id(role: int, public_b64: str) -> str:
    """1.3: SHA-256("keyblob/v1/key-id\x00" || suite || role || key)[0:16]; x25519 is 1."""
    data = b"keyblob/v1/key-id\x00" + bytes([1, role]) + base64.b64decode(public_b64)
    return hashlib.sha256(data).digest()[:16].hex()


def test_the_lifecycle_members_follow_their_field_rules():
    head = json.loads(VECTOR["head"])
    assert head["retired"] == VECTOR["retired"]
    assert all(re.fullmatch(NAME, k) and 2 <= v < 2**63 for k, v in head["retired"].items())
    (recipient,) = head["recovery"]
    assert set(recipient) == {"key_id", "exchange", "label", "added", "kind"}
    assert recipient["key_id"] == _key_id(1, recipient["exchange"])
    assert recipient["kind"] in ("container", "passphrase")
    (previous,) = head["previous"]
    assert set(previous) == {"key_id", "public", "until", "epoch"}
    assert previous["key_id"] == _key_id(2, previous["public"])
    assert type(previous["epoch"]) is int and 0 <= previous["epoch"] <= 254
    (removed,) = head["removed"]
    assert set(removed) == {"key_id", "label", "removed"}
    assert re.fullmatch("[0-9a-f]{32}", removed["key_id"]) and 0 <= removed["removed"] < 2**63
    assert removed["key_id"] not in {t["key_id"] for t in head["trusted"]}


def test_keyblob_reads_a_database_made_from_the_ddl_in_format_md(tmp_path):
    text = (ROOT / "docs" / "FORMAT.md").read_text()
    section = text[text.index("#### 5.2.3 The database") :]
    ddl = re.search(r"```sql\n(.*?)```", section, re.S).group(1).strip().splitlines()
    folder = tmp_path / "home" / "containers" / "v1"
    folder.mkdir(parents=True)
    for path in (tmp_path / "home", tmp_path / "home" / "containers", folder):
        path.chmod(0o700)
    shutil.copy(HERE / VECTOR["container_json"], folder / "container.json")
    with closing(sqlite3.connect(folder / "state.db", isolation_level=None)) as db:
        for statement in ddl:
            db.execute(statement)
        db.execute("INSERT INTO head VALUES (1, ?)", (VECTOR["head"].encode(),))
        db.executemany(
            "INSERT INTO node VALUES (?, ?, ?)", [(t, p, b) for (t, p), b in _nodes().items()]
        )
    for path in folder.iterdir():
        path.chmod(0o600)
    from keyblob.providers.software import Home

    state = Home(tmp_path / "home").open("v1", VECTOR["passphrase"].encode()).state()
    assert state.all_marks() == VECTOR["marks"] and state.label == "Vector One"
    for store, view in VECTOR["views"].items():
        assert state.held(store) == view
    for key, revision in VECTOR["revisions"].items():
        name, generation = key.rsplit("@", 1)
        assert state.revision_floor(name, int(generation)) == revision
    assert state.retired_below("payroll") == VECTOR["retired"]["payroll"]
    assert [r.label for r in state.recovery] == ["Offline recovery"]
    assert [(p.until, p.epoch) for p in state.previous] == [(1700000200, 2)]
    assert [(r.label, r.removed) for r in state.removed] == [("Former colleague", 1700000400)]


def test_the_generator_rebuilds_the_vector():
    tool = load_script("gen_state_vectors", ROOT / "tools" / "gen_state_vectors.py")
    assert (
        json.dumps(tool.build(), indent=1, sort_keys=True) + "\n" == (HERE / "v2.json").read_text()
    )
