"""keyblob: session keys kept as signed, verified key blobs on storage nobody trusts.

The public surface, re-exported here; nothing is defined in this module.  Each name is
imported from its module at its first use (PEP 562): ``import keyblob`` costs nothing, and a
command that needs only a few modules (``keyblob --help``) loads only those.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyblob.blobs import (
        Verified,
        check_store,
        copy_store,
        generate,
        import_blob,
        import_simpleblob,
        load,
        open_latest,
        open_stored,
        retire,
        retrying,
        rotate,
        set_aside_untrusted,
        verify,
    )
    from keyblob.errors import (
        BadEntryError,
        ConflictError,
        FormatError,
        IgnoredEntryWarning,
        KeyblobError,
        NotFoundError,
        PassphraseError,
        ProviderError,
        StorageError,
        UnsupportedError,
        UsageError,
        VerificationError,
    )
    from keyblob.format import KeyBlob, PublicKeyFile
    from keyblob.keys import Algorithm, KeyId, SessionKey, Suite
    from keyblob.providers.base import Provider
    from keyblob.providers.software import Home, KdfParams, SoftwareContainer
    from keyblob.storage import Store, open_store

#: Each public name and the module it is re-exported from.
_FROM = {
    **dict.fromkeys(
        (
            "Verified",
            "check_store",
            "copy_store",
            "generate",
            "import_blob",
            "import_simpleblob",
            "load",
            "open_latest",
            "open_stored",
            "retire",
            "retrying",
            "rotate",
            "set_aside_untrusted",
            "verify",
        ),
        "keyblob.blobs",
    ),
    **dict.fromkeys(
        (
            "BadEntryError",
            "ConflictError",
            "FormatError",
            "IgnoredEntryWarning",
            "KeyblobError",
            "NotFoundError",
            "PassphraseError",
            "ProviderError",
            "StorageError",
            "UnsupportedError",
            "UsageError",
            "VerificationError",
        ),
        "keyblob.errors",
    ),
    **dict.fromkeys(("KeyBlob", "PublicKeyFile"), "keyblob.format"),
    **dict.fromkeys(("Algorithm", "KeyId", "SessionKey", "Suite"), "keyblob.keys"),
    "Provider": "keyblob.providers.base",
    **dict.fromkeys(("Home", "KdfParams", "SoftwareContainer"), "keyblob.providers.software"),
    **dict.fromkeys(("Store", "open_store"), "keyblob.storage"),
}


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:  # a submodule not yet imported, or no such name
        raise AttributeError(f"module 'keyblob' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Algorithm",
    "BadEntryError",
    "ConflictError",
    "FormatError",
    "Home",
    "IgnoredEntryWarning",
    "KdfParams",
    "KeyBlob",
    "KeyId",
    "KeyblobError",
    "NotFoundError",
    "PassphraseError",
    "Provider",
    "ProviderError",
    "PublicKeyFile",
    "SessionKey",
    "SoftwareContainer",
    "StorageError",
    "Store",
    "Suite",
    "UnsupportedError",
    "UsageError",
    "VerificationError",
    "Verified",
    "check_store",
    "copy_store",
    "generate",
    "import_blob",
    "import_simpleblob",
    "load",
    "open_latest",
    "open_store",
    "open_stored",
    "retire",
    "retrying",
    "rotate",
    "set_aside_untrusted",
    "verify",
]
