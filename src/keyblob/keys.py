"""Small frozen value types shared by every layer: suites, session algorithms, key ids and
the opaque session-key handle.

Nothing here does cryptography beyond the key-id rule, one SHA-256 over a public key's
bytes (:func:`key_id_for`, FORMAT.md 1.3), kept here with the key types so that providers and
the trust state name keys without reaching into the wire formats.  The numeric codes are
the ones the wire format uses (docs/FORMAT.md, section "Code points").
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, NoReturn

from keyblob.errors import UsageError

KEY_ID_SIZE = 16


class Suite(enum.IntEnum):
    """The public-key suite of a container, fixed at creation."""

    X25519 = 1  # HPKE X25519/HKDF-SHA256/AES-256-GCM wrap, Ed25519 signatures
    RSA = 2  # RSA-OAEP-SHA256 wrap, RSA-PSS-SHA256 signatures
    PQ = 3  # HPKE MLKEM768-X25519 (X-Wing) wrap, hybrid ML-DSA-65 + Ed25519 signatures
    P256 = 4  # HPKE DHKEM(P-256)/HKDF-SHA256/AES-256-GCM wrap, ECDSA P-256 SHA-256 signatures

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, text: str) -> Suite:
        for suite in cls:
            if suite.label == text:
                return suite
        raise UsageError(f"unknown suite {text!r} (expected x25519, rsa, pq or p256)")


class Algorithm(enum.IntEnum):
    """The symmetric algorithm a session key is for.

    1-3 are keyblob's own (data is encrypted with the C2SP chunked format).  0x10-0x17 are
    CryptoAPI session keys, one code per ALG_ID, kept for CryptEncrypt-compatible data
    (``keyblob capi``); the code records the key's CryptoAPI origin and its ALG_ID.
    """

    AES_256_GCM = 1
    AES_128_GCM = 2
    CHACHA20_POLY1305 = 3
    CAPI_AES_128 = 0x10
    CAPI_AES_192 = 0x11
    CAPI_AES_256 = 0x12
    CAPI_3DES = 0x13
    CAPI_3DES_112 = 0x14
    CAPI_DES = 0x15
    CAPI_RC2 = 0x16
    CAPI_RC4 = 0x17

    @property
    def label(self) -> str:
        return _ALGORITHMS[self][0]

    @property
    def key_sizes(self) -> tuple[int, ...]:
        """The key lengths (bytes) a key of this algorithm may have."""
        return _ALGORITHMS[self][1]

    @property
    def key_size(self) -> int:
        """The length of a newly generated key, in bytes."""
        return _ALGORITHMS[self][2]

    @property
    def capi_alg_id(self) -> int | None:
        """The CryptoAPI ALG_ID of a CryptoAPI session key, else None."""
        return _ALGORITHMS[self][3]

    @property
    def legacy(self) -> bool:
        """DES, 3DES, RC2, RC4: kept to read old data; new keys need an explicit opt-in."""
        return self in _LEGACY

    @classmethod
    def from_label(cls, text: str) -> Algorithm:
        for algorithm, row in _ALGORITHMS.items():
            if row[0] == text:
                return algorithm
        choices = ", ".join(row[0] for row in _ALGORITHMS.values())
        raise UsageError(f"unknown algorithm {text!r} (expected one of {choices})")

    @classmethod
    def for_capi(cls, alg_id: int) -> Algorithm:
        """The algorithm that stores a CryptoAPI key of ``alg_id``.

        Raises:
            UsageError: keyblob stores no CryptoAPI session key of that ALG_ID.
        """
        for algorithm, row in _ALGORITHMS.items():
            if row[3] == alg_id:
                return algorithm
        supported = ", ".join(row[0] for row in _ALGORITHMS.values() if row[3] is not None)
        raise UsageError(
            f"keyblob cannot store a CryptoAPI key of ALG_ID 0x{alg_id:08x} (it stores {supported})"
        )


_RC_SIZES = tuple(range(5, 17))  # 40 to 128 bits
# label, key sizes, generated size, CryptoAPI ALG_ID
_ALGORITHMS: dict[Algorithm, tuple[str, tuple[int, ...], int, int | None]] = {
    Algorithm.AES_256_GCM: ("aes-256-gcm", (32,), 32, None),
    Algorithm.AES_128_GCM: ("aes-128-gcm", (16,), 16, None),
    Algorithm.CHACHA20_POLY1305: ("chacha20-poly1305", (32,), 32, None),
    Algorithm.CAPI_AES_128: ("capi-aes-128", (16,), 16, 0x660E),
    Algorithm.CAPI_AES_192: ("capi-aes-192", (24,), 24, 0x660F),
    Algorithm.CAPI_AES_256: ("capi-aes-256", (32,), 32, 0x6610),
    Algorithm.CAPI_3DES: ("capi-3des", (24,), 24, 0x6603),
    Algorithm.CAPI_3DES_112: ("capi-3des-112", (16,), 16, 0x6609),
    Algorithm.CAPI_DES: ("capi-des", (8,), 8, 0x6601),
    # Windows accepts RC2 keys of up to 64 bytes through a SIMPLEBLOB (docs/MSCAPI.md).
    Algorithm.CAPI_RC2: ("capi-rc2", tuple(range(5, 65)), 16, 0x6602),
    Algorithm.CAPI_RC4: ("capi-rc4", _RC_SIZES, 16, 0x6801),
}
_LEGACY = frozenset(
    {
        Algorithm.CAPI_3DES,
        Algorithm.CAPI_3DES_112,
        Algorithm.CAPI_DES,
        Algorithm.CAPI_RC2,
        Algorithm.CAPI_RC4,
    }
)


class KeyRole(enum.IntEnum):
    """Which key pair of a container a public key belongs to."""

    EXCHANGE = 1
    SIGNATURE = 2

    @property
    def prefix(self) -> str:
        return "kx" if self is KeyRole.EXCHANGE else "sg"


#: FORMAT.md 1.5: a container's label is 1 to 200 bytes of UTF-8.
LABEL_MAX = 200
#: Code points a label must not hold (FORMAT.md 1.5): C0 controls, DEL and C1 controls;
#: the invisible and bidirectional formatting characters that make two labels look alike or
#: reorder what is shown (zero-width space/joiners, LRM/RLM, LRE..RLO, word joiner and
#: invisible operators, LRI..PDI, BOM); the line and paragraph separators.  A fixed list,
#: not Unicode categories, so that every reader refuses the same labels whatever its
#: Unicode version.
_LABEL_REFUSED = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def check_label(label: str) -> str:
    """Return ``label`` if it is a valid container label (FORMAT.md 1.5), else raise.

    A label is what people call a container (``Alice Martin <alice@example.com>``): 1 to 200
    bytes of UTF-8, in NFC, no control, invisible or bidirectional formatting character, no
    space at either end.  Text typed by a person goes through :func:`label_from_text` first.

    Raises:
        UsageError: anything else; the message says which rule.
    """
    if not isinstance(label, str):
        raise UsageError("a label is text")
    try:
        size = len(label.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        raise UsageError("invalid label: not valid Unicode text") from None
    if not 1 <= size <= LABEL_MAX:
        raise UsageError(f"invalid label: must be 1 to {LABEL_MAX} bytes of UTF-8 (it is {size})")
    found = _LABEL_REFUSED.search(label)
    if found is not None:
        raise UsageError(
            f"invalid label: it holds the control or formatting character "
            f"U+{ord(found.group()):04X}, which a label must not hold"
        )
    if label[0] == " " or label[-1] == " ":
        raise UsageError("invalid label: it must not begin or end with a space")
    if not unicodedata.is_normalized("NFC", label):
        raise UsageError("invalid label: not in Unicode normalization form NFC")
    return label


def label_from_text(text: str) -> str:
    """A label from text a person typed: NFC-normalized, then checked (:func:`check_label`).

    Raises:
        UsageError: the text is not a valid label once normalized.
    """
    if not isinstance(text, str):
        raise UsageError("a label is text")
    return check_label(unicodedata.normalize("NFC", text))


@dataclass(frozen=True, order=True)
class KeyId:
    """A 16-byte identifier: random for session keys, a digest for public keys."""

    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes) or len(self.value) != KEY_ID_SIZE:
            raise UsageError(f"a key id is {KEY_ID_SIZE} bytes")

    @property
    def hex(self) -> str:
        return self.value.hex()

    @property
    def short(self) -> str:
        """The first 8 hex digits, for people; the full id is in ``hex``."""
        return self.value.hex()[:8]

    @classmethod
    def from_hex(cls, text: str) -> KeyId:
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise UsageError(f"not a key id: {text!r} (expected 32 hex digits)") from None

    def __str__(self) -> str:
        return self.hex


KEY_ID_LABEL = b"keyblob/v1/key-id\x00"


def key_id_for(suite: Suite, role: KeyRole, public_bytes: bytes) -> KeyId:
    """The id of a public key (FORMAT.md 1.3): SHA-256(label || u8 suite || u8 role || key
    bytes), its first 16 bytes."""
    digest = hashlib.sha256(KEY_ID_LABEL + bytes((suite, role)) + public_bytes).digest()
    return KeyId(digest[:KEY_ID_SIZE])


_HANDLE_TOKEN = object()


class SessionKey:
    """An opaque session key, as CryptImportKey hands back an HCRYPTKEY.

    Its repr shows only public metadata, it refuses pickling and copying, and its bytes come
    out only through :meth:`unsafe_raw_bytes`.  Built by keyblob itself, never directly.
    """

    __slots__ = ("_key", "algorithm", "created", "generation", "key_id", "name")

    name: str
    key_id: KeyId
    generation: int
    algorithm: Algorithm
    created: int
    _key: bytes

    def __init__(
        self,
        token: object,
        *,
        name: str,
        key_id: KeyId,
        generation: int,
        algorithm: Algorithm,
        created: int,
        key: bytes,
    ) -> None:
        if token is not _HANDLE_TOKEN:
            raise TypeError("SessionKey is made by keyblob (generate, load, import), not directly")
        if len(key) not in algorithm.key_sizes:
            raise UsageError(f"a {algorithm.label} key cannot be {len(key)} bytes long")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "key_id", key_id)
        object.__setattr__(self, "generation", generation)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "created", created)
        object.__setattr__(self, "_key", bytes(key))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("SessionKey is immutable")

    def __repr__(self) -> str:
        return (
            f"<SessionKey {self.name!r} generation={self.generation} "
            f"algorithm={self.algorithm.label} key_id={self.key_id.short}>"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SessionKey cannot be pickled: store it as a signed key blob")

    def __copy__(self) -> NoReturn:
        raise TypeError("a SessionKey cannot be copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("a SessionKey cannot be copied")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionKey):
            return NotImplemented
        return self.key_id == other.key_id and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def unsafe_raw_bytes(self) -> bytes:
        """The key bytes themselves.  Whoever calls this takes over keeping them secret."""
        return self._key


def _make_session_key(
    *, name: str, key_id: KeyId, generation: int, algorithm: Algorithm, created: int, key: bytes
) -> SessionKey:
    """Build a handle; for keyblob's own recipes only."""
    return SessionKey(
        _HANDLE_TOKEN,
        name=name,
        key_id=key_id,
        generation=generation,
        algorithm=algorithm,
        created=created,
        key=key,
    )


NAME_MAX = 128
#: Largest generation, in every format and store: generations are signed 64-bit integers in
#: SQL stores, so all of keyblob uses the same range, 1 to 2**63 - 1.
MAX_GENERATION = 2**63 - 1
#: Largest revision of a (name, generation): a u32 in the blob header (FORMAT.md 2), and the
#: range of the state's revision marks (5.2.8), 1 to 2**32 - 1 (0: never revised).
MAX_REVISION = 2**32 - 1
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid key or container name, else raise UsageError.

    Names are 1 to 128 characters from ``a-z 0-9 . _ -`` starting with a letter or digit:
    safe as a file name on every OS (no separators, no dot-files, no case folding issues).
    """
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        raise UsageError(f"invalid name: must be 1 to {NAME_MAX} characters")
    if _NAME.fullmatch(name) is None:
        raise UsageError(
            f"invalid name {name!r}: use a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name
