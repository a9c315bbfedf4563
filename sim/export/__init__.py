"""The timeline every export reads: operations paired, holds, gauges, flows and actor states.

A run's log records each operation as two lines (``invoke``, then ``ok``/``timeout``/``fail``);
the exports want whole operations and what they mean: how long an actor waited, which units it
held from when to when, how full a queue was, which ``put`` a ``get`` received. This module
derives all of that in one pass over the events in time order, with memory bounded by what is
open at one time (operations in flight, units held, items queued), never by the log's length.

The formats are submodules, each with one entry point taking a :class:`~sim.replay.LoadedRun`:
:func:`sim.export.chrome.export_chrome` and :func:`sim.export.csv.export_csv`; pictures are
:func:`sim.plot.plot` and the terminal replay :func:`sim.player.play`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from sim.replay import LoadedRun

__all__ = [
    "BLOCKING",
    "STATE_COLORS",
    "WAIT_LABELS",
    "Hold",
    "Op",
    "Pairer",
    "Timeline",
    "describe_params",
    "domain_state",
    "initial_gauges",
    "is_signal",
    "operations",
    "speedup_of",
]

# Operations that can block the caller: their invoke..completion interval is a wait. The rest
# (release, set, notify, read, write, close, ...) return at once and are shown as plain ops.
BLOCKING = frozenset(
    {"acquire", "wait", "get", "put", "recv", "send", "recvfrom", "join", "accept", "connect"}
)
_LOCKS = frozenset({"semaphore", "bounded_semaphore", "lock", "rlock", "condition"})
# An RLock and a Condition's lock (an RLock in multiprocessing) may be taken again by their
# owner: only the outermost acquire..release is a hold.
_REENTRANT = frozenset({"rlock", "condition"})
# Kinds that carry messages: (sending op, receiving op). A receive is matched to the earliest
# unmatched send of the same item on the same primitive.
_MESSAGES: dict[str, tuple[str, str]] = {
    "queue": ("put", "get"),
    "joinable_queue": ("put", "get"),
    "pipe": ("send", "recv"),
    "tcp": ("send", "recv"),
    "udp": ("sendto", "recvfrom"),
}
# On a pipe or a TCP connection a process never receives what it sent itself.
_TWO_WAY = frozenset({"pipe", "tcp"})
# Gauge series per kind, in the order a display lists them.
_GAUGE_NAMES: dict[str, str] = {
    "queue": "length",
    "joinable_queue": "length",
    "pipe": "in pipe",
    "tcp": "in flight",
    "udp": "in flight",
}

# What a person calls the state an actor is in while one of these operations blocks it.
WAIT_LABELS: dict[str, str] = {
    "acquire": "waiting",
    "wait": "waiting",
    "get": "getting",
    "put": "putting",
    "recv": "receiving",
    "recvfrom": "receiving",
    "send": "sending",
    "join": "joining",
    "accept": "accepting",
    "connect": "connecting",
}

# One colour per state a person would name, shared by the plot and the player; states of the
# same sort share a hue family: red/orange blocked, green using, yellow about to ask.
STATE_COLORS: dict[str, str] = {
    # blocked in an operation
    "waiting": "#d62728",
    "getting": "#ff7f0e",
    "receiving": "#ff7f0e",
    "accepting": "#ff9f4a",
    "connecting": "#ff9f4a",
    "joining": "#e377c2",
    "sending": "#9467bd",
    "putting": "#9467bd",
    # using what it waited for
    "holding": "#2ca02c",
    "parked": "#2ca02c",
    "eating": "#2ca02c",
    "inside": "#2ca02c",
    "reading": "#74c476",
    "writing": "#1b7837",
    "racing": "#2ca02c",
    # about to ask for it
    "arriving": "#fdd835",
    "hungry": "#fdd835",
    "wanting": "#fdd835",
    "want read": "#fdd835",
    "want write": "#fbc02d",
    "ready": "#fdd835",
    "fired": "#fdd835",
    # doing something else
    "driving": "#aec7e8",
    "thinking": "#aec7e8",
    "outside": "#aec7e8",
    "walking": "#aec7e8",
    "finished": "#c5b0d5",
    "running": "#dadada",
}
# The domain events of the bundled scenarios that put an actor in a state with a name
# (scenario -> event -> state). Scenarios not listed still get states from their operations
# (waiting, sending, holding...); this table only adds the words a textbook would use.
_DOMAIN: dict[str, dict[str, str]] = {
    "carpark": {"arrive": "arriving", "park": "parked", "leave": "driving", "give_up": "driving"},
    "philosophers": {"hungry": "hungry", "eat": "eating", "done_eating": "thinking"},
    "mutex": {"want": "wanting", "enter": "inside", "leave": "outside"},
    "readers_writers": {
        "want_read": "want read",
        "enter_read": "reading",
        "exit_read": "thinking",
        "want_write": "want write",
        "enter_write": "writing",
        "exit_write": "thinking",
    },
    "start_signal": {"ready": "ready", "start": "racing", "finish": "finished", "fire": "fired"},
}
# The state an actor of a role starts in, before its first domain event.
_INITIAL: dict[tuple[str, str], str] = {
    ("carpark", "car"): "driving",
    ("philosophers", "philosopher"): "thinking",
    ("readers_writers", "reader"): "thinking",
    ("readers_writers", "writer"): "thinking",
    ("mutex", "worker"): "outside",
    ("start_signal", "runner"): "walking",
}


def domain_state(scenario: str, event: Mapping[str, Any]) -> str | None:
    """The state a domain event of ``scenario`` puts its actor in, if the event names one."""
    name = event.get("event")
    if name == "actor_start":
        return _INITIAL.get((scenario, str(event.get("role", ""))))
    state = _DOMAIN.get(scenario, {}).get(str(name))
    # A nested critical section (an RLock taken at several levels): leaving an inner level
    # leaves the actor inside the outer one.
    if state == "outside" and isinstance(event.get("level"), int) and event["level"] > 0:
        return "inside"
    return state


def speedup_of(loaded: LoadedRun) -> float | None:
    """Simulated seconds per wall second, if the run's config says."""
    return None if loaded.config is None else float(loaded.config.clock.speedup)


def describe_params(loaded: LoadedRun, width: int = 0) -> str:
    """The run's parameters in one line: ``capacity=15, cars=40, drive=exponential(20)``."""
    if loaded.config is None:
        return ""
    params = msgspec.to_builtins(loaded.config.params)
    parts = []
    for key, value in params.items() if isinstance(params, dict) else ():
        if isinstance(value, dict) and "dist" in value:
            # A Duration: its distribution and mean, in simulated minutes like every duration.
            value = f"{value['dist']}({value.get('mean', '?'):g})"
        elif isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{key}={value}")
    text = ", ".join(parts)
    if width and len(text) > width:
        text = text[: width - 1].rstrip(", ") + "…"
    return text


def is_signal(info: Mapping[str, Any]) -> bool:
    """A semaphore that starts at 0 is a signal, not a pool of units: one process releases
    (sends a signal), another acquires (receives it). Nothing is held in between."""
    return info.get("kind") in ("semaphore", "bounded_semaphore") and info.get("value") == 0


def initial_gauges(primitives: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Every gauge's value before the first event: nothing held, queued or waiting."""
    gauges: dict[str, dict[str, float]] = {}
    for name, info in primitives.items():
        kind = info.get("kind")
        if is_signal(info):
            gauges[name] = {"signals": 0, "waiting": 0}
        elif kind in _LOCKS:
            gauges[name] = {"held": 0, "waiting": 0}
        elif kind in _GAUGE_NAMES:
            gauges[name] = {_GAUGE_NAMES[str(kind)]: 0}
        elif kind == "event":
            gauges[name] = {"set": 0, "waiting": 0}
        elif kind == "barrier":
            gauges[name] = {"waiting": 0}
        elif kind == "value" and isinstance(info.get("initial"), (int, float)):
            gauges[name] = {"value": info["initial"]}
    return gauges


class Op:
    """One operation: its invoke line and, once it returned, its completion line."""

    __slots__ = ("done", "early", "invoke", "lane")

    def __init__(self, invoke: dict[str, Any], lane: int = 0) -> None:
        self.invoke = invoke
        self.done: dict[str, Any] | None = None
        self.lane = lane
        # A receive matched this send before the send's own completion line was read.
        self.early = False

    @property
    def actor(self) -> str:
        return str(self.invoke["actor"])

    @property
    def prim(self) -> str:
        return str(self.invoke.get("prim", ""))

    @property
    def kind(self) -> str:
        return str(self.invoke.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.invoke.get("op", ""))

    @property
    def start(self) -> float:
        return float(self.invoke["ts"])

    @property
    def end(self) -> float | None:
        return None if self.done is None else float(self.done["ts"])

    @property
    def outcome(self) -> str:
        """``ok``, ``timeout``, ``fail``, or ``pending`` if it never returned."""
        return "pending" if self.done is None else str(self.done.get("phase", ""))

    @property
    def wait(self) -> float | None:
        return None if self.done is None else self.done["ts"] - self.invoke["ts"]

    def get(self, key: str) -> Any:
        """A payload field, from the completion line if it has it, else from the invoke."""
        if self.done is not None and key in self.done:
            return self.done[key]
        return self.invoke.get(key)

    def __repr__(self) -> str:
        return f"<Op {self.actor} {self.name} {self.prim} {self.outcome} @{self.start:.6f}>"


def _key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    # Lines of one operation share actor, primitive and op; a multi-threaded actor (a TCP
    # server with a thread per client) has several in flight at once, told apart by the
    # connection's peer. Pipe lines carry their end. Accept has no peer until it returns.
    kind = event.get("kind")
    op = event.get("op")
    extra = event.get("peer") if kind == "tcp" and op in ("send", "recv") else event.get("end")
    return (event["actor"], event.get("prim"), op, extra)


class Pairer:
    """Matches each completion line to its invoke line (per actor, primitive, op)."""

    def __init__(self) -> None:
        self._open: dict[tuple[Any, ...], deque[Op]] = {}
        self.orphans = 0  # completion lines without an invoke (a lost line)

    def invoke(self, event: dict[str, Any], lane: int = 0) -> Op:
        op = Op(event, lane)
        key = _key(event)
        waiting = self._open.get(key)
        if waiting is None:
            self._open[key] = deque((op,))
        else:
            waiting.append(op)
        return op

    def complete(self, event: dict[str, Any]) -> Op | None:
        key = _key(event)
        waiting = self._open.get(key)
        if not waiting:
            self.orphans += 1
            return None
        op = waiting.popleft()
        if not waiting:
            del self._open[key]
        op.done = event
        return op

    def drop_actor(self, actor: str) -> list[Op]:
        """The actor's operations that never returned (it ended, was stopped, or deadlocked)."""
        keys = [k for k in self._open if k[0] == actor]
        return sorted((op for k in keys for op in self._open.pop(k)), key=lambda o: o.start)

    def drop_all(self) -> list[Op]:
        ops = [op for ops in self._open.values() for op in ops]
        self._open.clear()
        return sorted(ops, key=lambda o: o.start)


def operations(events: Iterable[dict[str, Any]]) -> Iterator[Op]:
    """Every operation of ``events``, yielded once it returned (or its actor ended without it
    returning, or the log ended), so that no operation is lost and none is yielded twice.

    Per-actor order is enough to pair lines, so ``events`` may be in file order.
    """
    pairer = Pairer()
    for event in events:
        kind = event.get("event")
        if kind == "op":
            if event.get("phase") == "invoke":
                pairer.invoke(event)
            else:
                op = pairer.complete(event)
                if op is not None:
                    yield op
        elif kind == "actor_end":
            yield from pairer.drop_actor(event["actor"])
    yield from pairer.drop_all()


@dataclass(slots=True, eq=False)  # compared and hashed by identity: fast in sets and dicts
class Hold:
    """A unit of a semaphore or lock held by ``actor`` from ``start`` to ``end``."""

    actor: str
    prim: str
    start: float
    lane: int
    end: float = 0.0
    # True when the hold was cut short by the end of the actor or of the log, not released.
    cut: bool = False
    closed: bool = False


@dataclass(slots=True)
class _Wake:
    """Something that can unblock waiters: a release, a notify, a set, a barrier's last
    arrival. ``left`` is how many waiters it may still account for."""

    ts: float
    op: Op
    left: int


@dataclass
class _Actor:
    name: str
    ended: str = ""
    domain: str | None = None
    blocked: list[Op] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    state: tuple[str, str, str] = ("", "", "")
    since: float = 0.0


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

    def count(self, actor: str) -> int:
        return len(self._free_at.get(actor, ()))


def _item_key(item: Any) -> Any:
    # Items are matched by value; JSON text makes lists and dicts hashable.
    if isinstance(item, (str, int, float)) or item is None:
        return item
    return msgspec.json.encode(item)


class Timeline:
    """Walks a run's events in time order and reports what they mean through hooks.

    Subclasses override the ``on_*`` methods they need; each is called once per thing, in time
    order of the moment it became known: an operation when it returned, a hold when it was
    released, a flow when its receiving end returned, a gauge when its value changed.
    ``track_states`` enables :meth:`on_state` (what each actor is doing), which costs a little
    per event and only the player and the Gantt chart need.
    """

    def __init__(
        self,
        primitives: Mapping[str, Mapping[str, Any]],
        *,
        scenario: str = "",
        actors: Iterable[str] = (),
        track_states: bool = False,
        min_span: float = 0.0,
    ) -> None:
        self.primitives = primitives
        self.scenario = scenario
        self.track_states = track_states
        self.now = 0.0
        self.events = 0
        self._pairer = Pairer()
        self._op_lanes = _Lanes()
        self._hold_lanes = _Lanes()
        # Displays draw an interval at least this long; its row stays busy that long.
        self._min_span = min_span
        self._actors: dict[str, _Actor] = {a: _Actor(a) for a in actors}
        # Units held per primitive, oldest first (a dict as an ordered set), and per holder.
        self._holds: dict[str, dict[Hold, None]] = {}
        self._mine: dict[tuple[str, str], list[Hold]] = {}
        self._depth: dict[tuple[str, str], int] = {}
        self._waiting: dict[str, int] = {}
        self._wakes: dict[tuple[str, str], deque[_Wake]] = {}
        self._sends: dict[tuple[str, Any], deque[Op]] = {}
        self._gauges: dict[str, dict[str, float]] = {
            name: dict(values) for name, values in initial_gauges(primitives).items()
        }
        self._barrier_arrivals: dict[str, int] = {}
        self._barrier_count: dict[str, int] = {}
        self._signals = {name for name, info in primitives.items() if is_signal(info)}

    # -- hooks -------------------------------------------------------------------------------

    def on_op(self, op: Op, end: float) -> None:
        """An operation returned, or was cut at ``end`` (its ``outcome`` is then ``pending``)."""

    def on_hold(self, hold: Hold) -> None:
        """A hold ended: released, or cut by the end of its actor or of the log."""

    def on_flow(self, src: Op, dst: Op, what: str) -> None:
        """``src`` caused ``dst`` to return: a message received, a waiter woken."""

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        """A primitive's gauges changed; ``values`` has all of its series."""

    def on_mark(self, event: dict[str, Any]) -> None:
        """Any event that is not an operation: domain events, lifecycle, engine."""

    def on_state(self, ts: float, actor: str, state: str, category: str, detail: str) -> None:
        """An actor's state changed (only with ``track_states``). ``category`` is ``wait``,
        ``hold``, ``domain``, ``run`` or ``done``; ``detail`` names the primitive(s)."""

    # -- queries -----------------------------------------------------------------------------

    def gauges(self) -> Mapping[str, Mapping[str, float]]:
        """Current value of every gauge, per primitive."""
        return self._gauges

    def holders(self, prim: str) -> list[str]:
        return [h.actor for h in self._holds.get(prim, ())]

    def state_of(self, actor: str) -> tuple[str, str, str, float]:
        """(state, category, detail, since) of ``actor`` (with ``track_states``)."""
        a = self._actors.get(actor)
        if a is None:
            return ("", "", "", 0.0)
        return (*a.state, a.since)

    @staticmethod
    def capacity(info: Mapping[str, Any]) -> int | None:
        """The most a primitive's main gauge can show: units, slots, parties."""
        kind = info.get("kind")
        if kind in ("semaphore", "bounded_semaphore"):
            return int(info.get("value", 1))
        if kind in ("lock", "rlock", "condition"):
            return 1
        if kind in ("queue", "joinable_queue") and info.get("maxsize"):
            return int(info["maxsize"])
        if kind == "barrier" and info.get("parties"):
            return int(info["parties"])
        return None

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, event: dict[str, Any]) -> None:
        """See one event; events must come in time order (``sim.events.ordered``)."""
        self.now = event["ts"]
        self.events += 1
        if event.get("event") == "op":
            if event.get("phase") == "invoke":
                self._invoke(event)
            else:
                self._complete(event)
            return
        actor = event["actor"]
        if event.get("event") == "actor_end":
            self._end_actor(actor, event["ts"], str(event.get("status", "ok")))
        elif self.track_states and actor not in ("engine", "coordinator"):
            a = self._actor(actor)
            state = domain_state(self.scenario, event)
            if state is not None:
                a.domain = state
            self._restate(a)
        self.on_mark(event)

    def feed_all(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.feed(event)
        self.finish()

    def finish(self) -> None:
        """The log ended: cut what is still open at the last timestamp seen."""
        for op in self._pairer.drop_all():
            self.on_op(op, max(self.now, op.start))
        for holds in self._holds.values():
            for hold in holds:
                if not hold.closed:
                    self._close_hold(hold, self.now, cut=True)
        self._holds.clear()
        self._mine.clear()

    # -- internals ---------------------------------------------------------------------------

    def _actor(self, name: str) -> _Actor:
        a = self._actors.get(name)
        if a is None:
            a = self._actors[name] = _Actor(name)
        return a

    def _invoke(self, ev: dict[str, Any]) -> None:
        ts = ev["ts"]
        actor = ev["actor"]
        op = self._pairer.invoke(ev, self._op_lanes.take(actor, ts))
        kind, name, prim = ev.get("kind"), ev.get("op"), ev.get("prim", "")
        if kind in _LOCKS:
            if name == "acquire":
                self._change_waiting(prim, +1)
            elif name == "release":
                if prim in self._signals:
                    pending = self._gauges[prim].get("signals", 0) + 1
                    self._set_gauge(prim, {"signals": pending})
                else:
                    self._release(prim, actor, ts)
                self._wake(prim, "unit", op, 1)
            elif name == "wait":  # a Condition's wait gives its lock up until it returns
                self._suspend(prim, actor, ts)
                self._wake(prim, "unit", op, 1)
                self._waiting[prim + "\0cond"] = self._waiting.get(prim + "\0cond", 0) + 1
            elif name in ("notify", "notify_all"):
                sleepers = self._waiting.get(prim + "\0cond", 0)
                wakes = sleepers if name == "notify_all" else min(int(ev.get("n", 1)), sleepers)
                self._wake(prim, "notify", op, wakes)
        elif kind == "event":
            if name == "wait":
                self._change_waiting(prim, +1)
            elif name == "set":
                self._set_gauge(prim, {"set": 1})
                self._wake(prim, "set", op, self._waiting.get(prim, 0))
            elif name == "clear":
                self._set_gauge(prim, {"set": 0})
        elif kind == "barrier" and name == "wait":
            self._barrier_invoke(prim, op)
        elif kind in _MESSAGES and name == _MESSAGES[kind][0]:
            key = (prim, _item_key(ev.get("item")))
            sends = self._sends.get(key)
            if sends is None:
                self._sends[key] = deque((op,))
            else:
                sends.append(op)
        if self.track_states and name in BLOCKING:
            a = self._actor(actor)
            a.blocked.append(op)
            self._restate(a)

    def _complete(self, ev: dict[str, Any]) -> None:
        op = self._pairer.complete(ev)
        if op is None:
            return
        ts = ev["ts"]
        inv = op.invoke
        actor, kind, name, prim = inv["actor"], inv.get("kind"), inv.get("op"), inv.get("prim", "")
        phase = ev.get("phase")
        if kind in _LOCKS:
            if name == "acquire":
                # Which release let it in, before the count of waiters (and with it the
                # wake-ups nobody else can take) goes down.
                if phase == "ok":
                    self._woken(prim, "unit", op)
                self._change_waiting(prim, -1)
                if phase == "ok" and prim in self._signals:
                    pending = self._gauges[prim].get("signals", 0) - 1
                    self._set_gauge(prim, {"signals": max(pending, 0)})
                elif phase == "ok":
                    self._take(prim, kind, actor, ts)
            elif name == "wait":
                sleepers = self._waiting.get(prim + "\0cond", 1) - 1
                self._waiting[prim + "\0cond"] = sleepers
                if sleepers <= 0:
                    self._wakes.pop((prim, "notify"), None)
                self._resume(prim, actor, ts)
                if phase == "ok":
                    self._woken(prim, "notify", op)
        elif kind == "event" and name == "wait":
            if phase == "ok":
                self._woken(prim, "set", op)
            self._change_waiting(prim, -1)
        elif kind == "barrier" and name == "wait":
            self._barrier_arrivals[prim] = self._barrier_arrivals.get(prim, 1) - 1
            self._set_gauge(prim, {"waiting": self._barrier_arrivals[prim]})
            if phase == "ok":
                self._woken(prim, "barrier", op)
        elif kind in _MESSAGES:
            send, recv = _MESSAGES[kind]
            if name == send:
                self._sent(op, phase == "ok")
            elif name == recv and phase == "ok":
                self._received(op)
        elif kind in ("value", "array", "shared_memory") and name == "write" and phase == "ok":
            value = ev.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                index = ev.get("index")
                series = "value" if index is None else f"value[{index}]"
                self._set_gauge(prim, {series: value})
        self._op_lanes.give(actor, op.lane, max(ts, inv["ts"] + self._min_span))
        self.on_op(op, ts)
        if self.track_states and name in BLOCKING:
            a = self._actor(actor)
            if op in a.blocked:
                a.blocked.remove(op)
            self._restate(a)

    def _end_actor(self, actor: str, ts: float, status: str) -> None:
        for op in self._pairer.drop_actor(actor):
            self._op_lanes.give(actor, op.lane, ts)
            self.on_op(op, max(ts, op.start))
        # A unit held by a process that ended stays taken (nobody released it), so the gauges
        # keep counting it; only the hold's span on the actor's track ends here.
        for holds in self._holds.values():
            for hold in holds:
                if hold.actor == actor and not hold.closed:
                    self._close_hold(hold, ts, cut=True)
        a = self._actor(actor)
        a.ended = status
        a.blocked.clear()
        if self.track_states:
            self._restate(a)

    # Semaphores and locks --------------------------------------------------------------------

    def _change_waiting(self, prim: str, delta: int) -> None:
        waiting = self._waiting.get(prim, 0) + delta
        self._waiting[prim] = waiting
        if waiting <= 0:
            # Nobody waits: a wake-up that nobody took (a waiter timed out) wakes nobody later.
            self._wakes.pop((prim, "unit"), None)
            self._wakes.pop((prim, "set"), None)
        self._set_gauge(prim, {"waiting": max(waiting, 0)})

    def _held(self, prim: str) -> int:
        return len(self._holds.get(prim, ()))

    def _take(self, prim: str, kind: str, actor: str, ts: float) -> None:
        if kind in _REENTRANT:
            depth = self._depth.get((actor, prim), 0) + 1
            self._depth[(actor, prim)] = depth
            if depth > 1:
                return
        self._open_hold(prim, actor, ts)

    def _open_hold(self, prim: str, actor: str, ts: float) -> None:
        hold = Hold(actor, prim, ts, self._hold_lanes.take(actor, ts))
        self._holds.setdefault(prim, {})[hold] = None
        self._mine.setdefault((actor, prim), []).append(hold)
        if self.track_states:
            a = self._actor(actor)
            a.holds.append(hold)
            self._restate(a)
        self._set_gauge(prim, {"held": self._held(prim)})

    def _release(self, prim: str, actor: str, ts: float) -> None:
        key = (actor, prim)
        if key in self._depth:
            self._depth[key] -= 1
            if self._depth[key] > 0:
                return
            del self._depth[key]
        holds = self._holds.get(prim)
        if not holds:
            return
        mine = self._mine.get(key)
        # A semaphore's unit may be given back by another process than the one that took it
        # (readers-writers: the last reader out releases what the first one took): the
        # release then ends the longest-held unit.
        hold = mine[-1] if mine else next(iter(holds))
        self._forget(hold)
        if not hold.closed:
            self._close_hold(hold, ts)
        self._set_gauge(prim, {"held": len(holds)})

    def _forget(self, hold: Hold) -> None:
        del self._holds[hold.prim][hold]
        mine = self._mine[(hold.actor, hold.prim)]
        mine.remove(hold)
        if not mine:
            del self._mine[(hold.actor, hold.prim)]

    def _suspend(self, prim: str, actor: str, ts: float) -> None:
        # Condition.wait: the lock is released (whatever the depth) and retaken on return.
        mine = self._mine.get((actor, prim))
        if mine:
            hold = mine[-1]
            self._forget(hold)
            self._close_hold(hold, ts)
            self._set_gauge(prim, {"held": self._held(prim)})

    def _resume(self, prim: str, actor: str, ts: float) -> None:
        if self._depth.get((actor, prim), 0) > 0:
            self._open_hold(prim, actor, ts)

    def _close_hold(self, hold: Hold, ts: float, cut: bool = False) -> None:
        hold.end = max(ts, hold.start)
        hold.cut = cut
        hold.closed = True
        self._hold_lanes.give(hold.actor, hold.lane, max(ts, hold.start + self._min_span))
        if self.track_states:
            a = self._actors.get(hold.actor)
            if a is not None and hold in a.holds:
                a.holds.remove(hold)
                self._restate(a)
        self.on_hold(hold)

    # Wake-ups: which completion a release, notify, set or last arrival caused -----------------

    def _wake(self, prim: str, channel: str, op: Op, count: int) -> None:
        if count <= 0:
            return
        if channel in ("unit", "set") and self._waiting.get(prim, 0) <= 0:
            return
        self._wakes.setdefault((prim, channel), deque()).append(_Wake(op.start, op, count))

    def _woken(self, prim: str, channel: str, op: Op) -> None:
        wakes = self._wakes.get((prim, channel))
        if not wakes:
            return
        # The earliest wake-up that came after this waiter began to wait is the one that let
        # it go; a wake-up before its invoke was meant for somebody already waiting.
        start = op.start
        for wake in wakes:
            if wake.ts > start and wake.op.actor != op.actor:
                wake.left -= 1
                self.on_flow(wake.op, op, channel)
                break
        while wakes and wakes[0].left <= 0:
            wakes.popleft()

    def _barrier_invoke(self, prim: str, op: Op) -> None:
        arrived = self._barrier_arrivals.get(prim, 0) + 1
        self._barrier_arrivals[prim] = arrived
        self._set_gauge(prim, {"waiting": arrived})
        parties = self.primitives.get(prim, {}).get("parties")
        # Every parties-th arrival releases the others; counting arrivals (not waiters still in
        # flight) keeps generations apart when a fast process is back before the slow returns.
        count = self._barrier_count[prim] = self._barrier_count.get(prim, 0) + 1
        if isinstance(parties, int) and parties > 1 and count % parties == 0:
            self._wakes.setdefault((prim, "barrier"), deque()).append(
                _Wake(op.start, op, parties - 1)
            )

    # Messages --------------------------------------------------------------------------------

    def _sent(self, op: Op, ok: bool) -> None:
        prim = op.prim
        if not ok:
            sends = self._sends.get((prim, _item_key(op.invoke.get("item"))))
            if sends is not None and op in sends:
                sends.remove(op)
            return
        if not op.early:
            self._count(prim, op.kind, +1)

    def _received(self, op: Op) -> None:
        prim = op.prim
        key = (prim, _item_key(op.get("item")))
        sends = self._sends.get(key)
        src = None
        if sends:
            if op.kind in _TWO_WAY:
                src = next((s for s in sends if s.actor != op.actor), None)
                if src is not None:
                    sends.remove(src)
            else:
                src = sends.popleft()
            if not sends:
                del self._sends[key]
        if src is None:
            self._count(prim, op.kind, -1)
            return
        if src.done is None:
            # Received before the sender's completion line: count the item as in and out at
            # once, so that a queue's length never shows -1 for a moment.
            src.early = True
        else:
            self._count(prim, op.kind, -1)
        self.on_flow(src, op, "message")

    def _count(self, prim: str, kind: str, delta: int) -> None:
        series = _GAUGE_NAMES.get(kind)
        if series is None:
            return
        current = self._gauges.get(prim, {}).get(series, 0)
        self._set_gauge(prim, {series: current + delta})

    # Gauges and states -----------------------------------------------------------------------

    def _set_gauge(self, prim: str, values: Mapping[str, float]) -> None:
        gauge = self._gauges.get(prim)
        if gauge is None:
            gauge = self._gauges[prim] = {}
        changed = False
        for name, value in values.items():
            if gauge.get(name) != value:
                gauge[name] = value
                changed = True
        if changed:
            self.on_gauge(self.now, prim, gauge)

    def _restate(self, a: _Actor) -> None:
        if a.ended:
            state = (a.ended if a.ended != "ok" else "done", "done", "")
        elif a.blocked:
            op = a.blocked[-1]
            # What it waits for, and what it keeps meanwhile: the two halves of a deadlock.
            held = ", ".join(sorted({h.prim for h in a.holds}))
            detail = f"{op.prim} (holds {held})" if held else op.prim
            state = (WAIT_LABELS.get(op.name, op.name), "wait", detail)
        elif a.domain is not None:
            state = (a.domain, "domain", ", ".join(sorted({h.prim for h in a.holds})))
        elif a.holds:
            state = ("holding", "hold", ", ".join(sorted({h.prim for h in a.holds})))
        else:
            state = ("running", "run", "")
        if state != a.state:
            a.state = state
            a.since = self.now
            self.on_state(self.now, a.name, *state)
