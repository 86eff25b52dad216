"""The agent protocol's strictness (docs/AGENT.md 3), rule by rule: on the parser
(``protocol.parse_request``, ``protocol.read_frame``), then on a live agent: a malformed
request ends its connection only, an oversized length is refused before any body is read,
a client stalled inside a frame is dropped, a descriptor on a request other than UNLOCK ends
the connection, and MAC authenticates state documents of its container only."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_support import (
    LiveAgent,
    closed_without_answer,
    exchange,
    make_home,
    running_agent,
    split_answer,
)
from keyblob import Home
from keyblob.agent import protocol, server
from keyblob.agent.protocol import MAX_CONTEXT, MAX_FRAME, MAX_MESSAGE, Kind, Malformed
from support import PASSPHRASE

DOC = Path(__file__).resolve().parents[2] / "docs" / "AGENT.md"
HOME = b"/home/alice/.keyblob"
NAME = b"default"
TTL = bytes(8)


def field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def body(kind: int, *fields: bytes, version: int = protocol.VERSION) -> bytes:
    return bytes((version, kind)) + b"".join(field(f) for f in fields)


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


# -- the parser ----------------------------------------------------------------------------

ACCEPTED = {
    "status": body(Kind.STATUS),
    "lock": body(Kind.LOCK),
    "stop": body(Kind.STOP),
    "unlock": body(Kind.UNLOCK, HOME, NAME, TTL),
    "unlock with a ttl": body(Kind.UNLOCK, HOME, NAME, struct.pack(">Q", 3600)),
    "public": body(Kind.PUBLIC, HOME, NAME),
    "sign": body(Kind.SIGN, HOME, NAME, b"message"),
    "sign an empty message": body(Kind.SIGN, HOME, NAME, b""),
    "sign at its bound": body(Kind.SIGN, HOME, NAME, bytes(MAX_MESSAGE)),
    "unwrap": body(Kind.UNWRAP, HOME, NAME, bytes(97), b"context"),
    "unwrap at its bounds": body(Kind.UNWRAP, HOME, NAME, bytes(8192), bytes(MAX_CONTEXT)),
    "unwrap as an old key": body(Kind.UNWRAP_AS, HOME, NAME, bytes(16), bytes(97), b"c"),
    "mac": body(Kind.MAC, HOME, NAME, b'{"container":"default"}'),
    "mac at its bound": body(Kind.MAC, HOME, NAME, bytes(MAX_MESSAGE)),
    "home of 4096 bytes": body(Kind.PUBLIC, b"/" * 4096, NAME),
    "name of 255 bytes": body(Kind.PUBLIC, HOME, b"n" * 255),
    "utf-8 home and name": body(Kind.PUBLIC, "/home/zoë".encode(), "clé".encode()),
}

_WITH_HOME = (Kind.UNLOCK, Kind.PUBLIC, Kind.SIGN, Kind.UNWRAP, Kind.MAC, Kind.UNWRAP_AS)
_REST = {
    Kind.UNLOCK: (TTL,),
    Kind.PUBLIC: (),
    Kind.SIGN: (b"m",),
    Kind.UNWRAP: (b"w", b"c"),
    Kind.MAC: (b"{}",),
    Kind.UNWRAP_AS: (bytes(16), b"w", b"c"),
}


def _named(home: bytes, name: bytes) -> dict[str, bytes]:
    """The same home and name in every request that takes them."""
    return {kind.name.lower(): body(kind, home, name, *_REST[kind]) for kind in _WITH_HOME}


REFUSED = {
    "empty": b"",
    "a version and no kind": b"\x01",
    "version 0": body(Kind.STATUS, version=0),
    "version 2": body(Kind.STATUS, version=2),
    "version 255": body(Kind.PUBLIC, HOME, NAME, version=255),
    "kind 0": body(0),
    "kind 10": body(10),
    "kind 255": body(255, HOME, NAME),
    "status with a field": body(Kind.STATUS, b""),
    "lock with a field": body(Kind.LOCK, b"x"),
    "stop with a field": body(Kind.STOP, b""),
    "public without a name": body(Kind.PUBLIC, HOME),
    "public with a field too many": body(Kind.PUBLIC, HOME, NAME, b""),
    "sign without a message": body(Kind.SIGN, HOME, NAME),
    "unwrap without a context": body(Kind.UNWRAP, HOME, NAME, b"w"),
    "unwrap with a field too many": body(Kind.UNWRAP, HOME, NAME, b"w", b"c", b""),
    "mac with a field too many": body(Kind.MAC, HOME, NAME, b"{}", b"{}"),
    "unlock without a ttl": body(Kind.UNLOCK, HOME, NAME),
    "a home over 4096 bytes": body(Kind.PUBLIC, b"/" * 4097, NAME),
    "a name over 255 bytes": body(Kind.PUBLIC, HOME, b"n" * 256),
    "a message over its bound": body(Kind.SIGN, HOME, NAME, bytes(MAX_MESSAGE + 1)),
    "a wrapped key over 8192 bytes": body(Kind.UNWRAP, HOME, NAME, bytes(8193), b"c"),
    "a context over 1 MiB": body(Kind.UNWRAP, HOME, NAME, b"w", bytes(MAX_CONTEXT + 1)),
    "a state document over its bound": body(Kind.MAC, HOME, NAME, bytes(MAX_MESSAGE + 1)),
    "a ttl of 7 bytes": body(Kind.UNLOCK, HOME, NAME, bytes(7)),
    "a ttl of 9 bytes": body(Kind.UNLOCK, HOME, NAME, bytes(9)),
    "a ttl of 0 bytes": body(Kind.UNLOCK, HOME, NAME, b""),
    "a key id of 15 bytes": body(Kind.UNWRAP_AS, HOME, NAME, bytes(15), bytes(97), b"c"),
    "a key id of 17 bytes": body(Kind.UNWRAP_AS, HOME, NAME, bytes(17), bytes(97), b"c"),
    "unwrap as without a key id": body(Kind.UNWRAP_AS, HOME, NAME, bytes(97), b"c"),
    "1 byte left over": body(Kind.STATUS) + b"\x00",
    "3 bytes left over": body(Kind.PUBLIC, HOME, NAME) + b"\x00\x00\x00",
    "4 bytes left over": body(Kind.STATUS) + b"\x00\x00\x00\x00",
    "a field length past the end": body(Kind.PUBLIC, HOME) + struct.pack(">I", 8) + b"default",
    "a field length of 4 GiB - 1": body(Kind.PUBLIC, HOME) + b"\xff\xff\xff\xff" + NAME,
    "a truncated field length": body(Kind.PUBLIC, HOME) + b"\x00\x00\x07",
    **{f"{k}: an empty home": v for k, v in _named(b"", NAME).items()},
    **{f"{k}: an empty name": v for k, v in _named(HOME, b"").items()},
    **{f"{k}: a home holding NUL": v for k, v in _named(b"/home\x00/x", NAME).items()},
    **{f"{k}: a name holding NUL": v for k, v in _named(HOME, b"def\x00ault").items()},
    **{f"{k}: a home not UTF-8": v for k, v in _named(b"/home/\xff", NAME).items()},
    **{f"{k}: a name not UTF-8": v for k, v in _named(HOME, b"\xc3").items()},
    "an overlong UTF-8 name": body(Kind.PUBLIC, HOME, b"\xc0\xaf"),
    "a UTF-8 surrogate in a name": body(Kind.PUBLIC, HOME, b"\xed\xa0\x80"),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_every_well_formed_request_parses(data: bytes) -> None:
    request = protocol.parse_request(data)
    assert request.kind == data[1]
    assert b"".join(field(f) for f in request.fields) == data[2:]  # each field exactly


@pytest.mark.parametrize("data", REFUSED.values(), ids=REFUSED.keys())
def test_every_rule_refuses(data: bytes) -> None:
    with pytest.raises(Malformed):
        protocol.parse_request(data)


def _read(data: bytes) -> bytes | None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        return protocol.read_frame(b)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">I", 0),
        struct.pack(">I", 1) + b"\x01",
        struct.pack(">I", MAX_FRAME + 1),
        b"\xff\xff\xff\xff",
        b"\x00\x00",  # the stream ends inside the length
        frame(body(Kind.STATUS))[:-1],  # ... inside the body
    ],
    ids=["length 0", "length 1", "length over the bound", "length 4 GiB", "half a length", "cut"],
)
def test_a_frame_out_of_bounds_or_cut_is_malformed(data: bytes) -> None:
    with pytest.raises(Malformed):
        _read(data)


def test_frames_within_bounds_are_read() -> None:
    assert _read(b"") is None  # a clean end between frames
    assert _read(frame(body(Kind.STATUS))) == body(Kind.STATUS)


def test_the_spec_states_the_codes_bounds() -> None:
    """docs/AGENT.md 3 and protocol.py give the same numbers."""
    text = DOC.read_text()
    section = " ".join(text[text.index("## 3 Protocol") : text.index("## 4 STATUS")].split())
    assert f"2 <= length <= {MAX_FRAME:,}" in section
    assert f"at most {MAX_MESSAGE:,} bytes" in section
    assert f"at most {protocol.MAX_WRAPPED} bytes" in section and MAX_CONTEXT == 1 << 20
    assert f"1 to {protocol.MAX_PATH} bytes" in section
    assert f"1 to {protocol.MAX_NAME} bytes" in section
    assert f"at most {protocol.MAX_SECRET} bytes" in section
    assert f"for {int(server.READ_TIMEOUT)} s" in section
    assert f"at most {server.MAX_CONNECTIONS} are served" in section
    table = dict(re.findall(r"\| (\d) ([A-Z_]+) \|", section))
    assert table == {str(k.value): k.name for k in Kind}


# -- a live agent --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    """One agent holding container 'default' for this module's tests."""
    root = tmp_path_factory.mktemp("agent")
    with running_agent(root / "run", make_home(root / "home")) as agent:
        yield agent


def _still_serving(live: LiveAgent, before: socket.socket) -> None:
    """A connection opened before still works, so does a new one, and nothing restarted."""
    answer = exchange(before, frame(body(Kind.PUBLIC, *live.fields())))
    assert answer is not None and split_answer(answer)[0] == 0
    assert live.status()["pid"] == live.pid
    assert live.status()["containers"][0]["name"] == "default"  # type: ignore[index]


LIVE_MALFORMED = {
    "another version": frame(body(Kind.STATUS, version=2)),
    "an unknown kind": frame(body(9)),
    "a field too many": frame(body(Kind.STATUS, b"")),
    "a field missing": frame(body(Kind.PUBLIC, HOME)),
    "a name over its bound": frame(body(Kind.PUBLIC, HOME, b"n" * 256)),
    "bytes left over": frame(body(Kind.STATUS) + b"\x00"),
    "a field length past the end": frame(body(Kind.PUBLIC, HOME) + b"\x00\x00\x01\x00ab"),
    "a name not UTF-8": frame(body(Kind.PUBLIC, HOME, b"\xff")),
    "a home holding NUL": frame(body(Kind.PUBLIC, b"/\x00", NAME)),
    "a ttl of 4 bytes": frame(body(Kind.UNLOCK, HOME, NAME, bytes(4))),
    "length 0": struct.pack(">I", 0),
    "length 1": struct.pack(">I", 1) + b"\x01",
}


@pytest.mark.parametrize("data", LIVE_MALFORMED.values(), ids=LIVE_MALFORMED.keys())
def test_a_malformed_request_ends_its_connection_only(live: LiveAgent, data: bytes) -> None:
    with live.connect() as before, live.connect() as sock:
        sock.sendall(frame(body(Kind.STATUS)))  # answered: the connection works until...
        answer = protocol.read_frame(sock)
        assert answer is not None and split_answer(answer)[0] == 0
        sock.sendall(data)  # ... the malformed request, which gets no answer
        assert closed_without_answer(sock)
        _still_serving(live, before)


def test_requests_after_a_malformed_one_are_not_answered(live: LiveAgent) -> None:
    with live.connect() as sock:
        sock.sendall(frame(body(Kind.STATUS, b"")) + frame(body(Kind.STATUS)))
        assert closed_without_answer(sock)


def test_a_stream_ending_inside_a_frame_ends_the_connection(live: LiveAgent) -> None:
    with live.connect() as before, live.connect() as sock:
        sock.sendall(frame(body(Kind.PUBLIC, *live.fields()))[:-3])
        sock.shutdown(socket.SHUT_WR)
        assert closed_without_answer(sock)
        _still_serving(live, before)


@pytest.mark.parametrize(
    "length", [MAX_FRAME + 1, 0x7FFFFFFF, 0xFFFFFFFF], ids=["bound + 1", "2 GiB", "4 GiB"]
)
def test_an_oversized_length_is_refused_before_any_body(live: LiveAgent, length: int) -> None:
    """Only the length is sent, and the connection stays open on this side: an agent that
    waited for (or made room for) the body would time out the answer (10 s, under the
    agent's 30 s read timeout)."""
    with live.connect() as before, live.connect() as sock:
        sock.sendall(struct.pack(">I", length) + body(Kind.STATUS))
        assert closed_without_answer(sock)
        _still_serving(live, before)
    rss = Path(f"/proc/{live.pid}/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", rss).group(1))  # type: ignore[union-attr]
    assert peak < 512 * 1024  # KiB: nothing near the length was ever resident


def _pipe_with(data: bytes) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    return read_end, write_end


def _agent_closed(read_end: int, write_end: int) -> bool:
    """After this process closes its copy of ``read_end``: has the agent closed its own?
    (A pipe with no reader left refuses a write.)"""
    os.close(read_end)
    try:
        os.write(write_end, b"x")
    except BrokenPipeError:
        return True
    finally:
        os.close(write_end)
    return False


@pytest.mark.parametrize("kind", [Kind.STATUS, Kind.PUBLIC, Kind.SIGN, Kind.LOCK, Kind.STOP])
def test_a_descriptor_with_another_request_ends_the_connection(live: LiveAgent, kind: Kind) -> None:
    fields = {
        Kind.PUBLIC: live.fields(),
        Kind.SIGN: live.fields(b"message"),
    }.get(kind, ())
    read_end, write_end = _pipe_with(PASSPHRASE)
    with live.connect() as before, live.connect() as sock:
        answer = exchange(sock, frame(body(kind, *fields)), [read_end])
        assert answer is None and closed_without_answer(sock)
        _still_serving(live, before)  # LOCK and STOP were not carried out either
    assert _agent_closed(read_end, write_end)


def test_a_descriptor_later_in_the_frame_ends_the_connection(live: LiveAgent) -> None:
    data = frame(body(Kind.PUBLIC, *live.fields()))
    read_end, write_end = _pipe_with(b"")
    with live.connect() as before, live.connect() as sock:
        sock.sendall(data[:6])
        assert exchange(sock, data[6:], [read_end]) is None
        assert closed_without_answer(sock)
        _still_serving(live, before)
    assert _agent_closed(read_end, write_end)


def test_two_descriptors_with_unlock_end_the_connection(live: LiveAgent) -> None:
    pipes = [_pipe_with(b"wrong"), _pipe_with(PASSPHRASE)]
    data = frame(body(Kind.UNLOCK, *live.fields(bytes(8))))
    with live.connect() as before, live.connect() as sock:
        assert exchange(sock, data, [r for r, _ in pipes]) is None
        assert closed_without_answer(sock)
        _still_serving(live, before)
    assert all(_agent_closed(r, w) for r, w in pipes)


def test_unlock_without_its_descriptor_is_refused_and_the_connection_stays(
    live: LiveAgent,
) -> None:
    with live.connect() as sock:
        answer = exchange(sock, frame(body(Kind.UNLOCK, *live.fields(bytes(8)))))
        assert answer is not None
        status, (message,) = split_answer(answer)
        assert status == 2 and b"passphrase pipe" in message
        _still_serving(live, sock)


def test_an_error_message_is_one_line_of_utf8_even_cut(live: LiveAgent) -> None:
    """A refusal naming a long non-ASCII home is cut to 4096 bytes on a character boundary."""
    home = "/" + "é" * 2047  # 4095 bytes: the message is longer than 4096
    for name in ("n", "nn"):  # one of the two cuts falls inside a character
        status, (message,) = live.call(Kind.PUBLIC, (home.encode(), name.encode()))
        assert status == 4 and len(message) <= 4096
        assert "\n" not in message.decode("utf-8")  # strict: raises on a cut character


def _canonical_state(name: str = "default", **members: object) -> bytes:
    import json

    doc: dict[str, object] = {"format": "keyblob-state/v2", "container": name, **members}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


MAC_REFUSED = {
    "not JSON": b"not json",
    "not UTF-8": b'{"container":"default","format":"keyblob-state/v2","x":"\xff"}',
    "a JSON array": b'["container","default"]',
    "a JSON string": b'"keyblob-state/v2"',
    "empty": b"",
    "not canonical: spaces": b'{"container": "default", "format": "keyblob-state/v2"}',
    "not canonical: key order": b'{"format":"keyblob-state/v2","container":"default"}',
    "not canonical: escaped": b'{"container":"\\u0064efault","format":"keyblob-state/v2"}',
    "a trailing newline": _canonical_state() + b"\n",
    "another container": _canonical_state("other"),
    "no container": b'{"format":"keyblob-state/v2"}',
    "another format": b'{"container":"default","format":"keyblob-state/v3"}',
    "no format": b'{"container":"default"}',
    "a format of another document": b'{"container":"default","format":"keyblob/v1"}',
    "a mac member": _canonical_state(mac="00" * 32),
    "a duplicate key": b'{"container":"default","container":"default","format":"keyblob-state/v2"}',
    "a boolean": _canonical_state(x=True),
    "null": _canonical_state(x=None),
    "a fraction": _canonical_state(x=1.5),
    "nested too deeply": b'{"container":"default","format":"keyblob-state/v2","x":'
    + b"[" * 100000
    + b"]" * 100000
    + b"}",
}


@pytest.mark.parametrize("document", MAC_REFUSED.values(), ids=MAC_REFUSED.keys())
def test_mac_refuses_what_is_not_a_state_document_of_its_container(
    live: LiveAgent, document: bytes
) -> None:
    with live.connect() as sock:
        answer = exchange(sock, frame(body(Kind.MAC, *live.fields(document))))
        assert answer is not None
        status, (message,) = split_answer(answer)
        assert status == 2, message
        assert message == b"the agent authenticates state documents of its containers only"
        _still_serving(live, sock)  # the connection stays open


@pytest.mark.parametrize(
    "document",
    [
        _canonical_state(),
        _canonical_state(generation=7, marks={"k": 1}),
        b'{"container":"default","format":"keyblob-state/v1","signers":[]}',
    ],
    ids=["v2", "v2 with members", "v1"],
)
def test_mac_authenticates_a_state_document_with_the_state_key(
    live: LiveAgent, document: bytes
) -> None:
    key = Home(live.home).open_software("default", PASSPHRASE)._keys.state
    status, (tag,) = live.call(Kind.MAC, live.fields(document))
    assert status == 0
    assert tag == hmac.new(key, document, hashlib.sha256).digest()


# -- timeouts: an agent served in this process, its read timeout shortened -----------------


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveAgent]:
    """``server.serve`` in a thread of this process, with a read timeout of 0.5 s."""
    monkeypatch.setattr(server, "READ_TIMEOUT", 0.5)
    folder = tmp_path / "run" / "keyblob"
    protocol.make_socket_folder(folder)
    home = make_home(tmp_path / "home")
    agent = server.Agent()
    listener = server._listen(folder)
    thread = threading.Thread(target=server.serve, args=(agent, listener), daemon=True)
    thread.start()
    yield LiveAgent(None, os.getpid(), folder, home)  # type: ignore[arg-type]
    agent.stopping.set()
    thread.join(timeout=10)
    listener.close()
    assert not thread.is_alive()


@pytest.mark.parametrize("sent", [3, 4, 9], ids=["inside the length", "after it", "in a field"])
def test_a_client_stalled_inside_a_frame_is_dropped(in_process: LiveAgent, sent: int) -> None:
    data = frame(body(Kind.PUBLIC, *in_process.fields()))
    with in_process.connect() as sock:
        sock.sendall(data[:sent])  # ... and nothing more, the connection left open
        assert closed_without_answer(sock)  # well before this side's 10 s timeout
    with in_process.connect() as sock:
        answer = exchange(sock, frame(body(Kind.STATUS)))
        assert answer is not None and split_answer(answer)[0] == 0


def test_a_connection_idle_between_frames_is_dropped(in_process: LiveAgent) -> None:
    """Idle connections do not hold the agent's 64 slots for ever either."""
    with in_process.connect() as sock:
        answer = exchange(sock, frame(body(Kind.STATUS)))
        assert answer is not None and split_answer(answer)[0] == 0
        assert closed_without_answer(sock)


def test_a_passphrase_pipe_left_open_is_refused_after_the_timeout(
    in_process: LiveAgent,
) -> None:
    """A client that passes the pipe and never closes its write end holds no thread of the
    agent for ever: the unlock is refused (status 2) after the read timeout."""
    read_end, write_end = _pipe_with(PASSPHRASE)
    try:
        with in_process.connect() as sock:
            data = frame(body(Kind.UNLOCK, *in_process.fields(bytes(8))))
            answer = exchange(sock, data, [read_end])
            assert answer is not None
            status, (message,) = split_answer(answer)
            assert status == 2 and b"passphrase pipe" in message
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_descriptor_that_is_not_a_pipe_is_refused(in_process: LiveAgent, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(PASSPHRASE)
    fd = os.open(tmp_path / "secret", os.O_RDONLY)
    try:
        with in_process.connect() as sock:
            data = frame(body(Kind.UNLOCK, *in_process.fields(bytes(8))))
            answer = exchange(sock, data, [fd])
            assert answer is not None
            status, (message,) = split_answer(answer)
            assert status == 2 and b"passphrase pipe" in message
    finally:
        os.close(fd)


def test_a_command_quiet_longer_than_the_timeout_reconnects(
    in_process: LiveAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command whose connection the agent dropped as idle (a long store copy between two
    signatures) sends its next request again on a new connection, once; the result is the
    same as on the first."""
    from keyblob.agent import client

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(in_process.folder.parent))
    conn = client.connect(in_process.home)
    assert conn is not None
    read, write = os.pipe()
    os.write(write, PASSPHRASE)
    os.close(write)
    conn.call(Kind.UNLOCK, (*in_process.fields(), (0).to_bytes(8)), fd=read)
    os.close(read)
    held = client.held(Home(in_process.home), "default")
    assert held is not None
    first = held.exchange_public
    time.sleep(1.2)  # over the 0.5 s read timeout: both connections were dropped
    signature = held.sign(b"message")
    assert len(signature) == 64 and held.exchange_public == first
    held.close()
    conn.close()


def test_an_agent_gone_mid_command_says_what_to_do(tmp_path: Path) -> None:
    """The connection found closed, and no agent to reconnect to: one line, and a hint
    that running the command again unlocks without the agent."""
    from keyblob.agent import client
    from keyblob.errors import ProviderError

    folder = tmp_path / "run" / "keyblob"
    protocol.make_socket_folder(folder)  # no socket in it: the agent is gone
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    conn = client.Connection(mine, folder)
    with pytest.raises(ProviderError, match="the keyblob agent is gone") as caught:
        conn.call(Kind.STATUS, ())
    assert caught.value.hints == client.AGAIN
    conn.close()


def test_unwrap_as_a_key_the_container_does_not_hold_is_refused(live: LiveAgent) -> None:
    """UNWRAP_AS (issue 16) answers only for the held container's own exchange keys: any
    other key id is a refusal (status 3), and the connection is not closed."""
    status, fields = live.call(Kind.UNWRAP_AS, live.fields(b"\x07" * 16, bytes(80), b"c"))
    assert status == 3 and b"holds no exchange key" in fields[0]
