"""`keyblob capi` against hostile key inputs (issue 11): an encrypted PKCS#8 key whose
KDF would run for minutes, and RSA keys too small to mean anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hostile_keys import pbes2_pbkdf2, pem
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
        "keyblob: error: encrypted PKCS#8: 2147483647 PBKDF2 iterations is over keyblob's "
        f"bound of {MAX_KDF_ITERATIONS}\nkeyblob: hint: "
    )
    assert not (tmp_path / "out").exists()
