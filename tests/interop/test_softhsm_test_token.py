"""tools/softhsm-test-token, the throwaway SoftHSM2 token .ci/run gives the PKCS#11 tests: the
environment it prints names a token that its user PIN (and no other) logs in to; ``stop``
removes everything, is safe twice, and touches no folder it did not make.  Checked from
another process (pkcs11-tool), so that this process's one PKCS#11 library stays untouched."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from support import skip_or_fail

TOOL = Path(__file__).resolve().parents[2] / "tools" / "softhsm-test-token"


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOOL), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _login(env: dict[str, str], pin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            env["KEYBLOB_TEST_PKCS11_MODULE"],
            "--token-label",
            env["KEYBLOB_TEST_PKCS11_TOKEN"],
            "--login",
            "--pin",
            pin,
            "--list-objects",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SOFTHSM2_CONF": env["SOFTHSM2_CONF"]},
    )


def test_start_prints_a_token_the_pin_opens_and_stop_removes_it(tmp_path: Path) -> None:
    if shutil.which("softhsm2-util") is None or shutil.which("pkcs11-tool") is None:
        skip_or_fail("softhsm2-util or pkcs11-tool is missing: Debian's softhsm2 and opensc")
    folder = tmp_path / "token"
    started = _tool("start", str(folder))
    try:
        assert started.returncode == 0, started.stderr
        env: dict[str, str] = {}
        for line in started.stdout.splitlines():
            export, assignment = shlex.split(line)
            assert export == "export"
            name, _, value = assignment.partition("=")
            env[name] = value
        assert set(env) == {
            "SOFTHSM2_CONF",
            "KEYBLOB_TEST_PKCS11_MODULE",
            "KEYBLOB_TEST_PKCS11_TOKEN",
            "KEYBLOB_TEST_PKCS11_PIN",
            "KEYBLOB_TEST_PKCS11_SO_PIN",
        }
        assert Path(env["SOFTHSM2_CONF"]).parent == folder
        assert env["KEYBLOB_TEST_PKCS11_PIN"] != env["KEYBLOB_TEST_PKCS11_SO_PIN"]
        assert _login(env, env["KEYBLOB_TEST_PKCS11_PIN"]).returncode == 0
        wrong = _login(env, env["KEYBLOB_TEST_PKCS11_PIN"] + "0")
        assert wrong.returncode != 0 and "CKR_PIN_INCORRECT" in wrong.stderr, wrong.stderr
        assert _tool("start", str(folder)).returncode != 0  # not empty: refused
    finally:
        assert _tool("stop", str(folder)).returncode == 0
    assert not folder.exists()
    assert _tool("stop", str(folder)).returncode == 0  # twice is fine


def test_stop_touches_no_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    stopped = _tool("stop", str(tmp_path))
    assert stopped.returncode != 0 and "not touching it" in stopped.stderr
    assert (tmp_path / "keep").read_text() == "mine"
