"""The committed vectors (tests/vectors/manifest.json) against the package and against the
independent reader, plus canonical round trips and the generator's own --check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import support
from keyblob import blobs
from keyblob.errors import NotFoundError, UsageError, VerificationError
from keyblob.format import KeyBlob, PublicKeyFile, armor, dearmor
from keyblob.format.armor import BLOB, PUBLIC_KEY
from keyblob.trust import State

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GENERATOR = ROOT / "tools" / "gen_vectors.py"
MANIFEST = json.loads((HERE / "manifest.json").read_text("utf-8"))
CASES = MANIFEST["cases"]
IDS = [c["name"] for c in CASES]


gv = support.load_script("gen_vectors", GENERATOR)
ir = support.load_script("keyblob_independent_reader", HERE / "independent_reader.py")
KEYS = gv.load_keys()


def _data(case: dict[str, Any]) -> bytes:
    return (HERE / case["file"]).read_bytes()


# -- (a) the package -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_package_gives_the_expected_outcome(case: dict[str, Any]) -> None:
    got = gv.run_case(case, KEYS, _data(case))
    assert (got.result, got.stage) == (case["result"], case["stage"]), case["description"]
    assert got.header == case["header"]
    assert got.session_key == case["session_key"]
    assert got.public_key == case["public_key"]


def _before_unwrap(case: dict[str, Any]) -> bool:
    return case["type"] == "blob" and case["result"] != "valid" and case["stage"] != "unwrap"


BEFORE_UNWRAP = [c for c in CASES if _before_unwrap(c)]


@pytest.mark.parametrize("case", BEFORE_UNWRAP, ids=[c["name"] for c in BEFORE_UNWRAP])
def test_package_refuses_before_any_unwrap(case: dict[str, Any]) -> None:
    """FORMAT.md 2.7: nothing is unwrapped before steps 1-5 pass."""
    assert gv.run_case(case, KEYS, _data(case)).unwrap_calls == 0


# -- (b) the independent reader --------------------------------------------------------------


SUITES = {"x25519": ir.X25519, "rsa": ir.RSA, "pq": ir.PQ, "p256": ir.P256}
SUITE_LABELS = {code: label for label, code in SUITES.items()}


def _private(path: str) -> Any:
    return serialization.load_pem_private_key((HERE / path).read_bytes(), None)


def _exchange(entry: dict[str, Any]) -> Any:
    """A test key's exchange private key: PEM, or for pq its seed (FORMAT.md 1.3)."""
    if entry["suite"] == "pq":
        return ir.PqExchange(bytes.fromhex(entry["exchange"]["seed"]))
    return _private(entry["exchange"]["file"])


def _signature_public(entry: dict[str, Any]) -> Any:
    if entry["suite"] == "pq":
        return ir.pq_signature_public(bytes.fromhex(entry["signature"]["seed"]))
    return _private(entry["signature"]["file"]).public_key()


def _container(case: dict[str, Any]) -> ir.Container:
    own = MANIFEST["keys"][case["opener"]]
    suite = SUITES[own["suite"]]
    trusted = [_signature_public(MANIFEST["keys"][t]) for t in case["trusted"]] + [
        ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(k))
        for k in case.get("trusted_public", [])
    ]
    return ir.Container(
        suite=suite,
        exchange=_exchange(own),
        signature_public=_signature_public(own),
        trusted=trusted,
        high_water=dict(case["high_water"]),
        revisions={
            (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1])): v
            for k, v in case.get("revision_marks", {}).items()
        },
    )


def _independent(case: dict[str, Any]) -> tuple[str, str | None, dict[str, Any] | None, str | None]:
    try:
        if case["type"] == "public_key":
            pub = ir.parse_public_key_file(_data(case))
            suite = SUITE_LABELS[pub.suite]
            return (
                "valid",
                None,
                {
                    "version": pub.version,
                    "suite": suite,
                    "label": pub.label,
                    "label_signed": pub.version == 2,
                    "exchange": pub.exchange.hex(),
                    "signature": pub.signature.hex(),
                    "exchange_id": ir.key_id(pub.suite, ir.EXCHANGE, pub.exchange).hex(),
                    "signature_id": ir.key_id(pub.suite, ir.SIGNATURE, pub.signature).hex(),
                    "fingerprint": ir.fingerprint(pub.suite, pub.exchange, pub.signature).hex(),
                },
                None,
            )
        blob, key = ir.open_blob(_data(case), _container(case), name=case["request_name"])
    except ir.Refused as e:
        return e.result, e.stage, None, None
    labels = {1: "aes-256-gcm", 2: "aes-128-gcm", 3: "chacha20-poly1305"}
    header = {
        "suite": SUITE_LABELS[blob.suite],
        "algorithm": labels[blob.algorithm],
        "generation": blob.generation,
        "created": blob.created,
        "key_id": blob.key_id.hex(),
        "signer_id": blob.signer_id.hex(),
        "name": blob.name,
        "revision": blob.revision,
        "recipients": [rid.hex() for rid, _ in blob.recipients],
    }
    return "valid", None, header, key.hex()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_independent_reader_agrees(case: dict[str, Any]) -> None:
    result, stage, fields, key = _independent(case)
    assert (result, stage) == (case["result"], case["stage"]), case["description"]
    if case["type"] == "public_key":
        assert fields == case["public_key"]
    else:
        assert fields == case["header"]
        assert key == case["session_key"]


def test_independent_reader_computes_the_manifest_key_ids() -> None:
    for entry in MANIFEST["keys"].values():
        suite = SUITES[entry["suite"]]
        for role, code in (("exchange", ir.EXCHANGE), ("signature", ir.SIGNATURE)):
            key = _exchange(entry) if role == "exchange" else None
            public = ir.public_bytes(
                key.public_key() if key is not None else _signature_public(entry)
            )
            assert public.hex() == entry[role]["public"]
            assert ir.key_id(suite, code, public).hex() == entry[role]["key_id"]


# -- (c) parse, then emit ----------------------------------------------------------------------

VALID = [c for c in CASES if c["result"] == "valid"]


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_parse_then_emit_gives_the_same_bytes(case: dict[str, Any]) -> None:
    data = _data(case)
    kind = BLOB if case["type"] == "blob" else PUBLIC_KEY
    parse = KeyBlob.from_bytes if case["type"] == "blob" else PublicKeyFile.from_bytes
    armored = case["file"].endswith(".txt")
    binary = dearmor(data, kind) if armored else data
    assert parse(binary).to_bytes() == binary
    if armored:
        emitted = armor(binary, kind)
        assert (emitted == data) is case["canonical"]
        assert emitted == data.strip(b" \t\r\n") + b"\n"


def test_every_vector_file_is_in_the_manifest() -> None:
    on_disk = {
        f"{p.parent.name}/{p.name}" for sub in ("valid", "invalid") for p in (HERE / sub).iterdir()
    }
    assert on_disk == {c["file"] for c in CASES}


# -- import step 5 with a store ----------------------------------------------------------------


class MemoryStore:
    """A Store over a dict, for the store-side rules of import step 5."""

    location = "memory"
    identity = "memory:"

    def __init__(self, items: dict[tuple[str, int], bytes]) -> None:
        self.items = dict(items)

    def put(self, name: str, generation: int, data: bytes) -> None:
        if self.items.setdefault((name, generation), data) != data:
            raise UsageError("exists")

    def get(self, name: str, generation: int) -> bytes:
        try:
            return self.items[(name, generation)]
        except KeyError:
            raise NotFoundError(name) from None

    def generations(self, name: str) -> list[int]:
        return sorted(g for n, g in self.items if n == name)

    def latest(self, name: str) -> int | None:
        return max(self.generations(name), default=None)

    def names(self) -> list[str]:
        return sorted({n for n, _ in self.items})


ONE = (HERE / "valid/x25519_one_recipient.kb").read_bytes()
ONE_CASE = next(c for c in CASES if c["name"] == "x25519_one_recipient")


def _alice(high_water: dict[str, int]) -> Any:
    return gv.VectorProvider(KEYS["alice"], State(marks=high_water))


def test_load_latest_returns_the_key_and_raises_the_mark() -> None:
    provider = _alice({})
    key = blobs.load(provider, MemoryStore({("payroll", 1): ONE}), "payroll")
    assert key.unsafe_raw_bytes().hex() == ONE_CASE["session_key"]
    assert provider.state().generation_floor("payroll") == 1


def test_load_latest_refuses_a_store_that_lost_the_newest() -> None:
    provider = _alice({"payroll": 2})
    with pytest.raises(VerificationError, match="rolled back"):
        blobs.load(provider, MemoryStore({("payroll", 1): ONE}), "payroll")
    assert provider.unwrap_calls == 0


def test_load_refuses_a_blob_stored_under_another_generation() -> None:
    provider = _alice({})
    with pytest.raises(VerificationError, match="signed as generation 1"):
        blobs.load(provider, MemoryStore({("payroll", 3): ONE}), "payroll")
    assert provider.unwrap_calls == 0


def test_old_generation_with_its_key_id_stays_readable() -> None:
    provider = _alice({"payroll": 5})
    store = MemoryStore({("payroll", 1): ONE})
    kid = KeyBlob.from_bytes(ONE).header.key_id
    key = blobs.load(provider, store, "payroll", generation=1, key_id=kid)
    assert key.unsafe_raw_bytes().hex() == ONE_CASE["session_key"]


# -- the generator -----------------------------------------------------------------------------


def test_gen_vectors_check_passes() -> None:
    run = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_load_latest_passes_over_an_entry_that_fails_above_the_mark() -> None:
    """FORMAT.md 2.9: junk above the newest valid generation is ignored and reported; at or
    below the mark nothing else is a candidate, so the junk's refusal stands."""
    import pytest

    from keyblob.errors import FormatError, IgnoredEntryWarning

    store = MemoryStore({("payroll", 1): ONE, ("payroll", 2): b"junk"})
    provider = _alice({})
    with pytest.warns(IgnoredEntryWarning, match="ignored payroll generation 2"):
        key = blobs.load(provider, store, "payroll")
    assert key.unsafe_raw_bytes().hex() == ONE_CASE["session_key"]
    assert provider.state().generation_floor("payroll") == 1
    with pytest.raises(FormatError):
        blobs.load(_alice({"payroll": 2}), store, "payroll")
