"""Condition variables (kind ``condition``): a lock plus a waiting room.

``multiprocessing.Condition()``'s lock is an RLock: its owner may acquire it again, and
``wait`` gives every level up at once and takes them all back. The wrapper logs ``wait``
invoke just before the wait gives the lock up and ``wait`` ok/timeout once it has the lock
back, and ``release`` invoke before the lock is released. So from the log, an actor holds the
lock from ``acquire`` ok to ``release`` invoke, and again from ``wait`` ok (or ``timeout``) to
its next ``wait`` invoke or ``release`` invoke. A ``wait`` without the lock raises at once
(logged ``fail``): nothing is given up or taken back.

Which waiter a ``notify`` wakes is up to the operating system (the waiters race for an
internal semaphore); the log shows who did wake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Hold, Operation

from ._base import Display, Kind, PrimSpec, Reading, Wakes
from .rlock import OwnerModel
from .semaphore import LoggedSemaphore

__all__ = [
    "Condition",
    "ConditionModel",
    "LoggedCondition",
    "NotifiedAfterNotify",
    "OneHolder",
    "WaitWithLock",
]


class LoggedCondition(LoggedSemaphore):
    """A Condition: its lock (acquire/release, ``with``), wait, wait_for, notify, notify_all.

    ``wait`` releases the lock while it waits: in the log the holder is gone from ``wait``
    invoke until ``wait`` ok/timeout, which is when it holds the lock again.
    """

    def __init__(self, name: str, raw: Any, log: Any, clock: Any) -> None:
        super().__init__(name, raw, log, clock, "condition")

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock and block until notified (or ``timeout`` simulated minutes)."""
        seconds = None if timeout is None else self._clock.seconds(timeout)
        if timeout is None:
            self._log.info("op", op="wait", phase="invoke")
        else:
            self._log.info("op", op="wait", phase="invoke", timeout=timeout)
        if self._clock.gate is not None:
            notified = self._wait_virtual(timeout)
        else:
            notified = self._call("wait", self._raw.wait, seconds)
        _returned = True  # a stop from here on waits for the line below (see RETURNED)
        self._log.info("op", op="wait", phase="ok" if notified else "timeout")
        _returned = False  # the line is queued: a stop strikes where it lands again
        return bool(notified)

    def _wait_virtual(self, timeout: float | None) -> bool:
        # Which waiter a real notify wakes is up to the operating system; in a virtual run the
        # scheduler decides it. So only the lock is the real one here: it is given up (every
        # level of it) before this wait's turn is asked for, and taken back when it comes.
        lock = self._raw._lock
        depth = lock._semlock._count() if lock._semlock._is_mine() else 0
        if depth == 0:
            self._call("wait", self._raw.wait, 0)  # raises, as a wait without the lock does
        for _ in range(depth):
            lock.release()
        grant = self._turn(timeout)
        for _ in range(depth):
            lock.acquire(False)
        return grant is not None and grant.do == "go"

    def _call(self, op: str, method: Any, *args: Any) -> Any:
        # multiprocessing raises AssertionError (or RuntimeError) when the lock is not held:
        # close the operation in the log so that it does not look blocked forever.
        try:
            return method(*args)
        except (AssertionError, RuntimeError) as exc:
            _returned = True
            self._log.info("op", op=op, phase="fail", error=f"{type(exc).__name__}: {exc}")
            raise

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` is true; every wait on the way is logged."""
        deadline = None if timeout is None else self._clock.now() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - self._clock.now()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return bool(result)

    def notify(self, n: int = 1) -> None:
        self._log.info("op", op="notify", phase="invoke", n=n)
        self._notify("notify", self._raw.notify, n)

    def notify_all(self) -> None:
        self._log.info("op", op="notify_all", phase="invoke")
        self._notify("notify_all", self._raw.notify_all)

    def _notify(self, op: str, method: Any, *args: Any) -> None:
        grant = self._turn()
        if grant is None:
            self._call(op, method, *args)
            _returned = True
            self._log.info("op", op=op, phase="ok")
            return
        if not self._raw._lock._semlock._is_mine():
            self._call(op, method, *args)  # raises, as a notify without the lock does
        _returned = True
        # The scheduler chose whom this wakes; the log says so.
        self._log.info("op", op=op, phase="ok", woke=grant.extra.get("woke", []))


@dataclass(frozen=True)
class Condition(PrimSpec[LoggedCondition]):
    """A condition variable with its own lock: wait until notified, notify one or all."""

    kind: ClassVar[str] = "condition"

    def build(self, mp: BaseContext) -> Any:
        return mp.Condition()


class ConditionModel(OwnerModel):
    """The lock of a Condition (as an RLock), and who is in ``wait``."""

    series: ClassVar[tuple[str, ...]] = ("held", "waiting", "in wait")

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        # Waiters and the depth each gave up, to take back when it returns (in wait order).
        self.sleeping: dict[str, int] = {}
        # Waiters a notify woke and that have not returned yet (as the notify's ``woke`` says:
        # a virtual run's scheduler chose them; a wall run does not know).
        self.notified: set[str] = set()
        self._notified = Wakes()

    def ready(self, op: Operation) -> bool:
        name = op.invoke.op
        if name == "wait":
            return op.invoke.actor in self.notified and self.owner is None
        return super().ready(op)

    def ready_to_give_up(self, op: Operation) -> bool:
        # A wait that timed out still takes the lock back before it returns.
        return self.owner is None or op.invoke.op != "wait"

    def grant(self, op: Operation, pick: Any) -> dict[str, Any]:
        name = op.invoke.op
        if name not in ("notify", "notify_all"):
            return {}
        waiters = [a for a in self.sleeping if a not in self.notified]
        n = op.invoke.n
        count = len(waiters) if name == "notify_all" else min(n if type(n) is int else 1,
                                                              len(waiters))  # fmt: skip
        return {"woke": pick(waiters, count) if count else []}

    def reading(self) -> Reading:
        assert self.holds is not None
        holders = ", ".join(self.holders()) or "nobody"
        return Reading(len(self.holds), 1, f"held by {holders}, {self.waiting} waiting, "
                       f"{len(self.sleeping)} in wait")  # fmt: skip

    def invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name == "wait":
            actor = op.invoke.actor
            if self.owner == actor and self.depth > 0:
                self.sleeping[actor] = self.depth
                self.owner, self.depth = None, 0
                self._let_go(op)
                self.set_gauge(**{"in wait": len(self.sleeping)})
        elif name in ("notify", "notify_all"):
            waiters = len(self.sleeping)
            n = op.invoke.n
            count = waiters if name == "notify_all" else min(n if type(n) is int else 1, waiters)
            self._notified.offer(op, count)
        else:
            super().invoke(op)

    def complete(self, op: Operation) -> None:
        name = op.invoke.op
        if name in ("notify", "notify_all"):
            woke = op.done.get("woke") if op.done is not None else None
            if isinstance(woke, list):
                self.notified.update(w for w in woke if isinstance(w, str))
            return
        if name != "wait":
            super().complete(op)
            return
        done = op.done
        assert done is not None
        actor = op.invoke.actor
        self.notified.discard(actor)
        depth = self.sleeping.pop(actor, None)
        if depth is None:
            return  # the wait raised (no lock): nothing was given up or taken back
        if not self.sleeping:
            self._notified.clear()
        if done.phase == "ok":
            waker = self._notified.take(op)
            if waker is not None:
                self.history.transfer(waker, op, "notify")
        self.owner, self.depth = actor, depth
        self.history.open_hold(self, actor, done.ts, op)
        self.set_gauge(held=len(self.holds or ()), **{"in wait": len(self.sleeping)})

    def actor_ended(self, actor: str, ts: float, died: bool) -> None:
        self.sleeping.pop(actor, None)
        self.notified.discard(actor)
        super().actor_ended(actor, ts, died)


class OneHolder(Check):
    """Mutual exclusion: at most one actor holds the condition's lock at any moment."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: one holder of the lock at a time"
        self._entries = 0

    def on_hold_start(self, hold: Hold) -> None:
        self._entries += 1
        model = self.history.model(self.prim)
        assert model is not None
        assert model.holds is not None
        others = sorted(h.actor for h in model.holds if h is not hold and h.actor != hold.actor)
        if others:
            op = hold.op
            how = "acquired it"
            if op is not None and op.invoke.op == "wait" and op.done is not None:
                how = f"came back from wait ({op.done.phase})"
            self.problems.add(
                f"{hold.actor} {how} at {hold.start:.6f} s while {', '.join(others)} held it"
            )

    def verdict(self) -> Verdict:
        if not self._entries:
            return self.skip("nobody took the lock")
        return self.result(
            f"{self._entries} times taken (acquire or back from wait), never by two at once"
        )


class WaitWithLock(Check):
    """``wait``, ``notify`` and ``notify_all`` are only called by the lock's holder."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: wait and notify only while holding the lock"
        self._calls = 0

    def on_invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name not in ("wait", "notify", "notify_all"):
            return
        self._calls += 1
        model = self.history.model(self.prim)
        assert isinstance(model, ConditionModel)
        if model.owner != op.actor:
            self.problems.add(f"{op.actor} called {name} at {op.start:.6f} s without holding "
                              "the lock")  # fmt: skip

    def verdict(self) -> Verdict:
        if not self._calls:
            return self.skip("no wait or notify")
        return self.result(f"{self._calls} waits and notifies, each by the lock's holder")


class NotifiedAfterNotify(Check):
    """A wait that returns ok (notified, not timed out) was woken by a notify: some ``notify``
    or ``notify_all`` was invoked between the wait's invoke and its ok. (The waiter logs its
    invoke before giving the lock up, and a notifier must hold the lock, so a notify meant for
    it is always invoked after that line.)"""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prims = frozenset({prim})
        self.name = f"{prim}: every wake-up follows a notify"
        self._last_notify: tuple[float, int] = (float("-inf"), 0)
        self._woken = 0

    def on_invoke(self, op: Operation) -> None:
        if op.invoke.op in ("notify", "notify_all"):
            self._last_notify = op.began

    def on_op(self, op: Operation) -> None:
        done = op.done
        if op.invoke.op != "wait" or done is None or done.phase != "ok":
            return
        self._woken += 1
        if self._last_notify <= op.began:
            self.problems.add(
                f"{op.actor} woke at {done.ts:.6f} s with no notify since its wait at "
                f"{op.start:.6f} s"
            )

    def verdict(self) -> Verdict:
        if not self._woken:
            return self.skip("no wait was notified")
        return self.result(f"{self._woken} wake-ups, each after a notify")


def _checks(name: str, info: Any) -> list[Check]:
    return [OneHolder(name), WaitWithLock(name), NotifiedAfterNotify(name)]


KINDS = [
    Kind(
        "condition",
        ConditionModel,
        Condition,
        LoggedCondition,
        _checks,
        frozenset({"acquire", "wait"}),
        display=Display(
            (("held", "fill"), ("waiting", "--"), ("in wait", ":")),
            "the condition's lock over time: held, waiting for it, waiting in wait()",
            "processes",
            rank=2,
            lock=True,
        ),
    )
]
