"""An imported CryptoAPI session key: what an HCRYPTKEY holds after CryptImportKey.

Deliberately small: the ALG_ID, the key bytes, the salt CryptoAPI appends to 40-bit keys and
RC2's effective key length.  Its repr never shows key bytes.
"""

from __future__ import annotations

import hmac
from typing import NoReturn

from keyblob.errors import UsageError
from keyblob.mscapi.algids import AlgId, SessionAlgorithm, session_algorithm

#: CryptoAPI gives a 40-bit RC2/RC4 key 11 zero bytes of salt on import (base-provider
#: compatibility; CRYPTOAPI-FORMATS.md section 10, vector ``keypair_512_exchange``).
DEFAULT_SALT_40 = bytes(11)
_SALTED = (AlgId.RC2, AlgId.RC4)


_NEW_TOKEN = object()


class CapiKey:
    """A CryptoAPI session key.  Built with :meth:`new`, never mutated.

    ``salt`` is appended to the key for RC2/RC4 (the cipher's key is ``key || salt``);
    ``effective_bits`` is RC2's KP_EFFECTIVE_KEYLEN.
    """

    __slots__ = ("_key", "alg_id", "effective_bits", "salt")

    alg_id: AlgId
    salt: bytes
    effective_bits: int | None
    _key: bytes

    def __init__(
        self, token: object, alg_id: AlgId, key: bytes, salt: bytes, effective_bits: int | None
    ) -> None:
        if token is not _NEW_TOKEN:  # only new() builds one, after its checks
            raise TypeError("use CapiKey.new(...): it checks the key against its ALG_ID")
        object.__setattr__(self, "alg_id", alg_id)
        object.__setattr__(self, "_key", bytes(key))
        object.__setattr__(self, "salt", bytes(salt))
        object.__setattr__(self, "effective_bits", effective_bits)

    @classmethod
    def new(
        cls,
        alg_id: int,
        key: bytes,
        *,
        salt: bytes | None = None,
        effective_bits: int | None = None,
        simpleblob: bool = False,
    ) -> CapiKey:
        """A key as CryptImportKey would make it.

        Args:
            alg_id: the session ALG_ID.
            key: the key bytes (natural order, as in a PLAINTEXTKEYBLOB).
            salt: None for CryptoAPI's default (11 zero bytes for 40-bit RC2/RC4 keys).
            effective_bits: RC2 only; None for the key length in bits, capped at 512 (what
                the enhanced and AES providers do; vector ``rc2_oversize_key_from_simpleblob``).
            simpleblob: allow the lengths only a SIMPLEBLOB may carry (RC2 up to 64 bytes).

        Raises:
            UnsupportedError: an ALG_ID that is not a supported session algorithm.
            UsageError: a key length the algorithm does not take, or a bad salt/effective length.
        """
        info = session_algorithm(alg_id)
        sizes = info.sizes_for_simpleblob() if simpleblob else info.key_sizes
        if len(key) not in sizes:
            raise UsageError(f"a {info.alg_id.calg_name} key cannot be {len(key)} bytes")
        if salt is None:
            salt = DEFAULT_SALT_40 if info.alg_id in _SALTED and len(key) == 5 else b""
        if salt and info.alg_id not in _SALTED:
            raise UsageError(f"{info.alg_id.calg_name} keys take no salt")
        if len(salt) > 128 - len(key):
            raise UsageError(
                f"a {len(salt)}-byte salt is too long: key and salt are at most 128 bytes"
            )
        if info.alg_id is AlgId.RC2:
            if effective_bits is None:
                effective_bits = min(len(key) * 8, 512)
            if not 40 <= effective_bits <= 1024:
                raise UsageError("RC2 effective key length must be 40 to 1024 bits")
        elif effective_bits is not None:
            raise UsageError("only RC2 keys have an effective key length")
        return cls(_NEW_TOKEN, info.alg_id, key, salt, effective_bits)

    @property
    def info(self) -> SessionAlgorithm:
        return session_algorithm(self.alg_id)

    @property
    def key_size(self) -> int:
        """Length of the key in bytes (without salt)."""
        return len(self._key)

    def unsafe_raw_bytes(self) -> bytes:
        """The key bytes.  Whoever calls this takes over keeping them secret."""
        return self._key

    def cipher_key(self) -> bytes:
        """What the cipher's key schedule gets: key, then salt."""
        return self._key + self.salt

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("CapiKey is immutable")

    def __repr__(self) -> str:
        return (
            f"<CapiKey {self.alg_id.calg_name} {len(self._key) * 8} bits"
            f"{' + salt' if self.salt else ''}>"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a CapiKey cannot be pickled")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CapiKey):
            return NotImplemented
        return (
            self.alg_id == other.alg_id
            and self.effective_bits == other.effective_bits
            and hmac.compare_digest(self.cipher_key(), other.cipher_key())
            and len(self._key) == len(other._key)
        )

    def __hash__(self) -> int:
        return hash((self.alg_id, len(self._key)))
