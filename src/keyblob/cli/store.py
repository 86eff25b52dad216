"""keyblob store check / set-aside / copy: what a store holds, as this container sees it,
the way out of entries that fail verification here (FORMAT.md 2.9), and moving every entry
of one store to another, each checked on the way."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from keyblob.cli.terminal import (
    PROG,
    Context,
    EntryProgress,
    Parser,
    Subcommands,
    emit_json,
    given_jobs,
    jobs_option,
    lazy_module,
    print_error,
    print_warning,
    tilde,
)
from keyblob.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from keyblob import blobs, keys, storage
    from keyblob.keys import KeyId
    from keyblob.providers.base import Provider
    from keyblob.storage import Store, directory, sqlite
    from keyblob.trust import State
else:  # loaded on first use: building the parser imports neither the library nor sqlite3
    keys = lazy_module("keyblob.keys")
    storage = lazy_module("keyblob.storage")
    directory = lazy_module("keyblob.storage.directory")
    blobs = lazy_module("keyblob.blobs")
    sqlite = lazy_module("keyblob.storage.sqlite")


def _looks_like_store(text: str) -> bool:
    """A store URL or path, which a key name can never be: a scheme (``sqlite:``), a
    folder separator (``./blobs``), ``~``, ``.`` or ``..``."""
    return (
        ":" in text or "/" in text or os.sep in text or text.startswith("~") or text in (".", "..")
    )


def _open(url: str, stores: contextlib.ExitStack) -> Store:
    """The store at ``url`` as given on the command line (``~`` expanded in a path), closed
    (a database connection) when ``stores`` is."""
    store = storage.open_store(os.path.expanduser(url) if "://" not in url else url)
    close = getattr(store, "close", None)
    if callable(close):
        stores.callback(close)
    return store


def _given_store(url: str, role: str, stores: contextlib.ExitStack) -> Store:
    """:func:`_open`, for a store that must exist: a store folder or database file that
    does not is said not to (exit 4), before any passphrase is asked; nothing is created."""
    store = _open(url, stores)
    if isinstance(store, directory.DirectoryStore) and not store.root.exists():
        raise NotFoundError(f"{role} store folder {tilde(store.root)} does not exist")
    if isinstance(store, sqlite.SqliteStore) and not store.exists():
        raise NotFoundError(f"{role} store database {tilde(store.path)} does not exist")
    return store


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
    with contextlib.ExitStack() as stores:
        return _store_check(ctx, stores)


def _store_check(ctx: Context, stores: contextlib.ExitStack) -> int:
    targets: list[str] = ctx.args.targets
    url = targets[0] if targets and _looks_like_store(targets[0]) else None
    names = targets[1:] if url is not None else targets
    for name in names:
        keys.check_name(name)
    jobs = given_jobs(ctx.args)
    store = ctx.store() if url is None else _given_store(url, "the", stores)
    container = ctx.open()
    entries = blobs.check_store(container, store, names or None, jobs=jobs)
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
    for name in names:
        if os.path.isdir(name) and not any(e.name == name for e in entries):
            print(
                f"{PROG}: hint: no key is named {name}, but a folder is: to check the store "
                f"in it, give it as a path: keyblob store check ./{name}",
                file=sys.stderr,
            )
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


def cmd_store_copy(ctx: Context) -> int:
    with contextlib.ExitStack() as stores:
        return _store_copy(ctx, stores)


def _store_copy(ctx: Context, stores: contextlib.ExitStack) -> int:
    args = ctx.args
    jobs = given_jobs(ctx.args)
    source = _given_store(args.source, "source", stores)
    destination = _open(args.destination, stores)
    # Store.identity: a folder or database file by its real path, a server's database
    # by user@host:port/dbname (the same identity the state's per-store views use).
    if source.identity == destination.identity:
        # The locations, not the arguments: a database URL may carry a password.
        raise UsageError(
            f"{tilde(source.location)} and {tilde(destination.location)} are the same store"
        )
    container = ctx.open()
    progress = EntryProgress("copy", False)

    started = time.monotonic()
    try:
        report = blobs.copy_store(container, source, destination, jobs=jobs, progress=progress)
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    if args.json:
        emit_json(
            {
                "source": source.location,
                "destination": destination.location,
                "entries": report.total,
                "copied": report.copied,
                "skipped": report.skipped,
                "refused": [_not_copied(n) for n in report.refused],
                "conflicts": [_not_copied(n) for n in report.conflicts],
                "elapsed": round(elapsed, 3),
            }
        )
    else:
        there = f"; {report.skipped} were there already" if report.skipped else ""
        print(
            f"copied {report.copied} of {report.total} entries from {tilde(source.location)} "
            f"to {tilde(destination.location)} in {elapsed:.1f} s{there}"
        )
        for n in (*report.refused, *report.conflicts):
            print_warning(f"not copied: {n.name} generation {n.generation}: {n.reason}")
    if report.refused or report.conflicts:
        print_error(
            f"{len(report.refused) + len(report.conflicts)} of {report.total} entries were "
            f"not copied: {len(report.refused)} fail verification here, "
            f"{len(report.conflicts)} conflict with other bytes in the destination",
            (
                "see why with: keyblob store check SOURCE NAME (or DESTINATION NAME for a "
                "conflict); running the copy again copies only what is missing",
            ),
        )
        return 3
    return 0


def _not_copied(entry: blobs.NotCopied) -> dict[str, Any]:
    return {"name": entry.name, "generation": entry.generation, "reason": entry.reason}


def register(sub: Subcommands) -> None:
    """store check, store set-aside, store copy."""
    store = sub.add_parser(
        "store",
        help="check the store's entries; set aside those that fail verification; copy a store",
        description="check the store's entries; set aside those that fail verification; "
        "copy every entry of one store to another",
    )
    ssub = store.add_subparsers(
        dest="store_command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    sp = ssub.add_parser(
        "check",
        usage="%(prog)s [-h] [--json] [--jobs N] [URL] [NAME ...]",
        help="check every entry (or NAME's) as an import would; exit 3 if any fails",
        description="check every entry (or NAME's) of the store URL (default: --store's) "
        "as an import would: signer, signature, name and generation; nothing is unwrapped "
        "or changed; exit 3 if any fails.  URL is a path with a / (./blobs), or a "
        "sqlite:/postgresql: URL",
    )
    sp.add_argument(
        "targets",
        nargs="*",
        metavar="[URL] [NAME ...]",
        help="the store (first, when it has a /, a : or a ~) and key names",
    )
    sp.add_argument("--json", action="store_true")
    jobs_option(sp)
    sp.set_defaults(func=cmd_store_check)
    sp = ssub.add_parser(
        "copy",
        help="copy every entry of SOURCE to DESTINATION, each checked on the way",
        description="copy every generation of every name from the store SOURCE to the "
        "store DESTINATION (paths or URLs, as --store takes), each checked as an import "
        "would (signer trusted for the name, signature, name, generation): one that fails is "
        "not copied; one DESTINATION holds already is skipped if identical, kept if not; "
        "exit 3 if any entry was not copied.  Run again, it copies only what is missing",
    )
    sp.add_argument("source", metavar="SOURCE")
    sp.add_argument("destination", metavar="DESTINATION")
    sp.add_argument("--json", action="store_true")
    jobs_option(sp)
    sp.set_defaults(func=cmd_store_copy)
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
