"""`keyblob capi` without Wine: files made with keyblob.mscapi stand in for a Windows
program, so the command-line behaviour (refusals, exit statuses, nothing written on failure)
is tested everywhere; tests/interop checks the same against a real CryptoAPI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from keyblob import mscapi
from keyblob.cli import main

PASS = "capi passphrase"


@pytest.fixture(scope="module")
def windows_keys():
    return rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _windows_files(tmp_path: Path, keys, plain: bytes, alg=mscapi.AlgId.AES_256):
    """What a Windows program following the procedure leaves on disk."""
    exchange, signer = keys
    session = mscapi.CapiKey.new(alg, os.urandom(32 if alg == mscapi.AlgId.AES_256 else 16))
    blob = mscapi.build_simpleblob(session, exchange.public_key(), legacy=True)
    return {
        "priv": _write(
            tmp_path / "kx.priv", mscapi.PrivateKeyBlob.from_private_key(exchange).to_bytes()
        ),
        "signer": _write(
            tmp_path / "sg.pub",
            mscapi.PublicKeyBlob.from_public_key(
                signer.public_key(), alg_id=mscapi.AlgId.RSA_SIGN
            ).to_bytes(),
        ),
        "sb": _write(tmp_path / "key.sb", blob),
        "sig": _write(tmp_path / "key.sig", mscapi.sign_hash(signer, blob)),
        "ct": _write(tmp_path / "data.enc", mscapi.encrypt(session, plain, legacy=True)),
    }


@pytest.mark.usefixtures("keyblob_main")  # also through the agent
def test_import_and_decrypt(kb, tmp_path, windows_keys):
    f = _windows_files(tmp_path, windows_keys, b"salaries" * 100)
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    status, out, _ = kb("capi", "import-keypair", f["priv"])
    assert status == 0 and "as the exchange key" in out
    status, out, err = kb(
        "capi",
        "import-simpleblob",
        f["sb"],
        "--name",
        "payroll",
        "--signature",
        f["sig"],
        "--signer",
        f["signer"],
    )
    assert status == 0 and "capi-aes-256" in out and "CALG_AES_256" in out, err
    status, out, _ = kb("capi", "decrypt", "payroll", "-i", f["ct"])
    assert status == 0 and out == "salaries" * 100
    status, out, _ = kb("show", "payroll", "--json")
    assert '"algorithm": "capi-aes-256"' in out


def test_keypair_rules(kb, tmp_path, windows_keys, monkeypatch):
    assert kb("init")[0] == 0  # x25519
    priv = _write(
        tmp_path / "k", mscapi.PrivateKeyBlob.from_private_key(windows_keys[0]).to_bytes()
    )
    status, _, err = kb("capi", "import-keypair", priv)
    assert status == 2 and "rsa suite" in err
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "rsa"))
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    small = rsa.generate_private_key(65537, 1024)
    weak = _write(tmp_path / "weak", mscapi.PrivateKeyBlob.from_private_key(small).to_bytes())
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # both refused before the unlock
    e3 = rsa.generate_private_key(3, 2048)
    odd = _write(tmp_path / "e3", mscapi.PrivateKeyBlob.from_private_key(e3).to_bytes())
    status, _, err = kb("capi", "import-keypair", odd)
    assert status == 2 and "does not use the exponent 65537" in err
    status, _, err = kb("capi", "import-keypair", weak)
    assert status == 2 and "2048, 3072 or 4096" in err
    monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
    kb("new", "k")
    status, _, err = kb("capi", "import-keypair", priv)
    assert status == 2 and "already holds keys" in err and "--force" in err
    assert kb("capi", "import-keypair", priv, "--force")[0] == 0


def test_unsigned_and_bad_signatures(kb, tmp_path, windows_keys):
    f = _windows_files(tmp_path, windows_keys, b"x")
    kb("init", "--suite", "rsa", "--bits", "2048")
    kb("capi", "import-keypair", f["priv"])
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "p")
    assert status == 3 and "no --signature" in err and "hint" in err
    other = rsa.generate_private_key(65537, 2048)
    wrong = _write(
        tmp_path / "wrong.pub", mscapi.PublicKeyBlob.from_public_key(other.public_key()).to_bytes()
    )
    status, _, err = kb(
        "capi",
        "import-simpleblob",
        f["sb"],
        "--name",
        "p",
        "--signature",
        f["sig"],
        "--signer",
        wrong,
    )
    assert status == 3 and "signature verification failed" in err
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "p", "--unsigned")
    assert status == 0 and "warning" in err and "of their own" in err
    status, out, _ = kb("list", "--json")
    assert status == 0 and [k["name"] for k in json.loads(out)["keys"]] == ["p"]


def test_stateless_decrypt_and_failures_write_nothing(kb, tmp_path, windows_keys):
    plain = os.urandom(1000)
    f = _windows_files(tmp_path, windows_keys, plain)
    out = tmp_path / "out"
    decrypt = ["capi", "decrypt", "--simpleblob", f["sb"], "--signature", f["sig"]]
    decrypt += ["--signer", f["signer"], "-o", out]
    status, _, err = kb(*decrypt, "--private", f["priv"], "-i", f["ct"])
    assert status == 0, err
    assert out.read_bytes() == plain
    out.unlink()
    truncated = _write(tmp_path / "trunc.enc", f["ct"].read_bytes()[:-1])
    status, _, err = kb(*decrypt, "--private", f["priv"], "-i", truncated)
    assert status == 3 and not out.exists()
    wrong_priv = _write(
        tmp_path / "wrong.priv",
        mscapi.PrivateKeyBlob.from_private_key(rsa.generate_private_key(65537, 2048)).to_bytes(),
    )
    status, _, _ = kb(*decrypt, "--private", wrong_priv, "-i", f["ct"])
    assert status == 3 and not out.exists()  # a random stand-in key: the padding check fails


def test_unwrap_refuses_a_key_a_plaintextkeyblob_cannot_carry(
    kb, tmp_path, windows_keys, monkeypatch
):
    # A SIMPLEBLOB may carry an RC2 key of up to 64 bytes; Windows reads a PLAINTEXTKEYBLOB
    # with more than 16 only as an IPsec HMAC key.  No unreadable file is written.
    exchange, signer = windows_keys
    # As a Windows provider writes it (keyblob's own build_simpleblob does not export one).
    wrapped = exchange.public_key().encrypt(os.urandom(20), padding.PKCS1v15())
    blob = mscapi.SimpleBlob(mscapi.AlgId.RC2, wrapped[::-1]).to_bytes()
    f = _windows_files(tmp_path, windows_keys, b"")
    sb = _write(tmp_path / "rc2.sb", blob)
    sig = _write(tmp_path / "rc2.sig", mscapi.sign_hash(signer, blob))
    out = tmp_path / "rc2.plain"
    argv = ["capi", "unwrap", "--private", f["priv"], sb, "--signature", sig]
    status, _, err = kb(*argv, "--signer", f["signer"], "-o", out)
    assert status == 2 and not out.exists()
    assert "a 20-byte CALG_RC2 key does not fit a PLAINTEXTKEYBLOB" in err
    with monkeypatch.context() as m:  # a key that fits goes to a file, never to a terminal
        m.setattr(sys.stdout, "isatty", lambda: True)
        good = ["capi", "unwrap", "--private", f["priv"], f["sb"], "--signature", f["sig"]]
        status, stdout, err = kb(*good, "--signer", f["signer"], "-o", "-")
    assert status == 2 and stdout == ""
    assert "refusing to write a secret key to a terminal: use -o FILE" in err
    status, out_text, _ = kb(*argv, "--signer", f["signer"], "--info")
    assert status == 0 and "CALG_RC2, 160-bit key (20 bytes)" in out_text
    status, _, err = kb(*argv, "--signer", f["signer"], "--hash", "sha-7", "--info")
    assert status == 2 and "unknown hash 'sha-7' (expected one of md2" in err


def test_capi_arguments_that_do_not_fit_together(kb, tmp_path, windows_keys):
    f = _windows_files(tmp_path, windows_keys, b"data")
    unwrap = ["capi", "unwrap", "--private", f["priv"], f["sb"]]
    cases = [
        ([*unwrap, "--signature", f["sig"], "-o", tmp_path / "k"], "--signature needs --signer"),
        ([*unwrap, "--unsigned"], "give -o FILE for the PLAINTEXTKEYBLOB, or --info (not both)"),
        (
            [*unwrap, "--unsigned", "--info", "-o", tmp_path / "k"],
            "give -o FILE for the PLAINTEXTKEYBLOB, or --info (not both)",
        ),
        (["capi", "decrypt", "-i", f["ct"]], "give one of: NAME (a stored key), --simpleblob"),
        (["capi", "decrypt", "--simpleblob", f["sb"], "-i", f["ct"]], "needs --private"),
    ]
    for argv, message in cases:
        status, out, err = kb(*argv)
        assert status == 2 and message in err and out == "", argv
    assert not (tmp_path / "k").exists()


def test_many_files_into_a_folder(kb, tmp_path):
    session = mscapi.CapiKey.new(mscapi.AlgId.AES_128, os.urandom(16))
    key = _write(
        tmp_path / "key.plain",
        mscapi.PlaintextKeyBlob(mscapi.AlgId.AES_128, session.unsafe_raw_bytes()).to_bytes(),
    )
    inputs = []
    for i in range(3):
        inputs += ["-i", _write(tmp_path / f"f{i}.enc", mscapi.encrypt(session, b"file %d" % i))]
    bad = _write(tmp_path / "bad.enc", b"\x00" * 31)
    outdir = tmp_path / "out"
    outdir.mkdir()
    status, _, err = kb("capi", "decrypt", "--key", key, *inputs, "-i", bad, "-o", outdir)
    assert status == 3 and "1 of 4 files failed" in err
    assert sorted(p.name for p in outdir.iterdir()) == ["f0", "f1", "f2"]
    assert (outdir / "f2").read_bytes() == b"file 2"


def test_a_folder_of_outputs_never_replaces_an_input(kb, tmp_path, monkeypatch):
    monkeypatch.delenv("KEYBLOB_PASSPHRASE", raising=False)  # refused before any unlock
    a = _write(tmp_path / "a.bin", b"ciphertext a")
    b = _write(tmp_path / "b.bin", b"ciphertext b")
    a_enc = _write(tmp_path / "a.bin.enc", b"ciphertext a.enc")
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    same_name = [_write(tmp_path / d / "c.enc", b"ciphertext " + d.encode()) for d in "xy"]
    key = tmp_path / "absent.key"  # never read: the arguments are refused first
    cases = {
        # a.bin.enc decrypts to a.bin, an input (a.bin itself would become a.bin.dec)
        "over an input": (["-i", a, "-i", a_enc, "-o", tmp_path], "decrypted over an input"),
        "one target": (["-i", same_name[0], "-i", same_name[1], "-o", tmp_path], "would both"),
        "stdin": (["-i", "-", "-o", tmp_path], "not '-'"),
        "no folder": (["-i", a, "-i", b], "several inputs need -o DIR"),
    }
    for what, (argv, message) in cases.items():
        status, _, err = kb("capi", "decrypt", "--key", key, *argv)
        assert status == 2 and message in err, what
    assert a.read_bytes() == b"ciphertext a" and b.read_bytes() == b"ciphertext b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.bin.enc", "b.bin", "x", "y"]


def test_capi_encrypt_missing_input_fails_before_the_unlock(kb, tmp_path, monkeypatch):
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("new", "k", "--algorithm", "capi-aes-128")[0] == 0
    monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # and stdin is no terminal: asking would fail
    status, _, err = kb("capi", "encrypt", "k", "-i", tmp_path / "absent", "-o", tmp_path / "o")
    assert status == 4 and "no such file" in err and not (tmp_path / "o").exists()


@pytest.mark.usefixtures("keyblob_main")  # also through the agent
def test_export_simpleblob_round_trip(kb, tmp_path, windows_keys):
    exchange, _ = windows_keys
    kb("init", "--suite", "rsa", "--bits", "2048")
    kb("new", "k", "--algorithm", "capi-aes-128")
    to = _write(
        tmp_path / "to.pub", mscapi.PublicKeyBlob.from_public_key(exchange.public_key()).to_bytes()
    )
    signer = tmp_path / "signer.pub"
    assert kb("capi", "export-public", "--slot", "signature", "-o", signer)[0] == 0
    sb, sig = tmp_path / "sb", tmp_path / "sig"
    assert (
        kb("capi", "export-simpleblob", "k", "--to", to, "-o", sb, "--signature-out", sig)[0] == 0
    )
    mscapi.verify_signature(
        mscapi.PublicKeyBlob.from_bytes(signer.read_bytes()).to_public_key(),
        sig.read_bytes(),
        sb.read_bytes(),
    )
    key = mscapi.unwrap_simpleblob(sb.read_bytes(), exchange)
    ct = tmp_path / "ct"
    assert (
        kb(
            "capi",
            "encrypt",
            "k",
            "-i",
            _write(tmp_path / "p", b"hello"),
            "-o",
            ct,
            "--iv",
            "00" * 16,
        )[0]
        == 0
    )
    assert mscapi.decrypt(key, ct.read_bytes()) == b"hello"
    # Native keys are not CryptoAPI keys, and legacy hashes need --legacy.
    kb("new", "native")
    status, _, err = kb(
        "capi", "export-simpleblob", "native", "--to", to, "-o", sb, "--signature-out", sig
    )
    assert status == 2 and "not a CryptoAPI key" in err
    status, _, err = kb(
        "capi",
        "export-simpleblob",
        "k",
        "--to",
        to,
        "-o",
        sb,
        "--signature-out",
        sig,
        "--hash",
        "sha1",
    )
    assert status == 2 and "legacy" in err


def test_inspect_cryptoapi_blobs(kb, tmp_path, windows_keys):
    f = _windows_files(tmp_path, windows_keys, b"x")
    for name, kind in (
        ("priv", "PRIVATEKEYBLOB"),
        ("signer", "PUBLICKEYBLOB"),
        ("sb", "SIMPLEBLOB"),
    ):
        status, out, _ = kb("inspect", f[name])
        assert status == 0 and kind in out and "aiKeyAlg" in out, out
    status, out, _ = kb("inspect", f["priv"])
    secret = windows_keys[0].private_numbers().d.to_bytes(256, "little").hex()
    assert secret[:16] not in out  # private fields are described by size only
    plain = _write(
        tmp_path / "p", mscapi.PlaintextKeyBlob(mscapi.AlgId.AES_128, b"k" * 16).to_bytes()
    )
    status, out, _ = kb("inspect", plain, "--json")
    assert status == 0 and "PLAINTEXTKEYBLOB" in out and "6b6b6b6b" not in out


def test_pubkey_as_msblob(kb, tmp_path, monkeypatch):
    assert kb("init")[0] == 0
    status, _, err = kb("pubkey", "--format", "msblob", "-o", tmp_path / "x")
    assert status == 2 and "rsa-suite" in err
    status, _, err = kb("capi", "export-public", "-o", tmp_path / "x")
    assert status == 2 and "rsa-suite" in err and not (tmp_path / "x").exists()
    monkeypatch.setenv("KEYBLOB_HOME", str(tmp_path / "rsa"))
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("pubkey", "--format", "msblob", "-o", tmp_path / "kx.pub")[0] == 0
    exported = tmp_path / "kx2.pub"
    assert kb("capi", "export-public", "--slot", "exchange", "-o", exported)[0] == 0
    assert (tmp_path / "kx.pub").read_bytes() == exported.read_bytes()
    blob = mscapi.PublicKeyBlob.from_bytes(exported.read_bytes())
    assert blob.alg_id is mscapi.AlgId.RSA_KEYX and blob.to_public_key().key_size == 2048


def test_capi_decrypt_progress_on_a_terminal(tmp_path):
    from support import run_in_terminal

    session = mscapi.CapiKey.new(mscapi.AlgId.AES_256, os.urandom(32))
    key = _write(
        tmp_path / "k",
        mscapi.PlaintextKeyBlob(mscapi.AlgId.AES_256, session.unsafe_raw_bytes()).to_bytes(),
    )
    big = _write(tmp_path / "big.enc", mscapi.encrypt(session, b"\x00" * (20 * 1024 * 1024)))
    env = {k: v for k, v in os.environ.items() if k != "KEYBLOB_PASSPHRASE"}
    argv = ["capi", "decrypt", "--key", str(key), "-i", str(big), "-o", str(tmp_path / "out")]
    status, out = run_in_terminal(argv, [], env)
    assert (
        status == 0 and "decrypt" in out and (tmp_path / "out").stat().st_size == 20 * 1024 * 1024
    )
    status, out = run_in_terminal([*argv, "--quiet"], [], env)
    assert status == 0 and out == ""


def test_capi_encrypt_progress_on_a_terminal(tmp_path):
    from support import run_in_terminal

    env = {**os.environ, "KEYBLOB_HOME": str(tmp_path / "home"), "KEYBLOB_PASSPHRASE": PASS}
    for argv in (
        ["init", "--suite", "rsa", "--bits", "2048"],
        ["new", "k", "--algorithm", "capi-aes-256"],
    ):
        subprocess.run([sys.executable, "-m", "keyblob", *argv], env=env, check=True)
    big = _write(tmp_path / "big", b"\x00" * (20 * 1024 * 1024))
    argv = ["capi", "encrypt", "k", "-i", str(big), "-o", str(tmp_path / "big.enc")]
    status, out = run_in_terminal(argv, [], env)
    assert status == 0 and "encrypt" in out and (tmp_path / "big.enc").stat().st_size > 20 << 20
    status, out = run_in_terminal([*argv, "--quiet"], [], env)
    assert status == 0 and out == ""


def test_simpleblob_is_wrapped_for_an_exchange_key_only(kb, tmp_path, windows_keys):
    kb("init", "--suite", "rsa", "--bits", "2048")
    kb("new", "k", "--algorithm", "capi-aes-256")
    sign_key = _write(
        tmp_path / "sign.pub",
        mscapi.PublicKeyBlob.from_public_key(
            windows_keys[1].public_key(), alg_id=mscapi.AlgId.RSA_SIGN
        ).to_bytes(),
    )
    sb, sig = tmp_path / "sb", tmp_path / "sig"
    status, _, err = kb(
        "capi", "export-simpleblob", "k", "--to", sign_key, "-o", sb, "--signature-out", sig
    )
    assert status == 2 and "signature key (CALG_RSA_SIGN)" in err
    assert not sb.exists() and not sig.exists()
    status, out, _ = kb("show", "k", "--json")
    assert '"origin": "cryptoapi"' in out and '"capi_alg_id": 26128' in out


def test_cli_reuses_an_already_imported_mscapi():
    """The CLI loads keyblob.mscapi lazily; when it was imported already, the same module
    (with its submodules) must be used, not a second, half-initialised copy."""
    import importlib
    import sys

    from keyblob.cli import terminal

    assert sys.modules["keyblob.mscapi"] is mscapi
    assert terminal.lazy_module("keyblob.mscapi") is mscapi
    assert importlib.import_module("keyblob.mscapi.keyfiles") is mscapi.keyfiles


def test_an_output_that_is_an_input_is_refused_before_anything_is_read(
    tmp_path, monkeypatch, capsys
):
    """-o naming one of the command's own inputs would destroy it (a Windows ciphertext,
    the only PRIVATEKEYBLOB): refused with exit 2, every file left as it was."""

    files = {n: tmp_path / n for n in ("x.enc", "priv.blob", "sb.blob", "sig", "pub.blob")}
    for n, p in files.items():
        p.write_bytes(n.encode() * 10)
    monkeypatch.chdir(tmp_path)
    cases = [
        ["encrypt", "k", "-i", "x.enc", "-o", "x.enc"],
        ["decrypt", "-i", "x.enc", "-o", str(files["x.enc"])],
        ["capi", "decrypt", "k", "-i", "x.enc", "-o", "./x.enc"],
        ["capi", "encrypt", "k", "-i", "x.enc", "-o", "x.enc"],
        ["capi", "convert", "priv.blob", "--to", "pem", "-o", "priv.blob"],
        ["capi", "unwrap", "sb.blob", "--private", "priv.blob", "-o", "sb.blob"],
        ["capi", "unwrap", "sb.blob", "--private", "priv.blob", "--signature", "sig",
         "--signer", "pub.blob", "-o", "sig"],
        ["capi", "export-simpleblob", "k", "--to", "pub.blob", "-o", "pub.blob",
         "--signature-out", "s2"],
        ["capi", "export-simpleblob", "k", "--to", "pub.blob", "-o", "same",
         "--signature-out", "same"],
    ]  # fmt: skip
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "refusing to write" in err and "choose another output" in err, argv
    for n, p in files.items():
        assert p.read_bytes() == n.encode() * 10
    assert not (tmp_path / "same").exists() and not (tmp_path / "s2").exists()


@pytest.mark.parametrize("value", [b"\xff" * 256, b"\x01" + b"\x00" * 255], ids=["above", "below"])
def test_a_simpleblob_for_another_key_gets_the_import_keypair_hint(
    kb, tmp_path, windows_keys, value
):
    """Wrapped for a key pair not imported yet: whether the wrapped value happens to lie
    above or below this container's modulus (a coin toss for a real blob), the refusal
    says which key pair to import."""
    f = _windows_files(tmp_path, windows_keys, b"x")
    blob = Path(f["sb"]).read_bytes()[:12] + value  # encryptedkey is little-endian at 12
    _write(Path(f["sb"]), blob)
    _write(Path(f["sig"]), mscapi.sign_hash(windows_keys[1], blob))
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    status, _, err = kb(
        "capi", "import-simpleblob", f["sb"], "--name", "p",
        "--signature", f["sig"], "--signer", f["signer"],
    )  # fmt: skip
    assert status == 3 and "keyblob capi import-keypair PRIVATEKEYBLOB" in err, err
    assert "wrong exchange key" in err and kb("list")[1] == ""


def test_mistakes_an_administrator_makes_get_a_way_forward(kb, tmp_path, windows_keys):
    """Each mistake from a user walkthrough: refused, with the message or hint that says
    what to do instead."""
    f = _windows_files(tmp_path, windows_keys, b"salaries" * 100)
    signed = ["--signature", f["sig"], "--signer", f["signer"]]
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    # The Windows key pair not imported yet: the hint says to import it.
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "payroll", *signed)
    assert status == 3 and "keyblob capi import-keypair PRIVATEKEYBLOB" in err
    assert kb("capi", "import-keypair", f["priv"])[0] == 0
    assert kb("capi", "import-simpleblob", f["sb"], "--name", "payroll", *signed)[0] == 0
    # The name taken: the way is --rotate, not 'keyblob rotate' (a new random key).
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "payroll", *signed)
    assert status == 2 and "with --rotate" in err and "keyblob rotate" not in err
    # Contradicting options are refused, not silently ignored.
    status, _, err = kb("capi", "import-simpleblob", f["sb"], "--name", "p2", *signed, "--unsigned")
    assert status == 2 and "contradict" in err
    status, _, err = kb("capi", "decrypt", "payroll", "--private", f["priv"], "-i", f["ct"])
    assert status == 2 and "go with --simpleblob" in err
    # A signer given as PEM is read as it is (issue 12 item 5: every key option reads
    # what capi convert reads).
    pem = _write(
        tmp_path / "signer.pem",
        windows_keys[1].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    )
    status, _, err = kb(
        "capi",
        "import-simpleblob",
        f["sb"],
        "--name",
        "p3",
        "--signature",
        f["sig"],
        "--signer",
        pem,
    )
    assert status == 0 and f"signer {pem} has fingerprint" in err
    # CryptoAPI data given to the native decrypt: the hint names capi decrypt.
    status, _, err = kb("decrypt", "-i", f["ct"], "-o", tmp_path / "out")
    assert status == 3 and "use keyblob capi decrypt" in err
    # A signature file of the wrong size says so.
    short = _write(tmp_path / "short.sig", b"\x00" * 10)
    status, _, err = kb(
        "capi",
        "import-simpleblob",
        f["sb"],
        "--name",
        "p4",
        "--signature",
        short,
        "--signer",
        f["signer"],
    )
    assert status == 3 and "10 bytes, but a 2048-bit signer's signatures are 256 bytes" in err


def test_inspect_of_something_else_says_what_it_reads(kb, tmp_path):
    other = _write(tmp_path / "data.sig", b"\x01" * 256)
    status, _, err = kb("inspect", other)
    assert status == 3 and f"{other}: " in err and "inspect reads keyblob key blobs" in err


def test_an_older_generation_by_name(kb, tmp_path, windows_keys):
    """CryptoAPI data names no key: after a rotation, --generation still opens it; and
    export --generation writes that generation's blob."""
    plain = b"old windows data" * 50
    f = _windows_files(tmp_path, windows_keys, plain)
    signed = ["--signature", f["sig"], "--signer", f["signer"]]
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("capi", "import-keypair", f["priv"])[0] == 0
    assert kb("capi", "import-simpleblob", f["sb"], "--name", "payroll", *signed)[0] == 0
    assert kb("rotate", "payroll")[0] == 0  # generation 2: a new key
    assert kb("capi", "decrypt", "payroll", "-i", f["ct"], "-o", tmp_path / "new")[0] == 3
    status, _, _ = kb(
        "capi", "decrypt", "payroll", "--generation", "1", "-i", f["ct"], "-o", tmp_path / "old"
    )
    assert status == 0 and (tmp_path / "old").read_bytes() == plain
    status, _, err = kb("capi", "decrypt", "--key", f["sb"], "--generation", "1", "-i", f["ct"])
    assert status == 2 and "--generation goes with NAME" in err
    status, _, err = kb("export", "payroll", "--generation", "1", "-o", tmp_path / "g1.kb")
    assert status == 0 and "payroll generation 1" in err
    status, out, _ = kb("inspect", tmp_path / "g1.kb", "--json")
    fields = {x["name"]: x["value"] for x in json.loads(out)["fields"]}
    assert fields["generation"] == "1"
    assert kb("export", "payroll", "--generation", "7", "-o", tmp_path / "g7.kb")[0] == 4


def test_outputs_never_replace_key_or_passphrase_files(kb, tmp_path, monkeypatch, capsys):
    """From a review: the passphrase file, and the key files of a capi decrypt into a
    folder, were outputs like any other; and '-o - --signature-out -' mixed two files."""

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pw.txt").write_text(PASS + "\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k").write_bytes(b"a PLAINTEXTKEYBLOB")
    for n in ("k.enc", "b.enc"):
        (tmp_path / n).write_bytes(b"data")
    cases = [
        ["--passphrase-file", "pw.txt", "export", "payroll", "-o", "pw.txt"],
        ["capi", "decrypt", "--key", "keys/k", "-i", "k.enc", "-i", "b.enc", "-o", "keys"],
        ["capi", "export-simpleblob", "k", "--to", "x", "-o", "-", "--signature-out", "-"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
    assert (tmp_path / "pw.txt").read_text() == PASS + "\n"
    assert (keys / "k").read_bytes() == b"a PLAINTEXTKEYBLOB"


def test_verify_signature_of_a_file(kb, tmp_path, windows_keys):
    """CryptSignHash over a whole file, checked without a home: valid, tampered, wrong signer."""
    _, signer = windows_keys
    data = os.urandom(3 * 1024 * 1024 + 5)  # read in pieces
    doc = _write(tmp_path / "report.pdf", data)
    sig = _write(tmp_path / "report.sig", mscapi.sign_hash(signer, data))
    pub = _write(
        tmp_path / "sg.pub",
        mscapi.PublicKeyBlob.from_public_key(
            signer.public_key(), alg_id=mscapi.AlgId.RSA_SIGN
        ).to_bytes(),
    )
    status, out, _ = kb("capi", "verify-signature", doc, "--signature", sig, "--signer", pub)
    assert status == 0 and "valid CALG_SHA_256 signature by the 2048-bit key" in out
    assert not (tmp_path / "home").exists()  # no home needed
    tampered = _write(tmp_path / "t.pdf", data[:-1] + bytes([data[-1] ^ 1]))
    status, _, err = kb("capi", "verify-signature", tampered, "--signature", sig, "--signer", pub)
    assert status == 3 and f"refused {tampered}: signature verification failed" in err
    status, _, err = kb(
        "capi", "verify-signature", doc, "--signature", sig, "--signer", pub, "--hash", "sha1"
    )
    assert status == 3
