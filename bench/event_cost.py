"""Per-event CPU cost of the pieces of the log pipeline, in one process, one thread at a time.

Explains the ratios of bench/log_pipeline.py: on a 2-core machine both pipelines are CPU bound,
so events/s is about (cores / CPU per event). Each row times ``N`` calls of one piece:

* structlog call: a bound logger with a processor that returns ``b""`` into a no-op logger (what
  every ``ctx.log.info`` costs before any of sim's own work);
* sim actor path: sim's real processor (sim.runtime.worker: it stamps, renders and queues the
  line into sim's real BatchingSink) over a socketpair (its flusher thread sends; a forked
  process drains the other end), i.e. what an actor pays per event, flusher thread included
  (it shares the actor's GIL);
* bare actor path: structlog + the same stamp + JSONRenderer(orjson) + one ``sendall`` per event
  over a socketpair drained by a forked process (what bench/log_pipeline.py's bare actors pay);
* sendall alone: one ``sendall`` of one rendered line over such a socketpair;
* stamp: the dict work of sim's stamp (a new dict, the contract's fields first) against setting
  the fields into the call's own dict;
* coordinator: what ``Coordinator._pump`` does with a received block of a wall-clock run (blocks
  of 2,000 lines as the actors render them): check and decode its lines
  (``sim.coordinator._decode_whole``), then also feed them to the run's live history line by
  line, or (as ``_pump`` does with a block of plain domain lines) let the history take the
  block in one go (``History.feed_run``), also with the decoder of its own that a heavy
  connection gets (``sim.coordinator._own_decoder``); beside it the decode alone, three ways
  (a ``Line`` per line; a whole block in one ``decode_lines`` call, which alone does not prove
  one object per line; a struct of only the contract's fields), and split-and-write alone; and
  the whole coordinator (its event loop, sockets, checks, live history and events file, CPU of
  this process) taking pre-rendered lines from 4 forked senders;
* encoders: msgspec and orjson encoding one event dict.

Run from the repository root: ``python bench/event_cost.py`` (``--quick`` for fewer calls). The
numbers are CPU time per call of this process (``time.process_time``: every thread of it, the
flusher included, not the drain processes), which holds up better than wall time on a loaded
machine; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import msgspec

try:
    import orjson
except ImportError:  # as bench/log_pipeline.py's bare actors: msgspec instead
    orjson = None  # type: ignore[assignment]
import structlog

from bench._common import add_time_limit, machine, table, time_limit
from sim.coordinator import (
    Coordinator,
    _decode_whole,
    _keep_raw,
    _own_decoder,
    address_of,
    bind,
)
from sim.history import History
from sim.history.lines import Line, decode_line
from sim.runtime import worker
from sim.runtime._logger import ActorLogger
from sim.runtime._sink import BatchingSink, EngineWatch


class _Null:
    def msg(self, line: Any) -> None:
        pass

    info = msg


def _drained_pair() -> socket.socket:
    """One end of a socketpair whose other end a forked process reads and discards (as the
    coordinator or the bare server would, in its own process: no GIL shared with the sender)."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the drain process
        a.close()
        while b.recv(1 << 20):
            pass
        os._exit(0)
    b.close()
    _children.append(pid)
    return a


_children: list[int] = []


def _logger(sink: Any, processors: list[Any], wrapper: Any = None) -> Any:
    return structlog.wrap_logger(
        sink,
        processors=processors,
        wrapper_class=wrapper or structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=True,
    )


def _time_log(log: Any, n: int) -> float:
    info = log.info
    t0 = time.process_time()
    for i in range(n):
        info("tick", i=i)
    return (time.process_time() - t0) / n * 1e6


class _Contract(msgspec.Struct, gc=False):
    """What every line must carry, with its type (as sim.history.lines.Line checks it)."""

    ts: float
    actor: str
    seq: int
    event: str
    pid: int = 0
    step: int | None = None


def _per_line(fn: Callable[[], object], blocks: list[bytes]) -> float:
    """CPU µs per line of ``fn`` called once per block (each call takes the next block)."""
    lines = sum(block.count(b"\n") for block in blocks)
    return _time(fn, len(blocks)) * len(blocks) / lines


def _sender(address: Any, actor: str, n: int) -> None:  # pragma: no cover - a forked sender
    """Send ``n`` lines of ``actor`` as fast as the coordinator takes them, in sends of ~60 KiB
    as a saturated actor's flusher does (rendered before connecting: only sending is left)."""
    pid = os.getpid()
    encode = msgspec.json.Encoder().encode
    line = {"ts": 0.0, "actor": actor, "pid": pid, "seq": 0, "i": 0, "event": "tick"}
    chunks = [
        b"".join(
            encode(dict(line, ts=(41_000_000 + seq * 813) / 1e9, seq=seq, i=seq)) + b"\n"
            for seq in range(start, min(n, start + 700))
        )
        for start in range(0, n, 700)
    ]
    sock = socket.create_connection(address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, worker._SNDBUF)  # as sim's actors do
    hello = {"hello": 1, "secret": "bench", "actor": actor, "pid": pid}
    sock.sendall(msgspec.json.encode(hello) + b"\n")
    for chunk in chunks:
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    os._exit(0)


def _whole_coordinator(actors: int, n: int) -> float:
    """CPU µs per line of a real Coordinator (its event loop, sockets, checks, live history and
    events file) taking ``n`` lines from each of ``actors`` forked senders."""
    listener = bind("tcp")
    address = address_of(listener)
    names = [f"flood-{i:03d}" for i in range(actors)]
    senders = []
    for name in names:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the sender
            try:
                listener.close()
                _sender(address, name, n)
            finally:
                os._exit(1)  # never back into the benchmark
        senders.append(pid)

    async def serve(path: Path) -> float:
        t0 = time.process_time()
        async with Coordinator(
            path, secret="bench", t0_ns=0, listener=listener, history=History(), actors=names
        ) as coordinator:
            left = set(senders)
            while left:
                left = {pid for pid in left if not os.waitpid(pid, os.WNOHANG)[0]}
                await anyio.sleep(0.005)
            await coordinator.drain(30)
            lines = coordinator.counters.events
        if lines != actors * n:
            raise RuntimeError(f"the coordinator took {lines} lines of {actors * n}")
        return time.process_time() - t0

    with tempfile.TemporaryDirectory() as tmp:
        cpu = anyio.run(serve, Path(tmp) / "events.jsonl")
    return cpu / (actors * n) * 1e6


def _time(fn: Callable[[], object], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def measure(n: int) -> list[tuple[str, float]]:
    t0_ns = time.monotonic_ns()
    pid = os.getpid()
    rows: list[tuple[str, float]] = []

    rows.append(("structlog call, no work", _time_log(_logger(_Null(), [lambda *a: b""]), n)))
    rows.append(
        (
            "  the same through sim's ActorLogger",
            _time_log(_logger(_Null(), [lambda *a: b""], ActorLogger), n),
        )
    )

    sock = _drained_pair()
    sink = BatchingSink(sock, 0.005, EngineWatch(os.getppid()))
    guard, threads = worker._StopGuard(), worker._Threads()
    sim_procs = worker._processors("flood-000", pid, t0_ns, guard, threads, sink=sink)
    rows.append(
        (
            "sim actor path (processor + BatchingSink)",
            _time_log(_logger(worker._Queued(), sim_procs, ActorLogger), n),
        )
    )
    sink.close()

    # The stamp's dict, both ways: sim's processor makes a new dict, the contract's fields
    # first; setting them into the call's own dict (structlog's usual way) saves a dict.
    ts, actor, seq = 0.041201638, "flood-000", 994

    def merged() -> None:
        ed = {"i": 1, "event": "tick"}
        line = {"ts": ts, "actor": actor, "pid": pid, "seq": seq, **ed}
        if len(line) != len(ed) + 4:
            line.update(ts=ts, actor=actor, pid=pid, seq=seq)

    def in_place() -> None:
        ed: dict[str, Any] = {"i": 1, "event": "tick"}
        ed["ts"] = ts
        ed["actor"] = actor
        ed["pid"] = pid
        ed["seq"] = seq

    rows.append(("  stamp: a new dict, contract fields first (sim)", _time(merged, n)))
    rows.append(("  stamp: set into the event's own dict", _time(in_place, n)))

    bare_sock = _drained_pair()
    counter = itertools.count()

    def stamp(_l: Any, _m: str, ed: Any) -> Any:
        ts = (time.monotonic_ns() - t0_ns) / 1e9
        return {"ts": ts, "actor": "bare-000", "pid": pid, "seq": next(counter), **ed}

    class SendAll:
        def __init__(self) -> None:
            self._sendall = bare_sock.sendall

        def msg(self, line: bytes) -> None:
            self._sendall(line + b"\n")

        info = msg

    if orjson is not None:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    else:
        plain = msgspec.json.Encoder().encode
        renderer = structlog.processors.JSONRenderer(serializer=lambda obj, **kw: plain(obj))
    rows.append(
        (
            f"bare actor path ({'orjson' if orjson else 'msgspec'} + sendall per event)",
            _time_log(_logger(SendAll(), [stamp, renderer]), n),
        )
    )
    bare_sock.close()
    raw_sock = _drained_pair()
    one = b'{"ts":0.123456789,"actor":"bare-000","pid":1234,"seq":5,"i":5,"event":"tick"}\n'
    rows.append(("sendall of one line alone", _time(lambda: raw_sock.sendall(one), n)))
    raw_sock.close()
    for child in _children:
        os.waitpid(child, 0)
    _children.clear()

    # Blocks as the coordinator reads them in a flood run: the actor's key order, a time in
    # whole nanoseconds (up to 9 decimals, as the actors' clock gives), consecutive seq.
    event = {"ts": 0.123456789, "actor": "flood-000", "pid": pid, "seq": 5, "i": 5, "event": "tick"}
    per_block = 2000  # about what one read of a saturated connection holds
    blocks = [
        b"".join(
            msgspec.json.encode(
                dict(event, ts=(41_000_000 + seq * 813) / 1e9, seq=seq, i=seq)
            ) + b"\n"
            for seq in range(b * per_block, (b + 1) * per_block)
        )
        for b in range(max(1, n // per_block))
    ]  # fmt: skip

    def check(block: bytes) -> list[Any]:
        # What Coordinator._pump does with a good block before the history sees it.
        whole = _decode_whole(block, "flood-000", 1 << 16)
        if whole is None:
            raise RuntimeError("a flood block refused")
        _keep_raw(*whole)
        return whole[0]

    todo = iter(blocks)
    rows.append(
        ("coordinator: check + decode (_decode_whole), per line",
         _per_line(lambda: check(next(todo)), blocks))
    )  # fmt: skip
    history = History()

    def pump() -> None:
        history.feed(check(next(todo)))

    todo = iter(blocks)
    rows.append(("  the same + the live history's feed", _per_line(pump, blocks)))
    in_one_go = History()

    def pump_plain() -> None:
        # What Coordinator._pump does with a good block: the history takes it in one go.
        whole = _decode_whole(next(todo), "flood-000", 1 << 16)
        if whole is None or not in_one_go.feed_run("flood-000", whole[0]):
            raise RuntimeError("a flood block not taken in one go")

    todo = iter(blocks)
    rows.append(("  the same, the history in one go (feed_run)", _per_line(pump_plain, blocks)))
    own = _own_decoder("flood-000", pid)
    in_one_go_own = History()

    def pump_own() -> None:
        # The same for a heavy connection, as _pump decodes it: with a decoder of its own.
        whole = _decode_whole(next(todo), "flood-000", 1 << 16, own)
        if whole is None or not in_one_go_own.feed_run("flood-000", whole[0]):
            raise RuntimeError("a flood block not taken in one go")

    todo = iter(blocks)
    rows.append(("  the same, the connection's own decoder", _per_line(pump_own, blocks)))
    raws = [block.split(b"\n")[:-1] for block in blocks]
    each = iter(raws)
    rows.append(
        ("  decode alone: a Line per line",
         _per_line(lambda: list(map(decode_line, next(each))), blocks))
    )  # fmt: skip
    whole = iter(blocks)
    decode_lines = msgspec.json.Decoder(Line).decode_lines
    rows.append(
        ("  decode alone: a block in one call (no 1:1 proof)",
         _per_line(lambda: decode_lines(next(whole)), blocks))
    )  # fmt: skip
    contract = iter(raws)
    decode_contract = msgspec.json.Decoder(_Contract).decode
    rows.append(
        ("  decode alone: the contract's fields only",
         _per_line(lambda: list(map(decode_contract, next(contract))), blocks))
    )  # fmt: skip
    block = blocks[0]
    with open(os.devnull, "wb") as null:
        rows.append(
            ("coordinator: split + write alone, per line",
             _time(lambda: null.write(block[: block.rfind(b"\n") + 1]), 1000) / per_block)
        )  # fmt: skip
    rows.append(
        ("coordinator, whole: 4 senders, its loop, sockets and file", _whole_coordinator(4, n))
    )
    encode = msgspec.json.Encoder().encode
    rows.append(("msgspec encode of one event", _time(lambda: encode(event), n)))
    if orjson is not None:
        rows.append(("orjson dumps of one event", _time(lambda: orjson.dumps(event), n)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300_000, help="calls per row (default 300000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; the best is shown")
    parser.add_argument("--quick", action="store_true", help="50000 calls, 1 repetition")
    add_time_limit(parser, 600)
    args = parser.parse_args()
    time_limit(args.time_limit)
    if args.quick:
        args.n, args.reps = 50_000, 1
    print(f"# per-event cost: {args.n:,} calls per row, best of {args.reps}")
    print(f"# {machine()}")
    best: dict[str, float] = {}
    for _ in range(args.reps):
        for name, us in measure(args.n):
            best[name] = min(best.get(name, float("inf")), us)
    print()
    print(table(["piece", "us per event"], [[k, f"{v:.2f}"] for k, v in best.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
