"""Container labels (FORMAT.md 1.5), the version 2 public key file that signs them (3.2),
the label in the authenticated state (5.2), trusted signers' labels, and fingerprints read
aloud (3.1)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import state_support as ss
from keyblob import Home, SoftwareContainer, Suite, publickeys
from keyblob.errors import FormatError, UnsupportedError, UsageError, VerificationError
from keyblob.format import PublicKeyFile, armor
from keyblob.format.armor import PUBLIC_KEY
from keyblob.format.pubkey import LABEL_SIGNATURE_LABEL, group_fingerprint, label_message
from keyblob.keys import KeyRole, check_label, label_from_text
from keyblob.trust import State, TrustedSigner, find_signer
from support import FAST_KDF, PASSPHRASE

ALICE = "Alice Martin <alice@example.com>"

# -- 1.5 the label rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    [ALICE, "a", "Zoë Ünal", "名前", "x" * 200, "é" * 100, "a  b", "O'Brien (ops) #2"],
)
def test_valid_labels(label: str) -> None:
    assert check_label(label) == label


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("", "1 to 200 bytes"),
        ("x" * 201, "1 to 200 bytes"),
        ("é" * 101, "1 to 200 bytes"),  # 202 bytes, 101 characters
        ("a\nb", "U+000A"),
        ("a\x00", "U+0000"),
        ("a\x7f", "U+007F"),
        ("a\x85", "U+0085"),
        ("a\u202eb", "U+202E"),  # right-to-left override
        ("a\u200bb", "U+200B"),  # zero-width space
        ("a\u2066b", "U+2066"),
        ("\ufeffa", "U+FEFF"),
        ("a\u2028b", "U+2028"),
        (" a", "space"),
        ("a ", "space"),
        ("e\u0301", "NFC"),  # decomposed é
        ("a\ud800", "Unicode"),
    ],
)
def test_invalid_labels(label: str, why: str) -> None:
    with pytest.raises(UsageError, match=re.escape(why)):
        check_label(label)


def test_text_typed_by_people_is_normalized() -> None:
    assert label_from_text("Zoe\u0301") == "Zoé"
    with pytest.raises(UsageError):
        label_from_text("Zoe\u0301\n")


# -- 3.2 the version 2 file ------------------------------------------------------------------


@pytest.fixture
def alice(tmp_path: Path) -> SoftwareContainer:
    return Home(tmp_path / "a").create("default", PASSPHRASE, kdf=FAST_KDF, label=ALICE)


def test_made_file_is_version_2_and_reads_back(alice: SoftwareContainer) -> None:
    pub = publickeys.make(alice)
    data = pub.to_bytes()
    assert data[4] == 2 and pub.version == 2 and pub.label_signed
    for given in (data, armor(data, PUBLIC_KEY)):
        back = publickeys.read(given)
        assert back == pub and back.label == ALICE
    assert PublicKeyFile.from_bytes(data).to_bytes() == data


def test_rsa_file_reads_back(make_container: Callable[..., SoftwareContainer]) -> None:
    carol = make_container("carol", suite=Suite.RSA)
    publickeys.set_label(carol, "Carol Ng")
    pub = publickeys.read(publickeys.make(carol).to_bytes())
    assert (pub.suite, pub.label, len(pub.label_signature or b"")) == (Suite.RSA, "Carol Ng", 256)


def test_label_signature_covers_the_label_constant_and_the_whole_body(
    alice: SoftwareContainer,
) -> None:
    pub = publickeys.make(alice)
    body = pub.to_bytes()[: -2 - 64]
    assert label_message(pub.suite, pub.label, pub.exchange, pub.signature) == (
        LABEL_SIGNATURE_LABEL + body
    )
    assert LABEL_SIGNATURE_LABEL == b"keyblob/v1/pubkey-label\x00"


def _edit_label(data: bytes, new: bytes) -> bytes:
    n = data[8]
    return data[:8] + bytes([len(new)]) + new + data[9 + n :]


def test_a_label_edited_in_transit_is_refused(alice: SoftwareContainer) -> None:
    data = publickeys.make(alice).to_bytes()
    edited = _edit_label(data, b"Mallory <alice@example.com>")
    PublicKeyFile.from_bytes(edited)  # well-formed: only the signature can tell
    with pytest.raises(VerificationError, match="its label is not signed"):
        publickeys.read(edited)


def test_a_label_signed_by_another_key_is_refused(
    alice: SoftwareContainer, make_container: Callable[..., SoftwareContainer]
) -> None:
    mallory = make_container("mallory")
    pub = publickeys.make(alice)
    forged = dataclasses.replace(pub, label_signature=mallory.sign(pub.label_message()))
    with pytest.raises(VerificationError, match="its label is not signed"):
        publickeys.read(forged.to_bytes())


def test_a_swapped_exchange_key_is_refused(
    alice: SoftwareContainer, make_container: Callable[..., SoftwareContainer]
) -> None:
    other = make_container("other")
    pub = publickeys.make(alice)
    swapped = replace(pub, exchange=other.exchange_public)
    with pytest.raises(VerificationError):
        publickeys.read(swapped.to_bytes())


@pytest.mark.parametrize(
    ("label", "why"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"a\x1bb", "U+001B"),
        (b"x" * 201, "label_len"),
        (b"e\xcc\x81", "NFC"),
        (b"", "label_len"),
    ],
)
def test_malformed_labels_are_format_errors(
    alice: SoftwareContainer, label: bytes, why: str
) -> None:
    data = _edit_label(publickeys.make(alice).to_bytes(), label)
    with pytest.raises(FormatError, match=re.escape(why)):
        PublicKeyFile.from_bytes(data)
    with pytest.raises(FormatError, match=re.escape(why)):
        publickeys.read(data)


def test_trailing_and_missing_bytes_are_format_errors(alice: SoftwareContainer) -> None:
    data = publickeys.make(alice).to_bytes()
    for bad in (data + b"\x00", data[:-1], data[: -2 - 64], data[:-66] + b"\x00\x3f" + data[-63:]):
        with pytest.raises(FormatError):
            publickeys.read(bad)


def test_version_1_files_still_read_with_an_unsigned_name(alice: SoftwareContainer) -> None:
    v1 = PublicKeyFile(alice.suite, alice.name, alice.exchange_public, alice.signature_public)
    data = v1.to_bytes()
    assert data[4] == 1
    pub = publickeys.read(data)
    assert (pub.version, pub.label, pub.label_signed) == (1, "default", False)
    assert pub.fingerprint == publickeys.make(alice).fingerprint
    with pytest.raises(FormatError, match="container name"):
        PublicKeyFile.from_bytes(_edit_label(data, b"Alice"))  # v1 labels are names


def test_version_3_is_unsupported(alice: SoftwareContainer) -> None:
    data = publickeys.make(alice).to_bytes()
    with pytest.raises(UnsupportedError):
        publickeys.read(data[:4] + b"\x03" + data[5:])


def test_fingerprint_does_not_change_with_the_label(alice: SoftwareContainer) -> None:
    before = publickeys.make(alice).fingerprint
    publickeys.set_label(alice, "Alice M.")
    after = publickeys.make(alice)
    assert after.label == "Alice M." and after.fingerprint == before


# -- 5.2 the label at rest -------------------------------------------------------------------


def test_label_is_kept_in_the_authenticated_state(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    made = home.create("c", PASSPHRASE, kdf=FAST_KDF, label="Zoe\u0301")
    assert publickeys.label_of(made) == "Zoé"
    assert publickeys.set_label(made, "Zoé B.") == "Zoé B."
    reopened = home.open("c", PASSPHRASE)
    assert publickeys.label_of(reopened) == "Zoé B."
    assert publickeys.read(publickeys.make(reopened).to_bytes()).label == "Zoé B."


def test_relabelling_through_the_home_files_is_refused(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF, label=ALICE)
    doc = ss.head(home.container_dir("c"))
    doc["label"] = "Mallory"
    ss.set_head(home.container_dir("c"), json.dumps(doc).encode())
    with pytest.raises(VerificationError, match="modified outside keyblob"):
        publickeys.label_of(home.open("c", PASSPHRASE))


def test_without_a_label_the_name_stands_for_it_and_the_state_is_as_before(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path / "h")
    made = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    assert publickeys.label_of(made) == "c"
    assert b'"label"' not in ss.head_bytes(home.container_dir("c"))


def test_create_refuses_an_invalid_label(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    with pytest.raises(UsageError, match=re.escape("U+000A")):
        home.create("c", PASSPHRASE, kdf=FAST_KDF, label="a\nb")
    assert not home.container_dir("c").exists()


def test_set_label_refuses_an_invalid_label(alice: SoftwareContainer) -> None:
    with pytest.raises(UsageError):
        publickeys.set_label(alice, "\u202eevil")
    assert publickeys.label_of(alice) == ALICE


def _signer(label: str) -> TrustedSigner:
    from keyblob.keys import key_id_for

    public = bytes(range(32))
    return TrustedSigner(
        key_id=key_id_for(Suite.X25519, KeyRole.SIGNATURE, public),
        suite=Suite.X25519,
        public=public,
        exchange=bytes(range(1, 33)),
        label=label,
        added=1,
    )


def test_state_round_trips_labels_and_refuses_bad_ones() -> None:
    state = State(trusted=(_signer(ALICE),), label="Bob")
    doc = state.to_json()
    assert doc["label"] == "Bob" and doc["trusted"][0]["label"] == ALICE
    assert State.from_json({"format": "f", "container": "c", **doc}) == state
    for bad in ({**doc, "label": "a\n"}, {**doc, "label": 5}):
        with pytest.raises(FormatError):
            State.from_json({"format": "f", "container": "c", **bad})
    old = {"format": "f", "container": "c", "high_water": {}, "trusted": []}
    assert State.from_json(old).label is None  # states written before labels
    with pytest.raises(UsageError):
        State(label="")


def test_trusting_a_signer_again_takes_its_new_label() -> None:
    state = State().with_signer(_signer("alice"))
    state = state.with_signer(replace(_signer(ALICE), added=99))
    (signer,) = state.trusted
    assert (signer.label, signer.added) == (ALICE, 1)


# -- 3.1 fingerprints read aloud -------------------------------------------------------------


def test_group_fingerprint() -> None:
    assert group_fingerprint("3f2a9c1e" * 4) == "3f2a 9c1e 3f2a 9c1e 3f2a 9c1e 3f2a 9c1e"


def test_find_signer_accepts_grouped_fingerprints() -> None:
    signer = _signer(ALICE)
    state = State(trusted=(signer,))
    from keyblob.format import fingerprint

    fp = fingerprint(signer.suite, signer.exchange, signer.public)
    assert find_signer(state, group_fingerprint(fp)) is signer
    assert find_signer(state, " " + group_fingerprint(fp)[:9].upper()) is signer


def test_the_largest_file_fits_the_limit_as_format_md_says() -> None:
    label = "é" * 100  # 200 bytes
    pub = PublicKeyFile(Suite.RSA, label, b"\x30" * 1024, b"\x30" * 1024, b"\x00" * 512)
    data = pub.to_bytes()
    assert len(data) == 2775
    assert PublicKeyFile.from_bytes(data) == pub


def test_every_bit_flip_of_a_version_2_file_is_refused(alice: SoftwareContainer) -> None:
    """Whatever bit changes (label, keys, lengths, signature), the file never reads as
    another valid file."""
    data = publickeys.make(alice).to_bytes()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises((FormatError, VerificationError)):
            publickeys.read(bytes(flipped))
