"""One history model: a single pass over a run's lines that says what they mean.

A :class:`History` is fed lines in time order (at replay from the file, live through the
coordinator's reordering window) and hands typed facts to its subscribers: each operation
when it begins and when it returns (paired, with its wait), each hold when it begins and ends,
transfers (put → got, sent → received, released → acquired, notify → woken), gauge changes,
every line that is not an operation, and, on request, what each actor is doing. What an
operation means is the business of its primitive's kind (sim.kinds): the history asks the
kind's model and passes on what it says. Checks, analyses, the live view, the exports, the
plot, the player and the Python API all read these facts; none of them pairs lines or tracks
holders itself.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .facts import Category, Hold, Operation, State, Transfer, TransferKind
from .lines import Finding, Line, chunks, line_of, ordered, read_lines
from .stats import Level, Waits
from .subscriber import Subscriber

if TYPE_CHECKING:
    from sim.kinds._base import Kind, Model

__all__ = [
    "Finding",
    "History",
    "Hold",
    "Level",
    "Line",
    "Operation",
    "State",
    "StateMap",
    "Subscriber",
    "Transfer",
    "Waits",
    "chunks",
    "line_of",
    "ordered",
    "read_lines",
]

_SYSTEM = frozenset({"engine", "coordinator"})
_INF = float("inf")
_LIFECYCLE = frozenset({"actor_start", "actor_end", "exit", "fault", "run_start"})
# What a model or a subscriber raises on a line whose fields have types no sim run writes.
_UNREADABLE = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
               ZeroDivisionError, RecursionError)  # fmt: skip
_NOT_NAMES = "an op line whose prim, kind, op or phase is not a name: not written by sim"
# Unreadable lines kept with their reasons (the rest are counted).
_KEEP = 10
_SEQ = attrgetter("seq")
_TS = attrgetter("ts")
_EVENT = attrgetter("event")


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


_EVERYTHING = _Everything()

#: How a scenario names the states its domain events put an actor in: a mapping from event
#: name to (state, category) and from role to the state its actors start in, or a function of
#: the line (for a state that depends on a field).
StateMap = Callable[[Line], "tuple[str, str] | None"]


_HOOKS = ("on_invoke", "on_op", "on_hold_start", "on_hold", "on_transfer", "on_gauge")


def _overrides(sub: Subscriber, hook: str) -> bool:
    return getattr(type(sub), hook) is not getattr(Subscriber, hook)


class _Actor:
    __slots__ = ("blocked", "domain", "ended", "holds", "last", "name", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ended = ""
        self.domain: tuple[str, str] | None = None
        self.blocked: list[Operation] = []
        self.holds: list[Hold] = []
        self.state: State | None = None
        # Its state before it ended.
        self.last: State | None = None


class History:
    """Reads a run's lines once and tells its subscribers what they mean.

    ``primitives`` is what the run declared (run.json's ``primitives``: name → description
    with its ``kind``); a primitive the log names that was not declared (a socket, a Value's
    own lock) gets a model of the kind its lines say. ``states`` is the scenario's own names
    for what its domain events mean (see :class:`~sim.scenario.Scenario`); ``track_states``
    turns on :meth:`Subscriber.on_state`.
    """

    def __init__(
        self,
        primitives: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        actors: Iterable[str] = (),
        states: StateMap | None = None,
        track_states: bool = False,
    ) -> None:
        from sim import kinds
        from sim.kinds._base import Model as _Model

        self._kinds = kinds
        self._base_key = _Model.key
        self.primitives: dict[str, Mapping[str, Any]] = dict(primitives or {})
        self.actors: list[str] = list(actors)
        #: The latest ``ts`` seen, and the latest of an actor's own lines or of a fault done to
        #: an actor (not the engine's other lines): where the run's simulated time ends.
        self.now = 0.0
        self.actor_now = 0.0
        self.lines = 0
        self.ops = 0
        #: Per actor: the seq its next line must carry, and the gaps seen (line, seq due).
        self.next_seq: dict[str, int] = {}
        self.gaps: list[tuple[Line, int]] = []
        self.gap_count = 0
        #: Completion lines whose invoke never came (a lost line, or a foreign log).
        self.orphans = 0
        #: Lines fed behind the newest time already seen, and by how much at most (seconds):
        #: live, lines later than the coordinator's reordering window (sim.history.window);
        #: at replay, lines the reading window missed.
        self.late_lines = 0
        self.late_s = 0.0
        #: Lines whose fields are not what the contract says, or that a model or a subscriber
        #: could not take (a foreign or hostile log): the first few, with why, and how many.
        self.malformed: list[tuple[Line, str]] = []
        #: How many of them are kept (a reader that shows every line raises it).
        self.keep_malformed = _KEEP
        self.malformed_count = 0
        self.ended: dict[str, str] = {}
        self.started: set[str] = set()
        #: Actors a declared fault was done to: the action and when (sim.faults).
        self.faulted: dict[str, tuple[str, float]] = {}
        #: Simulated minutes per second of ``ts`` (the run's clock.speedup / 60), once the
        #: engine's run_start line has said it.
        self.minutes_per_s: float | None = None
        self._models: dict[str, Model] = {}
        self._subs: list[Subscriber] = []
        self._lines_every: list[Callable[[Line], None]] = []
        self._lines_by_event: dict[str, list[Callable[[Line], None]]] = {}
        # What feed() routes where (see _wanted_lines, _direct_lines); None: to be worked out.
        self._routing: tuple[Any, dict[str, list[Callable[[Line], None]]]] | None = None
        self._states = states
        self.track_states = track_states
        self._actors: dict[str, _Actor] = {}
        self._state_subs: list[Callable[[State], None]] = []
        self._finish_subs: list[Callable[[], None]] = []
        # Alarms: (time, order, callback), earliest first; each is called once, just before
        # the first line at or after its time.
        self._alarms: list[tuple[float, int, Callable[[float], None]]] = []
        self._next_alarm = _INF
        # Collectors asked for primitives the log has not named yet.
        self._later: dict[str, dict[str, list[Waits]]] = {}
        self._later_follow: dict[str, list[tuple[str, Callable[[float, float], None]]]] = {}
        for name, info in self.primitives.items():
            self._new_model(name, str(info.get("kind", "")), info)
        if track_states:
            for actor in self.actors:
                self._actor(actor)

    # -- subscribing ---------------------------------------------------------------------------

    def subscribe(self, sub: Subscriber) -> Subscriber:
        """Add ``sub``; it sees every fact from now on. Returns it."""
        for attr in ("prims", "events", "ops"):
            wanted = getattr(sub, attr)
            if wanted is not None and not isinstance(wanted, (set, frozenset)):
                from sim.errors import ScenarioError

                raise ScenarioError(
                    f"{type(sub).__name__}.{attr} must be a set of names (or None for all), "
                    f"not {wanted!r}"
                )
        self._subs.append(sub)
        self._routing = None
        sub.attach(self)
        for model in self._models.values():
            model.routes = self._route(model.name)
            model.by_op = {}
        if _overrides(sub, "on_line"):
            if sub.events is None:
                self._lines_every.append(sub.on_line)
            for event in sub.events or ():
                self._lines_by_event.setdefault(event, []).append(sub.on_line)
        if _overrides(sub, "on_state"):
            self._state_subs.append(sub.on_state)
        if _overrides(sub, "on_finish"):
            self._finish_subs.append(sub.on_finish)
        return sub

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Everything subscribed, in the order it was (a display that shows checks as they
        find something looks at them)."""
        return tuple(self._subs)

    def _route(self, prim: str, op: Any = None) -> tuple[list[Callable[..., None]], ...]:
        """The hooks of the subscribers of ``prim`` (of its operation ``op``, if given)."""
        wanted = [s for s in self._subs if (s.prims is None or prim in s.prims)
                  and (op is None or s.ops is None or op in s.ops)]  # fmt: skip
        return tuple([getattr(s, hook) for s in wanted if _overrides(s, hook)] for hook in _HOOKS)

    def _op_route(self, model: Model, op: Any) -> tuple[list[Callable[..., None]], ...]:
        """The hooks for the operations called ``op`` on ``model``'s primitive, worked out at
        its first operation of that name: a subscriber that declares ``ops`` is not even
        called for the others."""
        route = model.by_op.get(op)
        if route is None:
            route = model.by_op[op] = self._route(model.name, op)
        return route

    def at(self, ts: float, callback: Callable[[float], None]) -> None:
        """Call ``callback(now)`` once, just before the first line at or after ``ts`` is
        seen, with that line's time (never, if the log ends before)."""
        heapq.heappush(self._alarms, (ts, len(self._alarms) + id(callback), callback))
        self._next_alarm = self._alarms[0][0]

    def _ring(self, now: float) -> None:
        alarms = self._alarms
        while alarms and alarms[0][0] <= now:
            callback = heapq.heappop(alarms)[2]
            callback(now)
        self._next_alarm = alarms[0][0] if alarms else _INF

    # -- models ----------------------------------------------------------------------------

    def model(self, prim: str) -> Model | None:
        """The model of primitive ``prim`` (None if the run has no such primitive)."""
        return self._models.get(prim)

    def models(self) -> Mapping[str, Model]:
        return self._models

    def kind(self, name: str) -> Kind | None:
        """The registered kind called ``name``."""
        return self._kinds.find(name)

    def _new_model(self, name: str, kind_name: str, info: Mapping[str, Any]) -> Model | None:
        kind = self._kinds.find(kind_name)
        if kind is None:
            return None
        model = kind.model(name, info, self)
        model.blocking = kind.blocking
        model.routes = self._route(name)
        if type(model).key is not self._base_key:
            model.keyed = model.key
        later = self._later.pop(name, None)
        if later is not None:
            model.collectors = later
        for series, callback in self._later_follow.pop(name, ()):
            model.followers.setdefault(series, []).append(callback)
        self._models[name] = model
        return model

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, chunk: Iterable[Line]) -> None:
        """See ``chunk``'s lines, in time order."""
        # The one loop every line of every run goes through: locals and inlined pairing keep
        # it to a few hundred nanoseconds per line.
        next_seq = self.next_seq
        models = self._models
        now = self.now
        actor_now = self.actor_now
        lines = 0
        late = 0
        late_s = self.late_s
        track = self.track_states
        alarm = self._next_alarm
        wanted, direct = self._routing or self._route_lines()
        try:
            for line in chunk:
                try:
                    lines += 1
                    actor = line.actor
                    seq = line.seq
                    if next_seq.get(actor, 0) == seq:
                        next_seq[actor] = seq + 1
                    else:
                        self._gap(line, next_seq.get(actor, 0))
                    ts = line.ts
                    if ts >= alarm:
                        self._ring(ts)
                        alarm = self._next_alarm
                    if ts > now:
                        now = self.now = ts
                    elif ts < now:
                        late += 1
                        if now - ts > late_s:
                            late_s = now - ts
                    event = line.event
                    if event != "op":
                        if actor not in _SYSTEM and ts > actor_now:
                            actor_now = self.actor_now = ts
                        # Most domain events interest nobody but the states: skip them cheaply;
                        # hand those only subscribers read straight to them.
                        hooks = direct.get(event)
                        if hooks is not None:
                            for hook in hooks:
                                hook(line)
                        elif track or event in wanted:
                            self._line(line)
                            actor_now = self.actor_now  # a fault or a death may move it
                        continue
                    if ts > actor_now:
                        actor_now = self.actor_now = ts
                    prim = line.prim
                    model = models.get(prim) if type(prim) is str else None
                    if model is None:
                        model = self._unknown(line)
                        if model is None:
                            continue
                    opname = line.op
                    key = (actor, opname) if model.keyed is None else model.keyed(line)
                    pending = model.open
                    if line.phase == "invoke":
                        op = Operation(line, opname in model.blocking)
                        there = pending.setdefault(key, op)
                        if there is not op:
                            # Another one open under the same key: they return in order.
                            if type(there) is list:
                                there.append(op)
                            else:
                                pending[key] = [there, op]
                        route = model.by_op.get(opname) or self._op_route(model, opname)
                        for hook in route[0]:
                            hook(op)
                        model.invoke(op)
                        if track and op.blocking:
                            self._blocked(op)
                        continue
                    there = pending.get(key)
                    if there is None:
                        self._orphan(model, line)
                        continue
                    if type(there) is list:
                        op = there.pop(0)
                        if len(there) == 1:
                            pending[key] = there[0]
                    else:
                        op = there
                        del pending[key]
                    op.done = line
                    model.complete(op)
                    collectors = model.collectors
                    if collectors:
                        for waits in collectors.get(opname, ()):
                            waits.add(op)
                    route = model.by_op.get(opname) or self._op_route(model, opname)
                    for hook in route[1]:
                        hook(op)
                    if track and op.blocking:
                        self._unblocked(op)
                except _UNREADABLE as exc:
                    # A line no model or reader can take (a hostile or foreign log): a finding
                    # with its line number, never a traceback; the rest is still read.
                    self._unreadable(line, f"{type(exc).__name__}: {exc}")
        finally:
            self.lines += lines
            self.late_lines += late
            self.late_s = late_s

    def feed_run(self, actor: str, lines: Sequence[Line]) -> bool:
        """See ``lines``, all of them ``actor``'s and in its order (a block of one connection),
        in one go if none of them needs a look of its own; else take none of them and return
        False, and the caller feeds them (:meth:`feed`).

        One go is: the lines are :meth:`quiet`, ``seq`` follows on from the actor's last line
        without a gap, ``ts`` never goes back and no alarm is due. Such lines change only the
        counts, ``now`` and ``actor_now`` and the actor's next ``seq``, and a few calls into C
        work those out for the whole block exactly as :meth:`feed` would line by line, with
        no Python step per line (most lines of a busy run are domain events nobody reads; see
        docs/benchmarks.md, section 1)."""
        if not lines:
            return True
        if not self.quiet(actor, lines):
            return False
        runs = ((actor, lines),)
        stamps = self._runs_fit(runs)
        return stamps is not None and self._take_runs(runs, stamps, self.now)

    def quiet(self, actor: str, lines: Sequence[Line]) -> bool:
        """True if no line of ``lines`` (``actor``'s) needs a look of its own: none is an
        operation or an event that anybody (the history itself, a subscriber, the states)
        reads, and ``actor`` is not the engine or the coordinator. Such lines change only the
        counts and the clocks, wherever they fall among other lines. The answer holds until a
        subscriber is added (it may read them)."""
        wanted = (self._routing or self._route_lines())[0]
        if self.track_states or wanted is _EVERYTHING or actor in _SYSTEM:
            return False
        # (The events handed straight to subscribers are among those wanted.)
        events = set(map(_EVENT, lines))
        return "op" not in events and events.isdisjoint(wanted)

    def _runs_fit(self, runs: Sequence[tuple[str, Sequence[Line]]]) -> list[list[float]] | None:
        """The times of each run's lines, if :meth:`_take_runs` can take ``runs`` (quiet
        lines, each run one actor's, an actor's runs in its order): every actor's ``seq``
        follows on without a gap and its ``ts`` never goes back, and no alarm is due. Else
        None."""
        next_seq = self.next_seq
        alarm = self._next_alarm
        due: dict[str, int] = {}
        latest: dict[str, float] = {}
        found: list[list[float]] = []
        for actor, lines in runs:
            n = len(lines)
            first = due.get(actor)
            if first is None:
                first = next_seq.get(actor, 0)
            if list(map(_SEQ, lines)) != list(range(first, first + n)):
                return None
            stamps = list(map(_TS, lines))
            if n and (stamps[-1] >= alarm or stamps[0] < latest.get(actor, stamps[0])
                      or stamps != sorted(stamps)):  # fmt: skip
                return None
            due[actor] = first + n
            if n:
                latest[actor] = stamps[-1]
            found.append(stamps)
        return found

    def _take_runs(
        self,
        runs: Sequence[tuple[str, Sequence[Line]]],
        stamps: list[list[float]],
        floor: float,
        *,
        clocks: bool = True,
    ) -> bool:
        """Take quiet ``runs`` whose times :meth:`_runs_fit` found, exactly as :meth:`feed`
        would take their lines merged in time order right after lines that brought ``now`` to
        ``floor``: a line is late if it lies before ``floor`` (lines of one stretch of time,
        from several actors, need no merging line by line: none of them is anybody's
        business). False, and nothing taken, if an alarm has come due meanwhile. ``clocks``
        False: ``now`` and ``actor_now`` are left for :meth:`_catch_up` (lines fed after
        these, yet earlier, must not look late)."""
        ends = [times[-1] for times in stamps if times]
        if not ends:
            return True
        last = max(ends)
        if last >= self._next_alarm:
            return False
        late = 0
        late_s = self.late_s
        lines = 0
        for (actor, run), times in zip(runs, stamps, strict=True):
            n = len(times)
            if not n:
                continue
            # Before ``floor`` is late: a prefix of the run, the first the latest.
            behind = bisect.bisect_left(times, floor)
            if behind:
                late += behind
                late_s = max(late_s, floor - times[0])
            self.next_seq[actor] = run[-1].seq + 1
            lines += n
        self.late_lines += late
        self.late_s = late_s
        if clocks:
            self._catch_up(last)
        self.lines += lines
        return True

    def _catch_up(self, ts: float) -> None:
        """``now`` and ``actor_now`` are at least ``ts`` (of an actor's quiet line)."""
        if ts > self.now:
            self.now = ts
        if ts > self.actor_now:
            self.actor_now = ts

    def feed_file(self, path: Any, findings: list[Finding] | None = None) -> None:
        """Read ``path`` (an events file) in time order, then :meth:`finish`."""
        for chunk in ordered(read_lines(path, findings)):
            self.feed(chunk)
        self.finish()

    def _gap(self, line: Line, due: int) -> None:
        self.gap_count += 1
        if len(self.gaps) < 3:
            self.gaps.append((line, due))
        self.next_seq[line.actor] = max(due, line.seq + 1)

    def _unknown(self, line: Line) -> Model | None:
        prim, kind = line.prim, line.kind
        op, phase = line.op, line.phase
        if not (type(prim) is str and type(kind) is str and type(op) is str
                and type(phase) is str) or prim in self._models:  # fmt: skip
            self._unreadable(line, _NOT_NAMES)
            return None
        model = self._new_model(prim, kind, {"kind": kind})
        if model is None:
            self._unreadable(line, f"an op line of an unknown kind {kind!r}")
        return model

    def _unreadable(self, line: Line, why: str) -> None:
        self.malformed_count += 1
        if len(self.malformed) < self.keep_malformed:
            self.malformed.append((line, why))

    def _orphan(self, model: Model, line: Line) -> None:
        # A completion whose invoke is missing (a lost line, or a history written by hand):
        # the operation still returned; it is taken as begun at that moment.
        self.orphans += 1
        op = Operation(line, line.op in model.blocking)
        route = self._op_route(model, line.op)
        for hook in route[0]:
            hook(op)
        model.invoke(op)
        op.done = line
        model.complete(op)
        for waits in model.collectors.get(str(line.op), ()) if model.collectors else ():
            waits.add(op)
        for hook in route[1]:
            hook(op)

    def _blocked(self, op: Operation) -> None:
        a = self._actor(op.actor)
        a.blocked.append(op)
        self._restate(a)

    def _unblocked(self, op: Operation) -> None:
        a = self._actor(op.actor)
        if op in a.blocked:
            a.blocked.remove(op)
        self._restate(a)

    def _wanted_lines(self) -> Any:
        """The events whose lines somebody reads (the lifecycle always: the history itself)."""
        if self._lines_every:
            return _EVERYTHING
        return _LIFECYCLE | self._lines_by_event.keys()

    def _route_lines(self) -> tuple[Any, dict[str, list[Callable[[Line], None]]]]:
        """What feed() does with lines that are not operations (see :meth:`_wanted_lines` and
        :meth:`_direct_lines`), worked out once per set of subscribers: the live history is
        fed a step, or a block, at a time."""
        self._routing = (self._wanted_lines(), self._direct_lines())
        return self._routing

    def _direct_lines(self) -> dict[str, list[Callable[[Line], None]]]:
        """The hooks of the events whose lines only subscribers read, by event: what
        :meth:`_line` would do with them, without it (none while states are tracked, or a
        subscriber reads every line)."""
        if self.track_states or self._lines_every:
            return {}
        by_event = self._lines_by_event
        return {event: by_event[event] for event in by_event.keys() - _LIFECYCLE}

    def _line(self, line: Line) -> None:
        event = line.event
        actor = line.actor
        if event == "actor_start":
            self.started.add(actor)
        elif event == "actor_end":
            self._end_actor(actor, line.ts, str(line.get("status", "ok")))
        elif event == "exit" and actor == "engine":
            target = line.get("target")
            # No end line of its own: the actor died (SIGKILL, a crash that could not unwind).
            if isinstance(target, str) and target not in self.ended:
                self._end_actor(target, line.ts, "died")
                self._reached(line.ts)
        elif event == "run_start" and actor == "engine":
            config = line.get("config")
            clock = config.get("clock") if isinstance(config, dict) else None
            speedup = clock.get("speedup") if isinstance(clock, dict) else None
            if isinstance(speedup, (int, float)) and speedup > 0:
                self.minutes_per_s = float(speedup) / 60.0
        elif event == "fault" and actor == "engine":
            target, action = line.get("target"), line.get("action")
            if isinstance(target, str) and action != "resume" and target not in self.faulted:
                self.faulted[target] = (str(action), line.ts)
            self._reached(line.ts)
        for hook in self._lines_every:
            hook(line)
        hooks = self._lines_by_event.get(event)
        if hooks:
            for hook in hooks:
                hook(line)
        if self.track_states and actor not in _SYSTEM and event != "actor_end":
            a = self._actor(actor)
            if self._states is not None:
                named = self._states(line)
                if named is not None:
                    a.domain = named
            self._restate(a)

    def _reached(self, ts: float) -> None:
        # A fault done to an actor and its death are the engine's lines but the actor's story:
        # a car killed at minute 20 was there until minute 20, whenever it last spoke.
        if ts > self.actor_now:
            self.actor_now = ts

    def _end_actor(self, actor: str, ts: float, status: str) -> None:
        self.ended[actor] = status
        died = status == "died"
        if self.track_states:
            # Ended first: the holds and operations its end cuts below do not each restate it,
            # and its last state (waiting for a fork, holding another) is what it ended in.
            a = self._actor(actor)
            a.last = a.state
            a.ended = status
        for model in self._models.values():
            pending = model.open
            cut = [k for k in pending if isinstance(k, tuple) and k and k[0] == actor]
            if not cut:
                continue
            ops: list[Operation] = []
            for k in cut:
                there = pending.pop(k)
                ops.extend(there if isinstance(there, list) else [there])
            for op in sorted(ops, key=lambda o: o.start):
                model.cut_short(op)
                for hook in self._op_route(model, op.invoke.op)[1]:
                    hook(op)
        for model in self._models.values():
            model.actor_ended(actor, ts, died)
        if self.track_states:
            a = self._actor(actor)
            a.ended = status
            a.blocked.clear()
            self._restate(a)

    def finish(self) -> None:
        """The log has ended: operations that never returned are handed on as ``pending``,
        holds still open are cut, and every subscriber's :meth:`~Subscriber.on_finish` runs."""
        for model in self._models.values():
            ops: list[Operation] = []
            for there in model.open.values():
                ops.extend(there if isinstance(there, list) else [there])
            model.open.clear()
            for op in sorted(ops, key=lambda o: o.start):
                for hook in self._op_route(model, op.invoke.op)[1]:
                    hook(op)
        for model in self._models.values():
            for hold in list(model.holds or ()):
                self.close_hold(model, hold, self.now, cut="log")
        for hook in self._finish_subs:
            hook()

    # -- what models report --------------------------------------------------------------------

    def open_hold(self, model: Model, actor: str, ts: float, op: Operation | None = None) -> Hold:
        """``actor`` begins to hold (a unit of) the model's primitive at ``ts``, because
        ``op`` returned."""
        hold = Hold(actor, model.name, ts, op)
        if model.holds is not None:
            model.holds.add(hold)
        for hook in model.routes[2]:
            hook(hold)
        if self.track_states:
            a = self._actor(actor)
            a.holds.append(hold)
            self._restate(a)
        return hold

    def close_hold(self, model: Model, hold: Hold, ts: float, cut: str = "") -> None:
        """``hold`` ends at ``ts``; ``cut`` says why if it was not released."""
        start = hold.start
        hold.end = start if start > ts else ts  # max(ts, start), without the call
        hold.cut = cut
        holds = model.holds
        if holds is not None and hold in holds.all:
            holds.remove(hold)
        for hook in model.routes[3]:
            hook(hold)
        if self.track_states:
            a = self._actors.get(hold.actor)
            if a is not None and hold in a.holds:
                a.holds.remove(hold)
                self._restate(a)

    def transfer(self, src: Operation, dst: Operation, what: TransferKind) -> None:
        """``src`` caused ``dst`` to return."""
        model = self._models.get(dst.prim)
        hooks = model.routes[4] if model is not None else ()
        if hooks:
            fact = Transfer(src, dst, what)
            for hook in hooks:
                hook(fact)

    def gauge_changed(self, model: Model) -> None:
        for hook in model.routes[5]:
            hook(self.now, model.name, model.gauges)

    # -- queries ---------------------------------------------------------------------------

    def pending(self) -> list[Operation]:
        """Operations begun and not returned, oldest first."""
        ops: list[Operation] = []
        for model in self._models.values():
            for there in model.open.values():
                ops.extend(there if isinstance(there, list) else [there])
        return sorted(ops, key=lambda o: o.start)

    def when(self, ts: float) -> str:
        """A moment of the run in words: ``minute 30.3`` (or ``0.303 s`` without a clock)."""
        if self.minutes_per_s is None:
            return f"{ts:.3f} s"
        return f"minute {ts * self.minutes_per_s:,.1f}"

    def span(self, seconds: float) -> str:
        """A length of time in words: ``92.0 min`` (or ``0.920 s`` without a clock)."""
        if self.minutes_per_s is None:
            return f"{seconds:.3f} s"
        return f"{seconds * self.minutes_per_s:,.1f} min"

    def holders(self, prim: str) -> list[str]:
        model = self._models.get(prim)
        return [] if model is None else model.holders()

    def blockers(self, prim: str) -> list[str]:
        """Who keeps ``prim`` from a waiter: its holders, and those that ended holding it
        (``phil-002 (died)``, ``car-7 (crashed)``), whose units nobody will give back."""
        model = self._models.get(prim)
        if model is None:
            return []
        gone = (f"{a} ({self.ended.get(a, 'ended')})" for a in model.abandoned())
        return [*model.holders(), *gone]

    def state_of(self, actor: str) -> State | None:
        """What ``actor`` does now (on a history that tracks states)."""
        a = self._actors.get(actor)
        return None if a is None else a.state

    def states(self) -> dict[str, State]:
        return {name: a.state for name, a in self._actors.items() if a.state is not None}

    def waits(self, prim: str, op: str) -> Waits:
        """The waits of ``op`` on ``prim`` (seconds from invoke to return), from now on."""
        waits = Waits(op)
        self._collect(prim).setdefault(op, []).append(waits)
        return waits

    def _collect(self, prim: str) -> dict[str, list[Waits]]:
        model = self._models.get(prim)
        if model is None:
            self._must_be_known(prim)
            # Not declared (a Value's own lock): collected once its first line says its kind.
            self._later.setdefault(prim, {})
            return self._later[prim]
        if model.collectors is None:
            model.collectors = {}
        return model.collectors

    def _must_be_known(self, prim: str) -> None:
        """A scenario asks for a primitive the log has not named yet: fine for one the run
        may make (a Value's own lock, ``counter.lock``; a lock only some configs declare),
        but a name next to a declared one is a typo, which would leave its statistics empty
        without a word."""
        declared = self.primitives
        if prim in declared or any(prim.startswith(f"{name}.") for name in declared):
            return
        from sim.config import _did_you_mean
        from sim.errors import ScenarioError

        hint = _did_you_mean(prim, list(declared))
        if hint:
            raise ScenarioError(f"no primitive named {prim!r}{hint}")

    def level(self, prim: str, series: str) -> Level:
        """The time-weighted level of one of ``prim``'s gauge series, from now on."""
        model = self._models.get(prim)
        start = 0.0 if model is None else float(model.gauges.get(series, 0.0))
        level = Level(series, self.now, start)
        self.follow(prim, series, level.to)
        return level

    def follow(self, prim: str, series: str, callback: Callable[[float, float], None]) -> None:
        """Call ``callback(ts, value)`` each time ``prim``'s gauge ``series`` changes, from now
        on: cheaper than :meth:`Subscriber.on_gauge` for one series, since nothing is called
        when the primitive's other series change."""
        model = self._models.get(prim)
        if model is None:
            self._must_be_known(prim)
        if model is not None:
            model.followers.setdefault(series, []).append(callback)
        else:
            # Not declared (a Value's own lock): followed once its first line says its kind.
            self._later_follow.setdefault(prim, []).append((series, callback))

    # -- actor states ----------------------------------------------------------------------

    def _actor(self, name: str) -> _Actor:
        a = self._actors.get(name)
        if a is None:
            a = self._actors[name] = _Actor(name)
            self._restate(a)
        return a

    def _restate(self, a: _Actor) -> None:
        category: Category
        tone = ""
        if a.ended:
            state, category, detail = (a.ended if a.ended != "ok" else "done"), "done", ""
            before = a.last
            if a.ended != "ok" and before is not None and before.category not in ("done", "new"):
                # Stopped in the middle of something: what it was doing is the story (a
                # philosopher terminated while waiting for a fork, holding another).
                detail = f"was {before.state} {before.detail}".strip()
        elif a.blocked:
            op = a.blocked[-1]
            kind = self._kinds.find(op.kind)
            held = ", ".join(sorted({h.prim for h in a.holds}))
            detail = f"{op.prim} (holds {held})" if held else op.prim
            state = kind.label(op.name) if kind is not None else "waiting"
            category = "wait"
        elif a.domain is not None:
            state, category = a.domain[0], "domain"
            detail = ", ".join(sorted({h.prim for h in a.holds}))
            tone = a.domain[1]
        elif a.holds:
            state, category = "holding", "hold"
            detail = ", ".join(sorted({h.prim for h in a.holds}))
        elif a.name in self.started:
            state, category, detail = "running", "run", ""
        else:
            state, category, detail = "not started", "new", ""
        old = a.state
        if old is not None and (old.state, old.category, old.detail) == (state, category, detail):
            return
        a.state = State(a.name, self.now, state, category, detail, tone)
        for hook in self._state_subs:
            hook(a.state)
