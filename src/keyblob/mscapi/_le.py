"""A bounded little-endian reader for CryptoAPI blobs; every error names field and offset.

``format/_wire.py`` is big-endian and belongs to the native formats; CryptoAPI is the only
little-endian format in keyblob, so its reader lives here.
"""

from __future__ import annotations

from keyblob.errors import FormatError


class Reader:
    """Reads little-endian fields off a byte string."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def offset(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def fail(self, field: str, problem: str, offset: int | None = None) -> FormatError:
        at = self._pos if offset is None else offset
        return FormatError(f"{self._what}: {field} at offset {at}: {problem}")

    def take(self, n: int, field: str) -> bytes:
        if self.remaining < n:
            raise self.fail(field, f"truncated (need {n} bytes, have {self.remaining})")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail("end", f"{self.remaining} trailing bytes")


def le(value: int, size: int) -> bytes:
    """``value`` as ``size`` little-endian bytes (the caller has checked it fits)."""
    return value.to_bytes(size, "little")
