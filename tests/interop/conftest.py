"""Fixtures for tests against real peers.

A missing peer skips its tests with the reason, except when ``KEYBLOB_REQUIRE_INTEROP=1``
(set by ``.ci/run``): then it fails them, so CI never passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from interop.capi.peer import CapiPeer, PeerUnavailableError, start


def _require_interop() -> bool:
    return os.environ.get("KEYBLOB_REQUIRE_INTEROP") == "1"


@pytest.fixture(scope="session")
def capi_peer() -> Iterator[CapiPeer]:
    """Wine's CryptoAPI, driven through ``tests/interop/capi/capi_peer.c`` (built once)."""
    try:
        peer = start()
    except PeerUnavailableError as e:
        reason = f"CryptoAPI peer unavailable: {e}"
        if _require_interop():
            pytest.fail(f"{reason} (KEYBLOB_REQUIRE_INTEROP=1)", pytrace=False)
        pytest.skip(reason)
    try:
        yield peer
    finally:
        peer.close()
