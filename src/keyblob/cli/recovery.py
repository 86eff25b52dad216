"""keyblob recovery add/list/remove and keyblob recover: the container's recovery
recipients (every new blob is wrapped for them as well), and getting every key of a lost
container back onto a new one (docs/RECOVERY.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keyblob.cli.keys import shown_label
from keyblob.cli.names import checked_name
from keyblob.cli.terminal import (
    Context,
    Parser,
    Subcommands,
    _given_secret,
    _not_empty,
    _prompt,
    _warn_if_weak,
    command,
    emit_json,
    iso,
    lazy_module,
    print_note,
    print_warning,
    progress_bar,
    prompt_twice,
    read_file,
    read_public_key_file,
    refusing,
    tilde,
)
from keyblob.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    import pathlib

    from keyblob import blobs, keys, trust
    from keyblob.format import pubkey
    from keyblob.keys import Suite
    from keyblob.providers import recoverykit, software, suites
    from keyblob.providers.base import Provider
    from keyblob.trust import RecoveryRecipient, State
else:
    pathlib = lazy_module("pathlib")
    blobs = lazy_module("keyblob.blobs")
    keys = lazy_module("keyblob.keys")
    trust = lazy_module("keyblob.trust")
    pubkey = lazy_module("keyblob.format.pubkey")
    recoverykit = lazy_module("keyblob.providers.recoverykit")
    software = lazy_module("keyblob.providers.software")
    suites = lazy_module("keyblob.providers.suites")

NOT_REWRITTEN = "blobs stored before now are not wrapped for it: to add it to them, run {how}"
REWRAP = "keyblob rewrap --all"
KIT_KEEP = (
    "keep a copy of the kit away from this machine (a USB key in a safe, a printout); it "
    "opens nothing without its passphrase, so it may also sit beside the store"
)


def _kit_passphrase(ctx: Context, *, new: bool) -> bytes:
    """The recovery passphrase: the first line of --recovery-passphrase-file, else a
    no-echo prompt (a new one typed twice)."""
    option, variable = "--recovery-passphrase-file", "KEYBLOB_RECOVERY_PASSPHRASE"
    given = _given_secret(ctx.args.recovery_passphrase_file, variable, "recovery passphrase")
    if given is not None:
        passphrase = _not_empty(given, "recovery passphrase", variable, option)
    elif not sys.stdin.isatty():
        raise UsageError(
            f"no recovery passphrase: set {variable}, use {option}, or run in a terminal"
        )
    elif new:
        passphrase = prompt_twice("Passphrase for the new recovery kit: ")
    else:
        return _prompt("Recovery passphrase: ")
    if new:
        _warn_if_weak(passphrase)
    return passphrase


def _label(given: str | None, default: str) -> str:
    if given is None:
        return default
    try:
        return keys.label_from_text(given)
    except ValueError as e:
        raise UsageError(f"--label: {e}") from None


def cmd_recovery_add(ctx: Context) -> int:
    import time  # noqa: PLC0415

    args = ctx.args
    if args.passphrase:
        if args.file is not None:
            raise UsageError("give a public key FILE or --passphrase, not both")
        return _add_kit(ctx)
    if args.file is None:
        raise UsageError("give the recovery container's public key FILE, or --passphrase")
    if args.output is not None:
        raise UsageError("-o is for the kit of --passphrase")
    data = read_file(args.file, what="a public key file or a recovery kit")
    if data.startswith(b"{"):  # a recovery kit (FORMAT.md 8): its public key, no passphrase
        return _add_existing_kit(ctx, args.file, data)
    pub = read_public_key_file(args.file, data)
    container = ctx.open()
    if pub.suite is not container.suite:
        raise UsageError(
            f"{args.file} is a {pub.suite.label} key; container {container.name!r} uses "
            f"{container.suite.label}: a blob is wrapped for keys of its own suite only"
        )
    if pub.exchange_id == container.exchange_id:
        raise UsageError(f"{args.file} is this container's own key file: it is always a recipient")
    recipient = trust.RecoveryRecipient(
        key_id=pub.exchange_id,
        exchange=pub.exchange,
        label=_label(args.label, pub.label),
        added=int(time.time()),
        kind="container",
    )
    _record(ctx, container, recipient, lambda s: blobs.check_known_exchange(container, s, pub))
    print(
        f"  fingerprint {pubkey.group_fingerprint(pub.fingerprint)} ({shown_label(pub)}): "
        "check it with the recovery container's owner (keyblob pubkey there shows it)"
    )
    share = f"keyblob share NAME --all --to {args.file} for each name, or {REWRAP}"
    print_note(NOT_REWRITTEN.format(how=share))
    return 0


def _add_existing_kit(ctx: Context, path: str, data: bytes) -> int:
    """recovery add KIT: a kit made before (by this container or a lost one) is a recovery
    recipient again; only its public key is read, and checked as a key of its suite."""
    kit = refusing(path, lambda: recoverykit.RecoveryKit.from_bytes(data))
    refusing(path, lambda: suites.load_exchange_public(kit.suite, kit.exchange))
    container = ctx.open()
    if kit.suite is not container.suite:
        raise UsageError(
            f"{path} is a kit of suite {kit.suite.label}; container {container.name!r} uses "
            f"{container.suite.label}: a blob is wrapped for keys of its own suite only"
        )
    key_id = keys.key_id_for(kit.suite, keys.KeyRole.EXCHANGE, kit.exchange)
    recipient = trust.RecoveryRecipient(
        key_id=key_id,
        exchange=kit.exchange,
        label=_label(ctx.args.label, f"recovery kit {key_id.short}"),
        added=kit.created,
        kind="passphrase",
    )
    _record(ctx, container, recipient)
    print_note(NOT_REWRITTEN.format(how=REWRAP))
    return 0


def _record(
    ctx: Context,
    container: Provider,
    recipient: RecoveryRecipient,
    check: Callable[[State], None] | None = None,
) -> None:
    before: list[RecoveryRecipient | None] = []

    def add(state: State) -> State:  # under the lock
        if check is not None:
            check(state)
        old = state.recovery_recipient(recipient.key_id)
        before.append(old)
        if old is None and len(state.recovery) >= 15:
            raise UsageError(
                "15 recovery recipients already: a blob holds 16 recipients, the container's "
                "own key included; keyblob recovery remove one first (keyblob recovery list "
                "shows them)"
            )
        return state.with_recovery(recipient)

    container.update_state(add)
    verb = "added" if before[0] is None else "already a recovery recipient:"
    print(f"{verb} kx-{recipient.key_id.short} ({recipient.label}), {recipient.kind}")


def _add_kit(ctx: Context) -> int:
    args = ctx.args
    container = ctx.open()
    passphrase = _kit_passphrase(ctx, new=True)
    if passphrase == ctx._given_passphrase():
        print_warning(
            "the recovery passphrase is the container's: whoever learns one has both; "
            "choose another for the kit"
        )
    kit = recoverykit.make_recovery_kit(container.suite, passphrase)
    key_id = keys.key_id_for(container.suite, keys.KeyRole.EXCHANGE, kit.exchange)
    out = args.output or str(
        ctx.home.container_dir(container.name) / f"recovery-{key_id.short}.kbkit"
    )
    _write_kit(out, kit.to_bytes())
    recipient = trust.RecoveryRecipient(
        key_id=key_id,
        exchange=kit.exchange,
        label=_label(args.label, f"recovery kit {key_id.short}"),
        added=kit.created,
        kind="passphrase",
    )
    try:
        _record(ctx, container, recipient)
    except BaseException:
        # Not recorded: a kit that no blob will ever be wrapped for must not be kept.
        os.unlink(out)
        raise
    kdf = kit.kdf
    print(
        f"  wrote the recovery kit {tilde(out)} (Argon2id {kdf.memory_kib} KiB, "
        f"{kdf.iterations} passes, {kdf.lanes} lanes)"
    )
    print_note(KIT_KEEP)
    print_note(NOT_REWRITTEN.format(how=REWRAP))
    return 0


def _write_kit(path: str, data: bytes) -> None:
    from keyblob import atomic  # noqa: PLC0415
    from keyblob.errors import StorageError  # noqa: PLC0415

    try:
        atomic.write_atomic(pathlib.Path(path), data, exclusive=True, mode=0o600, exact_mode=True)
    except FileExistsError:
        raise UsageError(f"{path} exists: choose another -o") from None
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror}") from e


def _rows(state: State) -> list[dict[str, Any]]:
    return [
        {
            "key_id": r.key_id.hex,
            "kind": r.kind,
            "label": r.label,
            "added": iso(r.added),
            "added_unix": r.added,
        }
        for r in state.recovery
    ]


def cmd_recovery_list(ctx: Context) -> int:
    rows = _rows(ctx.open().state())
    if ctx.args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no recovery recipients: add one with keyblob recovery add FILE or --passphrase")
    for r in rows:
        print(f"kx-{r['key_id'][:8]}  {r['kind']:<10}  {r['label']}  added {r['added']}")
    return 0


def cmd_recovery_remove(ctx: Context) -> int:
    given = "".join(ctx.args.id.split()).lower().removeprefix("kx-")
    if len(given) < 8:  # before the passphrase: known from argv
        raise UsageError(
            "give at least the first 8 hex digits of the recipient's kx- id (keyblob recovery "
            "list shows them)"
        )
    container = ctx.open()
    found = [r for r in container.state().recovery if r.key_id.hex.startswith(given)]
    if not found:
        raise NotFoundError(
            f"no recovery recipient kx-{given[:8]}", hints=("keyblob recovery list shows them",)
        )
    if len(found) > 1:
        raise UsageError(f"kx-{given} names {len(found)} recovery recipients: give more digits")
    target = found[0]
    container.update_state(lambda s: s.without_recovery(target.key_id))
    print(f"no longer a recovery recipient: kx-{target.key_id.short} ({target.label})")
    print_note(
        "blobs already wrapped for it stay so, and rotate keeps the recipients of the "
        "generation before: drop it from a name with keyblob unshare NAME --recipient "
        f"{target.key_id.short}, then rotate the name if the recipient may have kept a copy"
    )
    return 0


def _recovery_public(ctx: Context, kit: recoverykit.RecoveryKit | None) -> tuple[Suite, bytes]:
    """The recovery key's suite and exchange public key, known before any passphrase: the
    kit's, or the recovery container's (from its container file)."""
    if kit is not None:
        return kit.suite, kit.exchange
    home = software.Home(pathlib.Path(ctx.args.recovery_home).expanduser())
    suite, exchange, _ = home.public_keys(ctx.args.recovery_container)
    return suite, exchange


def _recovery_key(ctx: Context, kit: recoverykit.RecoveryKit | None) -> blobs.Unwrapper:
    """The recovery recipient's private key: a kit opened with its passphrase, or a
    recovery container's home unlocked with its own."""
    args = ctx.args
    passphrase = _kit_passphrase(ctx, new=False)
    if kit is not None:
        key: blobs.Unwrapper = refusing(
            args.kit, lambda: recoverykit.open_recovery_kit(kit, passphrase)
        )
        return key
    home = software.Home(pathlib.Path(args.recovery_home).expanduser())
    return home.open(args.recovery_container, passphrase)


def cmd_recover(ctx: Context) -> int:
    args = ctx.args
    if bool(args.names) == bool(args.all):
        raise UsageError("name the keys to recover, or give --all")
    if (args.kit is None) == (args.recovery_home is None):
        raise UsageError("give the recovery key: --kit FILE or --recovery-home DIR")
    for n in args.names:
        checked_name(n)
    lost = read_public_key_file(args.signer)
    kit = None
    if args.kit is not None:  # an edited kit is refused before any passphrase is asked
        data = read_file(args.kit, recoverykit.MAX_KIT_SIZE, what="a recovery kit")
        kit = refusing(args.kit, lambda: recoverykit.RecoveryKit.from_bytes(data))
    container = ctx.open()
    suite, exchange = _recovery_public(ctx, kit)
    if suite is not container.suite:
        raise UsageError(
            f"the recovery key is of suite {suite.label}; container {container.name!r} uses "
            f"{container.suite.label}: make the new container with keyblob init --suite "
            f"{suite.label}"
        )
    recovery_kx = keys.key_id_for(suite, keys.KeyRole.EXCHANGE, exchange)
    store = ctx.store()
    names = list(args.names) if args.names else None
    total = sum(len(store.generations(n)) for n in (names or store.names()))
    if not args.json:
        print(
            f"recovering the keys in {tilde(store.location)} ({total} stored) signed by the "
            f"lost container sg-{lost.signature_id.short} ({shown_label(lost)}), fingerprint "
            f"{pubkey.group_fingerprint(lost.fingerprint)}"
        )
        print(
            f"  opening them with the recovery key kx-{recovery_kx.short}; they will be "
            f"wrapped for container {container.name!r} (kx-{container.exchange_id.short}) and "
            "its recovery recipients, and signed by it"
        )
    key = _recovery_key(ctx, kit)
    update, close = progress_bar(total, args.json, "recovering", unit="key", minimum=1)
    try:
        results = blobs.recover(
            container,
            store,
            key,
            lost,
            names,
            progress=(lambda _what, _i: update(1)) if update is not None else None,
        )
    finally:
        close()
    return _report(args.json, results)


def _report(as_json: bool, results: list[blobs.Recovered]) -> int:
    recovered = [r for r in results if r.outcome == blobs.RECOVERED]
    readable = [r for r in results if r.outcome == blobs.READABLE]
    failed = [r for r in results if r.outcome == blobs.NOT_RECOVERED]
    if as_json:
        emit_json(
            {
                "total": len(results),
                "recovered": len(recovered),
                "readable": len(readable),
                "not_recovered": len(failed),
                "entries": [
                    {
                        "name": r.name,
                        "generation": r.generation,
                        "outcome": r.outcome,
                        "reason": r.reason or None,
                        "dropped": [k.hex for k in r.dropped],
                    }
                    for r in results
                ],
            }
        )
    else:
        for r in recovered:
            print(f"  recovered {r.name} generation {r.generation}")
            for k in r.dropped:
                print_note(
                    f"{r.name} generation {r.generation} was also wrapped for kx-{k.short}, "
                    "whose public key is not known here: give it the key again with "
                    f"keyblob share {r.name} --to THEIR.pub"
                )
        summary = f"recovered {len(recovered)} keys of {len(results)}"
        if readable:
            summary += f"; {len(readable)} already readable here"
        if failed:
            summary += f"; {len(failed)} not recoverable:"
        print(summary)
        for r in failed:
            print(f"  {r.name} generation {r.generation}: {r.reason}")
    return 3 if failed else 0


def _recovery_passphrase_option(sp: Any) -> None:
    sp.add_argument(
        "--recovery-passphrase-file",
        metavar="FILE",
        help="read the recovery passphrase (the kit's, or the recovery container's) from "
        "FILE's first line, for scripts",
    )


def register(sub: Subcommands) -> None:
    """recovery add, list, remove; recover."""
    rec = sub.add_parser(
        "recovery",
        help="manage recovery recipients",
        description="manage recovery recipients: every new blob is wrapped for them too",
    )
    rsub = rec.add_subparsers(
        dest="recovery_command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    sp = rsub.add_parser(
        "add",
        help="wrap every new blob for a recovery container's key (FILE) too, or for a new "
        "passphrase-only recovery kit (--passphrase)",
    )
    sp.add_argument("file", nargs="?", help="the recovery container's public key file")
    sp.add_argument(
        "--passphrase",
        action="store_true",
        help="make a break-glass recovery kit sealed under a new passphrase",
    )
    sp.add_argument(
        "-o",
        "--output",
        metavar="KIT",
        help="where to write the kit (default HOME/containers/NAME/recovery-ID.kbkit)",
    )
    sp.add_argument("--label", help="what to call the recipient (default its file's label)")
    _recovery_passphrase_option(sp)
    sp.set_defaults(func=cmd_recovery_add)
    sp = rsub.add_parser("list", help="list recovery recipients")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp.set_defaults(func=cmd_recovery_list)
    sp = rsub.add_parser("remove", help="stop wrapping new blobs for a recovery recipient")
    sp.add_argument("id", help="the recipient's kx- id, or its first 8+ hex digits")
    sp.set_defaults(func=cmd_recovery_remove)

    rp = command(
        sub,
        "recover",
        cmd_recover,
        "give this (new) container every key a lost container signed, opened with a "
        "recovery key (docs/RECOVERY.md)",
    )
    rp.add_argument("names", nargs="*", metavar="NAME", help="the keys to recover")
    rp.add_argument("--all", action="store_true", help="every key in the store")
    rp.add_argument(
        "--signer",
        required=True,
        metavar="OLD.pub",
        help="the lost container's public key file: only blobs it signed are recovered",
    )
    rp.add_argument("--kit", metavar="FILE", help="a recovery kit (recovery add --passphrase)")
    rp.add_argument("--recovery-home", metavar="DIR", help="the home of a recovery container")
    rp.add_argument(
        "--recovery-container",
        default="default",
        metavar="NAME",
        help="the recovery container's name in --recovery-home (default 'default')",
    )
    rp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    _recovery_passphrase_option(rp)
