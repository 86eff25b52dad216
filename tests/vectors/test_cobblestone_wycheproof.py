"""Every Wycheproof vector for C2SP chunked encryption (Cobblestone-128 and -256), through
the streaming, one-shot and random-access decryptors (third-party data, read in place)."""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from typing import Any

import pytest

from keyblob import stream
from keyblob.errors import KeyblobError, UsageError, VerificationError
from support import shared_vectors

FILES = {
    "c2sp_chunked_encryption_aes_256_gcm_test.json": stream.COBBLESTONE_256,
    "c2sp_chunked_encryption_aes_128_gcm_test.json": stream.COBBLESTONE_128,
}


def load(name: str) -> tuple[stream.Instance, list[dict[str, Any]]]:
    doc = json.loads((shared_vectors("wycheproof") / name).read_text())
    assert doc["numberOfTests"] == 35
    (group,) = doc["testGroups"]
    assert group["sha"] == "SHA-512"
    instance = FILES[name]
    assert group["aead"] == instance.aead_name.decode()
    return instance, group["tests"]


class Limited(io.RawIOBase):
    """A sink that records what a streaming decryptor released."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)


@pytest.mark.parametrize("name", list(FILES))
def test_every_vector(name: str) -> None:
    instance, tests = load(name)
    assert len(tests) == 35
    for t in tests:
        key, ctx = bytes.fromhex(t["key"]), bytes.fromhex(t["ctx"])
        ct = zlib.decompress(bytes.fromhex(t["ct"]))
        flags = set(t["flags"])
        where = f"tcId {t['tcId']} ({t['comment']})"
        expected_error = UsageError if "InvalidKeySize" in flags else VerificationError

        # Streaming: a valid prefix at most, then an error, for invalid vectors.
        sink = Limited()
        if t["result"] == "valid":
            assert stream.decrypt_stream(instance, key, ctx, io.BytesIO(ct), sink) == t["msgLength"]
            assert hashlib.sha512(sink.data).hexdigest() == t["msgSha512"], where
        else:
            with pytest.raises(expected_error):
                stream.decrypt_stream(instance, key, ctx, io.BytesIO(ct), sink)
            if "PartialPlaintext" in flags:
                assert len(sink.data) <= t["msgLength"], where
                prefix = hashlib.sha512(sink.data).hexdigest()
                assert len(sink.data) < t["msgLength"] or prefix == t["msgSha512"], where
            else:
                assert len(sink.data) == 0, where

        # One-shot: all or nothing.
        if t["result"] == "valid":
            plain = stream.decrypt_bytes(instance, key, ctx, ct)
            assert hashlib.sha512(plain).hexdigest() == t["msgSha512"], where
        else:
            with pytest.raises(expected_error):
                stream.decrypt_bytes(instance, key, ctx, ct)

        # Random access: opening authenticates the length via the final chunk.
        if t["result"] == "valid":
            reader = stream.RandomAccessReader(instance, key, ctx, io.BytesIO(ct))
            assert reader.size == t["msgLength"], where
            assert hashlib.sha512(reader.read(0, reader.size)).hexdigest() == t["msgSha512"]
        elif "ValidFinalChunk" in flags:
            reader = stream.RandomAccessReader(instance, key, ctx, io.BytesIO(ct))
            with pytest.raises(VerificationError):
                reader.read(0, reader.size)
        else:
            with pytest.raises(KeyblobError):
                reader = stream.RandomAccessReader(instance, key, ctx, io.BytesIO(ct))
                reader.read(0, reader.size)


@pytest.mark.parametrize("name", list(FILES))
def test_encryption_matches_the_vectors_given_the_salt(name: str) -> None:
    """Encrypting the decrypted message again with the vector's salt gives its bytes."""
    instance, tests = load(name)
    for t in tests:
        if t["result"] != "valid":
            continue
        key, ctx = bytes.fromhex(t["key"]), bytes.fromhex(t["ctx"])
        ct = zlib.decompress(bytes.fromhex(t["ct"]))
        plain = stream.decrypt_bytes(instance, key, ctx, ct)
        salt = ct[: stream.SALT_SIZE]
        assert stream.encrypt_bytes(instance, key, ctx, plain, _salt=salt) == ct
        out = io.BytesIO()
        stream.encrypt_stream(instance, key, ctx, io.BytesIO(plain), out, _salt=salt)
        assert out.getvalue() == ct
