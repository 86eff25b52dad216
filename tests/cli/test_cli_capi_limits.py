"""`keyblob capi` against hostile key inputs (issue 11): an encrypted PKCS#8 key whose
KDF would run for minutes, and RSA keys too small to mean anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import support
from hostile_keys import (
    AES_256_CBC,
    PBES2,
    PBKDF2,
    epki,
    octets,
    oid,
    pbes2_pbkdf2,
    pem,
    rsa_of,
    seq,
)
from keyblob import mscapi
from keyblob.mscapi.keyfiles import MAX_KDF_ITERATIONS


def test_pkcs8_iteration_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """2^31 - 1 PBKDF2 iterations held `capi convert` for minutes, deaf to Ctrl-C; run as a
    real process with the passphrase given, so that nothing but the bound can stop it."""
    bomb = tmp_path / "bomb.pem"
    bomb.write_bytes(pem(pbes2_pbkdf2(2**31 - 1)))
    (tmp_path / "pass").write_text("correct horse battery staple\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYBLOB_")}
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyblob",
            "--passphrase-file",
            str(tmp_path / "pass"),
            "capi",
            "convert",
            str(bomb),
            "--to",
            "msblob",
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - start < 20
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith(
        f"keyblob: error: {bomb}: encrypted PKCS#8: 2147483647 PBKDF2 iterations is over keyblob's "
        f"bound of {MAX_KDF_ITERATIONS}\nkeyblob: hint: "
    )
    assert not (tmp_path / "out").exists()


# -- RSA key sizes (issue 11, item 2; docs/MSCAPI.md 5) ------------------------------------

PASS = "capi passphrase"
AES = mscapi.CapiKey.new(mscapi.AlgId.AES_256, bytes(range(32)))


def _pub(path: Path, key, alg=mscapi.AlgId.RSA_KEYX) -> Path:
    path.write_bytes(mscapi.PublicKeyBlob.from_public_key(key.public_key(), alg).to_bytes())
    return path


def _priv(path: Path, key) -> Path:
    path.write_bytes(mscapi.PrivateKeyBlob.from_private_key(key).to_bytes())
    return path


def _signed_blob(tmp_path: Path, exchange_bits: int, signer_bits: int) -> dict[str, Path]:
    """A SIMPLEBLOB for an exchange key of ``exchange_bits``, signed by ``signer_bits``."""
    exchange, signer = rsa_of(exchange_bits), rsa_of(signer_bits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blob = mscapi.build_simpleblob(AES, exchange.public_key(), legacy=True)
        signature = mscapi.sign_hash(signer, blob, legacy=True)
    (tmp_path / "k.sb").write_bytes(blob)
    (tmp_path / "k.sig").write_bytes(signature)
    (tmp_path / "data.enc").write_bytes(mscapi.encrypt(AES, b"old data"))
    return {
        "sb": tmp_path / "k.sb",
        "sig": tmp_path / "k.sig",
        "enc": tmp_path / "data.enc",
        "priv": _priv(tmp_path / f"kx{exchange_bits}.priv", exchange),
        "signer": _pub(tmp_path / f"sg{signer_bits}.pub", signer, mscapi.AlgId.RSA_SIGN),
    }


def _refused_reading(err: str, path: Path, role: str, bits: int) -> bool:
    # the last line: a signer checked before the key may have printed its fingerprint
    return err.endswith(
        f"keyblob: error: {path}: the {role} is RSA-{bits}; below 1024 bits is refused "
        "(use --legacy to read old data anyway)\n"
    )


def _warned(err: str, role: str, bits: int) -> bool:
    return (
        f"keyblob: warning: the {role} is RSA-{bits}, a legacy size (under 2048 bits): "
        "use it only for old data\n"
    ) in err


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2047, 2048])
def test_verify_signature(kb, tmp_path, bits):
    f = _signed_blob(tmp_path, 2048, bits)
    cmd = ("capi", "verify-signature", f["sb"], "--signature", f["sig"], "--signer", f["signer"])
    status, out, err = kb(*cmd)
    if bits < 1024:
        assert status == 2 and _refused_reading(err, f["signer"], "signer's key", bits)
        assert "legacy=True" not in err and out == ""
        status, out, err = kb(*cmd, "--legacy")
    assert status == 0 and f"valid CALG_SHA_256 signature by the {bits}-bit key" in out
    assert _warned(err, "signer's key", bits) == (bits < 2048)


@pytest.mark.parametrize("bits", [512, 1024, 2048])
def test_unwrap_and_decrypt_with_a_small_signer_or_private_key(kb, tmp_path, bits):
    for exchange_bits, signer_bits, option, role in (
        (2048, bits, "signer", "signer's key"),
        (bits, 2048, "priv", "exchange key"),
    ):
        f = _signed_blob(tmp_path, exchange_bits, signer_bits)
        signed = ("--signature", f["sig"], "--signer", f["signer"])
        commands = [
            ("capi", "unwrap", "--private", f["priv"], f["sb"], *signed, "--info"),
            ("capi", "decrypt", "--private", f["priv"], "--simpleblob", f["sb"], *signed,
             "-i", f["enc"]),
        ]  # fmt: skip
        for cmd in commands:
            status, out, err = kb(*cmd)
            if bits < 1024:
                assert status == 2 and _refused_reading(err, f[option], role, bits), err
                assert out == ""
                status, out, err = kb(*cmd, "--legacy")
            assert status == 0, err
            assert out in ("CALG_AES_256, 256-bit key (32 bytes)\n", "old data")
            assert _warned(err, role, bits) == (bits < 2048)


@pytest.mark.parametrize("bits", [512, 1024])
def test_import_simpleblob_with_a_small_signer(kb, tmp_path, bits):
    f = _signed_blob(tmp_path, 2048, bits)
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("capi", "import-keypair", f["priv"])[0] == 0
    cmd = ("capi", "import-simpleblob", f["sb"], "--name", "old", "--signature", f["sig"],
           "--signer", f["signer"])  # fmt: skip
    status, out, err = kb(*cmd)
    if bits < 1024:
        assert status == 2 and _refused_reading(err, f["signer"], "signer's key", bits)
        assert kb("show", "old")[0] == 4  # nothing stored
        status, out, err = kb(*cmd, "--legacy")
    assert status == 0 and "imported" in out and _warned(err, "signer's key", bits)


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2047, 2048])
def test_export_simpleblob_to_a_small_recipient(kb, tmp_path, bits, monkeypatch):
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("new", "payroll", "--algorithm", "capi-aes-256")[0] == 0
    to = _pub(tmp_path / "peer.pub", rsa_of(bits))
    out_sb, out_sig = tmp_path / "out.sb", tmp_path / "out.sig"
    cmd = ("capi", "export-simpleblob", "payroll", "--to", to, "-o", out_sb,
           "--signature-out", out_sig)  # fmt: skip
    if bits < 2048:
        monkeypatch.delenv("KEYBLOB_PASSPHRASE")  # refused before the unlock
        status, _, err = kb(*cmd)
        assert status == 2 and err == (
            f"keyblob: error: {to}: the recipient's key is RSA-{bits}; below 2048 bits, "
            "wrapping a key for it needs --legacy\n"
        )
        assert not out_sb.exists() and not out_sig.exists()
        monkeypatch.setenv("KEYBLOB_PASSPHRASE", PASS)
        cmd = (*cmd, "--legacy")
    status, _, err = kb(*cmd)
    assert status == 0, err
    assert err.count("a legacy size") == (1 if bits < 2048 else 0)  # one line, not two
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = mscapi.unwrap_simpleblob(out_sb.read_bytes(), rsa_of(bits), legacy=True)
    assert got.key_size == 32


@pytest.mark.parametrize("bits", [512, 1023, 1024, 2048])
def test_convert(kb, tmp_path, bits):
    src = _priv(tmp_path / "k.priv", rsa_of(bits))
    out = tmp_path / "k.pem"
    status, _, err = kb("capi", "convert", src, "--to", "pem", "-o", out)
    if bits < 1024:
        assert status == 2 and _refused_reading(err, src, "key", bits) and not out.exists()
        status, _, err = kb("capi", "convert", src, "--to", "pem", "-o", out, "--legacy")
    assert status == 0 and out.exists()
    assert _warned(err, "key", bits) == (bits < 2048)


def test_wine_512_bit_keys_need_legacy(kb, tmp_path):
    """The 512-bit keys a real rsaenh made (../shared/vectors, read in place)."""
    wine = support.shared_vectors("cryptoapi") / "wine-rsaenh"
    for case, name in (
        ("keypair_512_exchange", "publickeyblob.bin"),
        ("privatekeyblob_512_signature_slot", "privatekeyblob.bin"),
    ):
        src = wine / case / name
        out = tmp_path / f"{case}.pem"
        status, _, err = kb("capi", "convert", src, "--to", "pem", "--public", "-o", out)
        assert status == 2 and _refused_reading(err, src, "key", 512) and not out.exists()
        status, _, err = kb(
            "capi", "convert", src, "--to", "pem", "--public", "-o", out, "--legacy"
        )
        assert status == 0 and _warned(err, "key", 512)
    # As a recipient: the Windows key of keypair_512_exchange.
    assert kb("init", "--suite", "rsa", "--bits", "2048")[0] == 0
    assert kb("new", "payroll", "--algorithm", "capi-aes-256")[0] == 0
    to = wine / "keypair_512_exchange" / "publickeyblob.bin"
    status, _, err = kb("capi", "export-simpleblob", "payroll", "--to", to, "-o",
                        tmp_path / "o.sb", "--signature-out", tmp_path / "o.sig")  # fmt: skip
    assert status == 2 and "the recipient's key is RSA-512; below 2048 bits" in err
    assert not (tmp_path / "o.sb").exists()


def test_a_count_longer_than_any_bound_is_a_refusal_not_a_traceback(kb, tmp_path):
    """The review's repro (issue 11 review, finding 1): a PBKDF2 count of 0x7f and 3000 0xff
    bytes.  `capi convert` and `trust add` printed a ValueError traceback (int -> str over
    4300 digits) instead of refusing the file."""
    count = b"\x02\x82\x0b\xb9\x7f" + b"\xff" * 3000  # an INTEGER, 3001 bytes of contents
    kdf = seq(oid(PBKDF2), seq(octets(bytes(8)), count))
    der = epki(seq(oid(PBES2), seq(kdf, seq(oid(AES_256_CBC), octets(bytes(16))))))
    (tmp_path / "big.der").write_bytes(der)
    (tmp_path / "big.pem").write_bytes(pem(der))
    refusal = (
        "encrypted PKCS#8: iterationCount at offset 52 is a 3001-byte integer, over keyblob's "
        "bounds (64 bits at most)\n"
    )
    status, out, err = kb(
        "capi", "convert", tmp_path / "big.der", "--to", "pem", "-o", tmp_path / "out"
    )
    big = tmp_path / "big.der"  # the file is named (issue 12: several key files per command)
    assert (status, out) == (3, "") and err.startswith(
        f"keyblob: error: {big}: {refusal}keyblob: hint"
    )
    status, out, err = kb("trust", "add", tmp_path / "big.pem")
    assert (status, out) == (3, "") and err.startswith("keyblob: error: ")
    assert err.endswith(f": {refusal}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
