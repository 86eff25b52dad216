"""The encrypted-data vectors (tests/vectors/data/, FORMAT.md section 7) through the package's
one-shot and streaming decryptors and the independent reader; valid ones re-encrypt to the
same bytes with their recorded salt."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

import support
from keyblob import files, stream
from keyblob.errors import FormatError, UnsupportedError, VerificationError
from keyblob.format.data import DataHeader

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
ROOT = HERE.parents[1]
MANIFEST = json.loads((DATA / "manifest.json").read_text("utf-8"))
CASES = MANIFEST["cases"]
IDS = [c["name"] for c in CASES]
VALID = [c for c in CASES if c["result"] == "valid"]
INVALID = [c for c in CASES if c["result"] != "valid"]


gv = support.load_script("gen_vectors", ROOT / "tools" / "gen_vectors.py")
ir = support.load_script("keyblob_independent_reader", HERE / "independent_reader.py")


def _data(case: dict[str, Any]) -> bytes:
    return (DATA / str(case["file"])).read_bytes()


def _ad(case: dict[str, Any]) -> bytes:
    return bytes.fromhex(case["associated_data"])


def _pattern(length: int) -> bytes:
    """The manifest's ``plaintext`` pattern, written out again here."""
    assert MANIFEST["plaintext"] == "bytes(i % 251 for i in range(length))"
    return bytes(i % 251 for i in range(length))


def _expect(case: dict[str, Any]) -> tuple[str, str | None, int | None, str | None]:
    return case["result"], case["stage"], case["plaintext_length"], case["plaintext_sha512"]


def _digest(plain: bytes) -> tuple[int, str]:
    return len(plain), hashlib.sha512(plain).hexdigest()


def test_the_manifest_covers_what_it_should() -> None:
    sizes = {(c["session_key"]["algorithm"], c["plaintext_length"]) for c in VALID}
    for algorithm in ("aes-256-gcm", "aes-128-gcm", "chacha20-poly1305"):
        for size in (0, 1, 16383, 16384, 16385, 3 * 16384 + 100):
            assert (algorithm, size) in sizes
    assert any(c["associated_data"] for c in VALID)
    assert {c["result"] for c in INVALID} == {"format_error", "unsupported", "verification_error"}
    stages = {c["stage"].split()[0] for c in INVALID}
    assert stages == {"header", "key", "commitment", "framing", "chunk"}
    on_disk = {f"{p.parent.name}/{p.name}" for p in DATA.glob("*/*")}
    assert on_disk == {c["file"] for c in CASES}
    assert sum(p.stat().st_size for p in DATA.rglob("*")) < 1_000_000
    for c in VALID:
        assert c["plaintext_sha512"] == hashlib.sha512(_pattern(c["plaintext_length"])).hexdigest()


# -- (a) the package, one shot ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_package_decrypt(case: dict[str, Any]) -> None:
    got = gv.run_data_case(case, _data(case))
    assert (got.result, got.stage, got.length, got.sha512) == _expect(case), case["description"]


# -- (b) the package, streaming --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_package_decrypt_stream(case: dict[str, Any]) -> None:
    sink = io.BytesIO()  # records everything the decryptor released
    key = gv.data_key(case)
    try:
        n = files.decrypt_stream(key, io.BytesIO(_data(case)), sink, associated_data=_ad(case))
    except UnsupportedError:
        got: tuple[str, str | None] = ("unsupported", "header")
    except FormatError as e:
        got = ("format_error", gv.data_stage(e))
    except VerificationError as e:
        got = ("verification_error", gv.data_stage(e))
    else:
        assert n == len(sink.getvalue())
        assert ("valid", None, *_digest(sink.getvalue())) == _expect(case)
        return
    assert got == (case["result"], case["stage"]), case["description"]
    # What was released before the error is a verified prefix (FORMAT.md 7.4 step 5).
    released = sink.getvalue()
    assert len(released) <= case["partial_plaintext"], case["description"]
    assert released == _pattern(len(released))
    if case["stage"] in ("header", "key", "commitment"):
        assert released == b""


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_package_decrypt_stream_calls_the_key_finder_only_for_a_good_header(
    case: dict[str, Any],
) -> None:
    """7.4 step 1: a malformed or unsupported header is refused before any key is loaded."""
    asked: list[DataHeader] = []

    def find(header: DataHeader) -> Any:
        asked.append(header)
        return gv.data_key(case)

    with contextlib.suppress(FormatError, VerificationError):
        files.decrypt_stream(find, io.BytesIO(_data(case)), io.BytesIO(), associated_data=_ad(case))
    assert len(asked) == (0 if case["stage"] == "header" else 1)


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_package_random_access(case: dict[str, Any]) -> None:
    reader = files.open_range(gv.data_key(case), io.BytesIO(_data(case)), associated_data=_ad(case))
    assert reader.size == case["plaintext_length"]
    plain = _pattern(reader.size)
    assert reader.read(0, reader.size) == plain
    for offset, length in ((0, 1), (16383, 2), (16384, 16384), (max(reader.size - 1, 0), 5)):
        assert reader.read(offset, length) == plain[offset : offset + length]


# -- (c) the independent reader ----------------------------------------------------------------


def _held(case: dict[str, Any]) -> Any:
    k = case["session_key"]
    codes = {"aes-256-gcm": 1, "aes-128-gcm": 2, "chacha20-poly1305": 3}
    return ir.HeldKey(
        name=k["name"],
        generation=k["generation"],
        key_id=bytes.fromhex(k["key_id"]),
        algorithm=codes[k["algorithm"]],
        key=bytes.fromhex(k["key"]),
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_independent_reader(case: dict[str, Any]) -> None:
    try:
        plain = ir.decrypt_data(_data(case), _held(case), _ad(case))
    except ir.Refused as e:
        got: tuple[str, str | None, int | None, str | None] = (e.result, e.stage, None, None)
    else:
        got = ("valid", None, *_digest(plain))
    assert got == _expect(case), case["description"]


def test_independent_reader_imports_nothing_from_keyblob() -> None:
    source = (HERE / "independent_reader.py").read_text("utf-8")
    assert "import keyblob" not in source
    assert "from keyblob" not in source


# -- valid vectors: the header round-trips and encryption reproduces the bytes ----------------


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_reencrypting_with_the_salt_gives_the_vector(case: dict[str, Any]) -> None:
    data = _data(case)
    key = gv.data_key(case)
    header = files.header_for(key)
    head = header.to_bytes()
    assert DataHeader.from_bytes(data[: len(head)]) == header
    assert files.read_header(data) == (header, len(head))
    salt = bytes.fromhex(case["salt"])
    assert data[len(head) : len(head) + stream.SALT_SIZE] == salt
    plain = _pattern(case["plaintext_length"])
    instance = files._INSTANCES[key.algorithm]
    context = header.context(_ad(case))
    raw = key.unsafe_raw_bytes()
    assert head + stream.encrypt_bytes(instance, raw, context, plain, _salt=salt) == data
    out = io.BytesIO()
    stream.encrypt_stream(instance, raw, context, io.BytesIO(plain), out, _salt=salt)
    assert head + out.getvalue() == data
    # And the published layout: 56 + n + 16 * (floor(n / 16384) + 1) payload bytes (7.2).
    n = len(plain)
    assert len(data) - len(head) == 56 + n + 16 * (n // 16384 + 1)


def test_gen_vectors_builds_the_committed_data_vectors() -> None:
    assert gv.check_data() == []
