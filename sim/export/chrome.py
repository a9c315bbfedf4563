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

from sim.events import ordered, read_events
from sim.replay import LoadedRun

from . import BLOCKING, Hold, Op, Timeline, describe_params, speedup_of

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
    "notify": "notify → wait",
    "set": "set → wait",
    "barrier": "barrier opens",
}


def export_chrome(loaded: LoadedRun, path: Path) -> int:
    """Write ``loaded`` as a Chrome Trace Event JSON file at ``path``; return the number of
    trace events written. The log is streamed: memory does not grow with its length."""
    with open(path, "wb") as fh:
        writer = _TraceWriter(loaded, fh)
        writer.begin()
        writer.feed_all(ordered(read_events(loaded.events_path)))
        writer.end()
        return writer.written


def _us(ts: float) -> float:
    return round(ts * 1e6, 3)


def _span(start: float, end: float) -> tuple[float, float]:
    """(ts, dur) in µs as written, with the minimum length."""
    t0 = _us(start)
    return t0, round(max(_us(end) - t0, _MIN_US), 3)


def _args(line: Mapping[str, Any], more: Mapping[str, Any] | None = None) -> dict[str, Any]:
    skip = _OP_LINE if line.get("event") == "op" else _LINE
    args = {k: v for k, v in line.items() if k not in skip}
    if more is not None:
        args.update({k: v for k, v in more.items() if k not in skip})
    return args


class _TraceWriter(Timeline):
    def __init__(self, loaded: LoadedRun, out: IO[bytes]) -> None:
        scenario = loaded.config.scenario if loaded.config is not None else ""
        super().__init__(
            loaded.primitives, scenario=scenario, actors=loaded.actors, min_span=_MIN_US / 1e6
        )
        self._loaded = loaded
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
        for prim, values in self.gauges().items():
            self._counter(0.0, prim, values)

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

    # -- timeline hooks ----------------------------------------------------------------------

    def on_op(self, op: Op, end: float) -> None:
        ts, dur = _span(op.start, end)
        args = _args(op.invoke, op.done)
        args["outcome"] = op.outcome if op.done is not None else "never returned"
        args["seq"] = op.invoke.get("seq")
        self._emit({
            "ph": "X", "name": f"{op.name} {op.prim}", "cat": "wait" if op.name in BLOCKING
            else "op", "ts": ts, "dur": dur, "pid": _RUN_PID,
            "tid": self._tid(op.actor, "ops", op.lane), "args": args,
        })  # fmt: skip

    def on_hold(self, hold: Hold) -> None:
        ts, dur = _span(hold.start, hold.end)
        args = {"until": "its actor ended" if hold.cut else "released"}
        self._emit({
            "ph": "X", "name": f"holds {hold.prim}", "cat": "hold", "ts": ts, "dur": dur,
            "pid": _RUN_PID, "tid": self._tid(hold.actor, "holds", hold.lane), "args": args,
        })  # fmt: skip

    def on_flow(self, src: Op, dst: Op, what: str) -> None:
        self._flows += 1
        name = _FLOW_NAMES.get(what, what)
        # The arrow leaves the sending span just after it began (the item was handed over
        # then; the span may not have ended yet) and enters the receiving span just before it
        # ended (when the waiter was let go).
        out = round(_us(src.start) + _INSIDE_US, 3)
        end = dst.end if dst.end is not None else dst.start
        t0, dur = _span(dst.start, end)
        into = round(t0 + dur - _INSIDE_US, 3)
        common = {"name": name, "cat": "flow", "id": self._flows, "pid": _RUN_PID}
        self._emit({**common, "ph": "s", "ts": out, "tid": self._tid(src.actor, "ops", src.lane)})
        self._emit({**common, "ph": "f", "bp": "e", "ts": into,
                    "tid": self._tid(dst.actor, "ops", dst.lane)})  # fmt: skip

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        self._counter(ts, prim, values)

    def on_mark(self, event: dict[str, Any]) -> None:
        actor = event["actor"]
        name = str(event.get("event"))
        mark: dict[str, Any] = {"ph": "i", "name": name, "ts": _us(event["ts"]), "pid": _RUN_PID,
                                "args": _args(event)}  # fmt: skip
        if actor in ("engine", "coordinator"):
            mark["tid"] = _ENGINE_TID
            mark["s"] = "g" if name in _GLOBAL else "t"
        else:
            mark["tid"] = self._tid(actor, "ops", 0)
            mark["s"] = "t"
        self._emit(mark)
