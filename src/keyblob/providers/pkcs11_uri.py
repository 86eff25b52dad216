"""RFC 7512 ``pkcs11:`` URIs naming the token (and optionally the key label and the module) of
a PKCS#11 container: text in, a frozen :class:`TokenRef` out.  Pure: no python-pkcs11, no
I/O; the provider (pkcs11.py) does the matching against real tokens.

No well-kept Python library parses these URIs (PyPI has none on its own; the parsers that
exist are private modules of larger projects), so this is a small strict parser of the
grammar of RFC 7512 section 2.3:

    pk11-URI   = "pkcs11:" pk11-path [ "?" pk11-query ]
    pk11-path  = [ pk11-pattr *( ";" pk11-pattr ) ]
    pk11-query = [ pk11-qattr *( "&" pk11-qattr ) ]
    pk11-pchar = unreserved / pk11-res-avail / "&" / pct-encoded
    pk11-qchar = unreserved / pk11-res-avail / "/" / "?" / "|" / pct-encoded
    pk11-res-avail = ":" / "[" / "]" / "@" / "!" / "$" / "'" / "(" / ")" / "*" / "+" /
                     "," / "="

What keyblob does with each attribute, and why:

- ``token``, ``serial``, ``manufacturer``, ``model`` (the token's CK_TOKEN_INFO),
  ``object`` (a key's CKA_LABEL), ``id`` (its CKA_ID, bytes) and ``module-path`` are kept;
  every one that is given narrows the selection, and the provider must honour all of them.
  A URI must give ``token`` or ``serial``.
- ``type`` may be ``private`` or ``public`` (a container's keys are pairs, both halves share
  the label); ``cert``, ``secret-key`` and ``data`` name objects keyblob never uses: refused.
- ``slot-id``, ``slot-description``, ``slot-manufacturer``, ``library-manufacturer``,
  ``library-description``, ``library-version``: refused.  They are selectors; ignoring one
  would widen the match to tokens the URI excludes (fail open), and keyblob picks a token by
  label or serial and its module by path only.
- Unknown attributes in the path (vendor-specific ones included) are refused for the same
  reason: a path attribute only ever narrows the match (p11-kit, likewise, lets a URI with
  an unrecognised path attribute match nothing, never everything).  Vendor attributes in
  the query (names starting ``x-``) are ignored: they are hints to some other consumer and
  select nothing.  Any other unknown query attribute is refused (most likely a typo of
  ``module-path``, which must not silently fall back to another module).
- ``pin-value`` is refused: a PIN in a URI shows in the process list and the shell history.
- ``pin-source`` is refused too: its value is an arbitrary URI (``file:``, or ``|program``
  in some consumers), and keyblob reads a PIN only where docs/CLI.md says (``KEYBLOB_PIN``,
  ``--pin-file``, the prompt), with one set of checks.
- ``module-name`` is refused: searching module directories for a name loads code chosen by
  whatever is installed there; ``module-path`` (absolute) says exactly which file.

Parsing is strict: percent-escapes are ``%`` and two hex digits and decode to UTF-8 (invalid
UTF-8 and control characters are refused), characters outside the grammar (space, ``#``,
non-ASCII) are refused, an attribute given twice is refused, an empty value is refused.
The scheme and the attribute names compare ASCII-case-insensitively (RFC 3986 section 3.1;
RFC 5234 section 2.3 makes the grammar's quoted names case-insensitive).  Error messages
name the attribute and never echo a value.
"""

from __future__ import annotations

import os.path
import string
import unicodedata
from dataclasses import dataclass

from keyblob.errors import UsageError

SCHEME = "pkcs11"
_MAX_URI = 4096  # far over any real token URI; bounds the work on hostile input

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_RES_AVAIL = frozenset(":[]@!$'()*+,=")
_PCHAR = _UNRESERVED | _RES_AVAIL | {"&"}
_QCHAR = _UNRESERVED | _RES_AVAIL | {"/", "?", "|"}
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_HEX = frozenset(string.hexdigits)

#: CK_TOKEN_INFO field sizes (PKCS#11 v2.40 section 3.2): a longer value matches no token.
_TOKEN_INFO_SIZES = {"token": 32, "manufacturer": 32, "serial": 16, "model": 16}
_KEPT_PATH = frozenset({"token", "serial", "manufacturer", "model", "object", "id", "type"})
_KEY_TYPES = frozenset({"private", "public"})
_SELECTORS_REFUSED = frozenset(
    {
        "slot-id",
        "slot-description",
        "slot-manufacturer",
        "library-manufacturer",
        "library-description",
        "library-version",
    }
)
_QUERY_NAMES = frozenset({"pin-value", "pin-source", "module-name", "module-path"})


@dataclass(frozen=True)
class TokenRef:
    """Which token (and optionally which key label and module) a ``pkcs11:`` URI names.

    Every field that is not ``None`` narrows the selection; a caller must honour them all.
    """

    token: str | None = None  # the token label (CK_TOKEN_INFO.label)
    serial: str | None = None  # CK_TOKEN_INFO.serialNumber
    module: str | None = None  # from ``module-path``: an absolute path
    object: str | None = None  # a key label (CKA_LABEL)
    manufacturer: str | None = None  # CK_TOKEN_INFO.manufacturerID
    model: str | None = None  # CK_TOKEN_INFO.model
    id: bytes | None = None  # CKA_ID

    def to_uri(self) -> str:
        """The canonical URI: attributes in field order, every byte outside RFC 3986's
        unreserved set percent-encoded (upper-case hex)."""
        path = [
            f"{name}={_encode(value.encode() if isinstance(value, str) else value)}"
            for name, value in (
                ("token", self.token),
                ("serial", self.serial),
                ("object", self.object),
                ("manufacturer", self.manufacturer),
                ("model", self.model),
                ("id", self.id),
            )
            if value is not None
        ]
        query = "" if self.module is None else f"?module-path={_encode(self.module.encode())}"
        return f"{SCHEME}:{';'.join(path)}{query}"


def _encode(raw: bytes) -> str:
    return "".join(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in raw)


def _decode(text: str, allowed: frozenset[str], name: str) -> bytes:
    """Percent-decode one attribute value, refusing any character outside ``allowed``."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise UsageError(f"pkcs11: URI: bad %-escape in the value of {name}")
            out.append(int(pair, 16))
            i += 3
            continue
        if c not in allowed:
            raise UsageError(f"pkcs11: URI: a character in the value of {name} must be %-encoded")
        out.append(ord(c))
        i += 1
    return bytes(out)


def _text(raw: bytes, name: str) -> str:
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"pkcs11: URI: the value of {name} is not UTF-8") from None
    # Labels end up in one-line messages; a control character would break the line.
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise UsageError(f"pkcs11: URI: the value of {name} holds a control character")
    return value


def _split(component: str, sep: str, where: str) -> dict[str, str]:
    """``name=value`` pairs of one component by lower-cased name; values still encoded."""
    pairs: dict[str, str] = {}
    if not component:
        return pairs
    for attr in component.split(sep):
        name, eq, value = attr.partition("=")
        if not eq or not name:
            raise UsageError(f"pkcs11: URI: the {where} holds an empty or nameless attribute")
        if not set(name) <= _NAME_CHARS:
            raise UsageError(f"pkcs11: URI: bad attribute name in the {where}")
        name = name.lower()  # ASCII only: _NAME_CHARS holds no other letters
        if name in pairs:
            raise UsageError(f"pkcs11: URI: {name} is given twice")
        pairs[name] = value
    return pairs


def parse_pkcs11_uri(text: str) -> TokenRef:
    """Parse an RFC 7512 ``pkcs11:`` URI that names a token.

    Raises:
        UsageError: the text is not a ``pkcs11:`` URI, breaks the grammar, gives an
            attribute twice or empty, names no token (no ``token`` and no ``serial``), or
            uses an attribute keyblob refuses (``pin-value``, ``pin-source``,
            ``module-name``, slot and library attributes, unknown path attributes).
            The message names the attribute and never holds a value.
    """
    if len(text) > _MAX_URI:
        raise UsageError(f"pkcs11: URI longer than {_MAX_URI} characters")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != SCHEME:
        raise UsageError("not a pkcs11: URI (RFC 7512)")
    path, _, query = rest.partition("?")
    path_attrs = _split(path, ";", "path")
    query_attrs = _split(query, "&", "query")

    # The refusals that matter most come first, before any value is decoded.
    if "pin-value" in query_attrs or "pin-value" in path_attrs:
        raise UsageError(
            "pkcs11: URI: pin-value refused: a PIN in a URI shows in the process list and "
            "shell history; use KEYBLOB_PIN or --pin-file instead"
        )
    if "pin-source" in query_attrs:
        raise UsageError(
            "pkcs11: URI: pin-source is not supported; give the PIN with --pin-file or KEYBLOB_PIN"
        )
    if "module-name" in query_attrs:
        raise UsageError(
            "pkcs11: URI: module-name is not supported; give the module's full path "
            "with module-path="
        )

    for name in path_attrs:
        if name in _KEPT_PATH:
            continue
        if name in _SELECTORS_REFUSED:
            raise UsageError(
                f"pkcs11: URI: {name} is not supported; keyblob selects a token by "
                "token= (its label) or serial="
            )
        if name in _QUERY_NAMES:
            raise UsageError(f"pkcs11: URI: {name} belongs in the query, after ?")
        raise UsageError(f"pkcs11: URI: unknown path attribute {name}")
    for name in query_attrs:
        if name not in _QUERY_NAMES and not name.startswith("x-"):
            raise UsageError(f"pkcs11: URI: unknown query attribute {name}")

    values: dict[str, str] = {}
    key_id: bytes | None = None
    for name, encoded in path_attrs.items():
        if not encoded:
            raise UsageError(f"pkcs11: URI: {name} is empty")
        raw = _decode(encoded, _PCHAR, name)
        if name == "id":
            key_id = raw
            continue
        value = _text(raw, name)
        size = _TOKEN_INFO_SIZES.get(name)
        if size is not None and len(raw) > size:
            raise UsageError(f"pkcs11: URI: {name} is longer than the {size} bytes a token holds")
        values[name] = value
    kind = values.pop("type", None)
    if kind is not None and kind.lower() not in _KEY_TYPES:
        raise UsageError("pkcs11: URI: type may only be private or public (a key pair)")

    module: str | None = None
    for name, encoded in query_attrs.items():
        if name != "module-path":
            _decode(encoded, _QCHAR, name)  # an ignored x- attribute still obeys the grammar
            continue
        if not encoded:
            raise UsageError(f"pkcs11: URI: {name} is empty")
        module = _text(_decode(encoded, _QCHAR, name), name)
        if not os.path.isabs(module):
            raise UsageError("pkcs11: URI: module-path must be an absolute path")

    if "token" not in values and "serial" not in values:
        raise UsageError("pkcs11: URI names no token: give token= (its label) or serial=")
    return TokenRef(
        token=values.get("token"),
        serial=values.get("serial"),
        module=module,
        object=values.get("object"),
        manufacturer=values.get("manufacturer"),
        model=values.get("model"),
        id=key_id,
    )
