"""Constants and helpers shared by the tests (importable as ``support``)."""

from __future__ import annotations

import os

from keyblob import KdfParams

#: Argon2id at its accepted floor: the tests exercise the logic, not the work factor.
FAST_KDF = KdfParams(memory_kib=8192, iterations=1, lanes=1)
PASSPHRASE = b"correct horse battery staple"


def require_interop() -> bool:
    """CI sets KEYBLOB_REQUIRE_INTEROP=1: a missing peer is then a failure, not a skip."""
    return os.environ.get("KEYBLOB_REQUIRE_INTEROP") == "1"
