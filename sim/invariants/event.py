"""Invariants of an Event (kind ``event``), from its op history alone.

An Event is a flag, clear at the start. ``wait`` returns True (logged ``ok``) only if the flag
was set at some instant between the wait's ``invoke`` and its ``ok``. The log brackets every
operation: a ``set`` takes effect somewhere in [set invoke, set ok], so a waiter may legitimately
return *before* the setter has logged ``set ok``. The sound rule therefore measures against
``set`` invoke, never against ``set`` ok.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sim.checks import Check, Verdict

__all__ = ["NoWaitBeforeSet", "checks_for"]

_SHOW = 3
_INF = float("inf")


class NoWaitBeforeSet(Check):
    """No ``wait`` returned ok while the flag was certainly clear for the whole wait.

    Without ``clear`` this is: no wait ``ok`` before the first ``set`` invoke. With ``clear``
    it generalises: a wait that began after a ``clear`` had completed may only return ok if some
    ``set`` could have taken effect after that clear began, i.e. a set whose [invoke, ok]
    reaches past the clear's invoke and whose invoke precedes the wait's ok.
    """

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: no wait returned before a set"
        # Invoke time of the last clear that had completed; -inf stands for the initial state
        # (an Event starts clear, as if cleared before the run).
        self._cleared_at = -_INF
        self._wait_began: dict[str, tuple[float, float]] = {}  # actor -> (invoke ts, cleared_at)
        self._clear_began: dict[str, float] = {}
        self._set_began: dict[str, float] = {}
        # The latest moment any set seen so far may have taken effect (+inf while in progress);
        # None until the first set invoke.
        self._set_reach: float | None = None
        self._returned = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase, actor, ts = event.get("op"), event.get("phase"), event["actor"], event["ts"]
        if op == "set":
            if phase == "invoke":
                self._set_began[actor] = ts
                self._set_reach = _INF
            else:
                self._set_began.pop(actor, None)
                pending = _INF if self._set_began else ts
                self._set_reach = (
                    pending if self._set_reach == _INF else max(self._set_reach or ts, pending)
                )
        elif op == "clear":
            if phase == "invoke":
                self._clear_began[actor] = ts
            else:
                self._cleared_at = max(self._cleared_at, self._clear_began.pop(actor, ts))
        elif op == "wait":
            if phase == "invoke":
                self._wait_began[actor] = (ts, self._cleared_at)
                return
            began, cleared_at = self._wait_began.pop(actor, (ts, self._cleared_at))
            if phase != "ok":
                return
            self._returned += 1
            if self._set_reach is None or self._set_reach < cleared_at:
                self._count += 1
                if len(self._problems) < _SHOW:
                    why = (
                        "before any set"
                        if self._set_reach is None
                        else "after a clear, before the next set"
                    )
                    self._problems.append(
                        f"{actor}'s wait (invoked at {began:.6f} s) returned at {ts:.6f} s {why}"
                    )

    def verdict(self) -> Verdict:
        if not self._returned:
            return Verdict(self.name, "skip", "no wait returned ok")
        ok = f"{self._returned} waits returned, none before a set"
        return self._result(self._problems, self._count, ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The Event checks for primitive ``name``."""
    return [NoWaitBeforeSet(name)]
