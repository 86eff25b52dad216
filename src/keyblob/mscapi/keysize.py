"""Which RSA key sizes the CryptoAPI functions accept, and for what: the one place of the rule.

Windows' old providers made 512- and 1024-bit keys; a 512-bit modulus is factored in hours,
so a signature by it proves nothing and a key wrapped for it is open to anyone.  Like the
legacy algorithms (``algids``), such keys are for reading old data, not for making new:

==============  =========================  =====================================
bits            reading (verify, unwrap,   writing (sign, wrap for a recipient)
                convert)
==============  =========================  =====================================
2048 and more   accepted                   accepted
1024 to 2047    accepted, warns            needs ``legacy=True``, warns
below 1024      needs ``legacy=True``,     needs ``legacy=True``, warns
                warns
==============  =========================  =====================================

Every function that reads or writes with an RSA key calls :func:`check_rsa_size` before
doing anything with it.  A refusal is a :class:`~keyblob.errors.WeakKeyError` whose fields
let a caller word its own message (the command line names ``--legacy``).
"""

from __future__ import annotations

import enum
import warnings

from cryptography.hazmat.primitives.asymmetric import rsa

from keyblob.errors import LegacyAlgorithmWarning, WeakKeyError

#: Below this many bits an RSA key is legacy: it reads with a warning and writes only
#: with ``legacy=True``.
LEGACY_RSA_BELOW = 2048
#: Below this many bits an RSA key is refused even for reading unless ``legacy=True``.
REFUSED_RSA_BELOW = 1024


class RsaUse(enum.Enum):
    """What an RSA key is used for; the rule is stricter for making new data."""

    READ = "read"  # verify a signature, open a SIMPLEBLOB, convert a key file
    WRITE = "write"  # sign, wrap a session key for a recipient


class Verdict(enum.Enum):
    OK = "ok"
    WARN = "warn"
    REFUSE = "refuse"


def rsa_size_verdict(bits: int, use: RsaUse, *, legacy: bool) -> Verdict:
    """The rule in the module docstring, for a key of ``bits`` bits."""
    if bits >= LEGACY_RSA_BELOW:
        return Verdict.OK
    if legacy:
        return Verdict.WARN
    if use is RsaUse.WRITE or bits < REFUSED_RSA_BELOW:
        return Verdict.REFUSE
    return Verdict.WARN


def check_rsa_size(
    key: rsa.RSAPublicKey | rsa.RSAPrivateKey,
    use: RsaUse,
    *,
    legacy: bool,
    role: str,
    action: str,
    stacklevel: int = 3,
) -> None:
    """Apply the rule to ``key``: return, warn, or raise.

    Args:
        key: the RSA key about to be used.
        use: what for.
        legacy: the caller's opt-in for old data.
        role: the key in words, for messages ("signer's key", "recipient's key").
        action: what is done with it, for messages ("verifying with it").
        stacklevel: for the warning, as :func:`warnings.warn` takes it.

    Raises:
        WeakKeyError: refused; the message names the size and the floor it is under.
    """
    bits = key.key_size
    verdict = rsa_size_verdict(bits, use, legacy=legacy)
    if verdict is Verdict.REFUSE:
        floor = LEGACY_RSA_BELOW if use is RsaUse.WRITE else REFUSED_RSA_BELOW
        reading = use is RsaUse.READ
        raise WeakKeyError(bits=bits, floor=floor, reading=reading, role=role, action=action)
    if verdict is Verdict.WARN:
        warnings.warn(
            f"the {role} is RSA-{bits}, a legacy size (under {LEGACY_RSA_BELOW} bits): "
            "use it only for old data",
            category=LegacyAlgorithmWarning,
            stacklevel=stacklevel,
        )
