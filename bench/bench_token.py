"""Per-key export and import with the keys in a PKCS#11 token, against the PKCS#11 calls
themselves, the software provider, and x25519 (issue 14).

Run from the repository root (the project installed in the active venv, python-pkcs11 too),
with a test token::

    dir=$(mktemp -d) && eval "$(tools/softhsm-test-token start "$dir")"
    python bench/bench_token.py                # full run, about 25 s on 2 cores
    python bench/bench_token.py --quick        # smoke run
    python bench/bench_token.py --profile      # also cProfile the token's two paths
    tools/softhsm-test-token stop "$dir"

Three containers in one home on a tmpfs (/dev/shm), each with its own directory store
there (as bench_core.py does, to keep the disk out): ``token`` (``Home.create_token``, the
p256 suite, keys and the state's HMAC key in the token), ``software p256`` and ``software
x25519``.  Per key:

- ``export``: ``blobs.generate`` of a fresh name (new key, wrap, sign, store, state update);
- ``import``: ``blobs.load`` of one of 16 stored names (read, verify, state check, unwrap).

Against them, in the same rounds:

- ``PKCS#11 calls``: the bare python-pkcs11 calls the token's path makes, as many as it
  makes them (counted before timing by wrapping the container's key objects): export, per
  key ``CKM_ECDSA`` over a 32-byte digest and ``CKM_SHA256_HMAC`` over a document of the
  size the state update MACs; import, ``CKM_ECDH1_DERIVE`` (``CKD_NULL``) into a session
  secret, read its ``CKA_VALUE``, destroy it (and HMACs, if the import makes any).  The same
  key objects, on the container's own session (PKCS#11 has one login per process).
- ``software crypto``: the ``cryptography`` work the token path does beyond the token:
  export, a random key and key id, the DHKEM(P-256) seal to the container's exchange key,
  SHA-256 of the signed message; import, ECDSA verify of the signature and the RFC 9180 key
  schedule and AES-GCM open of ``hpke_schedule.open_base`` (its DH answered from a table);
- ``sw p256 + PKCS#11``: the software p256 container's operation followed by the bare
  PKCS#11 calls, as one case: the token path should cost no more (the calls timed where
  they run, after a whole operation's other work, not in a tight loop);
- ``sw p256 key ops``: the software p256 container's own key operations (``sign`` for
  export, ``unwrap`` for import): subtracted from its operation, what is left is the
  library path the token shares with it.

The floor is the ``PKCS#11 calls`` (the issue's "bare python-pkcs11 derive and sign loop");
the token is also set against the floor plus the software crypto, and plus the bare
durable I/O the operation requires (``bench_core.io_floor``, measured here on the same
tmpfs: issue 11's measure for the software provider).  Target: token <= 1.3 x floor.

Then each kind of PKCS#11 call alone, and the time to open one HPKE wrap (a 32-byte key
sealed by ``cryptography``, a 120-byte info) with the token's DH, with the bare derive, with
``hpke_schedule`` and a software DH, and with ``cryptography``'s own HPKE (this part was
``bench_hpke_token.py``).

Rounds: every case runs a block of calls, the cases in turn (order rotated every round);
each call is timed, a block gives its median; each ratio is taken within a round (the
machine is shared: rounds differ more than cases), then its median and range over the
rounds are shown.  Nothing is asserted; everything is reported.  Library internals (the
container's key objects, ``blobs.decode``) are used read-only to build the baselines.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import importlib.metadata
import json
import os
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import KDF, Attribute, KeyType, Mechanism

from bench_core import CHEAP_KDF, PASSPHRASE, POOL, io_floor, io_needs, machine, now
from keyblob import blobs
from keyblob.keys import Suite
from keyblob.providers import hpke_schedule, suites
from keyblob.providers.software import Home
from keyblob.storage import open_store

TARGET = 1.3
HPKE_SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
POINT = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
CONTAINERS = ("token", "software p256", "software x25519")


# -- the containers --------------------------------------------------------------------------


class Setup:
    """The three containers, their stores and pools, on ``root``."""

    def __init__(self, root: Path, module: str, token: str, pin: bytes) -> None:
        home = Home(root / "home")
        self.token = home.create_token("tok", pin, module=module, token=token)
        home.create("p256", PASSPHRASE, Suite.P256, kdf=CHEAP_KDF)
        home.create("x25519", PASSPHRASE, Suite.X25519, kdf=CHEAP_KDF)
        self.containers: dict[str, Any] = {
            "token": self.token,
            "software p256": home.open("p256", PASSPHRASE),
            "software x25519": home.open("x25519", PASSPHRASE),
        }
        self.stores = {
            label: open_store(str(root / f"blobs-{i}")) for i, label in enumerate(CONTAINERS)
        }
        self.pool = [f"pool{i}" for i in range(POOL)]
        for label, c in self.containers.items():
            for name in self.pool:
                blobs.generate(c, self.stores[label], name)
        self.parsed = [blobs.decode(self.stores["token"].get(n, 1)) for n in self.pool]

    def close(self) -> None:
        """Destroy the bench container's objects in the token (its two key pairs and state
        key, found by the labels and ids its record holds), then log out."""
        record, session = self.token.record, self.token._session.session
        try:
            for ref in (record.exchange, record.signature, record.state):
                for obj in session.get_objects({Attribute.LABEL: ref.label, Attribute.ID: ref.id}):
                    obj.destroy()
        finally:
            self.token.close()  # the software containers hold no session


class _Counting:
    """A python-pkcs11 object whose method calls and attribute reads are counted (the
    objects a derive returns are wrapped too); ``sizes`` records the data each call got."""

    def __init__(self, target: Any, tag: str, counts: Counter[str], sizes: Counter[str]):
        self._target, self._tag, self._counts, self._sizes = target, tag, counts, sizes

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            mechanism = kwargs.get("mechanism")
            what = f"{self._tag}.{attr}({getattr(mechanism, 'name', '')})"
            self._counts[what] += 1
            if args and isinstance(args[0], bytes):
                self._sizes[what] += len(args[0])
            out = value(*args, **kwargs)
            if attr == "derive_key":
                return _Counting(out, "derived", self._counts, self._sizes)
            return out

        return call

    def __getitem__(self, key: Any) -> Any:
        self._counts[f"{self._tag}[{getattr(key, 'name', key)}]"] += 1
        return self._target[key]


def count_calls(s: Setup, n: int) -> dict[str, dict[str, Any]]:
    """The python-pkcs11 calls one token export and one token import make (averaged over
    ``n`` each), and the mean data size each call is given."""
    c = s.token
    originals = (c._signature_private, c._exchange_private, c._state_key, c._session.session)
    out = {}
    try:
        for op in ("export", "import"):
            counts: Counter[str] = Counter()
            sizes: Counter[str] = Counter()
            c._signature_private = _Counting(originals[0], "signature key", counts, sizes)
            c._exchange_private = _Counting(originals[1], "exchange key", counts, sizes)
            c._state_key = _Counting(originals[2], "state key", counts, sizes)
            c._session.session = _Counting(originals[3], "session", counts, sizes)
            for i in range(n):
                if op == "export":
                    blobs.generate(c, s.stores["token"], f"count{i}")
                else:
                    blobs.load(c, s.stores["token"], s.pool[i % POOL])
            out[op] = {
                "calls": {k: v / n for k, v in counts.items()},
                "bytes": {k: sizes[k] / counts[k] for k in sizes},
            }
    finally:
        c._signature_private, c._exchange_private, c._state_key, c._session.session = originals
    return out


def _per_op(counted: dict[str, Any], prefix: str) -> tuple[int, int]:
    """(calls, mean data size) of the counted calls whose name starts with ``prefix``."""
    calls = sum(v for k, v in counted["calls"].items() if k.startswith(prefix))
    size = next((int(v) for k, v in counted["bytes"].items() if k.startswith(prefix)), 0)
    if calls != int(calls):
        raise SystemExit(f"{prefix}: {calls} calls per operation, not a whole number")
    return int(calls), size


# -- the cases -------------------------------------------------------------------------------


def _derive(private: Any, enc: bytes) -> bytes:
    """The bare token DH: derive a session secret, read it, destroy it."""
    shared = private.derive_key(
        KeyType.GENERIC_SECRET,
        256,
        mechanism=Mechanism.ECDH1_DERIVE,
        mechanism_param=(KDF.NULL, None, enc),
        template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    )
    try:
        return bytes(shared[Attribute.VALUE])
    finally:
        shared.destroy()


def cases(s: Setup, counted: dict[str, Any]) -> dict[str, dict[str, Callable[[int], object]]]:
    """For export and import: the three containers, the bare PKCS#11 calls, the software
    crypto beyond the token."""
    c = s.token
    sign_key, exchange_key, state_key = c._signature_private, c._exchange_private, c._state_key
    n_sign, _ = _per_op(counted["export"], "signature key.sign")
    n_mac_export, mac_size_export = _per_op(counted["export"], "state key.sign")
    n_derive, _ = _per_op(counted["import"], "exchange key.derive_key")
    n_mac_import, mac_size_import = _per_op(counted["import"], "state key.sign")
    digest = hashlib.sha256(b"a signed message").digest()
    doc_export, doc_import = os.urandom(mac_size_export), os.urandom(mac_size_import)

    def pkcs11_export(_i: int) -> None:
        for _ in range(n_sign):
            sign_key.sign(digest, mechanism=Mechanism.ECDSA)
        for _ in range(n_mac_export):
            state_key.sign(doc_export, mechanism=Mechanism.SHA256_HMAC)

    items = []
    for blob in s.parsed:
        mine = blob.recipient(c.exchange_id)
        items.append(
            (
                blob.signature,
                blob.signed_message(),
                mine.wrapped[: suites.P256_ENC_SIZE],
                mine.wrapped[suites.P256_ENC_SIZE :],
                blob.header.wrap_context(mine.key_id),
            )
        )
    shared = {enc: _derive(exchange_key, enc) for _sig, _msg, enc, _ct, _ctx in items}

    def pkcs11_import(i: int) -> None:
        enc = items[i % POOL][2]
        for _ in range(n_derive):
            _derive(exchange_key, enc)
        for _ in range(n_mac_import):
            state_key.sign(doc_import, mechanism=Mechanism.SHA256_HMAC)

    exchange_public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), c.exchange_public
    )
    verifier = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), c.signature_public)
    context, message = items[0][4], items[0][1]  # the sizes the library's path has

    def software_export(_i: int) -> None:
        key = secrets.token_bytes(32)
        secrets.token_bytes(16)
        suites._HPKE_P256.encrypt(key, exchange_public, info=context)
        hashlib.sha256(message).digest()

    der = [
        (encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:])), *rest)
        for sig, *rest in items
    ]

    def software_import(i: int) -> None:
        sig, msg, enc, ct, ctx = der[i % POOL]
        verifier.verify(sig, msg, suites._ECDSA)
        hpke_schedule.open_base(
            enc, c.exchange_public, shared.__getitem__, info=ctx, aad=b"", ciphertext=ct
        )

    tags = iter(range(10**9))

    def exporting(label: str) -> Callable[[int], object]:
        container, store = s.containers[label], s.stores[label]
        tag, seq = f"e{next(tags)}_", iter(range(10**9))
        return lambda _i: blobs.generate(container, store, f"{tag}{next(seq)}")

    def importing(label: str) -> Callable[[int], object]:
        container, store = s.containers[label], s.stores[label]
        return lambda i: blobs.load(container, store, s.pool[i % POOL])

    soft = s.containers["software p256"]
    soft_export, soft_import = exporting("software p256"), importing("software p256")
    soft_items = []
    for name in s.pool:
        blob = blobs.decode(s.stores["software p256"].get(name, 1))
        mine = blob.recipient(soft.exchange_id)
        soft_items.append((mine.wrapped, blob.header.wrap_context(mine.key_id)))

    return {
        "export": {
            **{label: exporting(label) for label in CONTAINERS},
            "PKCS#11 calls": pkcs11_export,
            "software crypto": software_export,
            "sw p256 + PKCS#11": lambda i: (soft_export(i), pkcs11_export(i)),
            "sw p256 key ops": lambda _i: soft.sign(message),
        },
        "import": {
            **{label: importing(label) for label in CONTAINERS},
            "PKCS#11 calls": pkcs11_import,
            "software crypto": software_import,
            "sw p256 + PKCS#11": lambda i: (soft_import(i), pkcs11_import(i)),
            "sw p256 key ops": lambda i: soft.unwrap(*soft_items[i % POOL]),
        },
    }


def call_cases(s: Setup, counted: dict[str, Any]) -> dict[str, Callable[[int], object]]:
    """Each kind of PKCS#11 call alone, bare, on the container's key objects."""
    c = s.token
    _n, mac_size = _per_op(counted["export"], "state key.sign")
    digest, doc = hashlib.sha256(b"a signed message").digest(), os.urandom(mac_size)
    encs = [blob.recipient(c.exchange_id).wrapped[: suites.P256_ENC_SIZE] for blob in s.parsed]
    return {
        "CKM_ECDSA sign": lambda _i: c._signature_private.sign(digest, mechanism=Mechanism.ECDSA),
        f"CKM_SHA256_HMAC, {mac_size} B": lambda _i: c._state_key.sign(
            doc, mechanism=Mechanism.SHA256_HMAC
        ),
        "ECDH1_DERIVE+VALUE+destroy": lambda i: _derive(c._exchange_private, encs[i % POOL]),
    }


def hpke_cases(s: Setup, n: int) -> dict[str, Callable[[int], object]]:
    """Opening one HPKE wrap: token DH, bare derive, software DH, cryptography's HPKE."""
    c = s.token
    exchange_key = c._exchange_private
    recipient = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), c.exchange_public)
    soft = ec.generate_private_key(ec.SECP256R1())
    soft_point = soft.public_key().public_bytes(*POINT)
    key, info = os.urandom(32), os.urandom(120)
    to_token = [HPKE_SUITE.encrypt(key, recipient, info=info) for _ in range(n)]
    to_soft = [HPKE_SUITE.encrypt(key, soft.public_key(), info=info) for _ in range(n)]

    def token_dh(enc: bytes) -> bytes:
        return _derive(exchange_key, enc)

    def soft_dh(enc: bytes) -> bytes:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)
        return soft.exchange(ec.ECDH(), peer)

    return {
        "bare derive (floor)": lambda i: token_dh(to_token[i % n][:65]),
        "open_base, token DH": lambda i: hpke_schedule.open_base(
            to_token[i % n][:65],
            c.exchange_public,
            token_dh,
            info=info,
            aad=b"",
            ciphertext=to_token[i % n][65:],
        ),
        "open_base, software DH": lambda i: hpke_schedule.open_base(
            to_soft[i % n][:65],
            soft_point,
            soft_dh,
            info=info,
            aad=b"",
            ciphertext=to_soft[i % n][65:],
        ),
        "cryptography HPKE": lambda i: HPKE_SUITE.decrypt(to_soft[i % n], soft, info=info),
    }


# -- timing ----------------------------------------------------------------------------------


def rounds(cases: dict[str, Callable[[int], object]], n: int, count: int) -> dict[str, list[float]]:
    """``count`` rounds; in each, every case runs ``n`` timed calls (order rotated every
    round); the round's figure for a case is the median of its calls (ns)."""
    names = list(cases)
    for name in names:  # warm-up
        for i in range(3):
            cases[name](i)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(count):
        gc.collect()
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, samples = cases[name], []
            for i in range(n):
                t0 = now()
                fn(i)
                samples.append(now() - t0)
            out[name].append(float(statistics.median(samples)))
    return out


def ratio(a: list[float], b: list[float], plus: float = 0.0) -> dict[str, float]:
    """a / (b + plus), round by round: median, min, max."""
    values = [x / (y + plus) for x, y in zip(a, b, strict=True)]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def add(*series: list[float]) -> list[float]:
    return [sum(v) for v in zip(*series, strict=True)]


def fmt(r: dict[str, float]) -> str:
    return f"{r['median']:5.2f} ({r['min']:.2f}-{r['max']:.2f})"


def us(ns: float) -> str:
    return f"{ns / 1000:,.1f}"


# -- profile ---------------------------------------------------------------------------------


def _category(key: tuple[str, int, str]) -> str:
    filename, _line, func = key
    if filename.endswith("providers/pkcs11.py"):
        # python-pkcs11's Cython methods (derive_key, the attribute reads) are not seen by
        # cProfile: their time, the token's included, is the own time of their caller here.
        return "keyblob pkcs11.py + the Cython calls it makes"
    if "/keyblob/" in filename:
        return "keyblob Python code"
    if "pkcs11" in filename or "pkcs11" in func:
        return "python-pkcs11 (and the token under it)"
    if "cryptography" in func or "cryptography" in filename or "_hashlib" in func:
        return "cryptography (Rust/OpenSSL calls)"
    if "sqlite3" in func or "sqlite3" in filename:
        return "sqlite3"
    if "posix." in func or "_io." in func or "built-in method open" in func or "fcntl" in func:
        return "file system syscalls"
    return "other Python (stdlib, builtins)"


def profile(fn: Callable[[int], object], n: int, top: int = 14) -> dict[str, Any]:
    prof = cProfile.Profile()
    for i in range(n):
        prof.enable()
        fn(i)
        prof.disable()
    raw: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    cats: Counter[str] = Counter()
    rows = []
    for key, (_cc, ncalls, tt, ct, _callers) in raw.items():
        cats[_category(key)] += tt
        filename, line, func = key
        where = func if filename == "~" else f"{Path(filename).name}:{line}({func})"
        rows.append((tt, ct, ncalls, where))
    rows.sort(reverse=True)
    return {
        "total_us_per_op": sum(cats.values()) / n * 1e6,
        "categories_us_per_op": {k: v / n * 1e6 for k, v in cats.most_common()},
        "top": [(tt / n * 1e6, ct / n * 1e6, nc / n, w) for tt, ct, nc, w in rows[:top]],
    }


# -- main ------------------------------------------------------------------------------------


def report(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"\n== keyblob token bench ({res['mode']}) {m['date']}")
    print(
        f"   {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, cryptography "
        f"{m['cryptography']} ({m['openssl']}), python-pkcs11 {res['python_pkcs11']}, "
        f"module {res['module']}"
    )
    print(
        f"   home and stores on {res['tmpfs']}; load average "
        f"{' '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} at start, "
        f"{' '.join(f'{x:.2f}' for x in res['loadavg_at_end'])} at end; "
        f"{res['rounds']} rounds of {res['n']} calls per case"
    )
    print("\n-- PKCS#11 calls per operation (counted on the token container, untimed)")
    for op, counted in res["counted"].items():
        calls = ", ".join(
            f"{v:g} x {k}"
            + (f" [{res['counted'][op]['bytes'][k]:.0f} B]" if k in counted["bytes"] else "")
            for k, v in counted["calls"].items()
        )
        print(f"   {op}: {calls}")
    for op in ("export", "import"):
        t = res["times"][op]
        io = res["io_needs"][op]
        print(f"\n-- {op} per key: medians over rounds of each round's median call, us")
        for name, v in t.items():
            print(f"   {name:<18} {us(statistics.median(v)):>9}")
        print(f"   {'bare I/O (floor)':<18} {us(io):>9}   (bench_core.io_floor, measured once)")
        r = res["ratios"][op]
        print("   ratios, median (range) over rounds:")
        print(f"   token / PKCS#11 calls                          {fmt(r['token/floor'])}")
        print(f"   token / (PKCS#11 calls + software crypto)      {fmt(r['token/floor+sw'])}")
        print(f"   token / (PKCS#11 + software crypto + bare I/O) {fmt(r['token/floor+sw+io'])}")
        print(f"   token / software p256                          {fmt(r['token/software p256'])}")
        print(f"   software p256 / software x25519                {fmt(r['p256/x25519'])}")
        print(f"   token / (software p256 + PKCS#11 calls, one case) {fmt(r['token/sw+floor'])}")
        d = res["decomposition"][op]
        print(
            f"   token {us(d['token'])} us = PKCS#11 calls {us(d['calls'])} + the library path "
            f"without key operations {us(d['path'])} (software p256 {us(d['soft'])} - its key "
            f"operations {us(d['soft_keys'])}) + the rest {us(d['rest'])}"
        )
        verdict = "met" if r["token/floor"]["median"] <= TARGET else "NOT met"
        print(f"   target token <= {TARGET} x PKCS#11 calls: {verdict}")
    print("\n-- each PKCS#11 call alone, bare, us")
    for name, v in res["calls"].items():
        print(f"   {name:<28} {us(statistics.median(v)):>9}   ({us(min(v))}-{us(max(v))})")
    h = res["hpke"]
    print("\n-- opening one HPKE wrap (32-byte key, 120-byte info), us; ratios to the bare derive")
    for name, v in h.items():
        print(
            f"   {name:<24} {us(statistics.median(v)):>9}   "
            f"{fmt(ratio(v, h['bare derive (floor)']))}"
        )
    for label, prof in res.get("profiles", {}).items():
        print(f"\n-- cProfile {label}: {prof['total_us_per_op']:.1f} us/op under the profiler")
        for cat, v in prof["categories_us_per_op"].items():
            print(f"   {cat:<40} {v:8.1f} us/op")
        print(f"   {'own us/op':>9} {'cum us/op':>9} {'calls':>5}  function")
        for own, cum, calls, where in prof["top"]:
            print(f"   {own:9.1f} {cum:9.1f} {calls:5.1f}  {where}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few iterations: a smoke run")
    ap.add_argument("--profile", action="store_true", help="cProfile the token's two paths")
    ap.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    ap.add_argument("--tmpfs", default="/dev/shm", help="folder for the home and stores")
    args = ap.parse_args()
    try:
        module = os.environ["KEYBLOB_TEST_PKCS11_MODULE"]
        label = os.environ["KEYBLOB_TEST_PKCS11_TOKEN"]
        pin = os.environ["KEYBLOB_TEST_PKCS11_PIN"].encode()
    except KeyError as e:
        raise SystemExit(f"no test token ({e} unset): see tools/softhsm-test-token") from None
    n, count = (20, 3) if args.quick else (150, 11)
    tmp_parent = args.tmpfs if Path(args.tmpfs).is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="keyblob-bench-token-", dir=tmp_parent))
    started = time.monotonic()
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "python_pkcs11": importlib.metadata.version("python-pkcs11"),
        "module": module,
        "tmpfs": tmp_parent or tempfile.gettempdir(),
        "n": n,
        "rounds": count,
    }
    s = None
    try:
        s = Setup(work, module, label, pin)
        res["counted"] = count_calls(s, 10)
        res["io_needs"] = dict(
            zip(("export", "import"), io_needs(io_floor(work, 3 * n)).values(), strict=True)
        )
        per_op = cases(s, res["counted"])
        res["times"], res["ratios"], res["decomposition"] = {}, {}, {}
        for op, ops in per_op.items():
            print(f"[{time.monotonic() - started:6.1f}s] {op}", file=sys.stderr)
            t = rounds(ops, n, count)
            res["times"][op] = t
            floor, io = t["PKCS#11 calls"], res["io_needs"][op]
            with_sw = add(floor, t["software crypto"])
            res["ratios"][op] = {
                "token/floor": ratio(t["token"], floor),
                "token/floor+sw": ratio(t["token"], with_sw),
                "token/floor+sw+io": ratio(t["token"], with_sw, io),
                "token/software p256": ratio(t["token"], t["software p256"]),
                "p256/x25519": ratio(t["software p256"], t["software x25519"]),
                "token/sw+floor": ratio(t["token"], t["sw p256 + PKCS#11"]),
            }
            mid = {k: statistics.median(v) for k, v in t.items()}
            path = mid["software p256"] - mid["sw p256 key ops"]
            res["decomposition"][op] = {
                "token": mid["token"],
                "calls": mid["PKCS#11 calls"],
                "soft": mid["software p256"],
                "soft_keys": mid["sw p256 key ops"],
                "path": path,
                "rest": mid["token"] - mid["PKCS#11 calls"] - path,
            }
        print(f"[{time.monotonic() - started:6.1f}s] calls, hpke", file=sys.stderr)
        res["calls"] = rounds(call_cases(s, res["counted"]), n, count)
        res["hpke"] = rounds(hpke_cases(s, n), n, count)
        if args.profile:
            export, load = per_op["export"]["token"], per_op["import"]["token"]
            res["profiles"] = {"token export": profile(export, 4 * n)}
            res["profiles"]["token import"] = profile(load, 4 * n)
    finally:
        if s is not None:
            s.close()
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg_at_end"] = os.getloadavg()
    report(res)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
