"""Events (kind ``event``): a flag that processes wait on until one of them sets it.

An Event is clear at the start. ``wait`` returns True (logged ``ok``) only if the flag was set
at some instant between the wait's ``invoke`` and its ``ok``. The log brackets every operation:
a ``set`` takes effect somewhere in [set invoke, set ok], so a waiter may legitimately return
*before* the setter has logged ``set ok``. The sound rule therefore measures against ``set``
invoke, never against ``set`` ok.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Operation

from ._base import Display, Kind, Logged, Model, PrimSpec, Reading, Wakes, limit

__all__ = ["Event", "EventModel", "LoggedEvent", "NoWaitBeforeSet"]

_INF = float("inf")


class LoggedEvent(Logged):
    """A multiprocessing Event: set, clear, wait."""

    kind = "event"

    def set(self) -> None:
        self._log.info("op", op="set", phase="invoke")
        self._raw.set()
        _returned = True  # a stop from here on waits for the ok line (see RETURNED)
        # The history sets the flag at the invoke line; in a virtual run the scheduler reads
        # it only with this request, so the flag is really set by then.
        self._turn()
        self._log.info("op", op="set", phase="ok")

    def clear(self) -> None:
        self._log.info("op", op="clear", phase="invoke")
        self._raw.clear()
        _returned = True
        self._turn()
        self._log.info("op", op="clear", phase="ok")

    def is_set(self) -> bool:
        return bool(self._raw.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set; with ``timeout`` (simulated minutes) give up after that long."""
        self._log.info("op", op="wait", phase="invoke", **limit(timeout))
        grant = self._turn(timeout)
        if grant is not None:
            flag = grant.do == "go" and self._raw.wait(0)
        else:
            seconds = None if timeout is None else self._clock.seconds(timeout)
            flag = self._raw.wait(seconds)
        _returned = True
        self._log.info("op", op="wait", phase="ok" if flag else "timeout")
        _returned = False  # the line is queued: a stop strikes where it lands again
        return bool(flag)


@dataclass(frozen=True)
class Event(PrimSpec[LoggedEvent]):
    """A flag that processes wait on until one of them sets it."""

    kind: ClassVar[str] = "event"

    def build(self, mp: BaseContext) -> Any:
        return mp.Event()


class EventModel(Model):
    """The flag and its waiters; a ``set`` wakes everybody waiting."""

    series: ClassVar[tuple[str, ...]] = ("set", "waiting")

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        self.flag = False
        self.waiting = 0
        self._wakes = Wakes()

    def ready(self, op: Operation) -> bool:
        return self.flag or op.invoke.op != "wait"

    def reading(self) -> Reading:
        flag = "● set" if self.flag else "○ clear"
        return Reading(float(self.flag), None, f"{flag}, {self.waiting} waiting")

    def invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name == "wait":
            self.waiting += 1
            self.set_gauge(waiting=self.waiting)
        elif name == "set":
            self.flag = True
            self.set_gauge(set=1)
            self._wakes.offer(op, self.waiting)
        elif name == "clear":
            self.flag = False
            self.set_gauge(set=0)

    def complete(self, op: Operation) -> None:
        done = op.done
        if op.invoke.op != "wait" or done is None:
            return
        self.waiting -= 1
        if done.phase == "ok":
            waker = self._wakes.take(op)
            if waker is not None:
                self.history.transfer(waker, op, "set")
        if self.waiting <= 0:
            self._wakes.clear()
        self.set_gauge(waiting=self.waiting)


class NoWaitBeforeSet(Check):
    """No ``wait`` returned ok while the flag was certainly clear for the whole wait.

    Without ``clear`` this is: no wait ``ok`` before the first ``set`` invoke. With ``clear`` it
    generalises: a wait that began after a ``clear`` had completed may only return ok if some
    ``set`` may have taken effect after that clear began, i.e. a set that was still in progress,
    or whose ``ok`` came after the clear's invoke.
    """

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prims = frozenset({prim})
        self.name = f"{prim}: no wait returned before a set"
        # Invoke time of the last clear that had completed; -inf stands for the initial state
        # (an Event starts clear, as if cleared before the run).
        self._cleared_at: tuple[float, int] = (-_INF, 0)
        # wait -> cleared_at at its invoke
        self._cleared_then: dict[Operation, tuple[float, int]] = {}
        self._setting = 0  # sets in progress
        self._last_set_ok: tuple[float, int] = (-_INF, 0)
        self._any_set = False
        self._returned = 0

    def on_invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name == "set":
            self._any_set = True
            self._setting += 1
        elif name == "wait":
            self._cleared_then[op] = self._cleared_at

    def on_op(self, op: Operation) -> None:
        done = op.done
        name = op.invoke.op
        if done is None:
            self._cleared_then.pop(op, None)
            return
        if name == "set":
            self._setting -= 1
            self._last_set_ok = done.at
        elif name == "clear":
            self._cleared_at = max(self._cleared_at, op.began)
        elif name == "wait":
            cleared_at = self._cleared_then.pop(op, self._cleared_at)
            if done.phase == "ok":
                self._returned_ok(op, cleared_at)

    def _returned_ok(self, op: Operation, cleared_at: tuple[float, int]) -> None:
        self._returned += 1
        # The latest moment a set seen so far may have taken effect; one still in progress may
        # take effect at any moment.
        reach = (_INF, 0) if self._setting > 0 else self._last_set_ok
        if self._any_set and reach >= cleared_at:
            return
        why = "after a clear, no set since" if self._any_set else "before any set"
        assert op.done is not None
        self.problems.add(
            f"{op.actor}: wait invoked at {op.start:.6f} s returned ok at {op.done.ts:.6f} s, {why}"
        )

    def verdict(self) -> Verdict:
        if not self._returned:
            return self.skip("no wait returned ok")
        return self.result(f"{self._returned} waits returned ok, none before a set")


def _checks(name: str, info: Any) -> list[Check]:
    return [NoWaitBeforeSet(name)]


KINDS = [
    Kind(
        "event",
        EventModel,
        Event,
        LoggedEvent,
        _checks,
        frozenset({"wait"}),
        display=Display((("set", "fill"), ("waiting", "--")),
                        "event flag and processes waiting for it", "processes", rank=3),
    )
]  # fmt: skip
