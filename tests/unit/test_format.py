"""Strict parsing of the native formats: each breakage names its field (FORMAT.md 2.8)."""

from __future__ import annotations

import re

import pytest

from keyblob.errors import FormatError, UnsupportedError, UsageError
from keyblob.format import KeyBlob, PublicKeyFile, armor, dearmor
from keyblob.format.armor import BLOB
from keyblob.format.blob import MAX_BLOB_SIZE, Header, Recipient
from keyblob.keys import Algorithm, KeyId, Suite

HEADER = Header(
    Suite.X25519,
    Algorithm.AES_256_GCM,
    7,
    1_700_000_000,
    KeyId(b"k" * 16),
    KeyId(b"s" * 16),
    "payroll",
)
BLOB_OBJ = KeyBlob(HEADER, (Recipient(KeyId(b"r" * 16), b"w" * 80),), b"g" * 64)
RAW = BLOB_OBJ.to_bytes()


def patched(offset: int, value: bytes) -> bytes:
    return RAW[:offset] + value + RAW[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (patched(0, b"KBLC"), FormatError, "magic at offset 0"),
        (patched(4, b"\x02"), UnsupportedError, "version 2"),
        (b"KBLB\x02", UnsupportedError, "version 2"),
        (patched(5, b"\x03"), FormatError, "recipient[0].wrapped_len"),  # 80 does not fit pq
        (patched(5, b"\x09"), FormatError, "suite at offset 5"),
        (patched(6, b"\x04"), FormatError, "algorithm at offset 6"),
        (patched(7, b"\x80"), FormatError, "flags at offset 7: reserved bits"),
        (patched(8, bytes(8)), FormatError, "generation at offset 8"),
        (patched(8, b"\x80" + bytes(7)), FormatError, "generation at offset 8"),
        (patched(16, b"\x80" + bytes(7)), FormatError, "created at offset 16"),
        (patched(56, b"\x00"), FormatError, "name_len at offset 56"),
        (patched(57, b"P"), FormatError, "name at offset 57"),
        (patched(57, b"."), FormatError, "name at offset 57"),
        (patched(64, b"\x00"), FormatError, "recipient_count at offset 64"),
        (patched(64, b"\x11"), FormatError, "recipient_count"),
        (patched(81, b"\x00\x4f"), FormatError, "recipient[0].wrapped_len at offset 81"),
        (patched(163, b"\x00\x41"), FormatError, "signature_len at offset 163"),
        (RAW + b"\x00", FormatError, "1 trailing bytes"),
        (RAW[:-1], FormatError, "signature at offset 165: truncated"),
        (b"", FormatError, "magic at offset 0: truncated"),
        # Fields in order, first failure wins (FORMAT.md 2.2): a cut blob names its field.
        (b"KBLB\x01\x03", FormatError, "algorithm at offset 6: truncated"),
        (b"KBLB\x01\x01\x01\x80", FormatError, "flags at offset 7: reserved bits"),
        (RAW[:12], FormatError, "generation at offset 8: truncated"),
        (RAW + bytes(MAX_BLOB_SIZE), FormatError, "limit"),
    ],
)
def test_strict_parse(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        KeyBlob.from_bytes(data)


def test_layout_offsets() -> None:
    assert RAW[:8] == b"KBLB\x01\x01\x01\x00"
    assert RAW[56] == 7 and RAW[57:64] == b"payroll" and RAW[64] == 1
    fields = {f.name: f for f in BLOB_OBJ.fields()}
    assert fields["signature"].offset == 165 and not fields["signature"].signed
    assert fields["recipient[0].wrapped"].signed
    assert BLOB_OBJ.signed_message() == b"keyblob/v1/blob-signature\x00" + RAW[:163]
    assert HEADER.wrap_context(KeyId(b"r" * 16)) == b"keyblob/v1/wrap\x00" + RAW[:64] + b"r" * 16


def test_duplicate_recipient_refused() -> None:
    r = Recipient(KeyId(b"r" * 16), b"w" * 80)
    with pytest.raises(UsageError):
        KeyBlob(HEADER, (r, r), b"g" * 64)
    raw = RAW[:64] + b"\x02" + RAW[65:163] + RAW[65:163] + RAW[163:]
    with pytest.raises(FormatError, match="duplicate recipient"):
        KeyBlob.from_bytes(raw)


def test_header_checks_values() -> None:
    Header(Suite.PQ, Algorithm.AES_256_GCM, 1, 0, KeyId(b"k" * 16), KeyId(b"s" * 16), "x")
    with pytest.raises(UsageError):
        Header(Suite.X25519, Algorithm.AES_256_GCM, 0, 0, KeyId(b"k" * 16), KeyId(b"s" * 16), "x")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(b"\n", b"\r\n"),
        lambda t: t.replace(b"-----BEGIN KEYBLOB-----", b"-----BEGIN KEYBLOB PUBLIC KEY-----"),
        lambda t: t.replace(b"-----END KEYBLOB-----\n", b""),
        lambda t: t[:30] + b"\n" + t[30:],
        lambda t: t[:40] + b"!" + t[41:],
        lambda t: t.replace(b"=\n", b"\n"),
        lambda t: t + b"trailing",
    ],
)
def test_armor_is_canonical_only(mangle) -> None:
    text = armor(RAW, BLOB)
    assert dearmor(text, BLOB) == RAW
    with pytest.raises(FormatError, match="armor"):
        dearmor(mangle(text), BLOB)


def test_public_key_file_strict() -> None:
    pub = PublicKeyFile(Suite.X25519, "alice", b"x" * 32, b"e" * 32)
    raw = pub.to_bytes()
    assert PublicKeyFile.from_bytes(raw) == pub
    with pytest.raises(FormatError, match="reserved"):
        PublicKeyFile.from_bytes(raw[:6] + b"\x00\x01" + raw[8:])
    with pytest.raises(FormatError, match="trailing"):
        PublicKeyFile.from_bytes(raw + b"\x00")
    with pytest.raises(FormatError, match="exchange_len"):
        PublicKeyFile.from_bytes(raw[:14] + b"\x00\x1f" + raw[16:])
    assert pub.exchange_id != pub.signature_id


# -- the revision (FORMAT.md 2.2.5, 2.2.11) ----------------------------------------------------

REVISED = KeyBlob(
    Header(
        Suite.X25519,
        Algorithm.AES_256_GCM,
        7,
        1_700_000_000,
        KeyId(b"k" * 16),
        KeyId(b"s" * 16),
        "payroll",
        5,
    ),
    (Recipient(KeyId(b"r" * 16), b"w" * 80),),
    b"g" * 64,
)


def test_revision_zero_is_the_unrevised_encoding() -> None:
    assert RAW[7] == 0
    assert KeyBlob.from_bytes(RAW).header.revision == 0


def test_a_revised_blob_has_flag_bit_0_and_a_u32_after_the_name() -> None:
    raw = REVISED.to_bytes()
    assert raw[7] == 0x01
    assert raw[64:68] == (5).to_bytes(4, "big")  # name "payroll" ends at 57 + 7
    assert raw[:64] == RAW[:7] + b"\x01" + RAW[8:64]
    assert raw[68:] == RAW[64:]
    parsed = KeyBlob.from_bytes(raw)
    assert parsed.header.revision == 5
    assert parsed.to_bytes() == raw
    # the revision is in the core header: the wrap context and the signed bytes
    assert parsed.header.core_bytes() == raw[:68]
    assert parsed.header.wrap_context(KeyId(b"r" * 16)).endswith(raw[:68] + b"r" * 16)
    assert parsed.signed_message().endswith(raw[: -2 - 64])
    names = [f.name for f in parsed.fields()]
    assert names[names.index("name") + 1] == "revision"
    assert [f.offset for f in parsed.fields() if f.name == "revision"] == [64]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # one encoding per value: revision 0 is written without the flag
        (REVISED.to_bytes()[:64] + bytes(4) + REVISED.to_bytes()[68:], "revision at offset 64"),
        (REVISED.to_bytes()[:7] + b"\x03" + REVISED.to_bytes()[8:], "flags at offset 7"),
        (REVISED.to_bytes()[:66], "revision at offset 64: truncated"),
        # the flag set on an unrevised blob: the recipient bytes are misread and disagree
        (RAW[:7] + b"\x01" + RAW[8:], "recipient"),
    ],
)
def test_malformed_revisions_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=re.escape(message)):
        KeyBlob.from_bytes(data)


@pytest.mark.parametrize("revision", [-1, 2**32, True, "1"])
def test_a_header_refuses_a_revision_out_of_range(revision: object) -> None:
    with pytest.raises(UsageError, match="revision"):
        Header(
            Suite.X25519,
            Algorithm.AES_256_GCM,
            7,
            0,
            KeyId(b"k" * 16),
            KeyId(b"s" * 16),
            "x",
            revision,  # type: ignore[arg-type]
        )


def test_the_largest_revision_round_trips() -> None:
    header = Header(
        Suite.X25519,
        Algorithm.AES_256_GCM,
        7,
        0,
        KeyId(b"k" * 16),
        KeyId(b"s" * 16),
        "x",
        2**32 - 1,
    )
    blob = KeyBlob(header, (Recipient(KeyId(b"r" * 16), b"w" * 80),), b"g" * 64)
    assert KeyBlob.from_bytes(blob.to_bytes()).header.revision == 2**32 - 1
