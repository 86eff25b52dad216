"""Hypothesis properties of the native formats: round trips, canonical parsing, and that
arbitrary bytes never do anything but parse or raise FormatError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyblob.errors import FormatError
from keyblob.format import KeyBlob, PublicKeyFile, armor, dearmor
from keyblob.format.armor import BLOB, PUBLIC_KEY
from keyblob.format.blob import Header, Recipient
from keyblob.keys import Algorithm, KeyId, Suite

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"
names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"),
    st.text(NAME_CHARS, max_size=127),
)
key_ids = st.binary(min_size=16, max_size=16).map(KeyId)


@st.composite
def blobs(draw: st.DrawFn) -> KeyBlob:
    suite = draw(st.sampled_from([Suite.X25519, Suite.RSA, Suite.P256, Suite.PQ]))
    algorithm = draw(st.sampled_from(list(Algorithm)))
    header = Header(
        suite=suite,
        algorithm=algorithm,
        generation=draw(st.integers(1, 2**63 - 1)),
        created=draw(st.integers(0, 2**63 - 1)),
        key_id=draw(key_ids),
        signer_id=draw(key_ids),
        name=draw(names),
        revision=draw(st.one_of(st.just(0), st.integers(1, 2**32 - 1))),
    )
    if suite is Suite.X25519:
        wrapped_size = st.just(32 + algorithm.key_size + 16)
        sig_size = 64
    elif suite is Suite.P256:
        wrapped_size = st.just(65 + algorithm.key_size + 16)
        sig_size = 64
    elif suite is Suite.PQ:
        wrapped_size = st.just(1120 + algorithm.key_size + 16)
        sig_size = 3373
    else:
        wrapped_size = st.sampled_from([256, 384, 512])
        sig_size = draw(st.sampled_from([256, 384, 512]))
    ids = draw(st.lists(key_ids, min_size=1, max_size=16, unique=True))
    recipients = tuple(
        Recipient(rid, draw(st.binary(min_size=n, max_size=n)))
        for rid in ids
        for n in [draw(wrapped_size)]
    )
    signature = draw(st.binary(min_size=sig_size, max_size=sig_size))
    return KeyBlob(header, recipients, signature)


@given(blobs())
def test_blob_round_trip(blob: KeyBlob) -> None:
    data = blob.to_bytes()
    again = KeyBlob.from_bytes(data)
    assert again == blob
    assert again.to_bytes() == data
    assert dearmor(armor(data, BLOB), BLOB) == data


@given(blobs(), st.data())
def test_blob_mutations_parse_canonically_or_fail(blob: KeyBlob, data: st.DataObject) -> None:
    raw = bytearray(blob.to_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        parsed = KeyBlob.from_bytes(bytes(raw))
    except FormatError:
        return
    assert parsed.to_bytes() == bytes(raw)  # parse-then-emit is the identity


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_raise_format_error(raw: bytes) -> None:
    for parse in (KeyBlob.from_bytes, PublicKeyFile.from_bytes):
        try:
            parsed = parse(b"KBLB\x01" + raw if parse is KeyBlob.from_bytes else raw)
        except FormatError:
            continue
        assert parsed.to_bytes() in (raw, b"KBLB\x01" + raw)


@given(st.binary(max_size=600))
def test_armor_round_trip_and_strictness(raw: bytes) -> None:
    for kind in (BLOB, PUBLIC_KEY):
        text = armor(raw, kind)
        if raw:
            assert dearmor(text, kind) == raw
            assert dearmor(b"\n  " + text + b"\n\n", kind) == raw


@given(
    st.sampled_from([Suite.X25519]),
    names,
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
)
def test_public_key_file_round_trip(suite: Suite, label: str, kx: bytes, sg: bytes) -> None:
    pub = PublicKeyFile(suite, label, kx, sg)
    assert PublicKeyFile.from_bytes(pub.to_bytes()) == pub
    assert dearmor(armor(pub.to_bytes(), PUBLIC_KEY), PUBLIC_KEY) == pub.to_bytes()
