"""mscapi.check_ciphertext: what capi decrypt checks before its first byte (issue 12 item 5)."""

from __future__ import annotations

import pytest

from keyblob import mscapi
from keyblob.errors import UsageError, VerificationError

AES = mscapi.CapiKey.new(mscapi.AlgId.AES_256, bytes(32))


@pytest.mark.parametrize("size", [0, 1, 15, 17, 63])
def test_a_length_that_is_not_whole_blocks_is_refused(size):
    with pytest.raises(VerificationError, match=f"{size} bytes is not a whole"):
        mscapi.check_ciphertext(AES, size)


@pytest.mark.parametrize("size", [None, 16, 64])
def test_whole_blocks_or_an_unknown_size_pass(size):
    mscapi.check_ciphertext(AES, size)


def test_a_bad_iv_is_refused():
    with pytest.raises(UsageError, match="IV is 16 bytes"):
        mscapi.check_ciphertext(AES, 16, iv=bytes(8))


def test_a_stream_cipher_has_no_blocks():
    rc4 = mscapi.CapiKey.new(mscapi.AlgId.RC4, bytes(16))
    mscapi.check_ciphertext(rc4, 7)
    with pytest.raises(UsageError, match="takes no IV"):
        mscapi.check_ciphertext(rc4, 7, iv=bytes(16))
