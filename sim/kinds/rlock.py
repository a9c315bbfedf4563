"""Re-entrant locks (kind ``rlock``): an owner and a depth.

An RLock's owner may acquire it again (depth + 1); every acquire needs a matching release
(depth - 1), and the lock is free again only at depth 0: only the outermost acquire..release
is a hold. Nobody else can acquire it meanwhile, and only the owner may release it:
``multiprocessing.RLock`` raises ``AssertionError`` for anybody else, which the wrapper logs as
``release`` ``fail``. The log brackets every operation: a process owns the lock from its
``acquire`` ``ok`` line, and a ``release`` is logged (``invoke``) before it takes effect, so the
depth counted from the log is exact. A synchronized ``Value``'s or ``Array``'s own lock
(``get_lock()``) is an RLock too, logged as ``<name>.lock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Hold, Operation

from ._base import Display, Holds, Kind, Model, PrimSpec, Reading, Wakes
from .semaphore import LEAKED, LeakedUnits, LoggedSemaphore

__all__ = ["OneOwner", "OwnerModel", "RLock", "ReleasedByOwner"]


@dataclass(frozen=True)
class RLock(PrimSpec[LoggedSemaphore]):
    """A re-entrant lock: its owner may acquire it again."""

    kind: ClassVar[str] = "rlock"

    def build(self, mp: BaseContext) -> Any:
        return mp.RLock()


class OwnerModel(Model):
    """Owner and depth of a re-entrant lock, followed from its acquires and releases."""

    series: ClassVar[tuple[str, ...]] = ("held", "waiting")

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        self.holds = Holds()
        self.owner: str | None = None
        self.depth = 0
        self.deepest = 0
        self.acquired = 0
        self.reentries = 0
        self.waiting = 0
        self._wakes = Wakes()
        # Releases whose invoke lowered the depth, until they return: (hold it ended, if any).
        self._releasing: dict[str, Hold | None] = {}
        #: Owners that ended (or died) holding it: it stays locked for good.
        self.dead: list[str] = []

    @property
    def capacity(self) -> int | None:
        return 1

    def abandoned(self) -> list[str]:
        return list(self.dead)

    def reading(self) -> Reading:
        assert self.holds is not None
        holders = ", ".join(self.holders()) or "nobody"
        deep = f" (depth {self.depth})" if self.depth > 1 else ""
        return Reading(len(self.holds), 1, f"held by {holders}{deep}, {self.waiting} waiting")

    def ready(self, op: Operation) -> bool:
        if op.invoke.op != "acquire":
            return True
        return self.owner is None or self.owner == op.invoke.actor

    def invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name == "acquire":
            self.waiting += 1
            self.set_gauge(waiting=self.waiting)
        elif name == "release":
            self._release(op)

    def _release(self, op: Operation) -> None:
        assert self.holds is not None
        actor = op.invoke.actor
        if actor == self.owner and self.depth > 0:
            self.depth -= 1
            ended = None
            if self.depth == 0:
                self.owner = None
                ended = self._let_go(op)
            self._releasing[actor] = ended
        elif self.holds.mine(actor):
            # Two owners at once (the log of a broken lock): this one lets go of its hold.
            self._releasing[actor] = self._let_go(op)

    def _let_go(self, op: Operation) -> Hold | None:
        """``op`` (a release, a condition's wait) gives the lock up, whatever the depth."""
        assert self.holds is not None
        mine = self.holds.mine(op.invoke.actor)
        if not mine:
            return None
        hold = mine[-1]
        self.history.close_hold(self, hold, op.invoke.ts)
        self.set_gauge(held=len(self.holds))
        if self.waiting > 0:
            self._wakes.offer(op, 1)
        return hold

    def complete(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        name, phase, actor = op.invoke.op, done.phase, op.invoke.actor
        if name == "acquire":
            self.waiting -= 1
            if phase == "ok":
                self._take(op, actor, done.ts)
            elif self.waiting <= 0:
                self._wakes.clear()
            self.set_gauge(waiting=self.waiting)
        elif name == "release":
            if actor not in self._releasing:
                return
            ended = self._releasing.pop(actor)
            if phase != "ok":
                # The release raised: nothing was given up.
                self.depth += 1
                self.owner = actor
                if ended is not None:
                    self.history.open_hold(self, actor, done.ts, ended.op)
                    self.set_gauge(held=len(self.holds or ()))

    def _take(self, op: Operation, actor: str, ts: float) -> None:
        self.acquired += 1
        if self.owner == actor:
            self.depth += 1
            self.reentries += 1
        else:
            waker = self._wakes.take(op)
            if waker is not None:
                self.history.transfer(waker, op, "unit")
            # Another owner still holds it only in a broken log: follow the newcomer, so that
            # one overlap is reported once, not at every later operation.
            self.owner = actor
            self.depth = 1
            self.history.open_hold(self, actor, ts, op)
            self.set_gauge(held=len(self.holds or ()))
        self.deepest = max(self.deepest, self.depth)

    def cut_short(self, op: Operation) -> None:
        if op.invoke.op == "acquire":
            self.waiting -= 1
            self.set_gauge(waiting=self.waiting)

    def actor_ended(self, actor: str, ts: float, died: bool) -> None:
        assert self.holds is not None
        for hold in list(self.holds.mine(actor)):
            # Nobody else can release an RLock: it stays locked for good (abandoned).
            self.history.close_hold(self, hold, ts, cut="died" if died else "ended")
            self.dead.append(actor)


class OneOwner(Check):
    """At most one process owns the RLock at a time; its owner may hold it several times."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: one owner at a time"

    def on_hold_start(self, hold: Hold) -> None:
        model = self.history.model(self.prim)
        assert model is not None
        assert model.holds is not None
        others = [h.actor for h in model.holds if h is not hold and h.actor != hold.actor]
        if others:
            self.problems.add(
                f"{hold.actor} acquired {self.prim} at {hold.start:.6f} s while {others[0]} "
                "still owned it"
            )

    def verdict(self) -> Verdict:
        model = self.history.model(self.prim)
        if not isinstance(model, OwnerModel) or not model.acquired:
            return self.skip(f"nobody acquired {self.prim}")
        ok = (
            f"{model.acquired} acquires ({model.reentries} re-entrant, nested up to depth "
            f"{model.deepest}), never two owners"
        )
        return self.result(ok)


class ReleasedByOwner(Check):
    """Every release that succeeded was made by the lock's owner, one per acquire.

    A release by anybody else must fail (``AssertionError`` from the RLock, logged ``fail``);
    one that returned ``ok`` is a violation.
    """

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: released only by its owner"
        # Releases begun by a process that did not own the lock, awaiting their outcome.
        self._foreign: dict[str, tuple[float, str | None]] = {}
        self._releases = 0
        self._refused = 0

    def on_invoke(self, op: Operation) -> None:
        if op.invoke.op != "release":
            return
        model = self.history.model(self.prim)
        assert isinstance(model, OwnerModel)
        if model.owner != op.actor or model.depth <= 0:
            self._foreign[op.actor] = (op.start, model.owner)

    def on_op(self, op: Operation) -> None:
        if op.invoke.op != "release" or op.done is None:
            return
        foreign = self._foreign.pop(op.actor, None)
        if op.done.phase != "ok":
            self._refused += foreign is not None
            return
        self._releases += 1
        if foreign is not None:
            ts, owner = foreign
            whose = f"owned by {owner}" if owner else "not held by anybody"
            self.problems.add(f"{op.actor} released {self.prim} at {ts:.6f} s while it was {whose}")

    def verdict(self) -> Verdict:
        if not self._releases and not self._refused:
            return self.skip(f"nobody released {self.prim}")
        ok = f"{self._releases} releases, each by the owner"
        if self._refused:
            ok += f"; {self._refused} by others refused by the lock"
        return self.result(ok)


def _wrap(name: str, raw: Any, log: Any, clock: Any) -> LoggedSemaphore:
    return LoggedSemaphore(name, raw, log, clock, "rlock")


def _checks(name: str, info: Any) -> list[Check]:
    return [OneOwner(name), ReleasedByOwner(name), LeakedUnits(name, 1)]


LOCK_DISPLAY = Display((("held", "fill"), ("waiting", "--")),
                       "locks held over time, processes waiting",
                       "locks held / processes waiting", rank=2, lock=True)  # fmt: skip
KINDS = [
    Kind(
        "rlock",
        OwnerModel,
        RLock,
        _wrap,
        _checks,
        frozenset({"acquire"}),
        display=LOCK_DISPLAY,
        phenomena=LEAKED,
    )
]
