"""Hypothesis properties of the state's node encodings (FORMAT.md 5.2.2): whatever parses
re-encodes to the same bytes, every truncation and every extension of a node is refused,
and arbitrary bytes never do anything but parse or raise ValueError."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from keyblob.providers import statedb

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"
names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"),
    st.text(NAME_CHARS, max_size=127),
)


@st.composite
def buckets(draw: st.DrawFn) -> tuple[str, dict[str, int]]:
    """Entries that share a bucket: names on one 16-bit prefix, found by a suffix search."""
    first = draw(names)
    pos = hashlib.sha256(first.encode()).hexdigest()[:4]
    entries = {first: draw(st.integers(1, 2**63 - 1))}
    for i in range(draw(st.integers(0, 2)) * 70000):
        candidate = f"{first[:100]}-{i}"
        if hashlib.sha256(candidate.encode()).hexdigest()[:4] == pos:
            entries[candidate] = draw(st.integers(1, 2**63 - 1))
    return pos, entries


def _decode(body: bytes, pos: str) -> object:
    return statedb.decode_bucket(body, pos) if len(pos) == 4 else statedb.decode_internal(body)


@given(buckets())
def test_a_bucket_round_trips_and_every_truncation_or_extension_is_refused(case):
    pos, entries = case
    body = statedb.encode_bucket(entries)
    assert statedb.decode_bucket(body, pos) == entries
    for cut in range(len(body)):
        try:
            statedb.decode_bucket(body[:cut], pos)
        except ValueError:
            continue
        raise AssertionError(f"a bucket cut at {cut} parsed")
    for extra in (b"\x00", b"\x01" * 9):
        try:
            statedb.decode_bucket(body + extra, pos)
        except ValueError:
            continue
        raise AssertionError("a bucket with bytes after it parsed")


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=16, max_size=16))
def test_an_internal_node_round_trips(children):
    body = statedb.encode_internal(children)
    if all(c == statedb.ZERO for c in children):
        try:
            statedb.decode_internal(body)
        except ValueError:
            return
        raise AssertionError("an internal node with no child parsed")
    assert statedb.decode_internal(body) == children
    assert statedb.encode_internal(statedb.decode_internal(body)) == body


@given(st.binary(max_size=600), st.sampled_from(["", "a", "3f0", "0000", "ffff", "93ba"]))
def test_arbitrary_bytes_parse_canonically_or_raise_value_error(data, pos):
    try:
        node = _decode(data, pos)
    except ValueError:
        return
    again = statedb.encode_bucket(node) if isinstance(node, dict) else statedb.encode_internal(node)
    assert again == data


@given(
    names,
    st.integers(1, 2**63 - 1),
    st.integers(1, 2**32 - 1),
)
def test_a_revision_bucket_round_trips_and_its_key_reads_back(name, generation, revision):
    """FORMAT.md 5.2.8: the key ``name@generation`` parses back to its parts, and a bucket of
    it round-trips under the revisions tree's rules (and is refused as a marks bucket)."""
    key = statedb.revision_key(name, generation)
    assert statedb.parse_revision_key(key) == (name, generation)
    pos = hashlib.sha256(key.encode()).hexdigest()[:4]
    body = statedb.encode_bucket({key: revision})
    assert statedb.decode_bucket(body, pos, statedb.REVISIONS) == {key: revision}
    try:
        statedb.decode_bucket(body, pos)
    except ValueError:
        pass
    else:
        raise AssertionError("a revision bucket parsed as a marks bucket")
    for cut in range(len(body)):
        try:
            statedb.decode_bucket(body[:cut], pos, statedb.REVISIONS)
        except ValueError:
            continue
        raise AssertionError(f"a revision bucket cut at {cut} parsed")


@given(st.binary(max_size=200), st.sampled_from(["0000", "ffff", "93ba"]))
def test_arbitrary_revision_buckets_parse_canonically_or_raise_value_error(data, pos):
    try:
        node = statedb.decode_bucket(data, pos, statedb.REVISIONS)
    except ValueError:
        return
    assert statedb.encode_bucket(node) == data
