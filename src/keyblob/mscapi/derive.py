"""CryptDeriveKey: a session key from a hash value (CRYPTOAPI-FORMATS.md section 10 and the
vectors' ``derive_key_table``).

1. ``H`` = the hash value of the data (CryptCreateHash + CryptHashData).
2. The key is ``H[:n]`` -- except for AES keys (always) and 3DES keys longer than ``H``,
   with a non-SHA-2 hash: then ``H(0x36^64 XOR H) || H(0x5c^64 XOR H)``, truncated to ``n``.
3. 40-bit RC2/RC4 keys get 11 zero bytes of salt, unless CRYPT_NO_SALT; with
   CRYPT_CREATE_SALT the enhanced and AES providers give no salt, the base and strong
   providers the 11 hash bytes after the key (vectors ``rc2_40_create_salt``,
   ``rc4_40_create_salt``).
"""

from __future__ import annotations

import enum

from keyblob.errors import UsageError
from keyblob.mscapi import _primitives
from keyblob.mscapi.algids import HASH_SIZES, AlgId, session_algorithm, warn_legacy
from keyblob.mscapi.session import CapiKey

_SHA2 = (AlgId.SHA_256, AlgId.SHA_384, AlgId.SHA_512)
_EXPANDED = (AlgId.AES_128, AlgId.AES_192, AlgId.AES_256)


class Csp(enum.Enum):
    """Which Microsoft provider's rules to follow where they differ."""

    BASE = "MS_DEF_PROV"
    STRONG = "MS_STRONG_PROV"
    ENHANCED = "MS_ENHANCED_PROV"
    AES = "MS_ENH_RSA_AES_PROV"


def derive_key_bytes(hash_alg: AlgId, hash_value: bytes, alg_id: AlgId, size: int) -> bytes:
    """Steps 2 of the module docstring: ``size`` key bytes from ``hash_value``.

    Raises:
        UsageError: the hash is too short for the key and cannot be expanded.
        UnsupportedError: MD2/MD4 without the legacy backend.
    """
    expand = hash_alg not in _SHA2 and (
        alg_id in _EXPANDED or (alg_id is AlgId.TRIPLE_DES and size > len(hash_value))
    )
    if not expand:
        if size > len(hash_value):
            raise UsageError(
                f"a {len(hash_value)}-byte {hash_alg.calg_name} value is too short for a "
                f"{size}-byte key"
            )
        return hash_value[:size]
    ipad = bytearray(b"\x36" * 64)
    opad = bytearray(b"\x5c" * 64)
    for i, b in enumerate(hash_value):
        ipad[i] ^= b
        opad[i] ^= b
    out = _primitives.digest(hash_alg, bytes(ipad)) + _primitives.digest(hash_alg, bytes(opad))
    if size > len(out):
        raise UsageError(
            f"{len(out)} bytes derived from {hash_alg.calg_name} are too few for a {size}-byte key"
        )
    return out[:size]


def derive_key(
    hash_alg: AlgId | int,
    data: bytes,
    alg_id: AlgId | int,
    *,
    key_bits: int | None = None,
    create_salt: bool = False,
    no_salt: bool = False,
    csp: Csp = Csp.AES,
) -> CapiKey:
    """CryptCreateHash(``hash_alg``) + CryptHashData(``data``) + CryptDeriveKey(``alg_id``).

    Args:
        hash_alg: the hash ALG_ID (MD2, MD4, MD5, SHA-1, SHA-256/384/512).
        data: what was hashed (often a password).
        alg_id: the session ALG_ID.
        key_bits: the key length (the upper 16 bits of CryptDeriveKey's flags); None for the
            provider's default (16 bytes for RC2/RC4, the full key otherwise).
        create_salt: CRYPT_CREATE_SALT.
        no_salt: CRYPT_NO_SALT.
        csp: whose salt and RC2 rules to follow.

    Raises:
        UsageError: a key length the algorithm does not take.
        UnsupportedError: an unknown ALG_ID, or MD2/MD4 without the legacy backend.
    """
    try:
        hash_id = AlgId(hash_alg)
    except ValueError:
        raise UsageError(f"0x{int(hash_alg):08x} is not a hash ALG_ID") from None
    if hash_id not in HASH_SIZES or hash_id is AlgId.SSL3_SHAMD5:
        raise UsageError(f"{hash_id.calg_name} cannot derive keys")
    info = session_algorithm(alg_id)
    size = info.default_size if key_bits is None else key_bits // 8
    if key_bits is not None and key_bits % 8 != 0:
        raise UsageError("key_bits must be a multiple of 8")
    if info.is_legacy_key(size):
        warn_legacy(info.alg_id.calg_name)
    hash_value = _primitives.digest(hash_id, data)
    key = derive_key_bytes(hash_id, hash_value, info.alg_id, size)
    # None leaves CryptImportKey's defaults to CapiKey.new: 11 zero bytes of salt for a
    # 40-bit RC2/RC4 key, and an RC2 effective length of the key's bits (up to 512).
    salt: bytes | None = None
    if no_salt:
        salt = b""
    elif create_salt:  # CRYPT_CREATE_SALT: the hash bytes after the key, base/strong CSPs
        salted = info.alg_id in (AlgId.RC2, AlgId.RC4) and size == 5
        salt = hash_value[size : size + 11] if salted and csp in (Csp.BASE, Csp.STRONG) else b""
    effective = 40 if info.alg_id is AlgId.RC2 and csp is Csp.BASE else None
    return CapiKey.new(info.alg_id, key, salt=salt, effective_bits=effective)
