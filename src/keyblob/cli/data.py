"""keyblob encrypt and decrypt: data under a stored key (and the streaming both share
with capi encrypt)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from keyblob.cli.names import ENCRYPT_A_FILE, about_key, checked_name, existing_store
from keyblob.cli.terminal import (
    Context,
    Subcommands,
    command,
    input_stream,
    lazy_module,
    progress_bar,
    refusing,
    stream_to_output,
    tilde,
)
from keyblob.errors import FormatError, UsageError, VerificationError

if TYPE_CHECKING:
    from keyblob import blobs, files
    from keyblob.format.data import DataHeader
    from keyblob.keys import SessionKey
else:  # loaded on first use: building the parser imports neither the library nor cryptography
    blobs = lazy_module("keyblob.blobs")
    files = lazy_module("keyblob.files")

_Key = TypeVar("_Key")


def encrypt_command(
    ctx: Context,
    prepare: Callable[[SessionKey], _Key],
    seal: Callable[[_Key, BinaryIO, BinaryIO, Callable[[int], None] | None], object],
) -> int:
    """encrypt and capi encrypt: the input opened first (a missing one fails before the
    unlock), NAME loaded and ``prepare``d, then ``seal`` writes -o or standard output
    (never a terminal), with a progress bar."""
    args = ctx.args
    checked_name(args.name, ENCRYPT_A_FILE)
    existing_store(ctx)
    src, size, close = input_stream(args.input)
    try:
        with about_key(args.name, ENCRYPT_A_FILE):
            key = prepare(ctx.load(args.name))
        update, done = progress_bar(size, args.quiet, "encrypt")
        try:
            stream_to_output(
                args.output, 0o644, lambda dst: seal(key, src, dst, update), refuse_tty=True
            )
        finally:
            done()
    finally:
        close()
    return 0


def cmd_encrypt(ctx: Context) -> int:
    return encrypt_command(
        ctx,
        lambda key: key,
        lambda key, src, dst, progress: files.encrypt_stream(key, src, dst, progress=progress),
    )


def cmd_decrypt(ctx: Context) -> int:
    args = ctx.args
    if args.file is not None and args.input is not None:
        raise UsageError("give the input once: as FILE or as -i, not both")
    source = args.file if args.file is not None else args.input
    src, size, close = input_stream(source)
    what = source if source not in (None, "-") else "standard input"
    update, done = progress_bar(size, args.quiet, "decrypt")

    def find_key(header: DataHeader) -> SessionKey:
        # Unlocked only once the header parsed: a non-keyblob input fails before the KDF.
        store = existing_store(ctx)
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
                f"{tilde(store.location)}: {e}",
                hints=e.hints,
            ) from None

    try:
        refusing(
            what,
            lambda: stream_to_output(
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


def register(sub: Subcommands) -> None:
    """encrypt, decrypt."""
    sp = command(sub, "encrypt", cmd_encrypt, "encrypt data under the newest generation of a key")
    sp.add_argument("name", help="a stored key's name (keyblob list shows them)")
    sp.add_argument("-i", "--input", metavar="IN", help="default: standard input")
    sp.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    # Refused before the unlock (cli.main), not after the passphrase was typed.
    sp.set_defaults(terminal_refused="binary ciphertext")
    sp = command(sub, "decrypt", cmd_decrypt, "decrypt data; the key is found from its header")
    sp.add_argument("file", nargs="?", metavar="FILE", help="the input (as -i; age -d FILE)")
    sp.add_argument("-i", "--input", metavar="IN", help="default: standard input")
    sp.add_argument("-o", "--output", metavar="OUT", help="default: standard output")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
