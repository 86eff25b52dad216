"""keyblob store check / set-aside: what the store holds, as this container sees it, and
the way out of entries that fail verification here (FORMAT.md 2.9)."""

from __future__ import annotations

import sys
from typing import Any

from keyblob import blobs
from keyblob.cli.terminal import (
    PROG,
    Context,
    Parser,
    Subcommands,
    emit_json,
    print_error,
    tilde,
)
from keyblob.errors import UsageError
from keyblob.keys import KeyId
from keyblob.providers.base import Provider
from keyblob.trust import State


def _signer_label(signer: KeyId | None, container: Provider, state: State) -> str | None:
    if signer is None:
        return None
    if signer == container.signature_id:
        return "this container"
    trusted = state.signer(signer)
    return None if trusted is None else trusted.label


def _status(entry: blobs.Entry) -> str:
    if not entry.ok:
        return "FAILS"
    if entry.current:
        return "newest"
    return "old" if entry.below_mark else "ok"


def cmd_store_check(ctx: Context) -> int:
    container = ctx.open()
    store = ctx.store()
    entries = blobs.check_store(container, store, ctx.args.names or None)
    state = container.state()
    rows: list[dict[str, Any]] = [
        {
            "name": e.name,
            "generation": e.generation,
            "ok": e.ok,
            "reason": e.reason,
            "signer": None if e.signer is None else e.signer.hex,
            "signer_label": _signer_label(e.signer, container, state),
            "below_mark": e.below_mark,
            "current": e.current,
        }
        for e in entries
    ]
    failing = [e for e in entries if not e.ok]
    if ctx.args.json:
        emit_json({"store": store.location, "entries": rows})
    elif rows:
        width = max(4, *(len(r["name"]) for r in rows))
        print(f"{'NAME':<{width}}  {'GEN':>3}  STATUS  SIGNER / REASON")
        for entry, r in zip(entries, rows, strict=True):
            signed = f"sg-{(r['signer'] or '')[:8]} ({r['signer_label']})"
            detail = signed if entry.ok else r["reason"]
            print(f"{r['name']:<{width}}  {r['generation']:>3}  {_status(entry):<6}  {detail}")
    else:
        print(f"no keys in {tilde(store.location)}", file=sys.stderr)
    if failing:
        print_error(
            f"{len(failing)} of {len(entries)} entries in {tilde(store.location)} fail "
            "verification here: nothing of them is used",
            (
                "move those in this container's way aside (their bytes are kept) with: "
                "keyblob store set-aside [NAME]",
            ),
        )
        return 3
    return 0


def cmd_store_set_aside(ctx: Context) -> int:
    args = ctx.args
    if args.generation is not None and args.generation < 0:
        raise UsageError(f"generation {args.generation}: a generation is 0 or more")
    container = ctx.open()
    store = ctx.store()
    moved = blobs.set_aside_untrusted(container, store, args.name, generation=args.generation)
    if args.json:
        emit_json(
            {
                "store": store.location,
                "set_aside": [
                    {
                        "name": m.name,
                        "generation": m.generation,
                        "reason": m.reason,
                        "location": m.location,
                    }
                    for m in moved
                ],
            }
        )
        return 0
    for m in moved:
        print(f"set aside {m.name} generation {m.generation}: {m.reason}")
        print(f"  kept in {tilde(m.location)}")
    if not moved:
        where = f"for {args.name} " if args.name else ""
        print(f"{PROG}: nothing {where}in this container's way to set aside", file=sys.stderr)
    return 0


def register(sub: Subcommands) -> None:
    """store check, store set-aside."""
    store = sub.add_parser(
        "store",
        help="check the store's entries; set aside those that fail verification",
        description="check the store's entries; set aside those that fail verification",
    )
    ssub = store.add_subparsers(
        dest="store_command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    sp = ssub.add_parser(
        "check",
        help="check every entry (or NAME's) as an import would; exit 3 if any fails",
        description="check every entry (or NAME's) as an import would: signer, signature, "
        "name and generation; nothing is unwrapped or changed; exit 3 if any fails",
    )
    sp.add_argument("names", nargs="*", metavar="NAME")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_store_check)
    sp = ssub.add_parser(
        "set-aside",
        help="move entries that fail verification here out of the way (bytes kept)",
        description="move the entries that fail verification here and are in this "
        "container's way (above the generation in use; for a NAME given with no generation "
        "in use, every failing one) to the store's set-aside area, where no lookup sees them "
        "and their bytes are kept; an entry that verifies is never moved",
    )
    sp.add_argument("name", nargs="?", metavar="NAME")
    sp.add_argument("generation", nargs="?", type=int, metavar="GENERATION")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_store_set_aside)
