"""CryptEncrypt / CryptDecrypt with default key parameters, streaming in constant memory.

Block ciphers (AES-128/192/256, 3DES, 3DES-112, DES, RC2) run in CBC with a zero IV unless
one is given, and ``Final=TRUE`` adds PKCS#5 padding: 1 to ``block`` bytes, a whole block
when the input is aligned.  ECB and CryptoAPI's CFB (8-bit CFB, still padded on Final,
vector ``rc2_40_block_modes``) are available for old data.  RC4 is a plain stream.  Every
message starts from the key's IV, as after each ``Final=TRUE`` call.

A decryption whose padding is wrong -- or whose length is not a whole number of blocks --
raises VerificationError with one fixed message: the caller learns nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import BinaryIO

from cryptography.hazmat.primitives import padding

from keyblob.errors import UsageError, VerificationError
from keyblob.mscapi import _primitives
from keyblob.mscapi.algids import AlgId, warn_legacy
from keyblob.mscapi.session import CapiKey

DECRYPT_FAILED = "decryption failed: wrong key, or damaged or truncated data"
CHUNK_SIZE = 1 << 16


class Mode(enum.Enum):
    """KP_MODE values keyblob implements (CRYPT_MODE_CBC is the default)."""

    CBC = "CBC"
    ECB = "ECB"
    CFB = "CFB8"


def _check(
    key: CapiKey, iv: bytes | None, mode: Mode, *, encrypt: bool, legacy: bool, warn: bool = True
) -> bytes:
    info = key.info
    if info.alg_id is AlgId.TLS1_MASTER:
        raise UsageError("a TLS master secret does not encrypt data")
    if info.is_legacy_key(key.key_size) and warn:
        if encrypt and not legacy:
            raise UsageError(
                f"{info.alg_id.calg_name} is legacy: encrypting with it needs legacy=True"
            )
        warn_legacy(info.alg_id.calg_name, stacklevel=4)
    if encrypt and key.key_size not in info.key_sizes:
        # Windows: an over-long RC2 key from a SIMPLEBLOB decrypts but does not encrypt
        # (NTE_BAD_KEY, vector rc2_oversize_key_from_simpleblob).
        raise UsageError(f"a {key.key_size}-byte {info.alg_id.calg_name} key only decrypts")
    if info.block_size == 0:
        if iv is not None:
            raise UsageError(f"{info.alg_id.calg_name} takes no IV")
        if mode is not Mode.CBC:
            raise UsageError(f"{info.alg_id.calg_name} has no cipher mode")
        return b""
    if iv is None:
        return bytes(info.block_size)
    if len(iv) != info.block_size:
        raise UsageError(f"the {info.alg_id.calg_name} IV is {info.block_size} bytes")
    return bytes(iv)


def _transform(key: CapiKey, iv: bytes, mode: Mode, encrypt: bool) -> _primitives.Transform:
    if key.info.block_size == 0:
        return _primitives.rc4_transform(key.cipher_key())
    return _primitives.block_transform(
        key.alg_id,
        key.cipher_key(),
        mode=mode.value,
        iv=iv,
        encrypt=encrypt,
        effective_bits=key.effective_bits,
    )


class _Message:
    """What CryptEncrypt and CryptDecrypt share: the cipher context, the bytes held back
    until they make whole blocks, and the one-shot ``finalize``."""

    def __init__(
        self, key: CapiKey, iv: bytes | None, mode: Mode, *, encrypt: bool, legacy: bool
    ) -> None:
        real_iv = _check(key, iv, mode, encrypt=encrypt, legacy=legacy)
        self._block = key.info.block_size
        self._ctx = _transform(key, real_iv, mode, encrypt)
        self._buf = b""
        self._done = False

    def _feed(self, data: bytes, *, hold_last_block: bool) -> bytes:
        if self._done:
            raise UsageError("this message is finished: start a new Encryptor or Decryptor")
        if self._block == 0:  # a stream cipher: nothing to hold back
            return self._ctx.update(bytes(data))
        self._buf += data
        size = len(self._buf) - 1 if hold_last_block else len(self._buf)
        cut = max(0, size // self._block * self._block)
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return self._ctx.update(out)

    def _finish(self) -> bytes:
        """Mark the message finished; returns the bytes still held back."""
        if self._done:
            raise UsageError("this message is finished: start a new Encryptor or Decryptor")
        self._done = True
        held, self._buf = self._buf, b""
        return held


class Encryptor(_Message):
    """CryptEncrypt over a stream: :meth:`update` any number of times, then :meth:`finalize`."""

    def __init__(
        self, key: CapiKey, *, iv: bytes | None = None, mode: Mode = Mode.CBC, legacy: bool = False
    ) -> None:
        """Start a message.

        Raises:
            UsageError: a legacy key without ``legacy=True``, a key that only decrypts, or a
                bad IV or mode.
            UnsupportedError: a primitive the installed libraries lack.
        """
        super().__init__(key, iv, mode, encrypt=True, legacy=legacy)

    def update(self, data: bytes) -> bytes:
        """Encrypt more plaintext; returns the ciphertext ready so far."""
        return self._feed(data, hold_last_block=False)

    def finalize(self) -> bytes:
        """Pad (block ciphers) and return the last ciphertext bytes."""
        held = self._finish()
        if self._block == 0:
            return b""
        padder = padding.PKCS7(self._block * 8).padder()
        return self._ctx.update(padder.update(held) + padder.finalize())


class Decryptor(_Message):
    """CryptDecrypt over a stream; the padding is checked in :meth:`finalize`.

    The last block is held back until :meth:`finalize`, so a caller that writes ``update``
    output straight to a file must delete that file if ``finalize`` raises.
    """

    def __init__(self, key: CapiKey, *, iv: bytes | None = None, mode: Mode = Mode.CBC) -> None:
        """Start a message.

        Raises:
            UsageError: a bad IV or mode for the key.
            UnsupportedError: a primitive the installed libraries lack.
        """
        super().__init__(key, iv, mode, encrypt=False, legacy=True)

    def update(self, data: bytes) -> bytes:
        """Decrypt more ciphertext; returns the plaintext that is certainly not padding."""
        # At least one byte stays held back, so the final block is here for unpadding.
        return self._feed(data, hold_last_block=True)

    def finalize(self) -> bytes:
        """Decrypt the last block and remove the padding.

        Raises:
            VerificationError: the length is not a whole, non-zero number of blocks, or the
                padding is wrong (one fixed message for both).
        """
        held = self._finish()
        if self._block == 0:
            return b""
        if len(held) != self._block:
            raise VerificationError(DECRYPT_FAILED)
        unpadder = padding.PKCS7(self._block * 8).unpadder()
        try:
            return unpadder.update(self._ctx.update(held)) + unpadder.finalize()
        except ValueError:
            raise VerificationError(DECRYPT_FAILED) from None


def check_ciphertext(
    key: CapiKey, size: int | None, *, iv: bytes | None = None, mode: Mode = Mode.CBC
) -> None:
    """What can be known of a CryptDecrypt before its first byte is written (the rest of
    the message fails only at its end, in :meth:`Decryptor.finalize`): the key and the IV
    fit, and ``size`` bytes of ciphertext (when the size is known) are a whole, non-zero
    number of blocks.

    Raises:
        UsageError: as :class:`Decryptor`.
        VerificationError: ``size`` cannot be CryptEncrypt output of this key.
    """
    _check(key, iv, mode, encrypt=False, legacy=True, warn=False)
    block = key.info.block_size
    if size is not None and block and (size == 0 or size % block):
        raise VerificationError(
            f"{DECRYPT_FAILED}: {size} bytes is not a whole, non-zero number of "
            f"{block}-byte {key.alg_id.calg_name} blocks"
        )


def encrypt(
    key: CapiKey,
    data: bytes,
    *,
    iv: bytes | None = None,
    mode: Mode = Mode.CBC,
    legacy: bool = False,
) -> bytes:
    """CryptEncrypt(Final=TRUE) of one message.

    Raises:
        UsageError: as :class:`Encryptor`.
        UnsupportedError: as :class:`Encryptor`.
    """
    enc = Encryptor(key, iv=iv, mode=mode, legacy=legacy)
    return enc.update(data) + enc.finalize()


def decrypt(key: CapiKey, data: bytes, *, iv: bytes | None = None, mode: Mode = Mode.CBC) -> bytes:
    """CryptDecrypt(Final=TRUE) of one message.

    Raises:
        VerificationError: bad padding or length (one fixed message).
        UsageError: as :class:`Decryptor`.
        UnsupportedError: as :class:`Decryptor`.
    """
    dec = Decryptor(key, iv=iv, mode=mode)
    return dec.update(data) + dec.finalize()


def encrypt_file(
    key: CapiKey,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    iv: bytes | None = None,
    mode: Mode = Mode.CBC,
    legacy: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Encrypt ``src`` into ``dst`` in constant memory; returns the bytes written.
    ``progress`` is called with the size of each piece read.

    Raises:
        UsageError: as :class:`Encryptor`.
        UnsupportedError: as :class:`Encryptor`.
    """
    enc = Encryptor(key, iv=iv, mode=mode, legacy=legacy)
    written = 0
    while chunk := src.read(CHUNK_SIZE):
        written += dst.write(enc.update(chunk))
        if progress is not None:
            progress(len(chunk))
    return written + dst.write(enc.finalize())


def decrypt_file(
    key: CapiKey,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    iv: bytes | None = None,
    mode: Mode = Mode.CBC,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt ``src`` into ``dst`` in constant memory; returns the bytes written.
    ``progress`` is called with the size of each piece read.

    ``dst`` has received all but the last block when the padding check fails: write to a
    temporary file and rename it only on success (the CLI does).

    Raises:
        VerificationError: bad padding or length (one fixed message).
        UsageError: as :class:`Decryptor`.
        UnsupportedError: as :class:`Decryptor`.
    """
    dec = Decryptor(key, iv=iv, mode=mode)
    written = 0
    while chunk := src.read(CHUNK_SIZE):
        written += dst.write(dec.update(chunk))
        if progress is not None:
            progress(len(chunk))
    return written + dst.write(dec.finalize())


def cbc_mac(key: CapiKey, data: bytes) -> bytes:
    """CALG_MAC (Windows 8 and later): the last block of CBC encryption with padding.

    A MAC checks old data, so a legacy key is allowed (with its warning), as for decryption.

    Raises:
        UsageError: not a block cipher key, or as :class:`Encryptor`.
        UnsupportedError: as :class:`Encryptor`.
    """
    block = key.info.block_size
    if block == 0:
        raise UsageError("CALG_MAC needs a block cipher key")
    # The decrypt-side checks: the legacy warning, and an over-long RC2 key from a SIMPLEBLOB
    # is allowed (Windows MACs with it: vector rc2_oversize_key_from_simpleblob).
    iv = _check(key, None, Mode.CBC, encrypt=False, legacy=True)
    padder = padding.PKCS7(block * 8).padder()
    sealed = _transform(key, iv, Mode.CBC, True).update(padder.update(data) + padder.finalize())
    return sealed[-block:]
