"""The command line's entry point: argv -> parser (each command group registers its own
subcommands) -> one command -> exit status.

Exit statuses (docs/CLI.md): 0 done; 2 usage; 3 refused (a blob, key file or ciphertext
was malformed, unsupported, or failed verification); 4 not found; 5 wrong passphrase; 1
anything else.  Errors are mapped to statuses in one place, :func:`_run_guarded`; signals
end a command through its cleanup.  No key byte is ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO, cast

from keyblob.cli import agent, capi, data, keys, lifecycle, recovery, store, trust
from keyblob.cli.capi import cmd_capi_export_simpleblob
from keyblob.cli.names import ENCRYPT_A_FILE, READ_A_BLOB, checked_name
from keyblob.cli.terminal import (
    PROG,
    Context,
    Parser,
    StandardOutput,
    add_global_options,
    check_output,
    discard_standard_output,
    print_error,
    refuse_terminal,
    warning_printer,
)
from keyblob.errors import IgnoredEntryWarning, KeyblobError, LegacyAlgorithmWarning, UsageError

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def _untranslated(message: str) -> str:
    return message


def build_parser() -> argparse.ArgumentParser:
    # argparse passes each of its own messages through gettext, which looks for a catalogue
    # on disk at every call (~120 lookups, half the parser's build time) and finds none:
    # CPython ships no translation of argparse, and keyblob's messages are English.
    argparse._ = _untranslated  # type: ignore[attr-defined]
    p = Parser(
        prog=PROG,
        description="Signed session-key blobs on storage nobody trusts.",
        epilog="exit status: 0 done, 2 usage, 3 refused (malformed, unsupported, or failed "
        "verification), 4 not found, 5 wrong passphrase, 1 other error",
    )
    p.add_argument("--version", action="version", version="keyblob 0.1.0")
    add_global_options(p, inherited=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    # Each command group adds its own subcommands; a new group is a module and a line here.
    keys.register(sub)
    keys.register_label(sub)
    data.register(sub)
    keys.register_pubkey(sub)
    capi.register(sub)
    trust.register(sub)
    lifecycle.register(sub)
    recovery.register(sub)
    store.register(sub)
    agent.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status."""
    parser = build_parser()
    with warnings.catch_warnings():
        # A legacy algorithm always warns, as one line: "keyblob: warning: ...".
        warnings.simplefilter("always", LegacyAlgorithmWarning)
        warnings.simplefilter("always", IgnoredEntryWarning)  # at each use (FORMAT.md 2.9)
        warnings.showwarning = warning_printer()
        return _run(lambda: parser.parse_args(argv))


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
    import threading  # noqa: PLC0415 - not for building the parser (keyblob --help)

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
    "kit",
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


def _check_outputs(args: argparse.Namespace) -> None:
    """Outputs refused before the command asks a passphrase or reads input: one in a folder
    that does not exist, and a terminal for a command that writes binary or secret bytes
    (its ``terminal_refused`` default says what)."""
    for option in ("output", "signature_out"):
        value = getattr(args, option, None)
        check_output(value if isinstance(value, str) else None)
    what = getattr(args, "terminal_refused", None)
    if what is not None:
        refuse_terminal(getattr(args, "output", None), what)


def _flush_standard_output() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def _same_file(a: str, b: str) -> bool:
    """Whether writing ``a`` would destroy the regular file ``b`` (a device or FIFO, such
    as /dev/null given twice, is not destroyed by being written)."""
    try:
        if not stat.S_ISREG(os.stat(b).st_mode):
            return False
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): the same path is the same file
        return os.path.realpath(a) == os.path.realpath(b)


def _run(parse: Callable[[], argparse.Namespace]) -> int:
    # None: started with the descriptor closed, and print() skips it; so do we.
    given = sys.stdout, sys.stderr
    stdout = None if given[0] is None else StandardOutput(given[0], "standard output")
    if stdout is not None:
        sys.stdout = cast(TextIO, stdout)
    if given[1] is not None:
        sys.stderr = cast(TextIO, StandardOutput(given[1], None))
    try:
        return _run_guarded(parse)
    finally:
        sys.stdout, sys.stderr = given
        if stdout is not None and stdout.failed:
            discard_standard_output()


def _run_guarded(parse: Callable[[], argparse.Namespace]) -> int:
    debug = False
    try:
        try:
            # Parsed inside the guard: --help and --version write to standard output too,
            # and a write that fails there (>/dev/full) must not end in status 0.
            args = parse()
        except SystemExit as e:  # --help, --version (0), a usage error (2): argparse printed
            _flush_standard_output()
            return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
        debug = args.debug
        # Usage errors that need no secret are found before a passphrase is asked.
        _refuse_outputs_over_inputs(args)
        _check_outputs(args)
        if isinstance(getattr(args, "name", None), str):  # every command's NAME is a key name
            meant = ENCRYPT_A_FILE if args.command == "encrypt" else READ_A_BLOB
            checked_name(args.name, meant)
        with _termination_raises():
            ctx = Context(args)
            try:
                status = int(args.func(ctx))
            finally:
                ctx.close()
        _flush_standard_output()  # a write error is reported here, not lost at exit
        return status
    except KeyblobError as e:
        if debug:  # the traceback, then the same line and the same status as without
            import traceback  # noqa: PLC0415 - only --debug needs it

            traceback.print_exc()
        print_error(str(e), e.hints)
        return e.exit_status
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except _Terminated as e:
        print_error("terminated by a signal")
        return 128 + e.signum
    except BrokenPipeError:
        # The reader went away (keyblob list | head): not an error worth a message.  The
        # status is the one a shell reports for age, cat or any command SIGPIPE ends
        # (128 + 13), which `set -o pipefail` scripts already expect from `| head`.
        return EXIT_BROKEN_PIPE
