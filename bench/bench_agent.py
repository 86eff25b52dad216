"""What the unlock agent buys (issue 15): commands with and without it, start-up, memory,
and unwraps through the agent against the same unwraps in process.

Run from the repository root (the project installed, e.g. editable, in the active venv)::

    python bench/bench_agent.py            # full run, a few minutes on 2 cores
    python bench/bench_agent.py --quick    # smoke run, well under a minute
    python bench/bench_agent.py --json /tmp/agent.json

Every figure is a wall time of a fresh process (or, for raw crypto and the unwrap
throughput, a timed loop), measured in one run on one machine:

- ``keyblob --help`` against a bare ``python -c "import
  cryptography.hazmat.primitives.ciphers.aead"`` (target: help <= 1.5 x bare);
- ``keyblob show``, ``keyblob decrypt`` of a 1 KiB file and ``keyblob new``, each without
  the agent (the passphrase in KEYBLOB_PASSPHRASE, an Argon2id unlock at the default
  parameters) and with an agent holding the container (no passphrase in the environment:
  a command that did not use the agent would fail).  Targets: without / with >= 2, and
  with <= 1.3 x (``--help`` + the operation's raw crypto);
- the operation's raw crypto: the ``cryptography`` calls the command makes, in process,
  on the container's own keys (bench_core.py's way): show = Ed25519 verify + the state's
  HMAC-SHA256; decrypt = that + HPKE open + HKDF-Expand + AES-256-GCM open of 1 KiB; new =
  HPKE seal + Ed25519 sign + the state's HMAC checked and made again;
- peak RSS of each command with and without the agent (``getrusage(RUSAGE_CHILDREN)`` of a
  wrapper that runs only that command; target with the agent: < 40 MiB);
- 1,000 unwraps through the agent, from 2 client processes at once (500 each, one
  connection each), against the same 1,000 ``SoftwareContainer.unwrap`` calls in one
  process (target: agent throughput >= 0.8 x in process).

The subprocess rounds are interleaved: each round runs every command once, in an order
rotated every round, and each ratio is taken per round; the report gives the median of
the per-round ratios and their range.  Round -1 warms the caches and is dropped.  The
agent is started by the bench in a temporary XDG_RUNTIME_DIR and stopped at the end.
Bytecode is cached (PYTHONPYCACHEPREFIX in the temp folder), as an installed package has
it.  Nothing is asserted; everything is reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keyblob import blobs
from keyblob.providers import suites
from keyblob.providers.software import Home, SoftwareContainer
from keyblob.storage import open_store

PASSPHRASE = "bench agent passphrase"
CONTAINER = "default"
BARE = "import cryptography.hazmat.primitives.ciphers.aead"
TARGET_SPEEDUP = 2.0
TARGET_OVER_FLOOR = 1.3
TARGET_HELP = 1.5
TARGET_RSS_MIB = 40.0
TARGET_THROUGHPUT = 0.8
UNWRAPS = 1000
CLIENTS = 2
OPS = ("show", "decrypt", "new")

# A client process of the throughput part: opens the agent's container as a command does
# (client.held), waits for "go" on stdin, makes its unwraps, prints its start and end.
CLIENT = """
import sys, time
from keyblob.agent import client
from keyblob.providers.software import Home
home, count, wrapped, context = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
wrapped, context = bytes.fromhex(wrapped), bytes.fromhex(context)
held = client.held(Home(home), sys.argv[5])
assert held is not None, "the agent does not hold the container"
held.unwrap(wrapped, context)  # warm: the first request pays the agent's first use
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic_ns()
for _ in range(count):
    held.unwrap(wrapped, context)
t1 = time.monotonic_ns()
held.close()
print(t0, t1, flush=True)
"""

# The floor of any agent in one Python process: a client of a bare server (4-byte length,
# the request's bytes, no parsing, no checks) that does the same unwrap, or nothing.
BARE_CLIENT = """
import socket, sys, time
path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
request = size.to_bytes(4, "big") + bytes(size)
def one():
    s.sendall(request)
    n = int.from_bytes(s.recv(4), "big")
    got = b""
    while len(got) < n:
        got += s.recv(n - len(got))
one()
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic_ns()
for _ in range(count):
    one()
print(t0, time.monotonic_ns(), flush=True)
"""


def _bare_server(path: str, c: Any, wrapped: bytes, context: bytes, work: bool) -> None:
    """A thread per connection, as the agent has; the request read and dropped."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)

    def serve(conn: socket.socket) -> None:
        while True:
            head = conn.recv(4)
            if not head:
                return
            left = int.from_bytes(head, "big")
            while left:
                left -= len(conn.recv(left))
            out = c.unwrap(wrapped, context) if work else bytes(32)
            conn.sendall(len(out).to_bytes(4, "big") + out)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# Peak RSS of one command: this wrapper's children only (RUSAGE_CHILDREN), in KiB.
RSS = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def now() -> int:
    return time.perf_counter_ns()


def med(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def keyblob_cmd() -> list[str]:
    script = Path(sys.executable).parent / "keyblob"
    if script.exists():
        return [str(script)]
    found = shutil.which("keyblob")
    return [found] if found else [sys.executable, "-m", "keyblob"]


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, int, str]:
    t0 = now()
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    return now() - t0, p.returncode, p.stderr.decode(errors="replace").strip()[-300:]


def must(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    _t, rc, err = run(argv, env, cwd)
    if rc != 0:
        raise SystemExit(f"setup failed: {' '.join(argv[-4:])}: {err}")


class Setup:
    """A home with one container at the default KDF parameters, a key and a 1 KiB
    ciphertext; two environments: no agent (passphrase given) and an agent (none given)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.kb = keyblob_cmd()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KEYBLOB_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        base["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        base["KEYBLOB_HOME"] = str(work / "home")
        self.home = work / "home"
        plain_run = work / "run-plain"
        agent_run = work / "run-agent"
        for folder in (plain_run, agent_run):
            folder.mkdir(mode=0o700)
        self.base = base
        self.plain = {**base, "XDG_RUNTIME_DIR": str(plain_run), "KEYBLOB_PASSPHRASE": PASSPHRASE}
        self.agent = {**base, "XDG_RUNTIME_DIR": str(agent_run)}
        self.data = work / "data.bin"
        self.data.write_bytes(secrets.token_bytes(1024))
        self.enc = work / "data.enc"

    def create(self) -> None:
        kb, w = self.kb, self.work
        must([*kb, "init"], self.plain, w)
        must([*kb, "new", "k0"], self.plain, w)
        must([*kb, "encrypt", "k0", "-i", str(self.data), "-o", str(self.enc)], self.plain, w)
        must([*kb, "agent", "start"], self.agent, w)
        must([*kb, "unlock"], {**self.agent, "KEYBLOB_PASSPHRASE": PASSPHRASE}, w)

    def stop(self) -> None:
        run([*self.kb, "agent", "stop"], self.agent, self.work)

    def command(self, op: str, env: dict[str, str], tag: str) -> list[str]:
        if op == "show":
            return [*self.kb, "show", "k0"]
        if op == "decrypt":
            return [*self.kb, "decrypt", str(self.enc), "-o", "-"]
        return [*self.kb, "new", f"n{tag}"]


# -- subprocess rounds ----------------------------------------------------------------------


def cli_rounds(s: Setup, rounds: int) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Each round: every command once, the order rotated; round -1 is dropped."""
    py = sys.executable
    samples: dict[str, list[int]] = {}
    failures: dict[str, str] = {}
    for r in range(-1, rounds):
        jobs: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass", [py, "-c", "pass"], s.base),
            ("bare cryptography import", [py, "-c", BARE], s.base),
            ("keyblob --help", [*s.kb, "--help"], s.base),
        ]
        for op in OPS:
            jobs.append((f"{op} without agent", s.command(op, s.plain, f"r{r + 1}p"), s.plain))
            jobs.append((f"{op} with agent", s.command(op, s.agent, f"r{r + 1}a"), s.agent))
        shift = (r * 3) % len(jobs)
        for label, argv, env in jobs[shift:] + jobs[:shift]:
            t, rc, err = run(argv, env, s.work)
            if rc != 0:
                failures[label] = f"exit {rc}: {err}"
            if r >= 0:
                samples.setdefault(label, []).append(t)
    return samples, failures


def peak_rss(s: Setup, runs: int) -> dict[str, float]:
    """Median peak RSS (MiB) of each command, with and without the agent."""
    out: dict[str, list[float]] = {}
    for r in range(runs):
        for op in OPS:
            for mode, env in (("with agent", s.agent), ("without agent", s.plain)):
                argv = s.command(op, env, f"rss{r}{'a' if env is s.agent else 'p'}")
                p = subprocess.run(
                    [sys.executable, "-c", RSS, *argv],
                    env=env,
                    cwd=s.work,
                    capture_output=True,
                    check=True,
                    text=True,
                )
                rc, kib = p.stdout.split()
                if rc != "0":
                    raise SystemExit(f"rss run failed: {op} {mode}")
                out.setdefault(f"{op} {mode}", []).append(int(kib) / 1024)
    help_p = subprocess.run(
        [sys.executable, "-c", RSS, *s.kb, "--help"],
        env=s.base,
        capture_output=True,
        text=True,
        check=True,
    )
    out["keyblob --help"] = [int(help_p.stdout.split()[1]) / 1024]
    return {k: med(v) for k, v in out.items()}


# -- in-process: raw crypto and unwraps -----------------------------------------------------


def open_container(s: Setup) -> tuple[SoftwareContainer, Any]:
    home = Home(s.home)
    return home.open_software(CONTAINER, PASSPHRASE.encode()), open_store(str(home.default_store))


def state_size(s: Setup) -> int:
    """The size of the container's state document on disk (what its HMAC covers)."""
    folder = s.home / "containers" / CONTAINER
    sizes = [p.stat().st_size for p in folder.rglob("*state*") if p.is_file()]
    return max(sizes) if sizes else 1024


def raw_ops(s: Setup, n: int) -> dict[str, list[int]]:
    """Each operation's cryptography calls, in process, on the container's own keys."""
    c, store = open_container(s)
    blob = blobs.decode(store.get("k0", 1))
    mine = blob.recipient(c.exchange_id)
    assert mine is not None
    verifier = c._signature.public_key()
    private = c._exchange
    exchange_public = private.public_key()
    signer = c._signature
    sig, msg = blob.signature, blob.signed_message()
    wrapped, context = mine.wrapped, blob.header.wrap_context(mine.key_id)
    hpke = suites._HPKE
    state = secrets.token_bytes(state_size(s))
    mac_key = secrets.token_bytes(32)
    session = hpke.decrypt(wrapped, private, info=context)  # type: ignore[arg-type]
    okm0 = HKDFExpand(hashes.SHA512(), 44, b"keyblob bench").derive(session)
    chunk = AESGCM(okm0[:32]).encrypt(okm0[32:], secrets.token_bytes(1024), b"")

    def mac() -> None:
        h = hmac.HMAC(mac_key, hashes.SHA256())
        h.update(state)
        h.finalize()

    def show() -> None:
        verifier.verify(sig, msg)  # type: ignore[call-arg]
        mac()

    def decrypt() -> None:
        verifier.verify(sig, msg)  # type: ignore[call-arg]
        mac()
        key = hpke.decrypt(wrapped, private, info=context)  # type: ignore[arg-type]
        okm = HKDFExpand(hashes.SHA512(), 44, b"keyblob bench").derive(key)
        AESGCM(okm[:32]).decrypt(okm[32:], chunk, b"")

    def new() -> None:
        key = secrets.token_bytes(32)
        secrets.token_bytes(16)
        hpke.encrypt(key, exchange_public, info=context)  # type: ignore[arg-type]
        signer.sign(msg)  # type: ignore[call-arg]
        mac()
        mac()

    fns: dict[str, Callable[[], None]] = {"show": show, "decrypt": decrypt, "new": new}
    out: dict[str, list[int]] = {op: [] for op in fns}
    for fn in fns.values():
        for _ in range(20):
            fn()
    for i in range(n):
        order = list(fns.items())
        order = order[i % 3 :] + order[: i % 3]
        for op, fn in order:
            t0 = now()
            fn()
            out[op].append(now() - t0)
    getattr(c, "close", lambda: None)()
    return out


def throughput_rounds(s: Setup, rounds: int) -> list[dict[str, float]]:
    """Per round: 1,000 unwraps in process, then through the agent from 2 clients (the
    order swapped every round)."""
    c, store = open_container(s)
    blob = blobs.decode(store.get("k0", 1))
    mine = blob.recipient(c.exchange_id)
    assert mine is not None
    wrapped, context = mine.wrapped, blob.header.wrap_context(mine.key_id)
    for _ in range(50):
        c.unwrap(wrapped, context)

    def in_process() -> float:
        t0 = now()
        for _ in range(UNWRAPS):
            c.unwrap(wrapped, context)
        return UNWRAPS / ((now() - t0) / 1e9)

    def through_agent() -> float:
        each = UNWRAPS // CLIENTS
        return clients(
            [
                sys.executable,
                "-c",
                CLIENT,
                str(s.home),
                str(each),
                wrapped.hex(),
                context.hex(),
                CONTAINER,
            ]
        )

    size = len(wrapped) + len(context) + len(str(s.home)) + len(CONTAINER) + 22

    def through_bare(work: bool) -> float:
        path = str(s.work / f"bare-{int(work)}.sock")
        server = multiprocessing.get_context("fork").Process(
            target=_bare_server, args=(path, c, wrapped, context, work), daemon=True
        )
        server.start()
        while not os.path.exists(path):
            time.sleep(0.01)
        try:
            return clients(
                [sys.executable, "-c", BARE_CLIENT, path, str(UNWRAPS // CLIENTS), str(size)]
            )
        finally:
            server.kill()
            server.join()
            os.unlink(path)

    def clients(argv: list[str]) -> float:
        procs = [
            subprocess.Popen(
                argv,
                env=s.agent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(CLIENTS)
        ]
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a throughput client failed to start")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        spans = []
        for p in procs:
            out, _ = p.communicate()
            t0, t1 = (int(x) for x in out.split())
            spans.append((t0, t1))
        start = min(t0 for t0, _ in spans)
        end = max(t1 for _, t1 in spans)
        return UNWRAPS / ((end - start) / 1e9)

    results = []
    for r in range(rounds):
        cases = [
            ("in_process", in_process),
            ("agent", through_agent),
            ("bare_unwrap", lambda: through_bare(True)),
            ("bare_nothing", lambda: through_bare(False)),
        ]
        got = {name: run() for name, run in (cases if r % 2 == 0 else cases[::-1])}
        got["ratio"] = got["agent"] / got["in_process"]
        got["bare_ratio"] = got["bare_unwrap"] / got["in_process"]
        results.append(got)
    getattr(c, "close", lambda: None)()
    return results


# -- report ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl import backend  # noqa: PLC0415

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "loadavg_at_start": os.getloadavg(),
    }


def spread(values: list[float]) -> str:
    return f"{med(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(res: dict[str, Any]) -> None:
    samples: dict[str, list[int]] = res["samples_ns"]
    raw: dict[str, float] = res["raw_ms"]
    m = res["machine"]
    print(
        f"# {m['date']}, {m['nproc']} cores, Python {m['python']}, cryptography "
        f"{m['cryptography']} ({m['openssl']}), load {m['loadavg_at_start'][0]:.1f} at start"
    )
    print(f"# {res['rounds']} interleaved rounds; medians (ms), per-round ratios: median (range)")
    print()
    print("| command | median ms | IQR ms |")
    print("|---|---|---|")
    for label, s in samples.items():
        q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0], s[0], s[0]]
        print(f"| {label} | {med(s) / 1e6:.1f} | {q[0] / 1e6:.1f}-{q[2] / 1e6:.1f} |")
    print()
    print("| raw crypto, in process | median ms |")
    print("|---|---|")
    for op in OPS:
        print(f"| {op} | {raw[op]:.3f} |")
    print()
    n = res["rounds"]
    help_s = samples["keyblob --help"]
    bare = samples["bare cryptography import"]
    rows = []
    ratios = [help_s[i] / bare[i] for i in range(n)]
    rows.append(("keyblob --help / bare import", ratios, TARGET_HELP, "<="))
    for op in OPS:
        without, with_ = samples[f"{op} without agent"], samples[f"{op} with agent"]
        rows.append(
            (f"{op}: without / with agent", [without[i] / with_[i] for i in range(n)], 2.0, ">=")
        )
        floor = [help_s[i] + raw[op] * 1e6 for i in range(n)]
        rows.append(
            (f"{op} with agent / (help + raw)", [with_[i] / floor[i] for i in range(n)], 1.3, "<=")
        )
    print("| ratio | median (range) | target | |")
    print("|---|---|---|---|")
    for label, values, target, sense in rows:
        ok = med(values) >= target if sense == ">=" else med(values) <= target
        print(f"| {label} | {spread(values)} | {sense} {target} | {verdict(ok)} |")
    rss = res["rss_mib"]
    for op in OPS:
        value = rss[f"{op} with agent"]
        print(
            f"| peak RSS, {op} with agent (without: {rss[f'{op} without agent']:.1f}) | "
            f"{value:.1f} MiB | < {TARGET_RSS_MIB} MiB | {verdict(value < TARGET_RSS_MIB)} |"
        )
    tp = res["throughput"]
    values = [t["ratio"] for t in tp]
    print(
        f"| {UNWRAPS} unwraps, {CLIENTS} agent clients / in process "
        f"({med([t['agent'] for t in tp]):,.0f} vs {med([t['in_process'] for t in tp]):,.0f}/s)"
        f" | {spread(values)} | >= {TARGET_THROUGHPUT} | "
        f"{verdict(med(values) >= TARGET_THROUGHPUT)} |"
    )
    print(
        f"| the floor of any one-process Python agent: a bare threaded server doing the same "
        f"unwraps / in process ({med([t['bare_unwrap'] for t in tp]):,.0f}/s; doing nothing: "
        f"{med([t['bare_nothing'] for t in tp]):,.0f}/s) | "
        f"{spread([t['bare_ratio'] for t in tp])} | (none set) | - |"
    )
    print()
    print(f"# keyblob --help peak RSS {rss['keyblob --help']:.1f} MiB")
    if res["failures"]:
        print("# FAILURES (figures for these commands are not valid):")
        for label, err in res["failures"].items():
            print(f"#   {label}: {err}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    args = parser.parse_args()
    rounds, raw_n, rss_runs, tp_rounds = (3, 200, 1, 2) if args.quick else (15, 2000, 3, 6)
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="kb-agent-bench-", dir=shm if shm.is_dir() else None))
    s = Setup(work)
    res: dict[str, Any] = {"machine": machine(), "rounds": rounds, "work": str(work)}
    try:
        s.create()
        samples, failures = cli_rounds(s, rounds)
        res["samples_ns"] = samples
        res["failures"] = failures
        raw = raw_ops(s, raw_n)
        res["raw_ms"] = {op: med([float(x) for x in v]) / 1e6 for op, v in raw.items()}
        res["rss_mib"] = peak_rss(s, rss_runs)
        res["throughput"] = throughput_rounds(s, tp_rounds)
    finally:
        s.stop()
    report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
