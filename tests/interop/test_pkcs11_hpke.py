"""providers.hpke_schedule with the recipient's DH in a real token (SoftHSM2): a P-256 key
pair made in the token (private: sensitive, non-extractable, derive only), a message sealed to
its public key by ``cryptography``'s HPKE, opened by the in-process RFC 9180 schedule whose DH
is the token's ``CKM_ECDH1_DERIVE`` with ``CKD_NULL``.  ``pkcs11-tool`` (OpenSC), another
process, then reads the private key's attributes; wrapping it out of the token fails."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec

from keyblob.errors import VerificationError
from keyblob.providers import hpke_schedule
from support import SoftHSMToken, skip_or_fail

SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
INFO = b"keyblob header bytes"


@pytest.fixture
def token_key(softhsm_token: SoftHSMToken) -> Iterator[tuple[Any, Any, bytes, str]]:
    """(the logged-in session, the private key object, its 65-byte public point, its label),
    on the token for the test (a login is per process: the test opens no other session)."""
    from pkcs11 import Attribute, KeyType, MechanismFlag
    from pkcs11.util.ec import encode_named_curve_parameters

    label = f"hpke-{secrets.token_hex(6)}"
    with softhsm_token.token().open(user_pin=softhsm_token.pin, rw=True) as session:
        public, private = session.generate_keypair(
            KeyType.EC,
            store=True,  # a token object, so that pkcs11-tool in another process sees it
            label=label,
            capabilities=MechanismFlag.DERIVE,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            private_template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.DERIVE: True,
                Attribute.SIGN: False,
                Attribute.DECRYPT: False,
                Attribute.UNWRAP: False,
            },
        )
        try:
            der_point = bytes(public[Attribute.EC_POINT])  # DER OCTET STRING of the point
            assert der_point[:2] == b"\x04\x41" and len(der_point) == 67
            yield session, private, der_point[2:], label
        finally:
            private.destroy()
            public.destroy()


def token_dh(private: Any, calls: list[bytes]) -> Any:
    """The DH callable a token provider gives hpke_schedule: CKM_ECDH1_DERIVE with CKD_NULL
    makes the raw x-coordinate a generic secret in the session, read once, then destroyed."""
    from pkcs11 import KDF, Attribute, KeyType, Mechanism

    def dh(enc: bytes) -> bytes:
        calls.append(enc)
        shared = private.derive_key(
            KeyType.GENERIC_SECRET,
            256,
            mechanism=Mechanism.ECDH1_DERIVE,
            mechanism_param=(KDF.NULL, None, enc),
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
        try:
            return bytes(shared[Attribute.VALUE])
        finally:
            shared.destroy()

    return dh


def test_the_token_opens_what_cryptography_seals(token_key: tuple[Any, Any, bytes, str]) -> None:
    _, private, point, _ = token_key
    recipient = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    calls: list[bytes] = []
    for message in (b"", b"a 32-byte session key, no more..", secrets.token_bytes(500)):
        sealed = SUITE.encrypt(message, recipient, info=INFO)
        enc, ct = sealed[:65], sealed[65:]
        opened = hpke_schedule.open_base(
            enc, point, token_dh(private, calls), info=INFO, aad=b"", ciphertext=ct
        )
        assert opened == message
    assert len(calls) == 3  # each open asked the token once

    sealed = SUITE.encrypt(b"secret", recipient, info=INFO)
    with pytest.raises(VerificationError, match=hpke_schedule.OPEN_FAILED):
        hpke_schedule.open_base(
            sealed[:65],
            point,
            token_dh(private, calls),
            info=b"other",
            aad=b"",
            ciphertext=sealed[65:],
        )


def test_the_private_key_cannot_leave_the_token(
    softhsm_token: SoftHSMToken, token_key: tuple[Any, Any, bytes, str]
) -> None:
    from pkcs11 import Attribute
    from pkcs11.exceptions import AttributeSensitive

    _, private, _, label = token_key
    with pytest.raises(AttributeSensitive):
        private[Attribute.VALUE]
    if shutil.which("pkcs11-tool") is None:
        skip_or_fail("pkcs11-tool is not installed: Debian's opensc")
    common = [
        "pkcs11-tool",
        "--module",
        softhsm_token.module,
        "--token-label",
        softhsm_token.label,
        "--login",
        "--pin",  # the throwaway token's PIN, made for this run (tools/softhsm-test-token)
        softhsm_token.pin,
    ]
    listed = subprocess.run(
        [*common, "--list-objects", "--type", "privkey", "--label", label],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    # pkcs11-tool 0.23 may list every private key whatever --label says: read the block
    # (one per object, each starting at an unindented line) that carries this label.
    blocks: list[dict[str, str]] = []
    for line in listed.stdout.splitlines():
        if line and not line[0].isspace():
            blocks.append({})
        if blocks:
            key, _, value = line.partition(":")
            blocks[-1][key.strip()] = value.strip()
    mine = [b for b in blocks if b.get("label") == label]
    assert len(mine) == 1, listed.stdout
    lines = mine[0]
    # pkcs11-tool's Access line: "sensitive" is CKA_SENSITIVE; "extractable" alone would be
    # CKA_EXTRACTABLE true ("never extractable" is CKA_NEVER_EXTRACTABLE).
    access = {word.strip() for word in lines["Access"].split(",")}
    assert "sensitive" in access and "never extractable" in access, listed.stdout
    assert "extractable" not in access, listed.stdout
    assert lines["Usage"] == "derive", listed.stdout


def test_an_export_attempt_fails(token_key: tuple[Any, Any, bytes, str]) -> None:
    """Wrapping the key out under a key of ours, or making it extractable, is refused.
    (pkcs11-tool cannot try: "reading private keys not (yet) supported".)"""
    from pkcs11 import Attribute, KeyType, MechanismFlag
    from pkcs11.exceptions import AttributeReadOnly, KeyUnextractable

    session, private, _, _ = token_key
    wrapping = session.generate_key(
        KeyType.AES, 256, capabilities=MechanismFlag.WRAP | MechanismFlag.ENCRYPT
    )
    try:
        with pytest.raises(KeyUnextractable):
            wrapping.wrap_key(private)
    finally:
        wrapping.destroy()
    with pytest.raises(AttributeReadOnly):
        private[Attribute.EXTRACTABLE] = True
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.SENSITIVE] is True
