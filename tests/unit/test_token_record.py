"""container.json of a token container (FORMAT.md 5.1.1), read without a token: every member
checked, nothing else accepted, the public keys served without a PIN, and a one-line error
where python-pkcs11 is missing."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from keyblob import FormatError, Home, UsageError
from keyblob.keys import Suite
from keyblob.providers import suites
from keyblob.providers.homestate import check_private_folder

pytest.importorskip("pkcs11", reason="python-pkcs11 is in the dev extra")


def _public(suite: Suite = Suite.P256) -> tuple[str, str]:
    exchange, signature = suites.generate(suite)
    return (
        base64.b64encode(suites.public_bytes(exchange)).decode(),
        base64.b64encode(suites.public_bytes(signature)).decode(),
    )


def _doc(name: str = "c") -> dict[str, Any]:
    exchange, signature = _public()
    return {
        "format": "keyblob-pkcs11-container/v1",
        "name": name,
        "suite": "p256",
        "created": 1765000000,
        "pkcs11": {"module": "/usr/lib/softhsm/libsofthsm2.so", "token": "t", "serial": "0a1b"},
        "exchange": {"public": exchange, "label": "keyblob/c/0011aabb/exchange", "id": "00" * 16},
        "signature": {
            "public": signature,
            "label": "keyblob/c/0011aabb/signature",
            "id": "11" * 16,
        },
        "state": {"label": "keyblob/c/0011aabb/state", "id": "22" * 16},
    }


def _home(tmp_path: Path, doc: dict[str, Any] | bytes, name: str = "c") -> Home:
    folder = tmp_path / "home" / "containers" / name
    folder.mkdir(parents=True)
    for path in (tmp_path / "home", tmp_path / "home" / "containers", folder):
        path.chmod(0o700)
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    (folder / "container.json").write_bytes(data)
    (folder / "container.json").chmod(0o600)
    check_private_folder(folder, "folder")
    return Home(tmp_path / "home")


def test_the_public_keys_and_the_token_are_read_without_a_pin(tmp_path: Path) -> None:
    doc = _doc()
    home = _home(tmp_path, doc)
    suite, exchange, signature = home.public_keys("c")
    assert suite is Suite.P256
    assert base64.b64encode(exchange).decode() == doc["exchange"]["public"]
    assert base64.b64encode(signature).decode() == doc["signature"]["public"]
    assert home.token_of("c") == "t"


def _broken() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []

    def case(why: str, edit: Any) -> None:
        doc = _doc()
        edit(doc)
        cases.append((why, doc))

    case("an extra member", lambda d: d.update(extra=1))
    case("a missing member", lambda d: d.pop("state"))
    case("a suite tokens do not run", lambda d: d.update(suite="x25519"))
    case("another name", lambda d: d.update(name="other"))
    case("a relative module path", lambda d: d["pkcs11"].update(module="libsofthsm2.so"))
    case("an empty token label", lambda d: d["pkcs11"].update(token=""))
    case("a token label over 32 characters", lambda d: d["pkcs11"].update(token="t" * 33))
    case("a serial over 16 characters", lambda d: d["pkcs11"].update(serial="1" * 17))
    case("a control character", lambda d: d["exchange"].update(label="a\nb"))
    case("a label over 256 characters", lambda d: d["state"].update(label="l" * 257))
    case("an id of 15 bytes", lambda d: d["signature"].update(id="11" * 15))
    case("an upper-case id", lambda d: d["signature"].update(id="AB" * 16))
    case("a public key off the curve", lambda d: d["exchange"].update(public="BA" + "A" * 86))
    case("an x25519 public key", lambda d: d["exchange"].update(public=_public(Suite.X25519)[0]))
    case("a public member in the state key", lambda d: d["state"].update(public="AA=="))
    case("created as a string", lambda d: d.update(created="1765000000"))
    return cases


@pytest.mark.parametrize(("why", "doc"), _broken(), ids=[why for why, _ in _broken()])
def test_a_malformed_record_is_refused_before_any_token_is_touched(
    tmp_path: Path, why: str, doc: dict[str, Any]
) -> None:
    home = _home(tmp_path, doc)
    with pytest.raises(FormatError, match="not a valid keyblob-pkcs11-container/v1 file"):
        home.public_keys("c")
    with pytest.raises(FormatError):  # before the module is loaded or a PIN is used
        home.open("c", b"123456")


def test_a_duplicate_member_is_refused(tmp_path: Path) -> None:
    text = json.dumps(_doc())
    home = _home(
        tmp_path, text.replace('"suite": "p256"', '"suite": "p256", "suite": "p256"').encode()
    )
    with pytest.raises(FormatError):
        home.public_keys("c")


def test_without_python_pkcs11_a_token_container_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path, _doc())
    import keyblob.providers

    monkeypatch.delitem(sys.modules, "keyblob.providers.pkcs11", raising=False)
    monkeypatch.delattr(keyblob.providers, "pkcs11", raising=False)
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # import pkcs11 now raises ImportError
    for attempt in (lambda: home.open("c", b"1234"), lambda: home.public_keys("c")):
        with pytest.raises(UsageError, match=r"pip install 'keyblob\[pkcs11\]'"):
            attempt()


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_an_unsafe_container_file_is_refused_before_the_module_is_loaded(tmp_path: Path) -> None:
    from keyblob import ProviderError
    from keyblob.providers import pkcs11

    doc = _doc()
    doc["pkcs11"]["module"] = str(tmp_path / "planted.so")  # would be loaded if read
    home = _home(tmp_path, doc)
    (tmp_path / "home" / "containers" / "c" / "container.json").chmod(0o644)
    with pytest.raises(ProviderError, match="can be read or written by others"):
        home.open("c", b"1234")
    assert str(tmp_path / "planted.so") not in pkcs11._MODULES


@pytest.mark.parametrize(
    ("raised", "error", "message"),
    [
        ("PinIncorrect", "PassphraseError", "wrong PIN for PKCS#11 token 't'"),
        ("PinLocked", "PassphraseError", "the user PIN of PKCS#11 token 't' is locked"),
        ("PinExpired", "PassphraseError", "has expired"),
        ("NoSuchToken", "NotFoundError", "no PKCS#11 token labelled 't'"),
        ("DeviceRemoved", "ProviderError", "went away during login"),
        ("TokenNotPresent", "ProviderError", "went away during login"),
    ],
)
def test_every_pkcs11_failure_is_one_keyblob_error(raised: str, error: str, message: str) -> None:
    """The adapter's translation of what a module returns (SoftHSM2 2.6.1 never locks a PIN,
    so a locked PIN cannot be produced by the test token: the translation is checked on the
    exception python-pkcs11 raises for CKR_PIN_LOCKED)."""
    from pkcs11 import exceptions as p11

    import keyblob.errors
    from keyblob.providers import pkcs11

    expected = getattr(keyblob.errors, error)
    with pytest.raises(expected, match=message) as caught, pkcs11._token_errors("t", "login"):
        raise getattr(p11, raised)()
    assert str(caught.value).count("\n") == 0
    assert keyblob.errors.KeyblobError in type(caught.value).__mro__
    assert caught.value.exit_status == {"PassphraseError": 5, "NotFoundError": 4}.get(error, 1)
