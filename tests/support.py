"""Constants and helpers shared by the tests (importable as ``support``)."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from keyblob import KdfParams, PublicKeyFile
from keyblob.trust import TrustedSigner

#: Argon2id at its accepted floor: the tests exercise the logic, not the work factor.
FAST_KDF = KdfParams(memory_kib=8192, iterations=1, lanes=1)
PASSPHRASE = b"correct horse battery staple"


def public_file(container: Any) -> PublicKeyFile:
    """A container's public key file, as ``keyblob export`` writes it."""
    return PublicKeyFile(
        container.suite, container.name, container.exchange_public, container.signature_public
    )


def trust(container: Any, other: Any) -> None:
    """Make ``container`` trust ``other``'s public keys (``keyblob trust add``)."""
    pub = public_file(other)
    signer = TrustedSigner(pub.signature_id, pub.suite, pub.signature, pub.exchange, pub.label, 0)
    container.update_state(lambda s: s.with_signer(signer))


def require_interop() -> bool:
    """CI sets KEYBLOB_REQUIRE_INTEROP=1: a missing peer is then a failure, not a skip."""
    return os.environ.get("KEYBLOB_REQUIRE_INTEROP") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test because ``reason`` (a peer or data is missing); in CI, fail instead."""
    import pytest

    if require_interop():
        pytest.fail(f"{reason} (KEYBLOB_REQUIRE_INTEROP=1)", pytrace=False)
    pytest.skip(reason)


#: The read-only third-party vectors beside the repository (``../shared/vectors``).
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def shared_vectors(subfolder: str) -> Path:
    """``../shared/vectors/<subfolder>``; skips the test where it is missing, but fails in CI."""
    path = SHARED_VECTORS / subfolder
    if not path.is_dir():
        skip_or_fail(f"the shared vectors are not beside the repository ({path})")
    return path


def openssl(*args: str) -> bytes:
    """Run the openssl command line (skips where it is not installed, fails in CI)."""
    if shutil.which("openssl") is None:
        skip_or_fail("openssl is not installed")
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


def load_script(name: str, path: Path) -> ModuleType:
    """Import a file by path (tools/ and tests/ are not packages), once per session."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run_in_terminal(argv: list[str], answers: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run keyblob on a pseudo-terminal, typing ``answers`` at its prompts."""
    import fcntl
    import pty
    import select
    import struct
    import sys
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # child
        # A real terminal has a size; a fresh pty is 0x0, which progress bars treat as hidden.
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "keyblob", *argv], env)
    output = b""
    pending = list(answers)
    while True:
        ready, _, _ = select.select([fd], [], [], 20)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if pending and output.rstrip().endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\n")
            output += b"<typed>"
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def dotnet_xml(key: RSAPrivateKey | RSAPublicKey, *, pad: bool = True) -> bytes:
    """What .NET's RSA.ToXmlString writes, built without the library: base64 big-endian
    fields in this order, P..InverseQ padded to half the modulus length (rounded up) and D
    to the modulus length."""
    pub = (
        key.public_numbers()
        if isinstance(key, RSAPublicKey)
        else key.private_numbers().public_numbers
    )
    k = (pub.n.bit_length() + 7) // 8
    half = (k + 1) // 2

    def b64(value: int, width: int) -> str:
        size = width if pad else max(1, (value.bit_length() + 7) // 8)
        return base64.b64encode(value.to_bytes(size, "big")).decode()

    parts = [("Modulus", b64(pub.n, k)), ("Exponent", base64.b64encode(b"\x01\x00\x01").decode())]
    if isinstance(key, RSAPrivateKey):
        pn = key.private_numbers()
        parts += [
            ("P", b64(pn.p, half)),
            ("Q", b64(pn.q, half)),
            ("DP", b64(pn.dmp1, half)),
            ("DQ", b64(pn.dmq1, half)),
            ("InverseQ", b64(pn.iqmp, half)),
            ("D", b64(pn.d, k)),
        ]
    return (
        "<RSAKeyValue>" + "".join(f"<{n}>{v}</{n}>" for n, v in parts) + "</RSAKeyValue>"
    ).encode()


def postgres_database(request: Any) -> str:
    """The URL of a fresh, empty database on the PostgreSQL server ``KEYBLOB_TEST_PG``
    names (a ``postgresql://`` URL with the rights to create databases), dropped when the
    test ends.  Skips without the server, but fails in CI (``KEYBLOB_REQUIRE_INTEROP=1``)."""
    server = os.environ.get("KEYBLOB_TEST_PG")
    if not server:
        skip_or_fail("no PostgreSQL server: set KEYBLOB_TEST_PG to a postgresql:// URL")
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed: pip install 'keyblob[postgres]'")
    name = f"kbtest_{secrets.token_hex(8)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        # A server's own background worker on the database (autovacuum, on a server other
        # than tools/pg-test-cluster's) cannot be ended by FORCE without superuser rights:
        # it finishes in a moment, so the drop is tried again a few times.
        for attempt in range(10):
            try:
                with psycopg.connect(server, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                if attempt == 9:
                    raise
                time.sleep(0.5)

    request.addfinalizer(drop)
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def worker_environment(names: list[str], chunk: list[int]) -> list[str | None]:
    """A keyblob.pool function, importable in a worker by name: the value each of
    ``names`` has in the worker's environment, once per item of ``chunk``."""
    return [os.environ.get(name) for name in names for _ in chunk]


def secret_of(url: str) -> str | None:
    """The password a store URL carries (the test server's is random in CI), or None."""
    return urlsplit(url).password if "://" in url else None


@dataclass(frozen=True)
class SoftHSMToken:
    """The PKCS#11 test token that ``tools/softhsm-test-token start`` made (its printed
    environment names it): a SoftHSM2 token on the module ``module``, labelled ``label``."""

    module: str
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)

    def token(self) -> Any:
        """The ``pkcs11.Token`` (python-pkcs11), through the process's one library."""
        return pkcs11_library(self.module).get_token(token_label=self.label)


def pkcs11_library(module: str) -> Any:
    """python-pkcs11's ``lib`` for ``module``: keyblob's own, loaded once per process
    (python-pkcs11 allows one library per process, and SoftHSM2 reads SOFTHSM2_CONF once,
    when it is initialised), so that tests and the provider share it."""
    from keyblob.providers.pkcs11 import load_module

    return load_module(module)


def softhsm_token() -> SoftHSMToken:
    """The test token that ``.ci/run`` (or a developer) started with ``tools/softhsm-test-token``
    and named in the environment; skips without it, but fails in CI."""
    names = (
        "KEYBLOB_TEST_PKCS11_MODULE",
        "KEYBLOB_TEST_PKCS11_TOKEN",
        "KEYBLOB_TEST_PKCS11_PIN",
        "SOFTHSM2_CONF",
    )
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        skip_or_fail(
            f"no PKCS#11 test token ({', '.join(missing)} unset): "
            'eval "$(tools/softhsm-test-token start DIR)"'
        )
    if not Path(os.environ["SOFTHSM2_CONF"]).is_file():
        skip_or_fail("SOFTHSM2_CONF names no file: start the token with tools/softhsm-test-token")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        skip_or_fail("python-pkcs11 is not installed: pip install 'keyblob[pkcs11]'")
    return SoftHSMToken(
        module=os.environ["KEYBLOB_TEST_PKCS11_MODULE"],
        label=os.environ["KEYBLOB_TEST_PKCS11_TOKEN"],
        pin=os.environ["KEYBLOB_TEST_PKCS11_PIN"],
        so_pin=os.environ.get("KEYBLOB_TEST_PKCS11_SO_PIN", ""),
    )


#: The ``suite`` fixture's parameter (tests/conftest.py) of a run whose ``p256`` containers
#: keep their keys and state key in the PKCS#11 test token (``softhsm_token``): the test
#: sees ``Suite.P256`` and ``make_container(suite=Suite.P256)`` makes token containers
#: (issue 14: the attack tests with a token-backed container).
TOKEN_P256 = "p256-token"


def close_token_container(container: Any) -> None:
    """Destroy the token objects of a container that a test made (its two key pairs and its
    state key, found by the labels its record names: ``keyblob/<name>/<hex>/...``), then
    close it (the last close logs out of the token)."""
    from pkcs11 import Attribute

    record = container.record
    try:
        session = container._session.session
        for ref in (record.exchange, record.signature, record.state):
            for obj in list(session.get_objects({Attribute.LABEL: ref.label})):
                obj.destroy()
    finally:
        container.close()
