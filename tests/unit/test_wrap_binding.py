"""P3, one header field at a time: a wrapped key pasted under a header that differs from its
own in a single field, validly re-signed by the legitimate signer, does not open.  Only the
wrap context (FORMAT.md 2.4) can catch it: the signature is good, the signer trusted, the
generation new.  (test_blobs' transplant changes the name and the key id together, so a wrap
context without the name would pass it.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from keyblob import VerificationError, blobs
from keyblob.format import KeyBlob, signed_message
from keyblob.keys import KeyId


@pytest.mark.parametrize(
    "change",
    [
        {"name": "beta"},
        {"key_id": KeyId(b"\x01" * 16)},
        {"generation": 2},
        {"created": 12345},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_wrap_opens_only_under_its_own_header(make_container, store, suite, change):
    c = make_container(suite=suite)
    blobs.generate(c, store, "alpha")
    alpha = KeyBlob.from_bytes(store.get("alpha", 1))
    header = replace(alpha.header, **change)
    forged = KeyBlob(header, alpha.recipients, c.sign(signed_message(header, alpha.recipients)))
    blobs.verify(c, forged.to_bytes(), unwrap=False)  # every check before the unwrap passes
    with pytest.raises(VerificationError, match="does not open"):
        blobs.import_blob(c, store, forged.to_bytes())
    assert store.latest(header.name) == (1 if header.name == "alpha" else None)
