"""The command line's shared terminal handling: the Context every command gets (home,
store, container, passphrases and prompts), reading input files, writing output files and
standard output (never a secret to a terminal), the progress bar, printable paths and dates,
JSON, the warning/note/error lines, the argument parser class, and the guard around standard
output and error while a command runs.  Nothing here knows a command."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import stat
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO, TypeAlias, TypeVar, cast

from keyblob.errors import (
    FormatError,
    KeyblobError,
    NotFoundError,
    PassphraseError,
    StorageError,
    UsageError,
    VerificationError,
)

if TYPE_CHECKING:
    import datetime
    import getpass
    import json
    import pathlib
    from pathlib import Path

    from keyblob import atomic, blobs, publickeys, storage
    from keyblob.format import PublicKeyFile
    from keyblob.keys import SessionKey
    from keyblob.providers import software
    from keyblob.providers.base import Provider
    from keyblob.storage import Store


class _Deferred(types.ModuleType):
    """Module ``__name__``, imported (by the ordinary import system) at its first attribute
    access; every access is forwarded to the imported module."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


_C = TypeVar("_C")


def lazy_module(name: str) -> types.ModuleType:
    """Module ``name``, imported at its first use.

    The CLI imports the library, ``cryptography`` and the standard modules only a command
    uses this way, so that building the parser (``keyblob --help``) loads none of them and a
    command loads only what it touches.  A
    forwarding object, not importlib's LazyLoader, which breaks packages whose submodules
    import their parent (cryptography's ``serialization``)."""
    return sys.modules.get(name) or _Deferred(name)


if not TYPE_CHECKING:  # the library and the standard modules only a command uses
    datetime = lazy_module("datetime")
    getpass = lazy_module("getpass")
    json = lazy_module("json")
    pathlib = lazy_module("pathlib")
    atomic = lazy_module("keyblob.atomic")
    storage = lazy_module("keyblob.storage")
    blobs = lazy_module("keyblob.blobs")
    publickeys = lazy_module("keyblob.publickeys")
    software = lazy_module("keyblob.providers.software")


PROG = "keyblob"
MAX_INPUT_FILE = 65536
PROGRESS_MIN = 16 * 1024 * 1024  # a bar for inputs of 16 MiB and more (or of unknown size)


class Refused(KeyblobError):
    """A VerificationError (or a FormatError) about one file: 'refused FILE: reason'."""

    exit_status = 3


_400_YEARS = 146097 * 86400  # the Gregorian calendar repeats every 400 years, to the second


def iso(ts: int) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ`` for any ``created`` a blob may sign (FORMAT.md 2.2.7
    allows up to 2^63-1, far past datetime's year 9999): a later year is written in full
    after a ``+``, as ISO 8601's expanded form does."""
    cycles, rest = divmod(ts, _400_YEARS)
    t = datetime.datetime.fromtimestamp(rest, datetime.UTC)
    year = t.year + 400 * cycles
    return f"{'+' if year > 9999 else ''}{year:04d}-{t:%m-%dT%H:%M:%SZ}"


def printable(text: str) -> str:
    """``text`` as any UTF-8 output takes it: bytes of a path that are not UTF-8 (Python
    holds them as surrogates) become ``\\xNN`` escapes instead of an encoding error."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def tilde(path: Path | str) -> str:
    text, home = str(path), str(pathlib.Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def read_file(
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
        data = (
            sys.stdin.buffer.read(limit + 1)
            if path == "-"
            else atomic.read_bounded(pathlib.Path(path), limit)
        )
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except ValueError:  # read_bounded: over the limit
        raise too_large(too_big) from None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > limit:  # standard input
        raise too_large(too_big)
    return data


def refuse_terminal(output: str | None, what: str, hint: str = "use -o FILE") -> None:
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


def write_output(path: str, data: bytes, *, mode: int = 0o644, refuse_tty: bool = False) -> None:
    """``data`` to ``path`` as :func:`stream_to_output` writes (a secret never to a
    terminal)."""
    if refuse_tty:
        refuse_terminal(path, "a secret key")
    stream_to_output(path, mode, lambda f: f.write(data), refuse_tty=False)


def _refuse_missing_folder(path: str) -> None:
    """``-o newdir/`` names a folder: without one, Path() would drop the slash and write a
    file called newdir."""
    if path.endswith(("/", os.sep)) and not os.path.isdir(path):
        raise UsageError(f"{path}: no such folder")


def check_output(path: str | None) -> None:
    """What can be known about an output before any work, so that it is refused before a
    passphrase is asked: ``-o newdir/`` without that folder (exit 2), or a file in a folder
    that does not exist (exit 1, as the write would fail)."""
    if path is None or path == "-":
        return
    _refuse_missing_folder(path)
    parent = os.path.dirname(path.rstrip("/" + os.sep)) or os.curdir
    if not os.path.lexists(parent):
        raise StorageError(f"cannot write {path}: no such folder {parent}")


def read_public_key_file(path: str, data: bytes | None = None) -> PublicKeyFile:
    """The public key file at ``path`` read through every step of FORMAT.md 3, the label
    signature of a version 2 file included: an edited label is refused (exit 3)."""
    data = read_file(path) if data is None else data
    try:
        return publickeys.read(data)
    except FormatError as e:
        raise FormatError(f"{path}: not a keyblob public key file ({e})") from None
    except VerificationError as e:
        raise Refused(f"refused {path}: {e}", hints=e.hints) from None


def emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


class Context:
    """What every command needs: where the home and store are and how to get a passphrase."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        home = args.home or os.environ.get("KEYBLOB_HOME") or str(pathlib.Path.home() / ".keyblob")
        self.home = software.Home(pathlib.Path(home).expanduser())
        self.container_name: str = (
            args.container or os.environ.get("KEYBLOB_CONTAINER") or software.DEFAULT_CONTAINER
        )
        url = args.store or os.environ.get("KEYBLOB_STORE")
        # A plain path may start with ~ (the shell leaves it alone after --store=).
        self._store_url = os.path.expanduser(url) if url and "://" not in url else url
        self._store: Store | None = None
        self._opened: list[Any] = []  # token containers to close (log out of) at the end

    def store(self) -> Store:
        """The command's store, opened once (a database is connected to by its first use)."""
        if self._store is None:
            self._store = storage.open_store(self._store_url or str(self.home.default_store))
        return self._store

    def close(self) -> None:
        """Close what the command opened: the store's database connection, if any, and the
        containers it unlocked that hold a resource (a token container's login)."""
        opened, self._opened = self._opened, []
        store, self._store = self._store, None
        try:
            for container in opened:
                container.close()
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()

    def keep_open(self, container: _C) -> _C:
        """``container``, closed by :meth:`close` if it has anything to close (a token
        container's session: a login of this process that must not outlive the command)."""
        if callable(getattr(container, "close", None)):
            self._opened.append(container)
        return container

    def _given_passphrase(self) -> bytes | None:
        """The first line of --passphrase-file, else KEYBLOB_PASSPHRASE, else None (the
        option given on the command line wins over the environment)."""
        return _given_secret(self.args.passphrase_file, "KEYBLOB_PASSPHRASE", "passphrase")

    def _given_pin(self) -> bytes | None:
        """The first line of --pin-file, else KEYBLOB_PIN, else None."""
        return _given_secret(getattr(self.args, "pin_file", None), "KEYBLOB_PIN", "PIN")

    def pin(self, token: str) -> bytes:
        """The user PIN of PKCS#11 token ``token``: from --pin-file, KEYBLOB_PIN, or a
        no-echo prompt, asked once (a token counts wrong PINs and may lock: keyblob never
        spends a second try for the user)."""
        given = self._given_pin()
        if given is not None:
            if not given:
                raise UsageError("the PIN is empty (an empty KEYBLOB_PIN or --pin-file)")
            return given
        if not sys.stdin.isatty():
            raise UsageError(
                f"no PIN for PKCS#11 token {token!r}: set KEYBLOB_PIN, use --pin-file, or run "
                "in a terminal"
            )
        return _prompt(f"PIN for PKCS#11 token {token!r}: ")

    def _require_terminal(self) -> None:
        if not sys.stdin.isatty():
            raise UsageError(
                "no passphrase: set KEYBLOB_PASSPHRASE, use --passphrase-file, or run in a terminal"
            )

    def passphrase(self, *, new: bool = False) -> bytes:
        """The passphrase of a new container (``new``), from KEYBLOB_PASSPHRASE,
        --passphrase-file, or a no-echo prompt typed twice (asked again, up to 3 times, when
        the two differ); a weak one is warned about.  :meth:`open` asks for an existing
        container's."""
        if new:  # not after the passphrase was typed twice
            self.home.refuse_existing(self.container_name)
        given = self._given_passphrase()
        if given is not None:
            passphrase = _not_empty(given)
        else:
            self._require_terminal()
            passphrase = prompt_twice(f"Passphrase for the new container {self.container_name!r}: ")
        if new:
            _warn_if_weak(passphrase)
        return passphrase

    def open(self, *, own_keys: bool = False) -> Provider:
        """The container the command works with, unlocked: the one way every command opens
        it, so that another provider (a token, an agent) can stand behind it.  Through the
        agent if it holds the container, unless ``own_keys``: the CryptoAPI operations on
        the container's own RSA keys (capi import-keypair, import-simpleblob,
        export-simpleblob) are not requests the agent answers (docs/AGENT.md 1), so those
        commands unlock the container themselves.

        A missing container is reported before any passphrase is asked (exit 4).  The
        passphrase comes from KEYBLOB_PASSPHRASE, --passphrase-file, or a no-echo prompt,
        once per command (the Argon2id unlock it feeds dominates a command's time); a wrong
        one typed at the prompt is asked again, up to 3 tries as ssh and gpg do, and one
        from the environment or a file never (retrying it could only fail again).
        """
        name = self.container_name
        self.home.require(name)
        from keyblob.agent import client  # noqa: PLC0415 - what only open() needs

        held = None if own_keys else client.held(self.home, name)
        if held is not None:  # the agent holds it: no passphrase, no unlock
            return self.keep_open(held)
        token = self.home.token_of(name)
        if token is not None:
            return self.keep_open(self.home.open(name, self.pin(token)))
        given = self._given_passphrase()
        if given is not None:
            return self.home.open(name, _not_empty(given))
        self._require_terminal()
        for attempt in range(1, PROMPT_TRIES + 1):
            try:
                return self.home.open(name, _prompt(f"Passphrase for container {name!r}: "))
            except PassphraseError:
                if attempt == PROMPT_TRIES:
                    raise
                print(f"{PROG}: wrong passphrase; try again", file=sys.stderr)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def unlock_secret(self, name: str, token: str | None) -> tuple[bytes, bool]:
        """What opens container ``name`` (its token's PIN if ``token``, else its
        passphrase), as :meth:`open` gets it, and whether a wrong one may be asked again
        (typed at the prompt: yes; from a file or the environment, or a PIN: no)."""
        if token is not None:
            return self.pin(token), False
        given = self._given_passphrase()
        if given is not None:
            return _not_empty(given), False
        self._require_terminal()
        return _prompt(f"Passphrase for container {name!r}: "), True

    def load(self, name: str, container: Provider | None = None) -> SessionKey:
        """The newest generation of ``name`` (or --generation's), every import check made
        (refusals exit 3)."""
        opened = container or self.open()
        generation = getattr(self.args, "generation", None)
        key: SessionKey = refusing(
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


PROMPT_TRIES = 3  # as ssh and gpg: a typing slip costs a retry, not the whole command
MIN_PASSPHRASE_CHARS = 12
MIN_DISTINCT_CHARS = 5
# The commonest passwords at least 12 characters long (shorter ones are already weak by
# length): a tiny list, not a dictionary; it catches the obvious, not every weak choice.
_COMMON_PASSPHRASES = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "password1234",
        "passwordpassword",
        "qwertyuiop12",
        "qwertyuiopasdfgh",
        "qwerty123456",
        "iloveyou1234",
        "changeme1234",
        "letmein12345",
        "administrator",
        "1q2w3e4r5t6y",
    }
)


def _warn_if_weak(passphrase: bytes) -> None:
    """A new container's passphrase is weak (a warning, not a refusal: the choice is the
    user's) when it has fewer than 12 characters, fewer than 5 distinct ones, or is one of
    the commonest passwords (case ignored)."""
    text = passphrase.decode("utf-8", "replace")
    if (
        len(text) < MIN_PASSPHRASE_CHARS
        or len(set(text)) < MIN_DISTINCT_CHARS
        or text.lower() in _COMMON_PASSPHRASES
    ):
        print_warning(
            f"weak passphrase: use {MIN_PASSPHRASE_CHARS} characters or more, not a common "
            "password (several random words are easy to type and hard to guess); the "
            "passphrase is all that protects the private keys in a copy of the home"
        )


def _given_secret(path: str | None, variable: str, what: str) -> bytes | None:
    """The first line of file ``path``, else environment ``variable``, else None (the
    option given on the command line wins over the environment)."""
    if path:
        _warn_if_others_read(path, what)
        raw = read_file(path, 4096, what=f"a {what} file", too_large=UsageError)
        return raw.split(b"\n", 1)[0].rstrip(b"\r")
    text = os.environ.get(variable)
    if text is None:
        return None
    try:
        return text.encode("utf-8")  # as the prompt gives it: the same text, same bytes
    except UnicodeEncodeError:  # bytes the locale could not decode: taken as given
        return os.fsencode(text)


def _warn_if_others_read(path: str, what: str = "passphrase") -> None:
    """A passphrase (or PIN) file that others can read (or write) is as good as a published
    passphrase: warned about, as ssh refuses a readable private key file."""
    if os.name == "nt" or path == "-":
        return
    try:
        st = os.stat(path)
    except OSError:  # reading it reports the problem
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        print_warning(
            f"{what} file {printable(path)} can be read or written by others (mode "
            f"{mode:04o}): chmod 600 {printable(path)}"
        )


def _prompt(text: str) -> bytes:
    """A passphrase typed at a no-echo prompt: its UTF-8 bytes; none (Ctrl-D) is a usage
    error, not a traceback."""
    try:
        typed = getpass.getpass(text)
    except EOFError:
        raise UsageError("no passphrase given (end of input)") from None
    return _not_empty(typed.encode("utf-8"))


def prompt_twice(text: str) -> bytes:
    """A new passphrase typed twice at a no-echo prompt ``text`` (asked again, up to
    PROMPT_TRIES times, when the two differ)."""
    for attempt in range(1, PROMPT_TRIES + 1):
        first = _prompt(text)
        if _prompt("Again: ") == first:
            return first
        if attempt < PROMPT_TRIES:
            print(f"{PROG}: the two passphrases differ; try again", file=sys.stderr)
    raise UsageError(f"the two passphrases differ ({PROMPT_TRIES} tries); nothing was created")


def _not_empty(
    passphrase: bytes,
    what: str = "passphrase",
    variable: str = "KEYBLOB_PASSPHRASE",
    option: str = "--passphrase-file",
) -> bytes:
    if not passphrase:
        raise UsageError(
            f"the {what} is empty (an empty {variable}, an empty first line of {option}, or "
            "nothing typed)"
        )
    return passphrase


def refusing(what: str, action: Callable[[], Any]) -> Any:
    """Run ``action``; a failed check becomes 'refused WHAT: reason' with hints."""
    try:
        return action()
    except VerificationError as e:
        raise Refused(f"refused {what}: {e}", hints=e.hints) from None
    except FormatError as e:
        raise Refused(f"refused {what}: {e}", hints=e.hints) from None


def progress_bar(
    total: int | None, quiet: bool, what: str, *, unit: str = "B", minimum: int = PROGRESS_MIN
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A progress bar on stderr for large inputs (``minimum`` units or more; of bytes, or
    of another ``unit`` counted one by one), only when stderr is a terminal."""
    if quiet or not sys.stderr.isatty() or (total is not None and total < minimum):
        return None, lambda: None
    from tqdm import tqdm  # noqa: PLC0415 - imported only when a bar is shown: start-up time

    scale: dict[str, Any] = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    bar = tqdm(total=total, unit=unit, desc=what, leave=False, **scale)

    def update(n: int) -> None:
        bar.update(n)

    return update, bar.close


class EntryProgress:
    """A library ``progress(done, total)`` callback as a bar of entries (see
    :func:`progress_bar`), shown from the first call, when the total is known; ``close``
    it when the work ends, whether or not it was shown."""

    def __init__(self, what: str, quiet: bool) -> None:
        self._what = what
        self._quiet = quiet
        self._update: Callable[[int], None] | None = None
        self._close: Callable[[], None] = lambda: None

    def __call__(self, done: int, total: int) -> None:
        if not done:
            self._update, self._close = progress_bar(
                total, self._quiet, self._what, unit="entry", minimum=1
            )
        elif self._update is not None:
            self._update(1)

    def close(self) -> None:
        self._close()


def input_stream(path: str | None) -> tuple[BinaryIO, int | None, Callable[[], None]]:
    if path is None or path == "-":
        return sys.stdin.buffer, None, lambda: None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the returned callable
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    return f, os.fstat(f.fileno()).st_size, f.close


def stream_to_output(
    output: str | None, mode: int, work: Callable[[BinaryIO], object], *, refuse_tty: bool
) -> None:
    """Run ``work`` writing to stdout, or to a file that appears only if it succeeds."""
    if refuse_tty:
        refuse_terminal(output, "binary ciphertext")
    if output is None or output == "-":
        work(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    _refuse_missing_folder(output)
    try:
        with atomic.atomic_output(pathlib.Path(output), mode) as f:
            work(f)
    except IsADirectoryError:
        raise UsageError(f"{output} is a folder: give a file name") from None
    except OSError as e:
        raise StorageError(f"cannot write {output}: {e.strerror}") from e


def add_global_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    """The options every command takes, before its name or after it (``keyblob list --store
    S``, ``keyblob trust list --home H``).

    Each subcommand gets its own copy (``inherited``) whose default is SUPPRESS: argparse
    copies every attribute a subcommand's parser sets over the namespace the main parser
    filled, so a real default there would overwrite ``--home H`` given before the command.
    Given in both places, the one after the command wins, as a later option does.
    """
    unset: Any = argparse.SUPPRESS if inherited else None
    group = parser.add_argument_group(
        "global options (before or after the command)" if inherited else "global options"
    )
    group.add_argument(
        "--home",
        default=unset,
        metavar="DIR",
        help="home folder (env KEYBLOB_HOME, default ~/.keyblob)",
    )
    group.add_argument(
        "--store",
        default=unset,
        metavar="URL",
        help="store: a folder path, sqlite:///FILE or postgresql://USER@HOST/DB "
        "(env KEYBLOB_STORE, default HOME/blobs)",
    )
    group.add_argument(
        "--container",
        default=unset,
        metavar="NAME",
        help="container name (env KEYBLOB_CONTAINER, default 'default')",
    )
    group.add_argument(
        "--passphrase-file",
        default=unset,
        metavar="FILE",
        help="read the passphrase from FILE's first line",
    )
    group.add_argument(
        "--pin-file",
        default=unset,
        metavar="FILE",
        help="read a PKCS#11 token's user PIN from FILE's first line (env KEYBLOB_PIN)",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if inherited else False,
        help="show tracebacks of errors (the exit status stays the same)",
    )


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands (at any depth: ``trust list``, ``capi decrypt``) that take the global
    options too."""

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        parser = super().add_parser(name, **kwargs)
        add_global_options(parser, inherited=True)
        return parser


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def generation_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--generation",
        type=int,
        metavar="N",
        help="an older generation (default: the newest), to read what it encrypted; its "
        "signature, name and generation are checked",
    )


#: --jobs at most: a typo (--jobs 200) must not start hundreds of interpreters.
MAX_JOBS = 64


def jobs_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="check signatures in N processes (default: one per core, up to 8, for large "
        "stores; 1: in this process only)",
    )


def given_jobs(args: argparse.Namespace) -> int | None:
    """--jobs as given (None: the library chooses), refused outside 1 to MAX_JOBS."""
    jobs: int | None = args.jobs
    if jobs is not None and not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs {jobs}: give 1 to {MAX_JOBS} processes")
    return jobs


def print_warning(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def print_note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


def print_error(message: str, hints: Sequence[str] = (), stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    print(f"{PROG}: error: {message}", file=out)
    for hint in hints:
        print(f"{PROG}: hint: {hint}", file=out)


def warning_printer() -> Callable[..., None]:
    """Print each distinct warning once per command, as one ``keyblob: warning:`` line."""
    seen: set[str] = set()

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            print_warning(text)

    return show


class StandardOutput:
    """Standard output or error (text, or its ``buffer``) while a command runs.

    Text holding a path whose bytes are not UTF-8 is written with ``\\xNN`` escapes
    (:func:`printable`) whatever the locale: a strict UTF-8 one used to fail once the
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
    def buffer(self) -> StandardOutput:
        return StandardOutput(self.stream.buffer, self.name, self.failed)

    def write(self, data: Any) -> Any:
        with self._errors():
            return self.stream.write(printable(data) if isinstance(data, str) else data)

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


def discard_standard_output() -> None:
    """After a failed write, what Python still holds for standard output goes to
    /dev/null at exit (as the Python docs advise for SIGPIPE), not into a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (in-process callers): nothing to do
        pass


# What each command group's register() adds its subcommands to.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def command(
    sub: Subcommands, name: str, func: Callable[[Context], int], help: str
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that runs ``func``; its help is also its description."""
    sp = sub.add_parser(name, help=help, description=help)
    sp.set_defaults(func=func)
    return sp
