"""keyblob's key lifecycle commands: keys rotate, rewrap and keys forget-old (replacing a
container's own key pairs; FORMAT.md 5.1.2), and retire (generations a container no longer
uses; FORMAT.md 5.2.8).  docs/CLI.md describes them."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from keyblob.cli.keys import keep_public_file, own_fingerprint
from keyblob.cli.names import about_key, checked_name, existing_store
from keyblob.cli.terminal import (
    Context,
    EntryProgress,
    Parser,
    Subcommands,
    command,
    emit_json,
    given_jobs,
    jobs_option,
    lazy_module,
    print_error,
    print_note,
    print_warning,
    refusing,
    tilde,
)
from keyblob.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from keyblob import blobs, keys
else:  # loaded on first use: building the parser imports no library module
    blobs = lazy_module("keyblob.blobs")
    keys = lazy_module("keyblob.keys")


def cmd_keys_rotate(ctx: Context) -> int:
    """keyblob keys rotate [--exchange] [--signature] [--json]."""
    args = ctx.args
    roles = [
        role
        for role, asked in (
            (keys.KeyRole.EXCHANGE, args.exchange),
            (keys.KeyRole.SIGNATURE, args.signature),
        )
        if asked
    ] or [keys.KeyRole.EXCHANGE, keys.KeyRole.SIGNATURE]
    store = existing_store(ctx)
    container = ctx.open(own_keys=True)  # the agent makes no keys: unlocked here
    replaced = blobs.rotate_own_keys(container, roles, store=store)
    keep_public_file(ctx, container)  # the kept public key file carries the new keys
    words = " and ".join(k.role.name.lower() for k in replaced)
    if args.json:
        emit_json(
            {
                "container": container.name,
                "rotated": [k.role.name.lower() for k in replaced],
                "old": [
                    {"role": k.role.name.lower(), "key_id": k.key_id.hex, "until": k.until}
                    for k in replaced
                ],
                "exchange_id": container.exchange_id.hex,
                "signature_id": container.signature_id.hex,
                "fingerprint": own_fingerprint(container),
            }
        )
        return 0
    print(
        f"new {words} key{'s' if len(replaced) > 1 else ''} for container "
        f"{container.name!r}; fingerprint {own_fingerprint(container)}"
    )
    print(
        "  the old keys are kept until keyblob keys forget-old; move every stored key to the "
        "new ones with: keyblob rewrap --all"
    )
    print(
        "  hand the new public key file (keyblob pubkey) to everyone who trusts or wraps for "
        "this container"
    )
    return 0


def cmd_rewrap(ctx: Context) -> int:
    """keyblob rewrap (NAME... | --all) [--json] [--quiet] [--jobs N]."""
    args = ctx.args
    if args.all == bool(args.names):
        raise UsageError("give the names to rewrap, or --all (not both)")
    names = None if args.all else [checked_name(n) for n in args.names]
    jobs = given_jobs(args)  # before the passphrase, as store check and copy
    store = existing_store(ctx)
    if names is not None:
        for name in names:  # before the passphrase: a name not stored is exit 4
            if not store.generations(name):
                raise NotFoundError(f"no key named {name} in {tilde(store.location)}")
    container = ctx.open()
    progress = EntryProgress("rewrap", args.quiet)

    started = time.monotonic()
    try:
        report = blobs.rewrap(container, store, names, jobs=jobs, progress=progress)
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    if args.json:
        emit_json(
            {
                "store": store.location,
                "entries": report.total,
                "rewrapped": report.rewrapped,
                "current": report.current,
                "unverified": report.unverified,
                "failed": [_failed(f) for f in report.failed],
                "elapsed": round(elapsed, 3),
            }
        )
    else:
        print(
            f"rewrapped {report.rewrapped} of {report.total} entries in "
            f"{tilde(store.location)} in {elapsed:.1f} s; {report.current} were on the "
            f"current keys already"
            + (
                f", {report.unverified} fail verification here (left alone)"
                if report.unverified
                else ""
            )
        )
        for f in report.failed:
            print_warning(f"not rewrapped: {f.name} generation {f.generation}: {f.reason}")
    if report.failed:
        print_error(
            f"{len(report.failed)} of {report.total} entries were not rewrapped",
            ("running keyblob rewrap again retries them and skips what is done",),
        )
        return 3
    return 0


def _failed(entry: Any) -> dict[str, Any]:
    return {"name": entry.name, "generation": entry.generation, "reason": entry.reason}


def cmd_keys_forget_old(ctx: Context) -> int:
    """keyblob keys forget-old [--json] [--jobs N]."""
    args = ctx.args
    jobs = given_jobs(args)  # before the passphrase, as store check and copy
    store = existing_store(ctx)
    container = ctx.open(own_keys=True)
    forgotten = blobs.forget_old_keys(container, store, jobs=jobs)
    if args.json:
        emit_json(
            {
                "container": container.name,
                "forgotten": [
                    {"role": k.role.name.lower(), "key_id": k.key_id.hex, "until": k.until}
                    for k in forgotten
                ],
            }
        )
    elif forgotten:
        print(
            f"removed {len(forgotten)} old key{'s' if len(forgotten) > 1 else ''} of container "
            f"{container.name!r}; what the old signature keys signed stays verifiable"
        )
    else:
        print(f"container {container.name!r} keeps no old keys")
    return 0


def cmd_retire(ctx: Context) -> int:
    args = ctx.args
    checked_name(args.name)
    store = existing_store(ctx)
    container = ctx.open()
    with about_key(args.name):
        done = refusing(args.name, lambda: blobs.retire(container, store, args.name, args.below))
    stored = [g for g in store.generations(args.name) if g < done.below]
    if args.json:
        emit_json(
            {
                "name": done.name,
                "retired_below": done.below,
                "before": done.before,
                "newest": done.newest,
                "changed": done.changed,
                "retired_stored": stored,
                "store": store.location,
            }
        )
        return 0
    if not done.changed:
        print(f"{done.name}: generations below {done.below} were already retired; nothing changed")
        return 0
    held = ", ".join(str(g) for g in stored) if stored else "none"
    print(
        f"retired {done.name} generations below {done.below} "
        f"(stored in {tilde(store.location)}: {held}); generations {done.below} to "
        f"{done.newest} stay usable"
    )
    print_note(
        "data encrypted under a retired generation can no longer be decrypted by this "
        "container; a retirement is never undone"
    )
    return 0


def _generation(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a generation number: {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"{value}: must be 2 or more (the oldest generation that stays usable)"
        )
    return value


def _register_retire(sub: Subcommands) -> None:
    """retire."""
    sp = command(
        sub,
        "retire",
        cmd_retire,
        "retire a key's older generations: they can no longer encrypt or decrypt here",
    )
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument(
        "--below",
        type=_generation,
        metavar="N",
        required=True,
        help="retire every generation below N (N, at most the newest, stays usable)",
    )
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")


def register(sub: Subcommands) -> None:
    """keys rotate, keys forget-old; rewrap; retire."""
    group = sub.add_parser(
        "keys",
        help="replace the container's own key pairs",
        description="replace the container's own key pairs: keys rotate, then keyblob "
        "rewrap --all, then keys forget-old",
    )
    ksub = group.add_subparsers(
        dest="keys_command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    sp = ksub.add_parser(
        "rotate", help="make new key pairs; the old ones are kept until keys forget-old"
    )
    sp.add_argument("--exchange", action="store_true", help="the exchange key pair")
    sp.add_argument("--signature", action="store_true", help="the signature key pair")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp.set_defaults(func=cmd_keys_rotate)
    sp = ksub.add_parser(
        "forget-old",
        help="remove the old private keys, once no stored key needs them (keyblob rewrap)",
    )
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    jobs_option(sp)
    sp.set_defaults(func=cmd_keys_forget_old)
    sp = sub.add_parser(
        "rewrap",
        help="move stored keys to the container's current key pairs (after keys rotate)",
        description="move stored keys to the container's current key pairs (after keys "
        "rotate): same names, generations and key ids",
    )
    sp.add_argument("names", nargs="*", metavar="NAME", help="the keys to rewrap")
    sp.add_argument("--all", action="store_true", help="every key in the store")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    jobs_option(sp)
    sp.set_defaults(func=cmd_rewrap)
    _register_retire(sub)
