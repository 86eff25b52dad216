"""The recovery kit (FORMAT.md 8): strict reading, bounds, every edited byte refused, the
passphrase and the key binding checked when it is opened."""

from __future__ import annotations

import json
import pickle

import pytest

from keyblob.errors import FormatError, PassphraseError, VerificationError
from keyblob.keys import KeyRole, Suite, key_id_for
from keyblob.providers import recoverykit, suites
from keyblob.providers.recoverykit import RecoveryKit, make_recovery_kit, open_recovery_kit
from keyblob.providers.software import KdfParams

#: The lowest parameters the reader accepts: the tests pay 8 MiB per derivation, not 256.
FAST = KdfParams(memory_kib=8192, iterations=1, lanes=1)
PASS = b"correct horse battery staple"


@pytest.fixture(scope="module")
def kit() -> RecoveryKit:
    return make_recovery_kit(Suite.X25519, PASS, kdf=FAST)


def _rewritten(kit: RecoveryKit, change) -> bytes:
    """The kit's JSON changed by ``change`` and its digest recomputed: a well-digested kit
    whose other rules are what the test breaks."""
    doc = json.loads(kit.to_bytes())
    del doc["digest"]
    change(doc)
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    import hashlib

    doc["digest"] = hashlib.sha256(recoverykit.DIGEST_LABEL + body).hexdigest()
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_round_trip_and_open(kit: RecoveryKit) -> None:
    data = kit.to_bytes()
    assert data.startswith(b'{"created":') and data.endswith(b"}\n")
    again = RecoveryKit.from_bytes(data)
    assert again == kit and again.to_bytes() == data
    key = open_recovery_kit(again, PASS)
    assert key.exchange_id == key_id_for(Suite.X25519, KeyRole.EXCHANGE, kit.exchange)
    public = suites.load_exchange_public(Suite.X25519, kit.exchange)
    wrapped = suites.wrap(public, b"k" * 32, b"context")
    assert key.unwrap(wrapped, b"context") == b"k" * 32


def test_the_writer_uses_the_strong_parameters() -> None:
    assert recoverykit.RECOVERY_KDF.memory_kib > KdfParams().memory_kib
    assert recoverykit.RECOVERY_KDF.iterations > KdfParams().iterations
    assert recoverykit.RECOVERY_KDF.memory_kib <= KdfParams.MAX_MEMORY_KIB  # readable (8.3)


def test_wrong_passphrase(kit: RecoveryKit) -> None:
    with pytest.raises(PassphraseError):
        open_recovery_kit(kit, b"correct horse battery stapler")
    with pytest.raises(PassphraseError):
        open_recovery_kit(kit, PASS + b"\n")


def test_every_flipped_bit_is_refused(kit: RecoveryKit) -> None:
    data = kit.to_bytes()
    for i in range(len(data)):
        for bit in (0x01, 0x20, 0x80):
            edited = bytearray(data)
            edited[i] ^= bit
            with pytest.raises((FormatError, VerificationError)):
                RecoveryKit.from_bytes(bytes(edited))


def test_every_truncation_is_refused(kit: RecoveryKit) -> None:
    data = kit.to_bytes()
    for n in range(len(data)):
        with pytest.raises(FormatError):
            RecoveryKit.from_bytes(data[:n])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]\n",
        b'{"a":1}\n',
        b"\xef\xbb\xbf{}\n",
        b'{"created":NaN}\n',
        b'{"created":1,"created":2}\n',
        b" " * (recoverykit.MAX_KIT_SIZE + 1),
    ],
)
def test_not_a_kit(data: bytes) -> None:
    with pytest.raises(FormatError):
        RecoveryKit.from_bytes(data)


def test_not_canonical(kit: RecoveryKit) -> None:
    data = kit.to_bytes()
    for variant in (data[:-1], data + b"\n", b" " + data, data.replace(b",", b", ", 1)):
        with pytest.raises(FormatError, match="canonical"):
            RecoveryKit.from_bytes(variant)
    pretty = json.dumps(json.loads(data), indent=1).encode() + b"\n"
    with pytest.raises(FormatError, match="canonical"):
        RecoveryKit.from_bytes(pretty)


def _set(path: tuple[str, ...], value: object):
    def change(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(("kdf", "memory_kib"), 8191), "memory_kib"),
        (_set(("kdf", "memory_kib"), 262145), "memory_kib"),
        (_set(("kdf", "memory_kib"), 65536.0), "memory_kib"),
        (_set(("kdf", "iterations"), 0), "iterations"),
        (_set(("kdf", "iterations"), 9), "iterations"),
        (_set(("kdf", "iterations"), True), "iterations"),
        (_set(("kdf", "lanes"), 65), "lanes"),
        (_set(("kdf", "lanes"), "4"), "lanes"),
        (_set(("kdf", "algorithm"), "scrypt"), "argon2id"),
        (_set(("kdf", "salt"), "AAAA"), "salt"),
        (_set(("kdf", "extra"), 1), "argon2id"),
        (_set(("created",), -1), "created"),
        (_set(("created",), 2**63), "created"),
        (_set(("format",), "keyblob-recovery-kit/v2"), "format"),
        (_set(("suite",), "pq2"), "suite"),
        (_set(("suite",), 1), "suite"),
        (_set(("exchange",), ""), "exchange"),
        (_set(("exchange",), "A" * 5464 + "=="), "exchange"),
        (_set(("exchange",), "not base64!"), "exchange"),
        (_set(("sealed",), "AAAA"), "sealed"),
        (_set(("extra",), 1), "members"),
    ],
)
def test_field_rules(kit: RecoveryKit, change, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        RecoveryKit.from_bytes(_rewritten(kit, change))


def test_non_canonical_base64_is_refused(kit: RecoveryKit) -> None:
    text = json.loads(kit.to_bytes())["exchange"]
    assert text.endswith("=")
    # The last character before the padding carries unused bits: set one of them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = text.rstrip("=")[-1]
    odd = text.rstrip("=")[:-1] + alphabet[alphabet.index(last) | 1] + "="
    assert odd != text
    with pytest.raises(FormatError, match="canonical base64"):
        RecoveryKit.from_bytes(_rewritten(kit, _set(("exchange",), odd)))


def test_edited_digest_says_changed(kit: RecoveryKit) -> None:
    doc = json.loads(kit.to_bytes())
    doc["created"] += 1
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    with pytest.raises(VerificationError, match="changed after it was written"):
        RecoveryKit.from_bytes(data)


def test_a_sealed_key_moved_next_to_another_public_key_does_not_open(kit: RecoveryKit) -> None:
    other = make_recovery_kit(Suite.X25519, PASS, kdf=FAST)
    # Another kit's public key with this kit's sealed key (digest recomputed): the AAD
    # binds the sealed key to its public key, so the passphrase no longer opens it.
    moved = RecoveryKit.from_bytes(
        _rewritten(kit, _set(("exchange",), json.loads(other.to_bytes())["exchange"]))
    )
    with pytest.raises(PassphraseError):
        open_recovery_kit(moved, PASS)


def test_a_key_sealed_for_another_public_key_is_refused() -> None:
    # Sealed honestly (AAD over the public key it names), but the private key is another
    # pair's: the kit opens, and its key is refused.
    mine, theirs = (suites.generate(Suite.X25519)[0] for _ in range(2))
    made = make_recovery_kit(Suite.X25519, PASS, kdf=FAST, _private=theirs)
    forged = RecoveryKit(
        suite=made.suite,
        created=made.created,
        kdf=made.kdf,
        exchange=suites.public_bytes(mine),
        sealed=made.sealed,
    )
    import dataclasses

    aead = recoverykit._kit_seal_key(PASS, made.kdf)
    nonce = made.sealed[:12]
    resealed = nonce + aead.encrypt(nonce, suites.private_bytes(theirs), forged.seal_aad())
    forged = dataclasses.replace(forged, sealed=resealed)
    with pytest.raises(VerificationError, match="not the one for its public key"):
        open_recovery_kit(RecoveryKit.from_bytes(forged.to_bytes()), PASS)


def test_an_invalid_public_key_is_refused_before_any_derivation(kit: RecoveryKit) -> None:
    low_order = bytes(32)  # X25519 all-zero: a low-order point (FORMAT.md 1.3)
    bad = RecoveryKit.from_bytes(_rewritten(kit, _set(("exchange",), recoverykit._b64(low_order))))
    with pytest.raises(FormatError):
        open_recovery_kit(bad, b"any passphrase: never derived")


@pytest.mark.parametrize("suite", [Suite.P256, Suite.RSA])
def test_other_suites(suite: Suite) -> None:
    made = make_recovery_kit(suite, PASS, kdf=FAST)
    key = open_recovery_kit(RecoveryKit.from_bytes(made.to_bytes()), PASS)
    public = suites.load_exchange_public(suite, made.exchange)
    assert key.unwrap(suites.wrap(public, b"s" * 32, b"ctx"), b"ctx") == b"s" * 32


def test_an_opened_key_is_not_pickled_nor_shown(kit: RecoveryKit) -> None:
    key = open_recovery_kit(kit, PASS)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert repr(key) == f"<RecoveryKey kx-{key.exchange_id.short} suite=x25519>"
