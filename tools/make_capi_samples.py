#!/usr/bin/env python3
"""Make the CryptoAPI sample files of docs/MSCAPI.md section 7 with Wine's real CryptoAPI.

    python tools/make_capi_samples.py [--out docs/samples/capi]

Everything binary is made by the project's own CryptoAPI test program
(tests/interop/capi/capi_peer.c, built with mingw-w64 and run headless under Wine through
tests/interop/capi/peer.py), as a Windows program following the "storing a session key"
procedure would leave it on disk. No keyblob code is used, so the samples are an independent
check of keyblob. The only file not made by CryptoAPI is the .NET ``<RSAKeyValue>`` XML,
which is written here from the signer's PUBLICKEYBLOB with ``cryptography`` alone, the way
``RSA.ToXmlString(false)`` writes it.

Re-running makes new keys, so every binary file changes; the plaintext originals do not. The
committed files are what docs/MSCAPI.md and tests/cli/test_docs_migration.py use: after a
re-run, re-run the walkthrough's commands and update the outputs pasted in the doc.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from interop.capi import peer as capi_peer  # noqa: E402 - needs the sys.path entry above

DEFAULT_OUT = ROOT / "docs" / "samples" / "capi"

#: The plaintext originals (committed next to their ciphertexts, so tests can compare).
SALARIES = (
    "employee_id,name,department,monthly_salary_eur\n"
    "1001,Ada Lovelace,Engineering,6200.00\n"
    "1002,Charles Babbage,Engineering,5900.00\n"
    "1003,Grace Hopper,Operations,6400.00\n"
    "1004,Alan Turing,Research,6100.00\n"
)
MEMO = (
    "To: payroll\n"
    "Subject: March run\n"
    "\n"
    "Bonuses are paid with the March salaries. The file is encrypted with the payroll\n"
    "session key, like every payroll file since 2009.\n"
)
NOTES = "Old notes, encrypted in 2006 with an RC4 session key.\nNothing secret in here.\n"
ARCHIVE = "Archive index 2004-2008, encrypted with 3DES under the old 1024-bit key.\n"

PLAINTEXTS = {
    "salaries.csv": SALARIES,
    "memo.txt": MEMO,
    "notes.txt": NOTES,
    "archive.txt": ARCHIVE,
}


def _rsa_numbers_from_pubblob(blob: bytes) -> tuple[int, int]:
    """(n, e) from a PUBLICKEYBLOB: BLOBHEADER, 'RSA1', bitlen, pubexp, modulus (LE)."""
    magic, bitlen, pubexp = struct.unpack_from("<4sII", blob, 8)
    if blob[0] != 6 or magic != b"RSA1" or len(blob) != 20 + bitlen // 8:
        raise ValueError("not an RSA PUBLICKEYBLOB")
    return int.from_bytes(blob[20:], "little"), pubexp


def _dotnet_public_xml(blob: bytes) -> str:
    """What .NET's RSA.ToXmlString(false) writes: base64 of big-endian, minimal bytes."""
    n, e = _rsa_numbers_from_pubblob(blob)

    def b64(x: int) -> str:
        return base64.b64encode(x.to_bytes((x.bit_length() + 7) // 8, "big")).decode()

    return f"<RSAKeyValue><Modulus>{b64(n)}</Modulus><Exponent>{b64(e)}</Exponent></RSAKeyValue>"


def make(out: Path) -> None:
    peer = capi_peer.start()
    try:
        with tempfile.TemporaryDirectory(prefix="capi-samples-") as tmp:
            _make(peer, Path(tmp), out)
    finally:
        peer.close()


def _make(peer: capi_peer.CapiPeer, tmp: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in PLAINTEXTS.items():
        (out / name).write_text(text, encoding="utf-8", newline="\n")

    # The Windows user's key pairs: AT_KEYEXCHANGE (committed) and AT_SIGNATURE (kept here).
    peer.check("genkeypair", out / "exchange.privblob", tmp / "signature.privblob", "2048")
    peer.check("export-public", tmp / "signature.privblob", out / "signer.pubblob")
    peer.check("export-public", out / "exchange.privblob", tmp / "exchange.pubblob")

    # The procedure: a new AES-256 session key, SIMPLEBLOB under the exchange key, signed with
    # CryptSignHash (SHA-256), and the first file encrypted with it (zero IV).
    peer.check(
        "make-session",
        "aes256",
        tmp / "exchange.pubblob",
        tmp / "signature.privblob",
        "sha256",
        out / "payroll.simpleblob",
        out / "payroll.sig",
        out / "salaries.csv",
        out / "salaries.csv.enc",
    )
    # A second file under the same session key, as the program would encrypt it later.
    peer.check("unwrap", out / "exchange.privblob", out / "payroll.simpleblob", tmp / "aes.plain")
    peer.check("encrypt", tmp / "aes.plain", out / "memo.txt", out / "memo.txt.enc")

    # A legacy RC4 session key, signed the same way (for --legacy and the truncation limit).
    peer.check(
        "make-session",
        "rc4",
        tmp / "exchange.pubblob",
        tmp / "signature.privblob",
        "sha256",
        out / "notes-rc4.simpleblob",
        out / "notes-rc4.sig",
        out / "notes.txt",
        out / "notes.txt.enc",
    )

    # An older program's 1024-bit exchange key, and a 3DES key signed with SHA-1 under it:
    # keyblob will not make a 1024-bit key a container key, the one-shot commands read it.
    peer.check("genkeypair", out / "exchange-1024.privblob", tmp / "sign-1024.privblob", "1024")
    peer.check("export-public", out / "exchange-1024.privblob", tmp / "exchange-1024.pubblob")
    peer.check(
        "make-session",
        "3des",
        tmp / "exchange-1024.pubblob",
        tmp / "signature.privblob",
        "sha1",
        out / "archive-3des.simpleblob",
        out / "archive-3des.sig",
        out / "archive.txt",
        out / "archive.txt.enc",
    )

    # The attack the signature stops: a new key wrapped under the same public key, by anyone.
    peer.check("gen-session", "aes256", tmp / "evil.plain")
    peer.check("wrap", tmp / "evil.plain", tmp / "exchange.pubblob", out / "substituted.simpleblob")

    # Cross-checks with CryptoAPI itself before anything is committed.
    signed = {"payroll": "sha256", "notes-rc4": "sha256", "archive-3des": "sha1"}
    for blob, hash_alg in signed.items():
        sig = out / f"{blob}.sig"
        peer.check("verify", out / "signer.pubblob", hash_alg, out / f"{blob}.simpleblob", sig)
    for name in ("salaries.csv", "memo.txt"):
        peer.check("decrypt", tmp / "aes.plain", out / f"{name}.enc", tmp / name)
        if (tmp / name).read_bytes() != (out / name).read_bytes():
            raise AssertionError(f"CryptoAPI does not decrypt {name}.enc to {name}")

    (out / "signer.xml").write_text(
        _dotnet_public_xml((out / "signer.pubblob").read_bytes()), encoding="utf-8"
    )
    _write_readme(out)


def _wine_version() -> str:
    wine = capi_peer.find_wine()
    done = subprocess.run(
        [*wine, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=capi_peer.wine_env(capi_peer.cache_dir() / "prefix"),
    )
    return done.stdout.strip() or "unknown"


def _write_readme(out: Path) -> None:
    rows = []
    for path in sorted(out.iterdir()):
        if path.name != "README.md":
            rows.append(f"| `{path.name}` | {path.stat().st_size} | {DESCRIPTIONS[path.name]} |")
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    compiler = shutil.which(capi_peer.CC) or capi_peer.CC
    text = README.format(
        wine=_wine_version(), date=today, compiler=Path(compiler).name, table="\n".join(rows)
    )
    (out / "README.md").write_text(text, encoding="utf-8")


DESCRIPTIONS = {
    "exchange.privblob": "the Windows user's AT_KEYEXCHANGE key pair, PRIVATEKEYBLOB, "
    "RSA-2048, exportable (CALG_RSA_KEYX)",
    "signer.pubblob": "the signer's AT_SIGNATURE public key, PUBLICKEYBLOB (CALG_RSA_SIGN); "
    "its private half is not committed",
    "signer.xml": "the same public key as .NET's `RSA.ToXmlString(false)` writes it "
    "(written by the script, not by CryptoAPI)",
    "payroll.simpleblob": "an AES-256 session key (CALG_AES_256) wrapped under the exchange key",
    "payroll.sig": "CryptSignHash (CALG_SHA_256, AT_SIGNATURE) over the SIMPLEBLOB's bytes",
    "salaries.csv": "plaintext original",
    "salaries.csv.enc": "`salaries.csv` after CryptEncrypt(Final=TRUE) with the AES-256 key, "
    "zero IV, PKCS#5 padding",
    "memo.txt": "plaintext original",
    "memo.txt.enc": "`memo.txt` encrypted the same way, same session key",
    "notes-rc4.simpleblob": "a legacy 128-bit RC4 session key (CALG_RC4) wrapped under the "
    "exchange key",
    "notes-rc4.sig": "CryptSignHash (CALG_SHA_256) over `notes-rc4.simpleblob`",
    "notes.txt": "plaintext original",
    "notes.txt.enc": "`notes.txt` after CryptEncrypt with the RC4 key (a stream: same length)",
    "exchange-1024.privblob": "an older program's exchange key pair, PRIVATEKEYBLOB, RSA-1024 "
    "(too small for a container: one-shot commands only)",
    "archive-3des.simpleblob": "a legacy 3DES session key (CALG_3DES) wrapped under the 1024-bit "
    "exchange key",
    "archive-3des.sig": "CryptSignHash (CALG_SHA1, legacy) over `archive-3des.simpleblob`, "
    "by the same signer",
    "archive.txt": "plaintext original",
    "archive.txt.enc": "`archive.txt` after CryptEncrypt with the 3DES key, zero IV",
    "substituted.simpleblob": "an attacker's AES-256 key wrapped under the same exchange public "
    "key, signed by nobody (section 4: unwraps fine, only the signature check refuses it)",
}

README = """\
# CryptoAPI sample files

Sample files for the walkthrough "Migrating from CryptoAPI" in `docs/MSCAPI.md` (section 7),
used by `tests/cli/test_docs_migration.py`.

**The private keys in `exchange.privblob` and `exchange-1024.privblob` are throwaway sample
keys, made for this documentation only. They protect nothing. Never use them, or any key
published anywhere, for real data.**

## How they were made

    python tools/make_capi_samples.py

on {date}, with {wine}
and the CryptoAPI test program `tests/interop/capi/capi_peer.c`
(built with `{compiler}`, run headless under Wine by `tests/interop/capi/peer.py`;
it uses the "Microsoft Enhanced RSA and AES Cryptographic Provider", which is Wine's
`rsaenh`). Every binary file was written by CryptoAPI calls (`CryptGenKey`,
`CryptExportKey`, `CryptCreateHash`/`CryptSignHash`, `CryptEncrypt`), as a Windows program
that follows the "storing a session key" procedure leaves them. The script checked the
signatures with `CryptVerifySignature` and the AES ciphertexts with `CryptDecrypt` before
writing this file.
No keyblob code was involved. `signer.xml` is the only file the script wrote itself (from
`signer.pubblob`, with plain base64, as .NET's `RSA.ToXmlString(false)` writes a key).

Re-running the script makes new keys, so every binary file changes (the `.txt` and `.csv`
originals do not), and the outputs pasted in `docs/MSCAPI.md` must then be refreshed.

## Files

| file | bytes | what |
|---|---|---|
{table}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    try:
        make(args.out)
    except capi_peer.PeerUnavailableError as e:
        print(f"make_capi_samples: {e}", file=sys.stderr)
        return 2
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(list(args.out.iterdir()))} files ({total} bytes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
