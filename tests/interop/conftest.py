"""Fixtures for tests against real peers.

A missing peer skips its tests with the reason, except when ``KEYBLOB_REQUIRE_INTEROP=1``
(set by ``.ci/run``): then it fails them, so CI never passes by skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import support
from interop.capi.peer import CapiPeer, PeerUnavailableError, start


@pytest.fixture(scope="session")
def capi_peer() -> Iterator[CapiPeer]:
    """Wine's CryptoAPI, driven through ``tests/interop/capi/capi_peer.c`` (built once)."""
    try:
        peer = start()
    except PeerUnavailableError as e:
        support.skip_or_fail(f"CryptoAPI peer unavailable: {e}")
    try:
        yield peer
    finally:
        peer.close()
