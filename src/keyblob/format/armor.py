"""The text armor for key blobs and public key files (FORMAT.md 4): PEM-like, canonical."""

from __future__ import annotations

import base64
import binascii

from keyblob.errors import FormatError

BLOB = "KEYBLOB"
PUBLIC_KEY = "KEYBLOB PUBLIC KEY"
LINE = 64
#: Armor of the largest blob the binary limit admits (32768 bytes) is 44421 bytes.
MAX_ARMOR_SIZE = 65536


def armor(data: bytes, kind: str) -> bytes:
    """Encode ``data`` as armored text: BEGIN line, base64 in 64-column lines, END line."""
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i : i + LINE] for i in range(0, len(text), LINE)]
    return "".join(
        f"{line}\n" for line in [f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"]
    ).encode("ascii")


def is_armored(data: bytes) -> bool:
    return data.lstrip(b" \t\r\n").startswith(b"-----BEGIN ")


def dearmor(data: bytes, kind: str) -> bytes:
    """Decode armored text of ``kind``; only the canonical encoding is accepted.

    White space before the BEGIN line and after the END line is ignored, nothing else.

    Raises:
        FormatError: not canonical armor of that kind.
    """
    if len(data) > MAX_ARMOR_SIZE:
        raise FormatError(f"armor: over the {MAX_ARMOR_SIZE}-byte limit")
    try:
        text = data.decode("ascii").strip(" \t\r\n")
    except UnicodeDecodeError:
        raise FormatError("armor: not ASCII text") from None
    lines = text.split("\n")
    begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    if len(lines) < 3 or lines[0] != begin:
        raise FormatError(f"armor: expected the line {begin!r} first")
    if lines[-1] != end:
        raise FormatError(f"armor: expected the line {end!r} last")
    body = lines[1:-1]
    if any(len(line) != LINE for line in body[:-1]) or not 0 < len(body[-1]) <= LINE:
        raise FormatError(f"armor: base64 lines must be {LINE} characters, the last 1 to {LINE}")
    try:
        decoded = binascii.a2b_base64("".join(body).encode("ascii"), strict_mode=True)
    except binascii.Error:
        raise FormatError("armor: invalid base64") from None
    if armor(decoded, kind) != (text + "\n").encode("ascii"):
        raise FormatError("armor: not in canonical form")
    return decoded
