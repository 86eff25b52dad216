"""keyblob capi …: Windows CryptoAPI blobs, signatures and data (docs/MSCAPI.md)."""

from __future__ import annotations

import argparse
import io
import os
import stat
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

from keyblob.cli.data import encrypt_command
from keyblob.cli.terminal import (
    Context,
    Parser,
    Refused,
    Subcommands,
    command,
    generation_option,
    input_stream,
    lazy_module,
    print_error,
    print_note,
    print_warning,
    progress_bar,
    read_file,
    refuse_terminal,
    refusing,
    stream_to_output,
    write_output,
)
from keyblob.errors import (
    FormatError,
    KeyblobError,
    PassphraseError,
    PassphraseRequired,
    ProviderError,
    UsageError,
    WeakKeyError,
)

if TYPE_CHECKING:
    import getpass
    import pathlib
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyblob import blobs, keys, mscapi, trust
    from keyblob.keys import KeyRole, SessionKey, Suite
    from keyblob.providers import base, suites
    from keyblob.providers.base import CapiKeys, Provider
    from keyblob.trust import State
else:
    # The library (even its value types and formats), CryptoAPI support and cryptography
    # are loaded on first use: building the parser imports none of them, and every command
    # pays for what the CLI imports at start (keyblob --help is measured).
    getpass = lazy_module("getpass")
    pathlib = lazy_module("pathlib")
    keys = lazy_module("keyblob.keys")
    base = lazy_module("keyblob.providers.base")
    trust = lazy_module("keyblob.trust")
    blobs = lazy_module("keyblob.blobs")
    mscapi = lazy_module("keyblob.mscapi")
    rsa = lazy_module("cryptography.hazmat.primitives.asymmetric.rsa")
    suites = lazy_module("keyblob.providers.suites")


UNSIGNED_WARNING = (
    "{file} is not signed: anyone who could write to the disk it came from could have put a "
    "session key of their own in it, and would read everything encrypted with it"
)
UNSIGNED_REFUSED = (
    "refused {file}: no --signature given; a SIMPLEBLOB is checked against the signer's "
    "CryptSignHash signature before it is unwrapped"
)


def _capi_file(path: str) -> bytes:
    return read_file(path, what="a CryptoAPI file")


def _load_key(ctx: Context, path: str) -> mscapi.LoadedKey:
    """The RSA key in ``path``, in any format ``capi convert`` reads (PEM, DER, CryptoAPI
    blob, .NET XML); an encrypted one asks for its passphrase."""
    data = read_file(path, mscapi.keyfiles.MAX_KEY_FILE_SIZE, what="a key file")
    try:
        return mscapi.load_rsa_key(data)
    except PassphraseRequired:
        pass
    except FormatError as e:  # which file, when a command reads several
        raise type(e)(f"{path}: {e}", hints=e.hints) from None
    passphrase = ctx.key_passphrase(path)
    try:
        return mscapi.load_rsa_key(data, passphrase=passphrase)
    except FormatError as e:
        raise type(e)(f"{path}: {e}", hints=e.hints) from None
    except PassphraseError as e:
        if ctx.args.passphrase_file or "KEYBLOB_PASSPHRASE" not in os.environ:
            raise
        raise PassphraseError(
            str(e),
            hints=(
                "the passphrase tried was KEYBLOB_PASSPHRASE; give the key file's own "
                "with --passphrase-file (it takes precedence), or unset it and type it",
            ),
        ) from None


def _public_key(ctx: Context, path: str, option: str) -> tuple[rsa.RSAPublicKey, mscapi.LoadedKey]:
    """The RSA public key ``option`` names: any format, and the public half of a private
    key (said in a note: only the public key is needed there)."""
    loaded = _load_key(ctx, path)
    key = loaded.key
    if isinstance(key, rsa.RSAPrivateKey):
        print_note(f"{option} {path} holds a private key: only its public half is used")
        return key.public_key(), loaded
    return key, loaded


def _private_key(ctx: Context, path: str, option: str) -> rsa.RSAPrivateKey:
    key = _load_key(ctx, path).key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(
            f"{path} holds a public key: {option} needs the key pair (its private key)"
        )
    return key


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
    ctx: Context, blob: bytes, what: str, state: State | None, name: str | None = None
) -> blobs.CapiSignature:
    """The procedure's cure: the SIMPLEBLOB's signature is checked before any unwrap, by
    the library's rule (blobs.check_simpleblob_signature); here only its words.

    ``state`` holds the container's pinned CryptoAPI signers (None where no home is used).
    Once any is pinned, only they are accepted, each for the names its scope allows
    (``name``), and --signer may be left out (docs/MSCAPI.md 7.2)."""
    args = ctx.args
    _signature_given(args, what)
    _signer_given(args, state)
    signer = _public_key(ctx, args.signer, "--signer")[0] if args.signer else None
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    signature = _capi_file(args.signature) if args.signature is not None else None
    found: blobs.CapiSignature = _sized(
        args.signer or "the pinned CryptoAPI signer",
        lambda: refusing(
            what,
            lambda: blobs.check_simpleblob_signature(
                state or trust.State(),
                blob,
                name=name,
                signature=signature,
                signer=signer,
                hash_alg=hash_alg,
                legacy=args.legacy,
                unsigned=args.unsigned,
            ),
        ),
    )
    _signature_notes(args, found, what, home=state is not None)
    return found


def _signature_given(args: argparse.Namespace, what: str) -> None:
    """The library's refusals of missing arguments, in the command line's words, before
    any key file is read or the container unlocked."""
    if args.unsigned and args.signature is not None:
        raise UsageError("--unsigned and --signature contradict each other: give one")
    if args.signature is None and not args.unsigned:
        raise Refused(
            UNSIGNED_REFUSED.format(file=what),
            hints=(
                "give --signature SIG --signer PUBLICKEYBLOB, or --unsigned to accept the risk",
            ),
        )


def _signer_given(args: argparse.Namespace, state: State | None) -> None:
    """A signature needs --signer, unless the container (``state``) has pinned signers."""
    if args.signature is not None and args.signer is None:
        if state is None:
            raise UsageError("--signature needs --signer PUBLICKEYBLOB (the signer's public key)")
        if not state.capi_signers:
            raise UsageError(
                "--signature needs --signer PUBLICKEYBLOB (the signer's public key), or a "
                "pinned CryptoAPI signer: keyblob trust add SIGNER.pubblob"
            )


def _signature_notes(
    args: argparse.Namespace, found: blobs.CapiSignature, what: str, *, home: bool
) -> None:
    """Who signed, shown on every use: a pinned signer by label and fingerprint, any other
    by fingerprint with how to pin it (only a key trust add accepts: 1024 bits and more)."""
    if found.public is None:
        print_warning(UNSIGNED_WARNING.format(file=what))
        return
    by = found.pinned
    if by is not None:
        print_note(f"signed by pinned CryptoAPI signer {by.label!r} (fingerprint {by.fingerprint})")
        return
    pin = ""
    if home and found.bits >= mscapi.keysize.REFUSED_RSA_BELOW:
        pin = f"; pin it once: keyblob trust add {args.signer}"
    print_note(
        f"signer {args.signer} has fingerprint {trust.capi_fingerprint(found.public)}: compare it "
        f"with the signer's owner{pin}"
    )


LIBRARY_LEGACY = "legacy=True"


def _in_cli_words(func: Callable[[Context], int]) -> Callable[[Context], int]:
    """``func``, with the library's name for the opt-in to legacy algorithms and sizes
    (``legacy=True``) said as the option that gives it (--legacy)."""

    def run(ctx: Context) -> int:
        try:
            return func(ctx)
        except UsageError as e:
            if LIBRARY_LEGACY not in str(e):
                raise
            words = str(e).replace(f" ({LIBRARY_LEGACY} in the library)", "")
            raise UsageError(words.replace(LIBRARY_LEGACY, "--legacy"), hints=e.hints) from None

    return run


def windows_keys(container: Provider, what: str) -> CapiKeys:
    """``container`` where the command needs CryptoAPI operations on its own RSA keys
    (unwrap or sign a SIMPLEBLOB, take a PRIVATEKEYBLOB): a software container or a token
    container (``CapiKeys``); any other provider is refused by name rather than failing
    half-way.  What the container at hand cannot do, it refuses itself (a token container
    has no CryptoAPI signature key).

    Raises:
        ProviderError: ``container`` does no CryptoAPI work.
    """
    if isinstance(container, base.CapiKeys):
        return container
    raise ProviderError(
        f"container {container.name!r} cannot {what}: CryptoAPI operations on a container's "
        "own keys need an rsa-suite software container (keyblob init --suite rsa) or a "
        "token container"
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


@_in_cli_words
def cmd_capi_import_keypair(ctx: Context) -> int:
    args = ctx.args
    blob = mscapi.PrivateKeyBlob.from_bytes(_capi_file(args.file))
    slot = args.slot or ("signature" if blob.alg_id is mscapi.AlgId.RSA_SIGN else "exchange")
    role = keys.KeyRole.SIGNATURE if slot == "signature" else keys.KeyRole.EXCHANGE
    key = blob.to_private_key()  # full validation: the key enters the home here
    ctx.home.require(ctx.container_name)
    if ctx.home.token_of(ctx.container_name) is not None:
        # A token container takes the key as an extra key that only reads what Windows
        # wrapped for it: CryptoAPI's reading rule (docs/MSCAPI.md 5), before the PIN.
        if role is not keys.KeyRole.EXCHANGE:
            raise UsageError(
                f"container {ctx.container_name!r} keeps its keys in a PKCS#11 token: it "
                "takes a CryptoAPI exchange key (AT_KEYEXCHANGE, --slot exchange) only"
            )
        _sized(
            args.file,
            lambda: mscapi.check_rsa_size(
                key,
                mscapi.RsaUse.READ,
                legacy=False,
                role="CryptoAPI exchange key",
                action="importing it",
            ),
        )
    else:
        try:  # the suite's own rules (size, exponent), before the unlock
            suites.load_exchange_public(keys.Suite.RSA, suites.public_bytes(key))
        except FormatError as e:
            raise UsageError(
                f"{args.file} (RSA-{key.key_size}) cannot be a container key: {e}. Its data "
                f"can still be read without a home: keyblob capi decrypt --private {args.file} "
                "--simpleblob … (docs/MSCAPI.md 7.3)"
            ) from None
    container = windows_keys(ctx.open(own_keys=True), "take a PRIVATEKEYBLOB")
    with warnings.catch_warnings():  # the size warning was given above, before the PIN
        warnings.simplefilter("ignore", mscapi.LegacyAlgorithmWarning)
        where = container.capi_import_key_pair(role, key, force=args.force)
    new_id = keys.key_id_for(keys.Suite.RSA, role, suites.public_bytes(key))
    print(
        f"imported {args.file} as the {slot} key of {container.name!r}: "
        f"{role.prefix}-{new_id.short} (RSA-{key.key_size}), {where}"
    )
    return 0


@_in_cli_words
def cmd_capi_export_public(ctx: Context) -> int:
    args = ctx.args
    role = keys.KeyRole.SIGNATURE if args.slot == "signature" else keys.KeyRole.EXCHANGE
    c = ctx.open()
    write_output(args.output, public_key_blob(c.suite, c.exchange_public, c.signature_public, role))
    return 0


def public_key_blob(suite: Suite, exchange: bytes, signature: bytes, role: KeyRole) -> bytes:
    """A container's ``role`` public key, of its public keys ``exchange`` and ``signature``,
    as a PUBLICKEYBLOB (CALG_RSA_KEYX or _SIGN); public keys are all it needs."""
    if suite is not keys.Suite.RSA:
        raise UsageError(
            "a PUBLICKEYBLOB holds an RSA key: it needs an rsa-suite container "
            "(keyblob init --suite rsa)"
        )
    public: object
    if role is keys.KeyRole.SIGNATURE:
        public = suites.load_signature_public(keys.Suite.RSA, signature)
        alg_id = mscapi.AlgId.RSA_SIGN
    else:
        public = suites.load_exchange_public(keys.Suite.RSA, exchange)
        alg_id = mscapi.AlgId.RSA_KEYX
    # The rsa suite's loaders return RSA keys only.
    return mscapi.PublicKeyBlob.from_public_key(cast(rsa.RSAPublicKey, public), alg_id).to_bytes()


@_in_cli_words
def cmd_capi_verify_signature(ctx: Context) -> int:
    """CryptVerifySignature over a whole file, as CryptSignHash signed it (docs/MSCAPI.md)."""
    args = ctx.args
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    signer = _public_key(ctx, args.signer, "--signer")[0]
    signature = _capi_file(args.signature)
    src, _, close = input_stream(args.file)
    try:
        _sized(
            args.signer,
            lambda: refusing(
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


@_in_cli_words
def cmd_capi_import_simpleblob(ctx: Context) -> int:
    """blobs.import_simpleblob owns the check order (docs/MSCAPI.md 7.2); this says it."""
    args = ctx.args
    blob = _capi_file(args.file)
    parsed = refusing(args.file, lambda: mscapi.SimpleBlob.from_bytes(blob))  # before the unlock
    algorithm = keys.Algorithm.for_capi(int(parsed.alg_id))
    keys.check_name(args.name)
    _signature_given(args, args.file)  # before the unlock
    container = ctx.open(own_keys=True)
    state = container.state()
    _signer_given(args, state)
    signer = _public_key(ctx, args.signer, "--signer")[0] if args.signer else None
    signature = _capi_file(args.signature) if args.signature is not None else None
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    store = ctx.store()
    try:
        done: blobs.CapiImport = _sized(
            args.signer or "the pinned CryptoAPI signer",
            lambda: refusing(
                args.file,
                lambda: blobs.import_simpleblob(
                    container,
                    store,
                    blob,
                    name=args.name,
                    signature=signature,
                    signer=signer,
                    hash_alg=hash_alg,
                    legacy=args.legacy,
                    unsigned=args.unsigned,
                    rotate_existing=args.rotate,
                ),
            ),
        )
    except Refused as e:
        if mscapi.simpleblob.WRONG_KEY not in str(e):
            raise
        raise Refused(
            str(e),
            hints=(
                *e.hints,
                "a SIMPLEBLOB opens with the Windows exchange key it was wrapped for: import "
                "that key pair first (keyblob capi import-keypair PRIVATEKEYBLOB)",
            ),
        ) from None
    _signature_notes(args, done.signature, args.file, home=True)
    if not done.signature.authenticated:
        print_warning(
            "without a signature a damaged blob yields a random key: decrypt some data "
            "before relying on it"
        )
    session = done.session
    print(
        f"imported {args.file} as {session.name} generation {session.generation} "
        f"({algorithm.label}, {mscapi.alg_name(int(parsed.alg_id))}), key id {session.key_id.short}"
    )
    return 0


@_in_cli_words
def cmd_capi_export_simpleblob(ctx: Context) -> int:
    args = ctx.args
    recipient, loaded = _public_key(ctx, args.to, "--to")
    if loaded.alg_id is mscapi.AlgId.RSA_SIGN:
        raise UsageError(
            f"{args.to} is a signature key (CALG_RSA_SIGN): a SIMPLEBLOB is wrapped for the "
            "recipient's exchange key (CALG_RSA_KEYX)"
        )
    hash_alg = mscapi.hash_from_label(args.hash, mscapi.SIGN_HASHES)
    # Before the unlock; build_simpleblob checks it again (its warning prints once).
    _sized(args.to, lambda: mscapi.check_recipient_key(recipient, legacy=args.legacy))
    opened = ctx.open(own_keys=True)
    container = windows_keys(opened, "sign a SIMPLEBLOB")
    session = ctx.load(args.name, opened)
    blob = _sized(
        args.to, lambda: mscapi.build_simpleblob(_capi_key(session), recipient, legacy=args.legacy)
    )
    signature = container.capi_sign(blob, hash_alg=hash_alg, legacy=args.legacy)
    write_output(args.output, blob)
    write_output(args.signature_out, signature)
    print(
        f"wrote {args.output} ({session.name} generation {session.generation}) and its "
        f"CryptSignHash signature {args.signature_out} ({hash_alg.calg_name})",
        file=sys.stderr,
    )
    return 0


@_in_cli_words
def cmd_capi_encrypt(ctx: Context) -> int:
    args = ctx.args
    iv = _iv(args.iv)
    return encrypt_command(
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
    what = path or "standard input"
    src, _, close = input_stream(path)
    try:
        # Everything that can fail before the end is checked before the first byte: to a
        # pipe, what decrypt_file writes before a padding failure at the end stays written.
        refusing(what, lambda: mscapi.check_ciphertext(key, _known_size(src), iv=iv))
        refusing(
            what,
            lambda: stream_to_output(
                output,
                0o600,
                lambda dst: mscapi.decrypt_file(key, src, dst, iv=iv, progress=update),
                refuse_tty=False,
            ),
        )
    finally:
        close()


def _known_size(src: BinaryIO) -> int | None:
    """The bytes left in ``src`` if it is a regular file (a file, or standard input
    redirected from one); None for a pipe or a terminal."""
    try:
        st = os.fstat(src.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        return st.st_size - src.tell()
    except OSError:
        return None


DECRYPTED_SUFFIX = ".dec"


@_in_cli_words
def cmd_capi_decrypt(ctx: Context) -> int:
    args = ctx.args
    iv = _iv(args.iv)
    inputs: list[str | None] = list(args.input) or [None]
    into_folder = len(inputs) > 1 or bool(args.output and pathlib.Path(args.output).is_dir())
    # Checked before the unlock, and before anything is written.
    if args.suffix is not None and not into_folder:
        raise UsageError("--suffix goes with -o DIR (it names the files written there)")
    if not into_folder:
        refuse_terminal(args.output, "decrypted data", "use -o FILE, or pipe it")
    others = [
        p for p in (args.key, args.private, args.simpleblob, args.signature, args.signer) if p
    ]
    if args.passphrase_file:
        others.append(args.passphrase_file)
    targets = _decrypt_targets(inputs, args.output, others, args.suffix) if into_folder else None
    key = _capi_decrypt_key(ctx)
    sizes = [os.path.getsize(p) if p and p != "-" and os.path.isfile(p) else None for p in inputs]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    update, done = progress_bar(total, args.quiet, "decrypt")
    try:
        if targets is None:
            _capi_decrypt_one(key, iv, inputs[0], args.output, update)
            return 0
        failed = _capi_decrypt_many(key, iv, targets, update)
    finally:
        done()
    if failed:
        raise Refused(f"{failed} of {len(inputs)} files failed; nothing was written for them")
    return 0


def decrypted_name(name: str, suffix: str | None = None) -> str:
    """The name ``capi decrypt -o DIR`` gives the plaintext of the file ``name``
    (docs/MSCAPI.md 8): without its ciphertext suffix (``suffix``, default ``.enc``) when it
    has one, and otherwise with ``.dec`` added, so that a plaintext never takes a name that
    says it is ciphertext."""
    strip = ".enc" if suffix is None else suffix
    if name.endswith(strip) and len(name) > len(strip):
        return name[: -len(strip)]
    return name + DECRYPTED_SUFFIX


def _decrypt_targets(
    inputs: list[str | None],
    output: str | None,
    others: Sequence[str] = (),
    suffix: str | None = None,
) -> list[tuple[str, Path]]:
    """Each input file and the file it decrypts to in the folder ``output``
    (:func:`decrypted_name`).

    Raises:
        UsageError: no folder, standard input among them, a bad ``suffix``, a target that is
            one of the inputs or ``others`` (the key files: they would be replaced), or two
            inputs with one target.
    """
    if not output or not pathlib.Path(output).is_dir():
        raise UsageError("several inputs need -o DIR, an existing folder")
    if suffix is not None and (not suffix or "/" in suffix or os.sep in suffix):
        raise UsageError("--suffix is the end of a file name, such as .ciphertext")
    pairs: list[tuple[str, Path]] = []
    for path in inputs:
        if path is None or path == "-":
            raise UsageError("decrypting into a folder needs each -i to be a file, not '-'")
        pairs.append((path, pathlib.Path(output) / decrypted_name(pathlib.Path(path).name, suffix)))
    sources = {os.path.realpath(path) for path, _ in pairs} | {os.path.realpath(p) for p in others}
    seen: dict[str, str] = {}
    for path, target in pairs:
        real = os.path.realpath(target)
        if real in sources:
            raise UsageError(
                f"{path} would be decrypted over an input ({target}): choose another -o folder"
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
            print_error(str(e))
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
        plain = refusing(args.key, lambda: mscapi.PlaintextKeyBlob.from_bytes(data))
        return mscapi.CapiKey.new(plain.alg_id, plain.key)
    if not args.private:
        raise UsageError("--simpleblob needs --private PRIVATEKEYBLOB (the exchange key pair)")
    return _capi_unwrap(ctx, args.simpleblob)[0]


def _capi_unwrap(ctx: Context, path: str) -> tuple[mscapi.CapiKey, bool]:
    """The SIMPLEBLOB's key, and whether it was authenticated: structure checked, then
    the signature verified (unless --unsigned), then unwrapped with --private's key."""
    args = ctx.args
    blob = _capi_file(path)
    refusing(path, lambda: mscapi.SimpleBlob.from_bytes(blob))
    authenticated = _capi_check_signature(ctx, blob, path, None).authenticated
    private = _private_key(ctx, args.private, "--private")
    key: mscapi.CapiKey = _sized(
        args.private,
        lambda: refusing(
            path,
            lambda: mscapi.unwrap_simpleblob(
                blob, private, authenticated=authenticated, legacy=args.legacy
            ),
        ),
    )
    return key, authenticated


@_in_cli_words
def cmd_capi_unwrap(ctx: Context) -> int:
    args = ctx.args
    if (args.output is None) == (not args.info):  # before any file is read
        raise UsageError("give -o FILE for the PLAINTEXTKEYBLOB, or --info (not both)")
    key, authenticated = _capi_unwrap(ctx, args.simpleblob)
    if args.info:
        print(f"{key.alg_id.calg_name}, {key.key_size * 8}-bit key ({key.key_size} bytes)")
        if not authenticated:
            print_warning("without a signature a damaged blob yields a random key of this size")
        return 0
    plain = mscapi.PlaintextKeyBlob(key.alg_id, key.unsafe_raw_bytes()).to_bytes()
    write_output(args.output, plain, mode=0o600, refuse_tty=True)
    print(f"wrote {args.output}: {key.alg_id.calg_name} key, {key.key_size} bytes", file=sys.stderr)
    return 0


@_in_cli_words
def cmd_capi_convert(ctx: Context) -> int:
    args = ctx.args
    fmt = mscapi.KeyFormat(args.to)
    if args.encrypt and (args.public or fmt not in (mscapi.KeyFormat.PEM, mscapi.KeyFormat.DER)):
        raise UsageError("--encrypt writes a private key as pem or der (PKCS#8, encrypted)")
    loaded = _load_key(ctx, args.input)
    public_only = args.public or not loaded.private
    if args.encrypt and public_only:
        raise UsageError(f"{args.input} holds a public key: there is nothing to encrypt")
    alg_id = loaded.alg_id if fmt is mscapi.KeyFormat.MSBLOB else None
    binary = fmt in (mscapi.KeyFormat.DER, mscapi.KeyFormat.MSBLOB)
    target = args.output or "-"
    if not args.force and (binary or not public_only):
        what = "a private key" if not public_only else "binary output"
        refuse_terminal(target, what, "use -o FILE (or --force)")
    passphrase = _new_key_passphrase(ctx, target) if args.encrypt else None
    out = _sized(
        args.input,
        lambda: mscapi.dump_rsa_key(
            loaded.key,
            fmt,
            public_only=public_only,
            alg_id=alg_id,
            legacy=args.legacy,
            passphrase=passphrase,
        ),
    )
    if target == "-" and fmt is mscapi.KeyFormat.XML:
        out += b"\n"  # for the terminal's sake; a file keeps .NET's exact bytes
    write_output(target, out, mode=0o644 if public_only else 0o600)
    kind = "public" if public_only else "private, encrypted" if args.encrypt else "private"
    size = loaded.key.key_size
    print(
        f"read {loaded.format.value} ({loaded.detail}), wrote {args.to} ({kind}, RSA-{size})",
        file=sys.stderr,
    )
    if not public_only and not args.encrypt:
        where = "standard output" if target == "-" else target
        how = (
            "or write it encrypted (--encrypt)"
            if fmt in (mscapi.KeyFormat.PEM, mscapi.KeyFormat.DER)
            else f"a {args.to} key has no encryption"
        )
        print_warning(
            f"{where} holds the private key in the clear: keep it where only you can read it, {how}"
        )
    return 0


def _new_key_passphrase(ctx: Context, target: str) -> bytes:
    """The passphrase that encrypts a written key: the first line of --passphrase-file, or
    typed twice at a prompt.  Never KEYBLOB_PASSPHRASE: that is a container's passphrase,
    and a key file would silently share it."""
    if ctx.args.passphrase_file:
        raw = read_file(
            ctx.args.passphrase_file, 4096, what="a passphrase file", too_large=UsageError
        )
        passphrase = raw.split(b"\n", 1)[0].rstrip(b"\r")
        if not passphrase:
            raise UsageError(f"{ctx.args.passphrase_file}: its first line is empty")
        return passphrase
    if not sys.stdin.isatty():
        raise UsageError(
            "--encrypt needs a passphrase: give --passphrase-file, or run in a terminal"
        )
    where = "standard output" if target == "-" else target
    for _ in range(3):
        try:
            first = getpass.getpass(f"Passphrase for the key written to {where}: ")
            again = getpass.getpass("Again: ")
        except EOFError:
            raise UsageError("no passphrase given (end of input)") from None
        if first and first == again:
            return first.encode("utf-8")
        print_warning("the passphrases differ (or are empty): try again")
    raise UsageError("no passphrase agreed on after 3 tries")


def register(sub: Subcommands) -> None:
    """capi and its subcommands."""
    capi = sub.add_parser(
        "capi",
        help="Windows CryptoAPI blobs, signatures and data",
        description="Windows CryptoAPI blobs, signatures and data (docs/MSCAPI.md)",
    )
    csub = capi.add_subparsers(
        dest="capi_command", required=True, parser_class=Parser, metavar="COMMAND"
    )

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
        csub,
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
        csub,
        "verify-signature",
        cmd_capi_verify_signature,
        "check a CryptSignHash signature over a file (no home needed)",
    )
    sp.add_argument("file")
    sp.add_argument("--signature", required=True, metavar="SIG")
    sp.add_argument("--signer", required=True, metavar="PUBLICKEYBLOB")
    sp.add_argument("--hash", default="sha256", help="default sha256")
    legacy_rsa(sp)
    sp = command(
        csub, "export-public", cmd_capi_export_public, "write a PUBLICKEYBLOB of the container"
    )
    sp.add_argument("--slot", choices=["exchange", "signature"], default="exchange")
    sp.add_argument("-o", "--output", required=True, metavar="FILE")
    sp = command(
        csub,
        "import-simpleblob",
        cmd_capi_import_simpleblob,
        "verify, unwrap and store a SIMPLEBLOB",
    )
    sp.add_argument("file")
    sp.add_argument("--name", required=True)
    sp.add_argument(
        "--rotate", action="store_true", help="store as the next generation of an existing name"
    )
    signed(sp)
    sp = command(
        csub,
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
        csub, "encrypt", cmd_capi_encrypt, "CryptEncrypt-compatible encryption with a stored key"
    )
    sp.add_argument("name")
    sp.add_argument("-i", "--input", metavar="IN")
    sp.add_argument("-o", "--output", metavar="OUT")
    sp.add_argument("--iv", metavar="HEX", help="default: zero (CryptoAPI's default)")
    sp.add_argument("--legacy", action="store_true", help="allow a legacy key (warns)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(terminal_refused="binary ciphertext")  # before the unlock (cli.main)
    sp = command(
        csub, "convert", cmd_capi_convert, "convert an RSA key: PEM, DER, MSBLOB, .NET XML"
    )
    sp.add_argument("input", metavar="IN")
    sp.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    sp.add_argument("--to", required=True, choices=["pem", "der", "msblob", "xml"])
    sp.add_argument("--public", action="store_true", help="write only the public key")
    sp.add_argument("--force", action="store_true", help="allow a private key on a terminal")
    sp.add_argument(
        "--encrypt",
        action="store_true",
        help="write the private key encrypted (pem or der: PKCS#8 with the best encryption "
        "cryptography offers); the passphrase comes from --passphrase-file or a prompt",
    )
    legacy_rsa(sp)
    sp = command(csub, "unwrap", cmd_capi_unwrap, "open a SIMPLEBLOB into a PLAINTEXTKEYBLOB")
    sp.add_argument("simpleblob", metavar="SIMPLEBLOB")
    sp.add_argument("--private", required=True, metavar="PRIVATEKEYBLOB")
    sp.add_argument("-o", "--output", metavar="OUT")
    sp.add_argument("--info", action="store_true", help="print only the algorithm and length")
    signed(sp)
    sp = command(csub, "decrypt", cmd_capi_decrypt, "CryptDecrypt-compatible decryption")
    sp.add_argument("name", nargs="?", help="a stored key (or use --simpleblob/--private, --key)")
    generation_option(sp)
    sp.add_argument("-i", "--input", action="append", default=[], metavar="IN")
    sp.add_argument(
        "-o",
        "--output",
        metavar="OUT|DIR",
        help="a file (written only on success), or a folder: each IN.enc becomes IN there, "
        "any other name gets .dec added (default: standard output, never a terminal)",
    )
    sp.add_argument(
        "--suffix",
        metavar="SUFFIX",
        help="with -o DIR: the ciphertext suffix to strip instead of .enc (e.g. .ciphertext)",
    )
    sp.add_argument("--iv", metavar="HEX")
    sp.add_argument("--simpleblob", metavar="FILE")
    sp.add_argument("--private", metavar="PRIVATEKEYBLOB")
    sp.add_argument("--key", metavar="PLAINTEXTKEYBLOB")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    signed(sp)
