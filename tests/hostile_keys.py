"""Encrypted PKCS#8 files built by hand (DER), for the tests of the KDF bounds (issue 11,
item 5): no keyblob code makes them, so the bounds are checked against an independent writer.
"""

from __future__ import annotations

import base64
import functools
import os

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

PASS = b"correct horse battery staple"
PBES2 = "2a864886f70d01050d"
PBKDF2 = "2a864886f70d01050c"
SCRYPT = "2b06010401da47040b"
PKCS12_3DES = "2a864886f70d010c0103"
PBES1_MD5_DES = "2a864886f70d010503"  # pbeWithMD5AndDES-CBC: cryptography does not read it
HMAC_SHA256 = "2a864886f70d0209"
AES_256_CBC = "60864801650304012a"  # 2.16.840.1.101.3.4.1.42


def tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def oid(hex_contents: str) -> bytes:
    return tlv(0x06, bytes.fromhex(hex_contents))


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def epki(algorithm: bytes, encrypted: bytes = bytes(48)) -> bytes:
    return seq(algorithm, octets(encrypted))


@functools.cache
def plain_pkcs8() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pbes2_pbkdf2(iterations: int, *, real: bool = False) -> bytes:
    """PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC; with ``real`` the key is truly encrypted."""
    salt, iv = os.urandom(16), os.urandom(16)
    encrypted = bytes(48)
    if real:
        key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(PASS)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plain_pkcs8()) + padder.finalize()
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        encrypted = enc.update(padded) + enc.finalize()
    kdf = seq(oid(PBKDF2), seq(octets(salt), integer(iterations), seq(oid(HMAC_SHA256), b"\5\0")))
    scheme = seq(oid(AES_256_CBC), octets(iv))
    return epki(seq(oid(PBES2), seq(kdf, scheme)), encrypted)


def pbes2_scrypt(n: int, r: int, p: int) -> bytes:
    kdf = seq(oid(SCRYPT), seq(octets(bytes(16)), integer(n), integer(r), integer(p)))
    return epki(seq(oid(PBES2), seq(kdf, seq(oid(AES_256_CBC), octets(bytes(16))))))


def pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + lines
        + b"\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )


@functools.cache
def rsa_of(bits: int) -> rsa.RSAPrivateKey:
    """A real RSA key of exactly ``bits`` bits.  cryptography makes none under 1024 bits, so
    those come from ``openssl genrsa`` (skipped where openssl is missing, failed in CI)."""
    if bits >= 1024:
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    import support

    key = serialization.load_pem_private_key(support.openssl("genrsa", str(bits)), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits
    return key
