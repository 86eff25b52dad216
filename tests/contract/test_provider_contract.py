"""The Provider protocol's contract (src/keyblob/providers/base.py), asserted against every
provider: software containers of the x25519, rsa, pq and p256 suites, and a p256 container whose
keys and state key are in a PKCS#11 token (SoftHSM2, the ``softhsm_token`` fixture: it
fails in CI without the token).  A token cannot run x25519, rsa or pq: ``keyblob init
--provider pkcs11`` must refuse them in one line.

What every provider must do: names, suite, public keys and key ids that agree
(``key_id_for``); signatures that ``suites.verify`` accepts for their message only; an
``unwrap`` that opens what ``suites.wrap`` made for its exchange key under the same context
and nothing else, with one message; a state that round-trips, that a failing change leaves
as it was, that refuses edits on disk and a state MAC'd by any other key (for the token:
forging a state needs the token); no pickling, and no secret in a repr.

Software-only behaviour (sealing, passphrases, file permissions) is in
tests/unit/test_software_provider.py; the token's own (key attributes, adoption, PKCS#11
errors) in tests/interop/test_pkcs11_provider.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import state_support as ss
import support
from keyblob import Home, Suite, VerificationError
from keyblob.cli import main
from keyblob.keys import KeyRole, key_id_for
from keyblob.providers import suites
from keyblob.providers.base import Provider, RotatingKeys
from keyblob.trust import PreviousSigner, RecoveryRecipient, State, TrustedSigner
from support import FAST_KDF, PASSPHRASE

CONTEXT = b"keyblob/v1 a header the wrap is bound to"
NAME = "contract"


@dataclass
class Made:
    """A provider under test, its home, and how to open it again from a home folder."""

    provider: Provider
    home: Home
    secret: bytes = field(repr=False)  # the passphrase, or the token's PIN
    opened: list[Any] = field(default_factory=list)
    token: Any = None  # the SoftHSM2 token of a token container

    @property
    def folder(self) -> Path:
        return self.home.container_dir(NAME)

    def open(self, home: Path) -> Provider:
        """The container of the home at ``home`` (this one or a copy), unlocked."""
        provider = Home(home).open(NAME, self.secret)
        self.opened.append(provider)
        return provider

    def mac(self, data: bytes) -> bytes:
        """The provider's own state MAC (FORMAT.md 5.2): the control of the forgery test,
        computed where the key is (the software home's state key, or in the token)."""
        if _is_token(self.provider):
            tag: bytes = self.provider._mac(data)  # type: ignore[attr-defined]
            return tag
        key = self.provider._keys.state  # type: ignore[attr-defined]
        return hmac.new(key, data, hashlib.sha256).digest()


def _is_token(provider: object) -> bool:
    return type(provider).__name__ == "TokenContainer"


#: Every suite in software, and the one a token runs.
PROVIDERS = ["software-x25519", "software-rsa", "software-pq", "software-p256", "token-p256"]


@pytest.fixture(params=PROVIDERS)
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Made]:
    home = Home(tmp_path / "home")
    kind, suite_label = request.param.split("-")
    if kind == "software":
        suite = Suite.from_label(suite_label)
        container = home.create(NAME, PASSPHRASE, suite, bits=2048, kdf=FAST_KDF)
        yield Made(container, home, PASSPHRASE)
        return
    token: support.SoftHSMToken = request.getfixturevalue("softhsm_token")
    pin = token.pin.encode()
    container = home.create_token(NAME, pin, module=token.module, token=token.label)
    result = Made(container, home, pin, token=token)
    try:
        yield result
    finally:
        for other in result.opened:
            other.close()
        support.close_token_container(container)


@pytest.fixture
def provider(made: Made) -> Provider:
    return made.provider


def test_name_suite_public_keys_and_ids_agree(provider: Provider, made: Made) -> None:
    assert provider.name == NAME
    assert provider.suite in Suite
    suites.check_public_keys(provider.suite, provider.exchange_public, provider.signature_public)
    assert provider.exchange_id == key_id_for(
        provider.suite, KeyRole.EXCHANGE, provider.exchange_public
    )
    assert provider.signature_id == key_id_for(
        provider.suite, KeyRole.SIGNATURE, provider.signature_public
    )
    assert provider.exchange_id != provider.signature_id
    again = made.open(made.home.path)
    assert (again.name, again.suite, again.exchange_public, again.signature_public) == (
        provider.name,
        provider.suite,
        provider.exchange_public,
        provider.signature_public,
    )
    assert (again.exchange_id, again.signature_id) == (provider.exchange_id, provider.signature_id)


def test_a_signature_verifies_for_its_message_only(provider: Provider) -> None:
    public = suites.load_signature_public(provider.suite, provider.signature_public)
    for message in (b"", b"a message", bytes(range(256)) * 40):
        signature = provider.sign(message)
        suites.verify(public, signature, message)
        with pytest.raises(VerificationError):
            suites.verify(public, signature, message + b"!")
        flipped = bytearray(signature)
        flipped[len(flipped) // 2] ^= 0x01
        with pytest.raises(VerificationError):
            suites.verify(public, bytes(flipped), message)
    # Another container's key does not verify it.
    other = suites.generate(provider.suite, bits=2048)[1].public_key()
    with pytest.raises(VerificationError):
        suites.verify(other, provider.sign(b"a message"), b"a message")  # type: ignore[arg-type]


def test_unwrap_opens_only_its_own_wrap_under_its_own_context(provider: Provider) -> None:
    public = suites.load_exchange_public(provider.suite, provider.exchange_public)
    key = secrets.token_bytes(32)
    wrapped = suites.wrap(public, key, CONTEXT)
    assert provider.unwrap(wrapped, CONTEXT) == key
    messages = set()

    def refused(data: bytes, context: bytes = CONTEXT) -> None:
        with pytest.raises(VerificationError) as caught:
            provider.unwrap(data, context)
        messages.add(str(caught.value))

    refused(wrapped, b"keyblob/v1 another header")
    refused(wrapped, b"")
    for i in range(len(wrapped)):  # every byte, one bit each
        flipped = bytearray(wrapped)
        flipped[i] ^= 1 << (i % 8)
        refused(bytes(flipped))
    for n in (0, 1, len(wrapped) // 2, len(wrapped) - 1):
        refused(wrapped[:n])
    refused(wrapped + b"\x00")
    foreign = suites.generate(provider.suite, bits=2048)[0].public_key()
    refused(suites.wrap(foreign, key, CONTEXT))  # type: ignore[arg-type]
    assert messages == {suites.UNWRAP_FAILED}  # one message: no oracle


def _signer(suite: Suite, name: str) -> TrustedSigner:
    """Another container's public keys as a trusted signer of ``suite``."""
    private = suites.generate(suite, bits=2048)
    public = suites.public_bytes(private[1])
    return TrustedSigner(
        key_id=key_id_for(suite, KeyRole.SIGNATURE, public),
        suite=suite,
        public=public,
        exchange=suites.public_bytes(private[0]),
        label=name,
        added=1_700_000_000,
    )


def test_state_round_trips(provider: Provider, made: Made) -> None:
    first = provider.state()
    assert (first.all_marks(), first.trusted, first.label) == ({}, (), None)
    signer = _signer(provider.suite, "friend")
    after = provider.update_state(lambda s: s.seen("payroll", 3).with_signer(signer))
    assert after.generation_floor("payroll") == 3 and after.signer(signer.key_id) == signer
    assert provider.state().generation_floor("payroll") == 3
    provider.update_state(lambda s: s.seen("payroll", 2).seen("hr", 1))  # never goes down
    for state in (provider.state(), made.open(made.home.path).state()):
        assert state.all_marks() == {"payroll": 3, "hr": 1}
        assert state.trusted == (signer,)


def test_the_lifecycle_members_round_trip_and_an_edit_fails_the_mac(
    provider: Provider, made: Made
) -> None:
    """FORMAT.md 5.2.8 through every provider's state MAC (a token's in the token)."""
    other = _signer(provider.suite, "recovery")
    recipient = RecoveryRecipient(
        key_id_for(provider.suite, KeyRole.EXCHANGE, other.exchange),
        other.exchange,
        "Recovery",
        1_700_000_000,
        "container",
    )
    previous = PreviousSigner(other.key_id, other.public, 1_700_000_500, 2)
    provider.update_state(
        lambda s: (
            s.seen("payroll", 3, revision=2)
            .with_retired("payroll", 2)
            .with_recovery(recipient)
            .with_previous(previous)
        )
    )
    for state in (provider.state(), made.open(made.home.path).state()):
        assert state.revision_floor("payroll", 3) == 2
        assert state.retired_below("payroll") == 2
        assert (state.recovery, state.previous) == ((recipient,), (previous,))
    good = ss.head_bytes(made.folder)
    for member in ("retired", "recovery", "previous", "revisions"):
        edited = json.loads(good)
        edited.pop(member)
        ss.set_head(made.folder, ss.canonical(edited) + b"\n")
        with pytest.raises(VerificationError, match="modified outside keyblob"):
            made.open(made.home.path).state()
    ss.set_head(made.folder, good)
    assert made.open(made.home.path).state().retired_below("payroll") == 2


def test_a_change_that_raises_writes_nothing(provider: Provider, made: Made) -> None:
    provider.update_state(lambda s: s.seen("payroll", 1))
    head, nodes = ss.head_bytes(made.folder), ss.nodes(made.folder)

    class Refused(Exception):
        pass

    def change(state: State) -> State:
        state.seen("payroll", 9)
        raise Refused

    with pytest.raises(Refused):
        provider.update_state(change)
    assert (ss.head_bytes(made.folder), ss.nodes(made.folder)) == (head, nodes)
    assert provider.state().generation_floor("payroll") == 1


def test_a_state_edited_on_disk_is_refused(provider: Provider, made: Made) -> None:
    provider.update_state(lambda s: s.seen("payroll", 5))
    good = ss.head_bytes(made.folder)
    for edit in (
        lambda d: d.update(label="edited"),
        lambda d: d.update(
            trusted=State(trusted=(_signer(provider.suite, "x"),)).to_json(version=2)["trusted"]
        ),
        lambda d: d.update(mac="00" * 32),
    ):
        edited = json.loads(good)
        edit(edited)
        ss.set_head(made.folder, ss.canonical(edited) + b"\n")
        with pytest.raises(VerificationError, match="modified outside keyblob"):
            provider.state()
    ss.set_head(made.folder, good)
    assert provider.state().generation_floor("payroll") == 5
    # A mark's leaf replayed as it was before a later update: the lookup refuses it.
    bucket = ss.bucket_of("payroll")
    old = ss.nodes(made.folder)[(0, bucket)]
    provider.update_state(lambda s: s.seen("payroll", 6))
    ss.set_node(made.folder, 0, bucket, old)
    with pytest.raises(VerificationError, match="modified outside keyblob"):
        made.open(made.home.path).state().generation_floor("payroll")  # no cached node


def test_a_copy_of_the_home_refuses_a_state_macd_by_another_key(
    provider: Provider, made: Made, tmp_path: Path
) -> None:
    """An attacker with a copy of the home (not the passphrase, not the token) who adds a
    trusted signer to the state and MACs it with any key of their own: refused.  The same
    edit MAC'd by the provider's own key (the control) is accepted, so it is the MAC that
    refuses it; for a token container that key never leaves the token."""
    provider.update_state(lambda s: s.seen("payroll", 2))
    copy = tmp_path / "copy"
    shutil.copytree(made.home.path, copy)
    folder = copy / "containers" / NAME
    planted = _signer(provider.suite, "mallory")
    doc = ss.head(folder)
    doc.pop("mac")
    doc["trusted"] = State(trusted=(planted,)).to_json(version=2)["trusted"]

    def head_with(mac: bytes) -> bytes:
        return ss.canonical({**doc, "mac": mac.hex()}) + b"\n"

    for key in (secrets.token_bytes(32), hashlib.sha256(PASSPHRASE).digest()):
        ss.set_head(folder, head_with(hmac.new(key, ss.canonical(doc), hashlib.sha256).digest()))
        with pytest.raises(VerificationError, match="modified outside keyblob"):
            made.open(copy).state()
    ss.set_head(folder, head_with(made.mac(ss.canonical(doc))))
    assert made.open(copy).state().signer(planted.key_id) == planted
    assert provider.state().signer(planted.key_id) is None  # the original is untouched


def test_an_unlocked_container_cannot_be_pickled(provider: Provider) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(provider)


def test_no_secret_in_a_repr(provider: Provider, made: Made) -> None:
    shown = repr(provider) + str(provider) + repr(vars(provider))
    secrets_held: list[bytes] = [made.secret]
    if _is_token(provider):
        session = provider._session  # type: ignore[attr-defined]
        shown += repr(session) + repr(provider.record)  # type: ignore[attr-defined]
    else:
        keys = provider._keys  # type: ignore[attr-defined]
        secrets_held += [keys.seal, keys.state, keys.check]
        secrets_held += [
            suites.private_bytes(provider._exchange),  # type: ignore[attr-defined]
            suites.private_bytes(provider._signature),  # type: ignore[attr-defined]
        ]
    for secret in secrets_held:
        for form in (secret.hex(), repr(secret), secret.decode("latin-1")):
            assert form not in shown


# -- the suites a token cannot run: refused in one line, nothing made -------------------


def _token_object_labels(token: support.SoftHSMToken) -> set[str]:
    from keyblob.providers import pkcs11 as token_provider

    with token_provider.open_session(token.module, token.label, token.pin) as session:
        return {str(obj.label) for obj in session.session.get_objects()}


@pytest.mark.parametrize("suite", ["x25519", "rsa", "pq"])
def test_a_token_refuses_the_suites_it_cannot_run(
    suite: str,
    softhsm_token: support.SoftHSMToken,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYBLOB_PIN", softhsm_token.pin)
    before = _token_object_labels(softhsm_token)
    argv = ["init", "--provider", "pkcs11", "--module", softhsm_token.module]
    status = main([*argv, "--token", softhsm_token.label, "--suite", suite])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("keyblob: error: ") and line.endswith("use --suite p256")
    assert softhsm_token.pin not in err
    assert not (tmp_path / "home" / "containers").exists() or not any(
        (tmp_path / "home" / "containers").iterdir()
    )
    assert _token_object_labels(softhsm_token) == before


def test_rotated_keys_open_wraps_for_every_kept_exchange_key(
    provider: Provider, made: Made
) -> None:
    """keys rotate (FORMAT.md 5.1, 5.1.1 ``previous``): new pairs made in the provider; the
    old exchange key still opens what was wrapped for it, by its key id only, and after
    forget-old nothing does; the container read again from its home agrees."""
    assert isinstance(provider, RotatingKeys)
    before_x, before_s = provider.exchange_id, provider.signature_id
    old_public = suites.load_exchange_public(provider.suite, provider.exchange_public)
    key = secrets.token_bytes(32)
    old_wrap = suites.wrap(old_public, key, CONTEXT)
    replaced = provider.rotate_keys((KeyRole.EXCHANGE, KeyRole.SIGNATURE), now=1_700_000_000)
    assert {(k.role, k.key_id, k.until) for k in replaced} == {
        (KeyRole.EXCHANGE, before_x, 1_700_000_000),
        (KeyRole.SIGNATURE, before_s, 1_700_000_000),
    }
    assert before_x != provider.exchange_id and before_s != provider.signature_id
    assert provider.exchange_ids == (provider.exchange_id, before_x)
    new_public = suites.load_exchange_public(provider.suite, provider.exchange_public)
    new_wrap = suites.wrap(new_public, key, CONTEXT)
    signature_public = suites.load_signature_public(provider.suite, provider.signature_public)
    suites.verify(signature_public, provider.sign(b"m"), b"m")  # signs with the new key
    for opened in (provider, made.open(made.home.path)):
        assert opened.exchange_ids == (provider.exchange_id, before_x)
        assert opened.unwrap_as(before_x, old_wrap, CONTEXT) == key
        assert opened.unwrap(new_wrap, CONTEXT) == key
        with pytest.raises(VerificationError):
            opened.unwrap(old_wrap, CONTEXT)  # the current key does not open the old wrap
        with pytest.raises(VerificationError):
            opened.unwrap_as(before_x, new_wrap, CONTEXT)
        with pytest.raises(VerificationError):  # not a key of this container: no unwrap
            opened.unwrap_as(before_s, old_wrap, CONTEXT)
    assert {k.key_id for k in made.home.old_public_keys(NAME)} == {before_x, before_s}
    labels = _token_object_labels(made.token) if _is_token(provider) else set()
    forgotten = provider.forget_old_keys()
    assert {k.key_id for k in forgotten} == {before_x, before_s}
    for opened in (provider, made.open(made.home.path)):
        assert opened.exchange_ids == (provider.exchange_id,)
        with pytest.raises(VerificationError):
            opened.unwrap_as(before_x, old_wrap, CONTEXT)
        assert opened.unwrap(new_wrap, CONTEXT) == key
    assert made.home.old_public_keys(NAME) == ()
    assert "previous" not in json.loads((made.folder / "container.json").read_text())
    if _is_token(provider):  # the old objects are destroyed in the token, nothing else
        gone = labels - _token_object_labels(made.token)
        assert gone and all(label.endswith(("/exchange", "/signature")) for label in gone)
        assert len(gone) == 2


def test_a_rotation_that_cannot_write_changes_nothing(
    provider: Provider, made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keys rotate on a full disk: ProviderError naming the container; container.json, the
    open container's keys and (a token's) objects are as before: the pairs made for the
    rotation are destroyed again."""
    import errno
    import sys

    from keyblob import ProviderError

    assert isinstance(provider, RotatingKeys)
    files = {p.name: p.read_bytes() for p in sorted(made.folder.iterdir())}
    labels = _token_object_labels(made.token) if _is_token(provider) else set()
    keys = (provider.exchange_public, provider.signature_public, provider.exchange_ids)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys.modules[type(provider).__module__], "write_atomic", disk_full)
    with pytest.raises(ProviderError, match=f"cannot write container '{NAME}': No space"):
        provider.rotate_keys((KeyRole.EXCHANGE, KeyRole.SIGNATURE), now=1_700_000_000)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in sorted(made.folder.iterdir())} == files
    assert (provider.exchange_public, provider.signature_public, provider.exchange_ids) == keys
    assert provider.old_keys == ()
    assert (_token_object_labels(made.token) if _is_token(provider) else set()) == labels


def test_a_rotation_past_the_old_key_bound_changes_nothing(provider: Provider, made: Made) -> None:
    """FORMAT.md 5.1.2: with 8 old pairs kept, keys rotate is refused before it writes
    anything: the state's ``previous`` list, container.json and (a token's) objects stay as
    they were, whichever roles were asked for."""
    from keyblob import UsageError, blobs
    from keyblob.providers.base import MAX_OLD_KEYS

    assert isinstance(provider, RotatingKeys)
    for i in range(MAX_OLD_KEYS):
        provider.rotate_keys((KeyRole.EXCHANGE,), now=1_700_000_000 + i)
    files = {p.name: p.read_bytes() for p in sorted(made.folder.iterdir())}
    labels = _token_object_labels(made.token) if _is_token(provider) else set()
    for roles in ([KeyRole.SIGNATURE], [KeyRole.EXCHANGE, KeyRole.SIGNATURE]):
        with pytest.raises(UsageError, match="keeps 8 old keys already"):
            blobs.rotate_own_keys(provider, roles)
        assert {p.name: p.read_bytes() for p in sorted(made.folder.iterdir())} == files
        assert provider.state().previous == ()
        assert made.open(made.home.path).state().previous == ()
        assert (_token_object_labels(made.token) if _is_token(provider) else set()) == labels
