"""The command line: argv -> public API -> short output, or one error line and an exit
status.  ``main`` assembles the parser from one module per command group (keys, data, trust,
capi) over :mod:`keyblob.cli.terminal`, the shared terminal, output and passphrase handling.
"""

from keyblob.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
