"""Opening a P-256 HPKE wrap with the private key in a PKCS#11 token, against the bare token
call it needs (issue 14).

Run from the repository root (the project installed in the active venv, python-pkcs11 too),
with a test token::

    dir=$(mktemp -d) && eval "$(tools/softhsm-test-token start "$dir")"
    python bench/bench_hpke_token.py            # about 15 s on 2 cores
    python bench/bench_hpke_token.py --quick    # smoke run
    tools/softhsm-test-token stop "$dir"

Per open of a 32-byte key sealed by ``cryptography``'s HPKE (DHKEM(P-256), HKDF-SHA256,
AES-256-GCM, a 120-byte info), each case timed on the same messages, round by round, the
cases in turn:

- ``floor``: the bare token call: ``CKM_ECDH1_DERIVE`` (``CKD_NULL``) into a session generic
  secret, read its value, destroy it (python-pkcs11, SoftHSM2);
- ``token``: ``hpke_schedule.open_base`` with that call as its DH;
- ``schedule, software DH``: ``hpke_schedule.open_base`` with ``cryptography``'s ECDH;
- ``cryptography``: ``Suite.decrypt`` with the private key in software (the p256 software
  baseline).

Each ratio is taken within a round (the machine is shared: rounds differ more than cases),
then its median and range over the rounds are shown.  Nothing
is asserted; everything is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import KDF, Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.util.ec import encode_named_curve_parameters

from keyblob.providers import hpke_schedule

SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
POINT = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint


def token_dh(private: Any) -> Callable[[bytes], bytes]:
    def dh(enc: bytes) -> bytes:
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

    return dh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    n, rounds = (20, 2) if args.quick else (300, 9)
    try:
        module = os.environ["KEYBLOB_TEST_PKCS11_MODULE"]
        label = os.environ["KEYBLOB_TEST_PKCS11_TOKEN"]
        pin = os.environ["KEYBLOB_TEST_PKCS11_PIN"]
    except KeyError as e:
        raise SystemExit(f"no test token ({e} unset): see tools/softhsm-test-token") from None
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(user_pin=pin, rw=True) as session:
        public, private = session.generate_keypair(
            KeyType.EC,
            capabilities=MechanismFlag.DERIVE,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            private_template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.DERIVE: True,
                Attribute.SIGN: False,
            },
        )
        point = bytes(public[Attribute.EC_POINT])[2:]
        recipient = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        soft = ec.generate_private_key(ec.SECP256R1())
        soft_point = soft.public_key().public_bytes(*POINT)
        key, info = os.urandom(32), os.urandom(120)
        to_token = [SUITE.encrypt(key, recipient, info=info) for _ in range(n)]
        to_soft = [SUITE.encrypt(key, soft.public_key(), info=info) for _ in range(n)]
        dh = token_dh(private)

        def soft_dh(enc: bytes) -> bytes:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)
            return soft.exchange(ec.ECDH(), peer)

        cases: dict[str, Callable[[int], object]] = {
            "floor": lambda i: dh(to_token[i][:65]),
            "token": lambda i: hpke_schedule.open_base(
                to_token[i][:65], point, dh, info=info, aad=b"", ciphertext=to_token[i][65:]
            ),
            "schedule, software DH": lambda i: hpke_schedule.open_base(
                to_soft[i][:65], soft_point, soft_dh, info=info, aad=b"", ciphertext=to_soft[i][65:]
            ),
            "cryptography": lambda i: SUITE.decrypt(to_soft[i], soft, info=info),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                start = time.perf_counter()
                for i in range(n):
                    case(i)
                times[name].append((time.perf_counter() - start) / n * 1e6)
        private.destroy()
        public.destroy()
    print(f"{n} opens x {rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    print("ratios: median (range) over rounds of the round's time over the floor's, or over")
    print("cryptography's, in the same round")
    for name, values in times.items():
        to_floor = [v / f for v, f in zip(values, times["floor"], strict=True)]
        to_soft = [v / c for v, c in zip(values, times["cryptography"], strict=True)]
        line = f"{name:24s} {statistics.median(values):8.1f} us"
        for ratios, against in ((to_floor, "floor"), (to_soft, "cryptography")):
            line += f"   {statistics.median(ratios):5.2f}x {against}"
            line += f" ({min(ratios):.2f}-{max(ratios):.2f})"
        print(line)


if __name__ == "__main__":
    main()
