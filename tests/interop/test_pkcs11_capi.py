"""CryptoAPI SIMPLEBLOBs opened by a token container against a real token (SoftHSM2,
``softhsm_token``): a Windows exchange key imported into the token opens Wine's SIMPLEBLOB
known answers there (``CKM_RSA_PKCS``), a damaged blob gives the random stand-in (or
VerificationError when authenticated) exactly as in software, and the imported private key
is sensitive and not extractable.

A login is per process in PKCS#11: each test opens one container at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

import support
from keyblob import mscapi
from keyblob.errors import (
    NotFoundError,
    ProviderError,
    UsageError,
    VerificationError,
    WeakKeyError,
)
from keyblob.keys import KeyRole
from keyblob.providers import pkcs11 as token_provider
from keyblob.providers.base import CapiKeys
from keyblob.providers.software import Home
from support import SoftHSMToken

#: Wine's SIMPLEBLOB known answers (docs: ../shared/vectors/cryptoapi/SOURCE.md): an RC4
#: key wrapped by rsaenh for a 1024-bit exchange key, as is and with zero bytes after it.
WINE_CASES = ("import_private_simpleblob_rc4", "simpleblob_trailing_zero_bytes")


def _case(name: str) -> tuple[Path, dict[str, Any]]:
    case = support.shared_vectors("cryptoapi") / "wine-rsaenh" / name
    return case, json.loads((case / "manifest.json").read_bytes())


def _simpleblob(case: Path) -> bytes:
    (path,) = sorted(case.glob("simpleblob*.bin"))
    return path.read_bytes()


def _wine_key(case: Path) -> rsa.RSAPrivateKey:
    return mscapi.PrivateKeyBlob.from_bytes(
        (case / "privatekeyblob.bin").read_bytes()
    ).to_private_key()


def destroy_container_objects(token: SoftHSMToken, base: str) -> None:
    """Destroy every object of the token whose label starts with ``base`` (a container's)."""
    with token_provider.open_session(token.module, token.label, token.pin) as opened:
        for obj in list(opened.session.get_objects()):
            label = obj[Attribute.LABEL]
            if isinstance(label, str) and label.startswith(base + "/"):
                obj.destroy()


@pytest.fixture
def container(
    softhsm_token: SoftHSMToken, tmp_path: Path
) -> Iterator[token_provider.TokenContainer]:
    """A new token container (p256) in a home of its own; its objects are destroyed after."""
    home = Home(tmp_path / "home")
    made = home.create_token(
        "capi", softhsm_token.pin.encode(), module=softhsm_token.module, token=softhsm_token.label
    )
    base = made.record.base
    try:
        yield made
    finally:
        made.close()
        destroy_container_objects(softhsm_token, base)


def _reopen(container: token_provider.TokenContainer, pin: str) -> token_provider.TokenContainer:
    """The same container opened again from its home (container.json), after a logout."""
    folder = container._folder
    container.close()
    reopened = Home(folder.parent.parent).open(container.name, pin.encode())
    assert isinstance(reopened, token_provider.TokenContainer)
    return reopened


@pytest.mark.parametrize("name", WINE_CASES)
def test_a_wine_simpleblob_opens_with_its_key_in_the_token(
    container: token_provider.TokenContainer, softhsm_token: SoftHSMToken, name: str
) -> None:
    case, manifest = _case(name)
    expected = manifest["expected"]
    assert isinstance(container, CapiKeys)
    with pytest.warns(mscapi.LegacyAlgorithmWarning, match="RSA-1024"):
        where = container.capi_import_key_pair(KeyRole.EXCHANGE, _wine_key(case), force=False)
    assert "sensitive, not extractable" in where
    reopened = _reopen(container, softhsm_token.pin)  # the record alone finds the key again
    try:
        for authenticated in (False, True):
            key = reopened.capi_unwrap(_simpleblob(case), authenticated=authenticated)
            assert key.alg_id is mscapi.AlgId.RC4
            assert key.unsafe_raw_bytes().hex() == expected["session_key_hex"]
        if (case / "ciphertext.bin").is_file():
            plain = mscapi.decrypt(key, (case / "ciphertext.bin").read_bytes())
            assert plain.hex() == expected["plaintext_hex"]
    finally:
        reopened.close()


def _damaged(blob: bytes) -> bytes:
    """``blob`` with the low byte of its RSA ciphertext changed (stored little-endian, so
    byte 12; the value stays below the modulus): its PKCS#1 padding no longer checks."""
    return blob[:12] + bytes([blob[12] ^ 0x01]) + blob[13:]


def test_a_damaged_simpleblob_gives_the_stand_in_not_an_oracle(
    container: token_provider.TokenContainer,
) -> None:
    case, manifest = _case("import_private_simpleblob_rc4")
    key = _wine_key(case)
    container.capi_import_key_pair(KeyRole.EXCHANGE, key, force=False)
    damaged = _damaged(_simpleblob(case))
    # The token itself refuses this ciphertext (SoftHSM2: CKR_GENERAL_ERROR): the adapter's
    # mapping of that refusal is what this test exercises.
    private = container._capi_exchange_key()._private
    ciphertext = damaged[12:][::-1]
    with pytest.raises(p11.PKCS11Error):
        private.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)
    stand_ins = {
        container.capi_unwrap(damaged, authenticated=False).unsafe_raw_bytes() for _ in range(3)
    }
    assert len(stand_ins) == 3  # random each time, of RC4's default length
    assert all(len(k) == 16 for k in stand_ins)
    assert manifest["expected"]["session_key_hex"] not in {k.hex() for k in stand_ins}
    with pytest.raises(VerificationError, match="does not open this SIMPLEBLOB"):
        container.capi_unwrap(damaged, authenticated=True)
    # the same as the software unwrap with the same key
    with pytest.raises(VerificationError, match="does not open this SIMPLEBLOB"):
        mscapi.unwrap_simpleblob(damaged, key, authenticated=True)


def test_crypt_oaep_simpleblobs_open_in_the_token(
    container: token_provider.TokenContainer,
) -> None:
    windows = rsa.generate_private_key(65537, 2048)
    container.capi_import_key_pair(KeyRole.EXCHANGE, windows, force=False)
    session = mscapi.CapiKey.new(mscapi.AlgId.AES_256, os.urandom(32))
    oaep = mscapi.build_simpleblob(session, windows.public_key(), oaep=True)
    opened = container.capi_unwrap(oaep, authenticated=True, oaep=True)
    assert opened.unsafe_raw_bytes() == session.unsafe_raw_bytes()
    # A PKCS#1 v1.5 blob read as OAEP does not open: the stand-in, or an error when signed.
    pkcs1 = mscapi.build_simpleblob(session, windows.public_key())
    stand_in = container.capi_unwrap(pkcs1, authenticated=False, oaep=True)
    assert stand_in.unsafe_raw_bytes() != session.unsafe_raw_bytes()
    with pytest.raises(VerificationError):
        container.capi_unwrap(pkcs1, authenticated=True, oaep=True)
    assert container.capi_unwrap(pkcs1, authenticated=True).unsafe_raw_bytes() == (
        session.unsafe_raw_bytes()
    )


def test_the_imported_private_key_stays_in_the_token(
    container: token_provider.TokenContainer, softhsm_token: SoftHSMToken
) -> None:
    windows = rsa.generate_private_key(65537, 2048)
    container.capi_import_key_pair(KeyRole.EXCHANGE, windows, force=False)
    ref = container.record.capi_exchange
    assert ref is not None
    assert ref.label == container.record.base + "/capi-exchange"
    doc = json.loads((container._folder / "container.json").read_bytes())
    assert doc["capi_exchange"] == ref.to_json()
    session = container._session.session
    (private,) = session.get_objects(
        {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: ref.label}
    )
    (public,) = session.get_objects(
        {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: ref.label}
    )
    assert bytes(private[Attribute.ID]) == bytes(public[Attribute.ID]) == ref.id
    for attribute, value in (
        (Attribute.TOKEN, True),
        (Attribute.PRIVATE, True),
        (Attribute.SENSITIVE, True),
        (Attribute.EXTRACTABLE, False),
        (Attribute.DECRYPT, True),
        (Attribute.SIGN, False),
        (Attribute.SIGN_RECOVER, False),
        (Attribute.UNWRAP, False),
        (Attribute.DERIVE, False),
    ):
        assert private[attribute] is value, attribute
    assert public[Attribute.ENCRYPT] is True and public[Attribute.VERIFY] is False
    with pytest.raises(p11.AttributeSensitive):
        private[Attribute.PRIVATE_EXPONENT]
    with pytest.raises(p11.AttributeSensitive):
        private[Attribute.PRIME_1]
    with pytest.raises(p11.PKCS11Error):  # CKA_EXTRACTABLE cannot be turned on
        private[Attribute.EXTRACTABLE] = True
    assert not hasattr(private, "sign")  # python-pkcs11 read CKA_SIGN false too
    tool = shutil.which("pkcs11-tool")
    if tool is None:
        support.skip_or_fail("pkcs11-tool (opensc) is not installed")
    listed = subprocess.run(
        [
            tool,
            "--module",
            softhsm_token.module,
            "--token-label",
            softhsm_token.label,
            "--login",
            "--pin",
            softhsm_token.pin,
            "--list-objects",
            "--type",
            "privkey",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (block,) = [b for b in listed.split("Private Key Object") if f"label:      {ref.label}\n" in b]
    lines = {k.strip(): v.strip() for k, _, v in (x.partition(":") for x in block.splitlines()[1:])}
    assert lines["ID"] == ref.id.hex() and lines["Usage"] == "decrypt"
    # Sensitive and not extractable; not "always sensitive, never extractable, local" as a
    # key generated in the token is: this one existed outside it before the import.
    assert lines["Access"] == "sensitive"


def test_what_a_token_container_refuses(
    container: token_provider.TokenContainer, softhsm_token: SoftHSMToken
) -> None:
    windows = rsa.generate_private_key(65537, 2048)
    blob = mscapi.build_simpleblob(
        mscapi.CapiKey.new(mscapi.AlgId.AES_128, os.urandom(16)), windows.public_key()
    )
    with pytest.raises(UsageError, match="holds no CryptoAPI exchange key"):
        container.capi_unwrap(blob, authenticated=False)
    with pytest.raises(UsageError, match=r"exchange key .* only"):
        container.capi_import_key_pair(KeyRole.SIGNATURE, windows, force=False)
    with pytest.raises(UsageError, match="no CryptoAPI signature key"):
        container.capi_sign(blob, hash_alg=mscapi.AlgId.SHA_256)
    weak = _wine_key(_case("keypair_512_exchange")[0])  # rsaenh's 512-bit exchange key
    with pytest.raises(WeakKeyError):
        container.capi_import_key_pair(KeyRole.EXCHANGE, weak, force=False)
    assert container.record.capi_exchange is None
    container.capi_import_key_pair(KeyRole.EXCHANGE, windows, force=False)
    first = container.record.capi_exchange
    container.capi_import_key_pair(KeyRole.EXCHANGE, windows, force=False)  # the same: kept
    assert container.record.capi_exchange == first
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(UsageError, match="already holds a CryptoAPI exchange key"):
        container.capi_import_key_pair(KeyRole.EXCHANGE, other, force=False)
    container.capi_import_key_pair(KeyRole.EXCHANGE, other, force=True)
    assert container.record.capi_exchange is not None and first is not None
    assert container.record.capi_exchange.id != first.id
    session = container._session.session
    assert not list(session.get_objects({Attribute.ID: first.id}))  # the old pair is gone
    with pytest.raises(VerificationError):  # wrapped for the replaced key
        container.capi_unwrap(blob, authenticated=True)
    # The recorded key deleted from the token: found missing, in one line.
    for obj in list(session.get_objects({Attribute.LABEL: container.record.capi_exchange.label})):
        obj.destroy()
    reopened = _reopen(container, softhsm_token.pin)
    try:
        with pytest.raises(NotFoundError, match="holds no CryptoAPI exchange key labelled"):
            reopened.capi_unwrap(blob, authenticated=False)
        # Importing the same key again puts it back, no --force needed.
        reopened.capi_import_key_pair(KeyRole.EXCHANGE, other, force=False)
        again = mscapi.build_simpleblob(
            mscapi.CapiKey.new(mscapi.AlgId.AES_128, b"k" * 16), other.public_key()
        )
        assert reopened.capi_unwrap(again, authenticated=True).unsafe_raw_bytes() == b"k" * 16
    finally:
        reopened.close()


def test_a_key_replaced_in_the_token_is_refused(
    container: token_provider.TokenContainer, softhsm_token: SoftHSMToken
) -> None:
    """Another RSA key put in the token under the recorded label and id is not used."""
    recorded = rsa.generate_private_key(65537, 2048)
    container.capi_import_key_pair(KeyRole.EXCHANGE, recorded, force=False)
    ref = container.record.capi_exchange
    assert ref is not None
    session = container._session
    for obj in list(session.session.get_objects({Attribute.LABEL: ref.label})):
        obj.destroy()
    intruder = rsa.generate_private_key(65537, 2048)
    token_provider._create_rsa_pair(session, ref, intruder)
    reopened = _reopen(container, softhsm_token.pin)
    blob = mscapi.build_simpleblob(
        mscapi.CapiKey.new(mscapi.AlgId.AES_128, os.urandom(16)), intruder.public_key()
    )
    try:
        with pytest.raises(ProviderError, match="is not container 'capi''s CryptoAPI exchange key"):
            reopened.capi_unwrap(blob, authenticated=False)
    finally:
        reopened.close()
