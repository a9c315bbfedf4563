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

    Without ``clear`` this is: no wait ``ok`` before the first ``set`` invoke. With ``clear`` it
    generalises: a wait that began after a ``clear`` had completed may only return ok if some
    ``set`` may have taken effect after that clear began, i.e. a set that was still in progress,
    or whose ``ok`` came after the clear's invoke.
    """

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: no wait returned before a set"
        # Invoke time of the last clear that had completed; -inf stands for the initial state
        # (an Event starts clear, as if cleared before the run).
        self._cleared_at = -_INF
        self._clear_began: dict[str, float] = {}
        self._wait_began: dict[str, tuple[float, float]] = {}  # actor -> (invoke ts, cleared_at)
        self._set_began: dict[str, float] = {}  # sets in progress, by actor
        self._last_set_ok = -_INF
        self._any_set = False
        self._returned = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase, actor, ts = event.get("op"), event.get("phase"), event["actor"], event["ts"]
        if op == "set":
            self._any_set = True
            if phase == "invoke":
                self._set_began[actor] = ts
            else:
                self._set_began.pop(actor, None)
                self._last_set_ok = ts
        elif op == "clear":
            if phase == "invoke":
                self._clear_began[actor] = ts
            else:
                self._cleared_at = max(self._cleared_at, self._clear_began.pop(actor, ts))
        elif op == "wait":
            if phase == "invoke":
                self._wait_began[actor] = (ts, self._cleared_at)
            else:
                began, cleared_at = self._wait_began.pop(actor, (ts, self._cleared_at))
                if phase == "ok":
                    self._returned_ok(actor, began, ts, cleared_at)

    def _returned_ok(self, actor: str, began: float, ts: float, cleared_at: float) -> None:
        self._returned += 1
        # The latest moment a set seen so far may have taken effect; one still in progress may
        # take effect at any moment.
        reach = _INF if self._set_began else self._last_set_ok
        if self._any_set and reach >= cleared_at:
            return
        self._count += 1
        if len(self._problems) < _SHOW:
            why = "after a clear, no set since" if self._any_set else "before any set"
            self._problems.append(
                f"{actor}: wait invoked at {began:.6f} s returned ok at {ts:.6f} s, {why}"
            )

    def verdict(self) -> Verdict:
        if not self._returned:
            return Verdict(self.name, "skip", "no wait returned ok")
        ok = f"{self._returned} waits returned ok, none before a set"
        return self._result(self._problems, self._count, ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The Event checks for primitive ``name``."""
    return [NoWaitBeforeSet(name)]
