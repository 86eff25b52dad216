"""A bounded big-endian reader and writer shared by the native formats; no crypto, no I/O."""

from __future__ import annotations

from keyblob.errors import FormatError


class Reader:
    """Reads fields off a byte string, naming the field and offset in every error."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def data(self) -> bytes:
        return self._data

    @property
    def offset(self) -> int:
        return self._pos

    def fail(self, field: str, problem: str, offset: int | None = None) -> FormatError:
        at = self._pos if offset is None else offset
        return FormatError(f"{self._what}: {field} at offset {at}: {problem}")

    def take(self, n: int, field: str) -> bytes:
        if len(self._data) - self._pos < n:
            raise self.fail(
                field, f"truncated (need {n} bytes, have {len(self._data) - self._pos})"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail("end", f"{len(self._data) - self._pos} trailing bytes")


def u8(value: int) -> bytes:
    return value.to_bytes(1, "big")


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")
