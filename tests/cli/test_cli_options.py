"""Global options after the command, at any depth, and decrypt's input as an argument
(issue 12 item 2)."""

from __future__ import annotations

import json

import pytest

from keyblob.cli import main

PASS = "s3cret passphrase"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)


def test_home_and_store_after_the_command(tmp_path, capsys):
    home, store = str(tmp_path / "home"), str(tmp_path / "store")
    assert run(capsys, "init", "--home", home)[0] == 0
    assert run(capsys, "new", "payroll", "--home", home, "--store", store)[0] == 0
    status, out, _ = run(capsys, "list", "--store", store, "--home", home, "--json")
    assert status == 0 and [k["name"] for k in json.loads(out)["keys"]] == ["payroll"]
    # Not in the home's own store: --store after the command was not ignored.
    status, out, _ = run(capsys, "list", "--home", home, "--json")
    assert status == 0 and json.loads(out)["keys"] == []


def test_an_option_before_the_command_is_kept(tmp_path, capsys):
    """The subcommand's copy of an option must not overwrite the value given before."""
    home = str(tmp_path / "home")
    assert run(capsys, "--home", home, "init")[0] == 0
    assert run(capsys, "--home", home, "--debug", "new", "k")[0] == 0
    status, out, _ = run(capsys, "--home", home, "list", "--json")
    assert status == 0 and [k["name"] for k in json.loads(out)["keys"]] == ["k"]
    # Given in both places, the later one (after the command) wins.
    status, _, err = run(capsys, "--home", home, "list", "--home", str(tmp_path / "none"))
    assert status == 4 and "no container" in err


def test_passphrase_file_and_container_after_the_command(tmp_path, capsys, monkeypatch):
    home = str(tmp_path / "home")
    secret = tmp_path / "pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o600)
    assert run(capsys, "init", "--container", "work", "--home", home)[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")
    assert (
        run(capsys, "new", "payroll", "--home", home, "--container", "work",
            "--passphrase-file", str(secret))[0]
        == 0
    )  # fmt: skip
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"salaries")
    status, _, err = run(
        capsys, "encrypt", "payroll", "-i", str(plain), "-o", str(sealed),
        "--passphrase-file", str(secret), "--home", home, "--container", "work",
    )  # fmt: skip
    assert status == 0, err
    out_path = tmp_path / "back"
    status, _, err = run(
        capsys, "decrypt", str(sealed), "-o", str(out_path), "--home", home,
        "--container", "work", "--passphrase-file", str(secret),
    )  # fmt: skip
    assert status == 0, err
    assert out_path.read_bytes() == b"salaries"


def test_options_after_a_sub_subcommand(tmp_path, capsys):
    home = str(tmp_path / "home")
    missing = str(tmp_path / "missing")
    assert run(capsys, "init", "--suite", "rsa", "--bits", "2048", "--home", home)[0] == 0
    status, out, _ = run(capsys, "trust", "list", "--json", "--home", home)
    assert status == 0 and json.loads(out)
    assert run(capsys, "trust", "list", "--home", missing)[0] == 4
    assert run(capsys, "trust", "--home", missing, "list")[0] == 4
    blob = tmp_path / "exchange.blob"
    status, _, err = run(capsys, "capi", "export-public", "-o", str(blob), "--home", home)
    assert status == 0, err
    assert blob.read_bytes()[:1] == b"\x06"  # PUBLICKEYBLOB
    assert run(capsys, "capi", "export-public", "-o", str(blob), "--home", missing)[0] == 4


def test_debug_after_the_command(tmp_path, capsys):
    status, _, err = run(capsys, "show", "x", "--home", str(tmp_path / "none"), "--debug")
    assert status == 4 and "Traceback" in err


def test_decrypt_takes_the_input_as_an_argument(tmp_path, capsys):
    home = str(tmp_path / "home")
    run(capsys, "--home", home, "init")
    run(capsys, "--home", home, "new", "k")
    plain, sealed, back = tmp_path / "p", tmp_path / "s", tmp_path / "b"
    plain.write_bytes(b"data")
    assert run(capsys, "--home", home, "encrypt", "k", "-i", str(plain), "-o", str(sealed))[0] == 0
    assert run(capsys, "--home", home, "decrypt", str(sealed), "-o", str(back))[0] == 0
    assert back.read_bytes() == b"data"
    back.unlink()
    assert run(capsys, "--home", home, "decrypt", "-i", str(sealed), "-o", str(back))[0] == 0
    assert back.read_bytes() == b"data"
    back.unlink()
    status, _, err = run(
        capsys, "--home", home, "decrypt", str(sealed), "-i", str(sealed), "-o", str(back)
    )
    assert status == 2 and "not both" in err and not back.exists()
    status, _, err = run(capsys, "--home", home, "decrypt", str(tmp_path / "nope"))
    assert status == 4 and "nope" in err


def test_decrypt_argument_is_an_input_an_output_must_not_overwrite(tmp_path, capsys):
    home = str(tmp_path / "home")
    sealed = tmp_path / "s"
    sealed.write_bytes(b"x")
    status, _, err = run(capsys, "--home", home, "decrypt", str(sealed), "-o", str(sealed))
    assert status == 2 and "also an input" in err and sealed.read_bytes() == b"x"


def test_subcommand_help_lists_the_global_options(capsys):
    assert main(["list", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--passphrase-file" in out and "--home" in out and "--store" in out
    assert main(["init", "--help"]) == 0
    assert "--container" in capsys.readouterr().out
