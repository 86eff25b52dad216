"""providers.pkcs11 against a real token (SoftHSM2, ``softhsm_token``): key pairs generated
in the token with the attributes keyblob asks for, signatures that keyblob's p256 verify
accepts, keys wrapped by the software p256 suite opened in the token, adoption by label, and
the one-line errors (wrong PIN, missing module, token and key, a closed session).

A login is per process in PKCS#11: each test opens at most one session at a time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

from keyblob.errors import NotFoundError, PassphraseError, ProviderError, VerificationError
from keyblob.keys import KeyRole, Suite, key_id_for
from keyblob.providers import pkcs11 as token_provider
from keyblob.providers import suites
from support import SoftHSMToken

CONTEXT = b"keyblob header bytes"


@pytest.fixture
def session(softhsm_token: SoftHSMToken) -> Iterator[token_provider.TokenSession]:
    """A logged-in session; every object whose label holds this test's tag is destroyed
    afterwards."""
    opened = token_provider.open_session(
        softhsm_token.module, softhsm_token.label, softhsm_token.pin
    )
    yield opened
    try:
        for obj in list(opened.session.get_objects()):
            label = obj[Attribute.LABEL]
            if isinstance(label, str) and TAG in label:
                obj.destroy()
    finally:
        opened.close()


TAG = "p11test"


def fresh_name() -> str:
    return f"{TAG}-{secrets.token_hex(4)}"


def private_key(session: token_provider.TokenSession, label: str) -> object:
    return session.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)


def test_generated_keys_sign_for_keyblob_verify(session: token_provider.TokenSession) -> None:
    container = token_provider.generate_keys(session, fresh_name())
    assert container.suite is Suite.P256
    public = suites.load_signature_public(Suite.P256, container.signature_public)
    for n in range(24):  # the token's s is high about half the time: each must come out low
        message = f"message {n}".encode()
        signature = container.sign(message)
        assert len(signature) == 64
        assert int.from_bytes(signature[32:]) <= suites.P256_ORDER // 2
        suites.verify(public, signature, message)
    with pytest.raises(VerificationError):
        suites.verify(public, container.sign(b"one message"), b"another message")
    assert container.signature_id == key_id_for(
        Suite.P256, KeyRole.SIGNATURE, container.signature_public
    )
    assert container.exchange_id == key_id_for(
        Suite.P256, KeyRole.EXCHANGE, container.exchange_public
    )


def test_generated_private_keys_stay_in_the_token(session: token_provider.TokenSession) -> None:
    from pkcs11.exceptions import AttributeSensitive

    name = fresh_name()
    token_provider.generate_keys(session, name)
    for role, allowed, refused in (
        (KeyRole.EXCHANGE, Attribute.DERIVE, Attribute.SIGN),
        (KeyRole.SIGNATURE, Attribute.SIGN, Attribute.DERIVE),
    ):
        label = token_provider.key_label(name, role)
        assert label == f"keyblob/{name}/{'exchange' if role is KeyRole.EXCHANGE else 'signature'}"
        key = session.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.PRIVATE] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.ID] == token_provider.key_object_id(label)
        assert key[allowed] is True
        assert key[refused] is False
        assert key[Attribute.DECRYPT] is False and key[Attribute.UNWRAP] is False
        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]


def test_software_wraps_and_the_token_unwraps(session: token_provider.TokenSession) -> None:
    container = token_provider.generate_keys(session, fresh_name())
    public = suites.load_exchange_public(Suite.P256, container.exchange_public)
    key = secrets.token_bytes(32)
    wrapped = suites.wrap(public, key, CONTEXT)
    assert container.unwrap(wrapped, CONTEXT) == key

    def refused(data: bytes, context: bytes = CONTEXT) -> None:
        with pytest.raises(VerificationError, match=suites.UNWRAP_FAILED):
            container.unwrap(data, context)

    refused(wrapped, b"another header")
    for position in (0, 1, 40, 65, len(wrapped) - 1):  # enc's form, its point, the ciphertext
        flipped = bytearray(wrapped)
        flipped[position] ^= 0x01
        refused(bytes(flipped))
    refused(wrapped[:64])
    refused(wrapped[:-1])
    refused(b"")
    # A key wrapped to another container does not open here.
    other = suites.generate(Suite.P256)[0]
    refused(suites.wrap(other.public_key(), key, CONTEXT))  # type: ignore[arg-type]


def test_adoption_by_label_finds_the_same_keys(session: token_provider.TokenSession) -> None:
    name = fresh_name()
    made = token_provider.generate_keys(session, name)
    adopted = token_provider.adopt_keys(session, name)
    assert (adopted.exchange_public, adopted.signature_public) == (
        made.exchange_public,
        made.signature_public,
    )
    assert adopted.exchange_id == made.exchange_id
    wrapped = suites.wrap(
        suites.load_exchange_public(Suite.P256, made.exchange_public), b"k" * 32, CONTEXT
    )
    assert adopted.unwrap(wrapped, CONTEXT) == b"k" * 32
    # Another container name adopting the same keys names them by label.
    again = token_provider.adopt_keys(
        session,
        fresh_name(),
        exchange_label=token_provider.key_label(name, KeyRole.EXCHANGE),
        signature_label=token_provider.key_label(name, KeyRole.SIGNATURE),
    )
    assert again.signature_public == made.signature_public
    # Generating again under the same name refuses, and leaves the first keys as they were.
    with pytest.raises(ProviderError, match="already holds a key labelled"):
        token_provider.generate_keys(session, name)
    assert token_provider.adopt_keys(session, name).exchange_public == made.exchange_public


def test_adoption_refuses_a_missing_key(session: token_provider.TokenSession) -> None:
    with pytest.raises(NotFoundError, match="holds no public key labelled") as caught:
        token_provider.adopt_keys(session, fresh_name())
    assert caught.value.exit_status == 4


def _pair(
    session: token_provider.TokenSession,
    label: str,
    *,
    extractable: bool = False,
    derive: bool = False,
) -> tuple[object, object]:
    from pkcs11.util.ec import encode_named_curve_parameters

    pair: tuple[object, object] = session.session.generate_keypair(
        KeyType.EC,
        store=True,
        label=label,
        capabilities=MechanismFlag.DERIVE if derive else MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        private_template={
            Attribute.SENSITIVE: not extractable,
            Attribute.EXTRACTABLE: extractable,
            Attribute.SIGN: not derive,
            Attribute.DERIVE: derive,
        },
    )
    return pair


@pytest.mark.parametrize("role", [KeyRole.EXCHANGE, KeyRole.SIGNATURE])
def test_adoption_refuses_a_private_key_that_is_not_the_public_keys(
    session: token_provider.TokenSession, role: KeyRole
) -> None:
    name = fresh_name()
    token_provider.generate_keys(session, name)
    label = token_provider.key_label(name, role)
    # Swap the pair's private key for another one, of the same kind, under the same label.
    _, planted = _pair(
        session, f"{TAG}-planted-{secrets.token_hex(4)}", derive=role is KeyRole.EXCHANGE
    )
    private_key(session, label)[Attribute.LABEL] = f"{TAG}-set-aside"  # type: ignore[index]
    planted[Attribute.LABEL] = label  # type: ignore[index]
    word = "exchange" if role is KeyRole.EXCHANGE else "signature"
    with pytest.raises(ProviderError, match=f"the {word} key pair .* does not match"):
        token_provider.adopt_keys(session, name)


def test_adoption_refuses_an_extractable_key(session: token_provider.TokenSession) -> None:
    name = fresh_name()
    _pair(session, f"{TAG}-loose", extractable=True)
    with pytest.raises(ProviderError, match="its private key is not sensitive"):
        token_provider.adopt_keys(
            session,
            name,
            exchange_label=f"{TAG}-loose",
            signature_label=f"{TAG}-loose",
        )


def test_wrong_pin(softhsm_token: SoftHSMToken) -> None:
    wrong = "9" + softhsm_token.pin[1:] if softhsm_token.pin[0] != "9" else "8" + softhsm_token.pin
    with pytest.raises(PassphraseError, match="wrong PIN for PKCS#11 token") as caught:
        token_provider.open_session(softhsm_token.module, softhsm_token.label, wrong)
    assert caught.value.exit_status == 5
    assert wrong not in str(caught.value) and softhsm_token.pin not in str(caught.value)
    assert "\n" not in str(caught.value)
    # The right PIN still opens it afterwards.
    token_provider.open_session(
        softhsm_token.module, softhsm_token.label, softhsm_token.pin
    ).close()


def test_missing_token_and_module(softhsm_token: SoftHSMToken, tmp_path: object) -> None:
    with pytest.raises(NotFoundError, match="no PKCS#11 token labelled 'no-such-token'") as caught:
        token_provider.open_session(softhsm_token.module, "no-such-token", softhsm_token.pin)
    assert caught.value.exit_status == 4
    assert softhsm_token.pin not in str(caught.value)
    with pytest.raises(NotFoundError, match="no PKCS#11 module at") as caught:
        token_provider.open_session(f"{tmp_path}/libnothing.so", softhsm_token.label, "1234")
    assert caught.value.exit_status == 4


def test_a_second_module_in_one_process_is_refused(
    softhsm_token: SoftHSMToken, tmp_path: object
) -> None:
    token_provider.load_module(softhsm_token.module)
    other = f"{tmp_path}/other.so"
    with open(other, "wb"):
        pass
    with pytest.raises(ProviderError, match="this process already uses"):
        token_provider.load_module(other)


def test_a_closed_session_is_a_provider_error(softhsm_token: SoftHSMToken) -> None:
    opened = token_provider.open_session(
        softhsm_token.module, softhsm_token.label, softhsm_token.pin
    )
    name = fresh_name()
    try:
        container = token_provider.generate_keys(opened, name)
    finally:
        opened.close()
    try:
        with pytest.raises(ProviderError, match="went away during signing") as caught:
            container.sign(b"message")
        assert caught.value.exit_status == 1
        with pytest.raises(ProviderError, match="went away during key agreement"):
            container.unwrap(
                suites.wrap(
                    suites.load_exchange_public(Suite.P256, container.exchange_public),
                    b"k" * 32,
                    CONTEXT,
                ),
                CONTEXT,
            )
    finally:
        with token_provider.open_session(
            softhsm_token.module, softhsm_token.label, softhsm_token.pin
        ) as cleanup:
            for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
                label = token_provider.key_label(name, role)
                for obj in list(cleanup.session.get_objects({Attribute.LABEL: label})):
                    obj.destroy()
