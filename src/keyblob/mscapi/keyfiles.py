"""RSA key files in every format a CryptoAPI migration meets: the library behind
``keyblob capi convert``.

Reads PEM (PKCS#1, PKCS#8, encrypted PKCS#8, SubjectPublicKeyInfo), DER (the same
structures), CryptoAPI PUBLICKEYBLOB / PRIVATEKEYBLOB and .NET's ``<RSAKeyValue>`` XML
(``RSA.ToXmlString``), detecting which.  Writes PEM as ``openssl pkey`` does and DER with
the same structures (PKCS#8 / SubjectPublicKeyInfo), the blobs as CryptExportKey does, and
XML exactly as ``ToXmlString`` does.

Every failure is a keyblob error with a one-line message naming the format and where it
broke; no message ever contains bytes of the input, which may be a private key.

.NET's XML, as implemented here:

- Written: ``<RSAKeyValue>`` then ``Modulus``, ``Exponent``, ``P``, ``Q``, ``DP``, ``DQ``,
  ``InverseQ``, ``D``; no XML declaration, no whitespace, base64 without line breaks.
  ``Modulus`` and ``Exponent`` are minimal big-endian; ``P`` to ``InverseQ`` are left-padded
  with zeros to half the modulus length, rounded up, and ``D`` to the modulus length, because
  .NET's ``ImportParameters`` (hence ``FromXmlString``) rejects other lengths.
- Read: the elements in any order (as .NET reads them), each exactly once, no others, no
  attributes, no DTD.  Field lengths are not required to follow .NET's padding, since other
  tools write minimal integers; the values are checked instead (CRT values against ``D``,
  ``P`` and ``Q``, then OpenSSL's key check).  Whitespace around and inside the base64 text
  is ignored, as ``Convert.FromBase64String`` ignores it; anything else outside the base64
  alphabet is refused.  UTF-8 (with or without BOM) and UTF-16 with BOM (what Windows
  PowerShell's ``>`` writes) are read.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from keyblob.errors import (
    FormatError,
    PassphraseError,
    PassphraseRequired,
    UnsupportedError,
    UsageError,
)
from keyblob.mscapi.algids import AlgId
from keyblob.mscapi.blobs import (
    BlobType,
    PrivateKeyBlob,
    PublicKeyBlob,
    crt_mismatch,
    looks_like_capi_blob,
)
from keyblob.mscapi.keysize import RsaUse, check_rsa_size

#: The largest key file read at all: a 16384-bit private key in PEM is about 13 KiB.
MAX_KEY_FILE_SIZE = 1 << 20
#: The largest ``<RSAKeyValue>`` document read (a 16384-bit private key is about 11 KiB).
MAX_XML_SIZE = 64 * 1024
#: The largest modulus read from XML (OpenSSL's own limit for RSA operations).
MAX_XML_BITS = 16384
#: The most PBKDF2 (or PKCS#12 KDF) iterations an encrypted PKCS#8 key may ask for: about
#: 1 to 5 seconds, which OpenSSL runs without a way to interrupt it.  Real files use 2048
#: (OpenSSL's default), 2000 to 100000 (Windows, .NET, Java), 600000 at most (OWASP 2023).
MAX_KDF_ITERATIONS = 5_000_000
#: scrypt's memory, 128 * N * r bytes: 16 MiB is OpenSSL's default (N 16384, r 8).
MAX_SCRYPT_MEMORY = 256 << 20
#: scrypt's work, N * r * p: 32 times OpenSSL's default, a few seconds.
MAX_SCRYPT_WORK = 1 << 22

_XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
_PUBLIC_ELEMENTS = ("Modulus", "Exponent")
_PRIVATE_ELEMENTS = ("P", "Q", "DP", "DQ", "InverseQ", "D")
_XML_ORDER = _PUBLIC_ELEMENTS + _PRIVATE_ELEMENTS
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_B64_SPACE = re.compile(r"[ \t\r\n]+")
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

RSAKey = rsa.RSAPrivateKey | rsa.RSAPublicKey
_PrivateLoader = Callable[[bytes | None], PrivateKeyTypes]


class KeyFormat(enum.Enum):
    """The key file formats ``convert`` reads and writes."""

    PEM = "pem"
    DER = "der"
    MSBLOB = "msblob"
    XML = "xml"


@dataclass(frozen=True)
class LoadedKey:
    """An RSA key read from a file, with what it was read from.

    ``detail`` names the structure (``"PKCS#8"``, ``"PRIVATEKEYBLOB (CALG_RSA_KEYX)"``...);
    ``alg_id`` is the blob's ``aiKeyAlg`` for MSBLOB input and ``None`` otherwise.
    """

    key: rsa.RSAPrivateKey | rsa.RSAPublicKey = field(repr=False)
    format: KeyFormat
    detail: str
    alg_id: AlgId | None = None

    @property
    def private(self) -> bool:
        """Whether the key has its private part (so it is written 0600, never to a terminal)."""
        return isinstance(self.key, rsa.RSAPrivateKey)


# --- reading --------------------------------------------------------------------------------


def load_rsa_key(data: bytes, *, passphrase: bytes | None = None) -> LoadedKey:
    """Detect the format of ``data`` and read the RSA key in it.

    Args:
        data: the whole file.
        passphrase: decrypts an encrypted PKCS#8 key (or an OpenSSL-encrypted PKCS#1 PEM);
            ignored for unencrypted input.

    Raises:
        FormatError: no format matched, or the recognised format is damaged; the one-line
            message names the format and where it broke, never the input's bytes.
        UnsupportedError: a well-formed key that is not RSA (EC, Ed25519, DSA...), a
            certificate, or an encryption scheme ``cryptography`` does not implement.
        PassphraseRequired: the key is encrypted and no passphrase was given (a UsageError).
        PassphraseError: the passphrase does not decrypt the key.
    """
    data = bytes(data)
    if not data:
        raise FormatError("key file: empty")
    if len(data) > MAX_KEY_FILE_SIZE:
        raise FormatError(f"key file: {len(data)} bytes is over {MAX_KEY_FILE_SIZE}: not a key")
    if looks_like_capi_blob(data):
        return _load_blob(data)
    # A well-formed DER SEQUENCE is taken as DER before looking for a PEM header, which
    # random bytes inside a DER key could contain.
    if data[0] == 0x30 and _der_spans(data):
        return _load_der(data, passphrase)
    if _PEM_BEGIN.search(data):
        return _load_pem(data, passphrase)
    if _looks_like_xml(data):
        return _load_xml(data)
    if data[0] == 0x30:
        return _load_der(data, passphrase)
    raise FormatError(
        f"not PEM, DER, a CryptoAPI key blob or .NET RSAKeyValue XML: no format matches "
        f"these {len(data)} bytes"
    )


def _load_blob(data: bytes) -> LoadedKey:
    btype = data[0]
    if btype == BlobType.PRIVATEKEYBLOB:
        priv = PrivateKeyBlob.from_bytes(data)
        alg = priv.alg_id
        key: RSAKey = priv.to_private_key()
        name = "PRIVATEKEYBLOB"
    elif btype == BlobType.PUBLICKEYBLOB:
        pub = PublicKeyBlob.from_bytes(data)
        alg = pub.alg_id
        key = pub.to_public_key()
        name = "PUBLICKEYBLOB"
    else:
        raise FormatError(
            f"CryptoAPI blob: bType at offset 0: {BlobType(btype).name} is not an RSA key "
            "(expected PUBLICKEYBLOB or PRIVATEKEYBLOB)"
        )
    return LoadedKey(key, KeyFormat.MSBLOB, f"{name} ({alg.calg_name})", alg)


# PEM labels and what they hold.  "PRIVATE KEY" labels other than these are keys of other
# algorithms (EC, DSA, OPENSSH), reported as unsupported after cryptography identifies them.
_PEM_DETAIL = {
    b"RSA PRIVATE KEY": "PKCS#1",
    b"PRIVATE KEY": "PKCS#8",
    b"ENCRYPTED PRIVATE KEY": "encrypted PKCS#8",
    b"RSA PUBLIC KEY": "PKCS#1",
    b"PUBLIC KEY": "SubjectPublicKeyInfo",
}


def _load_pem(data: bytes, passphrase: bytes | None) -> LoadedKey:
    # A file may hold several blocks (a key and its certificate, a key pair): the first
    # private key block wins, else the first public key block, so that converting such a
    # file gives the most the user can have.
    labels = [(m.group(1), m.start()) for m in _PEM_BEGIN.finditer(data)]
    chosen = next((x for x in labels if x[0].endswith(b"PRIVATE KEY")), None) or next(
        (x for x in labels if x[0].endswith(b"PUBLIC KEY")), None
    )
    if chosen is None:
        first = labels[0][0].decode("ascii")
        if "CERTIFICATE" in first:
            raise UnsupportedError(
                f"PEM: a {first} holds no private key; extract its public key first "
                "(openssl x509 -pubkey -noout)"
            )
        raise UnsupportedError(f"PEM: a {first} block is not an RSA key")
    label, start = chosen
    end_marker = b"-----END " + label + b"-----"
    end = data.find(end_marker, start)
    if end < 0:
        raise FormatError(f"PEM {label.decode('ascii')}: no END line: truncated")
    block = data[start : end + len(end_marker)]
    name = label.decode("ascii")
    detail = _PEM_DETAIL.get(label)
    if label.endswith(b"PUBLIC KEY"):
        key = _load_public(lambda: serialization.load_pem_public_key(block), f"PEM {name}")
        return LoadedKey(key, KeyFormat.PEM, detail or name)
    legacy_encrypted = b"Proc-Type: 4,ENCRYPTED" in block
    encrypted = label == b"ENCRYPTED PRIVATE KEY" or legacy_encrypted
    if legacy_encrypted:
        # OpenSSL's legacy encryption (DEK-Info) derives its key with one MD5: no bound needed.
        detail = f"{detail or name}, encrypted (OpenSSL legacy PEM)"
    if label == b"ENCRYPTED PRIVATE KEY":
        # Even under legacy headers (cryptography then tries the legacy scheme, today): the
        # contents are an EncryptedPrivateKeyInfo, bounded whatever reads them.
        check_pkcs8_encryption_cost(_pem_body(block, name))
    key = _load_private(
        lambda pw: serialization.load_pem_private_key(block, pw),
        f"PEM {name}",
        encrypted=encrypted,
        passphrase=passphrase,
    )
    return LoadedKey(key, KeyFormat.PEM, detail or name)


def _pem_body(block: bytes, name: str) -> bytes:
    """The DER inside one PEM block, without its BEGIN/END lines and any RFC 1421 headers
    (lines with a colon; base64 has none)."""
    lines = [line.strip() for line in block.splitlines()[1:-1] if b":" not in line]
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"PEM {name}: the base64 inside does not decode") from None


def _load_public(loader: Callable[[], object], what: str) -> RSAKey:
    """Run a cryptography public key loader and translate its exceptions, once."""
    try:
        loaded = loader()
    except UnsupportedAlgorithm:
        raise UnsupportedError(f"{what}: an algorithm keyblob does not read") from None
    except ValueError:
        raise FormatError(f"{what}: the key inside does not parse") from None
    return _only_rsa(loaded, what)


def _load_private(
    loader: _PrivateLoader,
    what: str,
    *,
    encrypted: bool,
    passphrase: bytes | None,
) -> RSAKey:
    """Run a cryptography private key loader and translate its exceptions, once."""
    if encrypted and passphrase is None:
        raise PassphraseRequired(f"the key ({what}) is encrypted: give --passphrase-file")
    try:
        loaded = loader(passphrase if encrypted else None)
    except UnsupportedAlgorithm:
        raise UnsupportedError(
            f"{what}: an algorithm or encryption scheme keyblob does not read"
        ) from None
    except TypeError:
        # cryptography raises TypeError when the structure says "encrypted" but the caller
        # did not (a label or header that disagrees with the contents).
        raise FormatError(f"{what}: encrypted contents under an unencrypted label") from None
    except ValueError:
        if encrypted:
            raise PassphraseError(
                f"the passphrase does not decrypt the key ({what}), or the key is damaged"
            ) from None
        raise FormatError(f"{what}: the key inside does not parse") from None
    return _only_rsa(loaded, what)


def _only_rsa(key: object, what: str) -> RSAKey:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return key
    raise UnsupportedError(f"{what}: {_describe_key(key)}, not an RSA key")


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC key ({key.curve.name})"
    kinds: tuple[tuple[tuple[type, ...], str], ...] = (
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "an Ed25519 key"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448 key"),
        ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "an X25519 key"),
        ((x448.X448PrivateKey, x448.X448PublicKey), "an X448 key"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA key"),
    )
    for types, name in kinds:
        if isinstance(key, types):
            return name
    return f"a {type(key).__name__}"


# --- DER --------------------------------------------------------------------------------------


def _der_header(data: bytes, at: int, what: str) -> tuple[int, int, int]:
    """(tag, content offset, content length) of the DER element at ``at``, bounds-checked."""
    if at + 2 > len(data):
        raise FormatError(f"DER {what} at offset {at}: truncated (no tag and length)")
    tag, first = data[at], data[at + 1]
    pos = at + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # 0x80 is BER's indefinite length, not DER; four length bytes are 4 GiB, more than
        # any key file this reads.
        if count == 0 or count > 4:
            raise FormatError(f"DER {what} at offset {at}: not a DER length")
        if pos + count > len(data):
            raise FormatError(f"DER {what} at offset {at}: truncated (length)")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise FormatError(
            f"DER {what} at offset {at}: truncated (needs {pos + length - at} bytes, "
            f"has {len(data) - at})"
        )
    return tag, pos, length


def _der_spans(data: bytes) -> bool:
    """Whether ``data`` is exactly one DER element (its length covers all of it)."""
    try:
        _, pos, length = _der_header(data, 0, "SEQUENCE")
    except FormatError:
        return False
    return pos + length == len(data)


def _der_kind(data: bytes) -> str:
    """Which structure a DER key file holds, from the tags of the outer SEQUENCE's children.

    Done before cryptography sees the bytes so that a damaged file gets a message with an
    offset, and so that ``detail`` and the encrypted case are known.
    """
    tag, pos, length = _der_header(data, 0, "SEQUENCE")
    if tag != 0x30:
        raise FormatError("DER at offset 0: not a SEQUENCE")
    end = pos + length
    if end != len(data):
        raise FormatError(f"DER at offset {end}: {len(data) - end} trailing bytes")
    tags: list[int] = []
    while pos < end:
        child, cpos, clen = _der_header(data, pos, f"element {len(tags) + 1}")
        if cpos + clen > end:
            raise FormatError(f"DER element {len(tags) + 1} at offset {pos}: overruns its SEQUENCE")
        tags.append(child)
        pos = cpos + clen
    if len(tags) >= 9 and all(t == 0x02 for t in tags[:9]):
        return "PKCS#1 private"
    if tags == [0x02, 0x02]:
        return "PKCS#1 public"
    if tags[:3] == [0x02, 0x30, 0x04]:
        return "PKCS#8"
    if tags == [0x30, 0x04]:
        return "encrypted PKCS#8"
    if tags == [0x30, 0x03]:
        return "SubjectPublicKeyInfo"
    if tags == [0x30, 0x30, 0x03]:
        raise UnsupportedError(
            "DER: an X.509 certificate holds no private key; extract its public key first "
            "(openssl x509 -inform DER -pubkey -noout)"
        )
    raise FormatError(
        f"DER: a SEQUENCE that is not PKCS#1, PKCS#8 or SubjectPublicKeyInfo ({len(tags)} elements)"
    )


def _load_der(data: bytes, passphrase: bytes | None) -> LoadedKey:
    kind = _der_kind(data)
    if kind == "encrypted PKCS#8":
        check_pkcs8_encryption_cost(data)
    if kind in ("PKCS#1 public", "SubjectPublicKeyInfo"):
        key = _load_public(lambda: serialization.load_der_public_key(data), f"DER {kind}")
        return LoadedKey(key, KeyFormat.DER, "PKCS#1" if kind == "PKCS#1 public" else kind)
    key = _load_private(
        lambda pw: serialization.load_der_private_key(data, pw),
        f"DER {kind}",
        encrypted=kind == "encrypted PKCS#8",
        passphrase=passphrase,
    )
    return LoadedKey(key, KeyFormat.DER, "PKCS#1" if kind == "PKCS#1 private" else kind)


# --- the cost of an encrypted PKCS#8 key, read before any passphrase is tried -------------

# DER contents of the OIDs of the schemes cryptography decrypts (RFC 8018, RFC 7914, RFC 7292).
_OID_PBES2 = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_OID_SCRYPT = bytes.fromhex("2b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11
_OID_PKCS12_PBE = {
    bytes.fromhex("2a864886f70d010c0103"),  # pbeWithSHAAnd3-KeyTripleDES-CBC
    bytes.fromhex("2a864886f70d010c0106"),  # pbeWithSHAAnd40BitRC2-CBC
}
_COST_HINT = (
    "if the file is yours, re-encrypt it with fewer iterations (openssl pkcs8 -topk8 -iter "
    "600000), or decrypt it with openssl and convert the result",
)


#: One DER element: (tag, offset of the element, offset of its contents, contents length).
_Element = tuple[int, int, int, int]


def _der_children(data: bytes, at: int, what: str, tags: bytes) -> list[_Element]:
    """The elements of the SEQUENCE at ``at``, whose first tags must be ``tags``."""
    tag, pos, length = _der_header(data, at, what)
    if tag != 0x30:
        raise FormatError(f"DER {what} at offset {at}: not a SEQUENCE")
    end = pos + length
    children: list[_Element] = []
    while pos < end:
        child, cpos, clen = _der_header(data, pos, what)
        if cpos + clen > end:
            raise FormatError(f"DER {what} at offset {pos}: overruns its SEQUENCE")
        children.append((child, pos, cpos, clen))
        pos = cpos + clen
    if bytes(c[0] for c in children[: len(tags)]) != tags:
        raise FormatError(f"DER {what} at offset {at}: not the structure it must have")
    return children


def _der_contents(data: bytes, element: _Element) -> bytes:
    return data[element[2] : element[2] + element[3]]


def _der_cost(data: bytes, element: _Element, what: str) -> int:
    """A cost parameter: a non-negative DER INTEGER, minimally encoded, of at most 64 bits
    (the tag is checked by the caller).

    Every bound is far below 2^64, so a longer count is refused as over them without being
    turned into a number: a message naming a 3000-byte count would need a decimal string
    Python refuses to make (over 4300 digits), and no message may be a traceback.
    """
    raw = _der_contents(data, element)
    # Negative, or a leading zero byte that is not needed: not the one DER encoding.
    if not raw or raw[0] & 0x80 or (len(raw) > 1 and raw[:2] < b"\x00\x80"):
        raise FormatError(f"DER {what} at offset {element[1]}: not a non-negative DER INTEGER")
    if len(raw) > 9 or (len(raw) == 9 and raw[0] != 0):
        raise UnsupportedError(
            f"encrypted PKCS#8: {what} at offset {element[1]} is a {len(raw)}-byte integer, "
            f"over keyblob's bounds (64 bits at most)",
            hints=_COST_HINT,
        )
    return int.from_bytes(raw, "big")


def check_pkcs8_encryption_cost(der: bytes) -> None:
    """Refuse an EncryptedPrivateKeyInfo whose key derivation would cost more than the
    bounds (``MAX_KDF_ITERATIONS``, ``MAX_SCRYPT_MEMORY``, ``MAX_SCRYPT_WORK``).

    OpenSSL derives the key without any way to interrupt it (Ctrl-C waits), so a file asking
    for 2^31 iterations would hold a command for many minutes.  The parameters are therefore
    read first, by a strict walk of just the AlgorithmIdentifier (RFC 5958, RFC 8018, RFC
    7914, RFC 7292), before any passphrase is asked for or tried.  Only the schemes
    ``cryptography`` decrypts pass: an unknown one is refused here, so none goes unbounded.

    Raises:
        FormatError: the AlgorithmIdentifier does not parse.
        UnsupportedError: an encryption scheme this does not know, or a cost over the
            bounds (the message names the number and the bound).
    """
    outer = _der_children(der, 0, "EncryptedPrivateKeyInfo", b"\x30\x04")
    algorithm = _der_children(der, outer[0][1], "encryptionAlgorithm", b"\x06\x30")
    oid = _der_contents(der, algorithm[0])
    if oid in _OID_PKCS12_PBE:
        params = _der_children(der, algorithm[1][1], "pkcs-12PbeParams", b"\x04\x02")
        _check_iterations(_der_cost(der, params[1], "iterations"), "PKCS#12 KDF")
        return
    if oid != _OID_PBES2:
        raise UnsupportedError("encrypted PKCS#8: an encryption scheme keyblob does not read")
    pbes2 = _der_children(der, algorithm[1][1], "PBES2-params", b"\x30\x30")
    kdf = _der_children(der, pbes2[0][1], "keyDerivationFunc", b"\x06\x30")
    kdf_oid = _der_contents(der, kdf[0])
    if kdf_oid == _OID_PBKDF2:
        params = _der_children(der, kdf[1][1], "PBKDF2-params", b"\x04\x02")
        _check_iterations(_der_cost(der, params[1], "iterationCount"), "PBKDF2")
    elif kdf_oid == _OID_SCRYPT:
        params = _der_children(der, kdf[1][1], "scrypt-params", b"\x04\x02\x02\x02")
        n, r, p = (
            _der_cost(der, params[i], f"scrypt {x}") for i, x in ((1, "N"), (2, "r"), (3, "p"))
        )
        if 128 * n * r > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
            raise UnsupportedError(
                f"encrypted PKCS#8: scrypt with N={n}, r={r}, p={p} is over keyblob's bounds "
                f"(128*N*r at most {MAX_SCRYPT_MEMORY} bytes, N*r*p at most {MAX_SCRYPT_WORK})",
                hints=_COST_HINT,
            )
    else:
        raise UnsupportedError("encrypted PKCS#8: a key derivation keyblob does not read")


def _check_iterations(count: int, kdf: str) -> None:
    if count > MAX_KDF_ITERATIONS:
        raise UnsupportedError(
            f"encrypted PKCS#8: {count} {kdf} iterations is over keyblob's bound of "
            f"{MAX_KDF_ITERATIONS}",
            hints=_COST_HINT,
        )


# --- XML --------------------------------------------------------------------------------------


def _looks_like_xml(data: bytes) -> bool:
    if data.startswith(_UTF16_BOMS):
        return True
    return data.removeprefix(_UTF8_BOM).lstrip(b" \t\r\n").startswith(b"<")


def _xml_fail(problem: str) -> FormatError:
    return FormatError(f"RSAKeyValue XML: {problem}")


def _decode_xml(data: bytes) -> str:
    if len(data) > MAX_XML_SIZE:
        raise _xml_fail(f"{len(data)} bytes is over the {MAX_XML_SIZE}-byte limit")
    try:
        if data.startswith(_UTF16_BOMS):
            return data.decode("utf-16")
        return data.removeprefix(_UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _xml_fail(f"offset {e.start}: not UTF-8 (or UTF-16 with a BOM)") from None


def _load_xml(data: bytes) -> LoadedKey:
    text = _decode_xml(data)
    # No DTD of any kind: entity expansion ("billion laughs") and external entities are
    # refused before the parser sees the text, whatever expat's own limits are.  Comments
    # ("<!--") are harmless and kept readable; CDATA and declarations are not .NET's output.
    for m in re.finditer(r"<!", text):
        if not text.startswith("<!--", m.start()):
            line = text.count("\n", 0, m.start()) + 1
            raise _xml_fail(f"line {line}: a DOCTYPE, ENTITY or CDATA section is refused")
    parser = ET.XMLParser()  # noqa: S314 - no DTD can reach it (checked above)
    try:
        parser.feed(text)
        root = parser.close()
    except ET.ParseError as err:
        line, column = err.position
        raise _xml_fail(f"line {line}, column {column}: not well-formed") from None
    ns = ""
    if root.tag == f"{{{_XMLDSIG_NS}}}RSAKeyValue":
        ns = f"{{{_XMLDSIG_NS}}}"  # the XML-DSig KeyInfo form of the same element
    elif root.tag != "RSAKeyValue":
        raise _xml_fail(f"the root element is not <RSAKeyValue> but <{_tag_name(root.tag)}>")
    if root.attrib:
        raise _xml_fail("<RSAKeyValue> has attributes")
    if (root.text or "").strip():
        raise _xml_fail("<RSAKeyValue> holds text outside its elements")
    values: dict[str, bytes] = {}
    for child in root:
        name = child.tag[len(ns) :] if ns and child.tag.startswith(ns) else child.tag
        if not isinstance(name, str) or name not in _XML_ORDER:
            raise _xml_fail(f"unknown element <{_tag_name(child.tag)}>")
        if name in values:
            raise _xml_fail(f"element <{name}> appears twice")
        if child.attrib:
            raise _xml_fail(f"<{name}> has attributes")
        if len(child):
            raise _xml_fail(f"<{name}> holds elements")
        if (child.tail or "").strip():
            raise _xml_fail(f"text after <{name}>")
        values[name] = _b64_field(name, child.text or "")
    for name in _PUBLIC_ELEMENTS:
        if name not in values:
            raise _xml_fail(f"element <{name}> is missing")
    present = [n for n in _PRIVATE_ELEMENTS if n in values]
    if present:
        missing = [n for n in _PRIVATE_ELEMENTS if n not in values]
        if missing:
            raise _xml_fail(f"<{present[0]}> is present but <{missing[0]}> is missing")
    ints = {name: int.from_bytes(raw, "big") for name, raw in values.items()}
    n, e = ints["Modulus"], ints["Exponent"]
    if not 0 < n.bit_length() <= MAX_XML_BITS or n % 2 == 0:
        raise _xml_fail(f"<Modulus> is not an odd RSA modulus of at most {MAX_XML_BITS} bits")
    if e < 3 or e % 2 == 0 or e >= n:
        raise _xml_fail("<Exponent> is not an odd public exponent of at least 3")
    public = rsa.RSAPublicNumbers(e, n)
    if not present:
        try:
            return LoadedKey(public.public_key(), KeyFormat.XML, "RSAKeyValue (public)")
        except ValueError:
            raise _xml_fail("<Modulus> and <Exponent> are not a usable RSA key") from None
    key = _xml_private_key(public, ints)
    return LoadedKey(key, KeyFormat.XML, "RSAKeyValue (private)")


def _tag_name(tag: object) -> str:
    """An element name for a message: bounded, and only name characters."""
    name = str(tag).rpartition("}")[2]
    return name[:40] if re.fullmatch(r"[A-Za-z_][\w.-]*", name) else "?"


def _b64_field(name: str, text: str) -> bytes:
    compact = _B64_SPACE.sub("", text)
    if not compact:
        raise _xml_fail(f"<{name}> is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _xml_fail(f"<{name}>: not valid base64") from None


_XML_CRT_PROBLEMS = {
    "pq": "<P> * <Q> is not <Modulus>",
    "d": "<D> is not the inverse of <Exponent>",
    "dp": "<DP> is not <D> mod (<P> - 1)",
    "dq": "<DQ> is not <D> mod (<Q> - 1)",
    "iqmp": "<InverseQ> is not <Q>^-1 mod <P>",
}


def _xml_private_key(public: rsa.RSAPublicNumbers, v: dict[str, int]) -> rsa.RSAPrivateKey:
    p, q, dp, dq, iqmp, d = v["P"], v["Q"], v["DP"], v["DQ"], v["InverseQ"], v["D"]
    wrong = crt_mismatch(n=public.n, e=public.e, p=p, q=q, d=d, dp=dp, dq=dq, iqmp=iqmp)
    if wrong is not None:
        raise _xml_fail(_XML_CRT_PROBLEMS[wrong])
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=dp, dmq1=dq, iqmp=iqmp, public_numbers=public
    )
    try:
        return numbers.private_key()
    except ValueError:
        raise _xml_fail("OpenSSL refuses the key (a factor is not prime)") from None


# --- writing ----------------------------------------------------------------------------------


def dump_rsa_key(
    key: rsa.RSAPrivateKey | rsa.RSAPublicKey,
    fmt: KeyFormat,
    *,
    public_only: bool,
    alg_id: AlgId | None = None,
    legacy: bool = False,
    passphrase: bytes | None = None,
) -> bytes:
    """``key`` in ``fmt``; a public key (or ``public_only``) gives the public form.

    PEM is what ``openssl pkey`` writes: PKCS#8 (unencrypted) for a private key,
    SubjectPublicKeyInfo for a public one.  DER is the same structures (as ``openssl pkcs8
    -topk8 -nocrypt -outform DER`` and ``openssl pkey -pubout -outform DER`` write them; note
    that ``openssl pkey -outform DER`` writes PKCS#1 for an RSA private key): PKCS#8 says
    which algorithm it holds, which is what Java's ``PKCS8EncodedKeySpec`` and .NET's
    ``ImportPkcs8PrivateKey`` read.  MSBLOB is PRIVATEKEYBLOB / PUBLICKEYBLOB with
    ``alg_id`` (default CALG_RSA_KEYX).  XML is what .NET's ``RSA.ToXmlString`` writes.

    Args:
        key: the key.
        fmt: the output format.
        public_only: write only the public part of a private key.
        alg_id: ``aiKeyAlg`` of a blob: CALG_RSA_KEYX (default) or CALG_RSA_SIGN; only
            for MSBLOB.
        legacy: convert a key under 1024 bits (docs/MSCAPI.md 5).  Converting moves an
            existing key, so it follows the rule for reading: 1024 to 2047 bits warns.
        passphrase: encrypt a private key written as PEM or DER (PKCS#8 with
            ``cryptography``'s BestAvailableEncryption); None writes it in the clear.

    Raises:
        UsageError: the key does not fit the format (a CryptoAPI blob needs a 512- to
            16384-bit modulus and a 32-bit exponent; .NET's XML needs primes of at most half
            the modulus length), or ``alg_id`` is given for a format other than MSBLOB or is
            not an RSA ALG_ID, or a ``passphrase`` for a public key, an empty one, or one
            for a format that has no encryption (MSBLOB, XML).
        WeakKeyError: a key under 1024 bits without ``legacy=True`` (a UsageError).
    """
    check_rsa_size(key, RsaUse.READ, legacy=legacy, role="key", action="converting")
    if alg_id is not None and fmt is not KeyFormat.MSBLOB:
        raise UsageError("an ALG_ID applies only to CryptoAPI blobs (msblob)")
    private = key if isinstance(key, rsa.RSAPrivateKey) and not public_only else None
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    if passphrase is not None:
        if private is None:
            raise UsageError("only a private key is written encrypted")
        if fmt not in (KeyFormat.PEM, KeyFormat.DER):
            raise UsageError(
                f"a {fmt.value} private key has no encryption: write pem or der to encrypt it"
            )
        if not passphrase:
            raise UsageError("an empty passphrase encrypts nothing")
    if fmt is KeyFormat.PEM or fmt is KeyFormat.DER:
        encoding = (
            serialization.Encoding.PEM if fmt is KeyFormat.PEM else serialization.Encoding.DER
        )
        if private is not None:
            encryption: serialization.KeySerializationEncryption = (
                serialization.NoEncryption()
                if passphrase is None
                else serialization.BestAvailableEncryption(passphrase)
            )
            return private.private_bytes(encoding, serialization.PrivateFormat.PKCS8, encryption)
        return public.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
    if fmt is KeyFormat.MSBLOB:
        alg = AlgId.RSA_KEYX if alg_id is None else alg_id
        if private is not None:
            return PrivateKeyBlob.from_private_key(private, alg).to_bytes()
        return PublicKeyBlob.from_public_key(public, alg).to_bytes()
    return _dump_xml(public.public_numbers(), private)


def _dump_xml(public: rsa.RSAPublicNumbers, private: rsa.RSAPrivateKey | None) -> bytes:
    k = (public.n.bit_length() + 7) // 8
    half = (k + 1) // 2
    fields = [("Modulus", public.n.to_bytes(k, "big")), ("Exponent", _minimal(public.e))]
    if private is not None:
        pn = private.private_numbers()
        if max(pn.p, pn.q, pn.dmp1, pn.dmq1, pn.iqmp).bit_length() > 8 * half:
            raise UsageError("the primes are too unbalanced for .NET's RSAKeyValue XML")
        fields += [
            ("P", pn.p.to_bytes(half, "big")),
            ("Q", pn.q.to_bytes(half, "big")),
            ("DP", pn.dmp1.to_bytes(half, "big")),
            ("DQ", pn.dmq1.to_bytes(half, "big")),
            ("InverseQ", pn.iqmp.to_bytes(half, "big")),
            ("D", pn.d.to_bytes(k, "big")),
        ]
    body = "".join(f"<{n}>{base64.b64encode(v).decode('ascii')}</{n}>" for n, v in fields)
    return f"<RSAKeyValue>{body}</RSAKeyValue>".encode("ascii")


def _minimal(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
