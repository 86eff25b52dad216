"""``keyblob init --provider pkcs11 --token pkcs11:...``: an RFC 7512 URI picks the token (label,
serial, manufacturer, model) and may name the module; what it may not say is refused in one
line before any PIN is used (tests/unit/test_pkcs11_uri.py tests the parser itself)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from support import SoftHSMToken

PASS = "unused: token containers take a PIN"


@pytest.fixture
def token(softhsm_token: SoftHSMToken, monkeypatch: pytest.MonkeyPatch) -> SoftHSMToken:
    monkeypatch.setenv("KEYBLOB_PIN", softhsm_token.pin)
    return softhsm_token


def _record(tmp_path: Path, name: str) -> dict[str, object]:
    data = (tmp_path / "home" / "containers" / name / "container.json").read_text()
    return json.loads(data)  # type: ignore[no-any-return]


def test_a_uri_names_the_token_and_the_module(kb, tmp_path: Path, token: SoftHSMToken) -> None:
    quoted = urllib.parse.quote(token.module)
    status, out, err = kb(
        "init", "--provider", "pkcs11", "--container", "a",
        "--token", f"pkcs11:token={token.label}?module-path={quoted}",
    )  # fmt: skip
    assert (status, err) == (0, ""), err
    record = _record(tmp_path, "a")
    assert record["pkcs11"]["module"] == token.module  # type: ignore[index]
    assert record["pkcs11"]["token"] == token.label  # type: ignore[index]
    # The serial recorded picks the same token by serial alone, with its manufacturer.
    serial = record["pkcs11"]["serial"]  # type: ignore[index]
    status, out, err = kb(
        "init", "--provider", "pkcs11", "--container", "b", "--module", token.module,
        "--token", f"PKCS11:serial={serial};manufacturer=SoftHSM%20project",
    )  # fmt: skip
    assert (status, err) == (0, ""), err
    assert f"token {token.label!r}" in out
    assert kb("--container", "b", "new", "k")[0] == 0
    assert kb("--container", "b", "show", "k")[0] == 0


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs11:token={label};serial=0000", "no PKCS#11 token with token="),
        ("pkcs11:token={label};model=no-such-model", "no PKCS#11 token with token="),
        ("pkcs11:token={label};object=k", "names a key: name the token only"),
        ("pkcs11:token={label}?pin-value=1234", "pin-value refused"),
        ("pkcs11:token={label}?module-path=/elsewhere.so", "name different modules"),
        ("pkcs11:token={label}?module-name=softhsm2", "module-path"),
        ("pkcs11:model=x", "names no token"),
    ],
)
def test_what_a_uri_may_not_say_is_refused_and_nothing_is_made(
    kb, tmp_path: Path, token: SoftHSMToken, uri: str, message: str
) -> None:
    status, _, err = kb(
        "init", "--provider", "pkcs11", "--module", token.module,
        "--token", uri.format(label=token.label),
    )  # fmt: skip
    assert status in (2, 4), err
    assert message in err and err.count("\n") == 1
    assert "1234" not in err  # a pin-value is never echoed
    assert not (tmp_path / "home" / "containers" / "default").exists()


def test_a_uri_without_a_module_path_needs_module(kb, token: SoftHSMToken) -> None:
    status, _, err = kb("init", "--provider", "pkcs11", "--token", f"pkcs11:token={token.label}")
    assert status == 2
    assert "needs --module PATH (or module-path in the URI)" in err
