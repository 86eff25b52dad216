"""Exit statuses and passphrases (issue 12 item 4): --debug keeps the status, no
passphrase for public operations nor before init, three tries at the prompt, warnings for
weak passphrases and readable passphrase files, usage errors before the unlock; and --help,
--version on a full disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyblob.cli import main
from support import run_in_terminal

PASS = "s3cret passphrase"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def terminal_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYBLOB_")}
    env["KEYBLOB_HOME"] = str(home)
    return env


@pytest.fixture
def home(tmp_path, capsys, monkeypatch) -> Path:
    """A home with container 'default' and key 'payroll'; KEYBLOB_PASSPHRASE unset."""
    path = tmp_path / "home"
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    assert run(capsys, "--home", str(path), "init")[0] == 0
    assert run(capsys, "--home", str(path), "new", "payroll")[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    return path


def test_debug_keeps_the_exit_status(home, tmp_path, capsys, monkeypatch):
    status, _, err = run(capsys, "--home", str(home), "--debug", "--passphrase-file",
                         str(tmp_path / "none"), "show", "payroll")  # fmt: skip
    assert status == 4 and "Traceback" in err
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "wrong passphrase")
    status, _, err = run(capsys, "--home", str(home), "--debug", "show", "payroll")
    assert status == 5 and "Traceback" in err and "PassphraseError" in err
    assert (
        err.rstrip().splitlines()[-1] == "keyblob: error: wrong passphrase for container 'default'"
    )
    status, _, err = run(capsys, "--home", str(home), "--debug", "new", "Bad/Name")
    assert status == 2


def test_no_container_is_said_before_a_passphrase_is_asked(tmp_path, capsys):
    """No passphrase anywhere, no terminal: 'no container', exit 4, not 'no passphrase'."""
    for command in (["list"], ["show", "x"], ["new", "x"], ["trust", "list"], ["pubkey"]):
        status, _, err = run(capsys, "--home", str(tmp_path / "none"), *command)
        assert status == 4, (command, err)
        assert "no container 'default'" in err and "run keyblob init" in err
        assert "passphrase" not in err


def test_inspect_needs_no_passphrase(home, tmp_path, capsys, monkeypatch):
    blob = tmp_path / "payroll.kb"
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    assert run(capsys, "--home", str(home), "export", "payroll", "-o", str(blob))[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    status, out, err = run(capsys, "--home", str(home), "inspect", str(blob))
    assert status == 0 and "signer_id" in out and "passphrase" not in err


def test_a_passphrase_from_the_environment_is_not_asked_again(home, capsys, monkeypatch):
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "wrong passphrase")
    status, _, err = run(capsys, "--home", str(home), "list")
    assert status == 5 and "try again" not in err


def test_a_wrong_passphrase_at_the_prompt_is_asked_again(home):
    env = terminal_env(home)
    status, out = run_in_terminal(["list"], ["wrong one", PASS], env)
    assert status == 0, out
    assert out.count("Passphrase for container 'default':") == 2
    assert "wrong passphrase; try again" in out and "payroll" in out
    status, out = run_in_terminal(["list"], ["one", "two", "three"], env)
    assert status == 5 and out.count("Passphrase for container") == 3
    assert "keyblob: error: wrong passphrase for container 'default'" in out


def test_a_mismatched_confirmation_at_init_asks_again(tmp_path):
    env = terminal_env(tmp_path / "h")
    status, out = run_in_terminal(
        ["init"], ["first passphrase", "second passphrase", PASS, PASS], env
    )
    assert status == 0 and "differ; try again" in out and "created container" in out
    assert PASS not in out.replace("<typed>", "")


def test_a_weak_passphrase_is_warned_about_at_init(tmp_path, capsys, monkeypatch):
    for weak in ("short", "aaaaaaaaaaaaaaaa", "Password1234", "abababababab"):
        monkeypatch.setenv("KEYBLOB_PASSPHRASE", weak)
        home = tmp_path / f"h-{weak}"
        status, _, err = run(capsys, "--home", str(home), "init")
        assert status == 0 and "keyblob: warning: weak passphrase" in err, weak
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    status, _, err = run(capsys, "--home", str(tmp_path / "strong"), "init")
    assert status == 0 and "warning" not in err
    # Only a new container's passphrase is judged: opening one never warns.
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", "short")
    status, _, err = run(capsys, "--home", str(tmp_path / "h-short"), "list")
    assert status == 0 and "warning" not in err


def test_a_passphrase_file_others_can_read_is_warned_about(home, tmp_path, capsys):
    secret = tmp_path / "pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o644)
    status, _, err = run(capsys, "--home", str(home), "--passphrase-file", str(secret), "list")
    assert status == 0
    assert f"keyblob: warning: passphrase file {secret} can be read or written by others" in err
    assert "mode 0644" in err and f"chmod 600 {secret}" in err
    secret.chmod(0o600)
    status, _, err = run(capsys, "--home", str(home), "--passphrase-file", str(secret), "list")
    assert status == 0 and "warning" not in err


def test_encrypt_to_a_terminal_is_refused_before_the_passphrase(home, tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"data")
    for argv in (["encrypt", "payroll", "-i", str(plain)],
                 ["capi", "encrypt", "payroll", "-i", str(plain)]):  # fmt: skip
        status, out = run_in_terminal(argv, [], terminal_env(home))
        assert status == 2, out
        assert "refusing to write binary ciphertext to a terminal" in out
        assert "Passphrase" not in out


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_report_a_full_disk(option):
    with open("/dev/full", "w") as full:
        run_ = subprocess.run(
            [sys.executable, "-m", "keyblob", option],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert run_.returncode == 1
    assert (
        run_.stderr == "keyblob: error: cannot write to standard output: No space left on device\n"
    )


def test_usage_errors_come_before_the_passphrase(home, tmp_path, capsys):
    """No passphrase anywhere and no terminal: each error below is the real one, not 'no
    passphrase', so it was found before one was asked."""
    status, _, err = run(capsys, "--home", str(home), "new", "Bad/Name")
    assert status == 2 and "invalid name 'Bad/Name'" in err
    missing = tmp_path / "nope" / "payroll.kb"
    status, _, err = run(capsys, "--home", str(home), "export", "payroll", "-o", str(missing))
    assert status == 1 and f"cannot write {missing}: no such folder" in err
    status, _, err = run(
        capsys, "--home", str(home), "export", "payroll", "-o", f"{tmp_path}/newdir/"
    )
    assert status == 2 and "no such folder" in err
    assert "passphrase" not in capsys.readouterr().err


def test_init_over_an_existing_container_asks_nothing(home):
    status, out = run_in_terminal(["init"], [], terminal_env(home))
    assert status == 1 and "already exists" in out and "Passphrase" not in out
