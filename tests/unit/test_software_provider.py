"""The software provider: sealing at rest (P6), passphrase, permissions, state MAC (P4)."""

from __future__ import annotations

import base64
import errno
import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import state_support as ss
from keyblob import (
    FormatError,
    Home,
    NotFoundError,
    PassphraseError,
    ProviderError,
    Suite,
    UsageError,
    VerificationError,
)
from keyblob.keys import KeyRole, key_id_for
from keyblob.providers import software
from keyblob.providers.software import MAX_FILE_SIZE
from keyblob.trust import State
from support import FAST_KDF, PASSPHRASE


@pytest.mark.software_only(
    "Home.create and open of software containers; a token's: tests/contract/"
    "test_provider_contract.py"
)
def test_create_and_open(tmp_path, suite):
    home = Home(tmp_path / "h")
    made = home.create("c1", PASSPHRASE, suite, bits=2048, kdf=FAST_KDF)
    opened = home.open("c1", PASSPHRASE)
    assert (opened.exchange_id, opened.signature_id) == (made.exchange_id, made.signature_id)
    assert opened.suite is suite and home.container_names() == ["c1"]
    message = b"hello"
    from keyblob.providers import suites

    suites.verify(
        suites.load_signature_public(suite, opened.signature_public), made.sign(message), message
    )


def test_private_keys_are_not_in_the_clear(tmp_path):
    from keyblob.providers import suites

    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    text = (tmp_path / "h" / "containers" / "c" / "container.json").read_bytes()
    for key in (c._exchange, c._signature):
        raw = suites.private_bytes(key)
        assert raw not in text and raw.hex().encode() not in text
        import base64

        assert base64.b64encode(raw) not in text
    assert "private" not in repr(c).lower()
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(c)


def test_wrong_passphrase(tmp_path):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    with pytest.raises(PassphraseError, match="wrong passphrase for container 'c'"):
        home.open("c", b"nope")


def test_empty_passphrase_and_duplicates(tmp_path):
    home = Home(tmp_path / "h")
    with pytest.raises(UsageError):
        home.create("c", b"", kdf=FAST_KDF)
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    with pytest.raises(ProviderError, match="already exists"):
        home.create("c", PASSPHRASE, kdf=FAST_KDF)
    with pytest.raises(NotFoundError):
        home.open("other", PASSPHRASE)


def test_existence_is_known_without_a_passphrase(tmp_path):
    """What open and create refuse for a missing or existing container, said before a
    passphrase is asked (the CLI's order), with the same errors."""
    home = Home(tmp_path / "h")
    with pytest.raises(NotFoundError, match=r"no container 'c' .*no such folder.*keyblob init"):
        home.require("c")
    home.refuse_existing("c")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    home.require("c")
    with pytest.raises(ProviderError, match="container 'c' already exists"):
        home.refuse_existing("c")
    with pytest.raises(UsageError, match="invalid name"):
        home.require("../c")


def test_swapped_public_key_in_container_file_is_detected(tmp_path):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    other = Home(tmp_path / "o").create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    doc = json.loads(path.read_text())
    import base64

    doc["signature"]["public"] = base64.b64encode(other.signature_public).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="modified outside keyblob"):
        home.open("c", PASSPHRASE)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("memory_kib", 1024, "memory"),
        ("memory_kib", 2**40, "memory"),
        ("iterations", 0, "iterations"),
        ("lanes", 1000, "lanes"),
        ("algorithm", "pbkdf2", "unknown KDF"),
    ],
)
def test_hostile_kdf_parameters_refused(tmp_path, field, value, match):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    doc = json.loads(path.read_text())
    doc["kdf"][field] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=match):
        home.open("c", PASSPHRASE)


def test_damaged_container_file(tmp_path):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    path.write_text("{not json")
    with pytest.raises(FormatError, match="damaged"):
        home.open("c", PASSPHRASE)


def test_oversized_container_file_refused_unread(tmp_path):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    path.write_bytes(path.read_bytes() + b" " * (MAX_FILE_SIZE + 1))
    with pytest.raises(FormatError, match="damaged file"):
        home.open("c", PASSPHRASE)


def test_container_files_that_cannot_be_written(tmp_path, monkeypatch):
    (tmp_path / "h").mkdir(mode=0o700)
    (tmp_path / "h" / "containers").write_bytes(b"a file where a folder should be")
    (tmp_path / "h" / "containers").chmod(0o600)
    with pytest.raises(ProviderError, match=r"cannot create .*containers/c: Not a directory"):
        Home(tmp_path / "h").create("c", PASSPHRASE, kdf=FAST_KDF)
    home = Home(tmp_path / "ok")
    container = home.create("c", PASSPHRASE, Suite.RSA, bits=2048, kdf=FAST_KDF)
    path = tmp_path / "ok" / "containers" / "c" / "container.json"
    before, public = path.read_bytes(), container.exchange_public

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(software, "write_atomic", disk_full)
    new = rsa.generate_private_key(65537, 2048)
    with pytest.raises(ProviderError, match="cannot write container 'c': No space left"):
        container.replace_key_pair(KeyRole.EXCHANGE, new, force=False)
    monkeypatch.undo()
    assert path.read_bytes() == before and container.exchange_public == public
    assert home.open("c", PASSPHRASE).exchange_public == public


@pytest.mark.parametrize("target", ["home", "containers", "container", "file"])
def test_unsafe_permissions_refused(tmp_path, target):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = {
        "home": tmp_path / "h",
        "containers": tmp_path / "h" / "containers",
        "container": tmp_path / "h" / "containers" / "c",
        "file": tmp_path / "h" / "containers" / "c" / "container.json",
    }[target]
    path.chmod(0o644 if path.is_file() else 0o770)
    with pytest.raises(ProviderError, match="by others"):
        home.open("c", PASSPHRASE)


def test_state_mac_detects_edits_and_deletion(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    c.update_state(lambda s: s.seen("payroll", 5))
    assert home.open("c", PASSPHRASE).state().generation_floor("payroll") == 5
    ss.make_v1(c, {"payroll": 5})  # the version 1 reader (FORMAT.md 5.2.1); v2: test_state_tree
    path = tmp_path / "h" / "containers" / "c" / "state.json"
    good = path.read_text()
    for edit in (
        lambda d: d["high_water"].update(payroll=1),
        lambda d: d["high_water"].pop("payroll"),
        lambda d: d.update(mac="00" * 32),
        lambda d: d.pop("mac"),
        lambda d: d.update(container="other"),
    ):
        doc = json.loads(good)
        edit(doc)
        path.write_text(json.dumps(doc))
        with pytest.raises(VerificationError, match="modified outside keyblob"):
            c.state()
    # Another container's (valid) state pasted in is refused: the MAC key differs.
    other = Home(tmp_path / "o").create("c", PASSPHRASE, kdf=FAST_KDF)
    ss.make_v1(other, {})
    path.write_text((tmp_path / "o" / "containers" / "c" / "state.json").read_text())
    with pytest.raises(VerificationError):
        c.state()
    assert other.state() == State()
    path.unlink()
    with pytest.raises(VerificationError, match="missing"):
        c.state()


def test_concurrent_state_updates_are_not_lost(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    names = [f"k{i}" for i in range(16)]
    threads = [
        threading.Thread(target=c.update_state, args=(lambda s, n=n: s.seen(n, 1),)) for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.state().all_marks()) == sorted(names)


def test_rsa_bits_validated(tmp_path):
    with pytest.raises(UsageError, match="2048, 3072 or 4096"):
        Home(tmp_path / "h").create("c", PASSPHRASE, Suite.RSA, bits=1024, kdf=FAST_KDF)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda d: d["kdf"].update(salt="AAAA"), FormatError, "salt"),
        (lambda d: d["exchange"].update(sealed="AAAA"), VerificationError, "modified"),
        # The shape is checked before the KDF (FORMAT.md 5.1): a member missing is malformed.
        (lambda d: d["signature"].pop("sealed"), FormatError, "exactly the members"),
        (lambda d: d.update(suite="pq2"), FormatError, "damaged"),
        # pq is a suite, but the seal's AAD binds the suite the keys were made for (5.1)
        (lambda d: d.update(suite="pq"), VerificationError, "modified"),
    ],
)
def test_damaged_fields_fail_cleanly(tmp_path, edit, error, match):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(error, match=match):
        home.open("c", PASSPHRASE)


def test_state_file_permissions_checked(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    (tmp_path / "h" / "containers" / "c" / "state.db").chmod(0o644)
    with pytest.raises(ProviderError, match="state file"):
        c.state()
    (tmp_path / "h" / "containers" / "c" / "state.db").chmod(0o600)
    ss.make_v1(c, {})
    (tmp_path / "h" / "containers" / "c" / "state.json").chmod(0o644)
    with pytest.raises(ProviderError, match="state file"):
        c.state()


def test_rsa_public_key_must_be_canonical_der():
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from keyblob.providers import suites

    key = rsa.generate_private_key(65537, 2048).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert suites.load_exchange_public(Suite.RSA, der).public_numbers() == key.public_numbers()
    # The same SEQUENCE with a long-form length of the outer header: parses, not canonical.
    body = der[4:]
    long_form = b"\x30\x83" + len(body).to_bytes(3, "big") + body
    with pytest.raises(FormatError):
        suites.load_exchange_public(Suite.RSA, long_form)
    small = rsa.generate_private_key(3, 2048).public_key()
    with pytest.raises(FormatError, match="65537"):
        suites.load_signature_public(
            Suite.RSA, small.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )


def test_state_head_is_canonical_json_with_the_documented_mac(tmp_path):
    """FORMAT.md 5.2, recomputed here with the standard library alone."""
    import hashlib
    import hmac

    from keyblob.trust import TrustedSigner

    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    signer = TrustedSigner(
        key_id=key_id_for(Suite.X25519, KeyRole.SIGNATURE, bytes(32)),
        suite=Suite.X25519,
        public=bytes(32),
        exchange=bytes([1]) * 32,
        label="trusted",
        added=1_700_000_000,
    )
    c.update_state(lambda s: s.with_signer(signer))
    for name in ("zeta", "mac", "trusted", "container", "a.b-c_d", "high_water"):
        c.update_state(lambda s, n=name: s.seen(n, len(n)))
    data = ss.head_bytes(tmp_path / "h" / "containers" / "c")
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    mac = bytes.fromhex(doc.pop("mac"))
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert hmac.compare_digest(mac, hmac.new(c._keys.state, body, hashlib.sha256).digest())
    assert doc["marks"]["count"] == 6 and doc["trusted"][0]["label"] == "trusted"
    assert doc["format"] == "keyblob-state/v2" and doc["views"] == []
    again = home.open("c", PASSPHRASE).state()
    assert again.generation_floor("trusted") == 7 and again.trusted == c.state().trusted


def test_an_oversized_state_file_is_refused_as_over_the_bound(tmp_path):
    from keyblob.providers.homestate import MAX_STATE_SIZE

    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    ss.make_v1(c, {})
    path = tmp_path / "h" / "containers" / "c" / "state.json"
    with path.open("r+b") as f:
        f.truncate(MAX_STATE_SIZE + 1)  # sparse: costs no disk
    with pytest.raises(VerificationError, match="over the 4194304-byte bound"):
        c.state()
    with pytest.raises(VerificationError, match="over the 4194304-byte bound"):
        home.open("c", PASSPHRASE).state()


def test_the_derived_keys_never_show_in_a_repr(tmp_path):
    c = Home(tmp_path / "h").create("c", PASSPHRASE, kdf=FAST_KDF)
    keys = c._keys
    shown = repr(keys) + repr(c)
    for secret in (keys.seal, keys.state, keys.check):
        assert repr(secret) not in shown and secret.hex() not in shown


def test_a_state_file_replaced_by_a_symlink_is_refused(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    ss.make_v1(c, {})
    path = tmp_path / "h" / "containers" / "c" / "state.json"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(path.read_bytes())
    elsewhere.chmod(0o600)
    path.unlink()
    path.symlink_to(elsewhere)  # the same valid bytes, but not the container's own file
    with pytest.raises(ProviderError, match=r"state\.json: it is a symlink"):
        c.state()


def _remac(c, doc: dict) -> bytes:
    """``doc`` with a valid MAC under ``c``'s state key, as FORMAT.md 5.2 computes it."""
    import hashlib
    import hmac

    body = {k: v for k, v in doc.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(c._keys.state, canonical, hashlib.sha256).hexdigest()
    return json.dumps({**body, "mac": mac}, sort_keys=True, separators=(",", ":")).encode()


def test_state_with_one_meaning_only(tmp_path):
    """A state whose MAC verifies is still refused when another reader could read it
    differently: a duplicate key (a first-wins reader would see a rolled-back mark),
    a generation that is not a JSON integer, a MAC or key id not in lower-case hex."""
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    c.update_state(lambda s: s.seen("payroll", 5))
    ss.make_v1(c, {"payroll": 5})
    path = tmp_path / "h" / "containers" / "c" / "state.json"
    good = path.read_bytes()
    doc = json.loads(good)
    # The control: a re-encoded, re-MACed copy of the same document is accepted.
    path.write_bytes(_remac(c, doc))
    assert home.open("c", PASSPHRASE).state().generation_floor("payroll") == 5

    duplicate = good.replace(b'{"container"', b'{"high_water":{"payroll":1},"container"', 1)
    upper_mac = good.replace(doc["mac"].encode(), doc["mac"].upper().encode())
    as_string = _remac(c, {**doc, "high_water": {"payroll": "5"}})
    as_float = _remac(c, {**doc, "high_water": {"payroll": 5.0}})
    as_bool = _remac(c, {**doc, "high_water": {"payroll": True}})
    zero = _remac(c, {**doc, "high_water": {"payroll": 0}})
    # true/false/null and 1.0 have no canonical_json encoding (FORMAT.md 5.2): refused as
    # JSON that does not parse under the rules, like a duplicate key
    for data in (duplicate, upper_mac, as_float, as_bool):  # refused before the MAC
        assert data != good
        path.write_bytes(data)
        with pytest.raises(VerificationError, match="modified outside keyblob"):
            home.open("c", PASSPHRASE).state()
    for data in (as_string, zero):  # a valid MAC over an invalid state
        path.write_bytes(data)
        with pytest.raises(FormatError, match="not a valid state document"):
            home.open("c", PASSPHRASE).state()


def test_state_trusted_entries_are_strict(tmp_path):
    from keyblob.trust import TrustedSigner

    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    public = bytes(range(32))
    signer = TrustedSigner(
        key_id_for(Suite.X25519, KeyRole.SIGNATURE, public), Suite.X25519, public, public, "t", 1
    )
    c.update_state(lambda s: s.with_signer(signer))
    ss.make_v1(c, {})
    path = tmp_path / "h" / "containers" / "c" / "state.json"
    doc = json.loads(path.read_bytes())
    entry = doc["trusted"][0]
    unused_bits = entry["public"][:-2] + "B="  # same bytes, non-zero unused bits
    path.write_bytes(_remac(c, doc))
    assert home.open("c", PASSPHRASE).state().trusted == (signer,)  # the control
    for edit in (
        {"key_id": entry["key_id"].upper()},
        {"public": unused_bits},
        {"added": "1"},
    ):
        path.write_bytes(_remac(c, {**doc, "trusted": [{**entry, **edit}]}))
        with pytest.raises(FormatError, match="not a valid state document"):
            home.open("c", PASSPHRASE).state()
    path.write_bytes(_remac(c, {**doc, "trusted": [entry, entry]}))
    with pytest.raises(FormatError, match="appears twice"):
        home.open("c", PASSPHRASE).state()
    path.write_bytes(_remac(c, {**doc, "trusted": [{**entry, "key_id": "00" * 16}]}))
    with pytest.raises(FormatError, match="key id is not its key's"):
        home.open("c", PASSPHRASE).state()
    # Nested too deeply for the parser: refused like any other edit, not a RecursionError.
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(VerificationError, match="modified outside keyblob"):
        home.open("c", PASSPHRASE).state()


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace('"iterations": 1', '"iterations": 1.0'),
        lambda text: text.replace('"iterations": 1', '"iterations": true'),
        lambda text: text.replace('"lanes": 1', '"lanes": "1"'),
        lambda text: text.replace("{", '{\n  "suite": "rsa",', 1),
        lambda text: "\ufeff" + text,
    ],
    ids=["float", "boolean", "string", "duplicate key", "byte order mark"],
)
def test_container_file_with_one_meaning_only(tmp_path, edit):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    text = path.read_text()
    assert home.open("c", PASSPHRASE)
    edited = edit(text)
    assert edited != text
    path.write_text(edited)
    with pytest.raises(FormatError, match="damaged"):
        home.open("c", PASSPHRASE)


def test_container_salt_in_non_canonical_base64_is_refused(tmp_path):
    home = Home(tmp_path / "h")
    home.create("c", PASSPHRASE, kdf=FAST_KDF)
    path = tmp_path / "h" / "containers" / "c" / "container.json"
    doc = json.loads(path.read_text())
    salt = doc["kdf"]["salt"]  # 16 bytes: 22 characters and "==", the last one's 4 low bits unused
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    same_bytes = salt[:21] + alphabet[alphabet.index(salt[21]) | 1] + "=="
    assert base64.b64decode(same_bytes) == base64.b64decode(salt) and same_bytes != salt
    doc["kdf"]["salt"] = same_bytes
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="not base64"):
        home.open("c", PASSPHRASE)


def test_low_order_x25519_exchange_keys_are_refused_when_loaded():
    """Any 32 bytes decode as an X25519 key; the low-order ones would make every wrap fail
    (an all-zero shared secret), so they are refused as keys, with a FormatError."""
    from keyblob.providers import suites

    low_order = [bytes(32), b"\x01" + bytes(31)]  # 0 and 1 (RFC 7748 section 6.1)
    for data in low_order:
        with pytest.raises(FormatError, match="low-order"):
            suites.load_exchange_public(Suite.X25519, data)
    from cryptography.hazmat.primitives.asymmetric import x25519

    real = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    assert suites.load_exchange_public(Suite.X25519, real).public_bytes_raw() == real


# -- keys rotate: the old key pairs of container.json (FORMAT.md 5.1 previous) -------------


def _rotated(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    c.rotate_keys((KeyRole.EXCHANGE, KeyRole.SIGNATURE), now=1_700_000_000)
    path = home.container_dir("c") / "container.json"
    return home, path, json.loads(path.read_text())


def _write(path, doc):
    path.write_text(json.dumps(doc, indent=2))


def test_rotate_and_forget_that_cannot_write_change_nothing(tmp_path, monkeypatch):
    """A full disk during keys rotate or keys forget-old: the error names the container,
    and neither the file nor the open container changed (its keys, its old keys)."""
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    c.rotate_keys((KeyRole.EXCHANGE,), now=1_700_000_000)
    path = home.container_dir("c") / "container.json"
    before = path.read_bytes()
    keys = (c.exchange_public, c.signature_public, c.old_keys, c.exchange_ids)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(software, "write_atomic", disk_full)
    with pytest.raises(ProviderError, match="cannot write container 'c': No space left"):
        c.rotate_keys((KeyRole.EXCHANGE, KeyRole.SIGNATURE), now=1_700_000_001)
    with pytest.raises(ProviderError, match="cannot write container 'c': No space left"):
        c.forget_old_keys()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert (c.exchange_public, c.signature_public, c.old_keys, c.exchange_ids) == keys
    reopened = home.open("c", PASSPHRASE)
    assert (reopened.exchange_public, reopened.old_keys) == (keys[0], keys[2])


def test_rotation_writes_the_documented_previous_member(tmp_path):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    home, _, doc = _rotated(tmp_path)
    assert [e["role"] for e in doc["previous"]] == ["exchange", "signature"]
    assert all(e.keys() == {"role", "public", "sealed", "until"} for e in doc["previous"])
    # The seal binds role, public key, container, suite and until (FORMAT.md 5.1), as
    # documented: an independent open with the container's seal key.
    opened = home.open("c", PASSPHRASE)
    for entry in doc["previous"]:
        aad = (
            b"keyblob/v1/container/private-key\x00"
            + json.dumps(
                {
                    "container": "c",
                    "public": entry["public"],
                    "role": "kx" if entry["role"] == "exchange" else "sg",
                    "suite": "x25519",
                    "until": 1_700_000_000,
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        )
        sealed = base64.b64decode(entry["sealed"])
        assert len(AESGCM(opened._keys.seal).decrypt(sealed[:12], sealed[12:], aad)) == 32


def test_an_old_key_planted_without_the_passphrase_is_refused(tmp_path):
    """Whoever can write container.json but has no passphrase cannot add an old key (it
    would be an exchange key the container unwraps with): the entry must open under the
    seal key, bound to its role, public key and until."""
    from cryptography.hazmat.primitives.asymmetric import x25519

    home, path, doc = _rotated(tmp_path)
    planted = x25519.X25519PrivateKey.generate()
    raw = planted.public_key().public_bytes_raw()
    entry = {
        "role": "exchange",
        "public": base64.b64encode(raw).decode(),
        "sealed": base64.b64encode(bytes(12 + 32 + 16)).decode(),
        "until": 1,
    }
    cases = {
        "a new entry": {**doc, "previous": [*doc["previous"], entry]},
        # another until: the seal binds it
        "until changed": {**doc, "previous": [{**doc["previous"][0], "until": 5}]},
        # the old sealed key put back as the current one, and the reverse
        "old as current": {
            **doc,
            "exchange": {k: doc["previous"][0][k] for k in ("public", "sealed")},
        },
        "current as old": {
            **doc,
            "previous": [{"role": "exchange", **doc["exchange"], "until": 1_700_000_000}],
        },
        "role swapped": {**doc, "previous": [{**doc["previous"][0], "role": "signature"}]},
    }
    for edited in cases.values():
        _write(path, edited)
        with pytest.raises(VerificationError, match="modified outside keyblob"):
            home.open("c", PASSPHRASE)
    _write(path, doc)
    assert len(home.open("c", PASSPHRASE).exchange_ids) == 2


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: {**d, "previous": []},  # absent when none: one encoding
        lambda d: {**d, "previous": {}},
        lambda d: {**d, "previous": [{**d["previous"][0], "extra": 1}]},
        lambda d: {**d, "previous": [{**d["previous"][0], "role": "kx"}]},
        lambda d: {**d, "previous": [{**d["previous"][0], "until": "1"}]},
        lambda d: {**d, "previous": [{**d["previous"][0], "until": -1}]},
        lambda d: {**d, "previous": [d["previous"][0]] * 9},
    ],
)
def test_a_malformed_previous_member_is_refused_before_any_derivation(tmp_path, edit):
    home, path, doc = _rotated(tmp_path)
    _write(path, edit(doc))
    with pytest.raises(FormatError):
        home.open("c", b"not even the passphrase")


def test_rotation_keeps_at_most_eight_old_keys(tmp_path):
    home = Home(tmp_path / "h")
    c = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    for n in range(4):
        c.rotate_keys((KeyRole.EXCHANGE, KeyRole.SIGNATURE), now=n)
    with pytest.raises(UsageError, match="rewrap --all"):
        c.rotate_keys((KeyRole.EXCHANGE,), now=5)
    assert len(home.open("c", PASSPHRASE).old_keys) == 8
