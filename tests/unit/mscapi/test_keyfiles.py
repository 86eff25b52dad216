"""RSA key files for ``keyblob capi convert``: detection, every format to every format for
1024 to 4096 bits, byte-exact against ``openssl pkey`` / ``openssl rsa -outform MSBLOB``,
encrypted PKCS#8, .NET ``<RSAKeyValue>`` XML made here independently of the library, hostile
XML, non-RSA keys and damaged input."""

from __future__ import annotations

import base64
import functools
import itertools
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import support
from keyblob.errors import (
    FormatError,
    PassphraseError,
    PassphraseRequired,
    UnsupportedError,
    UsageError,
)
from keyblob.mscapi import (
    AlgId,
    KeyFormat,
    LoadedKey,
    PrivateKeyBlob,
    dump_rsa_key,
    load_rsa_key,
)
from keyblob.mscapi.keyfiles import MAX_KEY_FILE_SIZE, MAX_XML_SIZE
from support import dotnet_xml

BITS = [1024, 2048, 3072, 4096]
FORMATS = list(KeyFormat)
PASS = b"correct horse battery staple"


@functools.cache
def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def same_key(
    a: rsa.RSAPrivateKey | rsa.RSAPublicKey, b: rsa.RSAPrivateKey | rsa.RSAPublicKey
) -> bool:
    if isinstance(a, rsa.RSAPrivateKey) and isinstance(b, rsa.RSAPrivateKey):
        return a.private_numbers() == b.private_numbers()
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    return False


def assert_clean(message: str, data: bytes) -> None:
    """One line, and no run of the input's bytes in the message: neither 6 bytes as hex nor 8
    characters of text that look like key material (base64 runs with a digit or + /)."""
    assert message and "\n" not in message and message.strip() == message
    low = message.lower()
    for i in range(max(0, len(data) - 5)):
        assert data[i : i + 6].hex() not in low
    text = data.decode("latin-1")
    for i in range(max(0, len(text) - 7)):
        window = text[i : i + 8]
        if re.fullmatch(r"[A-Za-z0-9+/]{8}", window) and re.search(r"[0-9+/]", window):
            assert window not in message


# --- .NET's XML, read here without the library (support.dotnet_xml writes it) ---------------


def xml_fields(xml: bytes) -> dict[str, bytes]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    return {child.tag: base64.b64decode(child.text or "") for child in root}


@functools.cache
def key_with_short_fields() -> rsa.RSAPrivateKey:
    """A 1024-bit key where D or one of the CRT values has a leading zero byte, so that
    .NET's padding matters (about one key in 40)."""
    for _ in range(5000):
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pn = key.private_numbers()
        if (
            pn.d.bit_length() <= 1016
            or min(pn.dmp1, pn.dmq1, pn.iqmp, pn.p, pn.q).bit_length() <= 504
        ):
            return key
    raise AssertionError("no key with a short field in 5000 tries")


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize(("src", "dst"), list(itertools.product(FORMATS, FORMATS)))
@pytest.mark.parametrize("public", [False, True], ids=["private", "public"])
def test_round_trip(bits: int, src: KeyFormat, dst: KeyFormat, public: bool) -> None:
    key = rsa_key(bits)
    want = key.public_key() if public else key
    first = dump_rsa_key(key, src, public_only=public)
    loaded = load_rsa_key(first)
    assert loaded.format is src
    assert loaded.private is (not public)
    assert same_key(loaded.key, want)
    second = dump_rsa_key(
        loaded.key,
        dst,
        public_only=public,
        alg_id=loaded.alg_id if dst is KeyFormat.MSBLOB else None,
    )
    again = load_rsa_key(second)
    assert again.format is dst
    assert same_key(again.key, want)
    # Canonical output: the same key gives the same bytes whatever it was read from.
    assert second == dump_rsa_key(want, dst, public_only=public)


def test_public_key_without_public_only_writes_the_public_form() -> None:
    pub = rsa_key(1024).public_key()
    for fmt in FORMATS:
        assert dump_rsa_key(pub, fmt, public_only=False) == dump_rsa_key(pub, fmt, public_only=True)


def test_details() -> None:
    key = rsa_key(2048)
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    none = serialization.NoEncryption()
    cases: list[tuple[bytes, KeyFormat, str]] = []
    for enc, fmt in ((pem, KeyFormat.PEM), (der, KeyFormat.DER)):
        cases += [
            (
                key.private_bytes(enc, serialization.PrivateFormat.TraditionalOpenSSL, none),
                fmt,
                "PKCS#1",
            ),
            (key.private_bytes(enc, serialization.PrivateFormat.PKCS8, none), fmt, "PKCS#8"),
            (key.public_key().public_bytes(enc, serialization.PublicFormat.PKCS1), fmt, "PKCS#1"),
            (
                key.public_key().public_bytes(enc, serialization.PublicFormat.SubjectPublicKeyInfo),
                fmt,
                "SubjectPublicKeyInfo",
            ),
        ]
    cases += [
        (
            dump_rsa_key(key, KeyFormat.MSBLOB, public_only=False),
            KeyFormat.MSBLOB,
            "PRIVATEKEYBLOB (CALG_RSA_KEYX)",
        ),
        (
            dump_rsa_key(key, KeyFormat.MSBLOB, public_only=True, alg_id=AlgId.RSA_SIGN),
            KeyFormat.MSBLOB,
            "PUBLICKEYBLOB (CALG_RSA_SIGN)",
        ),
        (dotnet_xml(key), KeyFormat.XML, "RSAKeyValue (private)"),
        (dotnet_xml(key.public_key()), KeyFormat.XML, "RSAKeyValue (public)"),
    ]
    for data, fmt, detail in cases:
        loaded = load_rsa_key(data)
        assert (loaded.format, loaded.detail) == (fmt, detail)


def test_blob_alg_id_is_kept_and_reported() -> None:
    key = rsa_key(1024)
    blob = dump_rsa_key(key, KeyFormat.MSBLOB, public_only=False, alg_id=AlgId.RSA_SIGN)
    assert blob[4:8] == bytes.fromhex("00240000")
    loaded = load_rsa_key(blob)
    assert loaded.alg_id is AlgId.RSA_SIGN
    assert (
        dump_rsa_key(loaded.key, KeyFormat.MSBLOB, public_only=False, alg_id=loaded.alg_id) == blob
    )
    assert dump_rsa_key(key, KeyFormat.MSBLOB, public_only=False)[4:8] == bytes.fromhex("00a40000")
    assert load_rsa_key(dump_rsa_key(key, KeyFormat.PEM, public_only=False)).alg_id is None


def test_alg_id_only_for_msblob() -> None:
    with pytest.raises(UsageError, match="msblob"):
        dump_rsa_key(rsa_key(1024), KeyFormat.PEM, public_only=False, alg_id=AlgId.RSA_SIGN)
    with pytest.raises(UsageError, match="CALG_RSA_KEYX or CALG_RSA_SIGN"):
        dump_rsa_key(rsa_key(1024), KeyFormat.MSBLOB, public_only=False, alg_id=AlgId.AES_256)


def test_loaded_key_repr_hides_the_key() -> None:
    loaded = load_rsa_key(dump_rsa_key(rsa_key(1024), KeyFormat.PEM, public_only=False))
    assert isinstance(loaded, LoadedKey)
    assert "key=" not in repr(loaded)


# --- .NET XML ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", BITS)
def test_xml_is_byte_exact_dotnet(bits: int) -> None:
    key = rsa_key(bits)
    assert dump_rsa_key(key, KeyFormat.XML, public_only=False) == dotnet_xml(key)
    assert dump_rsa_key(key, KeyFormat.XML, public_only=True) == dotnet_xml(key.public_key())
    assert same_key(load_rsa_key(dotnet_xml(key)).key, key)
    assert same_key(load_rsa_key(dotnet_xml(key.public_key())).key, key.public_key())


def test_xml_pads_short_fields_as_dotnet_requires() -> None:
    key = key_with_short_fields()
    ours = dump_rsa_key(key, KeyFormat.XML, public_only=False)
    assert ours == dotnet_xml(key)
    fields = xml_fields(ours)
    assert list(fields) == ["Modulus", "Exponent", "P", "Q", "DP", "DQ", "InverseQ", "D"]
    assert len(fields["Modulus"]) == 128 and len(fields["D"]) == 128
    assert fields["Exponent"] == b"\x01\x00\x01"
    for name in ("P", "Q", "DP", "DQ", "InverseQ"):
        assert len(fields[name]) == 64
    # Some field really was short: the padding is visible as a leading zero byte.
    assert any(fields[n][0] == 0 for n in ("P", "Q", "DP", "DQ", "InverseQ", "D"))
    # Minimal-length fields, as other tools write them, are read too.
    assert same_key(load_rsa_key(dotnet_xml(key, pad=False)).key, key)


def test_xml_has_no_declaration_or_whitespace() -> None:
    out = dump_rsa_key(rsa_key(2048), KeyFormat.XML, public_only=False)
    assert out.startswith(b"<RSAKeyValue><Modulus>")
    assert out.endswith(b"</D></RSAKeyValue>")
    assert not any(c in out for c in b" \t\r\n")


def test_xml_tolerated_variants() -> None:
    key = rsa_key(1024)
    xml = dotnet_xml(key).decode()
    pretty = '<?xml version="1.0" encoding="utf-8"?>\n' + xml.replace("><", ">\n  <")
    wrapped = xml.replace("<D>", "<D>\n").replace("</D>", "\n</D>")
    commented = xml.replace("<RSAKeyValue>", "<RSAKeyValue><!-- exported -->")
    variants = [
        pretty.encode(),
        b"\xef\xbb\xbf" + xml.encode(),
        "\ufeff".encode("utf-16-le").join([b"", xml.encode("utf-16-le")]),  # PowerShell 5 ">"
        wrapped.encode(),
        commented.encode(),
    ]
    for data in variants:
        assert same_key(load_rsa_key(data).key, key)
    # Element order is free (as .NET reads it) and the XML-DSig namespace is accepted.
    fields = xml.removeprefix("<RSAKeyValue>").removesuffix("</RSAKeyValue>")
    modulus_end = fields.index("</Exponent>") + len("</Exponent>")
    swapped = "<RSAKeyValue>" + fields[modulus_end:] + fields[:modulus_end] + "</RSAKeyValue>"
    assert same_key(load_rsa_key(swapped.encode()).key, key)
    dsig = (
        dotnet_xml(key.public_key())
        .decode()
        .replace("<RSAKeyValue>", '<RSAKeyValue xmlns="http://www.w3.org/2000/09/xmldsig#">')
    )
    assert same_key(load_rsa_key(dsig.encode()).key, key.public_key())


def _tamper(xml: bytes, name: str, value: bytes) -> bytes:
    text = xml.decode()
    start = text.index(f"<{name}>") + len(name) + 2
    end = text.index(f"</{name}>")
    return (text[:start] + value.decode() + text[end:]).encode()


def _hostile_xml() -> dict[str, bytes]:
    key = rsa_key(1024)
    good = dotnet_xml(key)
    pn = key.private_numbers()
    half = 64

    def b64(value: int, width: int = half) -> bytes:
        return base64.b64encode(value.to_bytes(width, "big"))

    other = rsa_key(2048).private_numbers()
    return {
        "doctype": b'<!DOCTYPE RSAKeyValue [<!ENTITY x "AQAB">]>' + good,
        "entity_reference": b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><RSAKeyValue>&e;</RSAKeyValue>',
        "billion_laughs": b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<RSAKeyValue><Modulus>&lol2;</Modulus></RSAKeyValue>",
        "cdata": good.replace(b"<Exponent>AQAB", b"<Exponent><![CDATA[AQAB]]>"),
        "unknown_element": good.replace(
            b"</RSAKeyValue>", b"<Comment>AQAB</Comment></RSAKeyValue>"
        ),
        "duplicate_element": good.replace(
            b"</RSAKeyValue>", b"<Exponent>AQAB</Exponent></RSAKeyValue>"
        ),
        "renamed_modulus": dotnet_xml(key.public_key())
        .replace(b"<Modulus>", b"<X>")
        .replace(b"</Modulus>", b"</X>"),
        "missing_modulus": b"<RSAKeyValue>" + dotnet_xml(key.public_key()).split(b"</Modulus>")[1],
        "missing_exponent": dotnet_xml(key.public_key()).split(b"<Exponent>")[0]
        + b"</RSAKeyValue>",
        "missing_d": good.split(b"<D>")[0] + b"</RSAKeyValue>",
        "missing_inverseq": good.replace(good[good.index(b"<InverseQ>") : good.index(b"<D>")], b""),
        "empty_element": _tamper(good, "P", b""),
        "bad_base64_character": _tamper(good, "Exponent", b"AQ*B"),
        "bad_base64_padding": _tamper(good, "Exponent", b"AQA"),
        "attribute": good.replace(b"<P>", b'<P encoding="hex">'),
        "nested_element": _tamper(good, "P", b"<x/>"),
        "text_between_elements": good.replace(b"</Modulus>", b"</Modulus>junk"),
        "wrong_root": good.replace(b"RSAKeyValue", b"DSAKeyValue"),
        "other_namespace": good.replace(b"<RSAKeyValue>", b'<RSAKeyValue xmlns="urn:x">'),
        "not_well_formed": good[:-5],
        "inconsistent_dp": _tamper(good, "DP", b64(pn.dmp1 ^ 2)),
        "inconsistent_dq": _tamper(good, "DQ", b64(pn.dmq1 ^ 2)),
        "inconsistent_inverseq": _tamper(good, "InverseQ", b64(pn.iqmp ^ 2)),
        "inconsistent_d": _tamper(good, "D", b64(pn.d ^ 2, 128)),
        "primes_not_modulus": _tamper(good, "P", b64(other.p, 128)),
        "swapped_p_q": _tamper(_tamper(good, "P", b64(pn.q)), "Q", b64(pn.p)),
        "even_modulus": _tamper(
            dotnet_xml(key.public_key()), "Modulus", b64(pn.public_numbers.n + 1, 128)
        ),
        "even_exponent": _tamper(good, "Exponent", base64.b64encode(b"\x01\x00\x00")),
        "over_size": good.replace(
            b"<RSAKeyValue>", b"<RSAKeyValue><!--" + b"x" * MAX_XML_SIZE + b"-->"
        ),
        "not_utf8": good.replace(b"<P>", b"<P>\xff"),
        "huge_modulus": _tamper(
            dotnet_xml(key.public_key()),
            "Modulus",
            base64.b64encode(b"\xff" * 2049 + b"\x01"),
        ),
    }


@pytest.mark.parametrize("case", list(_hostile_xml()))
def test_hostile_xml(case: str) -> None:
    data = _hostile_xml()[case]
    with pytest.raises(FormatError) as info:
        load_rsa_key(data)
    assert type(info.value) is FormatError
    assert str(info.value).startswith("RSAKeyValue XML: ")
    assert_clean(str(info.value), data)


def test_hostile_xml_messages_name_the_problem() -> None:
    cases = _hostile_xml()
    expect = {
        "doctype": "DOCTYPE",
        "unknown_element": "unknown element <Comment>",
        "duplicate_element": "<Exponent> appears twice",
        "renamed_modulus": "unknown element <X>",
        "missing_modulus": "<Modulus> is missing",
        "missing_exponent": "<Exponent> is missing",
        "missing_d": "<D> is missing",
        "bad_base64_character": "<Exponent>: not valid base64",
        "inconsistent_dp": "<DP> is not <D> mod (<P> - 1)",
        "inconsistent_inverseq": "<InverseQ>",
        "inconsistent_d": "<D> is not the inverse",
        "over_size": "limit",
    }
    for case, fragment in expect.items():
        with pytest.raises(FormatError) as info:
            load_rsa_key(cases[case])
        assert fragment in str(info.value), (case, str(info.value))


# --- encrypted PKCS#8 -------------------------------------------------------------------------


def _encrypted_inputs() -> dict[str, bytes]:
    key = rsa_key(2048)
    enc = serialization.BestAvailableEncryption(PASS)
    return {
        "cryptography_pem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        ),
        "cryptography_der": key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, enc
        ),
        "legacy_pem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc
        ),
    }


@pytest.mark.parametrize("case", ["cryptography_pem", "cryptography_der", "legacy_pem"])
def test_encrypted_pkcs8(case: str) -> None:
    data = _encrypted_inputs()[case]
    _check_encrypted(data)


def _check_encrypted(data: bytes) -> None:
    loaded = load_rsa_key(data, passphrase=PASS)
    assert same_key(loaded.key, rsa_key(2048))
    assert "encrypted" in loaded.detail
    with pytest.raises(PassphraseError) as wrong:
        load_rsa_key(data, passphrase=b"wrong")
    assert_clean(str(wrong.value), data)
    with pytest.raises(UsageError) as missing:
        load_rsa_key(data)
    assert "encrypted" in str(missing.value) and "--passphrase-file" in str(missing.value)
    assert not isinstance(missing.value, FormatError)
    assert isinstance(missing.value, PassphraseRequired)  # the CLI asks for it by this type


def test_passphrase_ignored_for_unencrypted_input() -> None:
    data = dump_rsa_key(rsa_key(1024), KeyFormat.PEM, public_only=False)
    assert same_key(load_rsa_key(data, passphrase=b"unused").key, rsa_key(1024))


# --- not RSA ----------------------------------------------------------------------------------


def _non_rsa() -> dict[str, tuple[bytes, str]]:
    p256 = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    pkcs8, spki = serialization.PrivateFormat.PKCS8, serialization.PublicFormat.SubjectPublicKeyInfo
    none = serialization.NoEncryption()
    return {
        "ec_pkcs8_pem": (p256.private_bytes(pem, pkcs8, none), "EC key (secp256r1)"),
        "ec_sec1_pem": (
            p256.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none),
            "EC key",
        ),
        "ec_spki_pem": (p256.public_key().public_bytes(pem, spki), "EC key"),
        "ec_pkcs8_der": (p256.private_bytes(der, pkcs8, none), "EC key"),
        "ed25519_pkcs8_pem": (ed.private_bytes(pem, pkcs8, none), "Ed25519"),
        "ed25519_spki_pem": (ed.public_key().public_bytes(pem, spki), "Ed25519"),
        "ed25519_pkcs8_der": (ed.private_bytes(der, pkcs8, none), "Ed25519"),
        "ed25519_encrypted": (
            ed.private_bytes(pem, pkcs8, serialization.BestAvailableEncryption(PASS)),
            "Ed25519",
        ),
    }


@pytest.mark.parametrize("case", list(_non_rsa()))
def test_non_rsa_keys_are_unsupported(case: str) -> None:
    data, name = _non_rsa()[case]
    with pytest.raises(UnsupportedError) as info:
        load_rsa_key(data, passphrase=PASS)
    assert name in str(info.value)
    assert_clean(str(info.value), data)


def test_certificate_pem_is_unsupported() -> None:
    data = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with pytest.raises(UnsupportedError, match="CERTIFICATE"):
        load_rsa_key(data)


def test_pem_with_several_blocks_prefers_the_private_key() -> None:
    key = rsa_key(1024)
    pub = dump_rsa_key(key, KeyFormat.PEM, public_only=True)
    priv = dump_rsa_key(key, KeyFormat.PEM, public_only=False)
    loaded = load_rsa_key(b"Bag Attributes\n" + pub + priv)
    assert loaded.private and same_key(loaded.key, key)


# --- garbage and damage -----------------------------------------------------------------------


def _damaged() -> dict[str, bytes]:
    key = rsa_key(2048)
    der = dump_rsa_key(key, KeyFormat.DER, public_only=False)
    pub_der = dump_rsa_key(key, KeyFormat.DER, public_only=True)
    blob = dump_rsa_key(key, KeyFormat.MSBLOB, public_only=False)
    pub_blob = dump_rsa_key(key, KeyFormat.MSBLOB, public_only=True)
    pem = dump_rsa_key(key, KeyFormat.PEM, public_only=False)
    lines = pem.splitlines(keepends=True)
    cases = {
        "empty": b"",
        "one_byte": b"\x00",
        "garbage": bytes(range(7, 200)),
        "text": b"this is not a key at all, just some words\n",
        "der_truncated_header": der[:1],
        "der_truncated_half": der[: len(der) // 2],
        "der_truncated_one": der[:-1],
        "der_trailing": der + b"\x00",
        "der_bad_tag": b"\x30\x03\x04\x01\x00",
        "der_indefinite": b"\x30\x80" + der[4:],
        "spki_truncated": pub_der[:-3],
        "der_integer_garbage": bytes.fromhex("3006020100020100"),
        "blob_truncated_header": blob[:6],
        "blob_truncated_prime1": blob[:300],
        "blob_trailing": blob + b"\x00",
        "blob_bad_magic": blob[:8] + b"RSA1" + blob[12:],
        "pubblob_truncated": pub_blob[:-1],
        "simpleblob": bytes.fromhex("010200000e660000") + b"\x00" * 260,
        "pem_truncated_body": b"".join(lines[:5] + lines[-1:]),
        "pem_no_end": b"".join(lines[:-1]),
        "pem_bad_base64": lines[0] + b"!!!!\n" + lines[-1],
        "over_size": b"\x30" + b"\x00" * MAX_KEY_FILE_SIZE,
    }
    return cases


@pytest.mark.parametrize("case", list(_damaged()))
def test_damaged_input(case: str) -> None:
    data = _damaged()[case]
    with pytest.raises(FormatError) as info:
        load_rsa_key(data)
    assert type(info.value) is FormatError, repr(info.value)
    assert_clean(str(info.value), data)


def test_damage_messages_say_where() -> None:
    cases = _damaged()
    expect = {
        "garbage": "not PEM, DER, a CryptoAPI key blob or .NET RSAKeyValue XML",
        "empty": "empty",
        "der_truncated_half": "truncated",
        "der_trailing": "trailing",
        "blob_truncated_prime1": "PRIVATEKEYBLOB: prime1 at offset 276: truncated",
        "blob_trailing": "trailing",
        "simpleblob": "SIMPLEBLOB is not an RSA key",
        "pem_no_end": "no END line",
    }
    for case, fragment in expect.items():
        with pytest.raises(FormatError) as info:
            load_rsa_key(cases[case])
        assert fragment in str(info.value), (case, str(info.value))


def test_every_truncation_of_a_blob_and_der_fails_cleanly() -> None:
    key = rsa_key(1024)
    for fmt in (KeyFormat.MSBLOB, KeyFormat.DER):
        for public in (False, True):
            data = dump_rsa_key(key, fmt, public_only=public)
            # Blobs may lose up to half the privateExponent (Windows accepts that): they then
            # still load, as the same key.
            for cut in range(len(data)):
                try:
                    loaded = load_rsa_key(data[:cut])
                except FormatError as e:
                    assert_clean(str(e), data[:cut])
                else:
                    assert fmt is KeyFormat.MSBLOB and not public
                    assert same_key(loaded.key, key)
                    assert cut >= len(data) - 64


# --- OpenSSL interop ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", BITS)
def test_openssl_byte_exact(bits: int, tmp_path: Path) -> None:
    key = rsa_key(bits)
    src = tmp_path / "pkcs1.pem"
    src.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    s = str(src)
    theirs = {
        (KeyFormat.PEM, False): support.openssl("pkey", "-in", s, "-outform", "PEM"),
        # "openssl pkey -outform DER" writes PKCS#1 for an RSA key (checked below); keyblob's
        # DER is PKCS#8 like its PEM, which is what "openssl pkcs8 -topk8 -nocrypt" writes.
        (KeyFormat.DER, False): support.openssl(
            "pkcs8", "-topk8", "-nocrypt", "-in", s, "-outform", "DER"
        ),
        (KeyFormat.PEM, True): support.openssl("pkey", "-in", s, "-pubout", "-outform", "PEM"),
        (KeyFormat.DER, True): support.openssl("pkey", "-in", s, "-pubout", "-outform", "DER"),
        (KeyFormat.MSBLOB, False): support.openssl("rsa", "-in", s, "-outform", "MSBLOB"),
        (KeyFormat.MSBLOB, True): support.openssl("rsa", "-in", s, "-pubout", "-outform", "MSBLOB"),
    }
    # OpenSSL 3 writes both blobs with aiKeyAlg CALG_RSA_KEYX, as keyblob does by default.
    assert theirs[KeyFormat.MSBLOB, False][:8] == bytes.fromhex("07020000 00a40000")
    assert theirs[KeyFormat.MSBLOB, True][:8] == bytes.fromhex("06020000 00a40000")
    for (fmt, public), data in theirs.items():
        assert dump_rsa_key(key, fmt, public_only=public) == data, (fmt, public)
        loaded = load_rsa_key(data)
        assert loaded.format is fmt
        assert same_key(loaded.key, key.public_key() if public else key)
    # PEM is exactly "openssl pkey"; DER is its PEM's contents.
    pem_body = b"".join(theirs[KeyFormat.PEM, False].splitlines()[1:-1])
    assert base64.b64decode(pem_body) == theirs[KeyFormat.DER, False]
    # Other structures OpenSSL writes read back too.
    for args in (
        ("pkey", "-in", s, "-outform", "DER"),
        ("rsa", "-in", s, "-traditional"),
        ("rsa", "-in", s, "-traditional", "-outform", "DER"),
        ("rsa", "-in", s, "-RSAPublicKey_out"),
        ("rsa", "-in", s, "-RSAPublicKey_out", "-outform", "DER"),
    ):
        loaded = load_rsa_key(support.openssl(*args))
        assert loaded.detail == "PKCS#1"
        assert same_key(loaded.key, key.public_key() if "-RSAPublicKey_out" in args else key)


@pytest.mark.parametrize("bits", BITS)
def test_openssl_reads_ours(bits: int, tmp_path: Path) -> None:
    key = rsa_key(bits)
    priv_blob = tmp_path / "ours.privblob"
    pub_blob = tmp_path / "ours.pubblob"
    priv_blob.write_bytes(dump_rsa_key(key, KeyFormat.MSBLOB, public_only=False))
    pub_blob.write_bytes(dump_rsa_key(key, KeyFormat.MSBLOB, public_only=True))
    # OpenSSL converts our blobs to exactly what we write for PEM / DER.
    assert support.openssl("pkey", "-inform", "MSBLOB", "-in", str(priv_blob)) == dump_rsa_key(
        key, KeyFormat.PEM, public_only=False
    )
    assert support.openssl(
        "rsa",
        "-pubin",
        "-inform",
        "MSBLOB",
        "-in",
        str(pub_blob),
        "-pubout",
        "-outform",
        "DER",
    ) == dump_rsa_key(key, KeyFormat.DER, public_only=True)
    # And our PEM to exactly our blob.
    pem = tmp_path / "ours.pem"
    pem.write_bytes(dump_rsa_key(key, KeyFormat.PEM, public_only=False))
    assert support.openssl("rsa", "-in", str(pem), "-outform", "MSBLOB") == priv_blob.read_bytes()
    check = support.openssl("rsa", "-inform", "MSBLOB", "-in", str(priv_blob), "-noout", "-check")
    assert b"RSA key ok" in check


def test_openssl_encrypted_pkcs8(tmp_path: Path) -> None:
    key = rsa_key(2048)
    src = tmp_path / "key.pem"
    src.write_bytes(dump_rsa_key(key, KeyFormat.PEM, public_only=False))
    for outform in ("PEM", "DER"):
        data = support.openssl(
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            str(src),
            "-passout",
            f"pass:{PASS.decode()}",
            "-outform",
            outform,
        )
        if outform == "PEM":
            assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        _check_encrypted(data)


def test_blob_private_exponent_shorter_than_full_is_normalised() -> None:
    key = rsa_key(1024)
    blob = dump_rsa_key(key, KeyFormat.MSBLOB, public_only=False)
    loaded = load_rsa_key(blob[:-10])
    assert same_key(loaded.key, key)
    assert PrivateKeyBlob.from_bytes(blob[:-10]).truncated
    assert dump_rsa_key(loaded.key, KeyFormat.MSBLOB, public_only=False) == blob
