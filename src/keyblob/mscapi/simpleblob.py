"""SIMPLEBLOB: wrap a session key under an RSA exchange key, and open one without an oracle.

The only home of PKCS#1 v1.5 encryption in keyblob.  New keyblob-native wraps never use it;
it is here so that keys Windows programs stored can be read, and written back for them.

Opening (docs/MSCAPI.md, "Oracle-free unwrap"), numbered as the code below:

1. Parse the public structure (header, ALG_IDs).  Errors here depend only on public bytes.
2. The encrypted key must be exactly the modulus length (Windows also accepts zero bytes
   after it, vector ``simpleblob_trailing_zero_bytes``), and its value below the modulus.
3. Draw a random key of the expected length *before* decrypting.
4. RSA-decrypt.  Whatever happens -- ``cryptography`` raising on bad padding, or (current
   wheels) OpenSSL's implicit rejection returning pseudo-random bytes -- the result is used
   only if its length fits the ALG_ID; otherwise the random key stands in (RFC 3218, 2.3.2).
   A damaged or forged blob therefore gives a key that fails later, exactly like a wrong key,
   and no error or timing difference tells the caller why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyblob.errors import FormatError, UsageError, VerificationError
from keyblob.mscapi.algids import session_algorithm, warn_legacy
from keyblob.mscapi.blobs import PlaintextKeyBlob, SimpleBlob
from keyblob.mscapi.keysize import RsaUse, check_rsa_size
from keyblob.mscapi.session import CapiKey

#: CRYPT_OAEP SIMPLEBLOBs use OAEP with SHA-1, MGF1-SHA-1 and an empty label (section 5b).
#: SHA-1 is what CryptoAPI uses there; it is only read and written for CryptoAPI peers.
_OAEP = padding.OAEP(
    mgf=padding.MGF1(hashes.SHA1()),  # noqa: S303
    algorithm=hashes.SHA1(),  # noqa: S303
    label=None,
)


#: Every refusal that may mean "wrapped for another exchange key" ends with this, so the
#: command line can say which key pair a SIMPLEBLOB needs.
WRONG_KEY = "(a wrong exchange key?)"
UNWRAP_FAILED = f"the private key does not open this SIMPLEBLOB {WRONG_KEY}"
#: The keys' roles in messages about their size (docs/MSCAPI.md 5).
RECIPIENT_ROLE = "recipient's key"
EXCHANGE_ROLE = "exchange key"


class RsaDecryptKey(Protocol):
    """What :func:`unwrap_simpleblob` needs of an RSA exchange private key: an
    ``rsa.RSAPrivateKey``, or a key held elsewhere (a PKCS#11 token) presented alike.

    ``decrypt`` is given ``padding.PKCS1v15()`` or OAEP with SHA-1, MGF1-SHA-1 and no label,
    and must raise ValueError for every failure that may depend on the ciphertext (bad
    padding above all), so that the caller takes the random stand-in (module docstring).
    """

    @property
    def key_size(self) -> int: ...

    def public_key(self) -> rsa.RSAPublicKey: ...

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes: ...


def _padding(oaep: bool) -> padding.AsymmetricPadding:
    return _OAEP if oaep else padding.PKCS1v15()


def check_recipient_key(
    exchange_key: rsa.RSAPublicKey, *, legacy: bool = False, stacklevel: int = 3
) -> None:
    """The size rule for a key that :func:`build_simpleblob` would wrap for (docs/MSCAPI.md
    5), on its own: a caller can refuse before any other work.

    Raises:
        WeakKeyError: an exchange key under 2048 bits without ``legacy=True``.
    """
    check_rsa_size(
        exchange_key,
        RsaUse.WRITE,
        legacy=legacy,
        role=RECIPIENT_ROLE,
        action="wrapping a key for it",
        stacklevel=stacklevel + 1,
    )


def build_simpleblob(
    key: CapiKey,
    exchange_key: rsa.RSAPublicKey,
    *,
    oaep: bool = False,
    legacy: bool = False,
) -> bytes:
    """CryptExportKey(SIMPLEBLOB): ``key`` wrapped under ``exchange_key``.

    PKCS#1 v1.5 type 2 with random non-zero padding (never the SSL2 rollback marker), or
    OAEP when ``oaep`` (CRYPT_OAEP), stored byte-reversed behind a CALG_RSA_KEYX wrap ALG_ID.

    Args:
        key: the session key; its salt is not carried (Windows does not carry it either).
        exchange_key: the recipient's RSA exchange public key.
        oaep: write a CRYPT_OAEP blob (Wine 8 cannot import these; Windows can).
        legacy: required to export a legacy key (RC2, RC4, DES, 3DES, 40-bit), or for an
            exchange key under 2048 bits (docs/MSCAPI.md 5).

    Raises:
        UsageError: a legacy key without ``legacy=True``, a key the ALG_ID cannot carry, or
            an exchange key too small for it.
        WeakKeyError: an exchange key under 2048 bits without ``legacy=True``.
    """
    check_recipient_key(exchange_key, legacy=legacy, stacklevel=4)
    info = key.info
    if info.is_legacy_key(key.key_size):
        if not legacy:
            raise UsageError(f"{info.alg_id.calg_name} is legacy: exporting it needs legacy=True")
        warn_legacy(info.alg_id.calg_name)
    if key.key_size not in info.key_sizes:
        raise UsageError(f"a {info.alg_id.calg_name} key of {key.key_size} bytes is not exported")
    try:
        ciphertext = exchange_key.encrypt(key.unsafe_raw_bytes(), _padding(oaep))
    except ValueError:
        raise UsageError("the exchange key is too small for this session key") from None
    return SimpleBlob(info.alg_id, ciphertext[::-1]).to_bytes()


def unwrap_simpleblob(
    blob: bytes,
    private_key: rsa.RSAPrivateKey | RsaDecryptKey,
    *,
    key_size: int | None = None,
    oaep: bool = False,
    authenticated: bool = False,
    legacy: bool = False,
    _random: Callable[[int], bytes] = os.urandom,
) -> CapiKey:
    """CryptImportKey(SIMPLEBLOB) without a padding oracle.

    With ``authenticated`` the caller has verified a signature over ``blob`` from a signer
    it trusts: nobody can then submit altered ciphertexts, so there is no oracle to protect,
    and a blob that does not open (a wrong private key, most often) raises instead of
    yielding a random key.

    Args:
        blob: the SIMPLEBLOB bytes.
        private_key: the RSA exchange private key (or a token's, :class:`RsaDecryptKey`).
        key_size: the expected key length in bytes, for RC2/RC4 whose ALG_ID allows several;
            None accepts any length the ALG_ID allows and uses its default length (16) for
            the random stand-in.
        oaep: the blob was written with CRYPT_OAEP.
        authenticated: the blob's signature was verified (see above).
        legacy: accept a private key under 1024 bits (docs/MSCAPI.md 5); one of 1024 to
            2047 bits is accepted with a warning either way.

    Returns:
        The session key -- or, if the blob was damaged or forged, a random key of the right
        length, which decrypts nothing (see the module docstring).

    Raises:
        FormatError: the public structure is wrong (header, lengths, value not below the
            modulus).  Never raised for anything that depends on the private key.
        UnsupportedError: the session ALG_ID is not one keyblob implements.
        UsageError: ``key_size`` does not fit the ALG_ID.
        VerificationError: only with ``authenticated``: the private key does not open it.
        WeakKeyError: a private key under 1024 bits without ``legacy=True`` (a UsageError).
    """
    # Step 0: the caller's key is big enough to mean something (nothing to do with the blob).
    public_key = private_key.public_key()
    check_rsa_size(public_key, RsaUse.READ, legacy=legacy, role=EXCHANGE_ROLE, action="unwrapping")
    # Step 1: public structure.
    parsed = SimpleBlob.from_bytes(blob)
    info = session_algorithm(parsed.alg_id)
    allowed = info.sizes_for_simpleblob()
    if key_size is not None and key_size not in allowed:
        raise UsageError(f"a {info.alg_id.calg_name} key cannot be {key_size} bytes")
    # Step 2: length and range, public checks against the public key.
    public = public_key.public_numbers()
    k = (private_key.key_size + 7) // 8
    stored = parsed.encrypted_key
    if len(stored) < k or any(stored[k:]):
        raise FormatError(
            f"SIMPLEBLOB: encryptedkey at offset 12: {len(stored)} bytes "
            f"for a {private_key.key_size}-bit exchange key (expected {k}) {WRONG_KEY}"
        )
    ciphertext = stored[:k][::-1]
    if int.from_bytes(ciphertext, "big") >= public.n:
        raise FormatError(
            f"SIMPLEBLOB: encryptedkey at offset 12: not below the modulus {WRONG_KEY}"
        )
    # Step 3: the stand-in, drawn before anything secret happens.
    stand_in = _random(key_size if key_size is not None else info.default_size)
    # Step 4: decrypt; any failure and any unexpected length select the stand-in.
    try:
        plain = private_key.decrypt(ciphertext, _padding(oaep))
        decrypted_ok = True
    except ValueError:
        plain = stand_in
        decrypted_ok = False
    fits = len(plain) == key_size if key_size is not None else len(plain) in allowed
    if authenticated and not (decrypted_ok and fits):
        raise VerificationError(UNWRAP_FAILED)
    chosen = plain if decrypted_ok and fits else stand_in
    if info.is_legacy_key(len(chosen)):
        warn_legacy(info.alg_id.calg_name)
    return CapiKey.new(info.alg_id, chosen, simpleblob=True)


def unwrap_to_plaintextkeyblob(
    blob: bytes,
    private_key: rsa.RSAPrivateKey,
    *,
    key_size: int | None = None,
    authenticated: bool = False,
    legacy: bool = False,
) -> bytes:
    """Open ``blob`` and return the key as a PLAINTEXTKEYBLOB (``keyblob capi unwrap``).

    Raises:
        FormatError: as :func:`unwrap_simpleblob`.
        UnsupportedError: as :func:`unwrap_simpleblob`.
        UsageError: an RC2 key longer than 16 bytes, which a PLAINTEXTKEYBLOB cannot carry.
        WeakKeyError: as :func:`unwrap_simpleblob`.
    """
    key = unwrap_simpleblob(
        blob, private_key, key_size=key_size, authenticated=authenticated, legacy=legacy
    )
    return PlaintextKeyBlob(key.alg_id, key.unsafe_raw_bytes()).to_bytes()
