"""A run as a Chrome Trace Event file, for https://ui.perfetto.dev and chrome://tracing.

Layout (the JSON Object Format of the Trace Event spec, timestamps in microseconds since the run
started):

* Process 1, named after the run, has the actors. Each actor has a track of its operations
  (a span from ``invoke`` to completion: a wait, if the operation can block) with its domain
  events (``park``, ``eat``) as instants on it, and a second track, ``<actor> holds``, with a
  span for every unit it held (``acquire`` ok .. ``release`` invoke; a Condition's lock
  between its waits). The engine's events (spawn, exit, deadlock) are on an ``engine`` track.
* Process 2, ``primitives``, has the counter tracks: units held and processes waiting per
  semaphore or lock, length per queue, items in a pipe, a shared value.
* Flow arrows go from a ``put``/``send`` to the ``get``/``recv`` that received the item, and
  from a ``release`` (``notify``, ``set``, a barrier's last arrival) to the waiter it let go.

Why two tracks per actor: a hold usually outlives the operations around it (a car holds its
space across the ``release`` that ends the hold; a philosopher takes a second fork while
holding the first), so holds and operations on one track would overlap without nesting, and
Perfetto drops such spans. On their own tracks, operations of one thread follow each other
and holds are laid out so that no two overlap. An actor with several threads (a TCP server
with one per client) has overlapping operations, so such an actor gets more rows: ``server``,
``server ·2``... Async spans would avoid rows, but Perfetto shows them apart from the actor's
thread, and chrome://tracing stacks them unpredictably.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import msgspec

from sim._replay import LoadedRun, open_history
from sim.history import Hold, Operation, Subscriber, Transfer
from sim.history.lines import Line

from . import describe_params, speedup_of

__all__ = ["export_chrome"]

_RUN_PID, _PRIM_PID = 1, 2
_ENGINE_TID = 1
# Every span is drawn at least this long (µs), and flow arrows attach this far inside a span:
# the viewers bind an arrow to the span that encloses its timestamp, and a zero-length span
# encloses nothing.
_MIN_US = 1.0
_INSIDE_US = 0.1
# The fields every line has, and those an op span's name and outcome already say. A domain
# event may use prim, kind, op and phase for its own values: only op lines lose them.
_LINE = frozenset({"ts", "actor", "pid", "seq", "event"})
_OP_LINE = _LINE | {"prim", "kind", "op", "phase"}
# Engine events that concern the whole run: drawn as lines across every track.
_GLOBAL = frozenset({"deadlock", "stopping"})
_FLOW_NAMES = {
    "message": "message",
    "unit": "release → acquire",
    "signal": "release → acquire",
    "notify": "notify → wait",
    "set": "set → wait",
    "barrier": "barrier opens",
}


def export_chrome(loaded: LoadedRun, path: Path) -> int:
    """Write ``loaded`` as a Chrome Trace Event JSON file at ``path``; return the number of
    trace events written. The log is streamed: memory does not grow with its length."""
    with open(path, "wb") as fh:
        history = open_history(loaded)
        writer = _TraceWriter(loaded, fh)
        history.subscribe(writer)
        writer.begin()
        history.feed_file(loaded.events_path)
        writer.end()
        return writer.written


def _us(ts: float) -> float:
    return round(ts * 1e6, 3)


def _span(start: float, end: float) -> tuple[float, float]:
    """(ts, dur) in µs as written, with the minimum length."""
    t0 = _us(start)
    return t0, round(max(_us(end) - t0, _MIN_US), 3)


def _args(line: Line, more: Line | None = None) -> dict[str, Any]:
    skip = _OP_LINE if line.event == "op" else _LINE
    args = {k: v for k, v in line.fields.items() if k not in skip}
    if more is not None:
        args.update({k: v for k, v in more.fields.items() if k not in skip})
    return args


class _Lanes:
    """Per actor, rows on which intervals never overlap: a new interval takes the lowest row
    that is free at its start. A display that puts each row on its own track then never has
    two overlapping spans on one track."""

    def __init__(self) -> None:
        self._free_at: dict[str, list[float]] = {}

    def take(self, actor: str, ts: float) -> int:
        rows = self._free_at.get(actor)
        if rows is None:
            self._free_at[actor] = [float("inf")]
            return 0
        for i, free in enumerate(rows):
            if free <= ts:
                rows[i] = float("inf")
                return i
        rows.append(float("inf"))
        return len(rows) - 1

    def give(self, actor: str, lane: int, ts: float) -> None:
        self._free_at[actor][lane] = ts


class _TraceWriter(Subscriber):
    def __init__(self, loaded: LoadedRun, out: IO[bytes]) -> None:
        self._loaded = loaded
        # Spans are drawn at least this long: a row stays busy that long.
        self._min_span = _MIN_US / 1e6
        self._op_lanes = _Lanes()
        self._hold_lanes = _Lanes()
        self._out = out
        self._encode = msgspec.json.Encoder().encode
        self.written = 0
        # Encoded events wait here and are written in batches: one write per event would cost
        # more than the encoding.
        self._batch: list[bytes] = []
        self._order = {name: i for i, name in enumerate(loaded.actors)}
        self._tids: dict[tuple[str, str, int], int] = {}
        self._flows = 0

    # -- output ------------------------------------------------------------------------------

    def begin(self) -> None:
        loaded = self._loaded
        other = {
            "title": loaded.title,
            "scenario": loaded.config.scenario if loaded.config is not None else "",
            "params": describe_params(loaded),
            "speedup": speedup_of(loaded),
            "run": str(loaded.run_dir or loaded.events_path),
            "time unit": "µs of wall time since the run started",
        }
        head = b'{"displayTimeUnit":"ms","otherData":' + self._encode(other)
        self._out.write(head + b',"traceEvents":[\n')
        self._meta(_RUN_PID, None, "process_name", {"name": f"run: {loaded.title}"})
        self._meta(_RUN_PID, None, "process_sort_index", {"sort_index": 1})
        self._meta(_PRIM_PID, None, "process_name", {"name": "primitives"})
        self._meta(_PRIM_PID, None, "process_sort_index", {"sort_index": 0})
        self._meta(_RUN_PID, _ENGINE_TID, "thread_name", {"name": "engine"})
        self._meta(_RUN_PID, _ENGINE_TID, "thread_sort_index", {"sort_index": 0})
        for prim, model in self.history.models().items():
            if model.gauges:
                self._counter(0.0, prim, model.gauges)

    def end(self) -> None:
        self._flush()
        self._out.write(b"\n]}\n")

    def _emit(self, event: dict[str, Any]) -> None:
        self._batch.append(self._encode(event))
        if len(self._batch) >= 4096:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            # A separator before every event but the first keeps the array valid JSON.
            self._out.write((b",\n" if self.written else b"") + b",\n".join(self._batch))
            self.written += len(self._batch)
            self._batch.clear()

    def _meta(self, pid: int, tid: int | None, name: str, args: dict[str, Any]) -> None:
        event: dict[str, Any] = {"ph": "M", "name": name, "pid": pid, "args": args}
        if tid is not None:
            event["tid"] = tid
        self._emit(event)

    def _tid(self, actor: str, track: str, lane: int) -> int:
        key = (actor, track, lane)
        tid = self._tids.get(key)
        if tid is None:
            tid = self._tids[key] = len(self._tids) + _ENGINE_TID + 1
            suffix = "" if lane == 0 else f" ·{lane + 1}"
            label = f"{actor} holds{suffix}" if track == "holds" else f"{actor}{suffix}"
            # Keep an actor's tracks together, in the order the run lists its actors.
            place = self._order.get(actor, len(self._order) + tid)
            offset = lane + (50 if track == "holds" else 0)
            self._meta(_RUN_PID, tid, "thread_name", {"name": label})
            self._meta(
                _RUN_PID, tid, "thread_sort_index", {"sort_index": 10 + place * 100 + offset}
            )
        return tid

    def _counter(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        self._emit({"ph": "C", "name": prim, "ts": _us(ts), "pid": _PRIM_PID, "tid": 0,
                    "args": dict(values)})  # fmt: skip

    # -- history hooks -----------------------------------------------------------------------

    def on_invoke(self, op: Operation) -> None:
        op.lane = self._op_lanes.take(op.actor, op.start)

    def on_op(self, op: Operation) -> None:
        end = op.end if op.end is not None else max(self.history.now, op.start)
        lane = op.lane
        self._op_lanes.give(op.actor, lane, max(end, op.start + self._min_span))
        ts, dur = _span(op.start, end)
        args = _args(op.invoke, op.done)
        args["outcome"] = op.outcome if op.done is not None else "never returned"
        args["seq"] = op.invoke.seq
        self._emit({
            "ph": "X", "name": f"{op.name} {op.prim}", "cat": "wait" if op.blocking
            else "op", "ts": ts, "dur": dur, "pid": _RUN_PID,
            "tid": self._tid(op.actor, "ops", lane), "args": args,
        })  # fmt: skip

    def on_hold_start(self, hold: Hold) -> None:
        hold.lane = self._hold_lanes.take(hold.actor, hold.start)

    def on_hold(self, hold: Hold) -> None:
        end = hold.end if hold.end is not None else hold.start
        lane = hold.lane
        self._hold_lanes.give(hold.actor, lane, max(end, hold.start + self._min_span))
        ts, dur = _span(hold.start, end)
        until = {"": "released", "died": "its actor died", "log": "the log ended"}
        args = {"until": until.get(hold.cut, "its actor ended")}
        self._emit({
            "ph": "X", "name": f"holds {hold.prim}", "cat": "hold", "ts": ts, "dur": dur,
            "pid": _RUN_PID, "tid": self._tid(hold.actor, "holds", lane), "args": args,
        })  # fmt: skip

    def on_transfer(self, transfer: Transfer) -> None:
        src, dst = transfer.src, transfer.dst
        self._flows += 1
        name = _FLOW_NAMES.get(transfer.what, transfer.what)
        # The arrow leaves the sending span just after it began (the item was handed over
        # then; the span may not have ended yet) and enters the receiving span just before it
        # ended (when the waiter was let go).
        out = round(_us(src.start) + _INSIDE_US, 3)
        end = dst.end if dst.end is not None else dst.start
        t0, dur = _span(dst.start, end)
        into = round(t0 + dur - _INSIDE_US, 3)
        common = {"name": name, "cat": "flow", "id": self._flows, "pid": _RUN_PID}
        self._emit({**common, "ph": "s", "ts": out,
                    "tid": self._tid(src.actor, "ops", src.lane)})  # fmt: skip
        self._emit({**common, "ph": "f", "bp": "e", "ts": into,
                    "tid": self._tid(dst.actor, "ops", dst.lane)})  # fmt: skip

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        self._counter(ts, prim, values)

    def on_line(self, line: Line) -> None:
        actor = line.actor
        name = line.event
        mark: dict[str, Any] = {"ph": "i", "name": name, "ts": _us(line.ts), "pid": _RUN_PID,
                                "args": _args(line)}  # fmt: skip
        if actor in ("engine", "coordinator"):
            mark["tid"] = _ENGINE_TID
            mark["s"] = "g" if name in _GLOBAL else "t"
        else:
            mark["tid"] = self._tid(actor, "ops", 0)
            mark["s"] = "t"
        self._emit(mark)
