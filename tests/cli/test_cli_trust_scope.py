"""`keyblob trust add --names` (a trusted signer limited to some key names), pinned
CryptoAPI signers for `capi import-simpleblob`, and the state's strictness (FORMAT.md 5.2,
docs/MSCAPI.md 7.2), end to end with exit statuses."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import state_support as ss
from keyblob import mscapi
from keyblob.cli import main
from keyblob.errors import FormatError
from keyblob.providers.software import Home

PASS = "scope passphrase"


@pytest.fixture
def kb(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)

    def run(*argv: str | os.PathLike[str], home: Path | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(["--home", str(home or tmp_path / "bob"), *[str(a) for a in argv]])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def alice_and_bob(kb, tmp_path):
    """Alice and Bob; Alice has made team-payroll and root-db for Bob."""
    alice = tmp_path / "alice"
    kb("init", "--container", "alice", home=alice)
    kb("init")
    bob_pub, alice_pub = tmp_path / "bob.pub", tmp_path / "alice.pub"
    kb("pubkey", "-o", bob_pub)
    kb("--container", "alice", "pubkey", "-o", alice_pub, home=alice)
    files = {"pub": alice_pub}
    for name in ("team-payroll", "root-db"):
        kb("--container", "alice", "new", name, "--to", bob_pub, home=alice)
        files[name] = tmp_path / f"{name}.kb"
        kb("--container", "alice", "export", name, "-o", files[name], home=alice)
    return files


def _trust_rows(kb) -> list[dict]:
    status, out, _ = kb("trust", "list", "--json")
    assert status == 0
    return json.loads(out)


def test_a_trusted_signer_can_replace_any_name_unless_scoped(kb, alice_and_bob):
    """The problem (issue 11 item 4): trusting Alice for her team's keys let her replace
    Bob's root-db. With --names she is refused there, before any unwrap."""
    f = alice_and_bob
    kb("trust", "add", f["pub"])
    assert kb("import", f["root-db"])[0] == 0  # unscoped: she signs every name
    kb("trust", "remove", _trust_rows(kb)[1]["fingerprint"])

    status, out, _ = kb("trust", "add", f["pub"], "--names", "team-*")
    assert status == 0 and out.startswith("trusted sg-") and "for names team-*" in out
    assert kb("import", f["team-payroll"])[0] == 0
    status, _, err = kb("import", f["root-db"])
    assert status == 3
    first = err.splitlines()[0]
    assert first.startswith(f"keyblob: error: refused {f['root-db']}: signed by sg-")
    assert first.endswith("(alice), which is trusted only for names team-*, not for 'root-db'")
    assert "trust add THEIR.pub --names" in err


def test_a_blob_planted_in_the_store_outside_the_scope_is_refused(kb, alice_and_bob, tmp_path):
    """The store-only attacker's version: Alice's root-db put straight into Bob's store."""
    f = alice_and_bob
    kb("trust", "add", f["pub"], "--names", "team-*")
    kb("new", "mine")  # Bob's store exists
    planted = tmp_path / "bob" / "blobs" / "root-db" / "1.kb"
    planted.parent.mkdir(mode=0o700)
    planted.write_bytes(f["root-db"].read_bytes())
    status, _, err = kb("show", "root-db")
    assert status == 3 and "trusted only for names team-*, not for 'root-db'" in err


def test_the_scope_is_checked_before_the_signature_and_the_unwrap(kb, alice_and_bob, tmp_path):
    """A blob from a scoped signer for another name gets the scope message even when its
    signature is broken and it is not wrapped for this container: step 2 comes first."""
    f = alice_and_bob
    kb("trust", "add", f["pub"], "--names", "team-*")
    alice = tmp_path / "alice"
    kb("--container", "alice", "new", "other-db", home=alice)  # wrapped for Alice only
    blob = tmp_path / "other.kb"
    kb("--container", "alice", "export", "other-db", "-o", blob, home=alice)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # the signature's last byte
    blob.write_bytes(bytes(data))
    status, _, err = kb("import", blob)
    assert status == 3 and "trusted only for names team-*, not for 'other-db'" in err


def test_trust_list_shows_the_scope(kb, alice_and_bob):
    kb("trust", "add", alice_and_bob["pub"], "--names", "team-*,ops", "--names", "db-?")
    rows = _trust_rows(kb)
    assert rows[0]["own"] and rows[0]["names"] is None  # the own key: every name
    assert rows[1]["names"] == ["db-?", "ops", "team-*"] and rows[1]["kind"] == "keyblob"
    status, out, _ = kb("trust", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("this container (always trusted)")
    assert lines[1].endswith("for names db-?, ops, team-*")


def test_changing_a_scope(kb, alice_and_bob):
    """trust add again with --names replaces the scope and says so; without --names it
    keeps it (running the first command again never widens a narrowed scope); '*' widens
    it to every name."""
    pub = alice_and_bob["pub"]
    kb("trust", "add", pub)
    status, out, _ = kb("trust", "add", pub, "--names", "team-*")
    assert status == 0 and out.startswith("updated sg-")
    assert "now for names team-* (was all names)" in out
    status, out, _ = kb("trust", "add", pub)
    assert status == 0 and out.startswith("already trusted: sg-") and "for names team-*" in out
    assert _trust_rows(kb)[1]["names"] == ["team-*"]
    status, out, _ = kb("trust", "add", pub, "--names", "team-*")
    assert out.startswith("already trusted: sg-")
    status, out, _ = kb("trust", "add", pub, "--names", "*")
    assert "now for all names (was names team-*)" in out
    assert _trust_rows(kb)[1]["names"] is None
    assert kb("import", alice_and_bob["root-db"])[0] == 0


@pytest.mark.parametrize("bad", ["Team-*", "[ab]*", "", "a,,b", "team/x"])
def test_invalid_patterns_are_usage_errors(kb, alice_and_bob, bad):
    status, _, err = kb("trust", "add", alice_and_bob["pub"], "--names", bad)
    assert status == 2 and "--names" in err
    assert len(_trust_rows(kb)) == 1  # nothing was trusted


def test_own_key_cannot_be_added_or_scoped(kb, tmp_path):
    kb("init")
    own = tmp_path / "own.pub"
    kb("pubkey", "-o", own)
    status, _, err = kb("trust", "add", own, "--names", "team-*")
    assert status == 2 and "own signature key: it is always trusted, for every name" in err


def test_a_signer_of_another_suite_is_refused_at_trust_add(kb, tmp_path):
    kb("init")
    other = tmp_path / "rsa"
    kb("init", "--suite", "rsa", "--bits", "2048", home=other)
    pub = tmp_path / "rsa.pub"
    kb("pubkey", "-o", pub, home=other)
    status, _, err = kb("trust", "add", pub)
    assert status == 2 and "could never sign a blob it accepts" in err


def _remac(home: Path, edit) -> None:
    """Edit the head of the home state (FORMAT.md 5.2) and give it a valid MAC."""
    container = Home(home).open("default", PASS.encode())
    folder = home / "containers" / "default"
    doc = ss.head(folder)
    doc.pop("mac")
    edit(doc)
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(container._keys.state, body, hashlib.sha256).hexdigest()
    ss.set_head(folder, body[:-1] + b',"mac":"' + mac.encode() + b'"}')


def test_state_strictness_through_the_cli(kb, alice_and_bob, tmp_path):
    """Item 10, 5.2: an unknown member under a valid MAC is malformed (an older reader
    would otherwise drop a restriction it does not know); a value canonical JSON has no
    form for (true, null, 1.0) is refused as modified, before the MAC."""
    kb("trust", "add", alice_and_bob["pub"], "--names", "team-*")
    home = tmp_path / "bob"
    _remac(home, lambda d: d["trusted"][0].update(scope_v2="x"))
    status, _, err = kb("trust", "list")
    # malformed: the CLI's status for a FormatError (docs/CLI.md)
    assert status == FormatError.exit_status and "home state: not a valid state document" in err
    _remac(home, lambda d: d["trusted"][0].pop("scope_v2"))
    assert kb("trust", "list")[0] == 0
    _remac(home, lambda d: d["trusted"][0].update(added=1.0))
    status, _, err = kb("trust", "list")
    assert status == 3 and "modified outside keyblob" in err


# -- CryptoAPI signers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def windows_keys():
    return [rsa.generate_private_key(65537, 2048) for _ in range(3)]


def _pubblob(path: Path, key: rsa.RSAPrivateKey) -> Path:
    path.write_bytes(
        mscapi.PublicKeyBlob.from_public_key(
            key.public_key(), alg_id=mscapi.AlgId.RSA_SIGN
        ).to_bytes()
    )
    return path


def _fingerprint(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:32]


@pytest.fixture
def windows(kb, tmp_path, windows_keys):
    """An rsa home holding the Windows exchange key; a SIMPLEBLOB signed by the real signer,
    and one an attacker made and signed with a key of their own, with their signer file."""
    exchange, signer, attacker = windows_keys
    kb("init", "--suite", "rsa", "--bits", "2048")
    priv = tmp_path / "kx.privblob"
    priv.write_bytes(mscapi.PrivateKeyBlob.from_private_key(exchange).to_bytes())
    assert kb("capi", "import-keypair", priv)[0] == 0
    out = {"signer": _pubblob(tmp_path / "signer.pubblob", signer)}
    out["evil-signer"] = _pubblob(tmp_path / "evil.pubblob", attacker)
    for who, key in (("good", signer), ("evil", attacker)):
        session = mscapi.CapiKey.new(mscapi.AlgId.AES_256, os.urandom(32))
        blob = mscapi.build_simpleblob(session, exchange.public_key())
        out[who] = tmp_path / f"{who}.simpleblob"
        out[who].write_bytes(blob)
        out[f"{who}-sig"] = tmp_path / f"{who}.sig"
        out[f"{who}-sig"].write_bytes(mscapi.sign_hash(key, blob))
    return out


def _import(kb, blob, sig, name, *extra):
    return kb("capi", "import-simpleblob", blob, "--name", name, "--signature", sig, *extra)


def test_an_unpinned_signer_file_is_trusted_but_its_fingerprint_shown(kb, windows, windows_keys):
    """The problem (item 3): the signer file sits beside the blob; an attacker replaces all
    three and the import succeeds. Until a signer is pinned that stays the documented
    workflow, but every use shows the signer's fingerprint and how to pin it."""
    w = windows
    status, _, err = _import(kb, w["evil"], w["evil-sig"], "payroll", "--signer", w["evil-signer"])
    assert status == 0
    fp = _fingerprint(windows_keys[2])
    assert f"signer {w['evil-signer']} has fingerprint {fp}" in err
    assert f"pin it once: keyblob trust add {w['evil-signer']}" in err


def test_a_pinned_signer_refuses_any_other(kb, windows, windows_keys, tmp_path):
    w = windows
    status, out, _ = kb("trust", "add", w["signer"])
    assert status == 0 and out.startswith("trusted CryptoAPI signer 'signer' (RSA-2048")
    assert f"fingerprint {_fingerprint(windows_keys[1])}" in out
    # The attacker's replaced trio is now refused, before any unwrap...
    status, _, err = _import(kb, w["evil"], w["evil-sig"], "payroll", "--signer", w["evil-signer"])
    assert status == 3 and "is not a pinned CryptoAPI signer" in err
    assert _fingerprint(windows_keys[2]) in err
    # ...and so is their blob without --signer, and an unsigned one.
    status, _, err = _import(kb, w["evil"], w["evil-sig"], "payroll")
    assert status == 3 and "verifies under none of the 1 pinned CryptoAPI signer(s)" in err
    status, _, err = kb("capi", "import-simpleblob", w["evil"], "--name", "p", "--unsigned")
    assert status == 3 and "only from its 1 pinned CryptoAPI signer(s)" in err
    assert json.loads(kb("list", "--json")[1])["keys"] == []  # nothing was stored
    # The real one imports with no --signer, and with the pinned signer's file.
    status, out, err = _import(kb, w["good"], w["good-sig"], "payroll")
    assert status == 0 and out.startswith("imported")
    assert (
        f"signed by pinned CryptoAPI signer 'signer' (fingerprint {_fingerprint(windows_keys[1])})"
        in err
    )
    status, _, _ = _import(kb, w["good"], w["good-sig"], "other", "--signer", w["signer"])
    assert status == 0


def test_a_capi_signer_pins_from_pem_der_and_publickeyblob_alike(
    kb, windows, windows_keys, tmp_path
):
    w = windows
    key = windows_keys[1].public_key()
    pem = tmp_path / "signer.pem"
    pem.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    der = tmp_path / "signer.der"
    der.write_bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1))
    assert kb("trust", "add", pem)[1].startswith("trusted CryptoAPI signer 'signer'")
    for again in (der, w["signer"]):
        status, out, _ = kb("trust", "add", again)
        assert status == 0 and out.startswith("already trusted: CryptoAPI signer"), out
    rows = _trust_rows(kb)
    assert [r["kind"] for r in rows] == ["keyblob", "capi"]
    assert rows[1]["fingerprint"] == _fingerprint(windows_keys[1]) and rows[1]["key_id"] is None
    status, out, _ = kb("trust", "list")
    assert "CryptoAPI signer, added" in out.splitlines()[1]


def test_a_private_key_or_garbage_is_not_pinned(kb, windows, windows_keys, tmp_path):
    priv = tmp_path / "signer.privblob"
    priv.write_bytes(mscapi.PrivateKeyBlob.from_private_key(windows_keys[1]).to_bytes())
    status, _, err = kb("trust", "add", priv)
    assert status == 2 and "holds a private key" in err
    weak = rsa.RSAPublicNumbers(65537, (1 << 511) | 0xF1).public_key()  # RSA-512
    small = _pubblob(tmp_path / "small.pubblob", rsa.generate_private_key(65537, 1024))
    (tmp_path / "weak.pubblob").write_bytes(
        mscapi.PublicKeyBlob.from_public_key(weak, alg_id=mscapi.AlgId.RSA_SIGN).to_bytes()
    )
    status, _, err = kb("trust", "add", tmp_path / "weak.pubblob")
    assert status == 2 and "RSA-512 key: below 1024 bits anyone could forge" in err
    status, _, err = kb("trust", "add", small)
    assert status == 0 and "the signer's key is RSA-1024, a legacy size" in err
    kb("trust", "remove", _trust_rows(kb)[1]["fingerprint"])
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a key")
    status, _, err = kb("trust", "add", junk)
    assert status == FormatError.exit_status
    assert "neither a keyblob public key file nor an RSA public key" in err
    assert len(_trust_rows(kb)) == 1


def test_a_capi_signer_scope_and_removal(kb, windows):
    w = windows
    kb("trust", "add", w["signer"], "--names", "payroll")
    status, _, err = _import(kb, w["good"], w["good-sig"], "root-db")
    assert status == 3 and "which is trusted only for names payroll, not for 'root-db'" in err
    status, _, err = _import(kb, w["good"], w["good-sig"], "root-db", "--signer", w["signer"])
    assert status == 3 and "not for 'root-db'" in err
    assert _import(kb, w["good"], w["good-sig"], "payroll")[0] == 0
    fp = _trust_rows(kb)[1]["fingerprint"]
    status, out, _ = kb("trust", "remove", fp[:8])
    assert status == 0 and out.startswith("no longer trusted: CryptoAPI signer 'signer'")
    assert len(_trust_rows(kb)) == 1
    # Nothing pinned any more: --signer is needed again.
    status, _, err = _import(kb, w["good"], w["good-sig"], "p2")
    assert status == 2 and "keyblob trust add SIGNER.pubblob" in err


def test_home_less_commands_show_the_fingerprint(kb, windows, windows_keys, tmp_path):
    w = windows
    priv = tmp_path / "kx.privblob"
    status, _, err = kb(
        "capi", "unwrap", "--private", priv, w["good"], "--signature", w["good-sig"],
        "--signer", w["signer"], "--info",
    )  # fmt: skip
    assert status == 0
    assert f"has fingerprint {_fingerprint(windows_keys[1])}: compare it with" in err
    assert "trust add" not in err  # no home: nothing to pin into
