"""Inputs and outputs that once ended a command in a traceback (issue 11 item 8): each now
ends in one error line and a documented exit status, or simply works."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyblob import Home, blobs
from keyblob.cli import main
from keyblob.cli.terminal import iso as _iso
from keyblob.format import PublicKeyFile, armor, dearmor
from keyblob.format.armor import BLOB, PUBLIC_KEY
from keyblob.storage.directory import DirectoryStore

PASS = "s3cret passphrase"
RSA_OID = bytes.fromhex("06092a864886f70d010101")  # rsaEncryption, as DER
UNKNOWN_OID = bytes.fromhex("06092a864886f70d01017f")  # 1.2.840.113549.1.1.127: no algorithm


class Shell:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main(["--home", str(self.home), *argv])
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def kb(tmp_path, capsys, monkeypatch) -> Shell:
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    return Shell(tmp_path / "home", capsys)


def _env(**extra: str) -> dict[str, str]:
    """Standard output as a UTF-8 locale such as en_US.UTF-8 gives it: strict UTF-8."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONUTF8", "PYTHONIOENCODING") and not k.startswith(("LC_", "KEYBLOB_"))
    }
    env.update(LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8:strict", KEYBLOB_PASSPHRASE=PASS)
    return {**env, **extra}


def _keyblob(*argv: str, env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "keyblob", *argv], env=env, check=False, **kw
    )


# -- a public key file whose RSA key has an algorithm OID nobody knows ------------------


def test_rsa_public_key_with_unknown_algorithm_is_refused(kb, tmp_path):
    kb("init", "--suite", "rsa", "--bits", "2048")
    pub_path = tmp_path / "me.pub"
    assert kb("pubkey", "-o", str(pub_path))[0] == 0
    pub = PublicKeyFile.from_bytes(dearmor(pub_path.read_bytes(), PUBLIC_KEY))
    assert pub.exchange.count(RSA_OID) == 1 and pub.signature.count(RSA_OID) == 1
    for which in ("exchange", "signature"):
        keys = {"exchange": pub.exchange, "signature": pub.signature}
        keys[which] = keys[which].replace(RSA_OID, UNKNOWN_OID)
        odd = PublicKeyFile(pub.suite, "odd", keys["exchange"], keys["signature"])
        path = tmp_path / f"odd-{which}.pub"
        path.write_bytes(armor(odd.to_bytes(), PUBLIC_KEY))
        for argv in (("trust", "add", str(path)), ("new", f"k-{which}", "--to", str(path))):
            status, _, err = kb(*argv)
            assert status == 3, (argv, err)
            assert err == (
                f"keyblob: error: {path}: not a keyblob public key file ({which} public key "
                "is not an RSA key (unknown algorithm))\n"
            )
    assert not (kb.home / "blobs").exists()  # nothing was stored


# -- paths that are not UTF-8 --------------------------------------------------------------


def test_paths_that_are_not_utf8(tmp_path):
    """Undecodable bytes in the home, the store and file names: every command works and
    shows them as \\xNN; ``new`` once crashed after storing its key, printing the store."""
    home = Path(os.fsdecode(bytes(tmp_path) + b"/home-\xff"))
    store = os.fsdecode(bytes(tmp_path) + b"/store-\xfe")
    blob = os.fsdecode(bytes(tmp_path) + b"/k-\xfd.kb")
    env = _env(KEYBLOB_HOME=str(home))
    shown_home = os.fsencode(str(home)).decode("utf-8", "backslashreplace")
    run = _keyblob("init", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().startswith('created container "default"')
    assert f"in {shown_home}\n".encode() in run.stdout
    for argv in (("new", "k"), ("--store", store, "new", "j")):
        run = _keyblob(*argv, env=env)
        assert run.returncode == 0 and run.stderr == b"", run.stderr
        assert b"\\xff" in run.stdout or b"\\xfe" in run.stdout
    run = _keyblob("show", "k", env=env)
    assert run.returncode == 0, run.stderr
    assert f"stored in    {shown_home}/blobs\n".encode() in run.stdout
    run = _keyblob("--store", store, "list", env=env)
    assert run.returncode == 0 and run.stdout.startswith(b"NAME"), run.stderr
    run = _keyblob("export", "k", "-o", blob, env=env)
    assert run.returncode == 0 and b"to " + bytes(tmp_path) in run.stderr
    assert b"k-\\xfd.kb" in run.stderr
    run = _keyblob("verify", blob, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(os.fsencode(str(tmp_path)) + b"/k-\\xfd.kb: valid: k generation")
    run = _keyblob("verify", blob + "-missing", env=env)
    assert run.returncode == 4
    assert run.stderr.endswith(b"/k-\\xfd.kb-missing\n") and b"Traceback" not in run.stderr


# -- write errors on standard output ------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path) -> tuple[dict[str, str], Path]:
    """A home with key k, and a ciphertext under it."""
    env = _env(KEYBLOB_HOME=str(tmp_path / "home"))
    for argv in (("init",), ("new", "k")):
        assert _keyblob(*argv, env=env).returncode == 0
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"x" * 100_000)
    assert _keyblob("encrypt", "k", "-i", str(plain), "-o", str(sealed), env=env).returncode == 0
    return env, tmp_path


def _commands(folder: Path) -> list[tuple[str, ...]]:
    return [
        ("decrypt", "-i", str(folder / "sealed")),
        ("encrypt", "k", "-i", str(folder / "plain")),
        ("list",),
        ("export", "k", "-o", "-"),
        ("pubkey",),
        ("show", "k", "--json"),
    ]


def test_a_full_standard_output_is_one_error_line(cli_home):
    env, folder = cli_home
    for argv in _commands(folder):
        with open("/dev/full", "wb") as full:
            run = _keyblob(*argv, env=env, stdout=full)
        assert (run.returncode, run.stderr) == (
            1,
            b"keyblob: error: cannot write to standard output: No space left on device\n",
        ), argv


def test_a_closed_pipe_ends_quietly_with_141(cli_home):
    """The reader went away (``| head``): no message, the status a shell shows for age or
    cat ended by SIGPIPE."""
    env, folder = cli_home
    for argv in _commands(folder):
        read, write = os.pipe()
        os.close(read)
        try:
            run = _keyblob(*argv, env=env, stdout=write)
        finally:
            os.close(write)
        assert (run.returncode, run.stderr) == (141, b""), argv


class _FailingRaw(io.RawIOBase):
    """A standard output whose device fails every write with EIO."""

    def writable(self) -> bool:
        return True

    def write(self, _data: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_an_io_error_on_standard_output_is_one_error_line(kb, tmp_path, monkeypatch):
    kb("init")
    kb("new", "k")
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"data" * 10_000)
    assert kb("encrypt", "k", "-i", str(plain), "-o", str(sealed))[0] == 0
    for argv in (
        ("decrypt", "-i", str(sealed)),
        ("encrypt", "k", "-i", str(plain)),
        ("list",),
        ("export", "k", "-o", "-"),
        ("pubkey",),
    ):
        failing = io.TextIOWrapper(io.BufferedWriter(_FailingRaw()), encoding="utf-8")
        monkeypatch.setattr(sys, "stdout", failing)
        status, _, err = kb(*argv)
        assert (status, err) == (
            1,
            "keyblob: error: cannot write to standard output: Input/output error\n",
        ), argv
        assert sys.stdout is failing  # given back as it was


# -- a blob signed as created after the year 9999 -------------------------------------------


def test_created_after_year_9999(kb, tmp_path, monkeypatch):
    """FORMAT.md 2.2.7 allows ``created`` up to 2^63-1: once imported, such a blob must
    not end list and show (for every key of the container) in a traceback."""
    kb("init")
    kb("new", "today")
    container = Home(kb.home).open("default", PASS.encode())
    far = 2**63 - 1
    monkeypatch.setattr(blobs, "_now", lambda: far)
    blobs.generate(container, DirectoryStore(tmp_path / "elsewhere"), "future")
    path = tmp_path / "future.kb"
    path.write_bytes((tmp_path / "elsewhere" / "future" / "1.kb").read_bytes())
    assert kb("import", str(path))[0] == 0
    status, out, err = kb("list")
    assert status == 0, err
    assert "+292277026596-12-04T15:30:07Z" in out and "today" in out
    status, out, _ = kb("show", "future")
    assert status == 0 and "created      +292277026596-12-04T15:30:07Z\n" in out
    doc = json.loads(kb("show", "future", "--json")[1])
    assert (doc["created"], doc["created_unix"]) == ("+292277026596-12-04T15:30:07Z", far)
    status, out, _ = kb("verify", str(path), "--json")
    assert status == 0 and json.loads(out)["created_unix"] == far
    path.write_bytes(armor(path.read_bytes(), BLOB))
    assert kb("inspect", str(path))[0] == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_700_000_000, "2023-11-14T22:13:20Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
        (253_402_300_800, "+10000-01-01T00:00:00Z"),
        (951_782_400 + 146097 * 86400, "2400-02-29T00:00:00Z"),
    ],
)
def test_iso_dates_any_year(seconds, text):
    assert _iso(seconds) == text


def test_a_closed_standard_output_or_error(cli_home):
    """Started with descriptor 1 or 2 closed, Python has no sys.stdout or sys.stderr:
    print() skips them, and so does keyblob."""
    env, _ = cli_home
    for fd in (1, 2):
        run = _keyblob("list", env=env, preexec_fn=lambda fd=fd: os.close(fd))
        assert run.returncode == 0, (fd, run.stderr)
        assert b"Traceback" not in run.stderr + run.stdout
