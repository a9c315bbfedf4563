"""The coordinator against real clients: real sockets, a real event loop, a real events file.

Nothing is mocked. Each test runs a :class:`Coordinator` in its own event loop, talks to it over
TCP on 127.0.0.1 (or a Unix socket) exactly as an actor process does, then reads the events file
back. Synchronisation never relies on sleeping: a test waits for the server to close a
connection (EOF on the client side) and for :meth:`Coordinator.drain`, both under
``anyio.fail_after`` so that a hang fails fast instead of running into the global timeout.
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import socket
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import SocketStream

import sim.coordinator
from sim.coordinator import Coordinator, _decode_whole, _keep_raw, _parse, _short_lines
from sim.errors import ProtocolError
from sim.history import History, Subscriber
from sim.history.lines import Line, decode_line, read_lines

SECRET = "s3cret"
# Upper bound for any single wait on the coordinator; generous, but far below the global timeout.
WAIT = 10.0
PID = 4242

# -- helpers ------------------------------------------------------------------------------------


def hello(actor: str, secret: str = SECRET, pid: int = PID) -> bytes:
    return json.dumps({"hello": 1, "secret": secret, "actor": actor, "pid": pid}).encode() + b"\n"


def event(actor: str, seq: int, name: str = "tick", pid: int = PID, **fields: Any) -> bytes:
    """One event line as an actor renders it: the contract's fields first, newline-terminated."""
    line = {"ts": seq / 1000, "actor": actor, "pid": pid, "seq": seq, "event": name, **fields}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def events(actor: str, n: int, start: int = 0, **fields: Any) -> list[bytes]:
    return [event(actor, seq, **fields) for seq in range(start, start + n)]


def file_lines(path: Path) -> list[bytes]:
    """The raw lines of the events file, each with its newline."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the events file ends inside a line"
    return data.splitlines(keepends=True)


def lines_of(path: Path, actor: str) -> list[bytes]:
    """The raw lines of ``actor`` in the events file, in file order."""
    return [raw for raw in file_lines(path) if json.loads(raw)["actor"] == actor]


def coordinator_events(path: Path, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in map(json.loads, file_lines(path))
        if e["actor"] == "coordinator" and e["event"] == name
    ]


# Client streams of the running test, closed when its coordinator exits even if the test failed
# half-way, so that a failure never surfaces later as a leaked socket in another test.
_clients: list[SocketStream] = []


@asynccontextmanager
async def serve(tmp_path: Path, **kwargs: Any) -> AsyncIterator[Coordinator]:
    kwargs.setdefault("transport", "tcp")
    async with Coordinator(
        tmp_path / "events.jsonl", secret=SECRET, t0_ns=time.monotonic_ns(), **kwargs
    ) as coord:
        try:
            yield coord
        finally:
            with anyio.CancelScope(shield=True):
                while _clients:
                    await _clients.pop().aclose()


async def connect(coord: Coordinator) -> SocketStream:
    with anyio.fail_after(WAIT):
        if isinstance(coord.address, str):
            stream = await anyio.connect_unix(coord.address)
        else:
            host, port = coord.address
            stream = await anyio.connect_tcp(host, port)
    _clients.append(stream)
    return stream


async def closed_by_server(stream: SocketStream) -> bytes:
    """Read until the server closes the connection (EOF); return what it sent, if anything."""
    received = bytearray()
    with anyio.fail_after(WAIT):
        while True:
            try:
                received += await stream.receive()
            except anyio.EndOfStream:
                return bytes(received)


async def finish(stream: SocketStream) -> None:
    """Close our sending side like an actor does, and wait until the server has closed too."""
    await stream.send_eof()
    assert await closed_by_server(stream) == b""
    await stream.aclose()


async def drained(coord: Coordinator) -> None:
    with anyio.fail_after(WAIT + 1):
        assert await coord.drain(WAIT)


async def send_lines(stream: SocketStream, lines: list[bytes], per_write: int = 1) -> None:
    with anyio.fail_after(WAIT):
        for i in range(0, len(lines), per_write):
            await stream.send(b"".join(lines[i : i + per_write]))


# -- a well-behaved client ----------------------------------------------------------------------


async def test_all_lines_of_a_good_client_land_byte_identical_and_in_order(tmp_path: Path) -> None:
    n = 500
    sent = events("alice", n, payload="x" * 40)
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(hello("alice"))
        # Mixed write sizes: lines split across writes and several lines per write.
        blob = b"".join(sent)
        with anyio.fail_after(WAIT):
            for i in range(0, len(blob), 777):
                await client.send(blob[i : i + 777])
        await finish(client)
        await drained(coord)
        assert coord.counters.lines["alice"] == n
        assert coord.counters.events == n
        assert coord.counters.refused == 0
        assert coord.counters.protocol_errors == 0
    assert file_lines(coord.events_path) == sent


async def test_lines_sent_together_with_the_hello_are_kept(tmp_path: Path) -> None:
    sent = events("alice", 3)
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(hello("alice") + b"".join(sent))
        await finish(client)
        await drained(coord)
        assert coord.counters.lines["alice"] == 3
    assert lines_of(coord.events_path, "alice") == sent


# -- refusal ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        pytest.param(hello("mallory", secret="wrong"), "wrong secret", id="wrong-secret"),
        pytest.param(hello("mallory", secret=""), "wrong secret", id="empty-secret"),
        pytest.param(event("mallory", 0), "not a valid hello", id="event-line-instead-of-hello"),
        pytest.param(b"\x00\xff\xfe garbage {{{\n", "not a valid hello", id="garbage"),
        pytest.param(
            json.dumps({"hello": 1, "actor": "mallory", "pid": 1}).encode() + b"\n",
            "not a valid hello",
            id="hello-without-secret",
        ),
    ],
)
async def test_a_client_without_the_secret_is_refused(
    tmp_path: Path, first: bytes, reason: str
) -> None:
    following = events("mallory", 5)
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        # Everything in one write: the server reads it all before it hangs up.
        await client.send(first + b"".join(following))
        assert await closed_by_server(client) == b""
        await client.aclose()
        await drained(coord)
        assert coord.counters.refused == 1
        assert coord.counters.lines["mallory"] == 0
        assert coord.counters.protocol_errors == 0
    refused = coordinator_events(coord.events_path, "refused")
    assert len(refused) == 1
    assert reason in refused[0]["reason"]
    assert lines_of(coord.events_path, "mallory") == []
    assert all(line not in file_lines(coord.events_path) for line in following)


async def test_a_client_that_closes_before_its_hello_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(b'{"hello": 1, "secr')  # no newline: the hello never completes
        await finish(client)
        await drained(coord)
        assert coord.counters.refused == 1
    [refused] = coordinator_events(coord.events_path, "refused")
    assert "closed before presenting the secret" in refused["reason"]


async def test_a_silent_client_is_cut_after_the_hello_timeout(tmp_path: Path) -> None:
    async with serve(tmp_path, hello_timeout=0.3) as coord:
        client = await connect(coord)
        assert await closed_by_server(client) == b""
        await client.aclose()
        await drained(coord)
        assert coord.counters.refused == 1
    [refused] = coordinator_events(coord.events_path, "refused")
    assert "no hello within" in refused["reason"]


async def test_an_over_long_first_line_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, max_line=1000) as coord:
        client = await connect(coord)
        await client.send(b"x" * 5000)
        assert await closed_by_server(client) == b""
        await client.aclose()
        await drained(coord)
        assert coord.counters.refused == 1
    [refused] = coordinator_events(coord.events_path, "refused")
    assert "first line too long" in refused["reason"]


async def test_a_second_connection_with_a_connected_actor_name_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path) as coord:
        first = await connect(coord)
        await first.send(hello("alice") + event("alice", 0))
        # Wait for a condition, not a duration: the first connection is in once its first line
        # is counted (the server sends nothing back that could tell us).
        with anyio.fail_after(WAIT):
            while coord.counters.lines["alice"] < 1:
                await anyio.sleep(0.001)

        intruder_lines = events("alice", 3, start=100, intruder=True)
        second = await connect(coord)
        await second.send(hello("alice", pid=PID + 1) + b"".join(intruder_lines))
        assert await closed_by_server(second) == b""
        await second.aclose()
        assert coord.counters.refused == 1

        # The first connection is untouched and keeps streaming.
        later = events("alice", 5, start=1)
        await send_lines(first, later)
        await finish(first)
        await drained(coord)
        assert coord.counters.lines["alice"] == 6
    assert lines_of(coord.events_path, "alice") == [event("alice", 0), *later]
    [refused] = coordinator_events(coord.events_path, "refused")
    assert "'alice' already connected" in refused["reason"]


@pytest.mark.parametrize("name", ["engine", "coordinator"])
async def test_the_engines_own_actor_names_are_refused(tmp_path: Path, name: str) -> None:
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(hello(name) + event(name, 0, forged=True))
        assert await closed_by_server(client) == b""
        await client.aclose()
        await drained(coord)
        assert coord.counters.refused == 1
    assert all(b'"forged"' not in line for line in file_lines(coord.events_path))


async def test_a_name_is_free_again_once_its_connection_closed(tmp_path: Path) -> None:
    async with serve(tmp_path) as coord:
        for start in (0, 10):
            client = await connect(coord)
            await client.send(hello("alice") + b"".join(events("alice", 2, start=start)))
            await finish(client)
            await drained(coord)
        assert coord.counters.refused == 0
        assert coord.counters.lines["alice"] == 4
    assert lines_of(coord.events_path, "alice") == events("alice", 2) + events("alice", 2, 10)


# -- protocol errors after a valid hello ---------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(
            b'{"long":"' + b"y" * 3000 + b'"}\n', "line longer than 1000 bytes", id="long"
        ),
        pytest.param(b"y" * 3000, "line longer than 1000 bytes", id="long-unterminated"),
        pytest.param(b"\x00\xffnot json at all\n", "not a valid event line", id="garbage"),
        pytest.param(b'{"ts":1.0,"actor":"bob"}\n', "not a valid event line", id="missing-fields"),
        pytest.param(
            b'{"ts":"soon","actor":"bob","pid":1,"seq":9,"event":"tick"}\n',
            "not a valid event line",
            id="wrong-type",
        ),
        pytest.param(b"\n", "not a valid event line", id="empty-line"),
        pytest.param(event("alice", 9), "line claims actor 'alice'", id="other-actor"),
    ],
)
async def test_a_bad_line_closes_only_that_connection(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    good_before, good_after = events("alice", 20), events("alice", 20, start=20)
    bob_before, bob_after = events("bob", 4), events("bob", 4, start=4)
    async with serve(tmp_path, max_line=1000) as coord:
        alice = await connect(coord)
        await alice.send(hello("alice"))
        await send_lines(alice, good_before)

        bob = await connect(coord)
        # Valid lines, the bad one, then lines that must not be kept, all in one write.
        await bob.send(hello("bob") + b"".join(bob_before) + bad + b"".join(bob_after))
        assert await closed_by_server(bob) == b""
        await bob.aclose()
        assert coord.counters.protocol_errors == 1

        # Alice was connected all along and keeps streaming after bob is gone.
        await send_lines(alice, good_after)
        await finish(alice)
        await drained(coord)
        assert coord.counters.lines["alice"] == 40
        assert coord.counters.lines["bob"] == 4
        assert coord.counters.refused == 0
    assert lines_of(coord.events_path, "alice") == good_before + good_after
    assert lines_of(coord.events_path, "bob") == bob_before
    assert all(line not in file_lines(coord.events_path) for line in bob_after)
    [error] = coordinator_events(coord.events_path, "protocol_error")
    assert error["client"] == "bob"
    assert reason in error["reason"]


async def test_a_request_line_in_a_wall_clock_run_is_a_protocol_error(tmp_path: Path) -> None:
    # "!" starts a virtual run's request to its scheduler; a wall-clock run has none, and the
    # line must not reach the events file (it is not an event line).
    before, after = events("bob", 3), events("bob", 2, start=3)
    async with serve(tmp_path) as coord:
        bob = await connect(coord)
        await bob.send(hello("bob") + b"".join(before) + b'!{"op":"sleep"}\n' + b"".join(after))
        assert await closed_by_server(bob) == b""
        await bob.aclose()
        await drained(coord)
        assert coord.counters.protocol_errors == 1
        assert coord.counters.lines["bob"] == 3
    assert file_lines(coord.events_path)[-4:-1] == before
    assert lines_of(coord.events_path, "bob") == before
    [error] = coordinator_events(coord.events_path, "protocol_error")
    assert "not a valid event line" in error["reason"]


def _parse_one_by_one(block: bytes, actor: str, max_line: int) -> tuple[list[bytes], str | None]:
    """What the coordinator must accept of ``block``: each line on its own, in order, up to the
    first that is too long, not a valid event line, or another actor's."""
    kept: list[bytes] = []
    for raw in block.split(b"\n")[:-1]:
        if len(raw) > max_line:
            return kept, "line longer"
        try:
            line = decode_line(raw)
        except Exception:
            return kept, "not a valid event line"
        if line.actor != actor:
            return kept, "line claims actor"
        kept.append(raw)
    return kept, None


_GOOD = [event("bob", seq).rstrip(b"\n") for seq in range(4)]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(None, id="all-good"),
        pytest.param(_GOOD[0] + _GOOD[1], id="two-objects-on-one-line"),
        pytest.param(_GOOD[0] + b" " + _GOOD[1], id="two-objects-with-a-space"),
        pytest.param(_GOOD[0][:20] + b"\n" + _GOOD[0][20:], id="one-object-over-two-lines"),
        pytest.param(b'{"ts":1,"actor":"bob","seq":1,"event":"x","n":[1\n2]}', id="array-split"),
        pytest.param(b" " + _GOOD[0] + b" ", id="spaces-around"),
        pytest.param(b"", id="empty-line"),
        pytest.param(b"[1]", id="not-an-object"),
        pytest.param(event("alice", 0).rstrip(b"\n"), id="other-actor"),
        pytest.param(b'{"ts":1,"actor":"bob","seq":1,"event":"x","pid":"no"}', id="pid-type"),
        pytest.param(event("bob", 9, k="y" * 600).rstrip(b"\n"), id="too-long"),
    ],
)
@pytest.mark.parametrize("where", [0, 2, 4])
def test_a_block_is_taken_exactly_as_line_by_line(bad: bytes | None, where: int) -> None:
    # Whole blocks are checked in one go when they are good; a block with a bad line anywhere
    # must give what checking each line on its own gives: the lines before it, then the error.
    lines = list(_GOOD)
    if bad is not None:
        lines.insert(where, bad)
    block = b"".join(raw + b"\n" for raw in lines)
    kept, error = _parse_one_by_one(block, "bob", 500)
    # The whole-block check takes exactly the blocks with no bad line, and their lines.
    whole = _decode_whole(block, "bob", 500)
    assert (whole is None) == (error is not None)
    if whole is not None:
        assert whole[1] == kept
        assert [line.seq for line in whole[0]] == [decode_line(raw).seq for raw in kept]
    into: list[Any] = []
    if error is None:
        assert _parse(block, "bob", 500, into) == len(block)
    else:
        with pytest.raises(ProtocolError, match=error) as caught:
            _parse(block, "bob", 500, into)
        assert caught.value.good == sum(len(raw) + 1 for raw in kept)  # type: ignore[attr-defined]
    assert [line.raw for line in into] == kept
    assert [line.seq for line in into] == [decode_line(raw).seq for raw in kept]


@pytest.mark.parametrize("max_line", [1, 2, 3, 7, 64, 501])
def test_lines_found_short_without_measuring_each_are_short(max_line: int) -> None:
    # The whole-block check skips measuring each line when a few searches prove them short
    # (_short_lines); it must never pass a block with a longer line, whatever their lengths.
    rng = random.Random(max_line)
    proved = 0
    for _ in range(3000):
        lines = [b"x" * rng.randint(0, 2 * max_line + 3) for _ in range(rng.randint(1, 12))]
        block = b"".join(raw + b"\n" for raw in lines)
        if _short_lines(block, max_line):
            proved += 1
            assert max(map(len, lines)) <= max_line, (max_line, lines)
    assert proved  # the proof is not vacuous


@pytest.mark.parametrize("extra", [0, 1])
def test_a_long_block_with_one_line_at_or_over_the_limit(extra: int) -> None:
    # A block of many lines (longer than the limit, so the searches prove most of it short)
    # with one line exactly at the limit is taken whole; one byte more and it is not.
    lines = [raw.rstrip(b"\n") for raw in events("bob", 40)]
    pad = 500 - len(lines[20]) - len(',"k":""') + extra
    lines[20] = event("bob", 20, k="y" * pad).rstrip(b"\n")
    assert len(lines[20]) == 500 + extra
    block = b"".join(raw + b"\n" for raw in lines)
    whole = _decode_whole(block, "bob", 500)
    kept, error = _parse_one_by_one(block, "bob", 500)
    assert (whole is None) == (error is not None) == bool(extra)
    if whole is not None:
        assert whole[1] == kept == lines


def test_a_request_in_a_block_goes_to_the_requests_only_when_they_are_taken() -> None:
    block = _GOOD[0] + b"\n" + b'!{"op":"sleep"}\n' + _GOOD[1] + b"\n"
    into: list[Any] = []
    requests: list[Any] = []
    assert _parse(block, "bob", 500, into, requests) == len(block)
    assert [line.raw for line in into] == _GOOD[:2]
    # After one log line, and where its line is in the block (its bytes, newline included).
    start = len(_GOOD[0]) + 1
    assert requests == [(1, start, start + len(b'!{"op":"sleep"}\n'), {"op": "sleep"})]
    into.clear()
    with pytest.raises(ProtocolError, match="not a valid event line") as caught:
        _parse(block, "bob", 500, into)  # a wall-clock run takes no requests
    assert caught.value.good == len(_GOOD[0]) + 1  # type: ignore[attr-defined]
    assert [line.raw for line in into] == _GOOD[:1]


_REQUEST = b'!{"req":"op","task":0}'


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([*_GOOD[:3], _REQUEST], id="a-step"),
        pytest.param([_REQUEST], id="a-request-alone"),
        pytest.param([*_GOOD[:2], b"!{nope"], id="a-bad-request"),
        pytest.param([*_GOOD[:2], b'!{"req":"' + b"s" * 600 + b'"}'], id="a-long-request"),
        pytest.param([_GOOD[0], _REQUEST, _GOOD[1], _REQUEST], id="two-requests"),
        pytest.param([_GOOD[0], b"[1]", _REQUEST], id="a-bad-line-then-a-request"),
        pytest.param([_GOOD[0], event("alice", 0).rstrip(b"\n"), _REQUEST], id="other-actor"),
        pytest.param(
            [_GOOD[0], b'{"ts":1,"actor":"bob","seq":1,"event":"!"}', _REQUEST],
            id="a-bang-inside-a-line",
        ),
        pytest.param([*_GOOD[:2], _REQUEST, _GOOD[2]], id="a-line-after-the-request"),
    ],
)
def test_a_virtual_step_is_taken_exactly_as_line_by_line(lines: list[bytes]) -> None:
    # A virtual run's block: a step's lines, then its request, or anything else a client may
    # send. Lines, requests (where each one is) and the error must be those of taking each
    # line on its own, as the contract and docs/log-format.md say.
    block = b"".join(raw + b"\n" for raw in lines)
    kept: list[bytes] = []
    wanted: list[tuple[int, int, int, Any]] = []
    error, good = None, 0
    for raw in lines:
        if len(raw) > 500:
            error = "line longer"
        elif raw[:1] == b"!":
            try:
                wanted.append((len(kept), good, good + len(raw) + 1, json.loads(raw[1:])))
            except ValueError:
                error = "not a valid request"
        else:
            try:
                line = decode_line(raw)
            except Exception:
                error = "not a valid event line"
            else:
                if line.actor != "bob":
                    error = "line claims actor"
                else:
                    kept.append(raw)
        if error is not None:
            break
        good += len(raw) + 1
    into: list[Any] = []
    requests: list[Any] = []
    if error is None:
        assert _parse(block, "bob", 500, into, requests) == len(block)
    else:
        with pytest.raises(ProtocolError, match=error) as caught:
            _parse(block, "bob", 500, into, requests)
        assert caught.value.good == good  # type: ignore[attr-defined]
    assert [line.raw for line in into] == kept
    assert [tuple(request) for request in requests] == wanted


async def test_a_long_line_arriving_in_pieces_is_cut_at_the_limit(tmp_path: Path) -> None:
    kept = events("bob", 3)
    async with serve(tmp_path, max_line=1000) as coord:
        bob = await connect(coord)
        await send_lines(bob, [hello("bob"), *kept, b'{"x":"'])
        # The line keeps growing without a newline; the server must give up on its own.
        with anyio.fail_after(WAIT):
            try:
                for _ in range(100):
                    await bob.send(b"z" * 100)
            except anyio.BrokenResourceError:
                pass  # the server hung up while we were still writing
        # A reset (our bytes were still unread when the server hung up) is a close too.
        with anyio.fail_after(WAIT), contextlib.suppress(anyio.BrokenResourceError):
            assert await closed_by_server(bob) == b""
        await bob.aclose()
        await drained(coord)
        assert coord.counters.protocol_errors == 1
    assert lines_of(coord.events_path, "bob") == kept
    [error] = coordinator_events(coord.events_path, "protocol_error")
    assert "line longer than 1000 bytes" in error["reason"]


async def test_a_connection_closed_inside_a_line_keeps_the_complete_lines(
    tmp_path: Path,
) -> None:
    kept = events("bob", 3)
    async with serve(tmp_path) as coord:
        bob = await connect(coord)
        await bob.send(hello("bob") + b"".join(kept) + event("bob", 3)[:10])
        await finish(bob)
        await drained(coord)
        assert coord.counters.protocol_errors == 1
    assert lines_of(coord.events_path, "bob") == kept
    [error] = coordinator_events(coord.events_path, "protocol_error")
    assert "connection closed inside a line" in error["reason"]


# -- transports and back-pressure ---------------------------------------------------------------


async def test_the_unix_socket_transport_works_and_leaves_nothing_behind(tmp_path: Path) -> None:
    sent = events("alice", 50)
    async with serve(tmp_path, transport="unix") as coord:
        # An abstract socket: it has a name but no file, so nothing can be left behind.
        assert isinstance(coord.address, str)
        assert coord.address.startswith("\0sim-")
        address = coord.address

        client = await connect(coord)
        await client.send(hello("alice"))
        await send_lines(client, sent, per_write=7)
        await finish(client)

        intruder = await connect(coord)
        await intruder.send(hello("mallory", secret="nope"))
        assert await closed_by_server(intruder) == b""
        await intruder.aclose()
        await drained(coord)
        assert coord.counters.lines["alice"] == 50
        assert coord.counters.refused == 1
    assert lines_of(coord.events_path, "alice") == sent
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe, pytest.raises(ConnectionRefusedError):
        probe.connect(address)  # gone with the coordinator


async def test_a_tiny_buffer_slows_clients_down_without_losing_lines(tmp_path: Path) -> None:
    actors, n = [f"a{i}" for i in range(6)], 3000
    sent = {actor: events(actor, n, payload="p" * 100) for actor in actors}

    async def stream_all(actor: str) -> None:
        client = await connect(coord)
        await client.send(hello(actor))
        await send_lines(client, sent[actor], per_write=25)
        await finish(client)

    async with serve(tmp_path, buffer=1) as coord:
        async with anyio.create_task_group() as tg:
            for actor in actors:
                tg.start_soon(stream_all, actor)
        await drained(coord)
        assert coord.counters.lines == {actor: n for actor in actors}
        assert coord.counters.events == n * len(actors)
    for actor in actors:
        assert lines_of(coord.events_path, actor) == sent[actor]
    assert len(file_lines(coord.events_path)) == n * len(actors)


# -- live counters ------------------------------------------------------------------------------


async def test_live_counters_follow_acquire_and_release(tmp_path: Path) -> None:
    seqs = {"a": 0, "b": 0}

    async def say(actor: str, **op: Any) -> None:
        """One line from ``actor``, fully processed when this returns."""
        client = await connect(coord)
        await client.send(hello(actor) + event(actor, seqs[actor], "op", **op))
        seqs[actor] += 1
        await finish(client)
        await drained(coord)

    def state() -> tuple[float, float]:
        model = coord.counters.history.model("lot")
        assert model is not None
        return model.gauges["held"], model.gauges["waiting"]

    lot = {"kind": "semaphore", "value": 2}
    history = History({"lot": lot, "gate": lot})
    async with serve(tmp_path, history=history) as coord:
        assert state() == (0, 0)
        await say("a", prim="lot", kind="semaphore", op="acquire", phase="invoke")
        assert state() == (0, 1)
        await say("a", prim="lot", kind="semaphore", op="acquire", phase="ok")
        assert state() == (1, 0)
        await say("b", prim="lot", kind="semaphore", op="acquire", phase="invoke")
        assert state() == (1, 1)
        await say("b", prim="lot", kind="semaphore", op="acquire", phase="timeout")
        assert state() == (1, 0)
        await say("b", prim="lot", kind="semaphore", op="acquire", phase="invoke")
        assert state() == (1, 1)
        await say("a", prim="lot", kind="semaphore", op="release", phase="invoke")
        assert state() == (0, 1)
        await say("a", prim="lot", kind="semaphore", op="release", phase="ok")
        assert state() == (0, 1)
        await say("b", prim="lot", kind="semaphore", op="acquire", phase="ok")
        assert state() == (1, 0)
        # Ops on another primitive, or without one, leave "lot" alone.
        await say("a", prim="gate", kind="semaphore", op="acquire", phase="invoke")
        await say("a", op="acquire", phase="invoke")
        assert state() == (1, 0)
        gate = coord.counters.history.model("gate")
        assert gate is not None
        assert gate.gauges["waiting"] == 1
        assert coord.counters.events == 10
        assert coord.counters.history.holders("lot") == ["b"]


async def test_actor_start_and_end_are_counted(tmp_path: Path) -> None:
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(
            hello("alice") + event("alice", 0, "actor_start") + event("alice", 1, "actor_end")
        )
        await finish(client)
        await drained(coord)
        assert coord.counters.history.started == {"alice"}
        assert coord.counters.history.ended == {"alice": "ok"}
        assert coord.counters.live() == set()


async def test_the_live_history_is_what_feeding_the_written_lines_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of plain domain lines are taken by the history in one go, the others line by
    # line (a lifecycle line, an operation, a gap, a line somebody reads): the live history
    # must end as one fed every written line, in the order written.
    def ops(actor: str, seq: int) -> list[bytes]:
        acquire = {"prim": "lot", "kind": "semaphore", "op": "acquire"}
        return [event(actor, seq, "op", phase="invoke", **acquire),
                event(actor, seq + 1, "op", phase="ok", **acquire)]  # fmt: skip

    lot = {"kind": "semaphore", "initial": 2}
    sent = {
        "alice": [event("alice", 0, "actor_start"), *events("alice", 300, 1), *ops("alice", 301),
                  *events("alice", 200, 303), *events("alice", 50, 600)],  # a gap at 503
        "bob": [*events("bob", 100), event("bob", 100, "read_me"), *events("bob", 500, 101),
                event("bob", 601, "actor_end")],
    }  # fmt: skip

    class Reader(Subscriber):
        events = frozenset({"read_me"})

        def __init__(self) -> None:
            self.read: list[int] = []

        def on_line(self, line: Any) -> None:
            self.read.append(line.seq)

    live = History({"lot": lot})
    live.subscribe(reader := Reader())
    in_one_go: list[bool] = []  # per block: taken in one go, or fed line by line
    take_runs, feed = live._take_runs, live.feed

    def counted(*args: Any) -> bool:
        in_one_go.append(take_runs(*args))
        return in_one_go[-1]

    def line_by_line(lines: Any) -> None:
        in_one_go.append(False)
        feed(lines)

    monkeypatch.setattr(live, "_take_runs", counted)
    monkeypatch.setattr(live, "feed", line_by_line)
    async with serve(tmp_path, history=live) as coord:
        for actor, lines in sent.items():
            client = await connect(coord)
            await send_lines(client, [hello(actor), *lines], per_write=37)
            await finish(client)
        await drained(coord)
    again = History({"lot": lot})
    again.subscribe(reader_again := Reader())
    again.feed(decode_line(raw) for raw in file_lines(coord.events_path))

    def state(h: History) -> tuple[Any, ...]:
        return (h.lines, h.ops, h.now, h.actor_now, h.next_seq, h.gap_count, h.late_lines,
                h.late_s, h.started, h.ended, h.holders("lot"))  # fmt: skip

    assert state(live) == state(again)
    assert reader.read == reader_again.read == [100]
    assert live.gap_count == 1
    assert True in in_one_go
    assert False in in_one_go


async def test_a_heavy_connections_own_decoder_takes_and_refuses_as_the_plain_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After enough lines taken in one go, a connection's blocks are decoded by a decoder of its
    # own (its actor and pid pinned). Whatever comes then must be taken or refused as before:
    # operations (the history keeps those lines: plain Lines), a line of another pid (good),
    # and a line claiming another actor (a protocol error, nothing after it kept).
    monkeypatch.setattr(sim.coordinator, "_OWN_DECODER_AFTER", 40)
    made: list[tuple[str, int]] = []
    decoded: list[bytes] = []
    own_decoder = sim.coordinator._own_decoder

    def counted(actor: str, pid: int) -> Any:
        made.append((actor, pid))
        decode = own_decoder(actor, pid)

        def used(raw: bytes) -> Any:
            decoded.append(raw)
            return decode(raw)

        return used

    monkeypatch.setattr(sim.coordinator, "_own_decoder", counted)
    acquire = {"prim": "lot", "kind": "semaphore", "op": "acquire"}
    good = [
        *events("alice", 100),
        event("alice", 100, "op", phase="invoke", **acquire),
        event("alice", 101, "op", phase="ok", **acquire),
        *events("alice", 100, 102),
        event("alice", 202, pid=PID + 1),
        *events("alice", 100, 203),
    ]
    after = events("alice", 20, 304)
    lot = {"kind": "semaphore", "initial": 2}
    live = History({"lot": lot})
    kept: list[type] = []
    feed = live.feed

    def typed(lines: Any) -> None:
        lines = list(lines)
        kept.extend(map(type, lines))
        feed(lines)

    monkeypatch.setattr(live, "feed", typed)
    async with serve(tmp_path, history=live) as coord:
        client = await connect(coord)
        await send_lines(client, [hello("alice"), *good], per_write=10)
        await client.send(event("bob", 0) + b"".join(after))
        assert await closed_by_server(client) == b""
        await client.aclose()
        await drained(coord)
    assert made == [("alice", PID)]  # made once, though used, left and used again
    # Used, and used again on blocks after the operations (seq 102-201) and after the other
    # pid's line (203-302).
    seqs = {msgspec.json.decode(raw)["seq"] for raw in decoded}
    assert seqs & set(range(102, 202))
    assert seqs & set(range(203, 303))
    assert set(kept) == {Line}
    assert lines_of(coord.events_path, "alice") == good
    [error] = coordinator_events(coord.events_path, "protocol_error")
    assert "line claims actor 'bob'" in error["reason"]
    again = History({"lot": lot})
    again.feed(decode_line(raw) for raw in file_lines(coord.events_path))

    def state(h: History) -> tuple[Any, ...]:
        return (h.lines, h.ops, h.next_seq, h.gap_count, h.holders("lot"))

    assert state(live) == state(again)


def test_a_connections_own_decoder_refuses_every_line_the_plain_one_does() -> None:
    # The own decoder leaves Line's payload fields out (its decode is the cheaper for it):
    # a line it takes must still be one decode_line takes, with the same contract fields.
    own = sim.coordinator._own_decoder("alice", PID)
    base = {"ts": 1.5, "actor": "alice", "pid": PID, "seq": 3, "event": "tick"}
    variants: list[dict[str, Any]] = [
        {}, {"pid": PID + 1}, {"actor": "bob"}, {"ts": "1.5"}, {"ts": 2}, {"seq": 3.5},
        {"seq": None}, {"event": 7}, {"step": 4}, {"step": "4"}, {"step": None},
        {"~raw": "not base64!"}, {"~raw": "aGk="}, {"~number": "12"}, {"~number": 12},
        {"~cache": [1]}, {"prim": {"a": 1}, "op": 5}, {"phase": None, "item": [1, 2]},
    ]  # fmt: skip
    raws = [msgspec.json.encode({**base, **change}) for change in variants]
    raws += [msgspec.json.encode({k: v for k, v in base.items() if k != gone})
             for gone in base]  # fmt: skip
    raws += [b'{"ts":1.5,"actor":"alice","seq":3,"event":"tick","x":' + b"[" * 2000 + b"]" * 2000
             + b"}", b'{"ts":1.5,"actor":"alice","seq":3,"event":"tick",}', b"[]"]  # fmt: skip
    taken = 0
    for raw in raws:
        try:
            plain = decode_line(raw)
        except (msgspec.DecodeError, RecursionError):
            plain = None
        try:
            mine = own(raw)
        except (msgspec.DecodeError, RecursionError):
            continue
        taken += 1
        assert plain is not None, raw
        assert (mine.ts, mine.actor, mine.pid, mine.seq, mine.event, mine.step) == (
            plain.ts, plain.actor, plain.pid, plain.seq, plain.event, plain.step), raw  # fmt: skip
    assert taken >= 8  # it does take the good ones


# -- shutdown -----------------------------------------------------------------------------------


async def test_lines_logged_just_before_exit_are_all_written(tmp_path: Path) -> None:
    # The engine logs run_end (and the coordinator its refusals) right before leaving the block:
    # whatever is still queued for the writer at that moment must reach the file.
    async with serve(tmp_path) as coord:
        log = coord.logger("engine")
        for i in range(20):
            log.info("run_end", i=i)
    written = lines_of(coord.events_path, "engine")
    assert [json.loads(line)["i"] for line in written] == list(range(20))


async def test_the_engines_own_lines_keep_their_order_in_a_burst(tmp_path: Path) -> None:
    # The engine logs synchronously (e.g. one "spawn" per actor) without yielding to the writer,
    # so a burst fills the writer's buffer; the file must still hold its lines in seq order.
    async with serve(tmp_path, buffer=2) as coord:
        log = coord.logger("engine")
        for i in range(6):
            log.info("spawn", i=i)
        client = await connect(coord)
        await client.send(hello("alice") + event("alice", 0))
        await finish(client)
        await drained(coord)
    seqs = [json.loads(line)["seq"] for line in lines_of(coord.events_path, "engine")]
    assert seqs == list(range(6))


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_an_error_inside_the_block_still_closes_the_listener(
    tmp_path: Path, transport: str
) -> None:
    with pytest.RaisesGroup(RuntimeError, allow_unwrapped=True, flatten_subgroups=True):
        async with serve(tmp_path, transport=transport) as coord:
            client = await connect(coord)
            await client.send(hello("alice") + event("alice", 0))
            await finish(client)
            await drained(coord)
            raise RuntimeError("the engine failed")
    assert lines_of(coord.events_path, "alice") == [event("alice", 0)]
    if isinstance(coord.address, str):
        family, address = socket.AF_UNIX, coord.address
    else:
        family, address = socket.AF_INET, coord.address
    # Nobody may still be listening: a client must be refused, not left in a dead backlog.
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(WAIT)
        with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
            probe.connect(address)


async def test_drain_waits_for_a_connection_not_yet_accepted(tmp_path: Path) -> None:
    # An actor that connects, writes and exits before the coordinator's loop got round to
    # accepting it: its connection sits in the listen backlog when the engine calls drain.
    sent = events("alice", 5)
    async with serve(tmp_path) as coord:
        assert isinstance(coord.address, tuple)
        with socket.create_connection(coord.address, timeout=WAIT) as sock:
            sock.sendall(hello("alice") + b"".join(sent))
            sock.shutdown(socket.SHUT_WR)
        await drained(coord)
    assert lines_of(coord.events_path, "alice") == sent


async def test_leaving_the_block_releases_the_writers_stream(tmp_path: Path) -> None:
    gc.collect()  # earlier tests' leftovers are not this test's business
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(hello("alice") + event("alice", 0))
        await finish(client)
        await drained(coord)
    assert lines_of(coord.events_path, "alice") == [event("alice", 0)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del coord
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_domain_events_may_use_op_field_names_for_their_own_values(tmp_path: Path) -> None:
    # "phase", "prim", "kind", "op" and "timeout" mean something only on op events.
    sent = [
        event("alice", 0, "phase_start", phase=3),
        event("alice", 1, "tick", prim=["not", "a", "name"], op=7, timeout="soon"),
        event("alice", 2, "op", prim="spaces", kind="semaphore", op="acquire", phase="ok"),
    ]
    async with serve(tmp_path) as coord:
        client = await connect(coord)
        await client.send(hello("alice") + b"".join(sent))
        await finish(client)
        await drained(coord)
        assert coord.counters.protocol_errors == 0
        assert coord.counters.history.holders("spaces") == ["alice"]
    assert lines_of(coord.events_path, "alice") == sent


def test_a_line_cannot_forge_its_fields_with_the_readers_own_keys(tmp_path: Path) -> None:
    # Line keeps its raw bytes, number and decoded fields under "~" names; a line that carries
    # them itself must still read as what it says, by every reader.
    forged = (
        b'{"ts":1.0,"actor":"bob","pid":7,"seq":0,"event":"op","prim":"s","op":"acquire",'
        b'"phase":"ok","~cache":{"prim":"forged","op":"release"},"~number":99}'
    )
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x\n" + forged + b"\n")
    (line,) = [line for chunk in read_lines(path) for line in chunk]
    into: list[Any] = []
    _parse(forged + b"\n", "bob", 500, into)
    whole = _decode_whole(forged + b"\n", "bob", 500)
    assert whole is not None
    _keep_raw(*whole)
    for read in (line, into[0], whole[0][0]):
        assert (read.fields["prim"], read.fields["op"]) == ("s", "acquire")
    assert line.number == 2
