"""keyblob trust add/list/remove: which signers this container accepts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from keyblob.cli.keys import own_fingerprint, shown_label
from keyblob.cli.terminal import (
    Context,
    Parser,
    Subcommands,
    emit_json,
    iso,
    lazy_module,
    read_file,
    read_public_key_file,
    refusing,
)
from keyblob.errors import FormatError, UsageError, WeakKeyError

if TYPE_CHECKING:
    import dataclasses
    import pathlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyblob import blobs, keys, mscapi, publickeys, trust
    from keyblob import format as formats
    from keyblob.format import PublicKeyFile, pubkey
    from keyblob.providers.base import Provider
    from keyblob.trust import (
        CapiSigner,
        State,
        TrustedSigner,
    )
else:
    # The library (even its value types and formats), CryptoAPI support and cryptography
    # are loaded on first use: building the parser imports none of them, and every command
    # pays for what the CLI imports at start (keyblob --help is measured).
    dataclasses = lazy_module("dataclasses")
    pathlib = lazy_module("pathlib")
    formats = lazy_module("keyblob.format")
    pubkey = lazy_module("keyblob.format.pubkey")
    keys = lazy_module("keyblob.keys")
    trust = lazy_module("keyblob.trust")
    blobs = lazy_module("keyblob.blobs")
    mscapi = lazy_module("keyblob.mscapi")
    publickeys = lazy_module("keyblob.publickeys")
    rsa = lazy_module("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = lazy_module("cryptography.hazmat.primitives.serialization")


def _is_keyblob_public_key(data: bytes) -> bool:
    """A keyblob public key file (FORMAT.md 3), binary or armored, rather than a CryptoAPI
    or PEM/DER RSA key."""
    return data.startswith(b"KBPK") or data.lstrip(b" \t\r\n").startswith(b"-----BEGIN KEYBLOB")


def _scope_note(names: tuple[str, ...] | None) -> str:
    return "" if names is None else f", for {trust.describe_scope(names)}"


def cmd_trust_add(ctx: Context) -> int:
    import time  # noqa: PLC0415

    path = ctx.args.file
    data = read_file(path, what="a public key file")
    # Without --names, a new signer may sign every name and a known one keeps its scope:
    # running the same trust add again never widens what was narrowed.
    scope = trust.parse_scope(ctx.args.names) if ctx.args.names else None
    if not _is_keyblob_public_key(data):
        return _trust_add_capi(ctx, path, data, scope)
    pub = read_public_key_file(path, data)
    container = ctx.open()
    if pub.suite is not container.suite:
        raise UsageError(
            f"{path} is a {pub.suite.label} key; container {container.name!r} uses "
            f"{container.suite.label}: a signer of another suite could never sign a blob it accepts"
        )
    if pub.signature_id == container.signature_id:
        return _own_key(container, path, pub, ctx.args.names)
    signer = trust.TrustedSigner(
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
        return state.with_signer(dataclasses.replace(signer, names=names))

    container.update_state(add)
    handle = f"sg-{signer.key_id.short} ({shown_label(pub)})"
    print(_trust_outcome(handle, before[0], scope if ctx.args.names else None, ctx.args.names))
    print(
        f"  fingerprint {pubkey.group_fingerprint(pub.fingerprint)}: check it with the key's owner "
        "(keyblob pubkey shows theirs)"
    )
    return 0


def _own_key(container: Provider, path: str, pub: PublicKeyFile, names: list[str] | None) -> int:
    """trust add of this container's own public key file: nothing to add (its key is
    always trusted, for every name), unless the file was changed (exit 3) or asks for a
    scope the own key cannot have (exit 2)."""
    refusing(path, lambda: blobs.check_known_exchange(container, container.state(), pub))
    if names:
        raise UsageError(
            f"{path} holds this container's own signature key: it is always trusted, for "
            "every name; --names cannot narrow it"
        )
    print(
        f"already trusted: this is this container's own key, sg-{pub.signature_id.short} "
        f"({pub.label}), for every name"
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
        now, was = trust.describe_scope(scope), trust.describe_scope(old.names)
        return f"updated {handle}: now for {now} (was {was})"
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
    stem = pathlib.Path(path).stem.lower()
    try:
        label = keys.check_name(stem)
    except ValueError:
        label = "capi-signer"
    signer = trust.CapiSigner(public=spki, label=label, added=int(time.time()), names=scope)
    container = ctx.open()
    before: list[CapiSigner | None] = []

    def add(state: State) -> State:
        old = state.capi_signer(spki)
        before.append(old)
        names = scope if ctx.args.names or old is None else old.names
        return state.with_capi_signer(dataclasses.replace(signer, names=names))

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
        "fingerprint": own_fingerprint(container),
        "label": publickeys.label_of(container),
        "own": True,
        "names": None,
    }
    rows: list[dict[str, Any]] = [own] + [
        {
            "kind": "keyblob",
            "key_id": s.key_id.hex,
            "fingerprint": formats.fingerprint(s.suite, s.exchange, s.public),
            "label": s.label,
            "own": False,
            "added": iso(s.added),
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
            "added": iso(s.added),
            "added_unix": s.added,
            "names": None if s.names is None else list(s.names),
        }
        for s in state.capi_signers
    ]
    if ctx.args.json:
        emit_json(rows)
        return 0
    for r in rows:
        handle = f"sg-{r['key_id'][:8]}" if r["kind"] == "keyblob" else "capi-rsa   "
        if r["own"]:
            note = "this container (always trusted)"
        else:
            names = None if r["names"] is None else tuple(r["names"])
            kind = "CryptoAPI signer, " if r["kind"] == "capi" else ""
            note = f"{kind}added {r['added']}, for {trust.describe_scope(names)}"
        # A keyblob fingerprint grouped to be read aloud (FORMAT.md 3.1); a CryptoAPI
        # signer's as openssl dgst prints it, the way its owner computes it (MSCAPI.md 7.2).
        shown = (
            pubkey.group_fingerprint(r["fingerprint"])
            if r["kind"] == "keyblob"
            else r["fingerprint"]
        )
        print(f"{handle}  {shown}  {r['label']}  {note}")
    return 0


def cmd_trust_remove(ctx: Context) -> int:
    container = ctx.open()
    # As find_signer reads it: white space ignored, upper case accepted (FORMAT.md 3.1).
    given = "".join(ctx.args.id.split()).lower().removeprefix("sg-")
    if len(given) >= 8 and (
        container.signature_id.hex.startswith(given) or own_fingerprint(container).startswith(given)
    ):
        raise UsageError(
            f"sg-{container.signature_id.short} is this container's own signature key: "
            "it is always trusted"
        )
    target = trust.find_signer(container.state(), ctx.args.id)
    if isinstance(target, trust.CapiSigner):
        container.update_state(lambda s: s.without_capi_signer(target.public))
        print(f"no longer trusted: CryptoAPI signer {target.label!r} ({target.fingerprint})")
        return 0
    # Remembered as removed (FORMAT.md 5.2.8): show can then say why its blobs are refused.
    now = int(time.time())
    container.update_state(lambda s: s.without_signer(target.key_id, removed=now))
    fp = pubkey.group_fingerprint(formats.fingerprint(target.suite, target.exchange, target.public))
    print(f"no longer trusted: sg-{target.key_id.short} ({target.label}), fingerprint {fp}")
    return 0


def register(sub: Subcommands) -> None:
    """trust add, list, remove."""
    trust = sub.add_parser(
        "trust", help="manage trusted signers", description="manage trusted signers"
    )
    tsub = trust.add_subparsers(
        dest="trust_command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    sp = tsub.add_parser(
        "add",
        help="trust the signature key in a public key file, or pin a CryptoAPI signer "
        "(a PUBLICKEYBLOB or PEM/DER RSA public key)",
    )
    sp.add_argument(
        "file", help="a keyblob public key file, or an RSA public key (PUBLICKEYBLOB, PEM, DER)"
    )
    sp.add_argument(
        "--names",
        action="append",
        metavar="PATTERN,...",
        help="only for these key names (repeatable; * any characters, ? one); on a signer "
        "already trusted, replaces its names ('*': every name)",
    )
    sp.set_defaults(func=cmd_trust_add)
    sp = tsub.add_parser("list", help="list trusted signers")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp.set_defaults(func=cmd_trust_list)
    sp = tsub.add_parser(
        "remove",
        help="stop trusting a signer (its id or fingerprint, or their first 8+ hex digits)",
    )
    sp.add_argument("id", help="the signer's id or fingerprint, or their first 8+ hex digits")
    sp.set_defaults(func=cmd_trust_remove)
