"""The recovery kit vector (FORMAT.md 8): ``recovery-kit/kit.kbkit`` opened from the text
of section 8 with ``cryptography``'s primitives alone, then by keyblob's reader.

Made by running this file (``python tests/vectors/test_recovery_kit_vector.py``): a fixed
X25519 private key, salt, nonce and creation time, the writer's Argon2id parameters
(m = 262144 KiB, t = 4, p = 4), and one session key HPKE-wrapped to the kit's public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = Path(__file__).parent / "recovery-kit"


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def test_kit_opens_from_the_spec_alone() -> None:
    vector = json.loads((HERE / "vector.json").read_text())
    data = (HERE / "kit.kbkit").read_bytes()
    kit = json.loads(data)
    body = {k: v for k, v in kit.items() if k != "digest"}
    assert data == _canonical(kit) + b"\n"  # 8.1: canonical JSON and one LF
    assert (
        kit["digest"]
        == hashlib.sha256(b"keyblob/v1/recovery-kit\x00" + _canonical(body)).hexdigest()
    )
    kdf = kit["kdf"]
    assert (kdf["memory_kib"], kdf["iterations"], kdf["lanes"]) == (262144, 4, 4)
    master = Argon2id(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(vector["passphrase"].encode())
    seal = HKDF(hashes.SHA256(), 32, None, b"keyblob/v1/recovery-kit/seal").derive(master)
    aad = b"keyblob/v1/recovery-kit/private-key\x00" + _canonical(
        {"exchange": kit["exchange"], "purpose": "recovery", "suite": "x25519"}
    )
    sealed = base64.b64decode(kit["sealed"])
    private = AESGCM(seal).decrypt(sealed[:12], sealed[12:], aad)
    assert private.hex() == vector["private_key"]
    public = x25519.X25519PrivateKey.from_private_bytes(private).public_key()
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == base64.b64decode(kit["exchange"])


def test_keyblob_reads_and_opens_it() -> None:
    from keyblob.providers.recoverykit import RecoveryKit, open_recovery_kit

    vector = json.loads((HERE / "vector.json").read_text())
    data = (HERE / "kit.kbkit").read_bytes()
    kit = RecoveryKit.from_bytes(data)
    assert kit.to_bytes() == data
    key = open_recovery_kit(kit, vector["passphrase"].encode())
    assert key.exchange_id.hex == vector["exchange_key_id"]
    wrapped = bytes.fromhex(vector["wrapped"])
    assert key.unwrap(wrapped, vector["info"].encode()).hex() == vector["session_key"]


def _make() -> None:  # pragma: no cover - run by hand to remake the vector
    from keyblob.keys import KeyRole, Suite, key_id_for
    from keyblob.providers import suites
    from keyblob.providers.recoverykit import make_recovery_kit

    seed = hashlib.sha256(b"keyblob/v1/test-vector-seed\x00recovery-kit\x00exchange").digest()
    private = x25519.X25519PrivateKey.from_private_bytes(seed)
    fixed = iter([bytes(range(16)), bytes(range(100, 112))])
    passphrase = "break glass: seven wombats juggle"
    kit = make_recovery_kit(
        Suite.X25519,
        passphrase.encode(),
        _random=lambda n: next(fixed)[:n],
        _now=lambda: 1796500000,
        _private=private,
    )
    session = hashlib.sha256(b"keyblob/v1/test-vector-seed\x00recovery-kit\x00session").digest()
    info = "keyblob recovery kit vector"
    public = suites.load_exchange_public(Suite.X25519, kit.exchange)
    HERE.mkdir(exist_ok=True)
    (HERE / "kit.kbkit").write_bytes(kit.to_bytes())
    vector = {
        "passphrase": passphrase,
        "private_key": seed.hex(),
        "exchange_key_id": key_id_for(Suite.X25519, KeyRole.EXCHANGE, kit.exchange).hex,
        "session_key": session.hex(),
        "info": info,
        "wrapped": suites.wrap(public, session, info.encode()).hex(),
    }
    (HERE / "vector.json").write_text(json.dumps(vector, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    _make()
    sys.exit(0)
