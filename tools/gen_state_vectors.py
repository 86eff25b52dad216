"""Regenerate (or check) the home state vectors of FORMAT.md 5.2.7.

    python tools/gen_state_vectors.py           # rewrite tests/vectors/state/v2.json
    python tools/gen_state_vectors.py --check   # exit 1 if the file differs from a rebuild

The input is the committed version 1 home ``tests/vectors/state/v1-home`` (written by a
keyblob before version 2). The output is that container after its first change through
keyblob: the migration (5.2.4) with one mark added and one store view recorded. Everything is
deterministic: the head's MAC is over fixed contents under the committed container's key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from keyblob.providers.software import Home

HERE = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "state"
PASSPHRASE = "keyblob test vector passphrase"
STORE = "file:/srv/keyblob/store"
ADDED = {"payroll": 3, "ledger": 2}


def build() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(HERE / "v1-home", home)
        for path in [home, *home.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)
        container = Home(home).open("v1", PASSPHRASE.encode())
        container.update_state(lambda s: s.with_marks(ADDED, store=STORE))
        container._state.close()
        with closing(sqlite3.connect(home / "containers" / "v1" / "state.db")) as db:
            head = bytes(db.execute("SELECT body FROM head").fetchone()[0])
            nodes = db.execute("SELECT tree, pos, body FROM node ORDER BY tree, pos").fetchall()
        state = Home(home).open("v1", PASSPHRASE.encode()).state()
        return {
            "about": "FORMAT.md 5.2.7: v1-home/containers/v1 after its migration, with "
            f"{ADDED} recorded through the store {STORE}",
            "passphrase": PASSPHRASE,
            "container_json": "v1-home/containers/v1/container.json",
            "head": head.decode("ascii"),
            "nodes": [{"tree": t, "pos": p, "body": bytes(b).hex()} for t, p, b in nodes],
            "marks": state.all_marks(),
            "views": {STORE: state.held(STORE)},
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = json.dumps(build(), indent=1, sort_keys=True) + "\n"
    target = HERE / "v2.json"
    if args.check:
        if target.read_text() != text:
            print(f"{target} differs from a rebuild", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
