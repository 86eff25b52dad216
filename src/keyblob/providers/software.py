"""The software provider: containers in a home folder, private keys sealed at rest under a
passphrase-derived key, and each container's authenticated state (FORMAT.md 5).

Layout (folders 0700, files 0600)::

    <home>/containers/<name>/container.json   public keys, sealed private keys, KDF params
    <home>/containers/<name>/state.db         trusted signers and high-water marks: a MAC'd
                                              head over hash trees (statedb.py); a version 1
                                              state.json is read, then migrated
    <home>/containers/<name>/lock             serialises state updates (POSIX flock)
    <home>/containers/<name>/public.kbpub     its public key file, kept for pubkey (a cache)

One Argon2id derivation per command unlocks a container; HKDF splits its output into a key
that seals the private keys, a key that authenticates the state and a passphrase check.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hmac
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyblob.atomic import fsync_dir, make_private_folder, read_bounded, write_atomic
from keyblob.errors import (
    FormatError,
    NotFoundError,
    PassphraseError,
    ProviderError,
    UsageError,
    VerificationError,
)
from keyblob.keys import (
    MAX_GENERATION,
    KeyId,
    KeyRole,
    Suite,
    check_name,
    key_id_for,
    label_from_text,
)
from keyblob.providers import statedb, suites
from keyblob.trust import (
    State,
    canonical,
    canonical_b64,
    canonical_json_value,
    check_store_identity,
    json_int,
    lower_hex,
    strict_json,
)

if TYPE_CHECKING:
    from keyblob import mscapi

CONTAINER_FORMAT = "keyblob-container/v1"
PUBLIC_FILE = "public.kbpub"  # the public key file kept beside the container (FORMAT.md 5)
STATE_FORMAT = "keyblob-state/v1"  # state.json (FORMAT.md 5.2.1): read, then migrated
HEAD_FORMAT = "keyblob-state/v2"  # the head of state.db (FORMAT.md 5.2)
STATE_DB = "state.db"
SEAL_INFO = b"keyblob/v1/container/seal"
STATE_INFO = b"keyblob/v1/container/state"
CHECK_INFO = b"keyblob/v1/container/passphrase-check"
SEAL_AAD = b"keyblob/v1/container/private-key\x00"
MAX_FILE_SIZE = 65536
# The head of state.db and a version 1 state.json: a hostile document costs up to ~25 times
# its size to parse before its MAC can be checked (FORMAT.md 5.2: the MAC is over the parsed
# document), so at most ~100 MiB.  The head holds signers and store views, not the marks.
MAX_STATE_SIZE = 4 * 1024 * 1024
SALT_SIZE = 16
CHECK_SIZE = 32
KDF_FIELDS = ("memory_kib", "iterations", "lanes")  # container.json "kdf", as KdfParams
DEFAULT_CONTAINER = "default"

STATE_EDITED = "the home state of container {name!r} was modified outside keyblob"
STATE_OVERSIZE = (
    "the home state of container {name!r} is over the {bound}-byte bound keyblob writes: "
    "this keyblob did not write it"
)
STATE_OVERSIZE_HINT = (
    "a keyblob before the 4 MiB bound wrote states up to 16 MiB: read this container with "
    "that version, or make a new container; otherwise restore state.json from a backup",
)
STATE_MISSING = "the home state of container {name!r} is missing"
BUCKET_FULL = (
    "container {name!r}: {count} names whose SHA-256 starts like {example!r}'s already have "
    "high-water marks, the most one bucket of the state holds (FORMAT.md 5.2.2); "
    "nothing was changed"
)
CONTAINER_EDITED = (
    "container {name!r} was modified outside keyblob: its keys do not match their seal"
)


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters, stored with the container (RFC 9106, second recommended option)."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    # Bounds on what a container file may ask for (FORMAT.md 5.1): a hostile file must not
    # make us allocate gigabytes or spin for minutes, nor weaken the derivation below a
    # floor.  The worst case, 256 MiB x 8 passes, took 1.8-2.0 s and 275 MiB of RSS on the
    # 2-core build machine (the default, 64 MiB x 3, 0.18 s): 4x the default's memory and
    # 2.7x its passes remain for those who want more.  Lanes do not change the cost (the
    # derivation runs on one thread).
    MIN_MEMORY_KIB = 8192
    MAX_MEMORY_KIB = 256 * 1024
    MAX_ITERATIONS = 8
    MAX_LANES = 64

    def check(self) -> KdfParams:
        if not self.MIN_MEMORY_KIB <= self.memory_kib <= self.MAX_MEMORY_KIB:
            raise FormatError(
                f"container: Argon2id memory must be {self.MIN_MEMORY_KIB} to "
                f"{self.MAX_MEMORY_KIB} KiB"
            )
        if not 1 <= self.iterations <= self.MAX_ITERATIONS:
            raise FormatError(f"container: Argon2id iterations must be 1 to {self.MAX_ITERATIONS}")
        if not 1 <= self.lanes <= self.MAX_LANES:
            raise FormatError(f"container: Argon2id lanes must be 1 to {self.MAX_LANES}")
        return self


@dataclass(frozen=True, repr=False)  # secret: a repr must not print them
class _Keys:
    seal: bytes
    state: bytes
    check: bytes


def _derive(passphrase: bytes, salt: bytes, kdf: KdfParams) -> _Keys:
    master = Argon2id(
        salt=salt,
        length=32,
        iterations=kdf.iterations,
        lanes=kdf.lanes,
        memory_cost=kdf.memory_kib,
    ).derive(passphrase)

    def expand(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    return _Keys(expand(SEAL_INFO), expand(STATE_INFO), expand(CHECK_INFO))


def _mac(key: bytes, data: bytes) -> bytes:
    h = crypto_hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, field: str) -> bytes:
    try:
        return canonical_b64(text)
    except (TypeError, ValueError):
        raise FormatError(f"container: {field} is not base64") from None


def _seal_aad(name: str, role: KeyRole, suite: Suite, public: bytes) -> bytes:
    return SEAL_AAD + canonical(
        {"container": name, "role": role.prefix, "suite": suite.label, "public": _b64(public)}
    )


def _sealed_entry(
    aead: AESGCM,
    name: str,
    role: KeyRole,
    suite: Suite,
    key: suites.ExchangePrivate | suites.SignaturePrivate,
) -> dict[str, str]:
    """One key pair as container.json holds it: the public key, and the private key sealed."""
    public = suites.public_bytes(key)
    nonce = secrets.token_bytes(12)
    sealed = aead.encrypt(nonce, suites.private_bytes(key), _seal_aad(name, role, suite, public))
    return {"public": _b64(public), "sealed": _b64(nonce + sealed)}


def check_private_folder(path: Path, what: str) -> None:
    """Refuse a folder or file that others can read or write, or that someone else owns.

    Raises:
        ProviderError: the permissions are unsafe; the message says how to fix them.
    """
    if os.name == "nt":  # POSIX modes mean nothing there; the user profile ACLs apply
        return
    try:
        st = path.stat()
    except OSError as e:
        raise ProviderError(f"cannot read {what} {path}: {e.strerror}") from e
    _check_private(st, path, what)


# The home's files are opened without following a symlink (a planted one could lead
# anywhere) and without blocking (a FIFO planted there would wait for a writer forever).
_HOME_FILE_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _check_home_file(st: os.stat_result, path: Path, what: str) -> None:
    """The opened ``path`` is a regular file, this user's and private (FORMAT.md 5)."""
    if not stat.S_ISREG(st.st_mode):
        raise ProviderError(f"refusing {what} {path}: it is not a regular file")
    _check_private(st, path, what)


def _check_private(st: os.stat_result, path: Path, what: str) -> None:
    if os.name == "nt":
        return
    if st.st_uid != os.getuid():
        raise ProviderError(f"{what} {path} is owned by another user (uid {st.st_uid})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        wanted = "700" if stat.S_ISDIR(st.st_mode) else "600"
        raise ProviderError(
            f"{what} {path} can be read or written by others (mode {mode:o}): "
            f"run chmod {wanted} {path}"
        )


def _members(value: Any, members: frozenset[str], where: str) -> dict[str, Any]:
    """``value`` if it is an object with exactly ``members`` (FORMAT.md 5.1: no member
    missing, none added: a file has one meaning, and a writer's extension is not ignored)."""
    if not isinstance(value, dict) or value.keys() != members:
        raise FormatError(f"container: {where} must have exactly the members {sorted(members)}")
    return value


_CONTAINER_MEMBERS = frozenset(
    ("format", "name", "suite", "created", "kdf", "check", "exchange", "signature")
)
_KDF_MEMBERS = frozenset(("algorithm", "salt", *KDF_FIELDS))
_ENTRY_MEMBERS = frozenset(("public", "sealed"))


def _parse_container(doc: Any, name: str) -> tuple[Suite, KdfParams, bytes, bytes]:
    """The parts of container.json needed before the derivation, all checked (FORMAT.md 5.1):
    the structure, every type and every range, so a malformed file costs no derivation.

    Raises:
        FormatError, KeyError, TypeError, ValueError, UsageError: malformed (the caller
            reports the last four as a damaged file).
    """
    _members(doc, _CONTAINER_MEMBERS, "the file")
    suite = Suite.from_label(doc["suite"])
    if doc["format"] != CONTAINER_FORMAT or doc["name"] != name:
        raise FormatError(f"container {name!r}: not a {CONTAINER_FORMAT} file")
    json_int(doc["created"], 0, MAX_GENERATION)  # informational, but one type
    k = _members(doc["kdf"], _KDF_MEMBERS, "kdf")
    if k["algorithm"] != "argon2id":
        raise FormatError(f"container {name!r}: unknown KDF {k['algorithm']!r}")
    kdf = KdfParams(*(json_int(k[p]) for p in KDF_FIELDS)).check()  # check(): ranges
    salt = _unb64(k["salt"], "kdf.salt")
    if len(salt) != SALT_SIZE:
        raise FormatError(f"container {name!r}: the KDF salt is not {SALT_SIZE} bytes")
    check = _unb64(doc["check"], "check")
    if len(check) != CHECK_SIZE:  # no passphrase could match it: the file is damaged
        raise FormatError(f"container {name!r}: the passphrase check is not {CHECK_SIZE} bytes")
    for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
        entry = _members(doc[role.name.lower()], _ENTRY_MEMBERS, role.name.lower())
        if not all(isinstance(entry[m], str) for m in _ENTRY_MEMBERS):
            raise FormatError(f"container: {role.name.lower()} members must be strings")
    return suite, kdf, salt, check


class Home:
    """A home folder that holds containers (``--home``, ``KEYBLOB_HOME``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def containers_dir(self) -> Path:
        return self.path / "containers"

    @property
    def default_store(self) -> Path:
        return self.path / "blobs"

    def container_dir(self, name: str) -> Path:
        return self.containers_dir / check_name(name)

    def container_names(self) -> list[str]:
        if not self.containers_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.containers_dir.iterdir() if (p / "container.json").is_file()
        )

    def check_permissions(self) -> None:
        check_private_folder(self.path, "home")
        if self.containers_dir.exists():
            check_private_folder(self.containers_dir, "folder")

    def create(
        self,
        name: str,
        passphrase: bytes,
        suite: Suite = Suite.X25519,
        *,
        bits: int = suites.DEFAULT_RSA_BITS,
        kdf: KdfParams | None = None,
        label: str | None = None,
    ) -> SoftwareContainer:
        """Create a container with fresh key pairs and return it unlocked.

        ``label``: what people call it (``Alice Martin <alice@example.com>``, FORMAT.md 1.5;
        NFC-normalized), kept in its authenticated state (5.2) and carried, signed, in its
        public key file (3.2); without one, the container's name stands for it.

        Raises:
            UsageError: invalid name, label, suite or size, or an empty passphrase.
            ProviderError: the container exists already, or the home is unsafe.
        """
        check_name(name)
        label = None if label is None else label_from_text(label)
        if not passphrase:
            raise UsageError("the passphrase must not be empty")
        kdf = (kdf or KdfParams()).check()
        exchange, signature = suites.generate(suite, bits)
        if self.path.exists():
            self.check_permissions()
        folder = self.container_dir(name)
        self.refuse_existing(name)
        salt = secrets.token_bytes(SALT_SIZE)
        keys = _derive(passphrase, salt, kdf)
        aead = AESGCM(keys.seal)
        doc: dict[str, Any] = {
            "format": CONTAINER_FORMAT,
            "name": name,
            "suite": suite.label,
            "created": int(time.time()),
            "kdf": {
                "algorithm": "argon2id",
                "salt": _b64(salt),
                "memory_kib": kdf.memory_kib,
                "iterations": kdf.iterations,
                "lanes": kdf.lanes,
            },
            "check": _b64(keys.check),
        }
        for role, key in ((KeyRole.EXCHANGE, exchange), (KeyRole.SIGNATURE, signature)):
            doc[role.name.lower()] = _sealed_entry(aead, name, role, suite, key)
        try:
            make_private_folder(folder)  # the home and its containers folder too
        except OSError as e:
            raise ProviderError(f"cannot create {e.filename or folder}: {e.strerror}") from e
        try:
            write_atomic(
                folder / "container.json",
                json.dumps(doc, indent=2).encode() + b"\n",
                exclusive=True,
            )
        except FileExistsError:
            raise self._exists(name) from None
        except OSError as e:
            raise ProviderError(f"cannot write container {name!r}: {e.strerror}") from e
        container = SoftwareContainer(self, doc, keys, exchange, signature)
        container._create_state(State(label=label))
        return container

    def require(self, name: str) -> None:
        """Raise what :meth:`open` raises when there is no container ``name``, without a
        passphrase: a caller asks for one only for a container that exists.

        Raises:
            NotFoundError: no such container.
        """
        if not os.path.lexists(self.container_dir(name) / "container.json"):
            raise self._missing(name)

    def refuse_existing(self, name: str) -> None:
        """Raise what :meth:`create` raises when container ``name`` exists already, before
        a caller asks for a new passphrase.

        Raises:
            ProviderError: the container exists.
        """
        if os.path.lexists(self.container_dir(name) / "container.json"):
            raise self._exists(name)

    def _exists(self, name: str) -> ProviderError:
        return ProviderError(f"container {name!r} already exists in {self.path}")

    def _missing(self, name: str) -> NotFoundError:
        where = f"{self.path}" if self.path.exists() else f"{self.path} (no such folder)"
        return NotFoundError(f"no container {name!r} in {where}: run keyblob init")

    def _read_container(self, name: str) -> tuple[dict[str, Any], Suite, KdfParams, bytes, bytes]:
        """container.json of ``name``, read with every check of FORMAT.md 5 and parsed
        (5.1); no passphrase needed.

        Raises:
            NotFoundError: no such container.
            ProviderError: unsafe permissions.
            FormatError: the container file is damaged.
        """
        folder = self.container_dir(name)
        path = folder / "container.json"
        try:
            data = read_bounded(
                path,
                MAX_FILE_SIZE,
                flags=_HOME_FILE_FLAGS,
                check=lambda st: _check_home_file(st, path, "container file"),
            )
        except FileNotFoundError:
            raise self._missing(name) from None
        except ValueError:
            raise FormatError(f"container {name!r}: damaged file {path}") from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise ProviderError(
                    f"refusing {path}: it is a symlink; the container file must be a file of "
                    "the container's own folder"
                ) from None
            raise ProviderError(f"cannot read container file {path}: {e.strerror}") from e
        self.check_permissions()
        check_private_folder(folder, "container folder")
        try:
            doc = strict_json(data)
            suite, kdf, salt, check = _parse_container(doc, name)
        except (KeyError, TypeError, ValueError, UsageError) as e:
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"container {name!r}: damaged file {path}") from None
        return doc, suite, kdf, salt, check

    def public_keys(self, name: str) -> tuple[Suite, bytes, bytes]:
        """The suite and the (exchange, signature) public keys of container ``name``, from its
        container.json (FORMAT.md 5.1), without a passphrase.  Nothing authenticates them
        there: compare them with what their private keys signed (:meth:`read_public_file`).

        Raises:
            NotFoundError: no such container.
            ProviderError: unsafe permissions.
            FormatError: the container file is damaged.
        """
        doc, suite, _, _, _ = self._read_container(name)
        exchange = _unb64(doc["exchange"]["public"], "exchange.public")
        signature = _unb64(doc["signature"]["public"], "signature.public")
        suites.check_public_keys(suite, exchange, signature)
        return suite, exchange, signature

    def read_public_file(self, name: str) -> bytes | None:
        """The public key file kept beside container ``name`` (``public.kbpub``, FORMAT.md 5),
        unchecked, or None if there is none.  Read as the home's other files are.

        Raises:
            ProviderError: unsafe permissions, a symlink, not a regular file, unreadable.
        """
        path = self.container_dir(name) / PUBLIC_FILE
        try:
            return read_bounded(
                path,
                MAX_FILE_SIZE,
                flags=_HOME_FILE_FLAGS,
                check=lambda st: _check_home_file(st, path, "public key file"),
            )
        except (FileNotFoundError, ValueError):
            return None  # missing, or too large to be one: made again from the keys
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ProviderError(f"refusing {path}: it is a symlink") from None
            raise ProviderError(f"cannot read {path}: {e.strerror}") from e

    def write_public_file(self, name: str, data: bytes) -> None:
        """Keep ``data``, container ``name``'s public key file, beside it (FORMAT.md 5).

        Raises:
            ProviderError: it could not be written.
        """
        path = self.container_dir(name) / PUBLIC_FILE
        try:
            write_atomic(path, data)
        except OSError as e:
            # Never leave an older file behind: it may carry a label no longer the container's.
            with contextlib.suppress(OSError):
                path.unlink()
            raise ProviderError(f"cannot write {path}: {e.strerror}") from e

    def open(self, name: str, passphrase: bytes) -> SoftwareContainer:
        """Unlock container ``name`` with ``passphrase``.

        Raises:
            NotFoundError: no such container.
            ProviderError: unsafe permissions.
            PassphraseError: wrong passphrase.
            VerificationError: the container file was tampered with.
            FormatError: the container file is damaged.
        """
        doc, suite, kdf, salt, check = self._read_container(name)
        keys = _derive(passphrase, salt, kdf)
        if not hmac.compare_digest(keys.check, check):
            raise PassphraseError(f"wrong passphrase for container {name!r}")
        aead = AESGCM(keys.seal)
        private = {}
        for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE):
            try:
                entry = doc[role.name.lower()]
                public = _unb64(entry["public"], f"{role.name.lower()}.public")
                sealed = _unb64(entry["sealed"], f"{role.name.lower()}.sealed")
                private[role] = aead.decrypt(
                    sealed[:12], sealed[12:], _seal_aad(name, role, suite, public)
                )
            except (InvalidTag, KeyError, TypeError, ValueError):
                # ValueError: a sealed value too short to hold a nonce and a tag
                raise VerificationError(CONTAINER_EDITED.format(name=name)) from None
        exchange = suites.load_exchange_private(suite, private[KeyRole.EXCHANGE])
        signature = suites.load_signature_private(suite, private[KeyRole.SIGNATURE])
        return SoftwareContainer(self, doc, keys, exchange, signature)


class SoftwareContainer:
    """An unlocked container of the software provider (implements ``Provider``)."""

    def __init__(
        self,
        home: Home,
        doc: dict[str, Any],
        keys: _Keys,
        exchange: suites.ExchangePrivate,
        signature: suites.SignaturePrivate,
    ) -> None:
        self._doc = doc
        self._name: str = doc["name"]
        self._suite = Suite.from_label(doc["suite"])
        self._keys = keys
        self._exchange = exchange
        self._signature = signature
        self._exchange_public = suites.public_bytes(exchange)
        self._signature_public = suites.public_bytes(signature)
        self._exchange_id = key_id_for(self._suite, KeyRole.EXCHANGE, self._exchange_public)
        self._signature_id = key_id_for(self._suite, KeyRole.SIGNATURE, self._signature_public)
        self._folder = home.container_dir(self._name)
        self._state_path = self._folder / "state.json"  # version 1: read, then migrated
        self._state_cache: tuple[bytes, State] | None = None
        self._db_path = self._folder / STATE_DB
        self._db = statedb.StateDatabase(
            self._db_path,
            edited=lambda: VerificationError(STATE_EDITED.format(name=self._name)),
            failed=lambda why: ProviderError(f"cannot use {self._db_path}: {why}"),
        )
        self._head_cache: tuple[bytes, _Head] | None = None

    def __repr__(self) -> str:
        return f"<SoftwareContainer {self._name!r} suite={self._suite.label}>"

    def __reduce__(self) -> Any:
        raise TypeError("an unlocked container cannot be pickled")

    @property
    def name(self) -> str:
        return self._name

    @property
    def suite(self) -> Suite:
        return self._suite

    @property
    def exchange_public(self) -> bytes:
        return self._exchange_public

    @property
    def signature_public(self) -> bytes:
        return self._signature_public

    @property
    def exchange_id(self) -> KeyId:
        return self._exchange_id

    @property
    def signature_id(self) -> KeyId:
        return self._signature_id

    def sign(self, message: bytes) -> bytes:
        return suites.sign(self._signature, message)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return suites.unwrap(self._exchange, wrapped, context)

    # -- CryptoAPI (rsa suite): the exchange key opens SIMPLEBLOBs, the signature key signs
    #    as CryptSignHash does; the key objects never leave this class ---------------------

    def _rsa(self, key: suites.ExchangePrivate | suites.SignaturePrivate) -> rsa.RSAPrivateKey:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UsageError(
                f"container {self._name!r} uses suite {self._suite.label}: CryptoAPI needs a "
                "container of the rsa suite (keyblob init --suite rsa)"
            )
        return key

    def capi_unwrap(self, simpleblob: bytes, *, authenticated: bool) -> mscapi.CapiKey:
        """CryptImportKey(SIMPLEBLOB) with the exchange key, without a padding oracle.

        ``authenticated``: the caller verified the blob's signature (a failure then raises).

        Raises:
            UsageError: not an rsa-suite container.
            FormatError, UnsupportedError, VerificationError: as
                :func:`keyblob.mscapi.unwrap_simpleblob`.
        """
        from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

        return mscapi.unwrap_simpleblob(
            simpleblob, self._rsa(self._exchange), authenticated=authenticated
        )

    def capi_sign(self, data: bytes, *, hash_alg: mscapi.AlgId, legacy: bool = False) -> bytes:
        """CryptSignHash over ``data`` with the signature key (AT_SIGNATURE).

        Raises:
            UsageError: not an rsa-suite container, or a legacy hash without ``legacy``.
        """
        from keyblob import mscapi  # noqa: PLC0415 - CryptoAPI is loaded on first use

        return mscapi.sign_hash(self._rsa(self._signature), data, hash_alg=hash_alg, legacy=legacy)

    def replace_key_pair(self, role: KeyRole, key: rsa.RSAPrivateKey, *, force: bool) -> None:
        """Make ``key`` (validated when it was loaded) this container's ``role`` key pair.

        Blobs wrapped for the old exchange key stop opening, and blobs signed by the old
        signature key stop verifying, so a container that already holds keys is refused
        unless ``force``.

        Raises:
            UsageError: not an rsa container, a key keyblob does not accept (size, exponent),
                or keys exist and ``force`` is False.
            ProviderError: the container file could not be written.
        """
        self._rsa(self._exchange)
        public = suites.public_bytes(key)
        try:
            suites.load_exchange_public(self._suite, public)
        except FormatError as e:
            raise UsageError(f"this key cannot be a container key: {e}") from None
        state = self.state()
        if state.has_marks() and not force:
            seen = sorted(state.all_marks())
            raise UsageError(
                f"container {self._name!r} already holds keys ({', '.join(sorted(seen)[:3])}"
                f"{', ...' if len(seen) > 3 else ''}): replacing its {role.name.lower()} key "
                "would orphan them; use a new container, or --force"
            )
        doc = {
            **self._doc,
            role.name.lower(): _sealed_entry(
                AESGCM(self._keys.seal), self._name, role, self._suite, key
            ),
        }
        try:
            write_atomic(
                self._folder / "container.json", json.dumps(doc, indent=2).encode() + b"\n"
            )
        except OSError as e:
            raise ProviderError(f"cannot write container {self._name!r}: {e.strerror}") from e
        self._doc = doc
        if role is KeyRole.EXCHANGE:
            self._exchange = key
            self._exchange_public = public
            self._exchange_id = key_id_for(self._suite, role, public)
        else:
            self._signature = key
            self._signature_public = public
            self._signature_id = key_id_for(self._suite, role, public)

    # -- authenticated state ------------------------------------------------------------

    def _head_bytes(self, state: State, marks: _Tree, views: dict[str, _Tree]) -> bytes:
        """The head document (FORMAT.md 5.2): canonical JSON with its MAC, and a final LF.

        Raises:
            ProviderError: it would be over the bound every reader applies.
        """
        doc: dict[str, Any] = {
            "container": self._name,
            "format": HEAD_FORMAT,
            **state.to_json(version=2),
            "marks": marks.to_json(),
            "views": [dict(store=store, **views[store].to_json()) for store in sorted(views)],
        }
        doc["mac"] = _mac(self._keys.state, canonical(doc)).hex()
        data = canonical(doc) + b"\n"
        if len(data) > MAX_STATE_SIZE:
            # A reader refuses such a head (FORMAT.md 5.2): writing it would lock the
            # container out for good.  The old state stays as it was.
            signers = len(state.trusted) + len(state.capi_signers)
            raise ProviderError(
                f"container {self._name!r}: the change would make the head of its home state "
                f"{len(data)} bytes ({signers} signers, {len(views)} stores), over the "
                f"{MAX_STATE_SIZE}-byte bound; nothing was changed"
            )
        return data

    def _plan(
        self,
        db: sqlite3.Connection | None,
        old: _Head | None,
        new: State,
        extra_marks: dict[str, int],
    ) -> tuple[bytes, dict[int, dict[str, bytes]], _Head]:
        """The head and node rows that record ``new`` (its signers, label, and its marks and
        views raised, never lowered) over ``old`` (None: an empty state).

        Raises:
            ProviderError: a bucket or the head would be over its bound.
            VerificationError: a node on a changed path was edited.
        """
        marks_tree = old.marks if old is not None else _Tree(statedb.MARKS_TREE, statedb.ZERO, 0)
        views = dict(old.views) if old is not None else {}
        changes = dict(extra_marks)
        for name, generation in new.marks.items():
            changes[name] = max(changes.get(name, 0), generation)
        rows: dict[int, dict[str, bytes]] = {}
        try:
            for store, view in sorted(new.views.items()):
                check_store_identity(store)
                tree = views.get(store) or _Tree(
                    1 + max((t.tree for t in views.values()), default=0), statedb.ZERO, 0
                )
                views[store] = rows_for(self._db, db, tree, view, rows)
            marks_tree = rows_for(self._db, db, marks_tree, changes, rows)
        except statedb.BucketFull as e:
            raise ProviderError(
                BUCKET_FULL.format(name=self._name, count=statedb.MAX_BUCKET, example=str(e))
            ) from None
        except ValueError:
            raise UsageError("a store identity in the state is not valid") from None
        data = self._head_bytes(new, marks_tree, views)
        policy = State(trusted=new.trusted, capi_signers=new.capi_signers, label=new.label)
        head = _Head(policy, marks_tree, views)
        return (
            data,
            rows,
            replace(head, policy=replace(policy, recorded=_Recorded(self, head, data))),
        )

    def _create_state(self, state: State, extra_marks: dict[str, int] | None = None) -> None:
        """Write a new state.db holding ``state`` (and ``extra_marks``) in one step: built
        under a temp name, then renamed over any old one (FORMAT.md 5.2.4)."""
        head, rows, _ = self._plan(None, None, state, extra_marks or {})
        temp = self._folder / f".{STATE_DB}.{secrets.token_hex(8)}.tmp"
        try:
            # Held while it has no final name: the temp file cleaner of other writers
            # (FORMAT.md 5.3) leaves a locked file alone.
            with _flocked(temp):
                statedb.create(temp, head, rows)
                os.replace(temp, self._db_path)
            fsync_dir(self._folder)
        except (OSError, sqlite3.Error) as e:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise ProviderError(f"cannot write {self._db_path}: {e}") from e
        self._db.close()  # a connection to a file replaced would read the old one
        self._head_cache = None

    def _read_head(self, db: sqlite3.Connection) -> _Head:
        """The head of state.db, read in the transaction ``db`` and verified.

        Raises:
            as :meth:`_head`.
        """
        try:
            data = statedb.StateDatabase.read_head(db, MAX_STATE_SIZE)
        except ValueError:
            raise VerificationError(STATE_EDITED.format(name=self._name)) from None
        return self._head(data)

    def _head(self, data: bytes | None) -> _Head:
        """The head whose bytes are ``data`` (None: over the bound), verified (FORMAT.md
        5.2.5, steps 4 to 7); parsed only when they differ from those last verified.

        Raises:
            VerificationError: edited, or over the bound.
            FormatError: a valid MAC over a document that breaks the field rules.
        """
        if data is None:
            raise VerificationError(STATE_OVERSIZE.format(name=self._name, bound=MAX_STATE_SIZE))
        cached = self._head_cache
        if cached is not None and hmac.compare_digest(cached[0], data):
            return cached[1]
        doc = self._verified_doc(data, HEAD_FORMAT)
        try:
            marks = _Tree.from_json(doc.pop("marks"), statedb.MARKS_TREE)
            views = _views_from_json(doc.pop("views"))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError("home state: not a valid state document") from None
        policy = State.from_json(doc, suite=self._suite, version=2)
        head = _Head(policy, marks, views)
        head = replace(head, policy=replace(policy, recorded=_Recorded(self, head, data)))
        self._head_cache = (data, head)
        return head

    def _verified_doc(self, data: bytes, format_: str) -> dict[str, Any]:
        """The MAC'd document ``data`` (a v2 head or a v1 state.json) without its ``mac``:
        parsed strictly, its MAC checked, of format ``format_`` and this container
        (FORMAT.md 5.2.1, 5.2.5); any failure is the one 'edited' VerificationError."""
        edited = VerificationError(STATE_EDITED.format(name=self._name))
        try:
            doc: dict[str, Any] = canonical_json_value(data)  # true, null, 1.0: refused
            mac = lower_hex(doc.pop("mac"), 32)  # before the MAC
        except (ValueError, KeyError, TypeError, AttributeError):
            raise edited from None
        if not hmac.compare_digest(_mac(self._keys.state, canonical(doc)), mac):
            raise edited
        if doc.get("format") != format_ or doc.get("container") != self._name:
            raise edited
        return doc

    def _read_state_file(self) -> bytes:
        oversize = VerificationError(
            STATE_OVERSIZE.format(name=self._name, bound=MAX_STATE_SIZE), hints=STATE_OVERSIZE_HINT
        )

        def check(st: os.stat_result) -> None:
            _check_home_file(st, self._state_path, "state file")
            if st.st_size > MAX_STATE_SIZE:  # refused before reading any of it
                raise oversize

        try:
            return read_bounded(
                self._state_path, MAX_STATE_SIZE, flags=_HOME_FILE_FLAGS, check=check
            )
        except FileNotFoundError:
            raise VerificationError(STATE_MISSING.format(name=self._name)) from None
        except ValueError:  # grew over the limit while it was read
            raise oversize from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise ProviderError(
                    f"refusing {self._state_path}: it is a symlink; the state must be a file "
                    "of the container's own folder (restore it from a backup of the home)"
                ) from None
            raise ProviderError(f"cannot read {self._state_path}: {e.strerror}") from e

    def _state_v1(self) -> State:
        """A version 1 state.json (FORMAT.md 5.2.1), its marks in memory."""
        data = self._read_state_file()
        cached = self._state_cache
        # The file is re-read every time (another process may have changed it); parsing and
        # the MAC check are skipped only when its bytes are exactly those last verified.
        if cached is not None and hmac.compare_digest(cached[0], data):
            return cached[1]
        state = State.from_json(self._verified_doc(data, STATE_FORMAT), suite=self._suite)
        self._state_cache = (data, state)
        return state

    def _has_db(self) -> bool:
        """Whether state.db exists (then it is the state, whatever state.json says:
        FORMAT.md 5.2.4); it must be a private regular file of this user.

        Raises:
            ProviderError: it is a symlink, not a regular file, or not private.
        """
        try:
            st = os.lstat(self._db_path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise ProviderError(f"cannot read {self._db_path}: {e.strerror}") from e
        if stat.S_ISLNK(st.st_mode):
            raise ProviderError(
                f"refusing {self._db_path}: it is a symlink; the state must be a file of the "
                "container's own folder (restore it from a backup of the home)"
            )
        _check_home_file(st, self._db_path, "state file")
        return True

    def state(self) -> State:
        """The authenticated state as it is now: signers and label read and verified, marks
        looked up name by name when asked for (each lookup verified again).

        Raises:
            VerificationError: the state was edited or is missing.
            FormatError: a state with a valid MAC that breaks the field rules.
            ProviderError: the state file is unsafe or could not be read.
        """
        if not self._has_db():
            return self._state_v1()
        return self._head(self._db.read(MAX_STATE_SIZE)[0]).policy

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            import fcntl  # noqa: PLC0415  (POSIX only)
        except ImportError:  # pragma: no cover - Windows: single-writer assumption
            yield
            return
        path = self._folder / "lock"
        # Like the other home files: a symlink planted there must not make every update
        # create (or lock) its target, nor a FIFO block the open; then the file opened must
        # be this user's, private, and a regular file (FORMAT.md 5).
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise ProviderError(
                    f"refusing {path}: it is a symlink; remove it (keyblob makes a new lock file)"
                ) from None
            raise ProviderError(f"cannot open {path}: {e.strerror}") from e
        try:
            info = os.fstat(fd)
            _check_home_file(info, path, "lock file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update_state(self, change: Callable[[State], State]) -> State:
        """Apply ``change`` under the lock; record the result in one SQLite transaction
        (head and nodes together), or, for a version 1 home, migrate it (FORMAT.md 5.2.4).

        Raises:
            as :meth:`state`, and what ``change`` raises (nothing is then written).
        """
        with self._locked():
            old = self.state()
            new = change(old)
            if new == old:
                return new
            self._write_change(old, new)
            cached = self._head_cache
            # Still under the lock: what was just committed is the state (no read again).
            return cached[1].policy if cached is not None else self.state()

    def _write_change(self, old: State, new: State) -> None:
        """Record ``new`` over ``old`` (read under the lock, which the caller holds)."""
        if old.recorded is None:  # version 1: its marks move into the new state.db
            self._create_state(new, dict(old.marks))
            with contextlib.suppress(FileNotFoundError):
                self._state_path.unlink()
            fsync_dir(self._folder)
            self._state_cache = None
            self._head_cache = None
            return
        with self._db.transaction(write=True) as db:
            head, rows, parsed = self._plan(db, self._read_head(db), new, {})
            for tree, nodes in rows.items():
                statedb.StateDatabase.write_nodes(db, tree, nodes)
            statedb.StateDatabase.write_head(db, head)
        # What was just committed, as the next read would parse it: no parse, no MAC again.
        self._head_cache = (head, parsed)


@dataclass(frozen=True)
class _Tree:
    """One tree of state.db as its head names it (FORMAT.md 5.2)."""

    tree: int
    root: bytes
    count: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "root": self.root.hex()}
        if self.tree != statedb.MARKS_TREE:
            out["tree"] = self.tree
        return out

    @classmethod
    def from_json(cls, doc: Any, tree: int) -> _Tree:
        members = {"count", "root"} | ({"tree"} if tree != statedb.MARKS_TREE else set())
        if not isinstance(doc, dict) or doc.keys() != members:
            raise ValueError("tree members")
        root = lower_hex(doc["root"], statedb.DIGEST_SIZE)
        count = json_int(doc["count"], 0, MAX_GENERATION)
        if (root == statedb.ZERO) != (count == 0):
            raise ValueError("an empty tree has root zero, and only it")
        return cls(tree, root, count)


def _views_from_json(doc: Any) -> dict[str, _Tree]:
    if not isinstance(doc, list):
        raise TypeError("views")
    out: dict[str, _Tree] = {}
    for entry in doc:
        if not isinstance(entry, dict) or "store" not in entry:
            raise ValueError("view members")
        store = check_store_identity(entry["store"])
        tree = _Tree.from_json(
            {k: v for k, v in entry.items() if k != "store"},
            json_int(entry.get("tree"), 1, 2**31 - 1),
        )
        if tree.count == 0 or (out and store <= max(out)):
            raise ValueError("an empty view, or views not sorted by store")
        out[store] = tree
    if len({t.tree for t in out.values()}) != len(out):
        raise ValueError("two views share a tree")
    return out


@dataclass(frozen=True)
class _Head:
    policy: State  # signers and label; recorded: this head's _Recorded
    marks: _Tree
    views: dict[str, _Tree]


def rows_for(
    database: statedb.StateDatabase,
    db: sqlite3.Connection | None,
    tree: _Tree,
    changes: Mapping[str, int],
    rows: dict[int, dict[str, bytes]],
) -> _Tree:
    """``tree`` with ``changes`` raised in it; its node rows added to ``rows``."""
    root, added, nodes = database.plan(db, tree.tree, tree.root, changes)
    if nodes:
        rows.setdefault(tree.tree, {}).update(nodes)
    return _Tree(tree.tree, root, tree.count + added)


class _Recorded:
    """The marks and views of one head of a container (trust.MarkReader), as a state read
    at one moment has them.  A lookup walks the 5 nodes of a name's path from that head's
    root: through the nodes verified before, then through the rows read for it; if the file
    changed meanwhile (another writer committed), through the head and path read again in
    one statement, which must verify (a mark only grows, so the newer one is as good)."""

    def __init__(self, container: SoftwareContainer, head: _Head, data: bytes) -> None:
        self._c = container
        self._head = head
        self._data = data

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Recorded)
            and other._c is self._c
            and hmac.compare_digest(other._data, self._data)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def count(self) -> int:
        return self._head.marks.count

    def _value(self, pick: Callable[[_Head], _Tree | None], name: str) -> int:
        tree = pick(self._head)
        if tree is None:  # no such view in this head: a newer one may have it
            tree = pick(self._c._head(self._c._db.read(MAX_STATE_SIZE)[0]))
            if tree is None:
                return 0
        db = self._c._db
        value = db.lookup(tree.root, name)
        if value is None:
            value = db.lookup(tree.root, name, db.read_path(tree.tree, name))
        if value is None:  # changed meanwhile, or edited: read head and path at once
            data, rows = db.read(MAX_STATE_SIZE, [(tree.tree, name)])
            now = pick(self._c._head(data))
            if now is None or now.tree != tree.tree:
                raise VerificationError(STATE_EDITED.format(name=self._c.name))
            value = db.lookup(now.root, name, rows.get(now.tree, {}))
            if value is None:
                raise VerificationError(STATE_EDITED.format(name=self._c.name))
        return value

    def generation(self, name: str) -> int:
        return self._value(lambda head: head.marks, name)

    def held(self, store: str, name: str) -> int:
        return self._value(lambda head: head.views.get(store), name)

    def view(self, store: str) -> dict[str, int]:
        with self._c._db.transaction() as db:
            view = self._c._read_head(db).views.get(store)
            return {} if view is None else self._c._db.walk(db, view.tree, view.root)

    def marks(self) -> dict[str, int]:
        with self._c._db.transaction() as db:
            head = self._c._read_head(db)
            return self._c._db.walk(db, head.marks.tree, head.marks.root)


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """``path``, created empty and exclusively, held under flock for the block."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            import fcntl  # noqa: PLC0415  (POSIX only)

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: no cleaner to keep away
            pass
        yield
    finally:
        os.close(fd)
