"""Every exception keyblob raises on purpose, and nothing else.

``except KeyblobError`` catches all of them; anything else escaping the library is a bug.
Messages never contain key bytes: they name the field, the file or the check that failed.
"""

from __future__ import annotations


class KeyblobError(Exception):
    """Base class of every error keyblob raises on purpose.

    ``hints`` are lines that say what the user can do next; the command line prints them
    after the error (``keyblob: hint: ...``).  Like the message, they never hold key bytes.
    """

    #: Exit status the command line uses for this kind of error.
    exit_status = 1

    def __init__(self, message: str = "", *, hints: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.hints = hints


class UsageError(KeyblobError, ValueError):
    """The caller asked for something invalid (bad name, unknown option value...)."""

    exit_status = 2


class WeakKeyError(UsageError):
    """An RSA key under the size the operation allows without ``legacy=True``
    (docs/MSCAPI.md 5).  The fields let a caller word its own message."""

    def __init__(self, *, bits: int, floor: int, reading: bool, role: str, action: str) -> None:
        self.bits, self.floor, self.reading, self.role, self.action = (
            bits,
            floor,
            reading,
            role,
            action,
        )
        if reading:
            rule = f"below {floor} bits is refused (legacy=True reads old data anyway)"
        else:
            rule = f"below {floor} bits, {action} needs legacy=True"
        super().__init__(f"the {role} is RSA-{bits}; {rule}")


class PassphraseRequired(UsageError):
    """An encrypted input (a key file) was given without the passphrase that opens it."""


class FormatError(KeyblobError, ValueError):
    """Bytes do not parse; the message names the field and, where known, the offset."""

    exit_status = 3


class UnsupportedError(FormatError):
    """Well-formed, but a version, suite or algorithm this release does not implement."""


class VerificationError(KeyblobError):
    """A blob or the home state failed a check: untrusted signer, bad signature, rollback,
    wrong name, failed unwrap.  One fixed message per kind of check, never an oracle."""

    exit_status = 3


class PassphraseError(KeyblobError):
    """The passphrase (or PIN) does not unlock the container."""

    exit_status = 5


class ProviderError(KeyblobError):
    """The provider failed: missing container, unsafe permissions, unusable key."""


class StorageError(KeyblobError):
    """Reading or writing failed: the store, or a file a command was given or writes."""


class BadEntryError(StorageError):
    """An entry is there, but the store refuses to hand it over: larger than the bound, not
    a regular file, not a byte string, several rows for one (name, generation).

    Whoever can write the store can plant one, so it is treated as an entry that fails
    verification (FORMAT.md 2.9): passed over and reported by ``open_latest``, listed by
    ``store check``, moved by ``store set-aside``; never a lock-out.  Exit 3, as a refusal.
    """

    exit_status = 3


class ConflictError(StorageError):
    """Another writer stored a different blob at the same (name, generation) first.

    The store kept theirs; nothing of this write remains.  Running the operation again
    (``keyblob.blobs.retrying``; the CLI's ``new`` and ``rotate`` do so themselves) makes
    the next generation from what is stored now.
    """

    def __init__(self, name: str, generation: int, location: str) -> None:
        super().__init__(
            f"another writer made {name} generation {generation} first (in {location}); "
            "run the command again",
            hints=("nothing was changed by this command",),
        )
        self.name = name
        self.generation = generation


class ReplaceConflictError(ConflictError):
    """A compare-and-set replace (``Store.replace``) found other bytes than the ones it was
    to replace: another writer changed (or set aside) the entry first.

    Nothing was changed.  Running the operation again (``keyblob.blobs.retrying``) starts
    from what is stored now.
    """

    def __init__(self, name: str, generation: int, location: str) -> None:
        StorageError.__init__(
            self,
            f"{name} generation {generation} in {location} changed while this ran; "
            "run the command again",
            hints=("nothing was changed by this command",),
        )
        self.name = name
        self.generation = generation


class NotFoundError(StorageError, LookupError):
    """A blob, name, container or trusted signer that was asked for does not exist."""

    exit_status = 4


class LegacyAlgorithmWarning(UserWarning):
    """A legacy CryptoAPI algorithm (RC2, RC4, DES, 3DES, 40-bit keys, MD2/MD4/MD5, SHA-1)
    or an RSA key under 2048 bits was used.  Reading old data is allowed; making new data
    with it needs ``legacy=True``.

    A warning, not an error: it lives here because this module holds every exception class.
    """


class IgnoredEntryWarning(UserWarning):
    """A store entry that fails verification was passed over for an older generation
    that verifies, at or above the high-water mark (FORMAT.md 2.9).  Nothing it holds was
    used; ``keyblob store check`` lists such entries.
    """


class StoreUpgradeWarning(UserWarning):
    """keyblob upgraded a SQL store's schema to the version it uses (FORMAT.md 5.5); the
    message says from which version to which.  Nothing stored was changed."""
