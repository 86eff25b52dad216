"""Every Wycheproof Ed25519 vector through keyblob's own path: the key as a public key file
carries it (``suites.load_signature_public``), then ``suites.verify`` (FORMAT.md 2.5).
Third-party data, read in place."""

from __future__ import annotations

import json

from keyblob.errors import FormatError, VerificationError
from keyblob.keys import Suite
from keyblob.providers import suites
from support import shared_vectors


def test_every_ed25519_vector() -> None:
    doc = json.loads((shared_vectors("wycheproof") / "ed25519_test.json").read_text())
    assert doc["algorithm"] == "EDDSA"
    seen = 0
    for group in doc["testGroups"]:
        key = bytes.fromhex(group["publicKey"]["pk"])
        assert group["publicKey"]["curve"] == "edwards25519"
        for t in group["tests"]:
            seen += 1
            where = f"tcId {t['tcId']} ({t['comment']}, {t['flags']})"
            signature, message = bytes.fromhex(t["sig"]), bytes.fromhex(t["msg"])
            try:
                public = suites.load_signature_public(Suite.X25519, key)
                suites.verify(public, signature, message)
            except (FormatError, VerificationError):
                assert t["result"] == "invalid", where
            else:
                assert t["result"] == "valid", where
    assert seen == doc["numberOfTests"]
