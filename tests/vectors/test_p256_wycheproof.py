"""Wycheproof ECDSA P-256/SHA-256 and ECDH P-256 vectors through keyblob's own p256 path
(FORMAT.md 1.3, 2.4, 2.5).  Third-party data, read in place.

ECDSA: the key as a public key file carries it (``suites.load_signature_public``), then
``suites.verify`` with the raw ``r || s`` keyblob reads.  The DER file is converted to raw
here; keyblob refuses by design the valid vectors whose s is above n/2 (high S), counted.

ECDH: each point as the ``enc`` of an HPKE wrap (the first 65 bytes of a p256 wrapped key,
FORMAT.md 2.3) opened by ``suites.unwrap``.  For a valid vector the wrap is sealed here from
Wycheproof's shared secret with the RFC 9180 key schedule written out below, so the unwrap
succeeding shows that keyblob computed that same DH; an invalid point must fail to unwrap.
"""

from __future__ import annotations

import hmac
import json
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keyblob.errors import FormatError, VerificationError
from keyblob.keys import Suite
from keyblob.providers import suites
from support import shared_vectors

N = suites.P256_ORDER


def _verify(key: bytes, raw: bytes, message: bytes) -> bool:
    try:
        suites.verify(suites.load_signature_public(Suite.P256, key), raw, message)
    except (FormatError, VerificationError):
        return False
    return True


def _groups(name: str) -> tuple[dict, list[dict]]:  # type: ignore[type-arg]
    doc = json.loads((shared_vectors("wycheproof") / name).read_text())
    assert doc["algorithm"] in ("ECDSA", "ECDH")
    return doc, doc["testGroups"]


def test_every_ecdsa_p1363_vector() -> None:
    """The raw r || s file: keyblob's own encoding, as is."""
    doc, groups = _groups("ecdsa_secp256r1_sha256_p1363_test.json")
    seen = high_s = 0
    for group in groups:
        assert group["publicKey"]["curve"] == "secp256r1" and group["sha"] == "SHA-256"
        key = bytes.fromhex(group["publicKey"]["uncompressed"])
        for t in group["tests"]:
            seen += 1
            where = f"tcId {t['tcId']} ({t['comment']}, {t['flags']})"
            raw, message = bytes.fromhex(t["sig"]), bytes.fromhex(t["msg"])
            ok = _verify(key, raw, message)
            if t["result"] == "valid" and not ok:
                assert int.from_bytes(raw[32:]) > N // 2, where  # refused by design only
                high_s += 1
            else:
                assert ok == (t["result"] == "valid"), where
    assert seen == doc["numberOfTests"]
    assert high_s > 0  # the file has valid high-S vectors: the rule was exercised


def test_every_ecdsa_der_vector() -> None:
    """The DER file, converted to r || s at this boundary (as keyblob's signer does)."""
    doc, groups = _groups("ecdsa_secp256r1_sha256_test.json")
    seen = high_s = not_raw = 0
    for group in groups:
        key = bytes.fromhex(group["publicKey"]["uncompressed"])
        for t in group["tests"]:
            seen += 1
            where = f"tcId {t['tcId']} ({t['comment']}, {t['flags']})"
            der, message = bytes.fromhex(t["sig"]), bytes.fromhex(t["msg"])
            try:
                r, s = decode_dss_signature(der)
                raw = r.to_bytes(32) + s.to_bytes(32)
            except (ValueError, OverflowError):  # not DER, or r/s longer than 32 bytes
                assert t["result"] == "invalid", where
                not_raw += 1
                continue
            ok = _verify(key, raw, message)
            if t["result"] == "valid" and not ok:
                assert s > N // 2, where
                high_s += 1
            elif t["result"] == "invalid" and ok:  # pragma: no cover - fails with details
                raise AssertionError(f"keyblob accepts the r, s of an invalid vector: {where}")
            else:
                assert ok == (t["result"] == "valid"), where
    assert seen == doc["numberOfTests"]
    assert high_s > 0 and not_raw > 0


# RFC 9180, DHKEM(P-256, HKDF-SHA256) = 0x0010, HKDF-SHA256 = 0x0001, AES-256-GCM = 0x0002.
_KEM_ID = b"KEM\x00\x10"
_HPKE_ID = b"HPKE\x00\x10\x00\x01\x00\x02"


def _extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), b"HPKE-v1" + suite_id + label + ikm, sha256).digest()


def _expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2) + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def _seal(dh: bytes, enc: bytes, pk_r: bytes, info: bytes, plaintext: bytes) -> bytes:
    """RFC 9180 4.1 ExtractAndExpand, 5.1 KeySchedule (base mode), 5.2 Seal, sequence 0."""
    eae_prk = _extract(_KEM_ID, b"", b"eae_prk", dh)
    shared = _expand(_KEM_ID, eae_prk, b"shared_secret", enc + pk_r, 32)
    context = (
        b"\x00"
        + _extract(_HPKE_ID, b"", b"psk_id_hash", b"")
        + _extract(_HPKE_ID, b"", b"info_hash", info)
    )
    secret = _extract(_HPKE_ID, shared, b"secret", b"")
    key = _expand(_HPKE_ID, secret, b"key", context, 32)
    nonce = _expand(_HPKE_ID, secret, b"base_nonce", context, 12)
    return enc + AESGCM(key).encrypt(nonce, plaintext, b"")


_P = 2**256 - 2**224 + 2**192 + 2**96 - 1


def _unchecked_dh(scalar: int, point: bytes) -> bytes | None:
    """x(scalar * point) by affine double-and-add with a = -3, whatever curve (b) the point
    is on: the invalid-curve attacker's prediction.  None when it meets the point at
    infinity."""
    q: tuple[int, int] | None = None
    base: tuple[int, int] | None = (int.from_bytes(point[1:33]), int.from_bytes(point[33:]))

    def add(u: tuple[int, int] | None, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if u is None or v is None:
            return u or v
        if u[0] == v[0] and (u[1] + v[1]) % _P == 0:
            return None
        if u == v:
            slope = (3 * u[0] * u[0] - 3) * pow(2 * u[1], -1, _P) % _P
        else:
            slope = (v[1] - u[1]) * pow(v[0] - u[0], -1, _P) % _P
        x = (slope * slope - u[0] - v[0]) % _P
        return x, (slope * (u[0] - x) - u[1]) % _P

    while scalar:
        if scalar & 1:
            q = add(q, base)
        base = add(base, base)
        scalar >>= 1
    return None if q is None else q[0].to_bytes(32)


def test_every_ecdh_point_as_the_enc_of_a_wrap() -> None:
    doc, groups = _groups("ecdh_secp256r1_ecpoint_test.json")
    seen = opened = refused = not_enc = 0
    for group in groups:
        assert group["curve"] == "secp256r1"
        for t in group["tests"]:
            seen += 1
            where = f"tcId {t['tcId']} ({t['comment']}, {t['flags']})"
            point = bytes.fromhex(t["public"])
            scalar = int(t["private"], 16)
            private = ec.derive_private_key(scalar, ec.SECP256R1())
            pk_r = suites.public_bytes(private)
            if len(point) != 65 or point[0] != 4:  # compressed or not a point: no enc form
                assert t["result"] != "valid" or "CompressedPublic" in t["flags"], where
                not_enc += 1
                continue
            if t["result"] == "valid":
                dh = bytes.fromhex(t["shared"])
                wrapped = _seal(dh, point, pk_r, b"info", b"k" * 32)
                assert suites.unwrap(private, wrapped, b"info") == b"k" * 32, where
                opened += 1
            else:
                # Sealed with the DH an implementation that skips the on-curve check would
                # compute (the scalar multiplication formulas never use b): it must not open.
                dh = _unchecked_dh(scalar, point)
                wrapped = _seal(dh, point, pk_r, b"info", b"k" * 32) if dh else point + bytes(48)
                try:
                    suites.unwrap(private, wrapped, b"info")
                except VerificationError:
                    refused += 1
                else:  # pragma: no cover
                    raise AssertionError(f"an invalid enc unwrapped: {where}")
    assert seen == doc["numberOfTests"]
    assert opened > 300 and refused > 0 and not_enc > 0


def test_every_ecdh_point_as_a_public_key() -> None:
    """The same points as exchange public keys: only valid uncompressed ones load."""
    _, groups = _groups("ecdh_secp256r1_ecpoint_test.json")
    for group in groups:
        for t in group["tests"]:
            where = f"tcId {t['tcId']} ({t['comment']}, {t['flags']})"
            point = bytes.fromhex(t["public"])
            try:
                suites.load_exchange_public(Suite.P256, point)
            except FormatError:
                assert t["result"] != "valid" or point[0] != 4, where
            else:
                assert t["result"] == "valid" and len(point) == 65, where
