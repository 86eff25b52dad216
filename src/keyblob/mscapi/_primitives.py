"""The one place that picks a library for each CryptoAPI primitive.

Everything comes from ``cryptography`` when it has it.  Three legacy primitives it does not
have in the form CryptoAPI uses: MD2, MD4 (only for verifying old signatures and deriving
old keys) and RC2 with a key that is not 128 bits or an effective length that is not 128
bits.  For those keyblob uses ``pycryptodomex`` if it is installed (the ``legacy`` extra)
and otherwise refuses with UnsupportedError.  Nothing cryptographic is written by hand.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, TypeAlias

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, RC2, TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB8
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from keyblob.errors import UnsupportedError
from keyblob.mscapi.algids import AlgId

_CRYPTOGRAPHY_HASHES: dict[AlgId, type[hashes.HashAlgorithm]] = {
    AlgId.MD5: hashes.MD5,
    AlgId.SHA1: hashes.SHA1,
    AlgId.SHA_256: hashes.SHA256,
    AlgId.SHA_384: hashes.SHA384,
    AlgId.SHA_512: hashes.SHA512,
}
_CRYPTODOME_HASHES = {AlgId.MD2: "MD2", AlgId.MD4: "MD4"}
# Spelled exactly as ``cryptography``'s own cipher-context union, so mypy picks the
# non-AEAD overload of ``encryptor``/``decryptor``.
_Mode: TypeAlias = (
    modes.ModeWithNonce
    | modes.ModeWithTweak
    | modes.ECB
    | modes.ModeWithInitializationVector
    | None
)
_ARC4_SIZES = frozenset(size // 8 for size in ARC4.key_sizes)


class Transform(Protocol):
    """A cipher context: what ``cryptography`` and ``pycryptodomex`` adapters both offer."""

    def update(self, data: bytes) -> bytes: ...


def _cryptodome(module: str, what: str) -> Any:
    try:
        return importlib.import_module(f"Cryptodome.{module}")
    except ImportError:
        raise UnsupportedError(
            f"{what} is not in the 'cryptography' package; install keyblob's 'legacy' extra "
            "(pycryptodomex) to read data that needs it"
        ) from None


def has_legacy_backend() -> bool:
    """Whether MD2, MD4 and RC2 of any key length are available."""
    try:
        importlib.import_module("Cryptodome.Cipher.ARC2")
    except ImportError:
        return False
    return True


def hash_algorithm(alg_id: AlgId) -> hashes.HashAlgorithm | None:
    """The ``cryptography`` hash for ``alg_id``, or None for MD2/MD4/SSL3_SHAMD5."""
    cls = _CRYPTOGRAPHY_HASHES.get(alg_id)
    return cls() if cls is not None else None


def digest(alg_id: AlgId, data: bytes) -> bytes:
    """Hash ``data`` as CryptHashData + HP_HASHVAL would.

    Raises:
        UnsupportedError: not a hash ALG_ID, or MD2/MD4 without the legacy backend.
    """
    h = Hasher(alg_id)
    h.update(data)
    return h.value()


class Hasher:
    """CryptCreateHash, then CryptHashData piece by piece, then HP_HASHVAL: for data too
    large to hold at once.

    Raises (on creation):
        UnsupportedError: not a hash ALG_ID, or MD2/MD4 without the legacy backend.
    """

    def __init__(self, alg_id: AlgId) -> None:
        # CALG_SSL3_SHAMD5 is MD5 || SHA-1 of the same data.
        algs = [AlgId.MD5, AlgId.SHA1] if alg_id is AlgId.SSL3_SHAMD5 else [alg_id]
        self._parts: list[Any] = []
        for alg in algs:
            algorithm = hash_algorithm(alg)
            if algorithm is not None:
                self._parts.append(hashes.Hash(algorithm))
                continue
            name = _CRYPTODOME_HASHES.get(alg)
            if name is None:
                raise UnsupportedError(f"{alg.calg_name} is not a hash algorithm")
            self._parts.append(_cryptodome(f"Hash.{name}", name).new())

    def update(self, data: bytes) -> None:
        for part in self._parts:
            part.update(data)

    def value(self) -> bytes:
        return b"".join(
            bytes(p.finalize() if isinstance(p, hashes.Hash) else p.digest()) for p in self._parts
        )


class _CryptodomeTransform:
    def __init__(self, cipher: Any, encrypt: bool) -> None:
        self._fn = cipher.encrypt if encrypt else cipher.decrypt

    def update(self, data: bytes) -> bytes:
        return bytes(self._fn(data)) if data else b""


def _cryptography_transform(algorithm: CipherAlgorithm, mode: _Mode, encrypt: bool) -> Transform:
    cipher = Cipher(algorithm, mode)
    return cipher.encryptor() if encrypt else cipher.decryptor()


def block_transform(
    alg_id: AlgId,
    key: bytes,
    *,
    mode: str,
    iv: bytes,
    encrypt: bool,
    effective_bits: int | None = None,
) -> Transform:
    """A raw (unpadded) AES / DES / 3DES / RC2 context in ECB, CBC or 8-bit CFB.

    ``key`` is the key schedule input (for RC2: key followed by salt).

    Raises:
        UnsupportedError: RC2 outside what the installed libraries can do.
    """
    if alg_id is AlgId.RC2:
        bits = effective_bits if effective_bits is not None else len(key) * 8
        if len(key) == 16 and bits == 128 and mode != "CFB8":
            return _cryptography_transform(RC2(key), _mode(mode, iv), encrypt)
        arc2 = _cryptodome("Cipher.ARC2", f"RC2 with a {len(key)}-byte key and {bits} bits")
        names = {"ECB": arc2.MODE_ECB, "CBC": arc2.MODE_CBC, "CFB8": arc2.MODE_CFB}
        kwargs: dict[str, Any] = {"effective_keylen": bits}
        if mode != "ECB":
            kwargs["iv"] = iv
        if mode == "CFB8":
            kwargs["segment_size"] = 8
        return _CryptodomeTransform(arc2.new(key, names[mode], **kwargs), encrypt)
    algorithm: CipherAlgorithm
    if alg_id in (AlgId.AES_128, AlgId.AES_192, AlgId.AES_256):
        algorithm = algorithms.AES(key)
    elif alg_id is AlgId.DES:
        algorithm = TripleDES(key * 3)  # EDE with K1 = K2 = K3 is single DES
    elif alg_id is AlgId.TRIPLE_DES_112:
        algorithm = TripleDES(key + key[:8])
    elif alg_id is AlgId.TRIPLE_DES:
        algorithm = TripleDES(key)
    else:
        raise UnsupportedError(f"{alg_id.calg_name} is not a block cipher")
    return _cryptography_transform(algorithm, _mode(mode, iv), encrypt)


def _mode(mode: str, iv: bytes) -> _Mode:
    if mode == "CBC":
        return modes.CBC(iv)
    if mode == "CFB8":
        return CFB8(iv)
    # ECB only because old CryptoAPI data used it (KP_MODE = CRYPT_MODE_ECB).
    return modes.ECB()  # noqa: S305


def rc4_transform(key: bytes) -> Transform:
    """An RC4 keystream context; ``key`` is the key followed by any salt.

    Raises:
        UnsupportedError: a key length ``cryptography`` lacks and no legacy backend.
    """
    if len(key) in _ARC4_SIZES:
        return Cipher(ARC4(key), None).encryptor()
    arc4 = _cryptodome("Cipher.ARC4", f"RC4 with a {len(key)}-byte key")
    return _CryptodomeTransform(arc4.new(key), True)
