"""Invariants of a Condition (kind ``condition``), from its op history alone.

A Condition is a lock plus a waiting room. ``LoggedCondition`` logs ``wait`` invoke just before
the wait gives the lock up and ``wait`` ok/timeout once it has the lock back, and ``release``
invoke before the lock is released. So from the log, an actor holds the lock from ``acquire`` ok
to ``release`` invoke, and again from ``wait`` ok (or ``timeout``) to its next ``wait`` invoke or
``release`` invoke. The lock of ``multiprocessing.Condition()`` is an RLock: its owner may
acquire it again, and ``wait`` gives every level up at once and takes them all back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sim.checks import Check, Verdict

__all__ = ["NotifiedAfterNotify", "OneHolder", "WaitWithLock", "checks_for"]

_SHOW = 3


class _Holders:
    """Who holds the condition's lock, and how deep (re-entrant acquires), event by event."""

    def __init__(self) -> None:
        self.depth: dict[str, int] = {}
        self._saved: dict[str, int] = {}  # levels a waiting actor gave up, to take back
        self._released: dict[str, bool] = {}  # release invoked: did it drop a level?

    def holds(self, actor: str) -> bool:
        return self.depth.get(actor, 0) > 0

    def others(self, actor: str) -> list[str]:
        return sorted(a for a, d in self.depth.items() if d > 0 and a != actor)

    def feed(self, op: Any, phase: Any, actor: str) -> None:
        depth = self.depth.get(actor, 0)
        if op == "acquire" and phase == "ok":
            self.depth[actor] = depth + 1
        elif op == "release":
            if phase == "invoke":
                self._released[actor] = depth > 0
                self.depth[actor] = max(depth - 1, 0)
            elif phase == "fail" and self._released.pop(actor, False):
                self.depth[actor] = depth + 1  # the release raised: the lock is still held
        elif op == "wait":
            if phase == "invoke":
                self._saved[actor] = depth
                self.depth[actor] = 0
            elif phase == "fail":
                # The wait raised (called without the lock): nothing was given up or taken back.
                self.depth[actor] = self._saved.pop(actor, 0)
            else:
                self.depth[actor] = self._saved.pop(actor, 1)


class OneHolder(Check):
    """Mutual exclusion: at most one actor holds the condition's lock at any moment."""

    def __init__(self, prim: str) -> None:
        self.prims = frozenset({prim})
        self.name = f"{prim}: one holder of the lock at a time"
        self._holders = _Holders()
        self._entries = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase, actor = event.get("op"), event.get("phase"), event["actor"]
        entering = (op == "acquire" and phase == "ok") or (
            op == "wait" and phase in ("ok", "timeout")
        )
        if entering and not self._holders.holds(actor):
            self._entries += 1
            others = self._holders.others(actor)
            if others:
                self._count += 1
                if len(self._problems) < _SHOW:
                    how = "acquired it" if op == "acquire" else f"came back from wait ({phase})"
                    self._problems.append(
                        f"{actor} {how} at {event['ts']:.6f} s while {', '.join(others)} held it"
                    )
        self._holders.feed(op, phase, actor)

    def verdict(self) -> Verdict:
        if not self._entries:
            return Verdict(self.name, "skip", "nobody took the lock")
        ok = f"{self._entries} times taken (acquire or back from wait), never by two at once"
        return self._result(self._problems, self._count, ok)


class WaitWithLock(Check):
    """``wait``, ``notify`` and ``notify_all`` are only called by the lock's holder."""

    def __init__(self, prim: str) -> None:
        self.prims = frozenset({prim})
        self.name = f"{prim}: wait and notify only while holding the lock"
        self._holders = _Holders()
        self._calls = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase, actor = event.get("op"), event.get("phase"), event["actor"]
        if op in ("wait", "notify", "notify_all") and phase == "invoke":
            self._calls += 1
            if not self._holders.holds(actor):
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{actor} called {op} at {event['ts']:.6f} s without holding the lock"
                    )
        self._holders.feed(op, phase, actor)

    def verdict(self) -> Verdict:
        if not self._calls:
            return Verdict(self.name, "skip", "no wait or notify")
        ok = f"{self._calls} waits and notifies, each by the lock's holder"
        return self._result(self._problems, self._count, ok)


class NotifiedAfterNotify(Check):
    """A wait that returns ok (notified, not timed out) was woken by a notify: some ``notify``
    or ``notify_all`` was invoked between the wait's invoke and its ok. (The waiter logs its
    invoke before giving the lock up, and a notifier must hold the lock, so a notify meant for
    it is always invoked after that line.)"""

    def __init__(self, prim: str) -> None:
        self.prims = frozenset({prim})
        self.name = f"{prim}: every wake-up follows a notify"
        self._began: dict[str, float] = {}
        self._last_notify = float("-inf")
        self._woken = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase, actor, ts = event.get("op"), event.get("phase"), event["actor"], event["ts"]
        if op in ("notify", "notify_all") and phase == "invoke":
            self._last_notify = ts
        elif op == "wait" and phase == "invoke":
            self._began[actor] = ts
        elif op == "wait":
            began = self._began.pop(actor, None)
            if phase != "ok" or began is None:
                return
            self._woken += 1
            if self._last_notify <= began:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{actor} woke at {ts:.6f} s with no notify since its wait at {began:.6f} s"
                    )

    def verdict(self) -> Verdict:
        if not self._woken:
            return Verdict(self.name, "skip", "no wait was notified")
        ok = f"{self._woken} wake-ups, each after a notify"
        return self._result(self._problems, self._count, ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The Condition checks for primitive ``name``."""
    return [OneHolder(name), WaitWithLock(name), NotifiedAfterNotify(name)]
