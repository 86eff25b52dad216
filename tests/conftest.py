"""Shared fixtures: homes with a fast (test-only) KDF, stores, containers of each suite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import support
from keyblob import Home, SoftwareContainer, Suite
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE, postgres_database


@pytest.fixture(autouse=True)
def _no_keyblob_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own home, store, container, passphrase or agent."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for name in (
        "KEYBLOB_HOME",
        "KEYBLOB_STORE",
        "KEYBLOB_CONTAINER",
        "KEYBLOB_PASSPHRASE",
        "KEYBLOB_PIN",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_container(tmp_path: Path) -> Callable[..., SoftwareContainer]:
    """Make a container in its own home: make_container("alice", suite=Suite.RSA)."""
    counter = iter(range(1000))

    def make(
        name: str = "default", suite: Suite = Suite.X25519, bits: int = 2048
    ) -> SoftwareContainer:
        home = Home(tmp_path / f"home{next(counter)}")
        return home.create(name, PASSPHRASE, suite, bits=bits, kdf=FAST_KDF)

    return make


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


@pytest.fixture(params=[Suite.X25519, Suite.RSA, Suite.P256], ids=["x25519", "rsa", "p256"])
def suite(request: pytest.FixtureRequest) -> Suite:
    return request.param  # type: ignore[no-any-return]


#: The store backends, as users select them (issue 13): every test taking ``store_url``
#: runs once per backend.
BACKENDS = ("directory", "sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of each backend, as the URL a user gives ``--store`` or ``open_store``
    (PostgreSQL: a fresh database on ``KEYBLOB_TEST_PG``, dropped afterwards)."""
    if request.param == "directory":
        return str(tmp_path / "store")
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    return postgres_database(request)


@pytest.fixture
def softhsm_token() -> support.SoftHSMToken:
    """The SoftHSM2 test token ``.ci/run`` starts (tools/softhsm-test-token); skips without
    it, but fails in CI (``KEYBLOB_REQUIRE_INTEROP=1``)."""
    return support.softhsm_token()
