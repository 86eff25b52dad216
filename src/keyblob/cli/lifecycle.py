"""keyblob's key lifecycle commands: retire (generations a container no longer uses)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from keyblob.cli.names import about_key, checked_name, existing_store
from keyblob.cli.terminal import (
    Context,
    Subcommands,
    command,
    emit_json,
    lazy_module,
    print_note,
    refusing,
    tilde,
)

if TYPE_CHECKING:
    from keyblob import blobs
else:
    blobs = lazy_module("keyblob.blobs")


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


def register(sub: Subcommands) -> None:
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
