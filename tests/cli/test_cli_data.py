"""`keyblob encrypt` / `keyblob decrypt`: round trips, and failures that leave no output."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyblob import stream

PASS = "data passphrase"
CHUNK = stream.CHUNK_SIZE


@pytest.fixture
def kb(tmp_path, capsysbinary, monkeypatch, keyblob_main):
    """Runs twice: without and with the agent holding the container (conftest.py)."""
    home = tmp_path / "home"
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    monkeypatch.setenv("KEYBLOB_HOME", str(home))

    def run(*argv: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
        capsysbinary.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        status = keyblob_main(list(argv))
        out, err = capsysbinary.readouterr()
        return status, out, err.decode()

    assert run("init")[0] == 0
    assert run("new", "payroll")[0] == 0
    return run


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024 + 3])
def test_round_trip_files(kb, tmp_path, size):
    plain = os.urandom(size)
    (tmp_path / "in").write_bytes(plain)
    assert kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ct"))[0] == 0
    assert kb("decrypt", "-i", str(tmp_path / "ct"), "-o", str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out").read_bytes() == plain
    assert oct((tmp_path / "out").stat().st_mode & 0o777) == "0o600"


def test_round_trip_stdin_stdout(kb):
    status, ct, _ = kb("encrypt", "payroll", stdin=b"hello world")
    assert status == 0 and ct.startswith(b"KBDT")
    status, out, _ = kb("decrypt", stdin=ct)
    assert status == 0 and out == b"hello world"


def test_old_generation_still_decrypts(kb, tmp_path):
    (tmp_path / "in").write_bytes(b"old data")
    kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ct1"))
    kb("rotate", "payroll")
    kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ct2"))
    assert (tmp_path / "ct1").read_bytes()[7:15] == (1).to_bytes(8, "big")
    assert (tmp_path / "ct2").read_bytes()[7:15] == (2).to_bytes(8, "big")
    for ct in ("ct1", "ct2"):
        status, out, _ = kb("decrypt", "-i", str(tmp_path / ct))
        assert status == 0 and out == b"old data"


def test_failures_exit_3_and_write_nothing(kb, tmp_path):
    plain = os.urandom(3 * CHUNK + 10)
    (tmp_path / "in").write_bytes(plain)
    kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ct"))
    ct = (tmp_path / "ct").read_bytes()
    body = len(ct) - len(plain) - 4 * 16  # header + salt + commitment
    bad = {
        "truncated": ct[: body + CHUNK + 16],
        "truncated header": ct[:20],
        "flipped": ct[:-5] + bytes([ct[-5] ^ 1]) + ct[-4:],
        "trailing": ct + b"junk",
        "reordered": ct[:body]
        + ct[body + CHUNK + 16 : body + 2 * (CHUNK + 16)]
        + ct[body : body + CHUNK + 16]
        + ct[body + 2 * (CHUNK + 16) :],
    }
    for what, data in bad.items():
        (tmp_path / "bad").write_bytes(data)
        status, _, err = kb("decrypt", "-i", str(tmp_path / "bad"), "-o", str(tmp_path / "out"))
        assert status == 3, what
        assert err.startswith("keyblob: error: refused ") and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists(), what
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_a_failure_after_several_batches_leaves_no_output(kb, tmp_path):
    # Batches before the bad one were already written (on the write helper) to the temp
    # file; it must still vanish.
    batch = CHUNK * stream.BATCH
    plain = os.urandom(3 * batch + 10)
    (tmp_path / "in").write_bytes(plain)
    kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ct"))
    ct = (tmp_path / "ct").read_bytes()
    sealed_batch = batch // CHUNK * (CHUNK + 16)
    body = len(ct) - 3 * sealed_batch - (10 + 16)
    bad = {
        "flipped in the last batch": ct[:-5] + bytes([ct[-5] ^ 1]) + ct[-4:],
        "cut at a batch boundary": ct[: body + 2 * sealed_batch],
    }
    for what, data in bad.items():
        (tmp_path / "bad").write_bytes(data)
        status, _, err = kb("decrypt", "-i", str(tmp_path / "bad"), "-o", str(tmp_path / "out"))
        assert status == 3 and err.startswith("keyblob: error: refused "), what
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ct", "home", "in"], what


def test_existing_output_is_kept_on_failure(kb, tmp_path):
    (tmp_path / "out").write_bytes(b"precious")
    (tmp_path / "bad").write_bytes(b"KBDT" + b"\x01" * 40)
    status, _, _ = kb("decrypt", "-i", str(tmp_path / "bad"), "-o", str(tmp_path / "out"))
    assert status == 3 and (tmp_path / "out").read_bytes() == b"precious"


def test_an_output_that_cannot_be_written_is_a_storage_failure(kb, tmp_path):
    (tmp_path / "in").write_bytes(b"data")
    (tmp_path / "file").write_bytes(b"")
    out = tmp_path / "file" / "ct"  # below a file: ENOTDIR, whoever runs the test
    status, stdout, err = kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(out))
    assert status == 1 and stdout == b""
    assert err.strip().splitlines() == [f"keyblob: error: cannot write {out}: Not a directory"]
    assert (tmp_path / "file").read_bytes() == b""


def test_a_missing_input_fails_before_the_passphrase_is_needed(kb, tmp_path, monkeypatch):
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # and stdin is no terminal: asking would fail
    for command in (["encrypt", "payroll"], ["decrypt"]):
        status, _, err = kb(*command, "-i", str(tmp_path / "absent"), "-o", str(tmp_path / "o"))
        assert status == 4 and f"no such file: {tmp_path / 'absent'}" in err
        assert not (tmp_path / "o").exists()


def test_stdout_partial_output_still_fails(kb, tmp_path):
    batch = stream.BATCH * CHUNK  # standard output gets whole verified batches
    plain = os.urandom(batch + 2 * CHUNK + 10)
    status, ct, _ = kb("encrypt", "payroll", stdin=plain)
    status, out, err = kb("decrypt", stdin=ct[:-3])
    assert status == 3 and "truncated or modified" in err
    assert out == plain[:batch]  # the first batch verified and went out; nothing after it


def test_key_from_another_container_or_name(kb, tmp_path, monkeypatch):
    status, ct, _ = kb("encrypt", "payroll", stdin=b"x")
    kb("new", "other")
    # A header edited to name another stored key: that key does not open the payload.
    header_len = 32 + len("payroll")
    forged = ct[:31] + bytes([5]) + b"other" + ct[header_len:]
    forged = forged[:15] + b"\x00" * 16 + forged[31:]  # key id unknown
    status, _, err = kb("decrypt", stdin=forged)
    assert status == 3 and "key id" in err
    # Another home: the key does not exist there.
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "elsewhere"))
    kb("init")
    status, _, err = kb("decrypt", stdin=ct)
    assert status == 4 and "no blob payroll generation 1" in err


def test_not_ciphertext(kb):
    status, _, err = kb("decrypt", stdin=b"hello")
    assert status == 3 and "not keyblob encrypted data" in err


def test_encrypt_refuses_a_terminal(kb, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, _, err = kb("encrypt", "payroll", stdin=b"x")
    assert status == 2 and "terminal" in err


KEYBLOB = [sys.executable, "-m", "keyblob"]


@pytest.fixture
def home_env(tmp_path):
    """The environment of a keyblob process with a home holding key ``k``."""
    env = {**os.environ, "KEYBLOB_HOME": str(tmp_path / "h"), "KEYBLOB_PASSPHRASE": PASS}
    subprocess.run([*KEYBLOB, "init"], env=env, check=True, capture_output=True)
    subprocess.run([*KEYBLOB, "new", "k"], env=env, check=True, capture_output=True)
    return env


def test_progress_bar_only_on_a_terminal(tmp_path, home_env):
    big = tmp_path / "big"
    big.write_bytes(b"\x00" * (17 * 1024 * 1024))
    run = subprocess.run(
        [*KEYBLOB, "encrypt", "k", "-i", str(big), "-o", str(tmp_path / "ct")],
        env=home_env,
        capture_output=True,
        check=False,
    )
    assert run.returncode == 0 and run.stderr == b""  # stderr is a pipe: no bar


def test_progress_bar_on_a_terminal(tmp_path, home_env):
    from support import run_in_terminal

    big = tmp_path / "big"
    big.write_bytes(b"\x00" * (64 * 1024 * 1024))
    argv = ["encrypt", "k", "-i", str(big), "-o", str(tmp_path / "ct")]
    status, out = run_in_terminal(argv, [], home_env)
    assert status == 0 and "encrypt" in out and "B" in out
    status, out = run_in_terminal([*argv, "--quiet"], [], home_env)
    assert status == 0 and out == ""


def _writing_into(pid: int, folder: Path) -> bool:
    """Whether ``pid`` has a temp file open in ``folder``: a named one, or (Linux) an
    unnamed O_TMPFILE one, seen through /proc."""
    if list(folder.glob(".ct.*.tmp")):
        return True
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"{folder}/#"):
                    return True
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and FIFOs")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_mid_write_leaves_no_temp_file(tmp_path, home_env, signame):
    """kill (SIGTERM), a closed terminal (SIGHUP) and Ctrl-C all end the command through
    its cleanup: the temp file beside -o, and whatever it held, is removed."""
    import signal
    import time

    fifo = tmp_path / "in"
    os.mkfifo(fifo)
    out = tmp_path / "ct"
    child = subprocess.Popen(
        [*KEYBLOB, "encrypt", "k", "-i", str(fifo), "-o", str(out), "--quiet"],
        env=home_env,
        stderr=subprocess.PIPE,
    )
    try:
        with open(fifo, "wb") as feed:
            feed.write(bytes(4 * 1024 * 1024))  # some of it written; the rest never comes
            feed.flush()
            deadline = time.monotonic() + 20
            while not _writing_into(child.pid, tmp_path) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _writing_into(child.pid, tmp_path), "the temp file never appeared"
            for _ in range(3):  # a closing terminal sends SIGHUP more than once
                child.send_signal(getattr(signal, signame))
            child.wait(timeout=20)
    finally:
        child.kill()
        _, err = child.communicate()
    # 128 + N from keyblob; or killed by a repeated signal that came after the cleanup had
    # restored the default action (a shell shows both as 128 + N)
    assert child.returncode in (128 + getattr(signal, signame), -getattr(signal, signame))
    assert b"Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h", "in"]  # no ct, no temp file


def test_a_refused_key_is_named_as_the_key_not_the_data(kb, tmp_path, monkeypatch):
    """When the stored blob is what fails, the message says so: the data file is fine."""
    (tmp_path / "in").write_bytes(b"payroll data")
    assert kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ct"))[0] == 0
    blob = tmp_path / "home" / "blobs" / "payroll" / "1.kb"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # the signature
    blob.write_bytes(bytes(data))
    status, _, err = kb("decrypt", "-i", str(tmp_path / "ct"), "-o", str(tmp_path / "out"))
    assert status == 3
    assert f"refused {tmp_path / 'ct'}: the key it names, payroll generation 1 in " in err
    assert "signature" in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_ciphertext_to_a_terminal_by_its_path_is_refused(tmp_path, home_env):
    """-o /dev/tty (or /dev/stdout on a terminal) is a terminal too."""
    from support import run_in_terminal

    (tmp_path / "in").write_bytes(b"secret")
    for target in ("/dev/tty", "/dev/stdout"):
        status, out = run_in_terminal(
            ["encrypt", "k", "-i", str(tmp_path / "in"), "-o", target], [], home_env
        )
        assert status == 2 and "to a terminal" in out and "KBDT" not in out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_output_to_a_process_substitution(tmp_path, home_env):
    """-o /dev/fd/N (bash's >(...)) is written into, not resolved to a path that is none."""
    (tmp_path / "in").write_bytes(b"through a pipe")
    read_end, write_end = os.pipe()
    run = subprocess.run(
        [*KEYBLOB, "encrypt", "k", "-i", str(tmp_path / "in"), "-o", f"/dev/fd/{write_end}"],
        env=home_env,
        capture_output=True,
        pass_fds=(write_end,),
        check=False,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    assert run.returncode == 0, run.stderr
    assert data.startswith(b"KBDT")


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_no_passphrase_at_the_prompt_or_an_empty_one_is_a_usage_error(tmp_path, home_env):
    from support import run_in_terminal

    env = {k: v for k, v in home_env.items() if k != "KEYBLOB_PASSPHRASE"}
    status, out = run_in_terminal(["show", "k"], ["\x04"], env)  # Ctrl-D at the prompt
    assert status == 2 and "no passphrase given" in out and "Traceback" not in out
    empty = tmp_path / "empty.pw"
    empty.write_bytes(b"\n")
    run = subprocess.run(
        [*KEYBLOB, "--passphrase-file", str(empty), "show", "k"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert run.returncode == 2 and b"the passphrase is empty" in run.stderr


def test_output_to_a_folder_that_does_not_exist(kb, tmp_path):
    (tmp_path / "in").write_bytes(b"x")
    status, _, err = kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", f"{tmp_path}/new/")
    assert status == 2 and "no such folder" in err and not (tmp_path / "new").exists()
    (tmp_path / "dir").mkdir()
    status, _, err = kb(
        "encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "dir")
    )
    assert status == 2 and "is a folder: give a file name" in err
    assert list((tmp_path / "dir").iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_signals_the_caller_set_are_left_as_they_were(kb, tmp_path):
    """Under nohup SIGHUP is ignored, and a caller's own handler is the caller's: a command
    run in-process changes neither, and restores what it installed."""
    import signal

    def mine(*_a: object) -> None: ...

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, mine)
    try:
        (tmp_path / "in").write_bytes(b"x")
        assert (
            kb("encrypt", "payroll", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"))[0] == 0
        )
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
