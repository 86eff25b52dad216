"""The command line: argv -> public API -> short output, or one error line and an exit status.

Exit statuses (docs/CLI.md): 0 done; 2 usage; 3 refused (a blob or ciphertext failed
verification); 4 not found; 5 wrong passphrase; 1 anything else.  Errors are mapped to
statuses in one place, :func:`main`.  No key byte is ever printed.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TextIO

from keyblob import blobs, files
from keyblob.atomic import atomic_output, read_bounded, write_atomic
from keyblob.errors import (
    FormatError,
    KeyblobError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from keyblob.format import KeyBlob, PublicKeyFile
from keyblob.format.armor import BLOB, PUBLIC_KEY, armor, dearmor, is_armored
from keyblob.format.blob import MAX_BLOB_SIZE
from keyblob.format.data import DataHeader
from keyblob.keys import Algorithm, SessionKey, Suite
from keyblob.providers import suites
from keyblob.providers.software import DEFAULT_CONTAINER, Home, SoftwareContainer
from keyblob.storage import Store, open_store
from keyblob.trust import TrustedSigner, find_signer

PROG = "keyblob"
MAX_INPUT_FILE = 65536
EXIT_INTERRUPTED = 130
PROGRESS_MIN = 16 * 1024 * 1024  # a bar for inputs of 16 MiB and more (or of unknown size)


class _Refused(KeyblobError):
    """A VerificationError (or a FormatError) about one file, with hints for the user."""

    exit_status = 3

    def __init__(self, message: str, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.hints = list(hints)


# -- small helpers ---------------------------------------------------------------------


def _iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tilde(path: Path | str) -> str:
    text, home = str(path), str(Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def _read_file(path: str, limit: int = MAX_INPUT_FILE) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            return read_bounded(Path(path), limit)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except ValueError:
        raise FormatError(f"{path}: larger than {limit} bytes: not a key blob") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > limit:
        raise FormatError(f"standard input: larger than {limit} bytes: not a key blob")
    return data


def _write_output(path: str, data: bytes, *, mode: int = 0o644) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        write_atomic(Path(path), data, mode=mode)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e


def _read_public_key_file(path: str) -> PublicKeyFile:
    data = _read_file(path)
    try:
        if is_armored(data):
            data = dearmor(data, PUBLIC_KEY)
        pub = PublicKeyFile.from_bytes(data)
        suites.check_public_keys(pub.suite, pub.exchange, pub.signature)
        return pub
    except FormatError as e:
        raise FormatError(f"{path}: not a keyblob public key file ({e})") from None


def _emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


# -- passphrase, home, store -----------------------------------------------------------


class Context:
    """What every command needs: where the home and store are and how to get a passphrase."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        home = args.home or os.environ.get("KEYBLOB_HOME") or str(Path.home() / ".keyblob")
        self.home = Home(Path(home).expanduser())
        self.container_name: str = (
            args.container or os.environ.get("KEYBLOB_CONTAINER") or DEFAULT_CONTAINER
        )
        url = args.store or os.environ.get("KEYBLOB_STORE")
        # A plain path may start with ~ (the shell leaves it alone after --store=).
        self._store_url = os.path.expanduser(url) if url and "://" not in url else url

    def store(self) -> Store:
        return open_store(self._store_url or str(self.home.default_store))

    def passphrase(self, *, new: bool = False) -> bytes:
        """From KEYBLOB_PASSPHRASE, --passphrase-file, or a no-echo prompt (asked once per
        command: the Argon2id unlock it feeds dominates a command's time)."""
        env = os.environ.get("KEYBLOB_PASSPHRASE")
        if env is not None:
            return env.encode("utf-8")
        if self.args.passphrase_file:
            raw = _read_file(self.args.passphrase_file, 4096)
            return raw.split(b"\n", 1)[0].rstrip(b"\r")
        if not sys.stdin.isatty():
            raise UsageError(
                "no passphrase: set KEYBLOB_PASSPHRASE, use --passphrase-file, or run in a terminal"
            )
        if new:
            first = getpass.getpass(f"Passphrase for the new container {self.container_name!r}: ")
            if getpass.getpass("Again: ") != first:
                raise UsageError("the two passphrases differ; nothing was created")
            return first.encode("utf-8")
        return getpass.getpass(f"Passphrase for container {self.container_name!r}: ").encode()

    def open(self) -> SoftwareContainer:
        return self.home.open(self.container_name, self.passphrase())


# -- commands --------------------------------------------------------------------------


def cmd_init(ctx: Context) -> int:
    args = ctx.args
    suite = Suite.from_label(args.suite)
    if suite is not Suite.RSA and args.bits is not None:
        raise UsageError("--bits applies to the rsa suite only")
    container = ctx.home.create(
        ctx.container_name, ctx.passphrase(new=True), suite, bits=args.bits or 3072
    )
    print(f'created container "{container.name}" (suite {suite.label}) in {_tilde(ctx.home.path)}')
    print(
        f"  exchange key   kx-{container.exchange_id.short}"
        f"   signature key   sg-{container.signature_id.short}"
    )
    return 0


def _key_line(key_name: str, generation: int, algorithm: Algorithm, key_id: str, where: str) -> str:
    return (
        f"{key_name}  generation {generation}  {algorithm.label}  key id {key_id}  "
        f"stored in {where}"
    )


def cmd_new(ctx: Context) -> int:
    args = ctx.args
    to = [_read_public_key_file(p) for p in args.to]
    container = ctx.open()
    store = ctx.store()
    key = blobs.generate(
        container, store, args.name, algorithm=Algorithm.from_label(args.algorithm), to=to
    )
    print(
        _key_line(key.name, key.generation, key.algorithm, key.key_id.short, _tilde(store.location))
    )
    return 0


def cmd_rotate(ctx: Context) -> int:
    args = ctx.args
    to = [_read_public_key_file(p) for p in args.to]
    container = ctx.open()
    store = ctx.store()
    algorithm = Algorithm.from_label(args.algorithm) if args.algorithm else None
    key = _refusing(
        args.name,
        lambda: blobs.rotate(container, store, args.name, algorithm=algorithm, to=to),
    )
    print(
        _key_line(key.name, key.generation, key.algorithm, key.key_id.short, _tilde(store.location))
    )
    return 0


def _describe(
    v: blobs.Verified, container: SoftwareContainer, state_signers: Sequence[TrustedSigner]
) -> dict[str, Any]:
    h = v.header
    signer = (
        "this container"
        if h.signer_id == container.signature_id
        else next((s.label for s in state_signers if s.key_id == h.signer_id), "?")
    )
    return {
        "name": h.name,
        "generation": h.generation,
        "key_id": h.key_id.hex,
        "algorithm": h.algorithm.label,
        "suite": h.suite.label,
        "created": _iso(h.created),
        "created_unix": h.created,
        "signer": h.signer_id.hex,
        "signer_label": signer,
        "recipients": [r.hex for r in v.recipients],
        "size": len(v.encoded),
    }


def _refusing(what: str, action: Callable[[], Any]) -> Any:
    """Run ``action``; a failed check becomes 'refused WHAT: reason' with hints."""
    try:
        return action()
    except VerificationError as e:
        hints = []
        if "not a trusted signer" in str(e):
            hints = [
                "the blob may have been substituted; if you expect keys from that container,",
                "check its fingerprint with its owner, then run: keyblob trust add THEIR.pub",
            ]
        elif str(e).startswith("rolled back"):
            hints = [
                "an older blob was put in place of a newer one; restore the newest from a backup"
            ]
        raise _Refused(f"refused {what}: {e}", hints) from None
    except FormatError as e:
        raise _Refused(f"refused {what}: {e}") from None


def cmd_list(ctx: Context) -> int:
    container = ctx.open()
    store = ctx.store()
    signers = container.state().trusted
    rows, refused = [], []
    for name in store.names():
        try:
            v = blobs.open_latest(container, store, name, unwrap=False)
        except (VerificationError, FormatError) as e:
            refused.append((name, str(e)))
            continue
        rows.append(_describe(v, container, signers))
    if ctx.args.json:
        _emit_json(
            {
                "store": store.location,
                "keys": rows,
                "refused": [{"name": n, "reason": r} for n, r in refused],
            }
        )
    elif rows:
        width = max(len(r["name"]) for r in rows)
        print(f"{'NAME':<{width}}  GEN  ALGORITHM          KEY ID    CREATED               SIGNER")
        for r in rows:
            print(
                f"{r['name']:<{width}}  {r['generation']:>3}  {r['algorithm']:<17}  "
                f"{r['key_id'][:8]}  {r['created']}  sg-{r['signer'][:8]} ({r['signer_label']})"
            )
    elif not refused:
        print(f"no keys in {_tilde(store.location)}", file=sys.stderr)
    for name, reason in refused:
        print(f"{PROG}: error: refused {name}: {reason}", file=sys.stderr)
    return 3 if refused else 0


def cmd_show(ctx: Context) -> int:
    container = ctx.open()
    store = ctx.store()
    v = _refusing(
        ctx.args.name, lambda: blobs.open_latest(container, store, ctx.args.name, unwrap=False)
    )
    doc = _describe(v, container, container.state().trusted)
    doc["store"] = store.location
    if ctx.args.json:
        _emit_json(doc)
        return 0
    rows = [
        ("name", doc["name"]),
        ("generation", str(doc["generation"])),
        ("algorithm", doc["algorithm"]),
        ("key id", doc["key_id"]),
        ("created", doc["created"]),
        ("signer", f"sg-{doc['signer'][:8]} ({doc['signer_label']})"),
        ("recipients", ", ".join(f"kx-{r[:8]}" for r in doc["recipients"])),
        ("generations", ", ".join(str(g) for g in store.generations(ctx.args.name))),
        ("stored in", _tilde(store.location)),
    ]
    for label, value in rows:
        print(f"{label:<12} {value}")
    return 0


def cmd_export(ctx: Context) -> int:
    args = ctx.args
    container = ctx.open()
    store = ctx.store()
    v = _refusing(args.name, lambda: blobs.open_latest(container, store, args.name, unwrap=False))
    data = armor(v.encoded, BLOB) if args.armor else v.encoded
    _write_output(args.output, data)
    if args.output != "-":
        print(
            f"wrote {args.name} generation {v.header.generation} to {args.output}", file=sys.stderr
        )
    return 0


def cmd_import(ctx: Context) -> int:
    args = ctx.args
    data = _read_file(args.file, MAX_BLOB_SIZE * 2)
    container = ctx.open()
    store = ctx.store()
    v = _refusing(args.file, lambda: blobs.import_blob(container, store, data, name=args.name))
    h = v.header
    print(
        f"imported {h.name} generation {h.generation} (key id {h.key_id.short}) "
        f"signed by sg-{h.signer_id.short}"
    )
    return 0


def cmd_verify(ctx: Context) -> int:
    args = ctx.args
    data = _read_file(args.file, MAX_BLOB_SIZE * 2)
    container = ctx.open()
    try:
        v = _refusing(args.file, lambda: blobs.verify(container, data, name=args.name))
    except _Refused as e:
        if args.json:
            _emit_json({"file": args.file, "valid": False, "reason": str(e)})
        raise
    doc = _describe(v, container, container.state().trusted)
    if args.json:
        _emit_json({"file": args.file, "valid": True, **doc})
    else:
        print(
            f"{args.file}: valid: {doc['name']} generation {doc['generation']}, "
            f"signed by sg-{doc['signer'][:8]} ({doc['signer_label']}), unwraps for this container"
        )
    return 0


def cmd_inspect(ctx: Context) -> int:
    args = ctx.args
    raw = _read_file(args.file, MAX_BLOB_SIZE * 2)
    armored = is_armored(raw)
    text = raw.lstrip()
    public_armor = f"-----BEGIN {PUBLIC_KEY}-----".encode()
    if (armored and text.startswith(public_armor)) or raw[:4] == b"KBPK":
        pub = PublicKeyFile.from_bytes(dearmor(raw, PUBLIC_KEY) if armored else raw)
        doc = {
            "kind": "public key file",
            "suite": pub.suite.label,
            "label": pub.label,
            "exchange_key_id": pub.exchange_id.hex,
            "signature_key_id": pub.signature_id.hex,
        }
        if args.json:
            _emit_json(doc)
        else:
            print(f"keyblob public key file v1 ({'armored' if armored else 'binary'})")
            print(f"  container      {pub.label}  (suite {pub.suite.label})")
            print(f"  exchange key   kx-{pub.exchange_id.short}  id {pub.exchange_id.hex}")
            print(f"  signature key  sg-{pub.signature_id.short}  id {pub.signature_id.hex}")
        return 0
    blob = KeyBlob.from_bytes(dearmor(raw, BLOB) if armored else raw)
    fields = blob.fields()
    signed_end = next(f.offset for f in fields if not f.signed)
    if args.json:
        _emit_json(
            {
                "kind": "key blob",
                "version": 1,
                "size": signed_end + 2 + len(blob.signature),
                "armored": armored,
                "signed_range": [0, signed_end],
                "fields": [
                    {
                        "offset": f.offset,
                        "size": f.size,
                        "name": f.name,
                        "value": f.value,
                        "signed": f.signed,
                    }
                    for f in fields
                ],
                "verified": False,
            }
        )
        return 0
    total = signed_end + 2 + len(blob.signature)
    print(f"keyblob key blob v1, {total} bytes ({'armored' if armored else 'binary'})")
    print("offset  size  S  field                       value")
    for f in fields:
        mark = "*" if f.signed else " "
        print(f"{f.offset:>6}  {f.size:>4}  {mark}  {f.name:<26}  {f.value}")
    print(f"* signed: bytes 0..{signed_end - 1}, after the label 'keyblob/v1/blob-signature\\0'")
    print("  each wrapped key is also bound to bytes 0..name and its recipient id (FORMAT.md 2.4)")
    print(
        "  not verified: inspect needs no secret; run keyblob verify to check signer and signature"
    )
    return 0


def cmd_pubkey(ctx: Context) -> int:
    args = ctx.args
    container = ctx.open()
    if args.format == "pem":
        data = suites.public_pem(container.suite, container.exchange_public) + suites.public_pem(
            container.suite, container.signature_public, signature=True
        )
    else:
        pub = PublicKeyFile(
            container.suite, container.name, container.exchange_public, container.signature_public
        )
        data = armor(pub.to_bytes(), PUBLIC_KEY)
    _write_output(args.output, data)
    if args.output != "-":
        print(
            f"wrote the public keys of {container.name!r} to {args.output}: "
            f"kx-{container.exchange_id.short}, sg-{container.signature_id.short}",
            file=sys.stderr,
        )
    return 0


def cmd_trust_add(ctx: Context) -> int:
    import time  # noqa: PLC0415

    pub = _read_public_key_file(ctx.args.file)
    container = ctx.open()
    if pub.suite is not container.suite:
        raise UsageError(
            f"{ctx.args.file} is a {pub.suite.label} key; container {container.name!r} uses "
            f"{container.suite.label}"
        )
    signer = TrustedSigner(
        key_id=pub.signature_id,
        suite=pub.suite,
        public=pub.signature,
        exchange=pub.exchange,
        label=pub.label,
        added=int(time.time()),
    )
    container.update_state(lambda s: s.with_signer(signer))
    print(f"trusted sg-{signer.key_id.short} ({pub.label})")
    print(f"  fingerprint {signer.key_id.hex}: check it with the key's owner")
    return 0


def cmd_trust_list(ctx: Context) -> int:
    container = ctx.open()
    signers = container.state().trusted
    own: dict[str, Any] = {
        "key_id": container.signature_id.hex,
        "label": container.name,
        "own": True,
    }
    rows: list[dict[str, Any]] = [own] + [
        {"key_id": s.key_id.hex, "label": s.label, "own": False, "added": _iso(s.added)}
        for s in signers
    ]
    if ctx.args.json:
        _emit_json(rows)
        return 0
    for r in rows:
        note = "this container (always trusted)" if r["own"] else f"added {r['added']}"
        print(f"sg-{r['key_id'][:8]}  {r['key_id']}  {r['label']}  {note}")
    return 0


def cmd_trust_remove(ctx: Context) -> int:
    container = ctx.open()
    target = find_signer(container.state().trusted, ctx.args.id)
    container.update_state(lambda s: s.without_signer(target.key_id.hex)[0])
    print(f"no longer trusted: sg-{target.key_id.short} ({target.label})")
    return 0


def _progress(
    total: int | None, quiet: bool, what: str
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A progress bar on stderr for large inputs, only when stderr is a terminal."""
    if quiet or not sys.stderr.isatty() or (total is not None and total < PROGRESS_MIN):
        return None, lambda: None
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional: pip install keyblob[progress]
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, leave=False)

    def update(n: int) -> None:
        bar.update(n)

    return update, bar.close


def _input_stream(path: str | None) -> tuple[BinaryIO, int | None, Callable[[], None]]:
    if path is None or path == "-":
        return sys.stdin.buffer, None, lambda: None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the returned callable
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    return f, os.fstat(f.fileno()).st_size, f.close


def _stream_to_output(
    output: str | None, mode: int, work: Callable[[BinaryIO], object], *, refuse_tty: bool
) -> None:
    """Run ``work`` writing to stdout, or to a file that appears only if it succeeds."""
    if output is None or output == "-":
        if refuse_tty and sys.stdout.isatty():
            raise UsageError("refusing to write binary ciphertext to a terminal: use -o FILE")
        work(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        with atomic_output(Path(output), mode) as f:
            work(f)
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror}") from e


def cmd_encrypt(ctx: Context) -> int:
    args = ctx.args
    container = ctx.open()
    store = ctx.store()
    key = _refusing(args.name, lambda: blobs.load(container, store, args.name))
    src, size, close = _input_stream(args.input)
    update, done = _progress(size, args.quiet, "encrypt")
    try:
        _stream_to_output(
            args.output,
            0o644,
            lambda dst: files.encrypt_stream(key, src, dst, progress=update),
            refuse_tty=True,
        )
    finally:
        done()
        close()
    return 0


def cmd_decrypt(ctx: Context) -> int:
    args = ctx.args
    src, size, close = _input_stream(args.input)
    what = args.input or "standard input"
    update, done = _progress(size, args.quiet, "decrypt")
    opened: list[SoftwareContainer] = []

    def find_key(header: DataHeader) -> SessionKey:
        # Unlocked only once the header parsed: a non-keyblob input fails before the KDF.
        opened.append(ctx.open())
        return blobs.load(
            opened[0],
            ctx.store(),
            header.name,
            generation=header.generation,
            key_id=header.key_id,
        )

    try:
        _refusing(
            what,
            lambda: _stream_to_output(
                args.output,
                0o600,
                lambda dst: files.decrypt_stream(find_key, src, dst, progress=update),
                refuse_tty=False,
            ),
        )
    finally:
        done()
        close()
    return 0


# -- argument parsing ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Signed session-key blobs on storage nobody trusts.",
        epilog="exit status: 0 done, 2 usage, 3 refused (verification failed), "
        "4 not found, 5 wrong passphrase, 1 other error",
    )
    p.add_argument("--version", action="version", version="keyblob 0.1.0")
    p.add_argument("--home", help="home folder (env KEYBLOB_HOME, default ~/.keyblob)")
    p.add_argument("--store", help="store: a folder path (env KEYBLOB_STORE, default HOME/blobs)")
    p.add_argument("--container", help="container name (env KEYBLOB_CONTAINER, default 'default')")
    p.add_argument(
        "--passphrase-file", metavar="FILE", help="read the passphrase from FILE's first line"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def command(name: str, func: Callable[[Context], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    sp = command("init", cmd_init, "create a container")
    sp.add_argument("--suite", default="x25519", choices=["x25519", "rsa"])
    sp.add_argument("--bits", type=int, choices=[2048, 3072, 4096], help="RSA size (default 3072)")
    sp.add_argument("--container", dest="container_opt", help="container name (default 'default')")
    algorithms = [a.label for a in Algorithm]
    sp = command("new", cmd_new, "generate a session key, export it signed, store it")
    sp.add_argument("name")
    sp.add_argument("--algorithm", default="aes-256-gcm", choices=algorithms)
    sp.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="FILE",
        help="also wrap for this public key file",
    )
    sp = command("rotate", cmd_rotate, "make the next generation of a key")
    sp.add_argument("name")
    sp.add_argument("--algorithm", choices=algorithms, help="default: the current one")
    sp.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="FILE",
        help="also wrap for this public key file",
    )
    sp = command("list", cmd_list, "list stored keys (verified; never key bytes)")
    sp.add_argument("--json", action="store_true")
    sp = command("show", cmd_show, "show a stored key's metadata (verified; never key bytes)")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true")
    sp = command("export", cmd_export, "write the stored blob of a key to a file")
    sp.add_argument("name")
    sp.add_argument("-o", "--output", required=True, metavar="FILE", help="'-' for standard output")
    sp.add_argument("--armor", action="store_true", help="text armor instead of binary")
    sp = command("import", cmd_import, "verify a blob, then add it to the store")
    sp.add_argument("file")
    sp.add_argument("--name", help="refuse unless the blob is signed for this name")
    sp = command(
        "verify", cmd_verify, "check a blob without storing it; the exit status is the verdict"
    )
    sp.add_argument("file")
    sp.add_argument("--name", help="refuse unless the blob is signed for this name")
    sp.add_argument("--json", action="store_true")
    sp = command(
        "inspect", cmd_inspect, "show the structure of a blob or public key file (no secret needed)"
    )
    sp.add_argument("file")
    sp.add_argument("--json", action="store_true")
    sp = command("encrypt", cmd_encrypt, "encrypt data under the newest generation of a key")
    sp.add_argument("name")
    sp.add_argument("-i", "--input", metavar="IN", help="default: standard input")
    sp.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp = command("decrypt", cmd_decrypt, "decrypt data; the key is found from its header")
    sp.add_argument("-i", "--input", metavar="IN", help="default: standard input")
    sp.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp = command("pubkey", cmd_pubkey, "write the container's public keys, to hand to others")
    sp.add_argument("--format", default="keyblob", choices=["keyblob", "pem"])
    sp.add_argument("-o", "--output", default="-", metavar="FILE")
    trust = sub.add_parser(
        "trust", help="manage trusted signers", description="manage trusted signers"
    )
    tsub = trust.add_subparsers(
        dest="trust_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    sp = tsub.add_parser("add", help="trust the signature key in a public key file")
    sp.add_argument("file")
    sp.set_defaults(func=cmd_trust_add)
    sp = tsub.add_parser("list", help="list trusted signers")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_trust_list)
    sp = tsub.add_parser("remove", help="stop trusting a signer (id or its first 8+ hex digits)")
    sp.add_argument("id")
    sp.set_defaults(func=cmd_trust_remove)
    return p


def _print_error(message: str, hints: Sequence[str] = (), stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    print(f"{PROG}: error: {message}", file=out)
    for hint in hints:
        print(f"{PROG}: hint: {hint}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "container_opt", None):
        args.container = args.container_opt
    try:
        return int(args.func(Context(args)))
    except _Refused as e:
        if args.debug:
            raise
        _print_error(str(e), e.hints)
        return e.exit_status
    except KeyblobError as e:
        if args.debug:
            raise
        _print_error(str(e))
        return e.exit_status
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (keyblob list | head): not an error worth a message.
        sys.stderr.close()
        return 1
