"""A 2 GiB stream (generated, never stored) encrypts and decrypts in constant memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from keyblob import Home, blobs, open_store
from support import FAST_KDF, PASSPHRASE

SIZE = 2 * 1024**3
LIMIT_MIB = 100

COMMON = """
import hashlib, sys
from pathlib import Path
from keyblob import Home, blobs, files, open_store
home, store, passphrase = Path(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
container = Home(home).open("c", passphrase)
key = blobs.load(container, open_store(store), "big")
def peak_mib():
    # VmHWM belongs to this program's address space; ru_maxrss would also count the
    # pytest process this one was forked from (Linux keeps it across exec).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")
"""

ENCRYPT = """
import io
class Generated(io.RawIOBase):
    def __init__(self, size):
        self.left, self.pattern = size, bytes(range(256)) * 4096
        self.digest = hashlib.sha256()
    def readable(self):
        return True
    def readinto(self, buf):
        n = min(len(buf), self.left, len(self.pattern))
        buf[:n] = self.pattern[:n]
        self.digest.update(self.pattern[:n])
        self.left -= n
        return n
src = Generated(int(sys.argv[4]))
files.encrypt_stream(key, src, sys.stdout.buffer)
sys.stdout.buffer.flush()
print(src.digest.hexdigest(), peak_mib(), file=sys.stderr)
"""

DECRYPT = """
class Hashing:
    def __init__(self):
        self.digest, self.size = hashlib.sha256(), 0
    def write(self, b):
        self.digest.update(b)
        self.size += len(b)
        return len(b)
sink = Hashing()
files.decrypt_stream(key, sys.stdin.buffer, sink)
print(sink.digest.hexdigest(), sink.size, peak_mib())
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS is read from /proc (Linux)")
def test_two_gib_stream_in_constant_memory(tmp_path):
    home = Home(tmp_path / "home")
    container = home.create("c", PASSPHRASE, kdf=FAST_KDF)
    store = str(tmp_path / "store")
    blobs.generate(container, open_store(store), "big")
    args = [str(tmp_path / "home"), store, PASSPHRASE.decode(), str(SIZE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    enc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(COMMON + ENCRYPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    dec = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COMMON + DECRYPT), *args],
        stdin=enc.stdout,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    enc.stdout.close()
    enc_err = enc.stderr.read().decode()
    assert enc.wait(timeout=60) == 0, enc_err
    assert dec.returncode == 0, dec.stderr
    source_digest, enc_peak = enc_err.split()
    digest, size, dec_peak = dec.stdout.split()
    assert (digest, int(size)) == (source_digest, SIZE)
    assert float(enc_peak) < LIMIT_MIB, f"encrypt peak RSS {enc_peak} MiB"
    assert float(dec_peak) < LIMIT_MIB, f"decrypt peak RSS {dec_peak} MiB"
    print(f"peak RSS: encrypt {enc_peak} MiB, decrypt {dec_peak} MiB")
