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
* coordinator: what ``Coordinator._pump`` does with a received block of a wall-clock run: check
  and decode its lines (``sim.coordinator._parse``), feed them to the run's live history;
  split-and-write alone beside it;
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

try:
    import orjson
except ImportError:  # as bench/log_pipeline.py's bare actors: msgspec instead
    orjson = None  # type: ignore[assignment]
import structlog

from bench._common import add_time_limit, machine, table, time_limit
from sim.coordinator import _parse
from sim.history import History
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

    event = {"ts": 0.123456789, "actor": "flood-000", "pid": pid, "seq": 5, "i": 5, "event": "tick"}
    blocks = []
    for b in range(max(1, n // 1000)):
        lines = [dict(event, seq=b * 1000 + i, i=i) for i in range(1000)]
        blocks.append(b"".join(msgspec.json.encode(e) + b"\n" for e in lines))
    history = History()

    def pump() -> None:
        block = blocks.pop()
        into: list[Any] = []
        _parse(block, "flood-000", 1 << 16, into)
        history.feed(into)

    rows.append(
        ("coordinator: check + decode + history, per line", _time(pump, len(blocks)) / 1000)
    )
    block = blocks[0] if blocks else b""
    with open(os.devnull, "wb") as null:
        rows.append(
            ("coordinator: split + write alone, per line",
             _time(lambda: null.write(block[: block.rfind(b"\n") + 1]), 1000) / 1000)
        )  # fmt: skip
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
