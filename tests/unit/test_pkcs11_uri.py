"""keyblob.providers.pkcs11_uri: RFC 7512 ``pkcs11:`` URIs naming a token.

The RFC 7512 section 3 examples are copied verbatim (the RFC wraps them over several lines
for print; they are joined here).  Every refusal, the percent-encoding rules, duplicates,
empty values and the scheme's case have a case; a Hypothesis property checks that
``to_uri`` and ``parse_pkcs11_uri`` round-trip and that any text parses or raises
UsageError, nothing else.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from keyblob.errors import UsageError
from keyblob.providers.pkcs11_uri import TokenRef, parse_pkcs11_uri

# RFC 7512 section 3, in the RFC's order, each with what keyblob does with it.
RFC7512_SECTION3 = [
    ("pkcs11:", "names no token"),
    ("pkcs11:object=my-pubkey;type=public", "names no token"),
    ("pkcs11:object=my-key;type=private?pin-source=file:/etc/token", "pin-source"),
    (
        "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;"
        "manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;"
        "id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
        "pin-source",
    ),
    ("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11", "module-name"),
    ("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1", "no token"),
    (
        "pkcs11:token=Software%20PKCS%2311%20softtoken;"
        "manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
        "pin-value",
    ),
    ("pkcs11:slot-description=Sun%20Metaslot", "slot-description"),
    (
        "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;"
        "library-description=Soft%20Token%20Library;library-version=1.23",
        "library-manufacturer",
    ),
    (
        "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;"
        "id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
        "library-version",
    ),
    (
        "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
        "type may only be",
    ),
    (
        "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;"
        "object=my-certificate;type=cert",
        # 34 bytes once decoded: more than the 32 a CK_TOKEN_INFO label holds.
        "token is longer than the 32 bytes",
    ),
    (
        "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a"
        "?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
        "pin-source",
    ),
]


@pytest.mark.parametrize(("uri", "why"), RFC7512_SECTION3)
def test_rfc7512_section3_examples_are_refused_with_the_reason(uri: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_pkcs11_uri(uri)


def test_rfc7512_section3_examples_decode_once_the_refused_parts_are_gone() -> None:
    # Example 4 without its query, its type=cert and its empty serial=.
    ref = parse_pkcs11_uri(
        "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;"
        "manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=private;"
        "id=%69%95%3E%5C%F4%BD%EC%91"
    )
    assert ref == TokenRef(
        token="The Software PKCS#11 Softtoken",
        manufacturer="Snake Oil, Inc.",
        model="1.0",
        object="my-certificate",
        id=bytes.fromhex("69953E5CF4BDEC91"),
    )
    # Example 6 with a token; example 10 without library-version (mixed-case hex digits).
    ref = parse_pkcs11_uri(
        "pkcs11:token=t;object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1"
    )
    assert (ref.token, ref.object, ref.module) == ("t", "my-sign-key", "/mnt/libmypkcs11.so.1")
    ref = parse_pkcs11_uri(
        "pkcs11:token=My%20token%25%20created%20by%20Joe;id=%01%02%03%Ba%dd%Ca%fe%04%05%06"
    )
    assert ref.token == "My token% created by Joe"
    assert ref.id == bytes.fromhex("010203baddcafe040506")
    # Example 11 without type=cert.
    ref = parse_pkcs11_uri(
        "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate"
    )
    assert ref.token == "A name with a substring %;"
    # Example 12's label is too long for a token label (above); as a key label it decodes.
    ref = parse_pkcs11_uri(
        "pkcs11:token=t;object=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1"
    )
    assert ref.object == "Name with a small A with acute: \u00e1"


def test_minimal_forms() -> None:
    assert parse_pkcs11_uri("pkcs11:token=keyblob") == TokenRef(token="keyblob")
    assert parse_pkcs11_uri("pkcs11:serial=0123abcd") == TokenRef(serial="0123abcd")
    # RFC 7512 section 2.3: the query may be empty.
    assert parse_pkcs11_uri("pkcs11:token=a?") == TokenRef(token="a")


def test_scheme_and_names_are_case_insensitive() -> None:
    # RFC 3986 section 3.1 (schemes), RFC 5234 section 2.3 (the grammar's quoted names).
    for uri in ("PKCS11:token=a", "Pkcs11:TOKEN=a", "pkcs11:Token=a;TYPE=PRIVATE"):
        assert parse_pkcs11_uri(uri) == TokenRef(token="a")
    # Values keep their case.
    assert parse_pkcs11_uri("pkcs11:token=MiXed").token == "MiXed"


@pytest.mark.parametrize(
    "text",
    ["token=a", "pkcs12:token=a", "pkcs11 :token=a", "urn:pkcs11:token=a", "", " pkcs11:token=a"],
)
def test_not_a_pkcs11_uri(text: str) -> None:
    with pytest.raises(UsageError, match="not a pkcs11: URI"):
        parse_pkcs11_uri(text)


@pytest.mark.parametrize(
    ("uri", "value"),
    [
        ("pkcs11:token=a%2fb", "a/b"),  # lower-case hex digits
        ("pkcs11:token=a%2Fb", "a/b"),
        ("pkcs11:token=a&b", "a&b"),  # "&" may stand unencoded in the path
        ("pkcs11:token=:[]@!$'()*+,=", ":[]@!$'()*+,="),  # pk11-res-avail
        ("pkcs11:token=a%3Bb", "a;b"),
        ("pkcs11:token=%41%42", "AB"),
        ("pkcs11:token=-._~", "-._~"),
        ("pkcs11:token=%E2%82%AC", "\u20ac"),
    ],
)
def test_percent_decoding(uri: str, value: str) -> None:
    assert parse_pkcs11_uri(uri).token == value


def test_query_characters() -> None:
    # "/", "?" and "|" may stand unencoded in the query (RFC 7512 section 2.3).
    ref = parse_pkcs11_uri("pkcs11:token=a?module-path=/opt/p|k?11/lib.so")
    assert ref.module == "/opt/p|k?11/lib.so"
    assert parse_pkcs11_uri("pkcs11:token=a?module-path=%2Fopt%2Flib.so").module == "/opt/lib.so"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("pkcs11:token=a%2", "bad %-escape in the value of token"),
        ("pkcs11:token=a%", "bad %-escape"),
        ("pkcs11:token=a%zz", "bad %-escape"),
        ("pkcs11:token=a%+1", "bad %-escape"),
        ("pkcs11:token=%C3", "token is not UTF-8"),
        ("pkcs11:token=%FF", "not UTF-8"),
        ("pkcs11:token=%ED%A0%80", "not UTF-8"),  # an encoded surrogate
        ("pkcs11:token=a%00", "control character"),
        ("pkcs11:token=a%0Ab", "control character"),
        ("pkcs11:token=a%C2%85", "control character"),  # U+0085, a C1 control
        ("pkcs11:token=a b", "must be %-encoded"),
        ("pkcs11:token=a#b", "must be %-encoded"),
        ("pkcs11:token=\u00e1", "must be %-encoded"),
        ("pkcs11:token=a/b", "must be %-encoded"),  # "/" only in the query
        ("pkcs11:token=a|b", "must be %-encoded"),
        ("pkcs11:token=a?module-path=/x;y", "value of module-path must be %-encoded"),
        ("pkcs11:token=a?x-v=a b", "value of x-v must be %-encoded"),
    ],
)
def test_encoding_refusals(uri: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_pkcs11_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "pkcs11:token=a;token=b",
        "pkcs11:token=a;TOKEN=a",
        "pkcs11:token=a;object=k;object=k",
        "pkcs11:token=a?module-path=/a&module-path=/b",
        "pkcs11:token=a?x-v=1&x-v=1",
    ],
)
def test_an_attribute_given_twice_is_refused(uri: str) -> None:
    with pytest.raises(UsageError, match="given twice"):
        parse_pkcs11_uri(uri)


def _with(name: str, value: str) -> str:
    """A URI that names a token and gives ``name=value`` (alone if it names the token)."""
    if name in ("token", "serial"):
        return f"pkcs11:{name}={value}"
    return f"pkcs11:token=a;{name}={value}"


@pytest.mark.parametrize("name", ["token", "serial", "object", "manufacturer", "model", "id"])
def test_empty_path_values_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match=f"{name} is empty"):
        parse_pkcs11_uri(_with(name, ""))


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("pkcs11:token=a?module-path=", "module-path is empty"),
        ("pkcs11:token=a;", "empty or nameless attribute"),
        ("pkcs11:token=a;;object=b", "empty or nameless"),
        ("pkcs11:;token=a", "empty or nameless"),
        ("pkcs11:=a", "empty or nameless"),
        ("pkcs11:token", "empty or nameless"),
        ("pkcs11:token=a?&module-path=/x", "empty or nameless"),
        ("pkcs11:tok.en=a", "bad attribute name in the path"),
        ("pkcs11:token=a?x.v=1", "bad attribute name in the query"),
    ],
)
def test_malformed_attributes(uri: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_pkcs11_uri(uri)


PIN = "s3cr3t-PIN-4711"


@pytest.mark.parametrize(
    "uri",
    [
        f"pkcs11:token=a?pin-value={PIN}",
        f"pkcs11:token=a?module-path=/x&pin-value={PIN}",
        f"pkcs11:token=a?pin-value=%zz{PIN}",  # refused before its value is decoded
        f"pkcs11:token=a?pin-value={PIN}&pin-value={PIN}",
        f"pkcs11:token=a;pin-value={PIN}",
        f"pkcs11:serial=1?pin-source=file:/pin&pin-value={PIN}",
    ],
)
def test_pin_value_is_refused_without_echoing_it(uri: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_pkcs11_uri(uri)
    message = str(caught.value)
    assert PIN not in message and "%zz" not in message
    if "pin-value=" + PIN + "&pin-value" not in uri:
        assert "pin-value refused" in message
        assert "process list" in message and "KEYBLOB_PIN or --pin-file" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("pkcs11:token=a?pin-source=file:/etc/pin", "pin-source is not supported.*--pin-file"),
        ("pkcs11:token=a?pin-source=|/bin/get-pin", "pin-source"),
        ("pkcs11:token=a?module-name=softhsm2", "module-name .*module-path="),
        ("pkcs11:token=a?module-path=lib/softhsm2.so", "module-path must be an absolute path"),
        ("pkcs11:token=a;module-path=/x.so", "module-path belongs in the query"),
        ("pkcs11:token=a;slot-id=3", "slot-id is not supported"),
        ("pkcs11:token=a;slot-manufacturer=x", "slot-manufacturer"),
        ("pkcs11:token=a;library-description=x", "library-description"),
        ("pkcs11:token=a;type=cert", "type may only be"),
        ("pkcs11:token=a;type=secret-key", "type may only be"),
        ("pkcs11:token=a;type=data", "type may only be"),
        ("pkcs11:token=a;type=", "type is empty"),
        ("pkcs11:token=a;vendor-aaa=value-a", "unknown path attribute vendor-aaa"),
        ("pkcs11:token=a;x-vendor=1", "unknown path attribute x-vendor"),
        ("pkcs11:token=a?modulepath=/x.so", "unknown query attribute modulepath"),
        ("pkcs11:token=a?token=b", "unknown query attribute token"),
        ("pkcs11:object=k?module-path=/x.so", "names no token"),
        ("pkcs11:manufacturer=m;model=x", "names no token"),
    ],
)
def test_refusals(uri: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_pkcs11_uri(uri)


def test_vendor_query_attributes_are_ignored() -> None:
    ref = parse_pkcs11_uri("pkcs11:token=a?x-foo=bar&module-path=/m.so&X-Other=%41")
    assert ref == TokenRef(token="a", module="/m.so")


def test_token_info_sizes() -> None:
    # CK_TOKEN_INFO holds a 32-byte label and manufacturer, a 16-byte serial and model.
    assert parse_pkcs11_uri("pkcs11:token=" + "a" * 32).token == "a" * 32
    assert parse_pkcs11_uri("pkcs11:token=" + "%C3%A1" * 16).token == "\u00e1" * 16
    for name, size in (("token", 32), ("manufacturer", 32), ("serial", 16), ("model", 16)):
        assert getattr(parse_pkcs11_uri(_with(name, "%C3%A1" * (size // 2))), name)
        with pytest.raises(UsageError, match=f"{name} is longer than the {size} bytes"):
            parse_pkcs11_uri(_with(name, "%C3%A1" * (size // 2) + "x"))
    # A key label (CKA_LABEL) has no fixed size.
    assert parse_pkcs11_uri("pkcs11:token=a;object=" + "k" * 200).object == "k" * 200


def test_overlong_input_is_refused_early() -> None:
    with pytest.raises(UsageError, match="longer than 4096"):
        parse_pkcs11_uri("pkcs11:token=a;object=" + "k" * 5000)


def test_messages_never_hold_a_value() -> None:
    label = "Very-Distinctive-Label"
    for uri in (
        f"pkcs11:token={label}%",
        f"pkcs11:token={label}%FF",
        f"pkcs11:token={label};token={label}",
        f"pkcs11:token={label};x-{label}=1",
        f"pkcs11:token={label}?module-path={label}",
    ):
        with pytest.raises(UsageError) as caught:
            parse_pkcs11_uri(uri)
        assert label not in str(caught.value)


def test_the_module_is_pure() -> None:
    # It must load where python-pkcs11 is not installed: it never imports it.
    code = (
        "import sys; import keyblob.providers.pkcs11_uri; "
        "assert 'pkcs11' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_to_uri_is_canonical() -> None:
    ref = TokenRef(token="My token", serial="01", object="k;1", id=b"\x00\xff", module="/m.so")
    assert ref.to_uri() == (
        "pkcs11:token=My%20token;serial=01;object=k%3B1;id=%00%FF?module-path=%2Fm.so"
    )
    assert parse_pkcs11_uri(ref.to_uri()) == ref


def _text(max_bytes: int | None = None) -> st.SearchStrategy[str]:
    chars = st.characters(blacklist_categories=("Cc", "Cs"))
    text = st.text(chars, min_size=1, max_size=max_bytes or 40)
    if max_bytes is None:
        return text
    return text.filter(lambda s: len(s.encode()) <= max_bytes)


@given(
    token=st.none() | _text(32),
    serial=st.none() | _text(16),
    module=st.none() | _text().map(lambda s: "/" + s),
    object_=st.none() | _text(),
    manufacturer=st.none() | _text(32),
    model=st.none() | _text(16),
    key_id=st.none() | st.binary(min_size=1, max_size=20),
)
def test_to_uri_round_trips(
    token: str | None,
    serial: str | None,
    module: str | None,
    object_: str | None,
    manufacturer: str | None,
    model: str | None,
    key_id: bytes | None,
) -> None:
    assume(token is not None or serial is not None)
    ref = TokenRef(
        token=token,
        serial=serial,
        module=module,
        object=object_,
        manufacturer=manufacturer,
        model=model,
        id=key_id,
    )
    assert parse_pkcs11_uri(ref.to_uri()) == ref


@given(st.text(max_size=200) | st.text(max_size=200).map(lambda s: "pkcs11:" + s))
def test_any_text_parses_or_raises_usage_error(text: str) -> None:
    try:
        ref = parse_pkcs11_uri(text)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert ref.token is not None or ref.serial is not None
