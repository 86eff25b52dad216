"""Fixtures shared by the command-line tests.

``keyblob_main`` is how a procedure test runs ``keyblob``: every test that takes it runs
twice (issue 15), once as a user without an agent (``direct``), once with this user's agent
holding the test's containers (``agent``).  A test that cannot mean the same thing through
the agent (it is about the passphrase itself) says why with
``@pytest.mark.not_through_agent(reason=...)`` and runs only ``direct``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from keyblob.agent import client
from keyblob.agent.protocol import Kind
from keyblob.cli import main, terminal
from keyblob.cli.main import build_parser

Main = Callable[[Sequence[str | os.PathLike[str]]], int]

#: Commands after which the agent is handed the container (``keyblob unlock``): a new
#: container, and one whose keys were replaced (the agent's old keys are no longer used).
UNLOCK_AFTER = {
    ("init",),
    ("capi", "import-keypair"),
    ("keys", "rotate"),
    ("keys", "forget-old"),
}
#: Commands that keep the passphrase even with the agent: they need what the agent does
#: not offer (seal a new container or new keys under it; CryptoAPI operations with the
#: container's own RSA keys, which open it without the agent).
KEEP_SECRETS = UNLOCK_AFTER | {("capi", "import-simpleblob"), ("capi", "export-simpleblob")}
SECRETS = ("KEYBLOB_PASSPHRASE", "KEYBLOB_PIN")
REFUSED = 3  # docs/CLI.md: the exit status of a refused blob, key or file
WITHOUT_AGENT = ("(again without the agent)",)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "not_through_agent(reason): a keyblob_main test that runs without the agent only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "keyblob_main" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("not_through_agent")
    if marker is not None and not marker.kwargs.get("reason"):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: not_through_agent needs a reason")
    variants = ["direct"] if marker is not None else ["direct", "agent"]
    metafunc.parametrize("keyblob_main", variants, indirect=True)


@pytest.fixture
def kb(request, tmp_path, monkeypatch, capsys):
    """``kb(*argv) -> (status, stdout, stderr)``: ``keyblob`` run in-process on a fresh home
    under ``tmp_path``, with the passphrase the test module names as ``PASS``; through
    ``keyblob_main`` (twice: without and with the agent) if the test uses that fixture.  A
    module may define its own ``kb``, which then takes the place of this one."""
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", request.module.PASS)
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "home"))
    run_main: Main = main
    if "keyblob_main" in request.fixturenames:
        run_main = request.getfixturevalue("keyblob_main")

    def run(*argv: str | os.PathLike[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        status = run_main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _connect() -> client.Connection:
    """The test's agent (its folder is $XDG_RUNTIME_DIR/keyblob: the home does not count)."""
    conn = client.connect(Path(os.environ["XDG_RUNTIME_DIR"]))
    assert conn is not None, "the test's agent is not running"
    return conn


def _status() -> dict[str, object]:
    conn = _connect()
    try:
        status: dict[str, object] = json.loads(conn.call(Kind.STATUS, ())[0])
        return status
    finally:
        conn.close()


def _held() -> set[tuple[str, str]]:
    return {(c["home"], c["name"]) for c in _status()["containers"]}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def _module_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One agent for the module's ``agent`` tests (each test has its own homes, and the
    agent holds containers by home): the XDG_RUNTIME_DIR it listens in."""
    runtime = tmp_path_factory.mktemp("run")
    runtime.chmod(0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(runtime))
        pid, new = client.start(runtime, idle=600, life=7200)
    assert new, "an agent was already running in a fresh folder"
    yield runtime
    os.kill(pid, signal.SIGKILL)
    for _ in range(250):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # reaped by subprocess's own clean-up
            return
        time.sleep(0.02)
    raise AssertionError(f"agent {pid} did not exit")


def _parsed(argv: list[str]) -> tuple[tuple[str, ...], object] | None:
    """(the command words, the parsed arguments) of ``argv``, or None if it does not parse
    (main then says why, and runs nothing)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit:
        return None
    words = [args.command]
    for sub in (
        "agent_command",
        "capi_command",
        "keys_command",
        "label_command",
        "store_command",
        "trust_command",
    ):
        if isinstance(getattr(args, sub, None), str):
            words.append(getattr(args, sub))
    return tuple(words), args


class _Capture(io.TextIOWrapper):
    """A standard stream that keeps what is written, and is a terminal if ``like`` is."""

    def __init__(self, like: object) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
        self._like = like

    def isatty(self) -> bool:
        return bool(self._like.isatty())  # type: ignore[attr-defined]


def _captured(call: Callable[[], int]) -> tuple[int, bytes, bytes]:
    """``call()``'s status and what it wrote to standard output and error."""
    out, err = _Capture(sys.stdout), _Capture(sys.stderr)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = call()
    out.flush()
    err.flush()
    return status, out.buffer.getvalue(), err.buffer.getvalue()  # type: ignore[attr-defined]


def _pass_on(out: bytes, err: bytes) -> None:
    """Write what a command wrote where the test reads it (capsys or capsysbinary)."""
    for stream, data in ((sys.stdout, out), (sys.stderr, err)):
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()


def _rewind_stdin() -> None:
    """Standard input as the first run found it, if a test gave one that can be rewound."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if sys.stdin.seekable():
            sys.stdin.seek(0)


@contextlib.contextmanager
def _without_agent(runtime: Path) -> Iterator[None]:
    """No agent to be found (an XDG_RUNTIME_DIR with no agent folder in it)."""
    saved = os.environ["XDG_RUNTIME_DIR"]
    os.environ["XDG_RUNTIME_DIR"] = str(runtime / "no-agent")
    try:
        yield
    finally:
        os.environ["XDG_RUNTIME_DIR"] = saved


@contextlib.contextmanager
def _without_secrets() -> Iterator[None]:
    """No passphrase or PIN in the environment (as the test set it, restored after)."""
    saved = {name: os.environ.pop(name) for name in SECRETS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@pytest.fixture
def keyblob_main(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Main:
    """``keyblob_main(argv) -> status``, as ``keyblob.cli.main``.

    In the ``agent`` variant, every container a command creates is handed to the module's
    agent at once (``keyblob unlock``), and every other command runs with no passphrase or
    PIN in the environment: it can only succeed through the agent.  A command the agent
    run refuses (exit 3: a substituted, rolled-back or damaged blob) is run again without
    the agent, which must refuse it with the same status and the same bytes of output.  At
    the end, the test fails unless each container stayed held and every command that opened
    its container did so through the agent."""
    if request.param == "direct":
        return lambda argv: main([str(a) for a in argv])
    runtime: Path = request.getfixturevalue("_module_agent")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    unlocked: set[tuple[str, str]] = set()
    opened: list[tuple[tuple[str, ...], str]] = []
    command: list[tuple[str, ...]] = [()]
    real_open = terminal.Context.open

    def spy(self: terminal.Context, **options: bool) -> object:
        provider = real_open(self, **options)
        opened.append((command[0], type(provider).__name__))
        return provider

    monkeypatch.setattr(terminal.Context, "open", spy)

    def run(argv: Sequence[str | os.PathLike[str]]) -> int:
        argv = [str(a) for a in argv]
        parsed = _parsed(argv)
        if parsed is None:
            return main(argv)
        words, args = parsed
        command[0] = words
        if words in KEEP_SECRETS:
            status = main(argv)
        else:
            with _without_secrets():
                status, out, err = _captured(lambda: main(argv))
            _pass_on(out, err)
            if status == REFUSED:  # refused the same way without the agent, to the byte
                command[0] = WITHOUT_AGENT
                _rewind_stdin()
                with _without_agent(runtime):
                    again = _captured(lambda: main(argv))
                assert again == (status, out, err), (argv, again, (status, out, err))
        if status == 0 and words in UNLOCK_AFTER:
            unlocked.add(_unlock(args))
        return status

    def check() -> None:
        try:
            missing = unlocked - _held()
            assert not missing, f"the agent forgot {missing}"
            direct = [
                (w, t)
                for w, t in opened
                if w not in KEEP_SECRETS and w != WITHOUT_AGENT and t != "AgentContainer"
            ]
            assert not direct, f"commands that did not go through the agent: {direct}"
        finally:  # the next test starts with an agent that holds nothing
            conn = _connect()
            conn.call(Kind.LOCK, ())
            conn.close()

    request.addfinalizer(check)
    return run


def _unlock(args: object) -> tuple[str, str]:
    """``keyblob unlock`` of the container the command ``args`` made; it must then be held."""
    home = getattr(args, "home", None) or os.environ["KEYBLOB_HOME"]
    name = getattr(args, "container", None) or os.environ.get("KEYBLOB_CONTAINER") or "default"
    argv = ["--home", home, "--container", name, "unlock"]
    if getattr(args, "passphrase_file", None):
        argv[:0] = ["--passphrase-file", args.passphrase_file]  # type: ignore[attr-defined]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    assert status == 0, err.getvalue()
    assert f"the keyblob agent holds container {name!r}" in out.getvalue()
    key = (client.home_key(Path(home)), name)
    assert key in _held(), f"unlock did not hand {key} to the agent"
    return key
