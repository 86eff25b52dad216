"""The key NAME a command is given, as the user meant it: a name, not a file path (said
before the unlock when the name cannot be a key's; after it when no key has that name), in
a store folder that exists (said before the unlock)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from keyblob.cli.terminal import Context, lazy_module, tilde
from keyblob.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from keyblob import keys, storage
    from keyblob.storage import Store, directory, sqlite
else:  # loaded on first use: building the parser imports neither the library nor sqlite3
    keys = lazy_module("keyblob.keys")
    storage = lazy_module("keyblob.storage")
    directory = lazy_module("keyblob.storage.directory")
    sqlite = lazy_module("keyblob.storage.sqlite")

#: What a file given as NAME to a command that reads a key was probably meant for.
READ_A_BLOB = "to read a blob file use keyblob verify, inspect or import"
ENCRYPT_A_FILE = "to encrypt a file, give it with -i FILE"


def _is_a_file(name: str, meant: str) -> UsageError:
    return UsageError(
        f"{name} is a file; NAME is a key name (keyblob list shows them)", hints=(meant,)
    )


def checked_name(name: str, meant: str = READ_A_BLOB) -> str:
    """``name`` if it can be a key's name; a path to a file is said to be one (exit 2),
    before any passphrase is asked."""
    try:
        return keys.check_name(name)
    except UsageError:
        if os.path.isfile(name):
            raise _is_a_file(name, meant) from None
        raise


@contextlib.contextmanager
def about_key(name: str, meant: str = READ_A_BLOB) -> Iterator[None]:
    """Around a command's use of the key ``name``: when no key has that name and a file
    has, say it is a file (exit 2) rather than only that no key has it."""
    try:
        yield
    except NotFoundError:
        if os.path.isfile(name):
            raise _is_a_file(name, meant) from None
        raise


def existing_store(ctx: Context) -> Store:
    """The store a command reads keys from; a store folder given by --store or
    KEYBLOB_STORE that does not exist is said not to (exit 4), before any passphrase is
    asked.  The default one, HOME/blobs, is made by the first ``new``: until then it has
    no keys, as a store folder that exists but is empty."""
    store = ctx.store()
    given = (
        "--store"
        if ctx.args.store
        else "KEYBLOB_STORE"
        if os.environ.get("KEYBLOB_STORE")
        else None
    )
    if given and isinstance(store, directory.DirectoryStore) and not store.root.exists():
        raise NotFoundError(
            f"store folder {tilde(store.root)} does not exist",
            hints=(
                f"{given} may name the wrong folder; keyblob new or import creates the "
                "folder when it writes the first key",
            ),
        )
    if given and isinstance(store, sqlite.SqliteStore) and not store.exists():
        raise NotFoundError(
            f"store database {tilde(store.path)} does not exist",
            hints=(
                f"{given} may name the wrong file; keyblob new or import creates the "
                "database when it writes the first key",
            ),
        )
    return store
