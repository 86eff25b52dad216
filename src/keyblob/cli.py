"""The command line: argv -> public API -> short output, or one error line and an exit status.

Exit statuses (docs/CLI.md): 0 done; 2 usage; 3 refused (a blob, key file or ciphertext
was malformed, unsupported, or failed verification); 4 not found; 5 wrong passphrase; 1
anything else.  Errors are mapped to statuses in one place, :func:`main`.  No key byte is
ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import importlib.util
import json
import os
import stat
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO, TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyblob import blobs, files
from keyblob.atomic import atomic_output, read_bounded
from keyblob.errors import (
    FormatError,
    KeyblobError,
    LegacyAlgorithmWarning,
    NotFoundError,
    PassphraseError,
    PassphraseRequired,
    StorageError,
    UsageError,
    VerificationError,
    WeakKeyError,
)
from keyblob.format import KeyBlob, PublicKeyFile, fingerprint
from keyblob.format.armor import BLOB, PUBLIC_KEY, armor, dearmor, is_armored
from keyblob.format.blob import MAX_BLOB_SIZE
from keyblob.format.data import DataHeader
from keyblob.keys import Algorithm, KeyRole, SessionKey, Suite, check_name
from keyblob.providers import suites
from keyblob.providers.software import DEFAULT_CONTAINER, Home, SoftwareContainer
from keyblob.storage import Store, open_store
from keyblob.trust import (
    OUT_OF_SCOPE,
    CapiSigner,
    State,
    TrustedSigner,
    capi_fingerprint,
    describe_scope,
    find_signer,
    parse_scope,
)


def _lazy_module(name: str) -> types.ModuleType:
    """The module ``name``, executed on first attribute access (importlib's LazyLoader)."""
    if name in sys.modules:  # already imported: a second copy would lose its submodules
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - our own package
        raise ImportError(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from keyblob import mscapi
else:
    # CryptoAPI support is loaded on first use: most commands never touch it, and every
    # command pays for what the CLI imports at start (keyblob --help is measured).
    mscapi = _lazy_module("keyblob.mscapi")

PROG = "keyblob"
MAX_INPUT_FILE = 65536
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
PROGRESS_MIN = 16 * 1024 * 1024  # a bar for inputs of 16 MiB and more (or of unknown size)


class _Refused(KeyblobError):
    """A VerificationError (or a FormatError) about one file: 'refused FILE: reason'."""

    exit_status = 3


# -- small helpers ---------------------------------------------------------------------


_400_YEARS = 146097 * 86400  # the Gregorian calendar repeats every 400 years, to the second


def _iso(ts: int) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ`` for any ``created`` a blob may sign (FORMAT.md 2.2.7
    allows up to 2^63-1, far past datetime's year 9999): a later year is written in full
    after a ``+``, as ISO 8601's expanded form does."""
    cycles, rest = divmod(ts, _400_YEARS)
    t = datetime.datetime.fromtimestamp(rest, datetime.UTC)
    year = t.year + 400 * cycles
    return f"{'+' if year > 9999 else ''}{year:04d}-{t:%m-%dT%H:%M:%SZ}"


def _printable(text: str) -> str:
    """``text`` as any UTF-8 output takes it: bytes of a path that are not UTF-8 (Python
    holds them as surrogates) become ``\\xNN`` escapes instead of an encoding error."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _tilde(path: Path | str) -> str:
    text, home = str(path), str(Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def _read_file(
    path: str,
    limit: int = MAX_INPUT_FILE,
    *,
    what: str = "a key blob",
    too_large: type[KeyblobError] = FormatError,
) -> bytes:
    """The file's bytes (``-``: standard input); over ``limit`` it cannot be ``what``."""
    where = "standard input" if path == "-" else path
    too_big = f"{where}: larger than {limit} bytes: too large for {what}"
    try:
        data = sys.stdin.buffer.read(limit + 1) if path == "-" else read_bounded(Path(path), limit)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except ValueError:  # read_bounded: over the limit
        raise too_large(too_big) from None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > limit:  # standard input
        raise too_large(too_big)
    return data


def _refuse_terminal(output: str | None, what: str, hint: str = "use -o FILE") -> None:
    """Secret or binary bytes never go to a terminal: standard output (``None`` or "-") or
    a path that is one (``-o /dev/tty``, ``-o /dev/stdout``)."""
    to_stdout = output is None or output == "-"
    if sys.stdout.isatty() if to_stdout else _is_terminal(cast(str, output)):
        raise UsageError(f"refusing to write {what} to a terminal: {hint}")


def _is_terminal(path: str) -> bool:
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _write_output(path: str, data: bytes, *, mode: int = 0o644, refuse_tty: bool = False) -> None:
    """``data`` to ``path`` as :func:`_stream_to_output` writes (a secret never to a
    terminal)."""
    if refuse_tty:
        _refuse_terminal(path, "a secret key")
    _stream_to_output(path, mode, lambda f: f.write(data), refuse_tty=False)


def _refuse_missing_folder(path: str) -> None:
    """``-o newdir/`` names a folder: without one, Path() would drop the slash and write a
    file called newdir."""
    if path.endswith(("/", os.sep)) and not os.path.isdir(path):
        raise UsageError(f"{path}: no such folder")


def _read_public_key_file(path: str, data: bytes | None = None) -> PublicKeyFile:
    data = _read_file(path) if data is None else data
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

    def _given_passphrase(self) -> bytes | None:
        """The first line of --passphrase-file, else KEYBLOB_PASSPHRASE, else None (the
        option given on the command line wins over the environment)."""
        if self.args.passphrase_file:
            raw = _read_file(
                self.args.passphrase_file, 4096, what="a passphrase file", too_large=UsageError
            )
            return raw.split(b"\n", 1)[0].rstrip(b"\r")
        text = os.environ.get("KEYBLOB_PASSPHRASE")
        if text is None:
            return None
        try:
            return text.encode("utf-8")  # as the prompt gives it: the same text, same bytes
        except UnicodeEncodeError:  # bytes the locale could not decode: taken as given
            return os.fsencode(text)

    def passphrase(self, *, new: bool = False) -> bytes:
        """From KEYBLOB_PASSPHRASE, --passphrase-file, or a no-echo prompt (asked once per
        command: the Argon2id unlock it feeds dominates a command's time)."""
        given = self._given_passphrase()
        if given is not None:
            return _not_empty(given)
        if not sys.stdin.isatty():
            raise UsageError(
                "no passphrase: set KEYBLOB_PASSPHRASE, use --passphrase-file, or run in a terminal"
            )
        if new:
            first = _prompt(f"Passphrase for the new container {self.container_name!r}: ")
            if _prompt("Again: ") != first:
                raise UsageError("the two passphrases differ; nothing was created")
            return first
        return _prompt(f"Passphrase for container {self.container_name!r}: ")

    def open(self) -> SoftwareContainer:
        return self.home.open(self.container_name, self.passphrase())

    def load(self, name: str, container: SoftwareContainer | None = None) -> SessionKey:
        """The newest generation of ``name`` (or --generation's), every import check made
        (refusals exit 3)."""
        opened = container or self.open()
        generation = getattr(self.args, "generation", None)
        key: SessionKey = _refusing(
            name, lambda: blobs.load(opened, self.store(), name, generation=generation)
        )
        return key

    def key_passphrase(self, what: str) -> bytes:
        """The passphrase of an encrypted key file (not a container's), from the same
        sources as :meth:`passphrase`."""
        given = self._given_passphrase()
        if given is not None:
            return _not_empty(given)
        if not sys.stdin.isatty():
            raise UsageError(f"{what} is encrypted: give --passphrase-file")
        return _prompt(f"Passphrase for {what}: ")


def _prompt(text: str) -> bytes:
    """A passphrase typed at a no-echo prompt: its UTF-8 bytes; none (Ctrl-D) is a usage
    error, not a traceback."""
    try:
        typed = getpass.getpass(text)
    except EOFError:
        raise UsageError("no passphrase given (end of input)") from None
    return _not_empty(typed.encode("utf-8"))


def _not_empty(passphrase: bytes) -> bytes:
    if not passphrase:
        raise UsageError(
            "the passphrase is empty (an empty KEYBLOB_PASSPHRASE, an empty first line of "
            "--passphrase-file, or nothing typed)"
        )
    return passphrase


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


def _note_untrusted(container: SoftwareContainer, to: Sequence[PublicKeyFile]) -> None:
    """--to a container not trusted here: the moment to compare its fingerprint."""
    if not to:
        return  # no recipient to note: no state to read
    state = container.state()
    for pub in to:
        if pub.signature_id != container.signature_id and state.signer(pub.signature_id) is None:
            print(
                f"{PROG}: note: wrapped for {pub.label!r}, which is not a trusted container: "
                f"its owner should see the fingerprint {pub.fingerprint}",
                file=sys.stderr,
            )


def cmd_new(ctx: Context) -> int:
    args = ctx.args
    to = [_read_public_key_file(p) for p in args.to]
    container = ctx.open()
    store = ctx.store()
    key = blobs.generate(
        container,
        store,
        args.name,
        algorithm=Algorithm.from_label(args.algorithm),
        to=to,
        legacy=args.legacy,
    )
    print(
        _key_line(key.name, key.generation, key.algorithm, key.key_id.short, _tilde(store.location))
    )
    _note_untrusted(container, to)
    return 0


def cmd_rotate(ctx: Context) -> int:
    args = ctx.args
    to = [_read_public_key_file(p) for p in args.to]
    container = ctx.open()
    store = ctx.store()
    algorithm = Algorithm.from_label(args.algorithm) if args.algorithm else None
    key = _refusing(
        args.name,
        lambda: blobs.rotate(
            container, store, args.name, algorithm=algorithm, to=to, legacy=args.legacy
        ),
    )
    print(
        _key_line(key.name, key.generation, key.algorithm, key.key_id.short, _tilde(store.location))
    )
    _note_untrusted(container, to)
    return 0


def _describe(v: blobs.Verified, container: SoftwareContainer, state: State) -> dict[str, Any]:
    h = v.header
    trusted = state.signer(h.signer_id)
    signer = (
        "this container"
        if h.signer_id == container.signature_id
        else (trusted.label if trusted else "?")
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
        "origin": "keyblob" if h.algorithm.capi_alg_id is None else "cryptoapi",
        "capi_alg_id": h.algorithm.capi_alg_id,
    }


def _refusing(what: str, action: Callable[[], Any]) -> Any:
    """Run ``action``; a failed check becomes 'refused WHAT: reason' with hints."""
    try:
        return action()
    except VerificationError as e:
        raise _Refused(f"refused {what}: {e}", hints=e.hints) from None
    except FormatError as e:
        raise _Refused(f"refused {what}: {e}", hints=e.hints) from None


def cmd_list(ctx: Context) -> int:
    container = ctx.open()
    store = ctx.store()
    state = container.state()
    rows, refused = [], []
    names = store.names()
    # Names this container has seen that the store lacks: deleted, or kept in another store
    # (high-water marks are per name, not per store), so a warning, not a refusal.
    missing = sorted(set(state.high_water) - set(names))
    for name in names:
        try:
            v = blobs.open_latest(container, store, name, unwrap=False)
        except (VerificationError, FormatError) as e:
            refused.append((name, str(e)))
            continue
        rows.append(_describe(v, container, state))
    if ctx.args.json:
        _emit_json(
            {
                "store": store.location,
                "keys": rows,
                "refused": [{"name": n, "reason": r} for n, r in refused],
                "missing": [{"name": n, "seen": state.generation_floor(n)} for n in missing],
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
    for name in missing:
        _print_warning(
            f"{name}: this container has seen generation {state.generation_floor(name)}, but "
            f"{_tilde(store.location)} has none (deleted, or the key is in another store)"
        )
    return 3 if refused else 0


def _origin(capi_alg_id: int | None) -> str:
    if capi_alg_id is None:
        return "keyblob session key"
    return (
        f"CryptoAPI session key ({mscapi.alg_name(capi_alg_id)}): use keyblob capi encrypt/decrypt"
    )


def cmd_show(ctx: Context) -> int:
    container = ctx.open()
    store = ctx.store()
    v = _refusing(
        ctx.args.name, lambda: blobs.open_latest(container, store, ctx.args.name, unwrap=False)
    )
    doc = _describe(v, container, container.state())
    doc["store"] = store.location
    if ctx.args.json:
        _emit_json(doc)
        return 0
    rows = [
        ("name", doc["name"]),
        ("generation", str(doc["generation"])),
        ("algorithm", doc["algorithm"]),
        ("origin", _origin(doc["capi_alg_id"])),
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
    if args.generation is None:
        v = _refusing(
            args.name, lambda: blobs.open_latest(container, store, args.name, unwrap=False)
        )
    else:
        v = _refusing(
            args.name,
            lambda: blobs.open_stored(container, store, args.name, args.generation, unwrap=False),
        )
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
    try:
        data = _read_file(args.file, MAX_BLOB_SIZE * 2)
    except KeyblobError as e:  # a script reading --json gets JSON, whatever failed
        if args.json:
            _emit_json({"file": args.file, "valid": False, "reason": str(e)})
        raise
    container = ctx.open()
    try:
        v = _refusing(args.file, lambda: blobs.verify(container, data, name=args.name))
    except _Refused as e:
        if args.json:
            _emit_json({"file": args.file, "valid": False, "reason": str(e)})
        raise
    doc = _describe(v, container, container.state())
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
            "fingerprint": pub.fingerprint,
        }
        if args.json:
            _emit_json(doc)
        else:
            print(f"keyblob public key file v1 ({'armored' if armored else 'binary'})")
            print(f"  container      {pub.label}  (suite {pub.suite.label})")
            print(f"  exchange key   kx-{pub.exchange_id.short}  id {pub.exchange_id.hex}")
            print(f"  signature key  sg-{pub.signature_id.short}  id {pub.signature_id.hex}")
            print(f"  fingerprint    {pub.fingerprint}  (of both keys)")
        return 0
    if not armored and raw[:4] != b"KBLB" and mscapi.looks_like_capi_blob(raw):
        return _inspect_capi(raw, args.json)
    try:
        blob = KeyBlob.from_bytes(dearmor(raw, BLOB) if armored else raw)
    except FormatError as e:
        raise FormatError(
            f"{args.file}: {e}",
            hints=(
                "inspect reads keyblob key blobs and public key files (binary or armored) and "
                "CryptoAPI SIMPLEBLOB, PUBLICKEYBLOB, PRIVATEKEYBLOB and PLAINTEXTKEYBLOB files",
            ),
        ) from None
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


def _inspect_capi(raw: bytes, as_json: bool) -> int:
    kind, fields = mscapi.describe(raw)
    if as_json:
        _emit_json(
            {
                "kind": kind,
                "size": len(raw),
                "fields": [
                    {"offset": f.offset, "size": f.size, "name": f.name, "value": f.value}
                    for f in fields
                ],
            }
        )
        return 0
    print(f"CryptoAPI {kind}, {len(raw)} bytes (little-endian fields; see docs/MSCAPI.md)")
    print("offset  size  field                       value")
    for f in fields:
        print(f"{f.offset:>6}  {f.size:>4}  {f.name:<26}  {f.value}")
    print("  not verified: a CryptoAPI blob carries no signature of its own")
    return 0


def cmd_pubkey(ctx: Context) -> int:
    args = ctx.args
    container = ctx.open()
    if args.format == "msblob":
        # One key per PUBLICKEYBLOB: the exchange key, which a Windows peer wraps keys for;
        # keyblob capi export-public --slot signature gives the signature key.
        data = _public_key_blob(container, KeyRole.EXCHANGE)
    elif args.format == "pem":
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
    if args.format == "keyblob":
        print(
            f"fingerprint {_own_fingerprint(container)}: whoever trusts this file "
            "must see the same one",
            file=sys.stderr,
        )
    return 0


def _own_fingerprint(container: SoftwareContainer) -> str:
    return fingerprint(container.suite, container.exchange_public, container.signature_public)


def _is_keyblob_public_key(data: bytes) -> bool:
    """A keyblob public key file (FORMAT.md 3), binary or armored, rather than a CryptoAPI
    or PEM/DER RSA key."""
    return data.startswith(b"KBPK") or data.lstrip(b" \t\r\n").startswith(b"-----BEGIN KEYBLOB")


def _scope_note(names: tuple[str, ...] | None) -> str:
    return "" if names is None else f", for {describe_scope(names)}"


def cmd_trust_add(ctx: Context) -> int:
    import time  # noqa: PLC0415

    path = ctx.args.file
    data = _read_file(path, what="a public key file")
    # Without --names, a new signer may sign every name and a known one keeps its scope:
    # running the same trust add again never widens what was narrowed.
    scope = parse_scope(ctx.args.names) if ctx.args.names else None
    if not _is_keyblob_public_key(data):
        return _trust_add_capi(ctx, path, data, scope)
    pub = _read_public_key_file(path, data)
    container = ctx.open()
    if pub.suite is not container.suite:
        raise UsageError(
            f"{path} is a {pub.suite.label} key; container {container.name!r} uses "
            f"{container.suite.label}: a signer of another suite could never sign a blob it accepts"
        )
    if pub.signature_id == container.signature_id:
        raise UsageError(
            f"{path} holds this container's own signature key: it is always trusted, for every name"
        )
    signer = TrustedSigner(
        key_id=pub.signature_id,
        suite=pub.suite,
        public=pub.signature,
        exchange=pub.exchange,
        label=pub.label,
        added=int(time.time()),
        names=scope,
    )
    before: list[TrustedSigner | None] = []

    def add(state: State) -> State:  # under the lock: no other trust add in between
        blobs.check_known_exchange(container, state, pub)
        old = state.signer(signer.key_id)
        before.append(old)
        names = scope if ctx.args.names or old is None else old.names
        return state.with_signer(replace(signer, names=names))

    container.update_state(add)
    handle = f"sg-{signer.key_id.short} ({pub.label})"
    print(_trust_outcome(handle, before[0], scope if ctx.args.names else None, ctx.args.names))
    print(
        f"  fingerprint {pub.fingerprint}: check it with the key's owner "
        "(keyblob pubkey shows theirs)"
    )
    return 0


def _trust_outcome(
    handle: str,
    old: TrustedSigner | CapiSigner | None,
    scope: tuple[str, ...] | None,
    names_given: list[str] | None,
) -> str:
    """What trust add did, in one line: added, scope changed, or nothing to do."""
    if old is None:
        return f"trusted {handle}{_scope_note(scope)}"
    if names_given and old.names != scope:
        return (
            f"updated {handle}: now for {describe_scope(scope)} (was {describe_scope(old.names)})"
        )
    return f"already trusted: {handle}{_scope_note(old.names)}"


def _trust_add_capi(ctx: Context, path: str, data: bytes, scope: tuple[str, ...] | None) -> int:
    """Pin a CryptoAPI signer: an RSA public key (PUBLICKEYBLOB, PEM, DER, .NET XML) that
    capi import-simpleblob then checks SIMPLEBLOB signatures against (docs/MSCAPI.md)."""
    import time  # noqa: PLC0415

    try:
        loaded = mscapi.load_rsa_key(data)
    except FormatError as e:
        raise FormatError(
            f"{path}: neither a keyblob public key file nor an RSA public key "
            f"(PUBLICKEYBLOB, PEM, DER): {e}"
        ) from None
    public = loaded.key
    if not isinstance(public, rsa.RSAPublicKey):
        raise UsageError(
            f"{path} holds a private key: pin the signer's public key, written by: "
            f"keyblob capi convert {path} --to msblob --public -o SIGNER.pubblob"
        )
    # A pinned signer is read with, never written with: the reading rule of docs/MSCAPI.md 5
    # (warns under 2048 bits), with no --legacy way round it: under 1024 bits anyone could
    # forge its signatures.
    try:
        mscapi.check_rsa_size(
            public, mscapi.RsaUse.READ, legacy=False, role="signer's key", action="pinning it"
        )
    except WeakKeyError as e:
        raise UsageError(
            f"{path} is an RSA-{e.bits} key: below {e.floor} bits anyone could forge its "
            "signatures, so it is not pinned as a signer"
        ) from None
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stem = Path(path).stem.lower()
    try:
        label = check_name(stem)
    except ValueError:
        label = "capi-signer"
    signer = CapiSigner(public=spki, label=label, added=int(time.time()), names=scope)
    container = ctx.open()
    before: list[CapiSigner | None] = []

    def add(state: State) -> State:
        old = state.capi_signer(spki)
        before.append(old)
        names = scope if ctx.args.names or old is None else old.names
        return state.with_capi_signer(replace(signer, names=names))

    container.update_state(add)
    handle = f"CryptoAPI signer {label!r} (RSA-{public.key_size}, {loaded.detail})"
    if before[0] is not None:
        handle = f"CryptoAPI signer {before[0].label!r} (RSA-{public.key_size})"
    print(_trust_outcome(handle, before[0], scope if ctx.args.names else None, ctx.args.names))
    print(
        f"  fingerprint {signer.fingerprint}: check it with the key's owner "
        "(docs/MSCAPI.md 7.2 shows how)"
    )
    return 0


def cmd_trust_list(ctx: Context) -> int:
    container = ctx.open()
    state = container.state()
    own: dict[str, Any] = {
        "kind": "keyblob",
        "key_id": container.signature_id.hex,
        "fingerprint": _own_fingerprint(container),
        "label": container.name,
        "own": True,
        "names": None,
    }
    rows: list[dict[str, Any]] = [own] + [
        {
            "kind": "keyblob",
            "key_id": s.key_id.hex,
            "fingerprint": fingerprint(s.suite, s.exchange, s.public),
            "label": s.label,
            "own": False,
            "added": _iso(s.added),
            "added_unix": s.added,
            "names": None if s.names is None else list(s.names),
        }
        for s in state.trusted
    ]
    rows += [
        {
            "kind": "capi",
            "key_id": None,
            "fingerprint": s.fingerprint,
            "label": s.label,
            "own": False,
            "added": _iso(s.added),
            "added_unix": s.added,
            "names": None if s.names is None else list(s.names),
        }
        for s in state.capi_signers
    ]
    if ctx.args.json:
        _emit_json(rows)
        return 0
    for r in rows:
        handle = f"sg-{r['key_id'][:8]}" if r["kind"] == "keyblob" else "capi-rsa   "
        if r["own"]:
            note = "this container (always trusted)"
        else:
            names = None if r["names"] is None else tuple(r["names"])
            kind = "CryptoAPI signer, " if r["kind"] == "capi" else ""
            note = f"{kind}added {r['added']}, for {describe_scope(names)}"
        print(f"{handle}  fingerprint {r['fingerprint']}  {r['label']}  {note}")
    return 0


def cmd_trust_remove(ctx: Context) -> int:
    container = ctx.open()
    given = ctx.args.id.lower().removeprefix("sg-")
    if len(given) >= 8 and (
        container.signature_id.hex.startswith(given)
        or _own_fingerprint(container).startswith(given)
    ):
        raise UsageError(
            f"sg-{container.signature_id.short} is this container's own signature key: "
            "it is always trusted"
        )
    target = find_signer(container.state(), ctx.args.id)
    if isinstance(target, CapiSigner):
        container.update_state(lambda s: s.without_capi_signer(target.public))
        print(f"no longer trusted: CryptoAPI signer {target.label!r} ({target.fingerprint})")
        return 0
    container.update_state(lambda s: s.without_signer(target.key_id))
    print(f"no longer trusted: sg-{target.key_id.short} ({target.label})")
    return 0


def _progress(
    total: int | None, quiet: bool, what: str
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A progress bar on stderr for large inputs, only when stderr is a terminal."""
    if quiet or not sys.stderr.isatty() or (total is not None and total < PROGRESS_MIN):
        return None, lambda: None
    from tqdm import tqdm  # noqa: PLC0415 - imported only when a bar is shown: start-up time

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
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    return f, os.fstat(f.fileno()).st_size, f.close


def _stream_to_output(
    output: str | None, mode: int, work: Callable[[BinaryIO], object], *, refuse_tty: bool
) -> None:
    """Run ``work`` writing to stdout, or to a file that appears only if it succeeds."""
    if refuse_tty:
        _refuse_terminal(output, "binary ciphertext")
    if output is None or output == "-":
        work(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    _refuse_missing_folder(output)
    try:
        with atomic_output(Path(output), mode) as f:
            work(f)
    except IsADirectoryError:
        raise UsageError(f"{output} is a folder: give a file name") from None
    except OSError as e:
        raise StorageError(f"cannot write {output}: {e.strerror}") from e


_Key = TypeVar("_Key")


def _encrypt_command(
    ctx: Context,
    prepare: Callable[[SessionKey], _Key],
    seal: Callable[[_Key, BinaryIO, BinaryIO, Callable[[int], None] | None], object],
) -> int:
    """encrypt and capi encrypt: the input opened first (a missing one fails before the
    unlock), NAME loaded and ``prepare``d, then ``seal`` writes -o or standard output
    (never a terminal), with a progress bar."""
    args = ctx.args
    src, size, close = _input_stream(args.input)
    try:
        key = prepare(ctx.load(args.name))
        update, done = _progress(size, args.quiet, "encrypt")
        try:
            _stream_to_output(
                args.output, 0o644, lambda dst: seal(key, src, dst, update), refuse_tty=True
            )
        finally:
            done()
    finally:
        close()
    return 0


def cmd_encrypt(ctx: Context) -> int:
    return _encrypt_command(
        ctx,
        lambda key: key,
        lambda key, src, dst, progress: files.encrypt_stream(key, src, dst, progress=progress),
    )


def cmd_decrypt(ctx: Context) -> int:
    args = ctx.args
    src, size, close = _input_stream(args.input)
    what = args.input or "standard input"
    update, done = _progress(size, args.quiet, "decrypt")

    def find_key(header: DataHeader) -> SessionKey:
        # Unlocked only once the header parsed: a non-keyblob input fails before the KDF.
        store = ctx.store()
        try:
            return blobs.load(
                ctx.open(),
                store,
                header.name,
                generation=header.generation,
                key_id=header.key_id,
            )
        except (VerificationError, FormatError) as e:  # say it is the key, not the data
            raise type(e)(
                f"the key it names, {header.name} generation {header.generation} in "
                f"{_tilde(store.location)}: {e}",
                hints=e.hints,
            ) from None

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


# -- keyblob capi: CryptoAPI blobs, signatures and data ------------------------------------

UNSIGNED_WARNING = (
    "{file} is not signed: anyone who could write to the disk it came from could have put a "
    "session key of their own in it, and would read everything encrypted with it"
)
UNSIGNED_REFUSED = (
    "refused {file}: no --signature given; a SIMPLEBLOB is checked against the signer's "
    "CryptSignHash signature before it is unwrapped"
)


def _capi_file(path: str) -> bytes:
    return _read_file(path, what="a CryptoAPI file")


def _capi_public_blob(path: str) -> mscapi.PublicKeyBlob:
    try:
        return mscapi.PublicKeyBlob.from_bytes(_capi_file(path))
    except FormatError as e:
        raise FormatError(
            f"{path}: not a PUBLICKEYBLOB ({e})",
            hints=(
                "a key in PEM, DER or .NET XML converts with: "
                f"keyblob capi convert {path} --to msblob --public -o KEY.pubblob",
            ),
        ) from None


_T = TypeVar("_T")


def _sized(path: str, action: Callable[[], _T]) -> _T:
    """Run ``action``; an RSA key under the size it allows is refused in the command line's
    words (docs/MSCAPI.md 5), naming the file it came from."""
    try:
        return action()
    except WeakKeyError as e:
        if e.reading:
            rule = f"below {e.floor} bits is refused (use --legacy to read old data anyway)"
        else:
            rule = f"below {e.floor} bits, {e.action} needs --legacy"
        raise UsageError(f"{path}: the {e.role} is RSA-{e.bits}; {rule}") from None


def _capi_check_signature(
    args: argparse.Namespace,
    blob: bytes,
    what: str,
    pins: Callable[[], tuple[CapiSigner, ...]] | None = None,
    name: str | None = None,
) -> bool:
    """The procedure's cure: the SIMPLEBLOB's signature is checked before any unwrap.

    ``pins`` gives the container's pinned CryptoAPI signers (capi import-simpleblob; None
    where no home is used).  Once any is pinned, only they are accepted, each for the names
    its scope allows (``name``), and --signer may be left out (docs/MSCAPI.md 7.2).  The
    signer's fingerprint is shown on every use.

    Returns whether the blob is authenticated (False only with --unsigned)."""
    if args.unsigned and args.signature is not None:
        raise UsageError("--unsigned and --signature contradict each other: give one")
    if args.signature is None:
        if not args.unsigned:
            raise _Refused(
                UNSIGNED_REFUSED.format(file=what),
                hints=(
                    "give --signature SIG --signer PUBLICKEYBLOB, or --unsigned to accept the risk",
                ),
            )
        if pins is not None and (pinned := pins()):
            raise _Refused(
                f"refused {what}: it is not signed, and this container takes SIMPLEBLOBs only "
                f"from its {len(pinned)} pinned CryptoAPI signer(s)",
                hints=("keyblob trust list shows them; give --signature SIG",),
            )
        _print_warning(UNSIGNED_WARNING.format(file=what))
        return False
    if args.signer is None and pins is None:
        raise UsageError("--signature needs --signer PUBLICKEYBLOB (the signer's public key)")
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    signature = _capi_file(args.signature)
    pinned = pins() if pins is not None else ()
    by: CapiSigner | None
    if args.signer is None:
        if not pinned:
            raise UsageError(
                "--signature needs --signer PUBLICKEYBLOB (the signer's public key), or a "
                "pinned CryptoAPI signer: keyblob trust add SIGNER.pubblob"
            )
        by = _capi_pinned_signer(pinned, signature, blob, hash_alg, what)
        if name is not None:
            _capi_check_scope(by, name, what)
    else:
        key = _capi_public_blob(args.signer).to_public_key()
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        found = next((p for p in pinned if p.public == spki), None)
        if pinned and found is None:  # fail closed: once pinned, no other signer
            raise _Refused(
                f"refused {what}: its signer {args.signer} (fingerprint "
                f"{capi_fingerprint(spki)}) is not a pinned CryptoAPI signer",
                hints=(
                    "the signer file may have been replaced along with the blob; if you expect",
                    "this signer, compare its fingerprint with its owner, then run: "
                    f"keyblob trust add {args.signer}",
                ),
            )
        if found is not None and name is not None:
            _capi_check_scope(found, name, what)  # step 2 before step 3, as for blobs
        _sized(
            args.signer,
            lambda: _refusing(
                what,
                lambda: mscapi.verify_signature(
                    key, signature, blob, hash_alg=hash_alg, legacy=args.legacy
                ),
            ),
        )
        by = found
        if found is None:
            pin = f"; pin it once: keyblob trust add {args.signer}" if pins is not None else ""
            _print_note(
                f"signer {args.signer} has fingerprint {capi_fingerprint(spki)}: compare it "
                f"with the signer's owner{pin}"
            )
    if by is not None:
        _print_note(
            f"signed by pinned CryptoAPI signer {by.label!r} (fingerprint {by.fingerprint})"
        )
    return True


def _capi_pinned_signer(
    pinned: tuple[CapiSigner, ...],
    signature: bytes,
    blob: bytes,
    hash_alg: mscapi.AlgId,
    what: str,
) -> CapiSigner:
    """The pinned signer whose key the signature verifies under."""
    for signer in pinned:
        key = serialization.load_der_public_key(signer.public)
        try:
            mscapi.verify_signature(cast(rsa.RSAPublicKey, key), signature, blob, hash_alg=hash_alg)
        except VerificationError:
            continue
        return signer
    raise _Refused(
        f"refused {what}: the signature verifies under none of the {len(pinned)} pinned "
        "CryptoAPI signer(s)",
        hints=("the blob may have been substituted; keyblob trust list shows the pinned signers",),
    )


def _capi_check_scope(signer: CapiSigner, name: str, what: str) -> None:
    if not signer.allows(name):
        raise _Refused(
            f"refused {what}: "
            + OUT_OF_SCOPE.format(
                signer=f"CryptoAPI signer {signer.label!r} ({signer.fingerprint})",
                scope=describe_scope(signer.names),
                name=name,
            ),
            hints=(
                "if that signer should sign this name too, widen its scope: "
                "keyblob trust add SIGNER.pubblob --names PATTERN,...",
            ),
        )


def _capi_key(session: SessionKey) -> mscapi.CapiKey:
    alg_id = session.algorithm.capi_alg_id
    if alg_id is None:
        raise UsageError(
            f"{session.name} is a {session.algorithm.label} key, not a CryptoAPI key: "
            "use keyblob encrypt/decrypt, or make one with "
            "keyblob new NAME --algorithm capi-aes-256"
        )
    return mscapi.CapiKey.new(alg_id, session.unsafe_raw_bytes(), simpleblob=True)


def _iv(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError("--iv must be hex digits (one cipher block)") from None


def cmd_capi_import_keypair(ctx: Context) -> int:
    args = ctx.args
    blob = mscapi.PrivateKeyBlob.from_bytes(_capi_file(args.file))
    slot = args.slot or ("signature" if blob.alg_id is mscapi.AlgId.RSA_SIGN else "exchange")
    role = KeyRole.SIGNATURE if slot == "signature" else KeyRole.EXCHANGE
    key = blob.to_private_key()  # full validation: the key enters the home here
    try:  # the suite's own rules (size, exponent), before the unlock
        suites.load_exchange_public(Suite.RSA, suites.public_bytes(key))
    except FormatError as e:
        raise UsageError(
            f"{args.file} (RSA-{key.key_size}) cannot be a container key: {e}. Its data can "
            f"still be read without a home: keyblob capi decrypt --private {args.file} "
            "--simpleblob … (docs/MSCAPI.md 7.3)"
        ) from None
    container = ctx.open()
    container.replace_key_pair(role, key, force=args.force)
    new_id = container.signature_id if role is KeyRole.SIGNATURE else container.exchange_id
    print(
        f"imported {args.file} as the {slot} key of {container.name!r}: "
        f"{role.prefix}-{new_id.short} (RSA-{key.key_size}), sealed at rest"
    )
    return 0


def cmd_capi_export_public(ctx: Context) -> int:
    args = ctx.args
    role = KeyRole.SIGNATURE if args.slot == "signature" else KeyRole.EXCHANGE
    _write_output(args.output, _public_key_blob(ctx.open(), role))
    return 0


def _public_key_blob(container: SoftwareContainer, role: KeyRole) -> bytes:
    """The container's ``role`` public key as a PUBLICKEYBLOB (CALG_RSA_KEYX or _SIGN)."""
    if container.suite is not Suite.RSA:
        raise UsageError(
            "a PUBLICKEYBLOB holds an RSA key: it needs an rsa-suite container "
            "(keyblob init --suite rsa)"
        )
    public: object
    if role is KeyRole.SIGNATURE:
        public = suites.load_signature_public(Suite.RSA, container.signature_public)
        alg_id = mscapi.AlgId.RSA_SIGN
    else:
        public = suites.load_exchange_public(Suite.RSA, container.exchange_public)
        alg_id = mscapi.AlgId.RSA_KEYX
    # The rsa suite's loaders return RSA keys only.
    return mscapi.PublicKeyBlob.from_public_key(cast(rsa.RSAPublicKey, public), alg_id).to_bytes()


def cmd_capi_verify_signature(ctx: Context) -> int:
    """CryptVerifySignature over a whole file, as CryptSignHash signed it (docs/MSCAPI.md)."""
    args = ctx.args
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    signer = _capi_public_blob(args.signer).to_public_key()
    signature = _capi_file(args.signature)
    src, _, close = _input_stream(args.file)
    try:
        _sized(
            args.signer,
            lambda: _refusing(
                args.file,
                lambda: mscapi.verify_stream_signature(
                    signer, signature, src, hash_alg=hash_alg, legacy=args.legacy
                ),
            ),
        )
    finally:
        close()
    print(
        f"{args.file}: valid {hash_alg.calg_name} signature by the "
        f"{signer.key_size}-bit key in {args.signer}"
    )
    return 0


def cmd_capi_import_simpleblob(ctx: Context) -> int:
    args = ctx.args
    blob = _capi_file(args.file)
    parsed = mscapi.SimpleBlob.from_bytes(blob)  # the public structure, before anything else
    algorithm = Algorithm.for_capi(int(parsed.alg_id))
    check_name(args.name)  # before its scope is looked at
    opened: list[SoftwareContainer] = []

    def pins() -> tuple[CapiSigner, ...]:  # the unlock, only once the arguments are right
        opened.append(ctx.open())
        return opened[0].state().capi_signers

    authenticated = _capi_check_signature(args, blob, args.file, pins, args.name)
    container = opened[0] if opened else ctx.open()
    store = ctx.store()
    try:
        capi_key = _refusing(
            args.file, lambda: container.capi_unwrap(blob, authenticated=authenticated)
        )
    except _Refused as e:
        raise _Refused(
            str(e),
            hints=(
                *e.hints,
                "a SIMPLEBLOB opens with the Windows exchange key it was wrapped for: import "
                "that key pair first (keyblob capi import-keypair PRIVATEKEYBLOB)",
            ),
        ) from None
    if not authenticated:
        _print_warning(
            "without a signature a damaged blob yields a random key: decrypt some data "
            "before relying on it"
        )
    session = blobs.store_key(
        container,
        store,
        args.name,
        capi_key.unsafe_raw_bytes(),
        algorithm=algorithm,
        rotate_existing=args.rotate,
    )
    print(
        f"imported {args.file} as {session.name} generation {session.generation} "
        f"({algorithm.label}, {mscapi.alg_name(int(parsed.alg_id))}), key id {session.key_id.short}"
    )
    return 0


def cmd_capi_export_simpleblob(ctx: Context) -> int:
    args = ctx.args
    to_blob = _capi_public_blob(args.to)
    if to_blob.alg_id is mscapi.AlgId.RSA_SIGN:
        raise UsageError(
            f"{args.to} is a signature key (CALG_RSA_SIGN): a SIMPLEBLOB is wrapped for the "
            "recipient's exchange key (CALG_RSA_KEYX)"
        )
    recipient = to_blob.to_public_key()
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    # Before the unlock; build_simpleblob checks it again (its warning prints once).
    _sized(args.to, lambda: mscapi.check_recipient_key(recipient, legacy=args.legacy))
    container = ctx.open()
    session = ctx.load(args.name, container)
    blob = _sized(
        args.to, lambda: mscapi.build_simpleblob(_capi_key(session), recipient, legacy=args.legacy)
    )
    signature = container.capi_sign(blob, hash_alg=hash_alg, legacy=args.legacy)
    _write_output(args.output, blob)
    _write_output(args.signature_out, signature)
    print(
        f"wrote {args.output} ({session.name} generation {session.generation}) and its "
        f"CryptSignHash signature {args.signature_out} ({hash_alg.calg_name})",
        file=sys.stderr,
    )
    return 0


def cmd_capi_encrypt(ctx: Context) -> int:
    args = ctx.args
    iv = _iv(args.iv)
    return _encrypt_command(
        ctx,
        _capi_key,
        lambda key, src, dst, progress: mscapi.encrypt_file(
            key, src, dst, iv=iv, legacy=args.legacy, progress=progress
        ),
    )


def _capi_decrypt_one(
    key: mscapi.CapiKey,
    iv: bytes | None,
    path: str | None,
    output: str | None,
    update: Callable[[int], None] | None = None,
) -> None:
    src, _, close = _input_stream(path)
    try:
        _refusing(
            path or "standard input",
            lambda: _stream_to_output(
                output,
                0o600,
                lambda dst: mscapi.decrypt_file(key, src, dst, iv=iv, progress=update),
                refuse_tty=False,
            ),
        )
    finally:
        close()


def cmd_capi_decrypt(ctx: Context) -> int:
    args = ctx.args
    iv = _iv(args.iv)
    inputs: list[str | None] = list(args.input) or [None]
    into_folder = len(inputs) > 1 or bool(args.output and Path(args.output).is_dir())
    # Checked before the unlock, and before anything is written.
    others = [
        p for p in (args.key, args.private, args.simpleblob, args.signature, args.signer) if p
    ]
    if args.passphrase_file:
        others.append(args.passphrase_file)
    targets = _decrypt_targets(inputs, args.output, others) if into_folder else None
    key = _capi_decrypt_key(ctx)
    sizes = [os.path.getsize(p) if p and p != "-" and os.path.isfile(p) else None for p in inputs]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    update, done = _progress(total, args.quiet, "decrypt")
    try:
        if targets is None:
            _capi_decrypt_one(key, iv, inputs[0], args.output, update)
            return 0
        failed = _capi_decrypt_many(key, iv, targets, update)
    finally:
        done()
    if failed:
        raise _Refused(f"{failed} of {len(inputs)} files failed; nothing was written for them")
    return 0


def _decrypt_targets(
    inputs: list[str | None], output: str | None, others: Sequence[str] = ()
) -> list[tuple[str, Path]]:
    """Each input file and the file it decrypts to in the folder ``output``.

    Raises:
        UsageError: no folder, standard input among them, a target that is one of the
            inputs or ``others`` (the key files: they would be replaced), or two inputs
            with one target.
    """
    if not output or not Path(output).is_dir():
        raise UsageError("several inputs need -o DIR, an existing folder")
    pairs: list[tuple[str, Path]] = []
    for path in inputs:
        if path is None or path == "-":
            raise UsageError("decrypting into a folder needs each -i to be a file, not '-'")
        pairs.append((path, Path(output) / (Path(path).name.removesuffix(".enc") or "out")))
    sources = {os.path.realpath(path) for path, _ in pairs} | {os.path.realpath(p) for p in others}
    seen: dict[str, str] = {}
    for path, target in pairs:
        real = os.path.realpath(target)
        if real in sources:
            raise UsageError(
                f"{path} would be decrypted over an input ({target}): "
                "name the ciphertexts *.enc or choose another -o folder"
            )
        if real in seen:
            raise UsageError(
                f"{seen[real]} and {path} would both be decrypted to {target}: "
                "decrypt them into different folders"
            )
        seen[real] = path
    return pairs


def _capi_decrypt_many(
    key: mscapi.CapiKey,
    iv: bytes | None,
    targets: list[tuple[str, Path]],
    update: Callable[[int], None] | None,
) -> int:
    """Each input into its target; a file that fails writes nothing."""
    failed = 0
    for path, target in targets:
        try:
            _capi_decrypt_one(key, iv, path, str(target), update)
        except KeyblobError as e:
            failed += 1
            _print_error(str(e))
            continue
        print(f"{path} -> {target}", file=sys.stderr)
    return failed


def _capi_decrypt_key(ctx: Context) -> mscapi.CapiKey:
    """The key for capi decrypt: a stored NAME, a SIMPLEBLOB with --private, or --key."""
    args = ctx.args
    chosen = [x for x in (args.name, args.simpleblob, args.key) if x]
    if len(chosen) != 1:
        raise UsageError(
            "give one of: NAME (a stored key), --simpleblob FILE --private FILE, --key FILE"
        )
    if not args.simpleblob and any(
        x for x in (args.private, args.signature, args.signer, args.unsigned)
    ):
        raise UsageError("--private, --signature, --signer and --unsigned go with --simpleblob")
    if args.generation is not None and not args.name:
        raise UsageError("--generation goes with NAME, a stored key")
    if args.name:
        return _capi_key(ctx.load(args.name))
    if args.key:
        data = _capi_file(args.key)
        plain = _refusing(args.key, lambda: mscapi.PlaintextKeyBlob.from_bytes(data))
        return mscapi.CapiKey.new(plain.alg_id, plain.key)
    if not args.private:
        raise UsageError("--simpleblob needs --private PRIVATEKEYBLOB (the exchange key pair)")
    return _capi_unwrap(args, args.simpleblob)[0]


def _capi_unwrap(args: argparse.Namespace, path: str) -> tuple[mscapi.CapiKey, bool]:
    """The SIMPLEBLOB's key, and whether it was authenticated: structure checked, then
    the signature verified (unless --unsigned), then unwrapped with --private's key."""
    blob = _capi_file(path)
    _refusing(path, lambda: mscapi.SimpleBlob.from_bytes(blob))
    authenticated = _capi_check_signature(args, blob, path)
    private_blob = _capi_file(args.private)
    private = _refusing(
        args.private, lambda: mscapi.PrivateKeyBlob.from_bytes(private_blob)
    ).to_private_key()
    key: mscapi.CapiKey = _sized(
        args.private,
        lambda: _refusing(
            path,
            lambda: mscapi.unwrap_simpleblob(
                blob, private, authenticated=authenticated, legacy=args.legacy
            ),
        ),
    )
    return key, authenticated


def cmd_capi_unwrap(ctx: Context) -> int:
    args = ctx.args
    if (args.output is None) == (not args.info):  # before any file is read
        raise UsageError("give -o FILE for the PLAINTEXTKEYBLOB, or --info (not both)")
    key, authenticated = _capi_unwrap(args, args.simpleblob)
    if args.info:
        print(f"{key.alg_id.calg_name}, {key.key_size * 8}-bit key ({key.key_size} bytes)")
        if not authenticated:
            _print_warning("without a signature a damaged blob yields a random key of this size")
        return 0
    plain = mscapi.PlaintextKeyBlob(key.alg_id, key.unsafe_raw_bytes()).to_bytes()
    _write_output(args.output, plain, mode=0o600, refuse_tty=True)
    print(f"wrote {args.output}: {key.alg_id.calg_name} key, {key.key_size} bytes", file=sys.stderr)
    return 0


def cmd_capi_convert(ctx: Context) -> int:
    args = ctx.args
    data = _read_file(args.input, mscapi.keyfiles.MAX_KEY_FILE_SIZE, what="a key file")
    try:
        loaded = mscapi.load_rsa_key(data)
    except PassphraseRequired:
        passphrase = ctx.key_passphrase(args.input)
        try:
            loaded = mscapi.load_rsa_key(data, passphrase=passphrase)
        except PassphraseError as e:
            if args.passphrase_file or "KEYBLOB_PASSPHRASE" not in os.environ:
                raise
            raise PassphraseError(
                str(e),
                hints=(
                    "the passphrase tried was KEYBLOB_PASSPHRASE; give the key file's own "
                    "with --passphrase-file (it takes precedence), or unset it and type it",
                ),
            ) from None
    public_only = args.public or not loaded.private
    fmt = mscapi.KeyFormat(args.to)
    alg_id = loaded.alg_id if fmt is mscapi.KeyFormat.MSBLOB else None
    out = _sized(
        args.input,
        lambda: mscapi.dump_rsa_key(
            loaded.key, fmt, public_only=public_only, alg_id=alg_id, legacy=args.legacy
        ),
    )
    binary = fmt in (mscapi.KeyFormat.DER, mscapi.KeyFormat.MSBLOB)
    target = args.output or "-"
    if not args.force and (binary or not public_only):
        what = "a private key" if not public_only else "binary output"
        _refuse_terminal(target, what, "use -o FILE (or --force)")
    if target == "-" and fmt is mscapi.KeyFormat.XML:
        out += b"\n"  # for the terminal's sake; a file keeps .NET's exact bytes
    _write_output(target, out, mode=0o644 if public_only else 0o600)
    kind = "public" if public_only else "private"
    size = loaded.key.key_size
    print(
        f"read {loaded.format.value} ({loaded.detail}), wrote {args.to} ({kind}, RSA-{size})",
        file=sys.stderr,
    )
    return 0


# -- argument parsing ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def _generation_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--generation",
        type=int,
        metavar="N",
        help="an older generation (default: the newest), to read what it encrypted; its "
        "signature, name and generation are checked",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Signed session-key blobs on storage nobody trusts.",
        epilog="exit status: 0 done, 2 usage, 3 refused (malformed, unsupported, or failed "
        "verification), 4 not found, 5 wrong passphrase, 1 other error",
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
    sp.add_argument("--legacy", action="store_true", help="allow a legacy CryptoAPI algorithm")
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
    sp.add_argument("--legacy", action="store_true", help="allow a legacy CryptoAPI algorithm")
    sp = command("list", cmd_list, "list stored keys (verified; never key bytes)")
    sp.add_argument("--json", action="store_true")
    sp = command("show", cmd_show, "show a stored key's metadata (verified; never key bytes)")
    sp.add_argument("name")
    sp.add_argument("--json", action="store_true")
    sp = command("export", cmd_export, "write the stored blob of a key to a file")
    sp.add_argument("name")
    sp.add_argument("-o", "--output", required=True, metavar="FILE", help="'-' for standard output")
    sp.add_argument("--armor", action="store_true", help="text armor instead of binary")
    _generation_option(sp)
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
    sp.add_argument(
        "--format",
        default="keyblob",
        choices=["keyblob", "pem", "msblob"],
        help="msblob: the exchange key as a CryptoAPI PUBLICKEYBLOB (rsa suite)",
    )
    sp.add_argument("-o", "--output", default="-", metavar="FILE")
    _capi_parser(sub)
    trust = sub.add_parser(
        "trust", help="manage trusted signers", description="manage trusted signers"
    )
    tsub = trust.add_subparsers(
        dest="trust_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    sp = tsub.add_parser(
        "add",
        help="trust the signature key in a public key file, or pin a CryptoAPI signer "
        "(a PUBLICKEYBLOB or PEM/DER RSA public key)",
    )
    sp.add_argument("file")
    sp.add_argument(
        "--names",
        action="append",
        metavar="PATTERN,...",
        help="only for these key names (repeatable; * any characters, ? one); on a signer "
        "already trusted, replaces its names ('*': every name)",
    )
    sp.set_defaults(func=cmd_trust_add)
    sp = tsub.add_parser("list", help="list trusted signers")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_trust_list)
    sp = tsub.add_parser(
        "remove",
        help="stop trusting a signer (its id or fingerprint, or their first 8+ hex digits)",
    )
    sp.add_argument("id")
    sp.set_defaults(func=cmd_trust_remove)
    return p


def _capi_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    capi = sub.add_parser(
        "capi",
        help="Windows CryptoAPI blobs, signatures and data",
        description="Windows CryptoAPI blobs, signatures and data (docs/MSCAPI.md)",
    )
    csub = capi.add_subparsers(
        dest="capi_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    def command(name: str, func: Callable[[Context], int], help: str) -> argparse.ArgumentParser:
        sp = csub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    def signed(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--signature", metavar="SIG", help="CryptSignHash signature of the SIMPLEBLOB"
        )
        sp.add_argument("--signer", metavar="PUBLICKEYBLOB", help="the signer's public key")
        sp.add_argument(
            "--hash", default="sha256", help="hash the signature was made with (default sha256)"
        )
        sp.add_argument(
            "--unsigned", action="store_true", help="accept a SIMPLEBLOB without signature (warns)"
        )
        legacy_rsa(sp)

    def legacy_rsa(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--legacy",
            action="store_true",
            help="read with an RSA key under 1024 bits (warns; docs/MSCAPI.md 5)",
        )

    sp = command(
        "import-keypair",
        cmd_capi_import_keypair,
        "a PRIVATEKEYBLOB becomes a key pair of the container",
    )
    sp.add_argument("file")
    sp.add_argument(
        "--slot", choices=["exchange", "signature"], help="default: from the blob's ALG_ID"
    )
    sp.add_argument("--force", action="store_true", help="replace even if the container holds keys")
    sp = command(
        "verify-signature",
        cmd_capi_verify_signature,
        "check a CryptSignHash signature over a file (no home needed)",
    )
    sp.add_argument("file")
    sp.add_argument("--signature", required=True, metavar="SIG")
    sp.add_argument("--signer", required=True, metavar="PUBLICKEYBLOB")
    sp.add_argument("--hash", default="sha256", help="default sha256")
    legacy_rsa(sp)
    sp = command("export-public", cmd_capi_export_public, "write a PUBLICKEYBLOB of the container")
    sp.add_argument("--slot", choices=["exchange", "signature"], default="exchange")
    sp.add_argument("-o", "--output", required=True, metavar="FILE")
    sp = command(
        "import-simpleblob", cmd_capi_import_simpleblob, "verify, unwrap and store a SIMPLEBLOB"
    )
    sp.add_argument("file")
    sp.add_argument("--name", required=True)
    sp.add_argument(
        "--rotate", action="store_true", help="store as the next generation of an existing name"
    )
    signed(sp)
    sp = command(
        "export-simpleblob",
        cmd_capi_export_simpleblob,
        "wrap a stored key for a CryptoAPI peer, signed",
    )
    sp.add_argument("name")
    sp.add_argument("--to", required=True, metavar="PUBLICKEYBLOB")
    sp.add_argument("-o", "--output", required=True, metavar="FILE")
    sp.add_argument("--signature-out", required=True, metavar="SIG")
    sp.add_argument("--hash", default="sha256")
    sp.add_argument(
        "--legacy",
        action="store_true",
        help="allow a legacy key or hash, or a recipient under 2048 bits (warns)",
    )
    sp = command(
        "encrypt", cmd_capi_encrypt, "CryptEncrypt-compatible encryption with a stored key"
    )
    sp.add_argument("name")
    sp.add_argument("-i", "--input", metavar="IN")
    sp.add_argument("-o", "--output", metavar="OUT")
    sp.add_argument("--iv", metavar="HEX", help="default: zero (CryptoAPI's default)")
    sp.add_argument("--legacy", action="store_true", help="allow a legacy key (warns)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp = command("convert", cmd_capi_convert, "convert an RSA key: PEM, DER, MSBLOB, .NET XML")
    sp.add_argument("input", metavar="IN")
    sp.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    sp.add_argument("--to", required=True, choices=["pem", "der", "msblob", "xml"])
    sp.add_argument("--public", action="store_true", help="write only the public key")
    sp.add_argument("--force", action="store_true", help="allow a private key on a terminal")
    legacy_rsa(sp)
    sp = command("unwrap", cmd_capi_unwrap, "open a SIMPLEBLOB into a PLAINTEXTKEYBLOB")
    sp.add_argument("simpleblob", metavar="SIMPLEBLOB")
    sp.add_argument("--private", required=True, metavar="PRIVATEKEYBLOB")
    sp.add_argument("-o", "--output", metavar="OUT")
    sp.add_argument("--info", action="store_true", help="print only the algorithm and length")
    signed(sp)
    sp = command("decrypt", cmd_capi_decrypt, "CryptDecrypt-compatible decryption")
    sp.add_argument("name", nargs="?", help="a stored key (or use --simpleblob/--private, --key)")
    _generation_option(sp)
    sp.add_argument("-i", "--input", action="append", default=[], metavar="IN")
    sp.add_argument("-o", "--output", metavar="OUT|DIR")
    sp.add_argument("--iv", metavar="HEX")
    sp.add_argument("--simpleblob", metavar="FILE")
    sp.add_argument("--private", metavar="PRIVATEKEYBLOB")
    sp.add_argument("--key", metavar="PLAINTEXTKEYBLOB")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    signed(sp)


def _print_warning(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _print_note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


def _print_error(message: str, hints: Sequence[str] = (), stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    print(f"{PROG}: error: {message}", file=out)
    for hint in hints:
        print(f"{PROG}: hint: {hint}", file=out)


def _warning_printer() -> Callable[..., None]:
    """Print each distinct warning once per command, as one ``keyblob: warning:`` line."""
    seen: set[str] = set()

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            _print_warning(text)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "container_opt", None):
        args.container = args.container_opt
    with warnings.catch_warnings():
        # A legacy algorithm always warns, as one line: "keyblob: warning: ...".
        warnings.simplefilter("always", LegacyAlgorithmWarning)
        warnings.showwarning = _warning_printer()
        return _run(args)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where the command is, so its cleanup runs (Ctrl-C raises
    KeyboardInterrupt there)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_ENDING_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _terminate(signum: int, _frame: types.FrameType | None) -> None:
    import signal  # noqa: PLC0415

    # A second signal (a closing terminal sends SIGHUP twice; Ctrl-C pressed again) must
    # not interrupt the cleanup this one starts: all are ignored until _termination_raises
    # restores them.
    for name in _ENDING_SIGNALS:
        other = getattr(signal, name, None)
        if other is not None and signal.getsignal(other) is _terminate:
            signal.signal(other, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise _Terminated(signum)


@contextlib.contextmanager
def _termination_raises() -> Iterator[None]:
    """While a command runs, Ctrl-C, SIGTERM and SIGHUP end it through its cleanup: no
    temp file (nor the partial plaintext in one) is left behind, however many arrive.  A
    signal already ignored (nohup) or handled by the caller stays so."""
    import signal  # noqa: PLC0415

    defaults = {"SIGINT": signal.default_int_handler}
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in _ENDING_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) is defaults.get(
                name, signal.SIG_DFL
            ):
                saved[signum] = signal.signal(signum, _terminate)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


_INPUT_OPTIONS = (
    "input",
    "file",
    "simpleblob",
    "private",
    "key",
    "signature",
    "signer",
    "passphrase_file",
)


def _refuse_outputs_over_inputs(args: argparse.Namespace) -> None:
    """An output that is one of the command's own inputs (or its other output) would be
    destroyed: refused before anything is read (exit 2)."""
    inputs: list[tuple[str, str]] = []
    for option in _INPUT_OPTIONS:
        value = getattr(args, option, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and path != "-":
                inputs.append((option, path))
    if args.func is cmd_capi_export_simpleblob:  # there --to is a file; elsewhere a format
        inputs.append(("to", args.to))
    named = [(o, getattr(args, o, None)) for o in ("output", "signature_out")]
    if all(path == "-" for _, path in named):  # both on standard output: one stream
        raise UsageError("-o - and --signature-out - would mix two files on standard output")
    outputs = [(option, path) for option, path in named if isinstance(path, str) and path != "-"]
    for i, (_option, path) in enumerate(outputs):
        for other, used in inputs + outputs[:i]:
            if _same_file(path, used):
                role = "an input" if (other, used) in inputs else "the other output"
                raise UsageError(
                    f"refusing to write {path}: it is also {role} of this command "
                    f"({other.replace('_', '-')}); choose another output"
                )


def _same_file(a: str, b: str) -> bool:
    """Whether writing ``a`` would destroy the regular file ``b`` (a device or FIFO, such
    as /dev/null given twice, is not destroyed by being written)."""
    try:
        if not stat.S_ISREG(os.stat(b).st_mode):
            return False
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): the same path is the same file
        return os.path.realpath(a) == os.path.realpath(b)


class _StandardOutput:
    """Standard output or error (text, or its ``buffer``) while a command runs.

    Text holding a path whose bytes are not UTF-8 is written with ``\\xNN`` escapes
    (:func:`_printable`) whatever the locale: a strict UTF-8 one used to fail once the
    command's work was done.  On standard output (``name`` given), a write that fails (a
    full disk, EIO) raises StorageError, so the command ends with one line and exit status
    1, not a traceback; BrokenPipeError passes as it is.  ``failed`` records that output
    was lost: what is left in Python's buffer must not be written again at exit.
    """

    def __init__(self, stream: Any, name: str | None, failed: list[bool] | None = None) -> None:
        self.stream = stream
        self.name = name
        self.failed = failed if failed is not None else []

    @property
    def buffer(self) -> _StandardOutput:
        return _StandardOutput(self.stream.buffer, self.name, self.failed)

    def write(self, data: Any) -> Any:
        with self._errors():
            return self.stream.write(_printable(data) if isinstance(data, str) else data)

    def flush(self) -> None:
        with self._errors():
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
        return getattr(self.stream, name)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            self.failed.append(True)
            raise
        except OSError as e:
            if self.name is None:
                raise
            self.failed.append(True)
            reason = e.strerror or type(e).__name__
            raise StorageError(f"cannot write to {self.name}: {reason}") from None


def _discard_standard_output() -> None:
    """After a failed write, what Python still holds for standard output goes to
    /dev/null at exit (as the Python docs advise for SIGPIPE), not into a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (in-process callers): nothing to do
        pass


def _run(args: argparse.Namespace) -> int:
    # None: started with the descriptor closed, and print() skips it; so do we.
    given = sys.stdout, sys.stderr
    stdout = None if given[0] is None else _StandardOutput(given[0], "standard output")
    if stdout is not None:
        sys.stdout = cast(TextIO, stdout)
    if given[1] is not None:
        sys.stderr = cast(TextIO, _StandardOutput(given[1], None))
    try:
        return _run_guarded(args)
    finally:
        sys.stdout, sys.stderr = given
        if stdout is not None and stdout.failed:
            _discard_standard_output()


def _run_guarded(args: argparse.Namespace) -> int:
    try:
        _refuse_outputs_over_inputs(args)
        with _termination_raises():
            status = int(args.func(Context(args)))
        if sys.stdout is not None:  # a write error is reported here, not lost at exit
            sys.stdout.flush()
        return status
    except KeyblobError as e:
        if args.debug:
            raise
        _print_error(str(e), e.hints)
        return e.exit_status
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except _Terminated as e:
        _print_error("terminated by a signal")
        return 128 + e.signum
    except BrokenPipeError:
        # The reader went away (keyblob list | head): not an error worth a message.  The
        # status is the one a shell reports for age, cat or any command SIGPIPE ends
        # (128 + 13), which `set -o pipefail` scripts already expect from `| head`.
        return EXIT_BROKEN_PIPE
