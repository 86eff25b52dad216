"""SIMPLEBLOB import and export per second against the raw RSA operations they need (issue 4).

Run from the repository root (the project installed in the active venv)::

    python bench/bench_capi.py                 # full run, about a minute on 2 cores
    python bench/bench_capi.py --quick         # smoke run
    python bench/bench_capi.py --json /tmp/capi.json

Part (a), per blob, for RSA 2048 and 3072 (exchange key and signature key of that size),
library and raw calls interleaved in one run (order swapped every round, as bench_core.py):

- ``export``: ``mscapi.build_simpleblob(CapiKey, exchange_public)`` + ``mscapi.sign_hash``
  (SHA-256), i.e. what ``keyblob capi export-simpleblob`` does after loading the key: wrap and
  CryptSignHash signature.  Raw: ``exchange_public.encrypt(key, PKCS1v15())`` +
  ``signer.sign(blob, PKCS1v15(), SHA256())``.
- ``import``: ``mscapi.verify_signature`` + ``mscapi.unwrap_simpleblob(authenticated=True)``.
  Raw: ``signer_public.verify(sig, blob, PKCS1v15(), SHA256())`` +
  ``exchange_private.decrypt(ct, PKCS1v15())``.
- ``unwrap (oracle-free)``: ``unwrap_simpleblob`` without a signature (random stand-in key
  drawn before decrypting).  Raw: ``exchange_private.decrypt`` alone.
- ``import + store``: the library half of ``keyblob capi import-simpleblob``:
  ``verify_signature`` + ``container.capi_unwrap`` + ``blobs.store_key`` (native signed blob:
  OAEP wrap, PSS signature, durable store write, state update) against the raw calls
  verify + decrypt + OAEP encrypt + PSS sign.

Each library path is also taken apart (its pieces timed alone), and cProfiled.

Part (b): ``keyblob capi import-simpleblob`` (and ``export-simpleblob``) through the console
script, split into interpreter start, import of ``keyblob.cli``, the Argon2id unlock at the
default parameters, and the work itself (the rest), as bench_core.py does.

Nothing is asserted; everything is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    CHEAP_KDF,
    KDF_SNIPPET,
    PASSPHRASE,
    _keyblob_cmd,
    cached_bytecode_env,
    cli_env,
    fresh,
    interleaved,
    machine,
    med,
    ms,
    profile,
    quartiles,
    run_setup,
    sample_rounds,
    summary,
    time_loop,
    us,
)
from keyblob import blobs, mscapi
from keyblob.keys import Algorithm, Suite
from keyblob.mscapi import _primitives
from keyblob.mscapi.blobs import SimpleBlob
from keyblob.providers import suites
from keyblob.providers.software import Home, KdfParams
from keyblob.storage import open_store

PKCS1 = padding.PKCS1v15()
SHA256 = hashes.SHA256()


def ps(ns: float) -> str:
    """Operations per second from a median in ns."""
    return f"{1e9 / ns:,.0f}"


# -- part (a) ------------------------------------------------------------------------------


def bench_size(bits: int, n: int, warmup: int, root: Path, quick: bool) -> dict[str, Any]:
    # The receiving side: an rsa container (its exchange key opens the SIMPLEBLOBs).
    home = Home(root / "home")
    home.create("bench", PASSPHRASE, Suite.RSA, bits=bits, kdf=CHEAP_KDF)
    container = home.open("bench", PASSPHRASE)  # as the CLI opens it
    store = open_store(str(root / "blobs"))
    exchange_private: rsa.RSAPrivateKey = container._exchange  # type: ignore[assignment]
    exchange_public = exchange_private.public_key()
    # The CryptoAPI peer's signature key.
    signer = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    signer_public = signer.public_key()

    pool = 16
    keys = [secrets.token_bytes(32) for _ in range(pool)]
    capi_keys = [mscapi.CapiKey.new(mscapi.AlgId.AES_256, k) for k in keys]
    made = []
    for ck in capi_keys:
        blob = mscapi.build_simpleblob(ck, exchange_public)
        made.append((blob, mscapi.sign_hash(signer, blob)))
    # Raw equivalents: big-endian ciphertext and signature, as cryptography takes them.
    raw_items = [
        (blob, sig[::-1], SimpleBlob.from_bytes(blob).encrypted_key[::-1]) for blob, sig in made
    ]

    # export
    def lib_export(i: int) -> None:
        blob = mscapi.build_simpleblob(capi_keys[i % pool], exchange_public)
        mscapi.sign_hash(signer, blob)

    def raw_export(i: int) -> None:
        exchange_public.encrypt(keys[i % pool], PKCS1)
        signer.sign(made[i % pool][0], PKCS1, SHA256)  # a blob of the same length

    # import
    def lib_import(i: int) -> None:
        blob, sig = made[i % pool]
        mscapi.verify_signature(signer_public, sig, blob)
        mscapi.unwrap_simpleblob(blob, exchange_private, authenticated=True)

    def raw_import(i: int) -> None:
        blob, sig, ct = raw_items[i % pool]
        signer_public.verify(sig, blob, PKCS1, SHA256)
        exchange_private.decrypt(ct, PKCS1)

    def lib_unwrap(i: int) -> None:
        mscapi.unwrap_simpleblob(made[i % pool][0], exchange_private)

    def raw_unwrap(i: int) -> None:
        exchange_private.decrypt(raw_items[i % pool][2], PKCS1)

    # import + store: the library half of `keyblob capi import-simpleblob`
    base_state = container.state()

    def reset(_i: int) -> None:
        container.update_state(lambda _s: base_state)

    tag = f"c{bits}_"

    def lib_import_store(i: int) -> None:
        blob, sig = made[i % pool]
        mscapi.verify_signature(signer_public, sig, blob)
        key = container.capi_unwrap(blob, authenticated=True)
        name = fresh(tag, i)
        blobs.store_key(
            container, store, name, key.unsafe_raw_bytes(), algorithm=Algorithm.CAPI_AES_256
        )

    lib_import_store(-100)  # one stored blob, to take its sizes for the raw baseline
    stored = blobs.decode(store.get(f"{tag}w100", 1))
    reset(0)
    context = stored.header.wrap_context(container.exchange_id)
    message = stored.signed_message()
    oaep = suites._oaep(context)
    sig_private = container._signature

    def raw_import_store(i: int) -> None:
        blob, sig, ct = raw_items[i % pool]
        signer_public.verify(sig, blob, PKCS1, SHA256)
        key = exchange_private.decrypt(ct, PKCS1)
        secrets.token_bytes(16)
        exchange_public.encrypt(key, oaep)
        sig_private.sign(message, suites._PSS, suites._SHA256)  # type: ignore[call-arg]

    out: dict[str, Any] = {"bits": bits}
    gc.collect()
    out["export"] = summary(*interleaved(lib_export, raw_export, n, warmup))
    gc.collect()
    out["import"] = summary(*interleaved(lib_import, raw_import, n, warmup))
    gc.collect()
    out["unwrap (oracle-free, unsigned)"] = summary(*interleaved(lib_unwrap, raw_unwrap, n, warmup))
    gc.collect()
    out["import + store_key"] = summary(
        *interleaved(lib_import_store, raw_import_store, n // 2, warmup, after_lib=reset)
    )

    # Pieces, timed alone (medians, ns).
    blob0, sig0 = made[0]
    _b, sig0_be, ct0 = raw_items[0]
    digest = _primitives.digest(mscapi.AlgId.SHA_256, blob0)
    m = max(n, 50)
    out["pieces"] = {
        "SimpleBlob.from_bytes (parse)": med(time_loop(lambda _i: SimpleBlob.from_bytes(blob0), m)),
        "private.public_key().public_numbers()": med(
            time_loop(lambda _i: exchange_private.public_key().public_numbers(), m)
        ),
        "CapiKey.new": med(
            time_loop(lambda _i: mscapi.CapiKey.new(mscapi.AlgId.AES_256, keys[0]), m)
        ),
        "SHA-256 of the blob (_primitives.digest)": med(
            time_loop(lambda _i: _primitives.digest(mscapi.AlgId.SHA_256, blob0), m)
        ),
        "recover_data_from_signature (library verify)": med(
            time_loop(lambda _i: signer_public.recover_data_from_signature(sig0_be, PKCS1, None), m)
        ),
        "public.verify(PKCS1v15, SHA256) (raw verify)": med(
            time_loop(lambda _i: signer_public.verify(sig0_be, blob0, PKCS1, SHA256), m)
        ),
        "verify_signature (library, whole)": med(
            time_loop(lambda _i: mscapi.verify_signature(signer_public, sig0, blob0), m)
        ),
        "private.decrypt(PKCS1v15) (raw unwrap)": med(
            time_loop(lambda _i: exchange_private.decrypt(ct0, PKCS1), m)
        ),
        "unwrap_simpleblob(authenticated) (library, whole)": med(
            time_loop(
                lambda _i: mscapi.unwrap_simpleblob(blob0, exchange_private, authenticated=True),
                m,
            )
        ),
        "sign NoDigestInfo over DigestInfo||H (library sign)": med(
            time_loop(lambda _i: mscapi.sign_digest(signer, digest), m)
        ),
        "private.sign(PKCS1v15, SHA256) (raw sign)": med(
            time_loop(lambda _i: signer.sign(blob0, PKCS1, SHA256), m)
        ),
        "public.encrypt(PKCS1v15) (raw wrap)": med(
            time_loop(lambda _i: exchange_public.encrypt(keys[0], PKCS1), m)
        ),
        "build_simpleblob (library, whole)": med(
            time_loop(lambda _i: mscapi.build_simpleblob(capi_keys[0], exchange_public), m)
        ),
        "store_key alone (native wrap+sign+store+state)": med(
            time_loop(
                lambda i: (
                    blobs.store_key(
                        container,
                        store,
                        fresh(f"p{tag}", i),
                        keys[0],
                        algorithm=Algorithm.CAPI_AES_256,
                    ),
                    reset(0),
                ),
                max(n // 2, 10),
            )
        ),
    }
    n_prof = 20 if quick else 100
    out["profiles"] = {
        "import": profile(lib_import, n_prof),
        "export": profile(lib_export, n_prof),
    }
    return out


# -- part (b): the CLI ---------------------------------------------------------------------


def bench_cli(runs: int, work: Path, bits: int) -> dict[str, Any]:
    kb = _keyblob_cmd()
    env = cli_env()
    recv = {**env, "KEYBLOB_HOME": str(work / "recv")}
    send = {**env, "KEYBLOB_HOME": str(work / "send")}
    names = ("exch.pub", "sig.pub", "s.blob", "s.sig", "out.blob", "out.sig")
    f = {k: str(work / k) for k in names}
    export = ["capi", "export-simpleblob", "s", "--to", f["exch.pub"]]
    import_ = ["capi", "import-simpleblob", f["s.blob"], "--signature", f["s.sig"]]
    import_ += ["--signer", f["sig.pub"]]
    setup = [
        (recv, ["init", "--suite", "rsa", "--bits", str(bits)]),
        (recv, ["capi", "export-public", "-o", f["exch.pub"]]),
        (send, ["init", "--suite", "rsa", "--bits", str(bits)]),
        (send, ["new", "s", "--algorithm", "capi-aes-256"]),
        (send, ["capi", "export-public", "--slot", "signature", "-o", f["sig.pub"]]),
        (send, [*export, "-o", f["s.blob"], "--signature-out", f["s.sig"]]),
    ]
    run_setup(setup, work)
    recv_pyc = cached_bytecode_env(recv, work)  # also as installed

    def commands(r: int) -> list[tuple[str, list[str], dict[str, str]]]:
        return [
            ("import keyblob.cli, cached", [sys.executable, "-c", "import keyblob.cli"], recv_pyc),
            (
                "capi import-simpleblob, bytecode cached",
                [*kb, *import_, "--name", f"c{r + 1}"],
                recv_pyc,
            ),
            ("python -c pass", [sys.executable, "-c", "pass"], env),
            ("import keyblob.cli", [sys.executable, "-c", "import keyblob.cli"], env),
            ("import keyblob.cli + Argon2id", [sys.executable, "-c", KDF_SNIPPET], env),
            ("capi import-simpleblob", [*kb, *import_, "--name", f"i{r + 1}"], recv),
            (
                "capi export-simpleblob",
                [*kb, *export, "-o", f["out.blob"], "--signature-out", f["out.sig"]],
                send,
            ),
            ("show (baseline)", [*kb, "show", "s"], send),
        ]

    samples, failures = sample_rounds(commands, runs, work)
    start = med(samples["python -c pass"])
    imp = med(samples["import keyblob.cli"]) - start
    kdf = med(samples["import keyblob.cli + Argon2id"]) - med(samples["import keyblob.cli"])
    imp_cached = med(samples["import keyblob.cli, cached"]) - start
    rows = {}
    for label in (
        "capi import-simpleblob",
        "capi import-simpleblob, bytecode cached",
        "capi export-simpleblob",
        "show (baseline)",
    ):
        s = samples[label]
        rows[label] = {
            "total_ns": med(s),
            "iqr_ns": quartiles(s),
            "work_ns": med(s) - start - (imp_cached if "cached" in label else imp) - kdf,
            "samples_ns": s,
        }
    return {
        "runs": runs,
        "bits": bits,
        "interpreter_start_ns": start,
        "import_ns": imp,
        "import_cached_ns": imp_cached,
        "kdf_ns": kdf,
        "kdf_params": vars(KdfParams()),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "commands": rows,
        "failures": failures,
        "raw_samples_ns": {k: v for k, v in samples.items() if k not in rows},
    }


# -- report --------------------------------------------------------------------------------


def print_report(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"\n== keyblob capi bench ({res['mode']}) {m['date']}")
    print(
        f"   {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, cryptography "
        f"{m['cryptography']} ({m['openssl']}); load average {m['loadavg_at_start']}"
    )
    print("\n-- (a) SIMPLEBLOB per blob: library vs the raw RSA calls (medians)")
    print(
        f"{'RSA':<5} {'op':<31} {'n':>4} {'lib us':>9} {'lib /s':>7} {'raw us':>9} "
        f"{'raw /s':>7} {'ratio':>6} {'paired':>7}"
    )
    for bits, r in res["sizes"].items():
        for op, s in r.items():
            if not isinstance(s, dict) or "lib_median_ns" not in s:
                continue
            print(
                f"{bits:<5} {op:<31} {s['n']:>4} {us(s['lib_median_ns']):>9} "
                f"{ps(s['lib_median_ns']):>7} {us(s['raw_median_ns']):>9} "
                f"{ps(s['raw_median_ns']):>7} {s['ratio_at_median']:>6.3f} "
                f"{s['median_paired_ratio']:>7.3f}"
            )
    print("   ratio = median(library) / median(raw) (time; 1.0 = no overhead)")
    for bits, r in res["sizes"].items():
        print(f"\n-- RSA-{bits}: pieces timed alone (medians, us)")
        for name, v in r["pieces"].items():
            print(f"   {name:<52} {us(v):>9}")
        for op, prof in r["profiles"].items():
            print(f"   cProfile {op}: {prof['total_us_per_op']:.1f} us/op under the profiler")
            for row in prof["top"][:8]:
                print(
                    f"     {row['own_us_per_op']:8.1f} {row['cum_us_per_op']:8.1f} "
                    f"{row['calls_per_op']:5.1f}  {row['function']}"
                )
    cli = res.get("cli")
    if cli:
        print(
            f"\n-- (b) CLI, RSA-{cli['bits']} homes: medians of {cli['runs']} runs, ms; "
            f"interpreter start {ms(cli['interpreter_start_ns'])}, import keyblob.cli "
            f"{ms(cli['import_ns'])} (bytecode cached: {ms(cli['import_cached_ns'])}), "
            f"Argon2id {ms(cli['kdf_ns'])} (fresh process); "
            f"PYTHONDONTWRITEBYTECODE={cli['pythondontwritebytecode'] or 'unset'}"
        )
        for label, r in cli["commands"].items():
            q = r["iqr_ns"]
            print(
                f"   keyblob {label:<40} total {ms(r['total_ns']):>7} "
                f"({ms(q[0])}-{ms(q[1])})  work {ms(r['work_ns']):>6}"
            )
        for label, err in cli["failures"].items():
            print(f"   FAILED {label}: {err}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few iterations: a smoke run")
    ap.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    ap.add_argument("--no-cli", action="store_true", help="skip part (b)")
    ap.add_argument("--tmpfs", default="/dev/shm", help="folder for the library store")
    args = ap.parse_args()
    n, cli_runs = (20, 3) if args.quick else (200, 15)
    started = time.monotonic()
    res: dict[str, Any] = {"mode": "quick" if args.quick else "full", "machine": machine()}
    tmp_parent = args.tmpfs if Path(args.tmpfs).is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="keyblob-capi-", dir=tmp_parent))
    disk = Path(tempfile.mkdtemp(prefix="keyblob-capi-cli-"))
    res["sizes"] = {}
    try:
        for bits in (2048, 3072):
            print(f"[{time.monotonic() - started:6.1f}s] RSA-{bits}", file=sys.stderr)
            res["sizes"][str(bits)] = bench_size(bits, n, 5, work / str(bits), args.quick)
        if not args.no_cli:
            print(f"[{time.monotonic() - started:6.1f}s] CLI", file=sys.stderr)
            res["cli"] = bench_cli(cli_runs, disk, 3072)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    res["elapsed_s"] = time.monotonic() - started
    print_report(res)
    print(f"\n(total {res['elapsed_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
