"""Windows CryptoAPI compatibility: key blobs, signatures and data, byte for byte.

The only home of PKCS#1 v1.5 and little-endian integers in keyblob (docs/MSCAPI.md).

- ``blobs``: PUBLICKEYBLOB / PRIVATEKEYBLOB <-> ``cryptography`` RSA keys, SIMPLEBLOB and
  PLAINTEXTKEYBLOB structures, ``describe`` for ``keyblob inspect``.
- ``simpleblob``: wrap a session key (CryptExportKey) and open one without a padding oracle.
- ``signatures``: CryptSignHash / CryptVerifySignature.
- ``data``: CryptEncrypt / CryptDecrypt, streaming.
- ``derive``: CryptDeriveKey.
- ``keyfiles``: RSA keys between PEM, DER, PUBLICKEYBLOB/PRIVATEKEYBLOB and .NET XML
  (``keyblob capi convert``).
- ``keysize``: which RSA key sizes each of them accepts, for reading and for writing.

Legacy algorithms (RC2, RC4, DES, 3DES, 40-bit keys; MD2 to SHA-1 for signing) read old
data freely but make new data only with ``legacy=True``, and always emit a
:class:`LegacyAlgorithmWarning`.  So do RSA keys under 2048 bits; under 1024 bits they are
refused even for reading unless ``legacy=True`` (:class:`WeakKeyError`).
"""

from keyblob.errors import LegacyAlgorithmWarning, WeakKeyError
from keyblob.mscapi._primitives import has_legacy_backend
from keyblob.mscapi.algids import (
    AlgId,
    SessionAlgorithm,
    alg_name,
    hash_from_label,
    session_algorithm,
)
from keyblob.mscapi.blobs import (
    BlobType,
    Field,
    PlaintextKeyBlob,
    PrivateKeyBlob,
    PublicKeyBlob,
    SimpleBlob,
    describe,
    looks_like_capi_blob,
)
from keyblob.mscapi.data import (
    DECRYPT_FAILED,
    Decryptor,
    Encryptor,
    Mode,
    cbc_mac,
    check_ciphertext,
    decrypt,
    decrypt_file,
    encrypt,
    encrypt_file,
)
from keyblob.mscapi.derive import Csp, derive_key
from keyblob.mscapi.keyfiles import KeyFormat, LoadedKey, dump_rsa_key, load_rsa_key
from keyblob.mscapi.keysize import (
    LEGACY_RSA_BELOW,
    REFUSED_RSA_BELOW,
    RsaUse,
    Verdict,
    check_rsa_size,
    rsa_size_verdict,
)
from keyblob.mscapi.session import CapiKey
from keyblob.mscapi.signatures import (
    SIGN_HASHES,
    sign_digest,
    sign_hash,
    verify_digest,
    verify_signature,
    verify_stream_signature,
)
from keyblob.mscapi.simpleblob import (
    RsaDecryptKey,
    build_simpleblob,
    check_recipient_key,
    unwrap_simpleblob,
    unwrap_to_plaintextkeyblob,
)

__all__ = [
    "DECRYPT_FAILED",
    "LEGACY_RSA_BELOW",
    "REFUSED_RSA_BELOW",
    "SIGN_HASHES",
    "AlgId",
    "BlobType",
    "CapiKey",
    "Csp",
    "Decryptor",
    "Encryptor",
    "Field",
    "KeyFormat",
    "LegacyAlgorithmWarning",
    "LoadedKey",
    "Mode",
    "PlaintextKeyBlob",
    "PrivateKeyBlob",
    "PublicKeyBlob",
    "RsaDecryptKey",
    "RsaUse",
    "SessionAlgorithm",
    "SimpleBlob",
    "Verdict",
    "WeakKeyError",
    "alg_name",
    "build_simpleblob",
    "cbc_mac",
    "check_ciphertext",
    "check_recipient_key",
    "check_rsa_size",
    "decrypt",
    "decrypt_file",
    "derive_key",
    "describe",
    "dump_rsa_key",
    "encrypt",
    "encrypt_file",
    "has_legacy_backend",
    "hash_from_label",
    "load_rsa_key",
    "looks_like_capi_blob",
    "rsa_size_verdict",
    "session_algorithm",
    "sign_digest",
    "sign_hash",
    "unwrap_simpleblob",
    "unwrap_to_plaintextkeyblob",
    "verify_digest",
    "verify_signature",
    "verify_stream_signature",
]
