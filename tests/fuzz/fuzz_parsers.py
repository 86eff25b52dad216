"""Coverage-guided fuzzing (atheris) of every parser keyblob exposes to untrusted bytes.

The property: any input either parses -- and then re-encodes to the same bytes where the
format is canonical -- or raises a KeyblobError.  Any other exception is a bug (a crash,
an IndexError from a missing length check, a traceback a user would see).

Run by tests/fuzz/test_fuzz.py for a bounded time with the committed vectors as the seed
corpus; by hand: ``python tests/fuzz/fuzz_parsers.py CORPUS_DIR -max_total_time=300``.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from keyblob import files, mscapi, stream
    from keyblob.errors import KeyblobError
    from keyblob.format import KeyBlob, PublicKeyFile
    from keyblob.format.armor import BLOB, PUBLIC_KEY, dearmor
    from keyblob.format.data import DataHeader

KEY = bytes(range(32))


def _canonical(parse, data: bytes) -> None:  # type: ignore[no-untyped-def]
    parsed = parse(data)
    if parsed.to_bytes() != data:
        raise AssertionError(f"{parse.__qualname__}: parse-then-emit changed the bytes")


TARGETS = [
    lambda d: _canonical(KeyBlob.from_bytes, d),
    lambda d: _canonical(PublicKeyFile.from_bytes, d),
    lambda d: dearmor(d, BLOB),
    lambda d: dearmor(d, PUBLIC_KEY),
    lambda d: _canonical(DataHeader.from_bytes, d),
    files.read_header,
    lambda d: stream.decrypt_bytes(stream.COBBLESTONE_256, KEY, b"", d),
    mscapi.describe,
    mscapi.load_rsa_key,
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    with contextlib.suppress(KeyblobError):  # the documented way to refuse bad input
        target(data[1:])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
