"""Helpers for tests that look inside a container's home state (FORMAT.md 5.2): its
state.db (head and nodes) and the version 1 state.json it replaced.  They share no code
with keyblob's writer beyond the container's state key."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def signed(key: bytes, doc: dict[str, Any]) -> bytes:
    """``doc`` (without ``mac``) as keyblob writes it: canonical JSON with its MAC, LF."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    mac = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    return canonical({**body, "mac": mac}) + b"\n"


def db(folder: Path) -> sqlite3.Connection:
    return sqlite3.connect(folder / "state.db", isolation_level=None)


def head(folder: Path) -> dict[str, Any]:
    with closing(db(folder)) as c:
        return json.loads(c.execute("SELECT body FROM head").fetchone()[0])


def head_bytes(folder: Path) -> bytes:
    with closing(db(folder)) as c:
        return bytes(c.execute("SELECT body FROM head").fetchone()[0])


def set_head(folder: Path, data: bytes) -> None:
    with closing(db(folder)) as c:
        c.execute("UPDATE head SET body = ? WHERE id = 1", (data,))


def nodes(folder: Path) -> dict[tuple[int, str], bytes]:
    with closing(db(folder)) as c:
        return {(t, p): bytes(b) for t, p, b in c.execute("SELECT tree, pos, body FROM node")}


def set_node(folder: Path, tree: int, pos: str, body: bytes | None) -> None:
    """Write (or with None, delete) one node row, as an attacker with the file would."""
    with closing(db(folder)) as c:
        if body is None:
            c.execute("DELETE FROM node WHERE tree = ? AND pos = ?", (tree, pos))
        else:
            c.execute("INSERT OR REPLACE INTO node VALUES (?, ?, ?)", (tree, pos, body))


def bucket_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:4]


def make_v1(container: Any, marks: dict[str, int]) -> None:
    """Turn ``container``'s home state into a version 1 state.json (FORMAT.md 5.2.1) with its
    signers and label and ``marks``, as a keyblob before state.db wrote it."""
    folder = container._folder
    doc = {"container": container.name, "format": "keyblob-state/v1", **head(folder)}
    for member in ("mac", "marks", "views"):
        doc.pop(member)
    doc["format"] = "keyblob-state/v1"
    doc["high_water"] = marks
    (folder / "state.json").write_bytes(signed(container._keys.state, doc))
    (folder / "state.json").chmod(0o600)
    container._state.close()
    (folder / "state.db").unlink()
