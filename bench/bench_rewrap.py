"""``rewrap --all`` after ``keys rotate`` (issue 16), against the raw unwrap + wrap + sign of
the same number of blobs with cryptography (no store), and against the floor its promise sets:
one durable compare-and-set write per entry (atomic per name).

Run from the repository root (the project installed, e.g. editable, in the active venv)::

    python bench/bench_rewrap.py                 # 10^4 names, store on tmpfs (/dev/shm)
    python bench/bench_rewrap.py --dir /var/tmp  # the same on a disk (fsync costs)
    python bench/bench_rewrap.py --quick         # 10^3 names

The store: ``--names`` x25519 keys of one generation, made through the library
(``blobs._export`` then ``DirectoryStore.put``), their high-water marks recorded; then
``keys rotate`` (both pairs) and, timed:

- ``rewrap``: ``blobs.rewrap(container, store, jobs=2)``: the signature checks on two
  worker processes (the pool's start-up included), unwrap with the old exchange key, wrap for
  the new one, sign with the new signature key, ``Store.replace`` per entry, the revision
  marks recorded in batches; wall time and CPU time of every process (workers included);
- ``raw``: for each blob, ``X25519`` HPKE open + HPKE seal + Ed25519 sign with cryptography
  in a bare loop, on one core (the unwrap and sign must stay where the keys are);
- ``replace floor``: ``DirectoryStore.replace`` of every entry by same-sized bytes, nothing
  else: the durable write per name that "atomic per name" requires (temp file, fsync,
  rename, fsync of the folder), one at a time, and on ``blobs.WRITE_THREADS`` threads as
  rewrap writes them;
- ``verify``: the raw Ed25519 verify of every blob (what the workers add, on other cores).

Reported: rewrap / raw (the issue's target: <= 1.3) and rewrap / (raw + replace floor).
Every run starts from a freshly rotated copy of the same store.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from keyblob import Algorithm, Home, KdfParams, Suite, blobs
from keyblob.keys import KeyRole
from keyblob.storage.directory import DirectoryStore

PASSPHRASE = b"bench passphrase, not a secret"
FLOOR_KDF = KdfParams(memory_kib=8192, iterations=1, lanes=1)
HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
CONTEXT = b"keyblob/v1/wrap\x00" + bytes(89)  # a wrap context of a short name's size


def build(root: Path, names: int) -> None:
    home = Home(root / "home")
    container = home.create("default", PASSPHRASE, Suite.X25519, kdf=FLOOR_KDF)
    store = DirectoryStore(root / "store")
    recipients = blobs._recipient_keys(container, [])
    marks = {}
    for i in range(names):
        name = f"key-{i:06d}"
        encoded, _ = blobs._export(
            container,
            name=name,
            generation=1,
            algorithm=Algorithm.AES_256_GCM,
            recipients=recipients,
            key=None,
            random=secrets.token_bytes,
            now=lambda: 1_700_000_000,
        )
        store.put(name, 1, encoded)
        marks[name] = 1
    container.update_state(lambda s: s.with_marks(marks, store=store.identity))


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_rewrap(template: Path, work: Path) -> tuple[float, float, int]:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work, symlinks=True)
    container = Home(work / "home").open("default", PASSPHRASE)
    store = DirectoryStore(work / "store")
    blobs.rotate_own_keys(container, [KeyRole.EXCHANGE, KeyRole.SIGNATURE])
    os.sync()
    c0, t0 = cpu(), time.perf_counter()
    report = blobs.rewrap(container, store, jobs=2)
    wall = time.perf_counter() - t0
    used = cpu() - c0
    assert not report.failed and report.rewrapped == report.total, report
    return wall, used, report.rewrapped


def run_raw(n: int) -> float:
    old, new = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    signer = ed25519.Ed25519PrivateKey.generate()
    wrapped = [HPKE.encrypt(secrets.token_bytes(32), old.public_key(), info=CONTEXT)] * n
    message = bytes(300)  # about a blob's signed bytes
    new_public = new.public_key()
    t0 = time.perf_counter()
    for w in wrapped:
        key = HPKE.decrypt(w, old, info=CONTEXT)
        HPKE.encrypt(key, new_public, info=CONTEXT)
        signer.sign(message)
    return time.perf_counter() - t0


def run_verify(n: int) -> float:
    signer = ed25519.Ed25519PrivateKey.generate()
    public = signer.public_key()
    message = bytes(300)
    signature = signer.sign(message)
    t0 = time.perf_counter()
    for _ in range(n):
        public.verify(signature, message)
    return time.perf_counter() - t0


def run_replace_floor(template: Path, work: Path, threads: int) -> float:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work, symlinks=True)
    store = DirectoryStore(work / "store")
    entries = [(name, store.get(name, 1)) for name in store.names()]
    os.sync()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda e: store.replace(e[0], 1, e[1], bytes(len(e[1]))), entries))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="10^3 names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    args = parser.parse_args()
    n = 1000 if args.quick else args.names
    print(
        f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, store in {args.dir}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        build(root / "template", n)
        rows: dict[str, list[float]] = {
            k: [] for k in ("rewrap", "cpu", "raw", "floor", "floor8", "ver")
        }
        for _ in range(args.rounds):
            wall, used, done = run_rewrap(root / "template", root / "work")
            assert done == n
            rows["rewrap"].append(wall)
            rows["cpu"].append(used)
            rows["raw"].append(run_raw(n))
            rows["floor"].append(run_replace_floor(root / "template", root / "work", 1))
            rows["floor8"].append(
                run_replace_floor(root / "template", root / "work", blobs.WRITE_THREADS)
            )
            rows["ver"].append(run_verify(n))
        med = {k: statistics.median(v) for k, v in rows.items()}
    per = {k: v / n * 1e6 for k, v in med.items()}
    print(f"{n} names, medians of {args.rounds} rounds (µs per entry):")
    print(f"  rewrap --all (jobs 2)      {per['rewrap']:8.1f}  wall")
    busy = med["cpu"] / med["rewrap"]
    print(f"  rewrap CPU, all processes  {per['cpu']:8.1f}  ({busy:.2f} cores busy)")
    print(f"  raw unwrap + wrap + sign   {per['raw']:8.1f}")
    print(f"  replace floor (durable)    {per['floor']:8.1f}  one at a time")
    print(f"  replace floor, 8 threads   {per['floor8']:8.1f}  as rewrap writes")
    print(f"  raw verify (workers' part) {per['ver']:8.1f}")
    print(f"rewrap / raw                 {med['rewrap'] / med['raw']:.2f}  (target <= 1.3)")
    print(f"rewrap / (raw + floor)       {med['rewrap'] / (med['raw'] + med['floor']):.2f}")
    print(f"rewrap / max(raw, floor 8)   {med['rewrap'] / max(med['raw'], med['floor8']):.2f}")
    print(f"  load at the end {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
