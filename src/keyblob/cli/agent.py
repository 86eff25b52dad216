"""keyblob agent start/stop/status, unlock and lock: this user's unlock agent (docs/AGENT.md).

Every other command uses the agent on its own when it holds the command's container
(terminal.Context.open); these commands only manage it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from keyblob.cli.terminal import (
    PROG,
    Context,
    Parser,
    Subcommands,
    command,
    emit_json,
    lazy_module,
    tilde,
)
from keyblob.errors import NotFoundError, PassphraseError, UsageError

if TYPE_CHECKING:
    import json

    from keyblob.agent import client, protocol
else:  # loaded on first use: building the parser imports no socket
    json = lazy_module("json")
    client = lazy_module("keyblob.agent.client")
    protocol = lazy_module("keyblob.agent.protocol")

DEFAULT_IDLE = 600
DEFAULT_LIFE = 7200
STOP_WAIT = 5.0


def _connection(ctx: Context) -> client.Connection:
    conn = client.connect(ctx.home.path)
    if conn is None:
        raise NotFoundError("no keyblob agent is running: start one with keyblob agent start")
    return conn


def _status(conn: client.Connection) -> dict[str, object]:
    (doc,) = conn.call(protocol.Kind.STATUS, ())
    status: dict[str, object] = json.loads(doc)
    return status


def cmd_agent_start(ctx: Context) -> int:
    args = ctx.args
    for value, option in ((args.idle, "--idle"), (args.max_lifetime, "--max-lifetime")):
        if value <= 0:
            raise UsageError(f"{option} must be a positive number of seconds")
    conn = client.connect(ctx.home.path)
    if conn is not None:
        pid = _status(conn)["pid"]
        conn.close()
        print(f"a keyblob agent is already running (pid {pid})")
        return 0
    pid, new = client.start(ctx.home.path, idle=args.idle, life=args.max_lifetime)
    if not new:
        print(f"a keyblob agent is already running (pid {pid})")
        return 0
    folder = protocol.socket_folder(ctx.home.path)
    print(f"keyblob agent started (pid {pid}), socket {tilde(folder / protocol.SOCKET_NAME)}")
    print(
        f"  it forgets a container {args.idle} s after its last use, and "
        f"{args.max_lifetime} s after it was unlocked; keyblob lock forgets them all now"
    )
    return 0


def cmd_agent_serve(ctx: Context) -> int:
    """The agent in the foreground (what agent start runs detached, and systemd runs)."""
    from keyblob.agent import server  # noqa: PLC0415

    folder = protocol.socket_folder(ctx.home.path)
    return server.main(
        [
            "--folder",
            str(folder),
            "--idle",
            str(ctx.args.idle),
            "--life",
            str(ctx.args.max_lifetime),
        ]
    )


def cmd_agent_stop(ctx: Context) -> int:
    conn = client.connect(ctx.home.path)
    if conn is None:
        print("no keyblob agent is running")
        return 0
    pid = _status(conn)["pid"]
    conn.call(protocol.Kind.STOP, ())
    conn.close()
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline and client.connect(ctx.home.path) is not None:
        time.sleep(0.05)
    print(f"keyblob agent stopped (pid {pid}); it forgot every container")
    return 0


def cmd_agent_status(ctx: Context) -> int:
    conn = _connection(ctx)
    status = _status(conn)
    conn.close()
    if ctx.args.json:
        emit_json(status)
        return 0
    held = status["containers"]
    assert isinstance(held, list)
    print(
        f"keyblob agent pid {status['pid']}: idle timeout {status['idle_timeout']} s, "
        f"maximum lifetime {status['max_lifetime']} s"
    )
    if not held:
        print("  holds no container (keyblob unlock hands it one)")
    for h in held:
        print(
            f"  {h['name']}  ({h['suite']})  in {tilde(h['home'])}: forgotten in "
            f"{min(h['idle_seconds_left'], h['life_seconds_left'])} s unless used "
            f"(at most {h['life_seconds_left']} s)"
        )
    return 0


def cmd_unlock(ctx: Context) -> int:
    args = ctx.args
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    name = ctx.container_name
    ctx.home.require(name)
    token = ctx.home.token_of(name)
    conn = client.connect(ctx.home.path)
    if conn is None:
        client.start(ctx.home.path, idle=DEFAULT_IDLE, life=DEFAULT_LIFE)
        conn = _connection(ctx)
    try:
        for attempt in range(1, 4):
            secret, retry = ctx.unlock_secret(name, token)
            try:
                client.unlock(conn, ctx.home.path, name, secret, args.ttl or 0)
                break
            except PassphraseError:
                if not retry or attempt == 3:
                    raise
                print(f"{PROG}: wrong passphrase; try again")
    finally:
        conn.close()
    ttl = f" for at most {args.ttl} s" if args.ttl else ""
    print(f"the keyblob agent holds container {name!r}{ttl}; keyblob lock forgets it")
    return 0


def cmd_lock(ctx: Context) -> int:
    conn = client.connect(ctx.home.path)
    if conn is None:
        print("no keyblob agent is running: nothing to forget")
        return 0
    conn.call(protocol.Kind.LOCK, ())
    conn.close()
    print("the keyblob agent forgot every container")
    return 0


def register(sub: Subcommands) -> None:
    """agent start/stop/status, unlock, lock."""
    agent = sub.add_parser(
        "agent", help="this user's unlock agent", description="this user's unlock agent"
    )
    asub = agent.add_subparsers(
        dest="agent_command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    for name, func, text in (
        ("start", cmd_agent_start, "start the agent (one per user)"),
        ("serve", cmd_agent_serve, "run the agent in the foreground (systemd runs this)"),
    ):
        sp = command(asub, name, func, text)
        sp.add_argument(
            "--idle",
            type=int,
            default=DEFAULT_IDLE,
            metavar="S",
            help=f"forget a container S seconds after its last use (default {DEFAULT_IDLE})",
        )
        sp.add_argument(
            "--max-lifetime",
            type=int,
            default=DEFAULT_LIFE,
            metavar="S",
            help=f"forget a container S seconds after it was unlocked (default {DEFAULT_LIFE})",
        )
    command(asub, "stop", cmd_agent_stop, "stop the agent; it forgets every container")
    sp = command(asub, "status", cmd_agent_status, "the agent and the containers it holds")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/AGENT.md)")
    sp = command(sub, "unlock", cmd_unlock, "hand the container, unlocked, to the agent")
    sp.add_argument(
        "--ttl",
        type=int,
        metavar="S",
        help="forget it after S seconds at most (default: the agent's maximum lifetime)",
    )
    command(sub, "lock", cmd_lock, "make the agent forget every container now")
