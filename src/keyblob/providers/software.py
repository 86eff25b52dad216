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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyblob.atomic import make_private_folder, read_bounded, write_atomic
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
from keyblob.providers import homestate, suites
from keyblob.providers.base import MAX_OLD_KEYS, ContainerKeys, OldKey, check_old_key_room
from keyblob.providers.homestate import HOME_FILE_FLAGS, check_home_file, check_private_folder
from keyblob.trust import (
    State,
    canonical,
    canonical_b64,
    json_int,
    strict_json,
)

if TYPE_CHECKING:
    from keyblob import mscapi
    from keyblob.providers import pkcs11
    from keyblob.providers.base import Provider

CONTAINER_FORMAT = "keyblob-container/v1"
TOKEN_CONTAINER_FORMAT = "keyblob-pkcs11-container/v1"  # noqa: S105 - FORMAT.md 5.1.1
PUBLIC_FILE = "public.kbpub"  # the public key file kept beside the container (FORMAT.md 5)
SEAL_INFO = b"keyblob/v1/container/seal"
STATE_INFO = b"keyblob/v1/container/state"
CHECK_INFO = b"keyblob/v1/container/passphrase-check"
SEAL_AAD = b"keyblob/v1/container/private-key\x00"
MAX_FILE_SIZE = 65536
SALT_SIZE = 16
CHECK_SIZE = 32
KDF_FIELDS = ("memory_kib", "iterations", "lanes")  # container.json "kdf", as KdfParams
DEFAULT_CONTAINER = "default"

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


def passphrase_keys(passphrase: bytes, salt: bytes, kdf: KdfParams, *infos: bytes) -> list[bytes]:
    """The passphrase stretched once with Argon2id (32 bytes), then one 32-byte
    HKDF-SHA256 key per ``info`` (FORMAT.md 5.1; a recovery kit's seal key, 8.4)."""
    master = Argon2id(
        salt=salt,
        length=32,
        iterations=kdf.iterations,
        lanes=kdf.lanes,
        memory_cost=kdf.memory_kib,
    ).derive(passphrase)
    return [
        HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)
        for info in infos
    ]


def _derive(passphrase: bytes, salt: bytes, kdf: KdfParams) -> _Keys:
    return _Keys(*passphrase_keys(passphrase, salt, kdf, SEAL_INFO, STATE_INFO, CHECK_INFO))


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


def _seal_aad(
    name: str, role: KeyRole, suite: Suite, public: bytes, until: int | None = None
) -> bytes:
    """FORMAT.md 5.1: what a sealed private key is bound to.  An old key (``previous``)
    binds its ``until`` too, so that no one can move a sealed key between the current slots
    and the old ones without the passphrase."""
    fields: dict[str, Any] = {
        "container": name,
        "role": role.prefix,
        "suite": suite.label,
        "public": _b64(public),
    }
    if until is not None:
        fields["until"] = until
    return SEAL_AAD + canonical(fields)


def _sealed_entry(
    aead: AESGCM,
    name: str,
    role: KeyRole,
    suite: Suite,
    key: suites.ExchangePrivate | suites.SignaturePrivate,
    *,
    until: int | None = None,
) -> dict[str, Any]:
    """One key pair as container.json holds it: the public key, and the private key sealed
    (with ``until``: an entry of ``previous``, FORMAT.md 5.1)."""
    public = suites.public_bytes(key)
    nonce = secrets.token_bytes(12)
    aad = _seal_aad(name, role, suite, public, until)
    sealed = aead.encrypt(nonce, suites.private_bytes(key), aad)
    entry: dict[str, Any] = {"public": _b64(public), "sealed": _b64(nonce + sealed)}
    if until is not None:
        entry = {"role": role.name.lower(), **entry, "until": until}
    return entry


def _pkcs11() -> Any:
    """providers/pkcs11.py, which needs python-pkcs11 (the optional extra ``pkcs11``).

    Raises:
        UsageError: python-pkcs11 is not installed.
    """
    try:
        from keyblob.providers import pkcs11  # noqa: PLC0415 - the optional extra
    except ImportError:
        raise UsageError(
            "PKCS#11 tokens need python-pkcs11: pip install 'keyblob[pkcs11]'"
        ) from None
    return pkcs11


def _pin_text(pin: bytes) -> str:
    """A PIN as PKCS#11 takes it: text (its UTF-8 bytes are what the token compares)."""
    if not pin:
        raise UsageError("the PIN is empty")
    try:
        return pin.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the PIN is not UTF-8 text") from None


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
_OLD_MEMBERS = frozenset(("role", "public", "sealed", "until"))
_ROLES = {"exchange": KeyRole.EXCHANGE, "signature": KeyRole.SIGNATURE}


def old_entries(
    doc: dict[str, Any], members: frozenset[str], name: str
) -> list[tuple[KeyRole, dict[str, Any], int]]:
    """The ``previous`` member of a container file (FORMAT.md 5.1, 5.1.1): absent, or 1 to
    MAX_OLD_KEYS objects with exactly ``members``, a ``role`` and an ``until``; each as
    (role, the object, until).  The keys themselves are the caller's to check.

    Raises:
        FormatError: anything else.
    """
    if "previous" not in doc:
        return []
    entries = doc["previous"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_OLD_KEYS:
        raise FormatError(
            f"container {name!r}: previous must be a list of 1 to {MAX_OLD_KEYS} old keys"
        )
    out = []
    for entry in entries:
        _members(entry, members, "each previous key")
        role = _ROLES.get(entry["role"]) if isinstance(entry["role"], str) else None
        if role is None:
            raise FormatError(f"container {name!r}: a previous key's role is not a role")
        if not all(isinstance(entry[m], str) for m in members - {"until"}):
            raise FormatError(f"container {name!r}: previous key members must be strings")
        until = json_int(entry["until"], 0, MAX_GENERATION)
        out.append((role, entry, until))
    return out


def _parse_container(doc: Any, name: str) -> tuple[Suite, KdfParams, bytes, bytes]:
    """The parts of container.json needed before the derivation, all checked (FORMAT.md 5.1):
    the structure, every type and every range, so a malformed file costs no derivation.

    Raises:
        FormatError, KeyError, TypeError, ValueError, UsageError: malformed (the caller
            reports the last four as a damaged file).
    """
    _members({k: v for k, v in doc.items() if k != "previous"}, _CONTAINER_MEMBERS, "the file")
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
    old_entries(doc, _OLD_MEMBERS, name)
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
        container._state.create(State(label=label))
        return container

    def create_token(
        self,
        name: str,
        pin: bytes,
        *,
        module: str,
        token: str,
        adopt: tuple[str, str] | None = None,
        label: str | None = None,
        serial: str | None = None,
    ) -> pkcs11.TokenContainer:
        """Create a ``p256`` container whose keys live in a PKCS#11 token (FORMAT.md 5.1.1):
        two key pairs generated there (or, with ``adopt``, the pairs it holds labelled
        (exchange, signature)) and a new HMAC key for the state; the home keeps only their
        record, the public keys and the state.  Returned unlocked (logged in).
        ``serial``: the token labelled ``token`` must have this serial number.

        Raises:
            UsageError: invalid name or label.
            ProviderError: the container exists already, the home is unsafe, or the token
                failed; nothing is left behind in the home or the token.
            PassphraseError, NotFoundError: as :meth:`open`.
        """
        check_name(name)
        label = None if label is None else label_from_text(label)
        if self.path.exists():
            self.check_permissions()
        self.refuse_existing(name)
        folder = self.container_dir(name)
        container: pkcs11.TokenContainer
        record, container, undo = _pkcs11().new_container(
            folder,
            name,
            module=module,
            token=token,
            pin=_pin_text(pin),
            adopt=adopt,
            serial=serial,
        )
        path = folder / "container.json"
        written = False
        try:
            make_private_folder(folder)
            write_atomic(
                path, json.dumps(record.to_json(), indent=2).encode() + b"\n", exclusive=True
            )
            written = True
            container._state.create(State(label=label))
        except BaseException as e:
            if written:
                with contextlib.suppress(OSError):
                    path.unlink()
            undo()
            if isinstance(e, FileExistsError):
                raise self._exists(name) from None
            if isinstance(e, OSError):
                raise ProviderError(f"cannot write container {name!r}: {e.strerror}") from e
            raise
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

    def _read_doc(self, name: str) -> dict[str, Any]:
        """container.json of ``name``, read with every check of FORMAT.md 5, as JSON.

        Raises:
            NotFoundError: no such container.
            ProviderError: unsafe permissions.
            FormatError: not a JSON object.
        """
        folder = self.container_dir(name)
        path = folder / "container.json"
        try:
            data = read_bounded(
                path,
                MAX_FILE_SIZE,
                flags=HOME_FILE_FLAGS,
                check=lambda st: check_home_file(st, path, "container file"),
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
        except ValueError:
            raise FormatError(f"container {name!r}: damaged file {path}") from None
        if not isinstance(doc, dict):
            raise FormatError(f"container {name!r}: damaged file {path}")
        return doc

    def _token_record(self, name: str, doc: dict[str, Any]) -> pkcs11.TokenRecord | None:
        """The record of a token container (FORMAT.md 5.1.1), None for a software one."""
        if doc.get("format") != TOKEN_CONTAINER_FORMAT:
            return None
        record: pkcs11.TokenRecord = _pkcs11().TokenRecord.from_json(doc, name)
        return record

    def token_of(self, name: str) -> str | None:
        """The label of the PKCS#11 token that holds container ``name``'s keys, None for a
        software container: what the command line asks for (a PIN or a passphrase).

        Raises:
            as :meth:`public_keys`.
        """
        record = self._token_record(name, self._read_doc(name))
        return None if record is None else record.token

    def _read_container(self, name: str) -> tuple[dict[str, Any], Suite, KdfParams, bytes, bytes]:
        """container.json of software container ``name``, read with every check of
        FORMAT.md 5 and parsed (5.1); no passphrase needed.

        Raises:
            NotFoundError: no such container.
            ProviderError: unsafe permissions.
            FormatError: the container file is damaged.
        """
        doc = self._read_doc(name)
        try:
            suite, kdf, salt, check = _parse_container(doc, name)
        except (KeyError, TypeError, ValueError, UsageError) as e:
            if isinstance(e, FormatError):
                raise
            path = self.container_dir(name) / "container.json"
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
        record = self._token_record(name, self._read_doc(name))
        if record is not None:
            return Suite.P256, record.exchange_public, record.signature_public
        doc, suite, _, _, _ = self._read_container(name)
        exchange = _unb64(doc["exchange"]["public"], "exchange.public")
        signature = _unb64(doc["signature"]["public"], "signature.public")
        suites.check_public_keys(suite, exchange, signature)
        return suite, exchange, signature

    def old_public_keys(self, name: str) -> tuple[OldKey, ...]:
        """The old key pairs container ``name``'s file lists (FORMAT.md 5.1, 5.1.1
        ``previous``), public halves only, without a passphrase.  Nothing authenticates
        them here: a hint of which keys to ask an unlocked container for, never trust.

        Raises:
            as :meth:`public_keys`.
        """
        doc = self._read_doc(name)
        record = self._token_record(name, doc)
        if record is not None:
            return tuple(record.old_keys())
        doc, suite, _, _, _ = self._read_container(name)
        return tuple(
            OldKey(
                role,
                key_id_for(suite, role, public := _unb64(e["public"], "previous.public")),
                public,
                until,
            )
            for role, e, until in old_entries(doc, _OLD_MEMBERS, name)
        )

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
                flags=HOME_FILE_FLAGS,
                check=lambda st: check_home_file(st, path, "public key file"),
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

    def open(self, name: str, passphrase: bytes) -> Provider:
        """Unlock container ``name`` with ``passphrase`` (a token container: with the
        token's user PIN, UTF-8).

        Raises:
            NotFoundError: no such container (or token, module, or key in the token).
            ProviderError: unsafe permissions (or a failure of the token).
            PassphraseError: wrong passphrase or PIN.
            VerificationError: the container file was tampered with.
            FormatError: the container file is damaged.
        """
        record = self._token_record(name, self._read_doc(name))
        if record is not None:
            opened: pkcs11.TokenContainer = _pkcs11().open_container(
                self.container_dir(name), record, _pin_text(passphrase)
            )
            return opened
        return self.open_software(name, passphrase)

    def open_software(self, name: str, passphrase: bytes) -> SoftwareContainer:
        """Unlock software container ``name`` with ``passphrase``.

        Raises:
            as :meth:`open`.
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
        old = _unseal_old(aead, doc, name, suite)
        return SoftwareContainer(self, doc, keys, exchange, signature, old=old)


#: An old key pair and, for an exchange key, its private key (an old signature key signs
#: nothing: it is opened to authenticate the entry, then dropped).
_OldPrivate = tuple[OldKey, suites.ExchangePrivate | None]


def _unseal_old(aead: AESGCM, doc: dict[str, Any], name: str, suite: Suite) -> list[_OldPrivate]:
    """The old key pairs of ``previous`` (FORMAT.md 5.1), each opened under its binding:
    an entry no one sealed with this passphrase fails like an edited current key.

    Raises:
        VerificationError: an entry does not open (added or changed without the passphrase).
        FormatError: an entry opens but its key is not one the suite accepts, or repeats a
            key of its role.
    """
    out: list[_OldPrivate] = []
    seen = {
        key_id_for(suite, role, _unb64(doc[role.name.lower()]["public"], "public"))
        for role in (KeyRole.EXCHANGE, KeyRole.SIGNATURE)
    }
    for role, entry, until in old_entries(doc, _OLD_MEMBERS, name):
        try:
            public = _unb64(entry["public"], "previous.public")
            sealed = _unb64(entry["sealed"], "previous.sealed")
            raw = aead.decrypt(
                sealed[:12], sealed[12:], _seal_aad(name, role, suite, public, until)
            )
        except (InvalidTag, ValueError):
            raise VerificationError(CONTAINER_EDITED.format(name=name)) from None
        exchange = suites.load_exchange_private(suite, raw) if role is KeyRole.EXCHANGE else None
        key = exchange if exchange is not None else suites.load_signature_private(suite, raw)
        key_id = key_id_for(suite, role, public)
        if suites.public_bytes(key) != public or key_id in seen:
            raise FormatError(f"container {name!r}: a previous key repeats a key or is damaged")
        seen.add(key_id)
        out.append((OldKey(role, key_id, public, until), exchange))
    return out


class SoftwareContainer(ContainerKeys):
    """An unlocked container of the software provider (implements ``Provider``)."""

    def __init__(
        self,
        home: Home,
        doc: dict[str, Any],
        keys: _Keys,
        exchange: suites.ExchangePrivate,
        signature: suites.SignaturePrivate,
        *,
        old: list[_OldPrivate] | None = None,
    ) -> None:
        self._doc = doc
        old = old or []
        super().__init__(
            doc["name"],
            Suite.from_label(doc["suite"]),
            suites.public_bytes(exchange),
            suites.public_bytes(signature),
            tuple(k for k, _ in old),
        )
        self._keys = keys
        self._exchange = exchange
        self._signature = signature
        # Only the old exchange keys are used (to unwrap); an old signature key is kept
        # sealed in the file until forget-old, and signs nothing.
        self._old_exchange = {k.key_id: key for k, key in old if key is not None}
        self._folder = home.container_dir(self._name)
        self._state = homestate.ContainerState(
            self._folder, self._name, self._suite, lambda data: _mac(keys.state, data)
        )

    def __repr__(self) -> str:
        return f"<SoftwareContainer {self._name!r} suite={self._suite.label}>"

    def __reduce__(self) -> Any:
        raise TypeError("an unlocked container cannot be pickled")

    def sign(self, message: bytes) -> bytes:
        return suites.sign(self._signature, message)

    def _unwrap_with(self, key_id: KeyId, wrapped: bytes, context: bytes) -> bytes:
        key = self._exchange if key_id == self._exchange_id else self._old_exchange[key_id]
        return suites.unwrap(key, wrapped, context)

    # -- keys rotate / keys forget-old (FORMAT.md 5.1 previous) ---------------------------

    def rotate_keys(self, roles: tuple[KeyRole, ...], *, now: int) -> tuple[OldKey, ...]:
        """New key pairs for ``roles`` (generated here, sealed under this passphrase); the
        replaced ones move to ``previous``, sealed again under their new binding.  One
        atomic write of container.json: it holds either the old keys or the new ones.

        Raises:
            UsageError: no role, or the old keys kept would exceed MAX_OLD_KEYS.
            ProviderError: the container file could not be written.
        """
        check_old_key_room(self._name, len(self._old), roles)
        bits = getattr(self._exchange, "key_size", suites.DEFAULT_RSA_BITS)
        exchange, signature = suites.generate(self._suite, bits)
        aead = AESGCM(self._keys.seal)
        doc = dict(self._doc)
        previous = list(doc.get("previous", []))
        replaced: list[OldKey] = []
        old_exchange = dict(self._old_exchange)
        for role in roles:
            current = self._exchange if role is KeyRole.EXCHANGE else self._signature
            fresh = exchange if role is KeyRole.EXCHANGE else signature
            public = suites.public_bytes(current)
            old = OldKey(role, key_id_for(self._suite, role, public), public, now)
            previous.append(_sealed_entry(aead, self._name, role, self._suite, current, until=now))
            doc[role.name.lower()] = _sealed_entry(aead, self._name, role, self._suite, fresh)
            replaced.append(old)
            if role is KeyRole.EXCHANGE:
                old_exchange[old.key_id] = self._exchange
        doc["previous"] = previous
        self._write(doc)
        self._old = (*self._old, *replaced)
        self._old_exchange = old_exchange
        if KeyRole.EXCHANGE in roles:
            self._exchange = exchange
            self._set_public(KeyRole.EXCHANGE, suites.public_bytes(exchange))
        if KeyRole.SIGNATURE in roles:
            self._signature = signature
            self._set_public(KeyRole.SIGNATURE, suites.public_bytes(signature))
        return tuple(replaced)

    def forget_old_keys(self) -> tuple[OldKey, ...]:
        """Remove ``previous`` from container.json (one atomic write); returns what it held.

        Raises:
            ProviderError: the container file could not be written.
        """
        old = self._old
        if old:
            self._write({k: v for k, v in self._doc.items() if k != "previous"})
            self._old, self._old_exchange = (), {}
        return old

    def _write(self, doc: dict[str, Any]) -> None:
        """Replace container.json with ``doc`` (atomically: the old file or the new).

        Raises:
            ProviderError: it could not be written.
        """
        try:
            write_atomic(
                self._folder / "container.json", json.dumps(doc, indent=2).encode() + b"\n"
            )
        except OSError as e:
            raise ProviderError(f"cannot write container {self._name!r}: {e.strerror}") from e
        self._doc = doc

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

    def capi_import_key_pair(self, role: KeyRole, key: rsa.RSAPrivateKey, *, force: bool) -> str:
        """``capi import-keypair`` (``CapiKeys``): :meth:`replace_key_pair`.

        Raises:
            as :meth:`replace_key_pair`.
        """
        self.replace_key_pair(role, key, force=force)
        return "sealed at rest"

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
        self._write(doc)
        if role is KeyRole.EXCHANGE:
            self._exchange = key
            self._set_public(role, public)
        else:
            self._signature = key
            self._set_public(role, public)
