"""The unlock agent (issue 15, docs/AGENT.md): unlock once, then commands need no passphrase;
lifetimes (idle, maximum, --ttl), lock, stop; a killed agent and its stale socket; two starts
at once; the folder and peer checks; the process's hardening."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import support
from keyblob import Home, Suite, blobs
from keyblob.agent import client, protocol
from keyblob.agent.protocol import Kind
from keyblob.cli import main
from keyblob.storage.directory import DirectoryStore
from support import FAST_KDF, PASSPHRASE

PASS = PASSPHRASE.decode()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with container 'default' (fast KDF); no passphrase in the environment."""
    path = tmp_path / "home"
    container = Home(path).create("default", PASSPHRASE, kdf=FAST_KDF)
    blobs.generate(container, DirectoryStore(tmp_path / "store"), "payroll")
    monkeypatch.setenv("KEYBLOB_HOME", str(path))
    monkeypatch.setenv("KEYBLOB_STORE", str(tmp_path / "store"))
    (tmp_path / "run").mkdir(mode=0o700)
    return path


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def kb(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str, passphrase: str | None = None) -> tuple[int, str, str]:
        if passphrase is not None:
            os.environ["KEYBLOB_PASSPHRASE"] = passphrase
        try:
            capsys.readouterr()
            status = main(list(argv))
            out, err = capsys.readouterr()
        finally:
            os.environ.pop("KEYBLOB_PASSPHRASE", None)
        return status, out, err

    return run


def _stop(home: Path) -> None:
    conn = client.connect(home)
    if conn is None:
        return
    pid = json.loads(conn.call(Kind.STATUS, ())[0])["pid"]
    conn.close()
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)


def _wait_gone(pid: int) -> None:
    """Wait until process ``pid`` is gone (reaped, if it is this process's child)."""
    for _ in range(250):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: gone once kill(0) fails
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.02)
    raise AssertionError(f"agent {pid} did not exit")


@pytest.fixture
def agent(home: Path) -> Iterator[Callable[..., int]]:
    """start(idle=..., life=...) -> pid; every agent started is killed at the end."""
    started: list[int] = []

    def start(idle: int = 600, life: int = 7200) -> int:
        pid, new = client.start(home, idle=idle, life=life)
        assert new
        started.append(pid)
        return pid

    yield start
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        _wait_gone(pid)


def _status(home: Path) -> dict[str, object]:
    conn = client.connect(home)
    assert conn is not None
    try:
        return json.loads(conn.call(Kind.STATUS, ())[0])  # type: ignore[no-any-return]
    finally:
        conn.close()


def _held(home: Path) -> list[str]:
    return [c["name"] for c in _status(home)["containers"]]  # type: ignore[attr-defined, index]


def test_unlock_once_then_no_passphrase(kb: Run, home: Path, agent: Callable[..., int]) -> None:
    agent()
    assert kb("rotate", "payroll")[0] == 2  # no passphrase, no agent holding it: refused
    status, out, err = kb("unlock", passphrase=PASS)
    assert status == 0, err
    assert "holds container 'default'" in out
    assert _held(home) == ["default"]
    for argv in (("new", "other"), ("rotate", "payroll"), ("show", "payroll"), ("list",)):
        status, out, err = kb(*argv)
        assert status == 0, err
    status, out, _ = kb("agent", "status", "--json")
    assert json.loads(out)["containers"][0]["suite"] == "x25519"
    assert kb("lock")[0] == 0
    assert _held(home) == []
    status, _, err = kb("show", "payroll")
    assert status == 2 and "no passphrase" in err


def test_unlock_starts_an_agent_and_a_wrong_passphrase_holds_nothing(kb: Run, home: Path) -> None:
    status, _, err = kb("unlock", passphrase="wrong")
    assert status == 5 and "wrong passphrase" in err
    pid = _status(home)["pid"]  # unlock started it: killed below
    try:
        assert _held(home) == []
        assert kb("unlock", passphrase=PASS)[0] == 0
        assert _held(home) == ["default"]
    finally:
        os.kill(int(pid), signal.SIGKILL)  # type: ignore[call-overload]
        _wait_gone(int(pid))  # type: ignore[call-overload]


def test_idle_timeout_forgets_and_use_resets_it(
    kb: Run, home: Path, agent: Callable[..., int]
) -> None:
    agent(idle=3)
    assert kb("unlock", passphrase=PASS)[0] == 0
    start = time.monotonic()
    while time.monotonic() - start < 5:  # used every second: kept past its 3 s idle timeout
        time.sleep(1)  # (a loaded machine may take a second per command: 2 s of margin)
        assert kb("list")[0] == 0
    time.sleep(4.5)
    assert _held(home) == []
    assert kb("list")[0] == 2  # falls back to the normal unlock, which has no passphrase


def test_maximum_lifetime_and_ttl(kb: Run, home: Path, agent: Callable[..., int]) -> None:
    agent(idle=600, life=3)
    assert kb("unlock", passphrase=PASS)[0] == 0
    deadline = time.monotonic() + 6
    while _held(home) and time.monotonic() < deadline:
        assert kb("list")[0] in (0, 2)  # use does not extend the maximum lifetime
        time.sleep(0.5)
    assert _held(home) == []
    assert time.monotonic() < deadline
    status, _, err = kb("unlock", "--ttl", "1", passphrase=PASS)
    assert status == 0, err
    time.sleep(2.5)
    assert _held(home) == []


def test_stop_and_a_killed_agent_fall_back_cleanly(
    kb: Run, home: Path, agent: Callable[..., int], tmp_path: Path
) -> None:
    pid = agent()
    assert kb("unlock", passphrase=PASS)[0] == 0
    status, out, _ = kb("agent", "stop")
    assert status == 0 and f"pid {pid}" in out
    assert not (tmp_path / "run" / "keyblob" / "agent.sock").exists()
    assert kb("agent", "status")[0] == 4
    assert kb("list", passphrase=PASS)[0] == 0  # unlocks as usual
    pid = agent()
    assert kb("unlock", passphrase=PASS)[0] == 0
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert (tmp_path / "run" / "keyblob" / "agent.sock").exists()  # stale
    status, _, err = kb("list", passphrase=PASS)
    assert status == 0, err  # a stale socket: the normal unlock, no error
    assert kb("list")[0] == 2
    new = agent()  # replaces the stale socket
    assert new != pid and _status(home)["pid"] == new


def test_two_starts_at_once_give_one_agent(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "KEYBLOB_HOME": str(home)}
    command = [sys.executable, "-m", "keyblob", "agent", "start"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [r.communicate(timeout=30)[0] for r in runs]
    try:
        assert [r.returncode for r in runs] == [0, 0], outs
        pid = _status(home)["pid"]
        assert any(f"started (pid {pid})" in o for o in outs)
        assert any("already running" in o for o in outs), outs
        lock = (tmp_path / "run" / "keyblob" / "agent.lock").read_text().strip()
        assert lock == str(pid)
    finally:
        _stop(home)


def test_a_loose_or_foreign_folder_is_refused(
    kb: Run, home: Path, agent: Callable[..., int], tmp_path: Path
) -> None:
    agent()
    folder = tmp_path / "run" / "keyblob"
    folder.chmod(0o755)
    try:
        status, _, err = kb("list", passphrase=PASS)
        assert status == 1 and "others can use it" in err and "chmod 700" in err
        assert kb("unlock", passphrase=PASS)[0] == 1
    finally:
        folder.chmod(0o700)
    if os.geteuid() != 0:
        support.skip_or_fail("a folder of another owner was not tested: needs root to chown")
    os.chown(folder, 65534, 65534)
    try:
        status, _, err = kb("list", passphrase=PASS)
        assert status == 1 and "owned by another user" in err
    finally:
        os.chown(folder, 0, 0)


def test_another_uid_cannot_use_the_agent(
    kb: Run, home: Path, agent: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the folder and socket opened to everyone, a process of another uid reaches the
    socket, and the agent still answers it nothing (SO_PEERCRED)."""
    if os.geteuid() != 0:
        support.skip_or_fail("another uid was not tested: needs root to switch uid")
    import tempfile

    run = Path(tempfile.mkdtemp(prefix="kb-run-"))  # /tmp/...: reachable by any uid
    run.chmod(0o711)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    agent()
    assert kb("unlock", passphrase=PASS)[0] == 0
    folder = run / "keyblob"
    folder.chmod(0o711)
    (folder / "agent.sock").chmod(0o666)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        verdict = b"?"
        try:
            os.setgid(65534)
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(str(folder / "agent.sock"))
            sock.sendall(
                protocol.encode(protocol.VERSION, Kind.PUBLIC, (str(home).encode(), b"default"))
            )
            verdict = b"closed" if sock.recv(1) == b"" else b"ANSWERED"
        except (ConnectionResetError, BrokenPipeError):  # closed before reading what was sent
            verdict = b"closed"
        except OSError as e:
            verdict = f"error {e}".encode()
        os.write(write, verdict)
        os._exit(0)
    os.close(write)
    verdict = os.read(read, 200)
    os.close(read)
    os.waitpid(child, 0)
    folder.chmod(0o700)
    assert verdict == b"closed", verdict
    assert _held(home) == ["default"]  # the agent goes on serving its own user


def test_the_agent_process_is_hardened(home: Path, agent: Callable[..., int]) -> None:
    pid = agent()
    status = _status(home)
    assert status["hardening"]["core"] is True  # type: ignore[index]
    assert status["hardening"]["dumpable"] is True  # type: ignore[index]
    limits = Path(f"/proc/{pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]
    if os.geteuid() != 0:  # a process that is not dumpable has its /proc files owned by root
        assert os.stat(f"/proc/{pid}/mem").st_uid == 0


def test_a_container_made_again_is_not_used_through_the_agent(
    kb: Run, home: Path, agent: Callable[..., int]
) -> None:
    agent()
    assert kb("unlock", passphrase=PASS)[0] == 0
    import shutil

    shutil.rmtree(home / "containers" / "default")
    Home(home).create("default", b"another passphrase", kdf=FAST_KDF)
    status, _, err = kb("label")
    assert status == 2 and "no passphrase" in err  # the held keys are not this container's
    assert kb("label", passphrase="another passphrase")[0] == 0


def test_concurrent_commands_share_the_agent(
    kb: Run, home: Path, agent: Callable[..., int]
) -> None:
    agent()
    assert kb("unlock", passphrase=PASS)[0] == 0
    env = {k: v for k, v in os.environ.items() if k != "KEYBLOB_PASSPHRASE"}
    command = [sys.executable, "-m", "keyblob"]
    runs = [
        subprocess.Popen([*command, "new", f"k{i}"], env=env, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    errs = [r.communicate(timeout=60)[1] for r in runs]
    assert [r.returncode for r in runs] == [0] * 4, errs
    assert kb("list")[0] == 0


def test_cryptoapi_on_the_containers_own_keys_unlocks_in_the_command(
    kb: Run, tmp_path: Path, agent: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rsa container held by the agent: stored keys work through it (capi decrypt), and
    the operations on its own RSA keys (import-keypair, import-simpleblob) unlock in the
    command, asking for the passphrase, rather than fail halfway."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyblob import mscapi

    home = tmp_path / "rsa-home"
    Home(home).create("default", PASSPHRASE, Suite.RSA, bits=2048, kdf=FAST_KDF)
    monkeypatch.setenv("KEYBLOB_HOME", str(home))
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    exchange, signer = (rsa.generate_private_key(65537, 2048) for _ in "ab")
    session = mscapi.CapiKey.new(mscapi.AlgId.AES_256, os.urandom(32))
    blob = mscapi.build_simpleblob(session, exchange.public_key())
    files = {
        "priv": mscapi.PrivateKeyBlob.from_private_key(exchange).to_bytes(),
        "signer": mscapi.PublicKeyBlob.from_public_key(
            signer.public_key(), alg_id=mscapi.AlgId.RSA_SIGN
        ).to_bytes(),
        "sb": blob,
        "sig": mscapi.sign_hash(signer, blob),
        "ct": mscapi.encrypt(session, b"salaries" * 10),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    agent()
    assert kb("unlock", passphrase=PASS)[0] == 0
    status, _, err = kb("capi", "import-keypair", str(tmp_path / "priv"))
    assert status == 2 and "no passphrase" in err  # its own keys: not through the agent
    assert kb("capi", "import-keypair", str(tmp_path / "priv"), passphrase=PASS)[0] == 0
    # The agent holds the container as it was unlocked: the new exchange key is not its.
    assert kb("unlock", passphrase=PASS)[0] == 0
    status, out, err = kb(
        "capi", "import-simpleblob", str(tmp_path / "sb"), "--name", "winpay",
        "--signature", str(tmp_path / "sig"), "--signer", str(tmp_path / "signer"),
        passphrase=PASS,
    )  # fmt: skip
    assert status == 0, err
    status, out, err = kb("capi", "decrypt", "winpay", "-i", str(tmp_path / "ct"))
    assert (status, out) == (0, "salaries" * 10), err  # through the agent, no passphrase


def test_socket_activation_takes_the_socket_systemd_passes(
    kb: Run, home: Path, tmp_path: Path
) -> None:
    """As systemd's keyblob-agent.socket does: the socket is made and listening before the
    agent runs, passed as descriptor 3 with LISTEN_PID and LISTEN_FDS; the agent serves it,
    and leaves the socket file (systemd's) in place when it stops."""
    folder = tmp_path / "run" / "keyblob"
    folder.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with protocol.short_path(folder, protocol.SOCKET_NAME) as path:
        listener.bind(path)
    listener.listen(4)
    wrapper = (
        "import os, sys\n"
        "os.dup2(int(os.environ.pop('PASSED_FD')), 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'keyblob', 'agent', 'serve'])\n"
    )
    env = {**os.environ, "PASSED_FD": str(listener.fileno())}
    process = subprocess.Popen(
        [sys.executable, "-c", wrapper],
        env=env,
        pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE,
        text=True,
    )
    listener.close()
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"ready {process.pid}")
        assert kb("unlock", passphrase=PASS)[0] == 0
        assert kb("show", "payroll")[0] == 0
        assert kb("agent", "stop")[0] == 0
        assert process.wait(timeout=10) == 0
        assert (folder / protocol.SOCKET_NAME).exists()  # systemd's socket stays
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_token_container_through_the_agent(
    kb: Run,
    tmp_path: Path,
    agent: Callable[..., int],
    softhsm_token: support.SoftHSMToken,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PIN is asked once, by unlock; the agent logs in to the token and holds the
    session; commands need no PIN; lock closes the session."""
    home = tmp_path / "token-home"
    container = Home(home).create_token(
        "default",
        softhsm_token.pin.encode(),
        module=softhsm_token.module,
        token=softhsm_token.label,
    )
    container.close()  # this process's login ends: the agent logs in on its own
    monkeypatch.setenv("KEYBLOB_HOME", str(home))
    try:
        agent()
        status, _, err = kb("unlock")
        assert status == 2 and "no PIN" in err
        monkeypatch.setenv("KEYBLOB_PIN", softhsm_token.pin)
        assert kb("unlock")[0] == 0
        monkeypatch.delenv("KEYBLOB_PIN")
        for argv in (("new", "tok"), ("rotate", "tok"), ("show", "tok"), ("label", "set", "T")):
            status, _, err = kb(*argv)
            assert status == 0, err
        # Commands at once: the agent runs one operation at a time on the token's session.
        env = {k: v for k, v in os.environ.items() if k != "KEYBLOB_PIN"}
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "keyblob", "new", f"tok{i}"],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(6)
        ]
        errs = [r.communicate(timeout=120)[1] for r in runs]
        assert [r.returncode for r in runs] == [0] * 6, errs
        assert _status(home)["containers"][0]["suite"] == "p256"  # type: ignore[index]
        assert kb("lock")[0] == 0
        status, _, err = kb("show", "tok")
        assert status == 2 and "no PIN" in err
    finally:
        monkeypatch.setenv("KEYBLOB_PIN", softhsm_token.pin)
        support.close_token_container(Home(home).open("default", softhsm_token.pin.encode()))
