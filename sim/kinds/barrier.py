"""Barriers (kind ``barrier``): ``parties`` processes wait until all of them have arrived.

A ``Barrier(parties)`` lets waiting processes through in *generations*: the ``parties``-th
arrival releases everyone who is waiting, and ``wait`` returns each of them its arrival index,
0 .. parties-1 (the wrapper logs it as ``index`` on the ``ok`` line). Nobody passes before
``parties`` have arrived, and a generation is complete: exactly ``parties`` waits return, with
the indices 0 .. parties-1 once each. Which arrival gets which index is up to the operating
system.

The log brackets every wait: a process arrives after its ``invoke`` line and leaves before its
``ok`` line. So in one generation every ``invoke`` comes before every ``ok`` (the moment of
release lies between them). Across generations the lines of a slow process may come late: a
process released in generation g can log its ``ok`` after processes of generation g+1 have
logged theirs, when more than ``parties`` processes share the barrier. The check therefore
groups the returns into generations by what the log proves, not by the order of ``ok`` lines:
a return joins the oldest open generation whose index it fills and whose first return came
after its own ``invoke``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Operation
from sim.history.lines import Line

from ._base import Display, Kind, Logged, Model, PrimSpec, Reading, Wakes, limit

__all__ = ["Barrier", "BarrierModel", "Generations", "LoggedBarrier"]


class LoggedBarrier(Logged):
    """A Barrier: ``wait`` returns this process's arrival index (0 .. parties-1)."""

    kind = "barrier"

    def wait(self, timeout: float | None = None) -> int:
        self._log.info("op", op="wait", phase="invoke", **limit(timeout))
        grant = self._turn(timeout)
        try:
            if grant is not None:
                # A real barrier would block this process until the others arrive, and the
                # operating system would order the arrivals: the scheduler does both here.
                if grant.do != "go":
                    raise threading.BrokenBarrierError
                index = int(grant.extra.get("index", 0))
            else:
                index = self._raw.wait(None if timeout is None else self._clock.seconds(timeout))
            _returned = True  # a stop from here on waits for the line below (see RETURNED)
        except threading.BrokenBarrierError:
            _returned = True
            self._log.info("op", op="wait", phase="fail", error="BrokenBarrierError")
            raise
        self._log.info("op", op="wait", phase="ok", index=index)
        _returned = False  # the line is queued: a stop strikes where it lands again
        return int(index)

    def abort(self) -> None:
        self._log.info("op", op="abort", phase="invoke")
        self._turn()
        self._raw.abort()
        _returned = True
        self._log.info("op", op="abort", phase="ok")

    @property
    def parties(self) -> int:
        return int(self._raw.parties)


@dataclass(frozen=True)
class Barrier(PrimSpec[LoggedBarrier]):
    """``parties`` processes wait until all of them have arrived, then all go on."""

    kind: ClassVar[str] = "barrier"
    parties: int = 2

    def build(self, mp: BaseContext) -> Any:
        return mp.Barrier(self.parties)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "parties": self.parties}


class BarrierModel(Model):
    """Arrivals waiting, and which last arrival let each generation go."""

    series: ClassVar[tuple[str, ...]] = ("waiting",)

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        parties = info.get("parties")
        self.parties = parties if isinstance(parties, int) and parties > 0 else None
        self.waiting = 0
        self.arrivals = 0
        self.broken = 0
        #: Who has waited on it (its parties, as far as the log shows), and who of them died.
        self.users: set[str] = set()
        self.dead: list[tuple[str, float]] = []
        self._wakes = Wakes()
        # Each waiter's arrival number (0-based, over the whole run).
        self._arrival: dict[Operation, int] = {}

    @property
    def capacity(self) -> int | None:
        return self.parties

    def reading(self) -> Reading:
        return Reading(self.waiting, self.parties, f"{self.waiting}/{self.parties} arrived")

    def invoke(self, op: Operation) -> None:
        if op.invoke.op != "wait":
            return
        self._arrival[op] = self.arrivals
        self.users.add(op.actor)
        self.waiting += 1
        self.arrivals += 1
        self.set_gauge(waiting=self.waiting)
        # Every parties-th arrival releases the others; counting arrivals (not waiters still in
        # flight) keeps generations apart when a fast process is back before the slow return.
        if self.parties is not None and self.parties > 1 and self.arrivals % self.parties == 0:
            self._wakes.offer(op, self.parties - 1)

    def ready(self, op: Operation) -> bool:
        if op.invoke.op != "wait" or self.parties is None:
            return True
        arrival = self._arrival.get(op, 0)
        # Its generation is complete once every one of its parties has arrived.
        return self.arrivals >= (arrival // self.parties + 1) * self.parties

    def grant(self, op: Operation, pick: Any) -> dict[str, Any]:
        if op.invoke.op != "wait" or self.parties is None:
            return {}
        # Which arrival gets which index is the operating system's business in a real run;
        # here the order of arrival, which the scheduler decided, gives it.
        return {"index": self._arrival.get(op, 0) % self.parties}

    def complete(self, op: Operation) -> None:
        done = op.done
        if op.invoke.op != "wait" or done is None:
            return
        self._arrival.pop(op, None)
        self.waiting -= 1
        self.set_gauge(waiting=self.waiting)
        if done.phase == "ok":
            waker = self._wakes.take(op)
            if waker is not None:
                self.history.transfer(waker, op, "barrier")
        else:
            self.broken += 1

    def actor_ended(self, actor: str, ts: float, died: bool) -> None:
        if died and actor in self.users:
            self.dead.append((actor, ts))

    def abandoned(self) -> list[str]:
        # A party that died will never arrive again: those waiting for it wait in vain.
        return [actor for actor, _ in self.dead]

    def describe_wait(self, op: Operation) -> str:
        if self.parties is None:
            return ""
        return f"{self.waiting} of {self.parties} arrived"


class Unbroken(Check):
    """No generation of the barrier is broken: no wait fails (``BrokenBarrierError``, after an
    ``abort`` or a timeout), and no party dies, stranding the others of its generation."""

    phenomenon = "broken_barrier"

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.events = frozenset()
        self.name = f"{prim}: never broken"
        self._failed: list[Operation] = []
        self._stranded: list[Operation] = []

    def on_op(self, op: Operation) -> None:
        if op.invoke.op != "wait":
            return
        if op.done is None:
            self._stranded.append(op)  # still waiting when the log (or its actor) ended
        elif op.done.phase != "ok":
            self._failed.append(op)

    def verdict(self) -> Verdict:
        model = self.history.model(self.prim)
        dead = model.dead if isinstance(model, BarrierModel) else []
        history = self.history
        if dead and (self._stranded or self._failed):
            who = ", ".join(f"{a} at {history.when(ts)}" for a, ts in dead)
            gone = {a for a, _ in dead}
            waited = sorted({op.actor for op in [*self._stranded, *self._failed]} - gone)
            self.problems.add(f"a party died: {who}; {', '.join(waited)} waited for it in vain")
        elif self._failed:
            first = self._failed[0]
            error, when = first.get("error", "?"), history.when(first.start)
            self.problems.add(f"{len(self._failed)} waits failed ({error}), the first by "
                              f"{first.actor} at {when}")  # fmt: skip
        return self.result("no wait failed, no party lost")


@dataclass(frozen=True)
class _Return:
    actor: str
    invoke: tuple[float, int]
    ok: tuple[float, int]
    index: int


@dataclass
class _Generation:
    number: int
    first_ok: tuple[float, int]
    members: dict[int, _Return] = field(default_factory=dict)


class Generations(Check):
    """Waits return in complete generations of ``parties``, and never before ``parties``
    waits have begun.

    For each generation: ``parties`` returns, their indices a permutation of 0 .. parties-1,
    every member's ``invoke`` before the generation's first ``ok``. And at the k-th return of
    the run, at least ``parties * ceil(k / parties)`` waits had been invoked: each return needs
    a whole generation to have arrived.
    """

    def __init__(self, prim: str, parties: int) -> None:
        super().__init__()
        self.prim = prim
        self.parties = parties
        self.prims = frozenset({prim})
        # "stopping": a run stopped by the engine may end with a generation half logged.
        self.events = frozenset({"stopping"})
        self.name = f"{prim}: generations of {parties}"
        self._invokes = 0
        self._returns = 0
        self._broken = 0
        self._open: list[_Generation] = []
        self._complete = 0
        self._stopped = False

    def on_line(self, line: Line) -> None:
        self._stopped = True

    def on_invoke(self, op: Operation) -> None:
        if op.invoke.op == "wait":
            self._invokes += 1

    def on_op(self, op: Operation) -> None:
        done = op.done
        if op.invoke.op != "wait" or done is None:
            return
        if done.phase != "ok":
            self._broken += 1  # BrokenBarrierError or a timeout: no generation to join
            return
        self._returns += 1
        needed = self.parties * math.ceil(self._returns / self.parties)
        if self._invokes < needed:
            self.problems.add(
                f"{op.actor} passed at {done.ts:.6f} s when only {self._invokes} waits had "
                f"begun; return {self._returns} needs {needed}"
            )
        index = done.index
        if not isinstance(index, int) or not 0 <= index < self.parties:
            self.problems.add(
                f"{op.actor} returned index {index!r} at {done.ts:.6f} s, not 0..{self.parties - 1}"
            )
            return
        self._place(_Return(op.actor, op.began, done.at, index))

    def _place(self, ret: _Return) -> None:
        for gen in self._open:
            if ret.index not in gen.members and ret.invoke < gen.first_ok:
                gen.members[ret.index] = ret
                if len(gen.members) == self.parties:
                    self._open.remove(gen)
                    self._complete += 1
                return
        number = self._complete + len(self._open) + 1
        gen = _Generation(number, ret.ok, {ret.index: ret})
        if self.parties == 1:
            self._complete += 1
        else:
            self._open.append(gen)

    def verdict(self) -> Verdict:
        if not self._returns:
            return self.skip(f"no wait on {self.prim} returned")
        if not self._stopped:
            for gen in self._open:
                who = ", ".join(f"{r.actor} (index {i})" for i, r in sorted(gen.members.items()))
                self.problems.add(
                    f"generation {gen.number} has {len(gen.members)} returns instead of "
                    f"{self.parties}: {who} passed from {gen.first_ok[0]:.6f} s, and no other "
                    "return fits it"
                )
        ok = (
            f"{self._complete} generations of {self.parties}, each with indices "
            f"0..{self.parties - 1} once, nobody passed before all had arrived"
        )
        if self._broken:
            ok += f"; {self._broken} waits broken or timed out"
        if self._stopped and self._open:
            ok += f"; {len(self._open)} generation(s) cut short by the stop"
        return self.result(ok)


def _checks(name: str, info: Any) -> list[Check]:
    parties = info.get("parties")
    if not isinstance(parties, int) or parties < 1:
        return []
    return [Generations(name, parties), Unbroken(name)]


KINDS = [
    Kind(
        "barrier",
        BarrierModel,
        Barrier,
        LoggedBarrier,
        _checks,
        frozenset({"wait"}),
        display=Display((("waiting", "fill"),), "processes waiting at the barrier", "processes",
                        rank=3),
        phenomena={"broken_barrier": "a barrier's generation never completed: a party died "
                                     "before arriving, or a wait was aborted or timed out"},
    )
]  # fmt: skip
