"""A second reader of keyblob v1, written from docs/FORMAT.md alone.

It shares no code with the ``keyblob`` package (it must not import it): it dearmors, parses,
rebuilds the signed message and the wrap contexts, checks trust, signature, request and
rollback, and unwraps with pyca ``cryptography`` (the pq suite's X-Wing decapsulation and
RFC 9180 key schedule are written out here from ML-KEM-768, X25519, SHA3-256 and HMAC, not
taken from ``cryptography``'s HPKE); and it decrypts encrypted data (section 7:
the data header, then the C2SP chunked-encryption payload) with HKDF-Expand and the AEADs of
``cryptography``.  Every refusal is a :class:`Refused` with the result class and the import
or decryption step (the manifests' ``result`` and ``stage``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import unicodedata
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed25519,
    mldsa,
    mlkem,
    padding,
    rsa,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

KEY_ID_LABEL = b"keyblob/v1/key-id\x00"  # 1.3
FINGERPRINT_LABEL = b"keyblob/v1/fingerprint\x00"  # 3.1
WRAP_LABEL = b"keyblob/v1/wrap\x00"  # 2.4
SIGNATURE_LABEL = b"keyblob/v1/blob-signature\x00"  # 2.5
PUBKEY_LABEL_LABEL = b"keyblob/v1/pubkey-label\x00"  # 3.2
# 1.5: code points a label must not hold (C0, DEL, C1, invisible and bidi formatting,
# line and paragraph separators)
LABEL_REFUSED = {
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    *range(0x200B, 0x2010),
    *range(0x2028, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x206A),
    0xFEFF,
}
X25519, RSA, PQ, P256 = 1, 2, 3, 4  # 1.2
# algorithm code -> the key lengths it allows (1.2); 16-23 are CryptoAPI session keys
KEY_LENGTHS = {1: {32}, 2: {16}, 3: {32}, 16: {16}, 17: {24}, 18: {32}, 19: {24}, 20: {16}}
KEY_LENGTHS |= {21: {8}, 22: set(range(5, 65)), 23: set(range(5, 17))}
EXCHANGE, SIGNATURE = 1, 2
RSA_LENGTHS = (256, 384, 512)
# 1.3, 2.5: P-256 field prime and group order (SEC 2 2.4.2)
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# 1.3: edwards25519 points refused as a signature key or as a signature's R: the eight of
# order dividing 8, compared with bit 255 cleared; and any y >= p.  2.5: S < L.
P25519 = 2**255 - 19
ED25519_L = 2**252 + 27742317777372353535851937790883648493
TORSION_HEX = """
0100000000000000000000000000000000000000000000000000000000000000
ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000080
26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05
26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85
c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a
c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa
"""
TORSION = {bytes.fromhex(line) for line in TORSION_HEX.split()}
# 1.2, 1.3, 2.4, 2.5: the pq suite's sizes
PQ_ENC, PQ_EXCHANGE_KEY, PQ_SIGNATURE_KEY, PQ_SIGNATURE = 1120, 1216, 1984, 3373
MLKEM_Q = 3329
XWING_LABEL = b"\\.//^\\"  # 5c 2e 2f 2f 5e 5c
PQ_SUITE_ID = b"HPKE" + bytes([0x64, 0x7A, 0x00, 0x01, 0x00, 0x02])  # KEM 0x647a, KDF 1, AEAD 2
MAX_BLOB, MAX_ARMOR, MAX_PUBLIC_FILE = 32768, 65536, 8192  # 2.8, 4, 3
NAME_FIRST = set("abcdefghijklmnopqrstuvwxyz0123456789")
NAME_REST = NAME_FIRST | set("._-")


class Refused(Exception):
    def __init__(self, result: str, stage: str, why: str) -> None:
        super().__init__(f"{result} at {stage}: {why}")
        self.result = result
        self.stage = stage


def malformed(why: str) -> Refused:
    return Refused("format_error", "parse", why)


# -- 1.3, 1.4 ----------------------------------------------------------------------------------


def key_id(suite: int, role: int, public: bytes) -> bytes:
    return hashlib.sha256(KEY_ID_LABEL + bytes([suite, role]) + public).digest()[:16]


def fingerprint(suite: int, exchange: bytes, signature: bytes) -> bytes:
    """3.1: over both keys, each with its u16 length."""
    body = len(exchange).to_bytes(2, "big") + exchange + len(signature).to_bytes(2, "big")
    return hashlib.sha256(FINGERPRINT_LABEL + bytes([suite]) + body + signature).digest()[:16]


@dataclass(frozen=True)
class PqExchange:
    """A pq exchange private key (1.3): the 32-byte X-Wing seed, expanded by SHAKE256 to
    the ML-KEM-768 seed d || z and the X25519 private key."""

    seed: bytes

    def parts(self) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
        expanded = hashlib.shake_256(self.seed).digest(96)
        return (
            mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
            x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
        )

    def public_key(self) -> bytes:
        kem, dh = self.parts()
        return kem.public_key().public_bytes_raw() + dh.public_key().public_bytes_raw()


@dataclass(frozen=True)
class PqSignaturePublic:
    """A pq signature public key (1.3): ML-DSA-65 (1952 bytes) || Ed25519 (32 bytes)."""

    raw: bytes


def pq_signature_public(seeds: bytes) -> PqSignaturePublic:
    """From the 64-byte private key of 1.3: the ML-DSA-65 seed, then the Ed25519 key."""
    lattice = mldsa.MLDSA65PrivateKey.from_seed_bytes(seeds[:32]).public_key()
    classic = ed25519.Ed25519PrivateKey.from_private_bytes(seeds[32:]).public_key()
    return PqSignaturePublic(lattice.public_bytes_raw() + classic.public_bytes_raw())


def public_bytes(key: object) -> bytes:
    if isinstance(key, bytes):
        return key  # a pq exchange public key, as PqExchange.public_key() gives it
    if isinstance(key, PqSignaturePublic):
        return key.raw
    if isinstance(key, ec.EllipticCurvePublicKey):
        nums = key.public_numbers()
        return b"\x04" + nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    assert isinstance(key, x25519.X25519PublicKey | ed25519.Ed25519PublicKey)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def name_ok(raw: bytes) -> bool:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return False
    return 1 <= len(text) <= 128 and text[0] in NAME_FIRST and set(text) <= NAME_REST


def ed25519_point_ok(b: bytes) -> bool:
    """1.3: canonical (y < p) and not of small order (bit 255 cleared, not in TORSION)."""
    y = int.from_bytes(b, "little") % 2**255
    cleared = y.to_bytes(32, "little")
    return len(b) == 32 and y < P25519 and cleared not in TORSION


def x25519_key_ok(b: bytes) -> bool:
    """1.3: bit 255 clear, u < p, and not low order (X25519 with any key is not all zero)."""
    if len(b) != 32 or int.from_bytes(b, "little") >= P25519:  # covers bit 255 too
        return False
    try:
        x25519.X25519PrivateKey.generate().exchange(x25519.X25519PublicKey.from_public_bytes(b))
    except ValueError:
        return False
    return True


def p256_key(b: bytes) -> ec.EllipticCurvePublicKey | None:
    """1.3: 04 || x || y, x and y below p, and y^2 = x^3 - 3x + b (checked here by hand)."""
    if len(b) != 65 or b[0] != 4:
        return None
    x, y = int.from_bytes(b[1:33], "big"), int.from_bytes(b[33:], "big")
    curve_b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    if x >= P256_P or y >= P256_P or (y * y - x**3 + 3 * x - curve_b) % P256_P:
        return None
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def mlkem768_key_ok(b: bytes) -> bool:
    """1.3 (FIPS 203 7.2): 1184 bytes; each 12-bit coefficient of the first 1152 below q."""
    if len(b) != 1184:
        return False
    bits = int.from_bytes(b[:1152], "little")
    return all((bits >> (12 * i)) & 0xFFF < MLKEM_Q for i in range(768))


def pq_exchange_key_ok(b: bytes) -> bool:
    return len(b) == PQ_EXCHANGE_KEY and mlkem768_key_ok(b[:1184]) and x25519_key_ok(b[1184:])


def pq_signature_key_ok(b: bytes) -> bool:
    return len(b) == PQ_SIGNATURE_KEY and ed25519_point_ok(b[1952:])


def pq_verify(key: bytes, sig: bytes, message: bytes) -> None:
    """2.5: ML-DSA-65 (empty context) over the message, and Ed25519 with the R and S rules,
    both; else InvalidSignature."""
    if len(sig) != PQ_SIGNATURE or not pq_signature_key_ok(key):
        raise InvalidSignature
    classic = sig[3309:]
    if not ed25519_point_ok(classic[:32]) or int.from_bytes(classic[32:], "little") >= ED25519_L:
        raise InvalidSignature
    ed25519.Ed25519PublicKey.from_public_bytes(key[1952:]).verify(classic, message)
    mldsa.MLDSA65PublicKey.from_public_bytes(key[:1952]).verify(sig[:3309], message, b"")


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _hkdf_extract(salt, b"HPKE-v1" + PQ_SUITE_ID + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + PQ_SUITE_ID + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def pq_unwrap(private: PqExchange, wrapped: bytes, info: bytes) -> bytes:
    """2.4: X-Wing Decap (ML-KEM-768 decapsulation, X25519, SHA3-256 combiner), then RFC
    9180 base mode's key schedule and the AES-256-GCM open, aad empty."""
    kem, dh = private.parts()
    ct_m, ct_x, ciphertext = wrapped[:1088], wrapped[1088:PQ_ENC], wrapped[PQ_ENC:]
    ss_m = kem.decapsulate(ct_m)
    ss_x = dh.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = dh.public_key().public_bytes_raw()
    shared = hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()
    context = (
        b"\x00"
        + _labeled_extract(b"", b"psk_id_hash", b"")
        + _labeled_extract(b"", b"info_hash", info)
    )
    secret = _labeled_extract(shared, b"secret", b"")
    key = _labeled_expand(secret, b"key", context, 32)
    nonce = _labeled_expand(secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(nonce, ciphertext, b"")


def p256_verify(key: ec.EllipticCurvePublicKey, sig: bytes, message: bytes) -> None:
    """2.5: r || s, 32 bytes each, 0 < r < n, 0 < s <= (n - 1) / 2; else InvalidSignature."""
    if len(sig) != 64:
        raise InvalidSignature
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < P256_N and 0 < s <= (P256_N - 1) // 2):
        raise InvalidSignature
    key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))


# -- 4 armor -----------------------------------------------------------------------------------


def dearmor(data: bytes, kind: str) -> bytes:
    if len(data) > MAX_ARMOR:
        raise malformed("armor over 65536 bytes")
    try:
        text = data.decode("ascii").strip(" \t\r\n")
    except UnicodeDecodeError:
        raise malformed("armor is not ASCII") from None
    lines = text.split("\n")
    if (
        len(lines) < 3
        or lines[0] != f"-----BEGIN {kind}-----"
        or lines[-1] != f"-----END {kind}-----"
    ):
        raise malformed("armor BEGIN/END lines")
    body = "".join(lines[1:-1])
    try:
        decoded = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise malformed("armor base64") from None
    b64 = base64.b64encode(decoded).decode()
    canonical = [f"-----BEGIN {kind}-----", *(b64[i : i + 64] for i in range(0, len(b64), 64))]
    if "\n".join([*canonical, f"-----END {kind}-----"]) != text:
        raise malformed("armor not canonical")
    return decoded


# -- 2 the key blob ----------------------------------------------------------------------------


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if len(self.data) - self.pos < n:
            raise malformed(f"truncated at {self.pos}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")


@dataclass
class Blob:
    suite: int
    algorithm: int
    generation: int
    created: int
    key_id: bytes
    signer_id: bytes
    name: str
    revision: int
    recipients: list[tuple[bytes, bytes]]
    signature: bytes
    core_header: bytes
    signed_part: bytes


def wrapped_len_ok(suite: int, algorithm: int, n: int) -> bool:
    if suite == P256:
        return n - 65 - 16 in KEY_LENGTHS[algorithm]
    if suite == PQ:
        return n - PQ_ENC - 16 in KEY_LENGTHS[algorithm]
    return n - 32 - 16 in KEY_LENGTHS[algorithm] if suite == X25519 else n in RSA_LENGTHS


def parse_blob(data: bytes) -> Blob:
    """2.1-2.3 and 2.8."""
    if data.lstrip(b" \t\r\n").startswith(b"-----BEGIN "):
        data = dearmor(data, "KEYBLOB")
    if len(data) > MAX_BLOB:
        raise malformed("over 32768 bytes")
    c = _Cursor(data)
    if c.take(4) != b"KBLB":
        raise malformed("magic")
    if c.int(1) != 1:
        raise Refused("unsupported", "parse", "version")
    suite = c.int(1)
    if suite not in (X25519, RSA, PQ, P256):
        raise malformed("suite")
    algorithm = c.int(1)
    if algorithm not in KEY_LENGTHS:
        raise malformed("algorithm")
    flags = c.int(1)
    if flags not in (0, 1):  # 2.2.5: only bit 0 is assigned
        raise malformed("flags")
    generation = c.int(8)
    if not 1 <= generation < 2**63:
        raise malformed("generation")
    created = c.int(8)
    if created >= 2**63:
        raise malformed("created")
    kid, signer = c.take(16), c.take(16)
    n = c.int(1)
    if not 1 <= n <= 128:
        raise malformed("name_len")
    raw_name = c.take(n)
    if not name_ok(raw_name):
        raise malformed("name")
    revision = 0
    if flags == 1:  # 2.2.11: revision follows the name, 1 to 2**32-1
        revision = c.int(4)
        if revision == 0:
            raise malformed("revision 0 with flags bit 0")
    core_end = c.pos
    count = c.int(1)
    if not 1 <= count <= 16:
        raise malformed("recipient_count")
    recipients: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        rid = c.take(16)
        if any(rid == r for r, _ in recipients):
            raise malformed("duplicate recipient")
        w = c.int(2)
        if not wrapped_len_ok(suite, algorithm, w):
            raise malformed("wrapped_len")
        recipients.append((rid, c.take(w)))
    signed_end = c.pos
    s = c.int(2)
    if not (
        s == 64
        if suite in (X25519, P256)
        else s == PQ_SIGNATURE
        if suite == PQ
        else s in RSA_LENGTHS
    ):
        raise malformed("signature_len")
    signature = c.take(s)
    if c.pos != len(data):
        raise malformed("trailing bytes")
    return Blob(
        suite,
        algorithm,
        generation,
        created,
        kid,
        signer,
        raw_name.decode("ascii"),
        revision,
        recipients,
        signature,
        data[:core_end],
        data[:signed_end],
    )


def wrap_context(blob: Blob, recipient_id: bytes) -> bytes:
    return WRAP_LABEL + blob.core_header + recipient_id


def signed_message(blob: Blob) -> bytes:
    return SIGNATURE_LABEL + blob.signed_part


_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_HPKE_P256 = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_SHA256 = hashes.SHA256()


def _rsa_ok(key: rsa.RSAPublicKey) -> bool:
    return key.key_size in (2048, 3072, 4096) and key.public_numbers().e == 65537


@dataclass
class Container:
    """What the importer holds: its suite, private keys, trust list and high-water marks."""

    suite: int
    exchange: x25519.X25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | PqExchange
    signature_public: (
        ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey | PqSignaturePublic
    )
    trusted: list[
        ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey | PqSignaturePublic
    ]
    high_water: dict[str, int]
    # (name, generation) -> the highest revision seen (2.7 step 5)
    revisions: dict[tuple[str, int], int] = field(default_factory=dict)


def open_blob(data: bytes, box: Container, *, name: str | None = None) -> tuple[Blob, bytes]:
    """2.7 steps 1-6 for a blob given directly; returns the blob and the session key."""
    blob = parse_blob(data)  # 1
    if blob.suite != box.suite:  # 2
        raise Refused("verification_error", "trust", "another suite")
    signers = {
        key_id(box.suite, SIGNATURE, public_bytes(k)): k
        for k in [box.signature_public, *box.trusted]
    }
    signer = signers.get(blob.signer_id)
    if signer is None:
        raise Refused("verification_error", "trust", "untrusted signer")
    try:  # 3
        if isinstance(signer, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(_SHA256), salt_length=32)
            signer.verify(blob.signature, signed_message(blob), pss, _SHA256)
        elif isinstance(signer, ec.EllipticCurvePublicKey):
            p256_verify(signer, blob.signature, signed_message(blob))
        elif isinstance(signer, PqSignaturePublic):
            pq_verify(signer.raw, blob.signature, signed_message(blob))
        else:
            r, s = blob.signature[:32], int.from_bytes(blob.signature[32:], "little")
            if not (ed25519_point_ok(public_bytes(signer)) and ed25519_point_ok(r)):
                raise InvalidSignature
            if s >= ED25519_L:
                raise InvalidSignature
            signer.verify(blob.signature, signed_message(blob))
    except InvalidSignature:
        raise Refused("verification_error", "signature", "bad signature") from None
    if name is not None and blob.name != name:  # 4
        raise Refused("verification_error", "request", "wrong name")
    if blob.generation < box.high_water.get(blob.name, 0):  # 5
        raise Refused("verification_error", "rollback", "rolled back")
    if blob.revision < box.revisions.get((blob.name, blob.generation), 0):  # 5, revision
        raise Refused("verification_error", "rollback", "older revision")
    own = key_id(box.suite, EXCHANGE, public_bytes(box.exchange.public_key()))  # 6
    mine = [w for rid, w in blob.recipients if rid == own]
    if not mine:
        raise Refused("verification_error", "unwrap", "not a recipient")
    context = wrap_context(blob, own)
    try:
        if isinstance(box.exchange, rsa.RSAPrivateKey):
            oaep = padding.OAEP(mgf=padding.MGF1(_SHA256), algorithm=_SHA256, label=context)
            key = box.exchange.decrypt(mine[0], oaep)
        elif isinstance(box.exchange, ec.EllipticCurvePrivateKey):
            if p256_key(mine[0][:65]) is None:  # enc: a point 1.3 accepts
                raise ValueError("enc")
            key = _HPKE_P256.decrypt(mine[0], box.exchange, info=context)
        elif isinstance(box.exchange, PqExchange):
            key = pq_unwrap(box.exchange, mine[0], context)
        else:
            key = _HPKE.decrypt(mine[0], box.exchange, info=context)
    except (InvalidTag, ValueError):
        raise Refused("verification_error", "unwrap", "unwrap failed") from None
    if len(key) not in KEY_LENGTHS[blob.algorithm]:
        raise Refused("verification_error", "unwrap", "key length")
    return blob, key


# -- 3 the public key file ---------------------------------------------------------------------


@dataclass
class PublicKeys:
    version: int
    suite: int
    label: str
    exchange: bytes
    signature: bytes


def label_ok(raw: bytes) -> bool:
    """1.5: 1 to 200 bytes of UTF-8 in NFC, no refused code point, no space at either end."""
    try:
        text = raw.decode("utf-8")  # strict: refuses overlong forms and surrogates
    except UnicodeDecodeError:
        return False
    return (
        1 <= len(raw) <= 200
        and not any(ord(c) in LABEL_REFUSED for c in text)
        and text[0] != " "
        and text[-1] != " "
        and unicodedata.normalize("NFC", text) == text
    )


def _verify_label(suite: int, signature_key: bytes, signed: bytes, sig: bytes) -> None:
    """3.2: the label signature, verified as 2.5 verifies a blob signature."""
    message = PUBKEY_LABEL_LABEL + signed
    try:
        if suite == RSA:
            key = serialization.load_der_public_key(signature_key)
            assert isinstance(key, rsa.RSAPublicKey)
            pss = padding.PSS(mgf=padding.MGF1(_SHA256), salt_length=32)
            key.verify(sig, message, pss, _SHA256)
        elif suite == P256:
            public = p256_key(signature_key)
            assert public is not None
            p256_verify(public, sig, message)
        elif suite == PQ:
            pq_verify(signature_key, sig, message)
        else:
            r, s = sig[:32], int.from_bytes(sig[32:], "little")
            if not ed25519_point_ok(r) or s >= ED25519_L:
                raise InvalidSignature
            ed25519.Ed25519PublicKey.from_public_bytes(signature_key).verify(sig, message)
    except InvalidSignature:
        raise Refused("verification_error", "label", "label signature") from None


def parse_public_key_file(data: bytes) -> PublicKeys:
    """3, then the key checks of 1.2/1.3 (stage ``key``), then for version 2 the label
    signature of 3.2 (stage ``label``)."""
    if data.lstrip(b" \t\r\n").startswith(b"-----BEGIN "):
        data = dearmor(data, "KEYBLOB PUBLIC KEY")
    if len(data) > MAX_PUBLIC_FILE:
        raise malformed("over 8192 bytes")
    c = _Cursor(data)
    if c.take(4) != b"KBPK":
        raise malformed("magic")
    version = c.int(1)
    if version not in (1, 2):
        raise Refused("unsupported", "parse", "version")
    suite = c.int(1)
    if suite not in (X25519, RSA, PQ, P256):
        raise malformed("suite")
    if c.int(2) != 0:
        raise malformed("reserved")
    label = c.take(c.int(1))
    if not (name_ok(label) if version == 1 else label_ok(label)):
        raise malformed("label")
    keys = []
    for role in (EXCHANGE, SIGNATURE):
        n = c.int(2)
        pq = PQ_EXCHANGE_KEY if role == EXCHANGE else PQ_SIGNATURE_KEY
        if not (n == {X25519: 32, P256: 65, PQ: pq}.get(suite, n) and 1 <= n <= max(pq, 1024)):
            raise malformed("key length")
        if suite == RSA and n > 1024:
            raise malformed("key length")
        keys.append(c.take(n))
    signed_end = c.pos
    label_signature = b""
    if version == 2:
        n = c.int(2)
        if n not in (
            (64,) if suite in (X25519, P256) else (PQ_SIGNATURE,) if suite == PQ else RSA_LENGTHS
        ):
            raise malformed("label signature length")
        label_signature = c.take(n)
    if c.pos != len(data):
        raise malformed("trailing bytes")
    if suite == RSA:
        for raw in keys:
            try:
                key = serialization.load_der_public_key(raw)
            except ValueError:
                raise Refused("format_error", "key", "not DER") from None
            if not isinstance(key, rsa.RSAPublicKey) or not _rsa_ok(key):
                raise Refused(
                    "format_error", "key", "not an RSA key of the allowed sizes, e = 65537"
                )
    elif suite == P256:
        if p256_key(keys[0]) is None or p256_key(keys[1]) is None:
            raise Refused("format_error", "key", "not an uncompressed P-256 point on the curve")
    elif suite == PQ:
        if not pq_exchange_key_ok(keys[0]):
            raise Refused(
                "format_error", "key", "ML-KEM-768 coefficient >= q, or a bad X25519 half"
            )
        if not pq_signature_key_ok(keys[1]):
            raise Refused("format_error", "key", "a small-order or non-canonical Ed25519 half")
    elif not x25519_key_ok(keys[0]):
        raise Refused("format_error", "key", "not a canonical, full-order X25519 key")
    elif not ed25519_point_ok(keys[1]):
        raise Refused("format_error", "key", "a small-order or non-canonical Ed25519 key")
    if version == 2:
        _verify_label(suite, keys[1], data[:signed_end], label_signature)
    return PublicKeys(version, suite, label.decode("utf-8"), keys[0], keys[1])


# -- 7 encrypted data --------------------------------------------------------------------------

DATA_MAGIC = b"KBDT"  # 7.1
DATA_CONTEXT_LABEL = b"keyblob/v1/data\x00"  # 7.2
CHUNKED_LABEL = b"c2sp.org/chunked-encryption@v1+"  # 7.2
#: algorithm code (1.2) -> (AEAD name in the KDF info, Nk, AEAD class)  (7.2)
DATA_AEADS: dict[int, tuple[bytes, int, type[AESGCM] | type[ChaCha20Poly1305]]] = {
    1: (b"AEAD_AES_256_GCM", 32, AESGCM),
    2: (b"AEAD_AES_128_GCM", 16, AESGCM),
    3: (b"AEAD_CHACHA20_POLY1305", 32, ChaCha20Poly1305),
}
PLAIN_CHUNK = 16384
TAG = 16
SEALED_CHUNK = PLAIN_CHUNK + TAG
SALT, COMMITMENT, NONCE = 24, 32, 12


@dataclass
class DataHeader:
    algorithm: int
    generation: int
    key_id: bytes
    name: str
    raw: bytes


@dataclass
class HeldKey:
    """A session key as a decryptor holds it after loading it (2.7)."""

    name: str
    generation: int
    key_id: bytes
    algorithm: int
    key: bytes


def _bad_header(why: str) -> Refused:
    return Refused("format_error", "header", why)


def parse_data_header(data: bytes) -> DataHeader:
    """7.1, field by field in order; the header ends where the name does."""

    def take(at: int, n: int) -> bytes:
        if len(data) < at + n:
            raise _bad_header(f"header truncated at {at}")
        return data[at : at + n]

    if take(0, 4) != DATA_MAGIC:
        raise _bad_header("magic")
    if take(4, 1)[0] != 1:
        raise Refused("unsupported", "header", "version")
    algorithm = take(5, 1)[0]
    if algorithm not in DATA_AEADS:
        raise _bad_header("algorithm")
    if take(6, 1)[0] != 0:
        raise _bad_header("flags")
    generation = int.from_bytes(take(7, 8), "big")
    if not 1 <= generation <= 2**63 - 1:
        raise _bad_header("generation")
    kid = take(15, 16)
    n = take(31, 1)[0]
    if not 1 <= n <= 128:
        raise _bad_header("name_len")
    raw_name = take(32, n)
    if not name_ok(raw_name):
        raise _bad_header("name")
    return DataHeader(algorithm, generation, kid, raw_name.decode("ascii"), data[: 32 + n])


def _derive(algorithm: int, key: bytes, salt: bytes, context: bytes) -> tuple[bytes, int, bytes]:
    """7.2: (aead_key, base_nonce as an integer, commitment)."""
    aead_name, nk, _ = DATA_AEADS[algorithm]
    info = CHUNKED_LABEL + aead_name + b"\x00" + salt + context
    okm = HKDFExpand(hashes.SHA512(), nk + NONCE + COMMITMENT, info).derive(key)
    return okm[:nk], int.from_bytes(okm[nk : nk + NONCE], "big"), okm[nk + NONCE :]


def decrypt_data(data: bytes, held: HeldKey, associated_data: bytes = b"") -> bytes:
    """7.4, all or nothing: the plaintext, or :class:`Refused` with the manifest's stage."""
    header = parse_data_header(data)  # step 1
    if (header.name, header.generation, header.key_id, header.algorithm) != (
        held.name,
        held.generation,
        held.key_id,
        held.algorithm,
    ):
        raise Refused("verification_error", "key", "not the key the header names")
    _, nk, aead_class = DATA_AEADS[header.algorithm]
    if len(held.key) != nk:  # step 2
        raise ValueError("the session key has the wrong length")
    payload = data[len(header.raw) :]
    if len(payload) < SALT + COMMITMENT:  # step 3
        raise Refused("verification_error", "framing", "payload shorter than 56 bytes")
    salt, commitment = payload[:SALT], payload[SALT : SALT + COMMITMENT]
    context = DATA_CONTEXT_LABEL + header.raw + associated_data
    aead_key, base_nonce, expected = _derive(header.algorithm, held.key, salt, context)
    if not hmac.compare_digest(commitment, expected):
        raise Refused("verification_error", "commitment", "commitment mismatch")
    body = payload[SALT + COMMITMENT :]
    last, final_size = divmod(len(body), SEALED_CHUNK)  # step 4 (and 7.5)
    if final_size < TAG:
        raise Refused("verification_error", "framing", f"final chunk of {final_size} bytes")
    aead = aead_class(aead_key)
    out = []
    for k in range(last + 1):  # step 5
        nonce = (base_nonce ^ k).to_bytes(NONCE, "big")
        try:
            out.append(aead.decrypt(nonce, body[k * SEALED_CHUNK : (k + 1) * SEALED_CHUNK], None))
        except InvalidTag:
            raise Refused("verification_error", f"chunk {k}", "tag") from None
    return b"".join(out)  # step 6: the final chunk verified
