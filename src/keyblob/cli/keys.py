"""keyblob's key commands: init, new, rotate, share, unshare, list, show, export, import,
verify, inspect, pubkey."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keyblob.cli.capi import public_key_blob
from keyblob.cli.names import about_key, checked_name, existing_store
from keyblob.cli.terminal import (
    PROG,
    Context,
    Parser,
    Refused,
    Subcommands,
    command,
    emit_json,
    generation_option,
    iso,
    lazy_module,
    print_note,
    print_warning,
    read_file,
    read_public_key_file,
    refusing,
    tilde,
    write_output,
)
from keyblob.errors import (
    ConflictError,
    FormatError,
    KeyblobError,
    UsageError,
    VerificationError,
)

if TYPE_CHECKING:
    import keyblob.format.armor as armoring
    from keyblob import blobs, keys, mscapi, publickeys, trust
    from keyblob import format as formats
    from keyblob.format import PublicKeyFile, pubkey
    from keyblob.format import blob as blobformat
    from keyblob.keys import Algorithm, KeyId, Suite
    from keyblob.providers import suites
    from keyblob.providers.base import Provider
    from keyblob.storage import Store
    from keyblob.trust import State
else:
    # The library (even its value types and formats), CryptoAPI support and cryptography
    # are loaded on first use: building the parser imports none of them, and every command
    # pays for what the CLI imports at start (keyblob --help is measured).
    formats = lazy_module("keyblob.format")
    armoring = lazy_module("keyblob.format.armor")
    blobformat = lazy_module("keyblob.format.blob")
    pubkey = lazy_module("keyblob.format.pubkey")
    keys = lazy_module("keyblob.keys")
    blobs = lazy_module("keyblob.blobs")
    mscapi = lazy_module("keyblob.mscapi")
    publickeys = lazy_module("keyblob.publickeys")
    suites = lazy_module("keyblob.providers.suites")
    trust = lazy_module("keyblob.trust")

#: The labels of keyblob.keys.Algorithm, spelled out so that building the parser does not
#: import the library (a unit test checks that they are the enum's).
ALGORITHMS = (
    "aes-256-gcm",
    "aes-128-gcm",
    "chacha20-poly1305",
    "capi-aes-128",
    "capi-aes-192",
    "capi-aes-256",
    "capi-3des",
    "capi-3des-112",
    "capi-des",
    "capi-rc2",
    "capi-rc4",
)


def cmd_init(ctx: Context) -> int:
    args = ctx.args
    if args.provider == "pkcs11":
        return _init_token(ctx)
    for given, option in (
        (args.module, "--module"),
        (args.token, "--token"),
        (args.key_label, "--key-label"),
    ):
        if given:
            raise UsageError(f"{option} applies to --provider pkcs11 only")
    suite = keys.Suite.from_label(args.suite or keys.Suite.X25519.label)
    if suite is not keys.Suite.RSA and args.bits is not None:
        raise UsageError("--bits applies to the rsa suite only")
    if args.label is not None:
        keys.label_from_text(args.label)  # an invalid label is a usage error before the prompt
    container = ctx.home.create(
        ctx.container_name,
        ctx.passphrase(new=True),
        suite,
        bits=args.bits or 3072,
        label=args.label,
    )
    print(f'created container "{container.name}" (suite {suite.label}) in {tilde(ctx.home.path)}')
    print(
        f"  exchange key   kx-{container.exchange_id.short}"
        f"   signature key   sg-{container.signature_id.short}"
    )
    if args.label is not None:
        print(f"  label          {publickeys.label_of(container)}")
    keep_public_file(ctx, container)  # pubkey needs no passphrase (FORMAT.md 5)
    return 0


def _init_token(ctx: Context) -> int:
    """init --provider pkcs11: a p256 container whose keys are made (or adopted) in a token."""
    args = ctx.args
    module, token, serial = _token_location(args.module, args.token)
    if args.bits is not None:
        raise UsageError("--bits applies to the rsa suite only")
    adopt = _adopted_labels(args.key_label)
    suite = keys.Suite.from_label(args.suite or keys.Suite.P256.label)
    if args.label is not None:
        keys.label_from_text(args.label)  # an invalid label is a usage error before the PIN
    ctx.home.refuse_existing(ctx.container_name)
    if suite is keys.Suite.X25519:
        raise UsageError(
            "keyblob's PKCS#11 provider runs the p256 suite, what nearly every token "
            "offers: X25519 is not a standard token key type before PKCS#11 3.0; "
            "use --suite p256"
        )
    if suite is keys.Suite.PQ:
        raise UsageError(
            "keyblob makes pq containers in software only (--provider software): a token "
            "holds no X-Wing or ML-DSA-65 + Ed25519 key pair; for a token, use --suite p256"
        )
    pin = ctx.pin(token)
    if suite is keys.Suite.RSA:
        from keyblob.providers import pkcs11  # noqa: PLC0415 - the optional extra

        problem = pkcs11.rsa_oaep_problem(module, token, pin.decode("utf-8", "replace"))
        why = (
            f"it cannot open the rsa suite's wrap: {problem}"
            if problem
            else ("keyblob makes rsa containers in software only")
        )
        raise UsageError(
            f"PKCS#11 token {token!r}: {why}; keyblob will not weaken the wrap: use --suite p256"
        )
    container = ctx.keep_open(
        ctx.home.create_token(
            ctx.container_name,
            pin,
            module=module,
            token=token,
            adopt=adopt,
            label=args.label,
            serial=serial,
        )
    )
    how = "adopted from" if adopt else "made in"
    print(
        f'created container "{container.name}" (suite p256, keys {how} PKCS#11 token '
        f"{container.token!r}) in {tilde(ctx.home.path)}"
    )
    print(
        f"  exchange key   kx-{container.exchange_id.short}"
        f"   signature key   sg-{container.signature_id.short}"
    )
    if args.label is not None:
        print(f"  label          {publickeys.label_of(container)}")
    keep_public_file(ctx, container)
    return 0


def _token_location(module: str | None, token: str | None) -> tuple[str, str, str | None]:
    """--module and --token (a label, or a pkcs11: URI naming the token and perhaps the
    module): the module path, the token's label, and the serial it must have (or None)."""
    if token is None:
        raise UsageError("--provider pkcs11 needs --token LABEL (or a pkcs11: URI)")
    if not token.lower().startswith("pkcs11:"):
        if module is None:
            raise UsageError("--provider pkcs11 needs --module PATH")
        return module, token, None
    from keyblob.providers import pkcs11_uri  # noqa: PLC0415

    ref = pkcs11_uri.parse_pkcs11_uri(token)
    if ref.object is not None or ref.id is not None:
        raise UsageError(
            "the pkcs11: URI of --token names a key: name the token only, and the key pairs "
            "to adopt with --key-label exchange=LABEL --key-label signature=LABEL"
        )
    if module is not None and ref.module is not None and module != ref.module:
        raise UsageError("--module and the pkcs11: URI's module-path name different modules")
    module = module or ref.module
    if module is None:
        raise UsageError("--provider pkcs11 needs --module PATH (or module-path in the URI)")
    from keyblob.providers import pkcs11  # noqa: PLC0415 - the optional extra

    label, serial = pkcs11.find_token(
        module,
        label=ref.token,
        serial=ref.serial,
        manufacturer=ref.manufacturer,
        model=ref.model,
    )
    return module, label, serial


def _adopted_labels(given: list[str] | None) -> tuple[str, str] | None:
    """--key-label exchange=LABEL --key-label signature=LABEL: the pairs to adopt."""
    if not given:
        return None
    labels: dict[str, str] = {}
    for item in given:
        role, sep, label = item.partition("=")
        if not sep or role not in ("exchange", "signature") or not label:
            raise UsageError(f"--key-label {item!r}: give exchange=LABEL or signature=LABEL")
        if role in labels:
            raise UsageError(f"--key-label {role}= is given twice")
        labels[role] = label
    if labels.keys() != {"exchange", "signature"}:
        missing = ({"exchange", "signature"} - labels.keys()).pop()
        raise UsageError(f"adopting keys needs both pairs: add --key-label {missing}=LABEL")
    return labels["exchange"], labels["signature"]


def cmd_label(ctx: Context) -> int:
    """keyblob label [--json] shows the container's label; keyblob label set TEXT changes it."""
    container = ctx.open()
    text = getattr(ctx.args, "text", None)  # only 'label set' has it
    if text is not None:
        label = publickeys.set_label(container, text)
        keep_public_file(ctx, container)  # the kept file carries the new label
        print(f"label of container {container.name!r} is now {label!r}")
        print(
            "  public key files made from now on carry it (keyblob pubkey); "
            "hand a new one to those who trust this container"
        )
        return 0
    label = publickeys.label_of(container)
    if ctx.args.json:
        emit_json(
            {
                "container": container.name,
                "label": label,
                "label_set": container.state().label is not None,
                "fingerprint": own_fingerprint(container),
            }
        )
    else:
        print(label)
    return 0


def shown_label(pub: PublicKeyFile) -> str:
    """A public key file's label as people see it: a version 1 label is a container name
    nothing vouches for, and says so (FORMAT.md 3)."""
    if pub.label_signed:
        return pub.label
    return f"{pub.label} (name; unsigned, version 1 file)"


def _key_line(key_name: str, generation: int, algorithm: Algorithm, key_id: str, where: str) -> str:
    return (
        f"{key_name}  generation {generation}  {algorithm.label}  key id {key_id}  "
        f"stored in {where}"
    )


def _note_untrusted(container: Provider, to: Sequence[PublicKeyFile]) -> None:
    """--to a container not trusted here: the moment to compare its fingerprint."""
    if not to:
        return  # no recipient to note: no state to read
    state = container.state()
    for pub in to:
        if pub.signature_id != container.signature_id and state.signer(pub.signature_id) is None:
            print(
                f"{PROG}: note: wrapped for {shown_label(pub)!r}, which is not a trusted "
                f"container: its owner should see the fingerprint "
                f"{pubkey.group_fingerprint(pub.fingerprint)}",
                file=sys.stderr,
            )


def cmd_new(ctx: Context) -> int:
    args = ctx.args
    checked_name(args.name)
    to = [read_public_key_file(p) for p in args.to]
    container = ctx.open()
    store = ctx.store()
    key = blobs.generate(
        container,
        store,
        args.name,
        algorithm=keys.Algorithm.from_label(args.algorithm),
        to=to,
        legacy=args.legacy,
    )
    print(
        _key_line(key.name, key.generation, key.algorithm, key.key_id.short, tilde(store.location))
    )
    _note_untrusted(container, to)
    return 0


def _say_retry(conflict: ConflictError, attempt: int, attempts: int) -> None:
    """rotate lost the race for a generation to another writer: it starts again from theirs."""
    print_note(
        f"another writer made {conflict.name} generation {conflict.generation} first; "
        f"trying again ({attempt}/{attempts})"
    )


def cmd_rotate(ctx: Context) -> int:
    args = ctx.args
    checked_name(args.name)
    to = [read_public_key_file(p) for p in args.to]
    store = existing_store(ctx)
    container = ctx.open()
    algorithm = keys.Algorithm.from_label(args.algorithm) if args.algorithm else None
    with about_key(args.name):
        key = refusing(
            args.name,
            lambda: blobs.retrying(
                lambda: blobs.rotate(
                    container, store, args.name, algorithm=algorithm, to=to, legacy=args.legacy
                ),
                on_retry=_say_retry,
            ),
        )
    print(
        _key_line(key.name, key.generation, key.algorithm, key.key_id.short, tilde(store.location))
    )
    _note_untrusted(container, to)
    return 0


def _describe(v: blobs.Verified, container: Provider, state: State) -> dict[str, Any]:
    h = v.header
    trusted = state.signer(h.signer_id)
    own = h.signer_id == container.signature_id
    earlier = state.previous_signer(h.signer_id) is not None and not own
    signer = (
        "this container"
        if own
        else "this container (an earlier key: keyblob rewrap moves it to the current one)"
        if earlier
        else (trusted.label if trusted else "?")
    )
    if own:
        signer_fingerprint: str | None = own_fingerprint(container)
    elif trusted is not None:
        signer_fingerprint = formats.fingerprint(trusted.suite, trusted.exchange, trusted.public)
    else:
        signer_fingerprint = None
    return {
        "recipient_labels": [_recipient_label(r, container, state) for r in v.recipients],
        "name": h.name,
        "generation": h.generation,
        "revision": h.revision,
        "key_id": h.key_id.hex,
        "algorithm": h.algorithm.label,
        "suite": h.suite.label,
        "created": iso(h.created),
        "created_unix": h.created,
        "signer": h.signer_id.hex,
        "signer_label": signer,
        "signer_fingerprint": signer_fingerprint,
        "recipients": [r.hex for r in v.recipients],
        "size": len(v.encoded),
        "origin": "keyblob" if h.algorithm.capi_alg_id is None else "cryptoapi",
        "capi_alg_id": h.algorithm.capi_alg_id,
        "retired_below": state.retired_below(h.name),
    }


def _untrusted_signer(
    container: Provider,
    state: State,
    store: Store,
    name: str,
    error: VerificationError,
    *,
    generation: int | None = None,
) -> VerificationError:
    """``error``, or, when it is because the stored blob's signer is a signer the user
    removed from the trust list (``trust remove``: the state remembers it, FORMAT.md 5.2.8),
    a refusal that says so, with its label and when.  A signer never trusted here (a blob
    planted by anyone) stays "not a trusted signer": nothing here suggests trusting it."""
    try:
        stored = store.generations(name)
        at = generation if generation is not None else (stored[-1] if stored else None)
        if at is None:
            return error
        h = blobs.decode(store.get(name, at)).header  # parsed, not verified: only its id used
    except KeyblobError:
        return error
    removed = state.removed_signer(h.signer_id)
    untrusted = trust.UNTRUSTED.format(signer=f"sg-{h.signer_id.short}")
    if removed is None or str(error) != untrusted or h.suite is not container.suite:
        return error  # not refused for a removed signer: the refusal is about something else
    return VerificationError(
        f"{name} generation {at} is signed by sg-{h.signer_id.short} ({removed.label}), which "
        f"is no longer trusted here: removed from the trust list {iso(removed.removed)}",
        hints=(
            "if that was a mistake, trust it again after checking its fingerprint with its "
            "owner: keyblob trust add THEIR.pub",
            f"otherwise ask a signer trusted here for a new generation of {name}",
        ),
    )


def _recipient_label(key_id: KeyId, container: Provider, state: State) -> str | None:
    """Whose exchange key ``key_id`` is, when known here: this container, or a trusted one
    (its label); None for a container not trusted here."""
    if key_id == container.exchange_id:
        return "this container"
    if key_id in container.exchange_ids:
        return "this container (an old key, until keyblob rewrap)"
    for s in state.trusted:
        if keys.key_id_for(s.suite, keys.KeyRole.EXCHANGE, s.exchange) == key_id:
            return s.label
    return None


def cmd_list(ctx: Context) -> int:
    store = existing_store(ctx)
    container = ctx.open()
    state = container.state()
    rows, refused = [], []
    names = store.names()
    # Names this store held (FORMAT.md 5.2: the state records, per store, the names used
    # through it) that it lacks now: deleted, so a warning, not a refusal.  A name kept in
    # another store is not missing here, though its high-water mark is the container's.
    missing = sorted(set(state.held(store.identity)) - set(names))
    opened = {}
    revisions = {}
    for name in names:
        try:
            v = blobs.open_latest(container, store, name, unwrap=False, record=False)
        except VerificationError as e:
            refused.append((name, str(_untrusted_signer(container, state, store, name, e))))
            continue
        except FormatError as e:
            refused.append((name, str(e)))
            continue
        opened[name] = v.header.generation
        if v.header.revision:
            revisions[name, v.header.generation] = v.header.revision
        rows.append(_describe(v, container, state))
    # one state write for every name
    blobs.record_seen(container, store, opened, state, revisions=revisions)
    if ctx.args.json:
        emit_json(
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
            retired = (
                f"  [generations below {r['retired_below']} retired]" if r["retired_below"] else ""
            )
            print(
                f"{r['name']:<{width}}  {r['generation']:>3}  {r['algorithm']:<17}  "
                f"{r['key_id'][:8]}  {r['created']}  sg-{r['signer'][:8]} ({r['signer_label']})"
                f"{retired}"
            )
    elif not refused:
        print(f"no keys in {tilde(store.location)}", file=sys.stderr)
    for name, reason in refused:
        print(f"{PROG}: error: refused {name}: {reason}", file=sys.stderr)
    for name in missing:
        print_warning(
            f"{name}: this container has seen generation {state.generation_floor(name)}, but "
            f"{tilde(store.location)}, which held it, has none now (deleted?)"
        )
    return 3 if refused else 0


def _origin(capi_alg_id: int | None) -> str:
    if capi_alg_id is None:
        return "keyblob session key"
    return (
        f"CryptoAPI session key ({mscapi.alg_name(capi_alg_id)}): use keyblob capi encrypt/decrypt"
    )


def cmd_show(ctx: Context) -> int:
    name, generation = ctx.args.name, ctx.args.generation
    checked_name(name)
    store = existing_store(ctx)
    container = ctx.open()

    def opened() -> blobs.Verified:
        try:
            if generation is None:
                return blobs.open_latest(container, store, name, unwrap=False)
            return blobs.open_stored(container, store, name, generation, unwrap=False)
        except VerificationError as e:
            state = container.state()
            raise _untrusted_signer(
                container, state, store, name, e, generation=generation
            ) from None

    with about_key(name):
        v = refusing(name, opened)
    state = container.state()
    doc = _describe(v, container, state)
    doc["store"] = store.location
    stored = store.generations(name)
    below = state.retired_below(name)
    doc["generations"] = stored
    doc["retired_generations"] = [g for g in stored if g < below]
    if ctx.args.json:
        emit_json(doc)
        return 0
    rows = [
        ("name", doc["name"]),
        ("generation", str(doc["generation"])),
        *([("revision", str(doc["revision"]))] if doc["revision"] else []),
        ("algorithm", doc["algorithm"]),
        ("origin", _origin(doc["capi_alg_id"])),
        ("key id", doc["key_id"]),
        ("created", doc["created"]),
        ("signer", f"sg-{doc['signer'][:8]} ({doc['signer_label']})"),
        (
            "recipients",
            ", ".join(
                f"kx-{r[:8]}" + ("" if label is None else f" ({label})")
                for r, label in zip(doc["recipients"], doc["recipient_labels"], strict=True)
            ),
        ),
        (
            "generations",
            ", ".join(f"{g} (retired)" if g < below else str(g) for g in stored),
        ),
        ("stored in", tilde(store.location)),
    ]
    for label, value in rows:
        print(f"{label:<12} {value}")
    return 0


def cmd_export(ctx: Context) -> int:
    args = ctx.args
    checked_name(args.name)
    store = existing_store(ctx)
    container = ctx.open()
    with about_key(args.name):
        if args.generation is None:
            v = refusing(
                args.name, lambda: blobs.open_latest(container, store, args.name, unwrap=False)
            )
        else:
            v = refusing(
                args.name,
                lambda: blobs.open_stored(
                    container, store, args.name, args.generation, unwrap=False
                ),
            )
    data = armoring.armor(v.encoded, armoring.BLOB) if args.armor else v.encoded
    write_output(args.output, data)
    if args.output != "-":
        print(
            f"wrote {args.name} generation {v.header.generation} to {args.output}", file=sys.stderr
        )
    return 0


#: What reads each kind of CryptoAPI blob (docs/MSCAPI.md), for verify and import given one.
_CAPI_COMMANDS = {
    "SIMPLEBLOB": "keyblob capi import-simpleblob FILE --name NAME --signature SIG",
    "PRIVATEKEYBLOB": "keyblob capi import-keypair FILE",
    "PUBLICKEYBLOB": "keyblob trust add FILE (to pin a CryptoAPI signer)",
    "PLAINTEXTKEYBLOB": "keyblob capi decrypt --key FILE",
}


def _refuse_capi_blob(path: str, raw: bytes) -> None:
    """A CryptoAPI blob is not a keyblob key blob: say which it is and what reads it
    (before any passphrase is asked)."""
    if armoring.is_armored(raw) or raw[:4] == b"KBLB" or not mscapi.looks_like_capi_blob(raw):
        return
    kind = mscapi.BlobType(raw[0]).name
    reader = _CAPI_COMMANDS.get(kind)
    hint = (
        f"a CryptoAPI {kind} is read by: {reader}; keyblob inspect FILE shows its fields"
        if reader
        else "keyblob capi reads SIMPLEBLOB, PUBLICKEYBLOB, PRIVATEKEYBLOB and PLAINTEXTKEYBLOB "
        "files; this kind is not supported"
    )
    raise FormatError(f"{path} is a CryptoAPI {kind}, not a keyblob key blob", hints=(hint,))


def cmd_import(ctx: Context) -> int:
    args = ctx.args
    data = read_file(args.file, blobformat.MAX_BLOB_SIZE * 2)
    _refuse_capi_blob(args.file, data)
    container = ctx.open()
    store = ctx.store()
    v = refusing(args.file, lambda: blobs.import_blob(container, store, data, name=args.name))
    h = v.header
    signer = _describe(v, container, container.state())["signer_label"]
    print(
        f"imported {h.name} generation {h.generation} (key id {h.key_id.short}) "
        f"signed by sg-{h.signer_id.short} ({signer})"
    )
    return 0


def cmd_verify(ctx: Context) -> int:
    args = ctx.args
    try:
        data = read_file(args.file, blobformat.MAX_BLOB_SIZE * 2)
        _refuse_capi_blob(args.file, data)
    except KeyblobError as e:  # a script reading --json gets JSON, whatever failed
        if args.json:
            emit_json({"file": args.file, "valid": False, "reason": str(e)})
        raise
    container = ctx.open()
    try:
        v = refusing(args.file, lambda: blobs.verify(container, data, name=args.name))
    except Refused as e:
        if args.json:
            emit_json({"file": args.file, "valid": False, "reason": str(e)})
        raise
    doc = _describe(v, container, container.state())
    if args.json:
        emit_json({"file": args.file, "valid": True, **doc})
    else:
        print(
            f"{args.file}: valid: {doc['name']} generation {doc['generation']}, "
            f"signed by sg-{doc['signer'][:8]} ({doc['signer_label']}), unwraps for this container"
        )
    return 0


def cmd_inspect(ctx: Context) -> int:
    args = ctx.args
    raw = read_file(args.file, blobformat.MAX_BLOB_SIZE * 2)
    armored = armoring.is_armored(raw)
    text = raw.lstrip()
    public_armor = f"-----BEGIN {armoring.PUBLIC_KEY}-----".encode()
    if (armored and text.startswith(public_armor)) or raw[:4] == b"KBPK":
        # Every check of FORMAT.md 3, the label signature included: inspect needs no
        # secret, but it never shows a label its file's own key did not sign.
        pub = read_public_key_file(args.file, raw)
        doc = {
            "kind": "public key file",
            "version": pub.version,
            "suite": pub.suite.label,
            "label": pub.label,
            "label_signed": pub.label_signed,
            "exchange_key_id": pub.exchange_id.hex,
            "signature_key_id": pub.signature_id.hex,
            "fingerprint": pub.fingerprint,
        }
        if args.json:
            emit_json(doc)
        else:
            how = "signed by its signature key" if pub.label_signed else "not signed"
            print(f"keyblob public key file v{pub.version} ({'armored' if armored else 'binary'})")
            print(f"  label          {shown_label(pub)}  (suite {pub.suite.label})")
            print(f"                 {how}")
            print(f"  exchange key   kx-{pub.exchange_id.short}  id {pub.exchange_id.hex}")
            print(f"  signature key  sg-{pub.signature_id.short}  id {pub.signature_id.hex}")
            print(f"  fingerprint    {pubkey.group_fingerprint(pub.fingerprint)}  (of both keys)")
        return 0
    if not armored and raw[:4] != b"KBLB" and mscapi.looks_like_capi_blob(raw):
        return _inspect_capi(raw, args.json)
    try:
        blob = formats.KeyBlob.from_bytes(armoring.dearmor(raw, armoring.BLOB) if armored else raw)
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
        emit_json(
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
    print(
        "  each wrapped key is also bound to the core header (bytes 0..name, and the revision "
        "if any) and its recipient id (FORMAT.md 2.4)"
    )
    print(
        "  not verified: inspect needs no secret; run keyblob verify to check signer and signature"
    )
    return 0


def _inspect_capi(raw: bytes, as_json: bool) -> int:
    kind, fields = mscapi.describe(raw)
    if as_json:
        emit_json(
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


def keep_public_file(ctx: Context, container: Provider) -> PublicKeyFile:
    """Sign the container's label into its public key file and keep the file in the home
    (FORMAT.md 5), so that ``pubkey`` needs no passphrase; called wherever the label is
    signed.  A file that cannot be kept is warned about: it is a cache, and ``pubkey``
    unlocks and makes it again."""
    pub = publickeys.make(container)
    try:
        ctx.home.write_public_file(
            container.name, armoring.armor(pub.to_bytes(), armoring.PUBLIC_KEY)
        )
    except KeyblobError as e:
        print_warning(f"{e}; keyblob pubkey will ask for the passphrase")
    return pub


def _kept_public_file(
    ctx: Context, suite: Suite, exchange: bytes, signature: bytes
) -> tuple[PublicKeyFile | None, str]:
    """The public key file kept in the home if it is this container's signed file: its
    label signature verifies and its keys are those of container.json (FORMAT.md 5).  Else
    None, and why, for the note that says it was made again."""
    raw = ctx.home.read_public_file(ctx.container_name)
    if raw is None:
        return None, "kept the public key file in the home: pubkey needs no passphrase from now on"
    try:
        return publickeys.read_own(raw, suite, exchange, signature), ""
    except KeyblobError:
        return None, (
            "the public key file kept in the home did not match the container (its keys were "
            "replaced, or the file was edited): made it again from the unlocked container"
        )


def cmd_pubkey(ctx: Context) -> int:
    args = ctx.args
    name = ctx.container_name
    ctx.home.require(name)  # "no container: run keyblob init" comes first
    suite, exchange, signature = ctx.home.public_keys(name)
    pub, why = _kept_public_file(ctx, suite, exchange, signature)
    if args.format == "msblob":
        # One key per PUBLICKEYBLOB: the exchange key, which a Windows peer wraps keys for;
        # keyblob capi export-public --slot signature gives the signature key.  It holds no
        # label: container.json's public keys are all it needs, never a passphrase.
        data = public_key_blob(suite, exchange, signature, keys.KeyRole.EXCHANGE)
        who = repr(pub.label) if pub is not None else f"container {name!r}"
    else:
        if pub is None:
            # No kept file (a container made before keyblob kept one) or one that does not
            # match: unlocking authenticates the keys, and the label is signed again.
            pub = keep_public_file(ctx, ctx.open())
            print_note(why)
            suite, exchange, signature = pub.suite, pub.exchange, pub.signature
        # Version 2 (FORMAT.md 3.2): the label, signed by the signature key.
        data = (
            armoring.armor(pub.to_bytes(), armoring.PUBLIC_KEY)
            if args.format == "keyblob"
            else _labelled_pem(pub)
        )
        who = repr(pub.label)
    write_output(args.output, data)
    if args.output != "-":
        print(
            f"wrote the public keys of {who} to {args.output}: "
            f"kx-{keys.key_id_for(suite, keys.KeyRole.EXCHANGE, exchange).short}, "
            f"sg-{keys.key_id_for(suite, keys.KeyRole.SIGNATURE, signature).short}",
            file=sys.stderr,
        )
    if args.format == "keyblob":
        own = pubkey.group_fingerprint(formats.fingerprint(suite, exchange, signature))
        print(
            f"fingerprint {own}: whoever trusts this file must see the same one",
            file=sys.stderr,
        )
    return 0


#: The key types of each suite (by its label), (exchange, signature), as the PEM labels
#: name them.
_KEY_TYPES = {
    "x25519": ("X25519", "Ed25519"),
    "rsa": ("RSA-OAEP-SHA256", "RSA-PSS-SHA256"),
    "p256": ("P-256 HPKE", "ECDSA P-256 SHA-256"),
    "pq": ("X-Wing", "ML-DSA-65 + Ed25519"),
}


def _labelled_pem(pub: PublicKeyFile) -> bytes:
    """Both public keys as PEM, each block after a line saying which key it is.  The line
    is text before the BEGIN line, which RFC 7468 section 2 lets every PEM reader skip (as
    openssl writes a certificate's text before it), not a header inside the block."""
    exchange, signature = _KEY_TYPES[pub.suite.label]
    where = f"of {pub.label!r}, fingerprint {pubkey.group_fingerprint(pub.fingerprint)}"
    return (
        f"exchange key kx-{pub.exchange_id.short} ({exchange}) {where}\n".encode()
        + suites.public_pem(pub.suite, pub.exchange)
        + f"signature key sg-{pub.signature_id.short} ({signature}) {where}\n".encode()
        + suites.public_pem(pub.suite, pub.signature, signature=True)
    )


def _say_rewrap_retry(conflict: ConflictError, attempt: int, attempts: int) -> None:
    """share/unshare lost a compare-and-set: it starts again from what is stored now."""
    print_note(
        f"another writer changed {conflict.name} generation {conflict.generation} first; "
        f"trying again ({attempt}/{attempts})"
    )


def _generations_wanted(args: Any) -> tuple[int | None, bool]:
    if args.generation is not None and args.all:
        raise UsageError("give --generation N or --all, not both")
    return args.generation, bool(args.all)


def _shared_doc(
    name: str, done: blobs.Shared, container: Provider, state: State, location: str
) -> dict[str, Any]:
    def ids(found: Sequence[KeyId]) -> list[dict[str, Any]]:
        return [{"key_id": r.hex, "label": _recipient_label(r, container, state)} for r in found]

    return {
        "name": name,
        "store": location,
        "generations": [
            {
                "generation": r.generation,
                "revision": r.revision,
                "key_id": r.key_id.hex,
                "changed": r.changed,
                "added": ids(r.added),
                "removed": ids(r.removed),
                "recipients": ids(r.recipients),
            }
            for r in done.results
        ],
        "skipped": [{"generation": s.generation, "reason": s.reason} for s in done.skipped],
    }


def _print_shared(doc: dict[str, Any], verb: str) -> None:
    for skipped in doc["skipped"]:
        print_warning(
            f"left {doc['name']} generation {skipped['generation']} as it is: {skipped['reason']}"
        )
    for g in doc["generations"]:
        where = f"{doc['name']} generation {g['generation']} (key id {g['key_id'][:8]})"

        def shown(entries: list[dict[str, Any]]) -> str:
            return ", ".join(
                f"kx-{e['key_id'][:8]}" + (f" ({e['label']})" if e["label"] else "")
                for e in entries
            )

        count = len(g["recipients"])
        plural = "recipient" if count == 1 else "recipients"
        if not g["changed"]:
            print(f"{where}: nothing to change, revision {g['revision']}, {count} {plural}")
            continue
        change = f"added {shown(g['added'])}" if g["added"] else f"removed {shown(g['removed'])}"
        print(f"{verb} {where}: {change}; now revision {g['revision']}, {count} {plural}")


def _note_resigned(done: blobs.Shared, container: Provider, state: State) -> None:
    """A re-wrap is signed by this container: say so when another container had signed the
    blob, since a container that trusts only that one refuses the new blob (FORMAT.md 2.7
    step 2) until it trusts this one too."""
    for r in done.results:
        before = r.signed_before
        if r.changed and before is not None and before != container.signature_id:
            trusted = state.signer(before)
            who = f"sg-{before.short}" + (f" ({trusted.label})" if trusted else "")
            print_note(
                f"{r.name} generation {r.generation} was signed by {who}; it is now signed "
                "by this container: a container that does not trust this one refuses it "
                "until it does (keyblob trust add with this container's public key file)"
            )


def cmd_share(ctx: Context) -> int:
    args = ctx.args
    checked_name(args.name)
    generation, every = _generations_wanted(args)
    to = [read_public_key_file(p) for p in args.to]
    store = existing_store(ctx)
    container = ctx.open()
    with about_key(args.name):
        done = refusing(
            args.name,
            lambda: blobs.share(
                container,
                store,
                args.name,
                to,
                generation=generation,
                every=every,
                on_retry=_say_rewrap_retry,
            ),
        )
    state = container.state()  # once, after the write: read and verified on each call
    doc = _shared_doc(args.name, done, container, state, store.location)
    if args.json:
        emit_json(doc)
    else:
        _print_shared(doc, "shared")
    _note_resigned(done, container, state)
    _note_untrusted(container, to)
    return 0


def _resolve_recipient(
    container: Provider, state: State, store: Any, name: str, text: str
) -> KeyId:
    """The exchange key id that ``text`` names: a prefix (8 hex digits or more, ``kx-``
    allowed) of a recipient id of a stored blob of ``name``, a whole 32-digit key id, or the
    id (``sg-``) or fingerprint of a trusted container or of this one (FORMAT.md 3.1; white
    space and upper case allowed, as ``trust remove`` reads them)."""
    given = "".join(text.split()).lower()
    for prefix in ("kx-", "sg-"):
        given = given.removeprefix(prefix)
    if len(given) < 8 or any(c not in "0123456789abcdef" for c in given):
        raise UsageError(
            f"{text!r} is not a recipient id: give at least the first 8 hex digits of a "
            "recipient's key id (keyblob show NAME lists them) or of a container's fingerprint"
        )
    present: set[KeyId] = set()
    for g in store.generations(name):
        try:  # only to match the id given: nothing read here is trusted or used otherwise
            present.update(
                r.key_id for r in formats.KeyBlob.from_bytes(store.get(name, g)).recipients
            )
        except KeyblobError:
            continue
    found = {r for r in present if r.hex.startswith(given)}
    if len(given) == 2 * keys.KEY_ID_SIZE:
        found.add(keys.KeyId(bytes.fromhex(given)))
    containers = [
        (
            container.signature_id,
            container.suite,
            container.exchange_public,
            container.signature_public,
        )
    ]
    containers += [(s.key_id, s.suite, s.exchange, s.public) for s in state.trusted]
    for signature_id, suite, exchange, public in containers:
        if signature_id.hex.startswith(given) or formats.fingerprint(
            suite, exchange, public
        ).startswith(given):
            found.add(keys.key_id_for(suite, keys.KeyRole.EXCHANGE, exchange))
    if not found:
        raise UsageError(
            f"no recipient of {name} and no trusted container has an id or fingerprint "
            f"starting with {given}",
            hints=(f"keyblob show {name} lists the recipients",),
        )
    if len(found) > 1:
        raise UsageError(f"{given} matches {len(found)} recipients: give more digits")
    return found.pop()


def cmd_unshare(ctx: Context) -> int:
    args = ctx.args
    checked_name(args.name)
    generation, every = _generations_wanted(args)
    to = [read_public_key_file(p) for p in args.to]
    store = existing_store(ctx)
    container = ctx.open()
    state = container.state()
    with about_key(args.name):
        recipient = _resolve_recipient(container, state, store, args.name, args.recipient)
        done = refusing(
            args.name,
            lambda: blobs.unshare(
                container,
                store,
                args.name,
                recipient,
                generation=generation,
                every=every,
                to=to,
                on_retry=_say_rewrap_retry,
            ),
        )
    state = container.state()  # again, once, after the write: its revision marks moved
    doc = _shared_doc(args.name, done, container, state, store.location)
    doc["recipient"] = recipient.hex
    if args.json:
        emit_json(doc)
    else:
        _print_shared(doc, "unshared")
    _note_resigned(done, container, state)
    # Said every time, whatever changed: nothing in a store can take back a key once read.
    print_warning(
        f"kx-{recipient.short} may have kept a copy of {args.name}'s key (or of an earlier "
        "blob): it can still read everything encrypted under that key; to cut it off from "
        f"data encrypted from now on, make a new key: keyblob rotate {args.name}"
    )
    return 0


def own_fingerprint(container: Provider) -> str:
    return formats.fingerprint(
        container.suite, container.exchange_public, container.signature_public
    )


def register(sub: Subcommands) -> None:
    """init, new, rotate, share, unshare, list, show, export, import, verify, inspect,
    pubkey."""
    sp = command(sub, "init", cmd_init, "create a container")
    sp.add_argument(
        "--suite",
        choices=["x25519", "rsa", "pq", "p256"],
        help="x25519 (default): X25519 wrapping and Ed25519 signatures; rsa: RSA-OAEP and "
        "RSA-PSS, for CryptoAPI peers; pq: post-quantum, X-Wing (ML-KEM-768 + X25519) "
        "wrapping and ML-DSA-65 + Ed25519 signatures (software only); p256 (default with "
        "--provider pkcs11): P-256 HPKE wrapping and ECDSA signatures, what hardware tokens run",
    )
    sp.add_argument(
        "--provider",
        choices=["software", "pkcs11"],
        default="software",
        help="software (default): keys sealed in the home under a passphrase; pkcs11: keys "
        "in a PKCS#11 token (an HSM, a smart card), unlocked by its PIN",
    )
    sp.add_argument("--module", metavar="PATH", help="the token's PKCS#11 module (pkcs11)")
    sp.add_argument(
        "--token",
        metavar="LABEL|URI",
        help="the token's label, or an RFC 7512 pkcs11: URI naming it (pkcs11)",
    )
    sp.add_argument(
        "--key-label",
        action="append",
        metavar="ROLE=LABEL",
        help="adopt key pairs the token holds: exchange=LABEL and signature=LABEL (pkcs11)",
    )
    sp.add_argument(
        "--bits",
        type=int,
        choices=[2048, 3072, 4096],
        help="RSA key size (rsa suite; default 3072)",
    )
    sp.add_argument(
        "--label",
        metavar="TEXT",
        help="what people call the container, e.g. 'Alice Martin <alice@example.com>' "
        "(signed into its public key file; default: the container name; change it later "
        "with keyblob label set)",
    )
    sp = command(sub, "new", cmd_new, "generate a session key, export it signed, store it")
    sp.add_argument("name", help="the key's name: a-z, 0-9, '.', '_', '-'")
    sp.add_argument(
        "--algorithm",
        default="aes-256-gcm",
        choices=ALGORITHMS,
        help="default aes-256-gcm; capi-* keys are for keyblob capi encrypt/decrypt",
    )
    sp.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="FILE",
        help="also wrap for this public key file",
    )
    sp.add_argument("--legacy", action="store_true", help="allow a legacy CryptoAPI algorithm")
    sp = command(sub, "rotate", cmd_rotate, "make the next generation of a key")
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument("--algorithm", choices=ALGORITHMS, help="default: the current one")
    sp.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="FILE",
        help="also wrap for this public key file",
    )
    sp.add_argument("--legacy", action="store_true", help="allow a legacy CryptoAPI algorithm")
    sp = command(
        sub,
        "share",
        cmd_share,
        "wrap an existing key for more recipients (same key: old data opens for them)",
    )
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument(
        "--to",
        action="append",
        default=[],
        required=True,
        metavar="FILE",
        help="wrap for this public key file too (repeatable)",
    )
    _generation_choice(sp, "share")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp = command(
        sub,
        "unshare",
        cmd_unshare,
        "wrap an existing key again without one recipient (rotate to cut them off)",
    )
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument(
        "--recipient",
        required=True,
        metavar="ID",
        help="the recipient to drop: a kx- key id prefix (keyblob show lists them), or the "
        "id or fingerprint of a trusted container",
    )
    sp.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="FILE",
        help="the public key file of a remaining recipient not trusted here",
    )
    _generation_choice(sp, "unshare")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp = command(sub, "list", cmd_list, "list stored keys (verified; never key bytes)")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp = command(sub, "show", cmd_show, "show a stored key's metadata (verified; never key bytes)")
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    generation_option(sp)
    sp = command(sub, "export", cmd_export, "write the stored blob of a key to a file")
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument("-o", "--output", required=True, metavar="FILE", help="'-' for standard output")
    sp.add_argument("--armor", action="store_true", help="text armor instead of binary")
    generation_option(sp)
    sp = command(sub, "import", cmd_import, "verify a blob, then add it to the store")
    sp.add_argument("file", help="a keyblob key blob, binary or armored ('-': standard input)")
    sp.add_argument("--name", help="refuse unless the blob is signed for this name")
    sp = command(
        sub, "verify", cmd_verify, "check a blob without storing it; the exit status is the verdict"
    )
    sp.add_argument("file", help="a keyblob key blob, binary or armored ('-': standard input)")
    sp.add_argument("--name", help="refuse unless the blob is signed for this name")
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")
    sp = command(
        sub,
        "inspect",
        cmd_inspect,
        "show the structure of a blob or public key file (no secret needed)",
    )
    sp.add_argument(
        "file",
        help="a key blob or public key file (binary or armored), or a CryptoAPI blob",
    )
    sp.add_argument("--json", action="store_true", help="print a JSON document (docs/CLI.md)")


def _generation_choice(sp: Any, verb: str) -> None:
    sp.add_argument(
        "--generation",
        type=int,
        metavar="N",
        help=f"{verb} generation N only (default: the newest)",
    )
    sp.add_argument(
        "--all",
        action="store_true",
        help=f"{verb} every stored generation that verifies here",
    )


def register_label(sub: Subcommands) -> None:
    """label [--json] / label set TEXT."""
    sp = command(
        sub,
        "label",
        cmd_label,
        "show the container's label, or change it: label set TEXT",
    )
    sp.add_argument("--json", action="store_true")
    lsub = sp.add_subparsers(dest="label_command", parser_class=Parser, metavar="COMMAND")
    sp = lsub.add_parser("set", help="give the container a new label")
    sp.add_argument("text", metavar="TEXT")
    sp.set_defaults(func=cmd_label)


def register_pubkey(sub: Subcommands) -> None:
    """pubkey (after encrypt and decrypt in the command list, as it always was)."""
    sp = command(sub, "pubkey", cmd_pubkey, "write the container's public keys, to hand to others")
    sp.add_argument(
        "--format",
        default="keyblob",
        choices=["keyblob", "pem", "msblob"],
        help="keyblob (default): the public key file others trust and wrap for; pem: both "
        "keys as SubjectPublicKeyInfo PEM, each after a line naming it; msblob: the exchange "
        "key as a CryptoAPI PUBLICKEYBLOB (rsa suite)",
    )
    sp.add_argument("-o", "--output", default="-", metavar="FILE", help="default: standard output")
