"""``python -m keyblob``: the command line."""

from keyblob.cli import main

raise SystemExit(main())
