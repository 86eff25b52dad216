"""Protocol fuzz of a live agent (issue 15: "random and mutated requests never crash the
agent or leak anything").

One agent process holds container 'default'.  Seeded random cases (``KEYBLOB_AGENT_FUZZ_SEED``
repeats a run; ``KEYBLOB_AGENT_FUZZ_CASES`` sets the count, at least 5,000 in CI), each on
its own connection, of one request or a sequence of up to four: valid requests of every kind
mutated by bit flips, truncations, appended bytes, a changed frame or field length, another
version or kind, a field duplicated, dropped or replaced, splices of two requests, and plain
random bytes; a few carry a passphrase pipe (holding a wrong passphrase).  A case that would
still be a well-formed LOCK or STOP is not sent: forgetting and stopping are what those do.

Every answer must be a well-formed response (docs/AGENT.md 3) that holds none of the secrets
(the passphrase, both private keys, the keys derived from the passphrase: the state MAC key
above all; raw or hex), and no request may fail inside the agent (status 1 "the agent
failed", an exception it did not expect).  Afterwards the same process (same pid) answers
STATUS, still holds the container, signs with its key, and has no thread or descriptor
left over from the cases.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import support
from agent_support import (
    LiveAgent,
    leaks,
    make_home,
    read_to_end,
    running_agent,
    secrets,
    split_answer,
)
from keyblob import Home
from keyblob.agent import protocol
from keyblob.agent.protocol import MAX_FRAME, Kind, Malformed
from keyblob.providers import suites

CASES = int(os.environ.get("KEYBLOB_AGENT_FUZZ_CASES", "6000"))
SEED = int(os.environ.get("KEYBLOB_AGENT_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 32))))
_L = struct.Struct(">I")
LENGTHS = (0, 1, 2, 3, 4, 255, 256, 4096, 4097, 8192, 8193, MAX_FRAME, MAX_FRAME + 1, 0xFFFFFFFF)


def _frame(body: bytes) -> bytes:
    return _L.pack(len(body)) + body


def _body(kind: int, *fields: bytes) -> bytes:
    return bytes((protocol.VERSION, kind)) + b"".join(_L.pack(len(f)) + f for f in fields)


def _split_fields(body: bytes) -> list[bytes] | None:
    """The fields of a body, or None if its field lengths do not add up."""
    out, at = [], 2
    while at < len(body):
        if len(body) - at < 4:
            return None
        (size,) = _L.unpack_from(body, at)
        if size > len(body) - at - 4:
            return None
        out.append(body[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def _seeds(agent: LiveAgent) -> list[bytes]:
    """Valid request bodies of every kind, for the container the agent holds and others."""
    suite, exchange, _ = Home(agent.home).public_keys(agent.name)
    public = suites.load_exchange_public(suite, exchange)
    wrapped = suites.wrap(public, bytes(range(32)), b"fuzz context")
    state = b'{"container":"default","format":"keyblob-state/v2","generation":3}'
    home, name = agent.fields()
    return [
        _body(Kind.STATUS),
        _body(Kind.LOCK),
        _body(Kind.STOP),
        _body(Kind.UNLOCK, home, name, bytes(8)),
        _body(Kind.UNLOCK, home, b"other", struct.pack(">Q", 60)),
        _body(Kind.PUBLIC, home, name),
        _body(Kind.PUBLIC, b"/nonexistent", name),
        _body(Kind.SIGN, home, name, b"a message to sign"),
        _body(Kind.SIGN, home, name, b""),
        _body(Kind.UNWRAP, home, name, wrapped, b"fuzz context"),
        _body(Kind.UNWRAP, home, name, bytes(97), b""),
        _body(Kind.MAC, home, name, state),
        _body(Kind.MAC, home, name, b'{"container":"default","format":"keyblob-state/v1"}'),
    ]


# -- mutations of one frame (the length header included) ----------------------------------

Mutation = Callable[[random.Random, bytes], bytes]


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        bit = rng.randrange(len(out) * 8)
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _append(rng: random.Random, data: bytes) -> bytes:
    return data + rng.randbytes(rng.randint(1, 16))


def _frame_length(rng: random.Random, data: bytes) -> bytes:
    size = len(data) - 4
    choice = rng.choice([*LENGTHS, size - 1, size + 1, size + 4, rng.randrange(1 << 32)])
    return _L.pack(choice % (1 << 32)) + data[4:]


def _field_length(rng: random.Random, data: bytes) -> bytes:
    fields = _split_fields(data[4:])
    if not fields:
        return _frame_length(rng, data)
    index = rng.randrange(len(fields))
    at = 4 + 2 + sum(4 + len(f) for f in fields[:index])
    size = len(fields[index])
    choice = rng.choice([*LENGTHS, size - 1, size + 1, rng.randrange(1 << 32)]) % (1 << 32)
    return data[:at] + _L.pack(choice) + data[at + 4 :]


def _version(rng: random.Random, data: bytes) -> bytes:
    return data[:4] + bytes([rng.choice([0, 2, 3, 0x81, 255])]) + data[5:]


def _kind(rng: random.Random, data: bytes) -> bytes:
    return data[:5] + bytes([rng.choice([*range(10), 0x7F, 0x80, 255])]) + data[6:]


def _reframe(rng: random.Random, data: bytes, change: Callable[[list[bytes]], None]) -> bytes:
    fields = _split_fields(data[4:])
    if fields is None or len(data) < 6:
        return _flip(rng, data)
    change(fields)
    return _frame(_body(data[5], *fields))


def _duplicate(rng: random.Random, data: bytes) -> bytes:
    def change(fields: list[bytes]) -> None:
        if fields:
            index = rng.randrange(len(fields))
            fields.insert(index, fields[index])
        else:
            fields.append(b"")

    return _reframe(rng, data, change)


def _drop(rng: random.Random, data: bytes) -> bytes:
    def change(fields: list[bytes]) -> None:
        if fields:
            del fields[rng.randrange(len(fields))]

    return _reframe(rng, data, change)


def _replace(rng: random.Random, data: bytes) -> bytes:
    values = [
        b"",
        b"\x00",
        b"/",
        b"default\x00",
        b"\xff\xfe",
        b"\xc0\xaf",
        b"../../etc",
        b"/tmp",
        b"n" * 256,
        b"/" * 4097,
        bytes(8),
        b"\xff" * 8,
        b'{"container":"default","format":"keyblob-state/v2","mac":"00"}',
        b'{"container":"default","format":"keyblob-state/v2","x":true}',
        b"[" * 5000,
    ]

    def change(fields: list[bytes]) -> None:
        if fields:
            value = rng.choice([*values, rng.randbytes(rng.randint(0, 64))])
            fields[rng.randrange(len(fields))] = value

    return _reframe(rng, data, change)


def _random_frame(rng: random.Random, data: bytes) -> bytes:
    return _frame(rng.randbytes(rng.randint(0, 96)))


def _random_bytes(rng: random.Random, data: bytes) -> bytes:
    return rng.randbytes(rng.randint(1, 64))


MUTATIONS: list[Mutation] = [
    _flip,
    _flip,
    _truncate,
    _append,
    _frame_length,
    _field_length,
    _field_length,
    _version,
    _kind,
    _kind,
    _duplicate,
    _drop,
    _replace,
    _replace,
    _random_frame,
    _random_bytes,
]


def _case(rng: random.Random, seeds: list[bytes]) -> list[bytes]:
    """One to four frames, each a seed mutated zero to three times (or spliced)."""
    out = []
    for _ in range(rng.choice([1, 1, 1, 1, 2, 3, 4])):
        data = _frame(rng.choice(seeds))
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            data = rng.choice(MUTATIONS)(rng, data) or b"\x00"
        if rng.random() < 0.03:  # a splice of two requests
            other = _frame(rng.choice(seeds))
            data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)) :]
        out.append(data)
    return out


def _forgets_or_stops(stream: bytes) -> bool:
    """Would the agent read a well-formed LOCK or STOP somewhere in ``stream``?"""
    at = 0
    while len(stream) - at >= 4:
        (size,) = _L.unpack_from(stream, at)
        if not 2 <= size <= MAX_FRAME or size > len(stream) - at - 4:
            return False
        try:
            request = protocol.parse_request(stream[at + 4 : at + 4 + size])
        except Malformed:
            return False
        if request.kind in (Kind.LOCK, Kind.STOP):
            return True
        at += 4 + size
    return False


def _send(agent: LiveAgent, stream: bytes, fd: int | None) -> bytes:
    """``stream`` on a new connection (``fd`` with its first bytes), then this side's end of
    the stream; everything the agent answered until it closed."""
    with agent.connect() as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            if fd is not None:
                sent = socket.send_fds(sock, [stream], [fd])
                sock.sendall(stream[sent:])
            else:
                sock.sendall(stream)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        return read_to_end(sock)


def _answers(data: bytes) -> list[tuple[int, tuple[bytes, ...]]]:
    out = []
    at = 0
    while at < len(data):
        (size,) = _L.unpack_from(data, at)
        body = data[at + 4 : at + 4 + size]
        assert len(body) == size, "a cut answer"
        out.append(split_answer(body))
        at += 4 + size
    return out


def _tasks(pid: int) -> tuple[int, int | None]:
    """(threads, open descriptors or None if this user may not list them) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:  # the agent is not dumpable: only root may list them
        fds = None
    return threads, fds


def _settled(pid: int, baseline: tuple[int, int | None]) -> tuple[int, int | None]:
    """The agent's threads and descriptors once the last connections have ended."""
    now = _tasks(pid)
    for _ in range(200):
        if now[0] <= baseline[0] and (now[1] is None or now[1] <= (baseline[1] or 0)):
            break
        time.sleep(0.05)
        now = _tasks(pid)
    return now


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[LiveAgent]:
    with running_agent(tmp_path / "run" / "keyblob", make_home(tmp_path / "home")) as live:
        yield live


def test_random_and_mutated_requests_never_crash_the_agent_or_leak(agent: LiveAgent) -> None:
    assert CASES >= 5000 or os.environ.get("KEYBLOB_AGENT_FUZZ_CASES"), CASES
    rng = random.Random(SEED)
    seeds = _seeds(agent)
    secret = secrets(agent.home)
    baseline = _tasks(agent.pid)
    sent = requests = 0
    failures: list[str] = []
    statuses: dict[int, int] = {}
    big = [  # requests at and past the bounds, once each (4 MiB apiece)
        [_frame(_body(Kind.SIGN, *agent.fields(rng.randbytes(protocol.MAX_MESSAGE))))],
        [_frame(_body(Kind.MAC, *agent.fields(b"{" * protocol.MAX_MESSAGE)))],
        [_frame(bytes((1, 6)) + rng.randbytes(MAX_FRAME - 2))],
        [_L.pack(MAX_FRAME + 1) + rng.randbytes(MAX_FRAME + 1)],
    ]
    while sent < CASES:
        frames = big.pop() if big else _case(rng, seeds)
        stream = b"".join(frames)
        if _forgets_or_stops(stream):
            continue
        fd = write_end = None
        if rng.random() < 0.02:  # a passphrase pipe, as UNLOCK takes it: a wrong one
            fd, write_end = os.pipe()
            os.write(write_end, b"not the passphrase")
            os.close(write_end)
        try:
            answer = _send(agent, stream, fd)
        finally:
            if fd is not None:
                os.close(fd)
        sent += 1
        requests += len(frames)
        found = leaks(answer, secret)
        assert not found, f"seed {SEED}: an answer held {found}"
        for status, fields in _answers(answer):
            statuses[status] = statuses.get(status, 0) + 1
            if status == 1 and fields[0].startswith(b"the agent failed"):
                failures.append(f"{fields[0].decode()} on {stream[:80].hex()}")
    assert not failures, f"seed {SEED}: {len(failures)} unexpected errors: {failures[:5]}"
    assert requests >= CASES
    assert statuses.get(0) and len(statuses) > 2, statuses  # the cases reached the requests

    # The same agent goes on: it answers, holds the container and signs with its key.
    assert agent.process.poll() is None
    status = agent.status()
    assert status["pid"] == agent.pid
    assert [c["name"] for c in status["containers"]] == ["default"]  # type: ignore[attr-defined]
    code, (signature,) = agent.call(Kind.SIGN, agent.fields(b"after the fuzz"))
    assert code == 0
    suite, _, signature_public = Home(agent.home).public_keys("default")
    suites.verify(
        suites.load_signature_public(suite, signature_public), signature, b"after the fuzz"
    )
    # Nothing left over: every connection's thread ended and every descriptor was closed.
    threads, fds = _settled(agent.pid, baseline)
    assert threads <= baseline[0], (threads, baseline)
    if fds is None:
        support.skip_or_fail("the agent's descriptors were not counted: needs root")
    assert fds <= (baseline[1] or 0), (fds, baseline)
