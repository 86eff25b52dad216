"""The native wire formats: bytes <-> frozen dataclasses.  No cryptography, no I/O.

The normative text is docs/FORMAT.md; comments cite its section numbers.
"""

from keyblob.format.armor import armor, dearmor, is_armored
from keyblob.format.blob import Header, KeyBlob, Recipient, signed_message
from keyblob.format.pubkey import PublicKeyFile, fingerprint

__all__ = [
    "Header",
    "KeyBlob",
    "PublicKeyFile",
    "Recipient",
    "armor",
    "dearmor",
    "fingerprint",
    "is_armored",
    "signed_message",
]
