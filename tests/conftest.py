"""Shared fixtures: homes with a fast (test-only) KDF, stores, containers of each suite."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import support
from keyblob import Home, Suite
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE, TOKEN_P256, postgres_database


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


def _token_run(request: pytest.FixtureRequest) -> bool:
    callspec = getattr(request.node, "callspec", None)
    return callspec is not None and callspec.params.get("suite") == TOKEN_P256


@pytest.fixture
def make_container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Make a container in its own home: make_container("alice", suite=Suite.RSA).

    In a test's ``p256-token`` run, a p256 container is made in the PKCS#11 test token
    (skipped without it, failed in CI); its token objects are destroyed at teardown."""
    counter = iter(range(1000))
    token = request.getfixturevalue("softhsm_token") if _token_run(request) else None
    in_token: list[Any] = []

    def make(name: str = "default", suite: Suite = Suite.X25519, bits: int = 2048) -> Any:
        home = Home(tmp_path / f"home{next(counter)}")
        if token is not None and suite is Suite.P256:
            pin = token.pin.encode()
            container = home.create_token(name, pin, module=token.module, token=token.label)
            in_token.append(container)
            return container
        return home.create(name, PASSPHRASE, suite, bits=bits, kdf=FAST_KDF)

    yield make
    with contextlib.ExitStack() as cleanup:  # each one, even if another fails
        for container in in_token:
            cleanup.callback(support.close_token_container, container)


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


def _parametrized_by_the_test(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``suite`` runs once per suite in software and once more with p256 in
    the PKCS#11 test token (``TOKEN_P256``), unless marked ``software_only(reason)``."""
    if "suite" not in metafunc.fixturenames or _parametrized_by_the_test(metafunc, "suite"):
        return
    params: list[Suite | str] = [Suite.X25519, Suite.RSA, Suite.P256, Suite.PQ]
    if metafunc.definition.get_closest_marker("software_only") is None:
        params.append(TOKEN_P256)
    ids = [p if isinstance(p, str) else p.label for p in params]
    metafunc.parametrize("suite", params, ids=ids, indirect=True)


@pytest.fixture
def suite(request: pytest.FixtureRequest) -> Suite:
    """The suite of this run (see pytest_generate_tests); ``p256-token`` is Suite.P256."""
    return Suite.P256 if request.param == TOKEN_P256 else request.param  # type: ignore[no-any-return]


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
