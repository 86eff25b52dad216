"""keyblob: session keys kept as signed, verified key blobs on storage nobody trusts.

The public surface, re-exported here; nothing is defined in this module.
"""

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
    "retrying",
    "rotate",
    "set_aside_untrusted",
    "verify",
]
