"""CryptoAPI ALG_ID values, their names, key lengths and which of them are legacy.

Values are ``class << 13 | type << 9 | sid`` as in ``wincrypt.h`` (CRYPTOAPI-FORMATS.md
section 8).  Nothing here does cryptography.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

from keyblob.errors import LegacyAlgorithmWarning, UnsupportedError, UsageError

#: ALG_ID class field (bits 13..15).
ALG_CLASS_SIGNATURE = 1 << 13
ALG_CLASS_DATA_ENCRYPT = 3 << 13
ALG_CLASS_HASH = 4 << 13
ALG_CLASS_KEY_EXCHANGE = 5 << 13
ALG_CLASS_MSG_ENCRYPT = 2 << 13


class AlgId(enum.IntEnum):
    """The ALG_IDs keyblob knows.  ``calg_name`` gives the ``wincrypt.h`` spelling."""

    RSA_SIGN = 0x00002400
    RSA_KEYX = 0x0000A400
    DES = 0x00006601
    RC2 = 0x00006602
    TRIPLE_DES = 0x00006603
    TRIPLE_DES_112 = 0x00006609
    AES_128 = 0x0000660E
    AES_192 = 0x0000660F
    AES_256 = 0x00006610
    AES = 0x00006611
    RC4 = 0x00006801
    TLS1_MASTER = 0x00004C06
    MD2 = 0x00008001
    MD4 = 0x00008002
    MD5 = 0x00008003
    SHA1 = 0x00008004
    MAC = 0x00008005
    SSL3_SHAMD5 = 0x00008008
    HMAC = 0x00008009
    SHA_256 = 0x0000800C
    SHA_384 = 0x0000800D
    SHA_512 = 0x0000800E

    @property
    def calg_name(self) -> str:
        """``CALG_...`` as spelled in ``wincrypt.h``."""
        return "CALG_" + self.name.replace("TRIPLE_DES", "3DES")

    @property
    def alg_class(self) -> int:
        return int(self) & (7 << 13)


def alg_name(value: int) -> str:
    """A readable name for any ALG_ID value, known or not (for ``inspect`` and messages)."""
    try:
        return AlgId(value).calg_name
    except ValueError:
        return f"unknown ALG_ID 0x{value:08x}"


@dataclass(frozen=True)
class SessionAlgorithm:
    """What keyblob knows about one session-key ALG_ID.

    ``key_sizes`` are the lengths (bytes) a PLAINTEXTKEYBLOB or a SIMPLEBLOB may carry;
    ``simpleblob_key_sizes`` widens them where Windows accepts more through a SIMPLEBLOB
    (over-long RC2 keys, vector ``rc2_oversize_key_from_simpleblob``); ``default_size`` is
    the length of a random stand-in key in the oracle-free unwrap and of a derived key.
    """

    alg_id: AlgId
    label: str
    key_sizes: tuple[int, ...]
    default_size: int
    block_size: int  # bytes; 0 for a stream cipher or key material that is not a cipher
    legacy: bool
    simpleblob_key_sizes: tuple[int, ...] = ()

    def sizes_for_simpleblob(self) -> tuple[int, ...]:
        return self.simpleblob_key_sizes or self.key_sizes

    def is_legacy_key(self, size: int) -> bool:
        """Legacy if the algorithm is, or if the key is 40 bits (export-grade)."""
        return self.legacy or size <= 5


_VARIABLE = tuple(range(5, 17))  # RC2/RC4: 40 to 128 bits in steps of 8

SESSION_ALGORITHMS: dict[AlgId, SessionAlgorithm] = {
    a.alg_id: a
    for a in (
        SessionAlgorithm(AlgId.AES_128, "aes-128", (16,), 16, 16, legacy=False),
        SessionAlgorithm(AlgId.AES_192, "aes-192", (24,), 24, 16, legacy=False),
        SessionAlgorithm(AlgId.AES_256, "aes-256", (32,), 32, 16, legacy=False),
        SessionAlgorithm(AlgId.TRIPLE_DES, "3des", (24,), 24, 8, legacy=True),
        SessionAlgorithm(AlgId.TRIPLE_DES_112, "3des-112", (16,), 16, 8, legacy=True),
        SessionAlgorithm(AlgId.DES, "des", (8,), 8, 8, legacy=True),
        SessionAlgorithm(
            AlgId.RC2,
            "rc2",
            _VARIABLE,
            16,
            8,
            legacy=True,
            simpleblob_key_sizes=tuple(range(5, 65)),
        ),
        SessionAlgorithm(AlgId.RC4, "rc4", _VARIABLE, 16, 0, legacy=True),
        # A TLS 1.0 pre-master secret (Schannel); it unwraps but encrypts nothing.
        SessionAlgorithm(AlgId.TLS1_MASTER, "tls1-master", (48,), 48, 0, legacy=True),
    )
}

#: Hash ALG_IDs CryptSignHash / CryptDeriveKey accept here, with their digest sizes.
HASH_SIZES: dict[AlgId, int] = {
    AlgId.MD2: 16,
    AlgId.MD4: 16,
    AlgId.MD5: 16,
    AlgId.SHA1: 20,
    AlgId.SSL3_SHAMD5: 36,
    AlgId.SHA_256: 32,
    AlgId.SHA_384: 48,
    AlgId.SHA_512: 64,
}

#: Hashes that are only read (verify, derive for decryption), never used for new data
#: unless the caller passes ``legacy=True``.
LEGACY_HASHES = frozenset({AlgId.MD2, AlgId.MD4, AlgId.MD5, AlgId.SHA1, AlgId.SSL3_SHAMD5})

_HASH_LABELS = {
    "md2": AlgId.MD2,
    "md4": AlgId.MD4,
    "md5": AlgId.MD5,
    "sha1": AlgId.SHA1,
    "sha256": AlgId.SHA_256,
    "sha384": AlgId.SHA_384,
    "sha512": AlgId.SHA_512,
}


def session_algorithm(alg_id: int, *, field: str = "aiKeyAlg") -> SessionAlgorithm:
    """The session algorithm for ``alg_id``.

    Raises:
        UnsupportedError: ``alg_id`` is not a session-key algorithm keyblob implements.
    """
    try:
        return SESSION_ALGORITHMS[AlgId(alg_id)]
    except (ValueError, KeyError):
        raise UnsupportedError(
            f"{field}: {alg_name(alg_id)} is not a session-key algorithm keyblob supports"
        ) from None


def hash_from_label(label: str, allowed: frozenset[AlgId]) -> AlgId:
    """``"sha256"``... -> the hash AlgId, one of ``allowed`` (for the CLI's ``--hash``).

    Raises:
        UsageError: not the label of an allowed hash; the message lists those only.
    """
    alg = _HASH_LABELS.get(label.lower())
    if alg is None or alg not in allowed:
        choices = ", ".join(sorted(k for k, v in _HASH_LABELS.items() if v in allowed))
        raise UsageError(f"unknown hash {label!r} (expected one of {choices})")
    return alg


def warn_legacy(what: str, *, stacklevel: int = 3) -> None:
    """Emit the one LegacyAlgorithmWarning for ``what``."""
    warnings.warn(
        f"{what} is a legacy CryptoAPI algorithm: use it only to read old data",
        category=LegacyAlgorithmWarning,
        stacklevel=stacklevel,
    )
