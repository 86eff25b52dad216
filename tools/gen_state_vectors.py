"""Regenerate (or check) the home state vectors of FORMAT.md 5.2.7.

    python tools/gen_state_vectors.py           # rewrite tests/vectors/state/v2.json
    python tools/gen_state_vectors.py --check   # exit 1 if the file differs from a rebuild

The input is the committed version 1 home ``tests/vectors/state/v1-home`` (written by a
keyblob before version 2). The output is that container after its first change through
keyblob: the migration (5.2.4) with one mark added and one store view recorded, then a second
change recording revision marks, a retirement, a recovery recipient, an earlier signature
key and a removed signer (5.2.8). Everything is deterministic: the head's MAC is over fixed
contents under the committed container's key, and the extra public keys come from fixed
private keys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from keyblob.keys import KeyRole, Suite, key_id_for
from keyblob.providers.software import Home
from keyblob.trust import PreviousSigner, RecoveryRecipient, State, TrustedSigner

HERE = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "state"
PASSPHRASE = "keyblob test vector passphrase"
STORE = "file:/srv/keyblob/store"
ADDED = {"payroll": 3, "ledger": 2}
REVISIONS = {("payroll", 3): 2, ("payroll", 2): 1, ("backup.2024", 7): 4294967295}
RETIRED = {"payroll": 2}
RAW = (Encoding.Raw, PublicFormat.Raw)


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"keyblob state vector {label}".encode()).digest()


def _lifecycle() -> tuple[RecoveryRecipient, PreviousSigner]:
    exchange = X25519PrivateKey.from_private_bytes(_seed("recovery")).public_key()
    signature = Ed25519PrivateKey.from_private_bytes(_seed("previous")).public_key()
    x, s = exchange.public_bytes(*RAW), signature.public_bytes(*RAW)
    return (
        RecoveryRecipient(
            key_id_for(Suite.X25519, KeyRole.EXCHANGE, x),
            x,
            "Offline recovery",
            1700000100,
            "container",
        ),
        PreviousSigner(key_id_for(Suite.X25519, KeyRole.SIGNATURE, s), s, 1700000200, 2),
    )


def _removed() -> TrustedSigner:
    signature = Ed25519PrivateKey.from_private_bytes(_seed("removed")).public_key()
    exchange = X25519PrivateKey.from_private_bytes(_seed("removed exchange")).public_key()
    s = signature.public_bytes(*RAW)
    return TrustedSigner(
        key_id_for(Suite.X25519, KeyRole.SIGNATURE, s),
        Suite.X25519,
        s,
        exchange.public_bytes(*RAW),
        "Former colleague",
        1700000300,
    )


def _remove(state: State, signer: TrustedSigner) -> State:
    return state.without_signer(signer.key_id, removed=1700000400)


def build() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(HERE / "v1-home", home)
        for path in [home, *home.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)
        container = Home(home).open("v1", PASSPHRASE.encode())
        container.update_state(lambda s: s.with_marks(ADDED, store=STORE))
        recipient, previous = _lifecycle()
        removed = _removed()
        container.update_state(lambda s: s.with_signer(removed))
        container.update_state(lambda s: _remove(s, removed))
        container.update_state(
            lambda s: (
                s.with_revisions(REVISIONS)
                .with_retired("payroll", RETIRED["payroll"])
                .with_recovery(recipient)
                .with_previous(previous)
            )
        )
        container._state.close()
        with closing(sqlite3.connect(home / "containers" / "v1" / "state.db")) as db:
            head = bytes(db.execute("SELECT body FROM head").fetchone()[0])
            nodes = db.execute("SELECT tree, pos, body FROM node ORDER BY tree, pos").fetchall()
        state = Home(home).open("v1", PASSPHRASE.encode()).state()
        return {
            "about": "FORMAT.md 5.2.7: v1-home/containers/v1 after its migration, with "
            f"{ADDED} recorded through the store {STORE}, then revision marks, a retirement, "
            "a recovery recipient, a previous signature key and a removed signer (5.2.8)",
            "passphrase": PASSPHRASE,
            "container_json": "v1-home/containers/v1/container.json",
            "head": head.decode("ascii"),
            "nodes": [{"tree": t, "pos": p, "body": bytes(b).hex()} for t, p, b in nodes],
            "marks": state.all_marks(),
            "views": {STORE: state.held(STORE)},
            "revisions": {
                f"{name}@{generation}": revision
                for (name, generation), revision in sorted(state.all_revisions().items())
            },
            "retired": dict(state.retired),
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
