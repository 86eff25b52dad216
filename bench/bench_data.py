"""Data encryption throughput: keyblob against the raw loop, age, gpg and openssl (issue 3).

Run from the repository root (the project installed in the active venv; matplotlib for the
chart: ``pip install matplotlib``)::

    python bench/bench_data.py --json /tmp/data.json --chart bench/data_throughput.png
    python bench/bench_data.py --size-mib 64 --rounds 2      # smoke run, ~1 minute
    python bench/bench_data.py --chart-from a.json b.json --chart bench/data_throughput.png
    python bench/bench_data.py --rss-sweep --json /tmp/rss.json   # memory target, ~2 min

One run encrypts and decrypts the same random file (1 GiB by default, written once to a
temp folder on disk and deleted at the end) with every tool, round after round.  The tool
order rotates every round and reverses every other round, so drift hits all of them.
Every run is its own process, started by GNU ``/usr/bin/time -f %M`` for its own peak RSS.

- ``keyblob library``: ``files.encrypt_stream`` / ``files.decrypt_stream``, file in, file
  out, in a child process.  The time is read inside the child around the call (files
  opened and closed inside it); the key comes from a container with a cheap KDF, so the
  peak RSS is the interpreter, the imports and the data path.
- ``raw loop``: the ceiling for this design in Python.  Read 16384 bytes into a buffer,
  ``AESGCM.encrypt`` with a counter nonce, write; decrypt reads 16400 and calls
  ``AESGCM.decrypt``.  Same child process setup and timing as the library.
- ``raw loop, 1 MiB I/O`` (extra, not a target): the same AES-GCM over 16 KiB chunks with
  ``encrypt_into`` / ``decrypt_into``, but one read and one write per 64 chunks (1 MiB),
  the batches stream.py uses, without its write thread (stream.py writes one batch while
  it seals the next).
- ``keyblob CLI``: ``keyblob encrypt k -i IN -o OUT`` / ``keyblob decrypt -i IN -o OUT``
  with a home made by ``keyblob init`` (default Argon2id, 64 MiB).  Wall time, reported
  as the total and as the total minus a ``keyblob show k`` baseline (interpreter start,
  imports, unlock, key load).  The CLI fsyncs its output before the rename.  The peak RSS
  of ``show`` is printed too: it is the CLI's floor (the unlock), so the CLI's peak minus
  it is what the data path adds.
- ``age`` (X25519 recipient), ``gpg --symmetric --cipher-algo AES256 --compress-algo none``
  and ``openssl enc -aes-256-ctr -pbkdf2``: wall time of the command.

After every timed run the output is fsynced outside the timing, so one run's writeback does
not land in the next; that fsync time is recorded too, and "until on disk" (tool + fsync)
compares every tool at the durability the keyblob CLI gives its output.  In the first
round every decrypted output is compared (SHA-256) with the input.  Nothing is asserted;
everything is reported.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import hashlib
import io
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 16384
SEALED = CHUNK + 16
PASSPHRASE = "bench passphrase"
MIB = 1 << 20
RAW_TARGET = 0.85
RSS_TARGET_MIB = 64
# Issue 3's memory target as issue 11 decided it: the data path adds at most this much to a
# command's peak RSS (the Argon2id unlock counted apart), flat from 1 MiB to 2 GiB.
DATA_PATH_RSS_TARGET_MIB = 8
SWEEP_MIB = (1, 64, 1024, 2048)
TOOLS = ["keyblob-lib", "raw-loop", "raw-batch", "keyblob-cli", "age", "gpg", "openssl"]
LABELS = {
    "keyblob-lib": "keyblob library",
    "raw-loop": "raw AESGCM loop",
    "raw-batch": "raw loop, 1 MiB I/O",
    "keyblob-cli": "keyblob CLI (total)",
    "age": "age",
    "gpg": "gpg --symmetric",
    "openssl": "openssl enc -aes-256-ctr",
}
DIRECTIONS = ("encrypt", "decrypt")
TIME = "/usr/bin/time"  # GNU time (Debian package `time`), for each process's own peak RSS


# -- child processes: the library and the raw loops -----------------------------------------


def _raw_encrypt(key: bytes, src: io.BufferedReader, dst: io.BufferedWriter) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    encrypt = AESGCM(key).encrypt
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    index = 0
    while True:
        n = src.readinto(buf)
        dst.write(encrypt(index.to_bytes(12, "big"), buf if n == CHUNK else view[:n], None))
        if n < CHUNK:
            return
        index += 1


def _raw_decrypt(key: bytes, src: io.BufferedReader, dst: io.BufferedWriter) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    decrypt = AESGCM(key).decrypt
    buf = bytearray(SEALED)
    view = memoryview(buf)
    index = 0
    while True:
        n = src.readinto(buf)
        dst.write(decrypt(index.to_bytes(12, "big"), buf if n == SEALED else view[:n], None))
        if n < SEALED:
            return
        index += 1


BATCH = 64  # chunks per read/write, as src/keyblob/stream.py does (1 MiB of plaintext)


def _batch_encrypt(key: bytes, src: io.BufferedReader, dst: io.BufferedWriter) -> None:
    """encrypt_into over 16 KiB chunks, one read and one write per 64 chunks (1 MiB)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    encrypt_into = AESGCM(key).encrypt_into
    plain = memoryview(bytearray(CHUNK * BATCH))
    sealed = memoryview(bytearray(SEALED * BATCH))
    index = 0
    while True:
        n = src.readinto(plain)
        done, out = 0, 0
        while done < n:
            take = min(CHUNK, n - done)
            encrypt_into(
                index.to_bytes(12, "big"),
                plain[done : done + take],
                None,
                sealed[out : out + take + 16],
            )
            done += take
            out += take + 16
            index += 1
        dst.write(sealed[:out])
        if n < CHUNK * BATCH:
            return


def _batch_decrypt(key: bytes, src: io.BufferedReader, dst: io.BufferedWriter) -> None:
    """decrypt_into over 16 KiB chunks, one read and one write per 64 chunks."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    decrypt_into = AESGCM(key).decrypt_into
    sealed = memoryview(bytearray(SEALED * BATCH))
    plain = memoryview(bytearray(CHUNK * BATCH))
    index = 0
    while True:
        n = src.readinto(sealed)
        done, out = 0, 0
        while done < n:
            take = min(SEALED, n - done)
            decrypt_into(
                index.to_bytes(12, "big"),
                sealed[done : done + take],
                None,
                plain[out : out + take - 16],
            )
            done += take
            out += take - 16
            index += 1
        dst.write(plain[:out])
        if n < SEALED * BATCH:
            return


def child(kind: str, direction: str, work: Path, src_path: str, dst_path: str) -> None:
    """Run one operation; print its in-process seconds and peak RSS before and after."""
    if kind == "keyblob-lib":
        from keyblob import Home, blobs, files, open_store  # noqa: PLC0415

        container = Home(work / "libhome").open("c", PASSPHRASE.encode())
        key = blobs.load(container, open_store(str(work / "libhome" / "store")), "k")

        def run(src: io.BufferedReader, dst: io.BufferedWriter) -> None:
            if direction == "encrypt":
                files.encrypt_stream(key, src, dst)
            else:
                files.decrypt_stream(key, src, dst)

    else:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401, PLC0415 - not timed

        raw_key = bytes.fromhex((work / "raw.key").read_text())
        fns = {
            ("raw-loop", "encrypt"): _raw_encrypt,
            ("raw-loop", "decrypt"): _raw_decrypt,
            ("raw-batch", "encrypt"): _batch_encrypt,
            ("raw-batch", "decrypt"): _batch_decrypt,
        }
        fn = fns[kind, direction]

        def run(src: io.BufferedReader, dst: io.BufferedWriter) -> None:
            fn(raw_key, src, dst)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
        run(src, dst)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_before_kib": before, "rss_after_kib": after}))


# -- the parent: setup, rounds, report -----------------------------------------------------


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; returns (wall seconds, its own peak RSS in KiB, stdout).  Raises on failure.

    The peak comes from GNU ``/usr/bin/time -f %M``, not from ``os.wait4`` here: Linux keeps
    the RSS high-water mark across exec, so a child forked from this (large) interpreter
    would report at least the parent's RSS.  ``time`` is small, so its children are not
    inflated.  Its own start costs about a millisecond of the wall time.
    """
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as out:
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            p = subprocess.run(
                [TIME, "-f", "%M", "-o", rss.name, *cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                check=False,
            )
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {tail}")
        out.seek(0)
        peak = int(Path(rss.name).read_text().split()[-1])
        return wall, peak, out.read().decode()


def fsync_path(path: Path) -> float:
    if not path.exists():  # age writes nothing for an empty plaintext
        return 0.0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def cache(path: Path, *, keep: bool) -> None:
    """Put the (fsynced) file in the page cache, or take it out.

    Every timed run then holds the same 2 GiB of page cache: its input and its output.
    On this VM, memory beyond what it recently used comes back slowly from the host: a
    decrypt that wrote its 1 GiB while the plaintext input was still cached (3 GiB in
    all) took 0.67-3.1 s, and 0.32-0.33 s with it dropped (bench README, "noise").
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if keep:
            while os.read(fd, 8 * MIB):
                pass
        else:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Bench:
    def __init__(self, work: Path, tools: list[str]) -> None:
        self.work = work
        self.tools = tools
        self.keyblob = shutil.which("keyblob", path=str(Path(sys.executable).parent)) or "keyblob"
        self.env = dict(os.environ)
        self.env.update(
            KEYBLOB_HOME=str(work / "clihome"),
            KEYBLOB_PASSPHRASE=PASSPHRASE,
            GNUPGHOME=str(work / "gnupg"),
        )
        self.env.pop("KEYBLOB_STORE", None)

    def setup(self) -> None:
        from keyblob import Home, KdfParams, blobs, open_store  # noqa: PLC0415

        work = self.work
        (work / "raw.key").write_text(os.urandom(32).hex())
        cheap = KdfParams(memory_kib=8192, iterations=1, lanes=1)
        container = Home(work / "libhome").create("c", PASSPHRASE.encode(), kdf=cheap)
        blobs.generate(container, open_store(str(work / "libhome" / "store")), "k")
        spawn([self.keyblob, "init"], self.env)
        spawn([self.keyblob, "new", "k"], self.env)
        if "age" in self.tools:
            spawn(["age-keygen", "-o", str(work / "age.key")], self.env)
            text = (work / "age.key").read_text()
            self.age_recipient = text.split("# public key: ")[1].split()[0]
        (work / "gnupg").mkdir(mode=0o700)

    def command(self, tool: str, direction: str, src: Path, dst: Path) -> list[str]:
        enc = direction == "encrypt"
        if tool in ("keyblob-lib", "raw-loop", "raw-batch"):
            me = str(Path(__file__).resolve())
            work = str(self.work)
            return [sys.executable, me, "--child", tool, direction, work, str(src), str(dst)]
        if tool == "keyblob-cli":
            if enc:
                return [self.keyblob, "encrypt", "k", "-i", str(src), "-o", str(dst), "--quiet"]
            return [self.keyblob, "decrypt", "-i", str(src), "-o", str(dst), "--quiet"]
        if tool == "age":
            if enc:
                return ["age", "-r", self.age_recipient, "-o", str(dst), str(src)]
            return ["age", "-d", "-i", str(self.work / "age.key"), "-o", str(dst), str(src)]
        if tool == "gpg":
            common = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback"]
            common += ["--passphrase", PASSPHRASE]
            if enc:
                return [
                    *common,
                    "--symmetric",
                    "--cipher-algo",
                    "AES256",
                    "--compress-algo",
                    "none",
                    "-o",
                    str(dst),
                    str(src),
                ]
            return [*common, "-d", "-o", str(dst), str(src)]
        if tool == "openssl":
            d = [] if enc else ["-d"]
            return [
                "openssl",
                "enc",
                "-aes-256-ctr",
                *d,
                "-pbkdf2",
                "-pass",
                f"pass:{PASSPHRASE}",
                "-in",
                str(src),
                "-out",
                str(dst),
            ]
        raise ValueError(tool)

    def run_one(self, tool: str, direction: str, src: Path, dst: Path) -> dict[str, float]:
        dst.unlink(missing_ok=True)
        wall, rss, out = spawn(self.command(tool, direction, src, dst), self.env)
        row: dict[str, float] = {"wall": wall, "rss_kib": rss, "fsync": fsync_path(dst)}
        if out.strip():
            inner = json.loads(out)
            row.update(inner)
        else:
            row["seconds"] = wall
        return row


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def versions() -> dict[str, str]:
    import cryptography  # noqa: PLC0415

    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            return "missing"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl_cli": first_line(["openssl", "version"]),
        "openssl_lib": first_line(
            [
                sys.executable,
                "-c",
                "from cryptography.hazmat.backends.openssl import backend;"
                "print(backend.openssl_version_text())",
            ]
        ),
        "age": first_line(["age", "--version"]),
        "gpg": first_line(["gpg", "--version"]),
        "kernel": platform.release(),
    }


def disk_of(path: Path) -> str:
    out = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True, check=False)
    lines = out.stdout.splitlines()
    return " ".join(lines[-1].split()[:3]) if len(lines) > 1 else "?"


def bench(args: argparse.Namespace) -> dict[str, Any]:
    tools = [t for t in TOOLS if t not in args.skip]
    parent = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="kb-bench-data-", dir=parent))
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/bench_data.py", *sys.argv[1:]]),
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "machine": versions(),
        "disk": disk_of(work),
    }
    bench = Bench(work, tools)
    try:
        bench.setup()
        plain = work / "plain"
        t0 = time.perf_counter()
        with open(plain, "wb") as f:
            for _ in range(args.size_mib // 16):
                f.write(os.urandom(16 * MIB))
            f.write(os.urandom(args.size_mib % 16 * MIB))
        fsync_path(plain)
        digest = sha256(plain)
        took = time.perf_counter() - t0
        print(f"# {args.size_mib} MiB input written in {took:.1f} s", flush=True)

        # Fixed costs: every tool on an empty input; and `keyblob show` for the CLI.
        empty = work / "empty"
        empty.touch()
        fixed: dict[str, dict[str, float]] = {}
        for tool in tools:
            fixed[tool] = {}
            for direction in DIRECTIONS:
                src = empty if direction == "encrypt" else work / f"empty.{tool}"
                dst = work / f"empty.{tool}" if direction == "encrypt" else work / "empty.out"
                times = [bench.run_one(tool, direction, src, dst)["wall"] for _ in range(5)]
                fixed[tool][direction] = statistics.median(times)
        # `show` unlocks and loads the key but moves no data: its peak RSS is the CLI's
        # floor, so the CLI's peak minus this one is what the data path adds.
        show = [spawn([bench.keyblob, "show", "k"], bench.env) for _ in range(5)]
        result["cli_show_baseline_s"] = statistics.median(s[0] for s in show)
        result["cli_show_rss_kib"] = statistics.median(s[1] for s in show)
        result["fixed_cost_s"] = fixed
        print(
            f"# keyblob show: {result['cli_show_baseline_s'] * 1000:.0f} ms, "
            f"peak RSS {result['cli_show_rss_kib'] / 1024:.1f} MiB",
            flush=True,
        )

        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            t: {d: [] for d in DIRECTIONS} for t in tools
        }
        checks: dict[str, bool] = {}
        for r in range(args.rounds):
            k = r % len(tools)
            order = tools[k:] + tools[:k]
            if r % 2:
                order.reverse()
            for tool in order:
                sealed = work / f"sealed.{tool}"
                opened = work / "opened"
                cache(plain, keep=True)
                runs[tool]["encrypt"].append(bench.run_one(tool, "encrypt", plain, sealed))
                cache(plain, keep=False)  # the decrypt neither reads it nor pays for it
                runs[tool]["decrypt"].append(bench.run_one(tool, "decrypt", sealed, opened))
                if r == 0:
                    checks[tool] = sha256(opened) == digest
                # Only the input and this tool's two outputs exist at any time: seven
                # 1 GiB ciphertexts kept around made the kernel reclaim memory mid-run.
                opened.unlink()
                sealed.unlink()
                e, d = runs[tool]["encrypt"][-1], runs[tool]["decrypt"][-1]
                print(
                    f"round {r} {tool:12} enc {e['seconds']:6.2f} s {e['rss_kib'] / 1024:6.1f} MiB"
                    f"   dec {d['seconds']:6.2f} s {d['rss_kib'] / 1024:6.1f} MiB",
                    flush=True,
                )
        result["roundtrip_ok"] = checks
        result["runs"] = runs
    finally:
        if shutil.which("gpgconf") and (work / "gnupg").exists():
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=bench.env, check=False)
        shutil.rmtree(work, ignore_errors=True)
    summarize(result)
    if args.profile_mib and (args.profile or _lib_ratio_below_target(result)):
        result["profile"] = profile(args.profile_mib, parent)
    return result


def summarize(result: dict[str, Any]) -> None:
    """Medians, IQRs and ratios into result['summary']."""
    size = result["size_mib"]
    show = result["cli_show_baseline_s"]
    summary: dict[str, Any] = {}
    for tool, by_dir in result["runs"].items():
        summary[tool] = {}
        for direction, rows in by_dir.items():
            secs = [row["seconds"] for row in rows]
            q1, med, q3 = quartiles(secs)
            entry = {
                "median_s": med,
                "mib_s": size / med,
                "mib_s_iqr": [size / q3, size / q1],
                "rss_mib_max": max(row["rss_kib"] for row in rows) / 1024,
                "fsync_s": statistics.median(row["fsync"] for row in rows),
                # Until the output is on disk: the tool's time plus the fsync after it.  The
                # keyblob CLI syncs before it exits, so this compares equal durability.
                "durable_s": statistics.median(row["seconds"] + row["fsync"] for row in rows),
            }
            if "rss_before_kib" in rows[0]:
                entry["rss_before_call_mib"] = max(row["rss_before_kib"] for row in rows) / 1024
                entry["wall_s"] = statistics.median(row["wall"] for row in rows)
            if tool == "keyblob-cli":
                entry["minus_show_s"] = med - show
                entry["mib_s_minus_show"] = size / (med - show)
            summary[tool][direction] = entry
    ratios: dict[str, dict[str, float]] = {}
    lib = summary.get("keyblob-lib")
    if lib:
        for direction in DIRECTIONS:
            ratios[direction] = {
                f"lib/{other}": lib[direction]["mib_s"] / summary[other][direction]["mib_s"]
                for other in summary
                if other != "keyblob-lib"
            }
            if "keyblob-cli" in summary:
                cli = summary["keyblob-cli"][direction]
                for other in ("age", "gpg", "openssl"):
                    if other in summary:
                        theirs = summary[other][direction]
                        ratios[direction][f"cli/{other}"] = cli["mib_s"] / theirs["mib_s"]
                        ratios[direction][f"cli/{other} until on disk"] = (
                            theirs["durable_s"] / cli["durable_s"]
                        )
    # Per-round ratios lib/raw: the run pairs share a round, so drift partly cancels.
    for base in ("raw-loop", "raw-batch"):
        if "keyblob-lib" not in result["runs"] or base not in result["runs"]:
            continue
        for direction in DIRECTIONS:
            pairs = zip(
                result["runs"]["keyblob-lib"][direction],
                result["runs"][base][direction],
                strict=True,
            )
            per_round = [raw["seconds"] / lib_["seconds"] for lib_, raw in pairs]
            ratios[direction][f"lib/{base} per-round median"] = statistics.median(per_round)
    result["summary"] = summary
    result["ratios"] = ratios


def _lib_ratio_below_target(result: dict[str, Any]) -> bool:
    return any(
        result["ratios"].get(d, {}).get("lib/raw-loop", 1.0) < RAW_TARGET for d in DIRECTIONS
    )


def profile(size_mib: int, parent: Path) -> str:
    """cProfile of files.encrypt_stream over ``size_mib`` MiB, file in, file out."""
    from keyblob import Home, KdfParams, blobs, files, open_store  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="kb-bench-prof-", dir=parent) as tmp:
        work = Path(tmp)
        container = Home(work / "home").create(
            "c", b"pw", kdf=KdfParams(memory_kib=8192, iterations=1, lanes=1)
        )
        key = blobs.generate(container, open_store(str(work / "store")), "k")
        with open(work / "in", "wb") as f:
            for _ in range(size_mib // 16):
                f.write(os.urandom(16 * MIB))
        prof = cProfile.Profile()
        with open(work / "in", "rb") as src, open(work / "out", "wb") as dst:
            prof.enable()
            files.encrypt_stream(key, src, dst)
            prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
    return text.getvalue()


# -- report ---------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\n# {result['command']}")
    print(f"# {m['date']}  nproc={m['nproc']}  {m['cpu']}  python {m['python']}")
    print(f"# cryptography {m['cryptography']} ({m['openssl_lib']}); {m['openssl_cli']};")
    print(f"# age {m['age']}; {m['gpg']}; disk {result['disk']}")
    print(
        f"# {result['size_mib']} MiB, {result['rounds']} rounds; round trip OK: "
        f"{result['roundtrip_ok']}"
    )
    print(f"# keyblob show baseline: {result['cli_show_baseline_s'] * 1000:.0f} ms", end="")
    if "cli_show_rss_kib" in result:  # absent from JSON files of earlier runs
        print(f", peak RSS {result['cli_show_rss_kib'] / 1024:.1f} MiB", end="")
    print()
    head = f"{'tool':26} {'dir':8} {'median s':>9} {'MiB/s':>7} {'IQR MiB/s':>15} "
    print(head + f"{'peak RSS':>9} {'fixed ms':>9} {'fsync s':>8} {'on disk s':>9}")
    for tool, by_dir in result["summary"].items():
        for direction, e in by_dir.items():
            iqr = f"{e['mib_s_iqr'][0]:.0f}-{e['mib_s_iqr'][1]:.0f}"
            fixed = result["fixed_cost_s"][tool][direction] * 1000
            print(
                f"{LABELS[tool]:26} {direction:8} {e['median_s']:9.2f} {e['mib_s']:7.0f} "
                f"{iqr:>15} {e['rss_mib_max']:8.1f}M {fixed:9.0f} {e['fsync_s']:8.2f} "
                f"{e['durable_s']:9.2f}"
            )
            if "mib_s_minus_show" in e:
                print(
                    f"{'  minus keyblob show':26} {direction:8} {e['minus_show_s']:9.2f} "
                    f"{e['mib_s_minus_show']:7.0f}"
                )
            if "rss_before_call_mib" in e:
                print(
                    f"{'  in child, before call':26} {'':8} wall {e['wall_s']:.2f} s, "
                    f"RSS before the call {e['rss_before_call_mib']:.1f}M"
                )
    print("\nratios of throughput (higher = keyblob faster):")
    for direction, rs in result["ratios"].items():
        for name, value in rs.items():
            print(f"  {direction:8} {name:34} {value:6.3f}")
    if "profile" in result:
        print("\ncProfile, files.encrypt_stream:\n" + result["profile"])


def chart(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tools = [t for t in TOOLS if t in results[0]["summary"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        for i, res in enumerate(results):
            width = 0.8 / len(results)
            ys = [k + (i - (len(results) - 1) / 2) * width for k in range(len(tools))]
            meds, lo, hi = [], [], []
            for tool in tools:
                e = res["summary"][tool][direction]
                meds.append(e["mib_s"])
                lo.append(e["mib_s"] - e["mib_s_iqr"][0])
                hi.append(e["mib_s_iqr"][1] - e["mib_s"])
            colors = ["#d62728" if t.startswith("keyblob") else "#7f7f7f" for t in tools]
            ax.barh(
                ys,
                meds,
                height=width,
                xerr=[lo, hi],
                color=colors,
                alpha=1.0 - 0.35 * i,
                capsize=2,
                label=f"run {i + 1} ({res.get('disk', '?').split()[1]}, {res['rounds']} rounds)",
            )
            for y, v in zip(ys, meds, strict=True):
                ax.text(v + 8, y, f"{v:.0f}", va="center", fontsize=7)
        ax.set_title(f"{direction} {results[0]['size_mib']} MiB, file to file")
        ax.set_xlabel("MiB/s (median, bars: IQR)")
        ax.set_yticks(range(len(tools)), [LABELS[t] for t in tools])
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7, loc="lower right")
    m = results[0]["machine"]
    fig.suptitle(
        f"keyblob data throughput (issue 3): {m['nproc']} cores, Python {m['python']}, "
        f"cryptography {m['cryptography']}; {len(results)} run(s), {m['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"# chart written to {out}")


def rss_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of the CLI's encrypt and decrypt over inputs of 1 MiB to 2 GiB, each against
    ``keyblob show`` on the same home (the unlock and key load, no data), in one run."""
    parent = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="kb-bench-rss-", dir=parent))
    bench = Bench(work, ["keyblob-cli"])
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/bench_data.py", *sys.argv[1:]]),
        "machine": versions(),
        "disk": disk_of(work),
        "sizes": {},
    }
    try:
        bench.setup()
        for size in args.sweep_mib:
            plain, sealed, out = work / "plain", work / "sealed", work / "out"
            with open(plain, "wb") as f:
                for _ in range(size // 16):
                    f.write(os.urandom(16 * MIB))
                f.write(os.urandom(size % 16 * MIB))
            rows: dict[str, list[int]] = {"show": [], "encrypt": [], "decrypt": []}
            for _ in range(args.rounds):  # interleaved, so drift hits all three alike
                rows["show"].append(spawn([bench.keyblob, "show", "k"], bench.env)[1])
                for direction, src, dst in (("encrypt", plain, sealed), ("decrypt", sealed, out)):
                    row = bench.run_one("keyblob-cli", direction, src, dst)
                    rows[direction].append(int(row["rss_kib"]))
            for f in (plain, sealed, out):
                f.unlink(missing_ok=True)
            result["sizes"][str(size)] = rows
            show = statistics.median(rows["show"]) / 1024
            print(
                f"# {size:5} MiB  show {show:.1f}  encrypt {max(rows['encrypt']) / 1024:.1f}"
                f"  decrypt {max(rows['decrypt']) / 1024:.1f} MiB (peaks)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def print_rss_sweep(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\n# {result['command']}")
    print(f"# {m['date']}  nproc={m['nproc']}  python {m['python']}; disk {result['disk']}")
    print(
        f"{'input MiB':>9} {'show':>7} {'encrypt':>8} {'+data':>6} {'decrypt':>8} {'+data':>6}"
        "   (peak RSS, MiB; +data = max(command) - median(show))"
    )
    adds = []
    for size, rows in result["sizes"].items():
        show = statistics.median(rows["show"]) / 1024
        enc, dec = max(rows["encrypt"]) / 1024, max(rows["decrypt"]) / 1024
        adds += [enc - show, dec - show]
        print(f"{size:>9} {show:7.1f} {enc:8.1f} {enc - show:6.1f} {dec:8.1f} {dec - show:6.1f}")
    worst, spread = max(adds), max(adds) - min(adds)
    verdict = "met" if worst <= DATA_PATH_RSS_TARGET_MIB else "NOT met"
    print(
        f"data path adds at most {worst:.1f} MiB (target <= {DATA_PATH_RSS_TARGET_MIB}): "
        f"{verdict}; spread over the sizes {spread:.1f} MiB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", help="parent of the temp folder (default: the system temp dir)")
    p.add_argument("--skip", nargs="*", default=[], choices=TOOLS)
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--chart", help="write the throughput chart (PNG) here")
    p.add_argument("--chart-from", nargs="+", help="plot saved --json files, run nothing")
    p.add_argument("--profile", action="store_true", help="cProfile even if the target is met")
    p.add_argument("--profile-mib", type=int, default=256)
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    p.add_argument(
        "--rss-sweep", action="store_true", help="peak RSS of the CLI over input sizes only"
    )
    p.add_argument("--sweep-mib", type=int, nargs="+", default=list(SWEEP_MIB))
    args = p.parse_args()
    if args.rss_sweep:
        result = rss_sweep(args)
        print_rss_sweep(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return
    if args.child:
        kind, direction, work, src, dst = args.child
        child(kind, direction, Path(work), src, dst)
        return
    if args.chart_from:
        results = [json.loads(Path(f).read_text()) for f in args.chart_from]
        for res in results:
            print_report(res)
        if args.chart:
            chart(results, Path(args.chart))
        return
    result = bench(args)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.chart:
        chart([result], Path(args.chart))


if __name__ == "__main__":
    main()
