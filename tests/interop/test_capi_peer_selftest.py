"""The CryptoAPI peer checked against pyca/cryptography alone.

These tests prove the harness (the C peer, Wine, the Python driver) before keyblob relies on
it: they use no keyblob code, only ``cryptography`` and the small, independent blob reader
and writer below, written from CRYPTOAPI-FORMATS.md.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from interop.capi.peer import (
    EXIT_BAD_DECRYPT,
    EXIT_BAD_IMPORT,
    EXIT_BAD_SIGNATURE,
    EXIT_OK,
    EXIT_USAGE,
    CapiPeer,
)

SIMPLEBLOB, PUBLICKEYBLOB, PRIVATEKEYBLOB, PLAINTEXTKEYBLOB = 0x01, 0x06, 0x07, 0x08
CALG_RSA_KEYX, CALG_RSA_SIGN = 0xA400, 0x2400
NTE_BAD_SIGNATURE = b"0x80090006"
# Wine's rsaenh answers NTE_FAIL when the signature, as an integer, is not below the
# verifying key's modulus (a signature made with another key of the same size: ~half the time).
NTE_FAIL = b"0x80090020"
NTE_BAD_DATA = b"0x80090005"

# A little over four AES blocks, so that padding and chaining both matter.
MESSAGE = b"The quick brown fox jumps over the lazy dog; payroll.csv follows.\n!!"


# --- a small independent reader and writer (little-endian, per CRYPTOAPI-FORMATS.md) ---


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _header(blob: bytes, btype: int) -> int:
    """Check the 8-byte BLOBHEADER and return aiKeyAlg."""
    got_type, version, reserved, alg = struct.unpack_from("<BBHI", blob)
    assert (got_type, version, reserved) == (btype, 2, 0), blob[:8].hex()
    return alg  # type: ignore[no-any-return]


def read_public(blob: bytes) -> tuple[int, rsa.RSAPublicKey]:
    alg = _header(blob, PUBLICKEYBLOB)
    magic, bits, e = struct.unpack_from("<4sII", blob, 8)
    assert magic == b"RSA1"
    assert len(blob) == 20 + bits // 8
    return alg, rsa.RSAPublicNumbers(e, _le(blob[20:])).public_key()


def read_private(blob: bytes) -> tuple[int, rsa.RSAPrivateKey]:
    alg = _header(blob, PRIVATEKEYBLOB)
    magic, bits, e = struct.unpack_from("<4sII", blob, 8)
    assert magic == b"RSA2"
    k, h = bits // 8, (bits + 15) // 16
    assert len(blob) == 20 + 2 * k + 5 * h
    fields, at = [], 20
    for width in (k, h, h, h, h, h, k):
        fields.append(_le(blob[at : at + width]))
        at += width
    n, p, q, dp, dq, iqmp, d = fields
    numbers = rsa.RSAPrivateNumbers(p, q, d, dp, dq, iqmp, rsa.RSAPublicNumbers(e, n))
    return alg, numbers.private_key()  # cryptography checks that the values are consistent


def write_public(key: rsa.RSAPublicKey, alg: int = CALG_RSA_SIGN) -> bytes:
    numbers, k = key.public_numbers(), key.key_size // 8
    head = struct.pack("<BBHI4sII", PUBLICKEYBLOB, 2, 0, alg, b"RSA1", key.key_size, numbers.e)
    return head + numbers.n.to_bytes(k, "little")


def write_private(key: rsa.RSAPrivateKey, alg: int) -> bytes:
    priv, k, h = key.private_numbers(), key.key_size // 8, (key.key_size + 15) // 16
    pub = priv.public_numbers
    head = struct.pack("<BBHI4sII", PRIVATEKEYBLOB, 2, 0, alg, b"RSA2", key.key_size, pub.e)
    widths = ((pub.n, k), (priv.p, h), (priv.q, h), (priv.dmp1, h), (priv.dmq1, h))
    widths += ((priv.iqmp, h), (priv.d, k))
    return head + b"".join(value.to_bytes(width, "little") for value, width in widths)


def write_plaintextkeyblob(alg: int, key: bytes) -> bytes:
    return struct.pack("<BBHII", PLAINTEXTKEYBLOB, 2, 0, alg, len(key)) + key


def read_plaintextkeyblob(blob: bytes) -> tuple[int, bytes]:
    alg = _header(blob, PLAINTEXTKEYBLOB)
    (size,) = struct.unpack_from("<I", blob, 8)
    assert len(blob) == 12 + size
    return alg, blob[12:]


def build_simpleblob(alg: int, key: bytes, exchange: rsa.RSAPublicKey) -> bytes:
    wrapped = exchange.encrypt(key, PKCS1v15())
    return struct.pack("<BBHII", SIMPLEBLOB, 2, 0, alg, CALG_RSA_KEYX) + wrapped[::-1]


def open_simpleblob(blob: bytes, exchange: rsa.RSAPrivateKey) -> tuple[int, bytes]:
    alg = _header(blob, SIMPLEBLOB)
    (wrap_alg,) = struct.unpack_from("<I", blob, 8)
    assert wrap_alg == CALG_RSA_KEYX
    assert len(blob) == 12 + exchange.key_size // 8
    return alg, exchange.decrypt(blob[12:][::-1], PKCS1v15())


HASHES: dict[str, Any] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def capi_sign(key: rsa.RSAPrivateKey, hash_name: str, data: bytes) -> bytes:
    """What CryptSignHash writes: PKCS#1 v1.5 with DigestInfo, byte-reversed."""
    return key.sign(data, PKCS1v15(), HASHES[hash_name]())[::-1]


def capi_verify(key: rsa.RSAPublicKey, hash_name: str, data: bytes, sig: bytes) -> None:
    assert len(sig) == key.key_size // 8  # CryptSignHash keeps trailing zero bytes
    key.verify(sig[::-1], data, PKCS1v15(), HASHES[hash_name]())


# --- the session key algorithms under test ---


@dataclass(frozen=True)
class Session:
    name: str  # the peer's ALG argument
    alg_id: int
    key_len: int
    block: int  # 0: stream cipher

    def cipher(self, key: bytes, iv: bytes | None) -> Cipher[Any]:
        if self.block == 0:
            return Cipher(ARC4(key), mode=None)
        algorithm = algorithms.AES(key) if self.name.startswith("aes") else TripleDES(key)
        return Cipher(algorithm, modes.CBC(iv or bytes(self.block)))

    def encrypt(self, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
        if self.block:
            padder = padding.PKCS7(self.block * 8).padder()
            data = padder.update(data) + padder.finalize()
        enc = self.cipher(key, iv).encryptor()
        return enc.update(data) + enc.finalize()

    def decrypt(self, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
        dec = self.cipher(key, iv).decryptor()
        out = dec.update(data) + dec.finalize()
        if self.block:
            unpadder = padding.PKCS7(self.block * 8).unpadder()
            out = unpadder.update(out) + unpadder.finalize()
        return out


AES256 = Session("aes256", 0x6610, 32, 16)
DES3 = Session("3des", 0x6603, 24, 8)
RC4 = Session("rc4", 0x6801, 16, 0)
SESSIONS = pytest.mark.parametrize("session", [AES256, DES3, RC4], ids=lambda s: s.name)


# --- fixtures ---


@dataclass(frozen=True)
class PeerKeys:
    """Key pairs generated by the peer, as files and as cryptography objects."""

    exchange_priv: Path
    exchange_pub: Path
    signature_priv: Path
    signature_pub: Path
    exchange: rsa.RSAPrivateKey
    signature: rsa.RSAPrivateKey


@pytest.fixture(scope="session")
def peer_keys(capi_peer: CapiPeer, tmp_path_factory: pytest.TempPathFactory) -> PeerKeys:
    folder = tmp_path_factory.mktemp("capi-keys")
    kx, sg = folder / "kx.priv", folder / "sg.priv"
    capi_peer.check("genkeypair", kx, sg, "2048")
    capi_peer.check("export-public", kx, folder / "kx.pub")
    capi_peer.check("export-public", sg, folder / "sg.pub")
    return PeerKeys(
        kx,
        folder / "kx.pub",
        sg,
        folder / "sg.pub",
        read_private(kx.read_bytes())[1],
        read_private(sg.read_bytes())[1],
    )


@pytest.fixture(scope="module")
def trusted_signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    """A signature key made in Python, whose PUBLICKEYBLOB the peer is told to trust."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("signer") / "trusted.pub"
    path.write_bytes(write_public(key.public_key()))
    return key, path


# --- key blobs ---


def test_public_blobs_match_private_blobs(peer_keys: PeerKeys) -> None:
    for priv_path, pub_path, slot in (
        (peer_keys.exchange_priv, peer_keys.exchange_pub, CALG_RSA_KEYX),
        (peer_keys.signature_priv, peer_keys.signature_pub, CALG_RSA_SIGN),
    ):
        priv_blob, pub_blob = priv_path.read_bytes(), pub_path.read_bytes()
        assert (len(priv_blob), len(pub_blob)) == (1172, 276)
        priv_alg, priv = read_private(priv_blob)
        pub_alg, pub = read_public(pub_blob)
        assert priv_alg == pub_alg == slot
        assert pub.public_numbers() == priv.public_key().public_numbers()
        assert pub.public_numbers().e == 65537
        # Our writer emits exactly the bytes Wine exported.
        assert write_private(priv, slot) == priv_blob
        assert write_public(pub, slot) == pub_blob


def test_python_private_blob_round_trips_through_peer(capi_peer: CapiPeer, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    (tmp_path / "k.priv").write_bytes(write_private(key, CALG_RSA_KEYX))
    capi_peer.check("export-public", tmp_path / "k.priv", tmp_path / "k.pub")
    assert (tmp_path / "k.pub").read_bytes() == write_public(key.public_key(), CALG_RSA_KEYX)


# --- signatures ---


@pytest.mark.parametrize("hash_name", list(HASHES))
def test_peer_signature_verifies_in_python(
    capi_peer: CapiPeer, peer_keys: PeerKeys, tmp_path: Path, hash_name: str
) -> None:
    (tmp_path / "data").write_bytes(MESSAGE)
    for priv_path, key in (
        (peer_keys.signature_priv, peer_keys.signature),
        (peer_keys.exchange_priv, peer_keys.exchange),
    ):
        capi_peer.check("sign", priv_path, hash_name, tmp_path / "data", tmp_path / "sig")
        sig = (tmp_path / "sig").read_bytes()
        capi_verify(key.public_key(), hash_name, MESSAGE, sig)
        # PKCS#1 v1.5 is deterministic: the same bytes as cryptography's signature.
        assert sig == capi_sign(key, hash_name, MESSAGE)


def test_peer_nohashoid_signature_is_the_bare_digest(
    capi_peer: CapiPeer, peer_keys: PeerKeys, tmp_path: Path
) -> None:
    (tmp_path / "data").write_bytes(MESSAGE)
    capi_peer.check(
        "sign", peer_keys.signature_priv, "sha1:nooid", tmp_path / "data", tmp_path / "sig"
    )
    sig = (tmp_path / "sig").read_bytes()
    recovered = peer_keys.signature.public_key().recover_data_from_signature(
        sig[::-1], PKCS1v15(), None
    )
    assert recovered == hashlib.sha1(MESSAGE).digest()
    capi_peer.check(
        "verify", peer_keys.signature_pub, "sha1:nooid", tmp_path / "data", tmp_path / "sig"
    )


@pytest.mark.parametrize("hash_name", list(HASHES))
def test_python_signature_verifies_in_peer(
    capi_peer: CapiPeer,
    trusted_signer: tuple[rsa.RSAPrivateKey, Path],
    tmp_path: Path,
    hash_name: str,
) -> None:
    key, pub_path = trusted_signer
    (tmp_path / "data").write_bytes(MESSAGE)
    (tmp_path / "sig").write_bytes(capi_sign(key, hash_name, MESSAGE))
    capi_peer.check("verify", pub_path, hash_name, tmp_path / "data", tmp_path / "sig")

    (tmp_path / "data").write_bytes(MESSAGE + b".")
    result = capi_peer.run("verify", pub_path, hash_name, tmp_path / "data", tmp_path / "sig")
    assert result.returncode == EXIT_BAD_SIGNATURE
    assert NTE_BAD_SIGNATURE in result.stderr


# --- the procedure: peer exports, Python imports ---


@SESSIONS
def test_peer_session_opens_in_python(
    capi_peer: CapiPeer, peer_keys: PeerKeys, tmp_path: Path, session: Session
) -> None:
    (tmp_path / "msg").write_bytes(MESSAGE)
    blob, sig, ct = tmp_path / "key.simpleblob", tmp_path / "key.sig", tmp_path / "msg.ct"
    capi_peer.check(
        "make-session",
        session.name,
        peer_keys.exchange_pub,
        peer_keys.signature_priv,
        "sha256",
        blob,
        sig,
        tmp_path / "msg",
        ct,
    )
    blob_bytes = blob.read_bytes()
    assert len(blob_bytes) == 12 + 256
    # 1. the signature over the SIMPLEBLOB bytes, as CryptSignHash made it
    capi_verify(peer_keys.signature.public_key(), "sha256", blob_bytes, sig.read_bytes())
    # 2. the wrapped key
    alg, key = open_simpleblob(blob_bytes, peer_keys.exchange)
    assert (alg, len(key)) == (session.alg_id, session.key_len)
    # 3. the data
    ciphertext = ct.read_bytes()
    expected_len = (
        len(MESSAGE) if not session.block else (len(MESSAGE) // session.block + 1) * session.block
    )
    assert len(ciphertext) == expected_len
    assert session.decrypt(key, ciphertext) == MESSAGE
    # The key bytes inside the SIMPLEBLOB are in the PLAINTEXTKEYBLOB's (natural) order.
    capi_peer.check("unwrap", peer_keys.exchange_priv, blob, tmp_path / "key.plain")
    assert read_plaintextkeyblob((tmp_path / "key.plain").read_bytes()) == (session.alg_id, key)


# --- the procedure: Python exports, peer imports, and the cure refuses substitutes ---


def _python_session(
    session: Session,
    exchange: rsa.RSAPublicKey,
    signer: rsa.RSAPrivateKey,
    folder: Path,
    key: bytes | None = None,
) -> tuple[Path, Path, Path]:
    key = key or os.urandom(session.key_len)
    blob = build_simpleblob(session.alg_id, key, exchange)
    paths = folder / "key.simpleblob", folder / "key.sig", folder / "msg.ct"
    paths[0].write_bytes(blob)
    paths[1].write_bytes(capi_sign(signer, "sha256", blob))
    paths[2].write_bytes(session.encrypt(key, MESSAGE))
    return paths


@SESSIONS
def test_python_session_opens_in_peer(
    capi_peer: CapiPeer,
    peer_keys: PeerKeys,
    trusted_signer: tuple[rsa.RSAPrivateKey, Path],
    tmp_path: Path,
    session: Session,
) -> None:
    signer, signer_pub = trusted_signer
    blob, sig, ct = _python_session(session, peer_keys.exchange.public_key(), signer, tmp_path)
    out = tmp_path / "msg.out"
    capi_peer.check(
        "open-session", peer_keys.exchange_priv, signer_pub, "sha256", blob, sig, ct, out
    )
    assert out.read_bytes() == MESSAGE


@SESSIONS
def test_peer_refuses_tampered_simpleblob(
    capi_peer: CapiPeer,
    peer_keys: PeerKeys,
    trusted_signer: tuple[rsa.RSAPrivateKey, Path],
    tmp_path: Path,
    session: Session,
) -> None:
    signer, signer_pub = trusted_signer
    blob, sig, ct = _python_session(session, peer_keys.exchange.public_key(), signer, tmp_path)
    for offset in (4, 100):  # the session ALG_ID, and a byte of the wrapped key
        tampered = bytearray(blob.read_bytes())
        tampered[offset] ^= 0x01
        (tmp_path / "bad.simpleblob").write_bytes(tampered)
        out = tmp_path / "msg.out"
        result = capi_peer.run(
            "open-session",
            peer_keys.exchange_priv,
            signer_pub,
            "sha256",
            tmp_path / "bad.simpleblob",
            sig,
            ct,
            out,
        )
        assert result.returncode == EXIT_BAD_SIGNATURE, result.stderr
        assert NTE_BAD_SIGNATURE in result.stderr
        assert not out.exists()


@SESSIONS
def test_peer_refuses_substituted_simpleblob(
    capi_peer: CapiPeer,
    peer_keys: PeerKeys,
    trusted_signer: tuple[rsa.RSAPrivateKey, Path],
    tmp_path: Path,
    session: Session,
) -> None:
    """The attack the procedure names: a new key wrapped under the public exchange key."""
    _, signer_pub = trusted_signer
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_key = os.urandom(session.key_len)
    blob, sig, ct = _python_session(
        session, peer_keys.exchange.public_key(), attacker, tmp_path, attacker_key
    )
    out = tmp_path / "msg.out"
    result = capi_peer.run(
        "open-session", peer_keys.exchange_priv, signer_pub, "sha256", blob, sig, ct, out
    )
    assert result.returncode == EXIT_BAD_SIGNATURE, result.stderr
    assert NTE_BAD_SIGNATURE in result.stderr or NTE_FAIL in result.stderr
    assert not out.exists()
    # Without the signature check, CryptoAPI takes the substitute without complaint: the
    # hole is real, and only the check closes it.
    capi_peer.check("unwrap", peer_keys.exchange_priv, blob, tmp_path / "key.plain")
    plain = read_plaintextkeyblob((tmp_path / "key.plain").read_bytes())
    assert plain == (session.alg_id, attacker_key)


def test_peer_refuses_garbage_simpleblob_on_import(
    capi_peer: CapiPeer, peer_keys: PeerKeys, tmp_path: Path
) -> None:
    # RSA input 1 decrypts to 1: no 00 02 prefix, so the unwrap itself must fail.
    blob = struct.pack("<BBHII", SIMPLEBLOB, 2, 0, AES256.alg_id, CALG_RSA_KEYX)
    blob += (1).to_bytes(256, "little")
    (tmp_path / "bad.simpleblob").write_bytes(blob)
    result = capi_peer.run(
        "unwrap", peer_keys.exchange_priv, tmp_path / "bad.simpleblob", tmp_path / "key.plain"
    )
    assert result.returncode == EXIT_BAD_IMPORT
    assert NTE_BAD_DATA in result.stderr
    assert not (tmp_path / "key.plain").exists()


# --- data: CryptEncrypt / CryptDecrypt with default parameters and with KP_IV ---


@SESSIONS
@pytest.mark.parametrize("length", [0, 15, 16, 68])
def test_data_both_directions(
    capi_peer: CapiPeer, tmp_path: Path, session: Session, length: int
) -> None:
    key, data = os.urandom(session.key_len), os.urandom(length)
    keyfile = tmp_path / "key.plain"
    keyfile.write_bytes(write_plaintextkeyblob(session.alg_id, key))
    (tmp_path / "data").write_bytes(data)
    capi_peer.check("encrypt", keyfile, tmp_path / "data", tmp_path / "ct")
    ct = (tmp_path / "ct").read_bytes()
    assert ct == session.encrypt(key, data)
    assert session.decrypt(key, ct) == data
    (tmp_path / "ct2").write_bytes(session.encrypt(key, data))
    capi_peer.check("decrypt", keyfile, tmp_path / "ct2", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data


@pytest.mark.parametrize("session", [AES256, DES3], ids=lambda s: s.name)
def test_data_with_iv(capi_peer: CapiPeer, tmp_path: Path, session: Session) -> None:
    key, iv = os.urandom(session.key_len), os.urandom(session.block)
    keyfile = tmp_path / "key.plain"
    keyfile.write_bytes(write_plaintextkeyblob(session.alg_id, key))
    (tmp_path / "data").write_bytes(MESSAGE)
    capi_peer.check("encrypt", keyfile, tmp_path / "data", tmp_path / "ct", iv.hex())
    assert (tmp_path / "ct").read_bytes() == session.encrypt(key, MESSAGE, iv)
    (tmp_path / "ct2").write_bytes(session.encrypt(key, MESSAGE, iv))
    capi_peer.check("decrypt", keyfile, tmp_path / "ct2", tmp_path / "back", iv.hex())
    assert (tmp_path / "back").read_bytes() == MESSAGE
    # An IV of the wrong length is a usage error, not something CryptoAPI half-reads.
    result = capi_peer.run("encrypt", keyfile, tmp_path / "data", tmp_path / "x", iv.hex() + "00")
    assert result.returncode == EXIT_USAGE


@pytest.mark.parametrize("session", [AES256, DES3], ids=lambda s: s.name)
def test_session_with_iv(
    capi_peer: CapiPeer, peer_keys: PeerKeys, tmp_path: Path, session: Session
) -> None:
    iv = os.urandom(session.block)
    (tmp_path / "msg").write_bytes(MESSAGE)
    blob, sig, ct = tmp_path / "key.simpleblob", tmp_path / "key.sig", tmp_path / "msg.ct"
    capi_peer.check(
        "make-session",
        session.name,
        peer_keys.exchange_pub,
        peer_keys.signature_priv,
        "sha1",
        blob,
        sig,
        tmp_path / "msg",
        ct,
        iv.hex(),
    )
    _, key = open_simpleblob(blob.read_bytes(), peer_keys.exchange)
    assert session.decrypt(key, ct.read_bytes(), iv) == MESSAGE
    out = tmp_path / "msg.out"
    capi_peer.check(
        "open-session",
        peer_keys.exchange_priv,
        peer_keys.signature_pub,
        "sha1",
        blob,
        sig,
        ct,
        out,
        iv.hex(),
    )
    assert out.read_bytes() == MESSAGE


def test_rc4_takes_no_iv(capi_peer: CapiPeer, tmp_path: Path) -> None:
    keyfile = tmp_path / "key.plain"
    keyfile.write_bytes(write_plaintextkeyblob(RC4.alg_id, os.urandom(16)))
    (tmp_path / "data").write_bytes(MESSAGE)
    result = capi_peer.run("encrypt", keyfile, tmp_path / "data", tmp_path / "ct", "00" * 8)
    assert result.returncode == EXIT_USAGE


def test_peer_refuses_bad_padding(capi_peer: CapiPeer, tmp_path: Path) -> None:
    key = os.urandom(32)
    keyfile = tmp_path / "key.plain"
    keyfile.write_bytes(write_plaintextkeyblob(AES256.alg_id, key))
    enc = AES256.cipher(key, None).encryptor()
    (tmp_path / "ct").write_bytes(enc.update(b"\x00" * 32) + enc.finalize())  # pad byte 0
    result = capi_peer.run("decrypt", keyfile, tmp_path / "ct", tmp_path / "out")
    assert result.returncode == EXIT_BAD_DECRYPT
    assert NTE_BAD_DATA in result.stderr
    assert not (tmp_path / "out").exists()


def test_peer_usage_errors(capi_peer: CapiPeer, tmp_path: Path) -> None:
    assert capi_peer.run().returncode == EXIT_USAGE
    assert capi_peer.run("sign", "a", "b").returncode == EXIT_USAGE
    result = capi_peer.run("gen-session", "aes999", tmp_path / "k")
    assert result.returncode == EXIT_USAGE
    assert b"aes999" in result.stderr
    result = capi_peer.run("gen-session", "aes256", tmp_path / "k")
    assert result.returncode == EXIT_OK
    assert read_plaintextkeyblob((tmp_path / "k").read_bytes())[0] == AES256.alg_id
