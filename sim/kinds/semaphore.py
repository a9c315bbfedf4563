"""Semaphores and locks (kinds ``semaphore``, ``bounded_semaphore``, ``lock``): units taken by
``acquire`` and given back by ``release``.

A semaphore that starts with ``value`` units is a pool (the car park's spaces): an actor holds
a unit from its ``acquire`` ok until its ``release``. The log brackets every operation, and a
``release`` is logged (``invoke``) before it takes effect, so from the log's point of view the
holder has gone before anybody else can be woken: holder counts from the log are exact. A
unit may be given back by another process than the one that took it (readers-writers: the
last reader out releases what the first one took); that release ends the longest-held unit.
A ``Lock`` is a pool of one unit (and, in multiprocessing, may also be released by another
process). A semaphore that starts at 0 is a *signal*: one process releases (sends a signal),
another acquires (receives it); nothing is held in between.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, ClassVar

from sim.checks import Check, Problems, Verdict
from sim.history.facts import Hold, Operation
from sim.history.lines import Line

from ._base import Display, Holds, Kind, Logged, Model, PrimSpec, Reading, Wakes, limit

__all__ = [
    "BoundedSemaphore",
    "LeakedUnits",
    "Lock",
    "LoggedSemaphore",
    "Semaphore",
    "SemaphoreBound",
    "UnitModel",
]


class LoggedSemaphore(Logged):
    """What an actor gets for a Semaphore, BoundedSemaphore or Lock: acquire and release,
    also as a context manager."""

    def __init__(self, name: str, raw: Any, log: Any, clock: Any, kind: str) -> None:
        self.kind = kind
        super().__init__(name, raw, log, clock)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take one unit; with ``timeout`` (simulated minutes) give up after that long."""
        log = self._log
        log.info("op", op="acquire", phase="invoke", **limit(timeout, block))
        grant = self._turn(timeout, block)
        if grant is not None:
            # Let go only once a unit is free: the real acquire then takes it at once.
            got = grant.do == "go" and self._raw.acquire(False)
        elif timeout is None:
            got = self._raw.acquire(block)
        else:
            got = self._raw.acquire(block, self._clock.seconds(timeout))
        _returned = True  # a stop from here on waits for the line below (see RETURNED)
        if got:
            log.info("op", op="acquire", phase="ok")
        else:
            log.info("op", op="acquire", phase="timeout" if block else "fail")
        _returned = False  # the line is queued: a stop strikes where it lands again
        return bool(got)

    def release(self) -> None:
        """Give one unit back."""
        # "invoke" is logged before the release takes effect: from the log's point of view the
        # holder has gone before anybody else can be woken, so holder counts stay exact.
        self._log.info("op", op="release", phase="invoke")
        try:
            self._raw.release()
            _returned = True
        except (ValueError, AssertionError) as exc:
            _returned = True
            self._log.info("op", op="release", phase="fail", error=str(exc))
            raise
        # In a virtual run this scheduling point comes after the release took effect: the
        # history counts a unit as given back at the invoke line, so by the time the
        # scheduler reads that line (with this request) the unit must really be free.
        self._turn()
        self._log.info("op", op="release", phase="ok")

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass(frozen=True)
class Semaphore(PrimSpec[LoggedSemaphore]):
    """A counting semaphore with ``value`` free units (the car park's spaces)."""

    kind: ClassVar[str] = "semaphore"
    value: int = 1

    def build(self, mp: BaseContext) -> Any:
        return mp.Semaphore(self.value)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class BoundedSemaphore(Semaphore):
    """A semaphore whose ``release`` beyond the initial value raises ValueError."""

    kind: ClassVar[str] = "bounded_semaphore"

    def build(self, mp: BaseContext) -> Any:
        return mp.BoundedSemaphore(self.value)


@dataclass(frozen=True)
class Lock(PrimSpec[LoggedSemaphore]):
    """A mutual-exclusion lock: a pool of one unit."""

    kind: ClassVar[str] = "lock"

    def build(self, mp: BaseContext) -> Any:
        return mp.Lock()


class UnitModel(Model):
    """Units held per actor (a pool), or signals pending (a semaphore that starts at 0).

    Besides the holds and gauges, it keeps what a check of the kind needs to know, so that
    the check reads it once at the end instead of following every operation again: the most
    units ever taken, the releases that gave back more than was ever taken, and the acquires
    that found no signal.
    """

    series: ClassVar[tuple[str, ...]] = ("held", "waiting")

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        self.value = int(info.get("value", 1)) if info.get("kind") != "lock" else 1
        self.signal = self.value == 0 and info.get("kind") != "lock"
        self.holds = Holds()
        # Units whose holder ended without releasing them: still taken, and another process
        # may give them back (readers-writers' last reader out).
        self.left: deque[Hold] = deque()
        #: Units taken now: held, or left taken by an actor that has ended.
        self.taken = 0
        self.waiting = 0
        self.begun = 0
        self.acquired = 0
        self.released = 0
        self.most = 0
        #: (holders then, the hold) each time more units were taken than there are.
        self.over: list[tuple[int, Hold]] = []
        #: Releases that returned although more had been given back than ever taken.
        self.extra: list[Operation] = []
        #: Acquires of a signal that returned with no release before them.
        self.unsignalled: list[Operation] = []
        # Signals given (a release each) and not yet taken, oldest first.
        self.signals: deque[Operation] = deque()
        self._given = 0
        self._wakes = Wakes()
        # A release whose invoke ended a hold, until it returns (a failed release reopens it).
        self._releasing: dict[str, Hold] = {}
        if self.signal:
            self.gauges = {"signals": 0, "waiting": 0}

    @property
    def capacity(self) -> int | None:
        return None if self.signal else self.value

    def reading(self) -> Reading:
        if self.signal:
            text = f"{len(self.signals)} signals pending, {self.waiting} waiting"
            return Reading(len(self.signals), None, text)
        if self.info.get("kind") == "lock":
            holders = ", ".join(self.holders()) or "nobody"
            return Reading(self.taken, 1, f"held by {holders}, {self.waiting} waiting")
        return Reading(self.taken, self.value, f"{self.taken}/{self.value} taken, "
                       f"{self.waiting} waiting")  # fmt: skip

    def abandoned(self) -> list[str]:
        return [h.actor for h in self.left]

    def ready(self, op: Operation) -> bool:
        if op.invoke.op != "acquire":
            return True
        return bool(self.signals) if self.signal else self.taken < self.value

    def invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name == "acquire":
            self.begun += 1
            self.waiting += 1
            self.gauge("waiting", self.waiting)
        elif name == "release":
            self._given += 1
            if self.signal:
                self.signals.append(op)
                self.gauge("signals", len(self.signals))
            else:
                self._release(op)
            if self.waiting > 0 and self.routes[4]:
                # Who this release lets in matters only to somebody who draws transfers.
                self._wakes.offer(op, 1)

    def _release(self, op: Operation) -> None:
        assert self.holds is not None
        actor = op.invoke.actor
        mine = self.holds.mine(actor)
        if mine:
            hold = mine[-1]
        elif self.left:
            self.left.popleft()  # a unit whose holder has ended comes back
            self.taken -= 1
            self.gauge("held", self.taken)
            return
        elif self.holds:
            hold = next(iter(self.holds))  # another's unit: the longest held goes
        else:
            return  # nothing taken: a release without an acquire (the check reports it)
        self._releasing[actor] = hold
        self.history.close_hold(self, hold, op.invoke.ts)
        self.taken -= 1
        self.gauge("held", self.taken)

    def complete(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        name, phase = op.invoke.op, done.phase
        if name == "acquire":
            self.waiting -= 1
            if phase == "ok":
                self.acquired += 1
                if self.signal:
                    if self.signals:
                        sent = self.signals.popleft()
                        if self.routes[4]:
                            self.history.transfer(sent, op, "signal")
                    else:
                        self.unsignalled.append(op)
                    self.set_gauge(signals=len(self.signals), waiting=self.waiting)
                    return
                if self.routes[4]:
                    waker = self._wakes.take(op)
                    if waker is not None:
                        self.history.transfer(waker, op, "unit")
                self.taken += 1
                hold = self.history.open_hold(self, op.invoke.actor, done.ts, op)
                if self.taken > self.most:
                    self.most = self.taken
                if self.taken > self.value:
                    self.over.append((self.taken, hold))
                self.gauge("held", self.taken)
                self.gauge("waiting", self.waiting)
                return
            if self.waiting <= 0:
                self._wakes.clear()  # a wake-up nobody took (its waiter gave up) wakes nobody
            self.gauge("waiting", self.waiting)
        elif name == "release":
            released = self._releasing.pop(op.invoke.actor, None)
            if phase == "ok":
                self.released += 1
                if self.value and self.released > self.begun:
                    self.extra.append(op)
                    self.released = self.begun  # each extra release counts once
                return
            self._given -= 1
            if self.signal and self.signals and self.signals[-1] is op:
                self.signals.pop()
                self.gauge("signals", len(self.signals))
            elif released is not None:
                # The release raised: the unit was never given back, the holder holds on.
                self.taken += 1
                self.history.open_hold(self, released.actor, done.ts, released.op)
                self.gauge("held", self.taken)

    def cut_short(self, op: Operation) -> None:
        if op.invoke.op == "acquire":
            self.waiting -= 1
            self.gauge("waiting", self.waiting)

    def actor_ended(self, actor: str, ts: float, died: bool) -> None:
        assert self.holds is not None
        for hold in list(self.holds.mine(actor)):
            # The unit stays taken (nobody released it), so the gauges keep counting it; only
            # the hold ends here. A dead actor's unit is lost for the rest of the run.
            self.history.close_hold(self, hold, ts, cut="died" if died else "ended")
            self.left.append(hold)


class SemaphoreBound(Check):
    """Holders of a semaphore never exceed its value, and it never gets back more than it gave.

    Counting holders alone cannot see a release without an acquire (a car that leaves twice):
    the count drops and the semaphore silently admits one more than its value. So for a
    semaphore that starts above 0, a completed release must never outnumber the acquires
    begun. For a signal (a semaphore that starts at 0), every acquire must follow a release.
    The model keeps these facts as it reads the operations; the check only says them.
    """

    events = frozenset()

    def __init__(self, prim: str, value: int) -> None:
        super().__init__()
        self.prim = prim
        self.value = value
        self.name = (f"{prim}: at most {value} holders" if value else
                     f"{prim}: no acquire without an earlier release")  # fmt: skip

    def verdict(self) -> Verdict:
        model = self.history.model(self.prim)
        if not isinstance(model, UnitModel) or not model.acquired:
            return self.skip("no acquire completed")
        for taken, hold in model.over:
            self.problems.add(f"{taken} holders at ts {hold.start:.6f} when {hold.actor} acquired")
        for op in model.extra:
            assert op.done is not None
            self.problems.add(
                f"{op.actor} released at ts {op.done.ts:.6f} (seq {op.done.seq}) more than was "
                f"ever acquired: the semaphore now admits more than {self.value}"
            )
        for op in model.unsignalled:
            assert op.done is not None
            self.problems.add(
                f"{op.actor} acquired at ts {op.done.ts:.6f} (seq {op.done.seq}) with no release "
                "before it"
            )
        if self.value:
            return self.result(f"{model.acquired} acquires, at most {model.most} held at once")
        return self.result(f"{model.acquired} acquires, each after a release")


def _wrap(kind: str) -> Any:
    def wrap(name: str, raw: Any, log: Any, clock: Any) -> LoggedSemaphore:
        return LoggedSemaphore(name, raw, log, clock, kind)

    return wrap


class LeakedUnits(Check):
    """No unit (or lock) is lost with a holder that ended holding it.

    A process that dies holding a unit never releases it; nor does one that crashes or is
    stopped, unless its code gives the unit back on the way out (``with`` or ``finally``). The
    semaphore then has one unit less for the rest of the run, and a lock stays locked for
    good (abandoned), so that later acquirers wait in vain. The check names who ended holding
    what, how, and when, how much capacity was lost for how long, and who waited afterwards.
    A unit another process gave back in its place (a last reader for the first) is not lost;
    nor are the units of actors the engine stopped at the end of a run (a deadlock, Ctrl-C).
    """

    phenomenon = "leaked_unit"
    events = frozenset({"stopping"})

    def __init__(self, prim: str, value: int) -> None:
        super().__init__()
        self.prim = prim
        self.value = value
        self.prims = frozenset({prim})
        self.ops = frozenset({"acquire"})
        self.name = f"{prim}: no unit lost with its holder"
        self._gone: list[Hold] = []
        self._after: list[Operation] = []
        self._end = 0.0
        self._stop: float | None = None
        # Holders the engine stopped at the end of the run (a deadlock, Ctrl-C): not counted,
        # but said, so that a pass does not read as "everybody gave their units back".
        self._stopped: set[str] = set()

    def on_line(self, line: Line) -> None:
        if line.actor == "engine" and self._stop is None:
            self._stop = line.ts

    def on_hold(self, hold: Hold) -> None:
        if hold.cut == "died" or (hold.cut == "ended" and self._counts(hold)):
            self._gone.append(hold)
        elif hold.cut == "ended":
            self._stopped.add(hold.actor)

    def _counts(self, hold: Hold) -> bool:
        # An actor the engine stopped (after its "stopping") is not to blame for what it held.
        return (self._stop is None or hold.actor in self.history.faulted
                or self.history.ended.get(hold.actor) == "crashed")  # fmt: skip

    def on_op(self, op: Operation) -> None:
        if self._gone and op.start >= self._gone[0].start:
            self._after.append(op)

    def on_finish(self) -> None:
        self._end = self.history.now

    def verdict(self) -> Verdict:
        if not self._gone:
            if self._stopped:
                who = Problems()
                who.extend(sorted(self._stopped))
                units = "its unit" if len(who) == 1 else "their units"
                return self.result(f"no unit lost: {who.detail(', ')} still held {units} when "
                                   "the engine stopped the run (stopped, not lost)")  # fmt: skip
            return self.result("every holder gave its units back")
        model = self.history.model(self.prim)
        left = getattr(model, "left", None)
        # A unit pool's ended holders' units stay in ``left`` until somebody gives them back;
        # an RLock's can never be given back by anybody else.
        lost = [h for h in self._gone if left is None or h in left]
        if not lost:
            return self.result(f"{len(self._gone)} holder(s) ended holding units; others gave "
                               "them back")  # fmt: skip
        history = self.history
        first = min(h.end or h.start for h in lost)
        whom = ", ".join(f"{h.actor} {_how(history.ended.get(h.actor, 'ended'))} at "
                         f"{history.when(h.end or h.start)}" for h in lost)  # fmt: skip
        after = [op for op in self._after if (op.end or self._end) >= first]
        waited = [op for op in after if (op.wait or 0.0) > 0 or op.done is None]
        blocked = sum(1 for op in after if op.done is None)
        units = "unit" if len(lost) == 1 else "units"
        words = (f"{len(lost)} {units} of {self.prim} never given back: {whom}, holding it; "
                 f"{self.value - len(lost)} of {self.value} left for the remaining "
                 f"{history.span(max(0.0, self._end - first))}")  # fmt: skip
        if waited:
            longest = max((op.end or self._end) - op.start for op in waited)
            words += (f"; {len(waited)} acquire{'s' if len(waited) != 1 else ''} waited after "
                      f"it (the longest {history.span(longest)}")  # fmt: skip
            words += f", {blocked} still waiting at the end)" if blocked else ")"
        self.problems.add(words)
        return self.result("")


def _how(status: str) -> str:
    return {"died": "died", "crashed": "crashed", "terminated": "was stopped"}.get(status, "ended")


def _checks(name: str, info: Any) -> list[Check]:
    value = 1 if info.get("kind") == "lock" else int(info.get("value", 1))
    if value == 0:
        return [SemaphoreBound(name, value)]  # a signal: nothing is held, nothing can leak
    return [SemaphoreBound(name, value), LeakedUnits(name, value)]


_BLOCKING = frozenset({"acquire"})
_SERIES = (("held", "fill"), ("signals", "fill"), ("waiting", "--"))
_POOL = Display(_SERIES, "occupancy over time: units held against capacity, processes waiting",
                "units (held / waiting)", rank=0)  # fmt: skip
_LOCK = Display(_SERIES, "locks held over time, processes waiting",
                "locks held / processes waiting", rank=2, lock=True)  # fmt: skip
LEAKED = {"leaked_unit": "a process died holding a unit or a lock: it is lost for the rest of "
          "the run, and who waits for it waits in vain"}  # fmt: skip
KINDS = [
    Kind(name, UnitModel, spec, _wrap(name), _checks, _BLOCKING, display=display, phenomena=LEAKED)
    for name, spec, display in (
        ("semaphore", Semaphore, _POOL),
        ("bounded_semaphore", BoundedSemaphore, _POOL),
        ("lock", Lock, _LOCK),
    )
]
