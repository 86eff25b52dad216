"""Open an HPKE base-mode ciphertext when the private key's DH runs elsewhere.

RFC 9180 receiver side, base mode, for DHKEM(P-256, HKDF-SHA256) (and DHKEM(X25519,
HKDF-SHA256)) with HKDF-SHA256 and AES-256-GCM.  The recipient's Diffie-Hellman is a callable
(on a PKCS#11 token: ``CKM_ECDH1_DERIVE`` with ``CKD_NULL``, which returns the raw shared
x-coordinate); this module owns everything after it: the KEM's ExtractAndExpand, the key
schedule and the AEAD open.  Each primitive is pyca ``cryptography``'s (HMAC for
HKDF-Extract, HKDFExpand, AESGCM); the section numbers in the comments are RFC 9180's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, hpke
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keyblob.errors import UsageError, VerificationError

#: The one message of every failure to open: which step failed is not said.
OPEN_FAILED = "the HPKE ciphertext does not open"

_MODE_BASE = 0x00
_KDF_HKDF_SHA256 = 0x0001
_AEAD_AES_256_GCM = 0x0002
_NH = 32  # HKDF-SHA256 output length
_NK = 32  # AES-256-GCM key length
_NN = 12  # AES-256-GCM nonce length


@dataclass(frozen=True)
class _Kem:
    kem_id: int
    enc_length: int  # Nenc = Npk: the serialized public key
    dh_length: int  # Ndh


_KEMS = {
    hpke.KEM.P256: _Kem(kem_id=0x0010, enc_length=65, dh_length=32),
    hpke.KEM.X25519: _Kem(kem_id=0x0020, enc_length=32, dh_length=32),
}


@dataclass(frozen=True)
class KeySchedule:
    """The receiver's context (RFC 9180 5.1): secrets, never printed."""

    shared_secret: bytes = field(repr=False)
    key: bytes = field(repr=False)
    base_nonce: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)

    def nonce(self, sequence: int) -> bytes:
        """ComputeNonce (5.2): ``base_nonce`` XOR the sequence number."""
        if not 0 <= sequence < 1 << (8 * _NN):
            raise VerificationError(OPEN_FAILED)
        return (int.from_bytes(self.base_nonce, "big") ^ sequence).to_bytes(_NN, "big")

    def open(self, aad: bytes, ciphertext: bytes, sequence: int = 0) -> bytes:
        """ContextR.Open (5.2) of the message with this sequence number."""
        try:
            return AESGCM(self.key).decrypt(self.nonce(sequence), ciphertext, aad)
        except (InvalidTag, ValueError, OverflowError):
            raise VerificationError(OPEN_FAILED) from None


def _extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """LabeledExtract (4): HKDF-Extract is HMAC-SHA256 keyed with the salt (RFC 5869 2.2)."""
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(b"HPKE-v1" + suite_id + label + ikm)
    return mac.finalize()


def _expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """LabeledExpand (4)."""
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled_info).derive(prk)


def _check_public(kem: hpke.KEM, data: bytes, *, on_curve: bool) -> None:
    """DeserializePublicKey (7.1.1): the length, and for P-256 an uncompressed point, on the
    curve where ``on_curve`` (the sender's ``enc``; the recipient's own key only goes into
    ``kem_context``, and a wrong one only makes the open fail)."""
    if len(data) != _KEMS[kem].enc_length:
        raise VerificationError(OPEN_FAILED)
    if kem == hpke.KEM.P256:
        if data[0] != 0x04:
            raise VerificationError(OPEN_FAILED)
        if on_curve:
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
            except ValueError:
                raise VerificationError(OPEN_FAILED) from None


def key_schedule(
    enc: bytes,
    recipient_public: bytes,
    dh: Callable[[bytes], bytes],
    info: bytes,
    *,
    kem: hpke.KEM = hpke.KEM.P256,
) -> KeySchedule:
    """Decap (4.1) then KeyScheduleR in base mode (5.1).

    ``enc`` is the sender's encapsulated key and ``recipient_public`` the recipient's public
    key, both serialized as RFC 9180 7.1.1 says (P-256: 65-byte uncompressed X9.62; X25519:
    32 bytes).  ``dh(enc)`` returns the DH output (P-256: the 32-byte x-coordinate).
    """
    params = _KEMS.get(kem)
    if params is None:
        raise UsageError(f"no receiver-side HPKE schedule for {kem}: KEM.P256 or KEM.X25519 only")
    _check_public(kem, enc, on_curve=True)  # before the DH: a token never sees a bad point
    _check_public(kem, recipient_public, on_curve=False)
    dh_output = dh(enc)
    if len(dh_output) != params.dh_length or not any(dh_output):
        # An all-zero X25519 output means a low-order point (7.1.4); P-256 cannot give it.
        raise VerificationError(OPEN_FAILED)
    # 4.1 ExtractAndExpand, with the KEM's suite_id.
    kem_suite = b"KEM" + params.kem_id.to_bytes(2, "big")
    eae_prk = _extract(kem_suite, b"", b"eae_prk", dh_output)
    shared_secret = _expand(kem_suite, eae_prk, b"shared_secret", enc + recipient_public, _NH)
    # 5.1 KeySchedule, mode_base: psk and psk_id are empty.
    suite_id = (
        b"HPKE"
        + params.kem_id.to_bytes(2, "big")
        + _KDF_HKDF_SHA256.to_bytes(2, "big")
        + _AEAD_AES_256_GCM.to_bytes(2, "big")
    )
    psk_id_hash = _extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _extract(suite_id, b"", b"info_hash", info)
    context = bytes([_MODE_BASE]) + psk_id_hash + info_hash
    secret = _extract(suite_id, shared_secret, b"secret", b"")
    return KeySchedule(
        shared_secret=shared_secret,
        key=_expand(suite_id, secret, b"key", context, _NK),
        base_nonce=_expand(suite_id, secret, b"base_nonce", context, _NN),
        exporter_secret=_expand(suite_id, secret, b"exp", context, _NH),
    )


def open_base(
    enc: bytes,
    recipient_public: bytes,
    dh: Callable[[bytes], bytes],
    *,
    info: bytes,
    aad: bytes,
    ciphertext: bytes,
    kem: hpke.KEM = hpke.KEM.P256,
) -> bytes:
    """Open the single-shot message ``ciphertext`` (sequence 0) that was sealed to
    ``recipient_public`` with ``enc``; raises VerificationError, one message, on any failure
    (the DH callable's own errors pass through: they are the token's, not the ciphertext's)."""
    return key_schedule(enc, recipient_public, dh, info, kem=kem).open(aad, ciphertext)
