"""CryptoAPI key blobs: PUBLICKEYBLOB, PRIVATEKEYBLOB, SIMPLEBLOB and PLAINTEXTKEYBLOB.

Bytes <-> frozen dataclasses, and RSA blobs <-> ``cryptography`` key objects.  Parsing is
strict (docs/MSCAPI.md, "What is checked"): ``bType``, ``bVersion`` 2, ``reserved`` 0,
known ALG_IDs of the right class, the RSA1/RSA2 magic, field widths computed from
``bitlen``, consistent CRT values and no trailing bytes.  Two inputs Windows accepts are
accepted too and normalised, so they are the only ones that do not re-encode to the same
bytes: a PRIVATEKEYBLOB whose privateExponent is cut short (vector
``privatekeyblob_truncated_private_exponent``) and a SIMPLEBLOB followed by zero bytes
(``simpleblob_trailing_zero_bytes``; handled where the modulus length is known, in
``simpleblob.py``).  All integers are little-endian.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from keyblob.errors import FormatError, UnsupportedError, UsageError
from keyblob.mscapi._le import Reader, le
from keyblob.mscapi.algids import AlgId, alg_name, session_algorithm

CUR_BLOB_VERSION = 2
HEADER_SIZE = 8
RSAPUBKEY_SIZE = 12
MAGIC_RSA1 = 0x31415352  # b"RSA1" on disk
MAGIC_RSA2 = 0x32415352  # b"RSA2" on disk
MIN_BITLEN = 512
MAX_BITLEN = 16384
#: The largest HMAC key a CRYPT_IPSEC_HMAC_KEY PLAINTEXTKEYBLOB may carry here.
MAX_HMAC_KEY = 1024
_RSA_ALGS = (AlgId.RSA_KEYX, AlgId.RSA_SIGN)


class BlobType(enum.IntEnum):
    """``bType`` values (CRYPTOAPI-FORMATS.md section 1)."""

    SIMPLEBLOB = 0x01
    PUBLICKEYBLOB = 0x06
    PRIVATEKEYBLOB = 0x07
    PLAINTEXTKEYBLOB = 0x08
    OPAQUEKEYBLOB = 0x09
    PUBLICKEYBLOBEX = 0x0A
    SYMMETRICWRAPKEYBLOB = 0x0B
    KEYSTATEBLOB = 0x0C


@dataclass(frozen=True)
class Field:
    """One field of a CryptoAPI blob, for ``keyblob inspect``.  Never holds secret bytes."""

    offset: int
    size: int
    name: str
    value: str


def _read_header(r: Reader, expected: BlobType, fields: list[Field] | None = None) -> int:
    """BLOBHEADER (section 1); returns ``aiKeyAlg``."""
    at = r.offset
    btype = r.uint(1, "bType")
    if btype != expected:
        raise r.fail("bType", f"0x{btype:02x} is not {expected.name} (0x{expected:02x})", at)
    version = r.uint(1, "bVersion")
    if version != CUR_BLOB_VERSION:
        raise r.fail("bVersion", f"{version} (expected {CUR_BLOB_VERSION})", at + 1)
    reserved = r.uint(2, "reserved")
    if reserved != 0:
        raise r.fail("reserved", "must be 0", at + 2)
    alg = r.uint(4, "aiKeyAlg")
    if fields is not None:
        fields += [
            Field(at, 1, "bType", f"0x{btype:02x} {expected.name}"),
            Field(at + 1, 1, "bVersion", str(version)),
            Field(at + 2, 2, "reserved", "0"),
            Field(at + 4, 4, "aiKeyAlg", f"0x{alg:08x} {alg_name(alg)}"),
        ]
    return alg


def _header(btype: BlobType, alg_id: int) -> bytes:
    return bytes([btype, CUR_BLOB_VERSION]) + le(0, 2) + le(alg_id, 4)


def _rsa_alg(r: Reader, alg: int) -> AlgId:
    if alg not in _RSA_ALGS:
        raise r.fail("aiKeyAlg", f"{alg_name(alg)} is not CALG_RSA_KEYX or CALG_RSA_SIGN", 4)
    return AlgId(alg)


def _sizes(bitlen: int) -> tuple[int, int]:
    """(k, h): modulus bytes and half-modulus bytes (section 2)."""
    return bitlen // 8, (bitlen + 15) // 16


def _read_rsapubkey(r: Reader, magic: int, fields: list[Field] | None) -> tuple[int, int]:
    """RSAPUBKEY (section 2); returns (bitlen, pubexp)."""
    at = r.offset
    got = r.uint(4, "magic")
    if got != magic:
        name = "RSA1" if magic == MAGIC_RSA1 else "RSA2"
        raise r.fail("magic", f"expected {name!r}", at)
    bitlen = r.uint(4, "bitlen")
    if bitlen % 8 != 0 or not MIN_BITLEN <= bitlen <= MAX_BITLEN:
        raise r.fail(
            "bitlen", f"{bitlen} is not a multiple of 8 from {MIN_BITLEN} to {MAX_BITLEN}", at + 4
        )
    pubexp = r.uint(4, "pubexp")
    if pubexp < 3 or pubexp % 2 == 0:
        raise r.fail("pubexp", f"{pubexp} is not an odd exponent of at least 3", at + 8)
    if fields is not None:
        fields += [
            Field(at, 4, "magic", "RSA1" if magic == MAGIC_RSA1 else "RSA2"),
            Field(at + 4, 4, "bitlen", str(bitlen)),
            Field(at + 8, 4, "pubexp", str(pubexp)),
        ]
    return bitlen, pubexp


def _read_modulus(r: Reader, bitlen: int, fields: list[Field] | None) -> int:
    k, _ = _sizes(bitlen)
    at = r.offset
    raw = r.take(k, "modulus")
    n = int.from_bytes(raw, "little")
    # Windows checks neither the top bits nor the factors (vector
    # publickeyblob_dummy_modulus_roundtrip: 509 significant bits of 512, factor 17).  We
    # require the top byte to be non-zero, so that bitlen is the modulus length rounded up to
    # a byte, and an odd modulus; both hold for every RSA key any provider writes.
    if raw[-1] == 0:
        raise r.fail("modulus", f"its top byte is zero: bitlen {bitlen} overstates it", at)
    if n % 2 == 0:
        raise r.fail("modulus", "an RSA modulus is odd", at)
    if fields is not None:
        fields.append(Field(at, k, "modulus", f"{n.bit_length()}-bit integer, little-endian"))
    return n


def _check_bitlen_for_key(n: int, e: int) -> int:
    bitlen = -(-n.bit_length() // 8) * 8
    if not MIN_BITLEN <= bitlen <= MAX_BITLEN:
        raise UsageError(f"a {n.bit_length()}-bit RSA key does not fit a CryptoAPI blob")
    if e >= 2**32:
        raise UsageError("a CryptoAPI blob stores the public exponent in 32 bits")
    return bitlen


@dataclass(frozen=True)
class PublicKeyBlob:
    """PUBLICKEYBLOB: BLOBHEADER, RSAPUBKEY("RSA1"), modulus (section 3)."""

    alg_id: AlgId
    bitlen: int
    public_exponent: int
    modulus: int

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeyBlob:
        """Parse strictly.

        Raises:
            FormatError: any field is wrong; the message names it and its offset.
        """
        return cls._parse(data, None)

    @classmethod
    def _parse(cls, data: bytes, fields: list[Field] | None) -> PublicKeyBlob:
        r = Reader(data, "PUBLICKEYBLOB")
        alg = _rsa_alg(r, _read_header(r, BlobType.PUBLICKEYBLOB, fields))
        bitlen, e = _read_rsapubkey(r, MAGIC_RSA1, fields)
        n = _read_modulus(r, bitlen, fields)
        r.end()
        return cls(alg, bitlen, e, n)

    def to_bytes(self) -> bytes:
        k, _ = _sizes(self.bitlen)
        return b"".join(
            [
                _header(BlobType.PUBLICKEYBLOB, self.alg_id),
                le(MAGIC_RSA1, 4),
                le(self.bitlen, 4),
                le(self.public_exponent, 4),
                le(self.modulus, k),
            ]
        )

    def to_public_key(self) -> rsa.RSAPublicKey:
        """The key as a ``cryptography`` object.

        Raises:
            FormatError: ``cryptography`` refuses the numbers.
        """
        try:
            return rsa.RSAPublicNumbers(self.public_exponent, self.modulus).public_key()
        except ValueError:
            raise FormatError("PUBLICKEYBLOB: modulus: not a usable RSA public key") from None

    @classmethod
    def from_public_key(
        cls, key: rsa.RSAPublicKey, alg_id: AlgId = AlgId.RSA_KEYX
    ) -> PublicKeyBlob:
        """The blob CryptExportKey(PUBLICKEYBLOB) writes for ``key``.

        Raises:
            UsageError: the key does not fit (exponent over 32 bits, size out of range), or
                ``alg_id`` is not CALG_RSA_KEYX / CALG_RSA_SIGN.
        """
        if alg_id not in _RSA_ALGS:
            raise UsageError("a public key blob is CALG_RSA_KEYX or CALG_RSA_SIGN")
        numbers = key.public_numbers()
        bitlen = _check_bitlen_for_key(numbers.n, numbers.e)
        return cls(AlgId(alg_id), bitlen, numbers.e, numbers.n)


def crt_mismatch(
    *, n: int, e: int, p: int, q: int, d: int, dp: int, dq: int, iqmp: int
) -> str | None:
    """The first RSA private value that disagrees with the others, or None if all agree.

    Checked, not recomputed: a file whose values disagree was damaged or edited, and
    "repairing" it would hide that.  Returns ``"pq"``, ``"d"``, ``"dp"``, ``"dq"`` or
    ``"iqmp"``; each reader turns the name into its own field and message.
    """
    if p < 3 or q < 3 or p * q != n:
        return "pq"
    if not 0 < d < n or (e * d) % math.lcm(p - 1, q - 1) != 1:
        return "d"
    if dp != d % (p - 1):
        return "dp"
    if dq != d % (q - 1):
        return "dq"
    if iqmp != pow(q, -1, p):
        return "iqmp"
    return None


_BLOB_CRT_PROBLEMS = {
    "pq": ("prime1", "prime1 * prime2 is not the modulus"),
    "d": ("privateExponent", "not the inverse of pubexp"),
    "dp": ("exponent1", "is not privateExponent mod (prime1 - 1)"),
    "dq": ("exponent2", "is not privateExponent mod (prime2 - 1)"),
    "iqmp": ("coefficient", "is not prime2^-1 mod prime1"),
}


@dataclass(frozen=True)
class PrivateKeyBlob:
    """PRIVATEKEYBLOB: BLOBHEADER, RSAPUBKEY("RSA2"), n, p, q, dp, dq, iqmp, d (section 4).

    ``truncated`` records that the input's privateExponent was cut short (Windows accepts
    that); :meth:`to_bytes` always writes every field at full width.
    """

    alg_id: AlgId
    bitlen: int
    public_exponent: int
    modulus: int
    prime1: int = field(repr=False)
    prime2: int = field(repr=False)
    exponent1: int = field(repr=False)
    exponent2: int = field(repr=False)
    coefficient: int = field(repr=False)
    private_exponent: int = field(repr=False)
    truncated: bool = field(default=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivateKeyBlob:
        """Parse strictly, and check that the CRT values belong together.

        A privateExponent cut short is accepted as Windows accepts it (at least half of it
        present); the missing high bytes are recomputed from the primes and must agree with
        the bytes present.

        Raises:
            FormatError: any field is wrong or the values are inconsistent; the message names
                the field, never its value.
        """
        return cls._parse(data, None)

    @classmethod
    def _parse(cls, data: bytes, fields: list[Field] | None) -> PrivateKeyBlob:
        r = Reader(data, "PRIVATEKEYBLOB")
        alg = _rsa_alg(r, _read_header(r, BlobType.PRIVATEKEYBLOB, fields))
        bitlen, e = _read_rsapubkey(r, MAGIC_RSA2, fields)
        k, h = _sizes(bitlen)
        n = _read_modulus(r, bitlen, fields)
        values: dict[str, int] = {}
        offsets: dict[str, int] = {}
        for name in ("prime1", "prime2", "exponent1", "exponent2", "coefficient"):
            offsets[name] = r.offset
            values[name] = int.from_bytes(r.take(h, name), "little")
            if fields is not None:
                fields.append(Field(offsets[name], h, name, f"secret, {h} bytes"))
        d_at = r.offset
        present = r.remaining
        # Windows infers the length of privateExponent from the bytes that remain, and
        # accepts it cut anywhere down to half its width (vector
        # privatekeyblob_truncated_private_exponent: 532..595 of 596 bytes).
        if present > k:
            raise r.fail("end", f"{present - k} trailing bytes", d_at + k)
        if present < h:
            raise r.fail(
                "privateExponent", f"truncated (need at least {h} of {k} bytes, have {present})"
            )
        d_part = int.from_bytes(r.take(min(present, k), "privateExponent"), "little")
        if fields is not None:
            fields.append(Field(d_at, min(present, k), "privateExponent", f"secret, {k} bytes"))
        p, q = values["prime1"], values["prime2"]
        dp, dq, iqmp = values["exponent1"], values["exponent2"], values["coefficient"]

        def bad(name: str, problem: str) -> FormatError:
            return r.fail(name, problem, offsets.get(name, d_at))

        if p < 3 or q < 3 or p * q != n:
            raise bad("prime1", "prime1 * prime2 is not the modulus")
        lam = math.lcm(p - 1, q - 1)
        if math.gcd(e, lam) != 1:
            raise r.fail("pubexp", "not invertible modulo lcm(p-1, q-1)", 16)
        if present >= k:
            d = d_part
        else:
            completed = _complete_exponent(d_part, present, e=e, p=p, q=q, lam=lam)
            if completed is None:
                raise bad("privateExponent", "the bytes present do not match the primes")
            d = completed
        wrong = crt_mismatch(n=n, e=e, p=p, q=q, d=d, dp=dp, dq=dq, iqmp=iqmp)
        if wrong is not None:
            raise bad(*_BLOB_CRT_PROBLEMS[wrong])
        return cls(AlgId(alg), bitlen, e, n, p, q, dp, dq, iqmp, d, truncated=present < k)

    def to_bytes(self) -> bytes:
        k, h = _sizes(self.bitlen)
        return b"".join(
            [
                _header(BlobType.PRIVATEKEYBLOB, self.alg_id),
                le(MAGIC_RSA2, 4),
                le(self.bitlen, 4),
                le(self.public_exponent, 4),
                le(self.modulus, k),
                le(self.prime1, h),
                le(self.prime2, h),
                le(self.exponent1, h),
                le(self.exponent2, h),
                le(self.coefficient, h),
                le(self.private_exponent, k),
            ]
        )

    def public_blob(self) -> PublicKeyBlob:
        """The matching PUBLICKEYBLOB (same ``aiKeyAlg``)."""
        return PublicKeyBlob(self.alg_id, self.bitlen, self.public_exponent, self.modulus)

    def to_private_key(self, *, unsafe_skip_rsa_key_validation: bool = False) -> rsa.RSAPrivateKey:
        """The key as a ``cryptography`` object (validated by OpenSSL unless told not to).

        Raises:
            FormatError: OpenSSL refuses the key (for example a prime that is not prime).
        """
        numbers = rsa.RSAPrivateNumbers(
            p=self.prime1,
            q=self.prime2,
            d=self.private_exponent,
            dmp1=self.exponent1,
            dmq1=self.exponent2,
            iqmp=self.coefficient,
            public_numbers=rsa.RSAPublicNumbers(self.public_exponent, self.modulus),
        )
        try:
            return numbers.private_key(
                unsafe_skip_rsa_key_validation=unsafe_skip_rsa_key_validation
            )
        except ValueError:
            raise FormatError("PRIVATEKEYBLOB: not a valid RSA private key") from None

    @classmethod
    def from_private_key(
        cls, key: rsa.RSAPrivateKey, alg_id: AlgId = AlgId.RSA_KEYX
    ) -> PrivateKeyBlob:
        """The blob CryptExportKey(PRIVATEKEYBLOB) writes for ``key``: every field padded.

        Raises:
            UsageError: the key does not fit, or ``alg_id`` is not an RSA ALG_ID.
        """
        if alg_id not in _RSA_ALGS:
            raise UsageError("a private key blob is CALG_RSA_KEYX or CALG_RSA_SIGN")
        numbers = key.private_numbers()
        pub = numbers.public_numbers
        bitlen = _check_bitlen_for_key(pub.n, pub.e)
        _, h = _sizes(bitlen)
        p, q, iqmp = numbers.p, numbers.q, numbers.iqmp
        if max(p, q).bit_length() > h * 8:
            raise UsageError("the primes are too unbalanced for a CryptoAPI blob")
        return cls(
            AlgId(alg_id),
            bitlen,
            pub.e,
            pub.n,
            p,
            q,
            numbers.dmp1,
            numbers.dmq1,
            iqmp,
            numbers.d,
        )


def _complete_exponent(part: int, present: int, *, e: int, p: int, q: int, lam: int) -> int | None:
    """The full privateExponent whose low ``present`` bytes are ``part``, if one of the two
    usual choices (mod lambda(n), mod phi(n)) has them."""
    mask = (1 << (8 * present)) - 1
    for modulus in (lam, (p - 1) * (q - 1)):
        d = pow(e, -1, modulus)
        if d & mask == part:
            return d
    return None


@dataclass(frozen=True)
class SimpleBlob:
    """SIMPLEBLOB: BLOBHEADER, wrapping ALG_ID, RSA ciphertext byte-reversed (section 5).

    ``encrypted_key`` is stored as on disk (least-significant byte first).  Its length is
    checked against the exchange key when the blob is opened (``simpleblob.py``), since the
    blob alone does not say which key it is for.
    """

    alg_id: AlgId
    encrypted_key: bytes = field(repr=False)
    wrap_alg_id: AlgId = AlgId.RSA_KEYX

    @classmethod
    def from_bytes(cls, data: bytes) -> SimpleBlob:
        """Parse the public structure.

        Raises:
            FormatError: a header field is wrong, the wrapping ALG_ID is not CALG_RSA_KEYX or
                the encrypted key has an impossible length.
            UnsupportedError: the session ALG_ID is not one keyblob implements.
        """
        return cls._parse(data, None)

    @classmethod
    def _parse(cls, data: bytes, fields: list[Field] | None) -> SimpleBlob:
        r = Reader(data, "SIMPLEBLOB")
        alg = _read_header(r, BlobType.SIMPLEBLOB, fields)
        info = session_algorithm(alg, field="SIMPLEBLOB: aiKeyAlg at offset 4")
        wrap = r.uint(4, "wrap ALG_ID")
        # Wine does not look at this field; keyblob is stricter (CRYPTOAPI-FORMATS.md 5).
        if wrap != AlgId.RSA_KEYX:
            raise r.fail("wrap ALG_ID", f"{alg_name(wrap)} is not CALG_RSA_KEYX", 8)
        rest = r.rest()
        if not MIN_BITLEN // 8 <= len(rest) <= MAX_BITLEN // 8 + 64:
            raise r.fail("encryptedkey", f"{len(rest)} bytes is not an RSA ciphertext", 12)
        if fields is not None:
            fields += [
                Field(8, 4, "wrap ALG_ID", f"0x{wrap:08x} {alg_name(wrap)}"),
                Field(12, len(rest), "encryptedkey", f"{len(rest)} bytes, byte-reversed"),
            ]
        return cls(info.alg_id, rest, AlgId.RSA_KEYX)

    def to_bytes(self) -> bytes:
        return (
            _header(BlobType.SIMPLEBLOB, self.alg_id)
            + le(self.wrap_alg_id, 4)
            + (self.encrypted_key)
        )


@dataclass(frozen=True)
class PlaintextKeyBlob:
    """PLAINTEXTKEYBLOB: BLOBHEADER, DWORD key length, key bytes (section 6)."""

    alg_id: AlgId
    key: bytes = field(repr=False)
    #: A CALG_RC2 blob carrying an IPsec HMAC key (CRYPT_IPSEC_HMAC_KEY): 1 to 1024 bytes.
    hmac_key: bool = field(default=False, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, *, hmac_key: bool = False) -> PlaintextKeyBlob:
        """Parse strictly.

        Args:
            data: the blob.
            hmac_key: the blob is imported with CRYPT_IPSEC_HMAC_KEY: a CALG_RC2 blob then
                carries an HMAC key of any length from 1 to 1024 bytes (vector
                ``plaintextkeyblob_hmac_ipsec``).  Without it an RC2 key longer than 16
                bytes is refused, as Windows refuses it
                (``plaintextkeyblob_rc2_oversize_rejected``).

        Raises:
            FormatError: a field is wrong or the key length does not fit the ALG_ID.
            UnsupportedError: the ALG_ID is not one keyblob implements.
        """
        return cls._parse(data, None, hmac_key=hmac_key)

    @classmethod
    def _parse(
        cls, data: bytes, fields: list[Field] | None, *, hmac_key: bool = False
    ) -> PlaintextKeyBlob:
        r = Reader(data, "PLAINTEXTKEYBLOB")
        alg = _read_header(r, BlobType.PLAINTEXTKEYBLOB, fields)
        info = session_algorithm(alg, field="PLAINTEXTKEYBLOB: aiKeyAlg at offset 4")
        size = r.uint(4, "dwKeySize")
        if not _plaintext_size_ok(info.alg_id, size, hmac_key):
            raise r.fail("dwKeySize", f"{size} bytes is not a {info.alg_id.calg_name} key", 8)
        key = r.take(size, "key")
        r.end()
        if fields is not None:
            fields += [
                Field(8, 4, "dwKeySize", str(size)),
                Field(12, size, "key", f"secret, {size} bytes"),
            ]
        return cls(info.alg_id, key, hmac_key=hmac_key and info.alg_id is AlgId.RC2)

    def to_bytes(self) -> bytes:
        """Encode.

        Raises:
            UsageError: a key length that :meth:`from_bytes` (and Windows) would refuse,
                such as an RC2 key longer than 16 bytes, which a SIMPLEBLOB can carry,
                unless it is an ``hmac_key``.
        """
        if not _plaintext_size_ok(self.alg_id, len(self.key), self.hmac_key):
            raise UsageError(
                f"a {len(self.key)}-byte {self.alg_id.calg_name} key does not fit a "
                "PLAINTEXTKEYBLOB (Windows refuses it): use it through keyblob capi "
                "encrypt/decrypt, or --info to see it"
            )
        return _header(BlobType.PLAINTEXTKEYBLOB, self.alg_id) + le(len(self.key), 4) + self.key


def _plaintext_size_ok(alg_id: AlgId, size: int, hmac_key: bool) -> bool:
    if hmac_key and alg_id is AlgId.RC2:
        return 1 <= size <= MAX_HMAC_KEY
    return size in session_algorithm(alg_id).key_sizes


def describe(data: bytes) -> tuple[str, list[Field]]:
    """The blob's type name and its fields with offsets, for ``keyblob inspect``.

    Secret fields are listed by size only.  The blob is parsed with the same checks as
    ``from_bytes``.

    Raises:
        FormatError: the bytes are not a valid CryptoAPI blob of a supported type.
        UnsupportedError: a valid header of a blob type keyblob does not read.
    """
    if len(data) < HEADER_SIZE:
        raise FormatError(f"CryptoAPI blob: BLOBHEADER at offset 0: truncated ({len(data)} bytes)")
    try:
        btype = BlobType(data[0])
    except ValueError:
        raise FormatError(
            f"CryptoAPI blob: bType at offset 0: 0x{data[0]:02x} is not a blob type"
        ) from None
    fields: list[Field] = []
    if btype is BlobType.PUBLICKEYBLOB:
        PublicKeyBlob._parse(data, fields)
    elif btype is BlobType.PRIVATEKEYBLOB:
        PrivateKeyBlob._parse(data, fields)
    elif btype is BlobType.SIMPLEBLOB:
        SimpleBlob._parse(data, fields)
    elif btype is BlobType.PLAINTEXTKEYBLOB:
        PlaintextKeyBlob._parse(data, fields, hmac_key=True)
    else:
        raise UnsupportedError(f"CryptoAPI blob: bType at offset 0: {btype.name} is not read")
    return btype.name, fields


def looks_like_capi_blob(data: bytes) -> bool:
    """A cheap sniff for ``inspect`` and ``convert``: a known bType and bVersion 2."""
    return (
        len(data) >= HEADER_SIZE
        and data[0] in {int(t) for t in BlobType}
        and data[1] == CUR_BLOB_VERSION
        and data[2:4] == b"\x00\x00"
    )
