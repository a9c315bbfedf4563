"""Invariants of a re-entrant lock (kind ``rlock``), from its op history alone.

An RLock has an owner and a depth. Its owner may acquire it again (depth + 1); every acquire
needs a matching release (depth - 1), and the lock is free again only at depth 0. Nobody else
can acquire it meanwhile, and only the owner may release it: ``multiprocessing.RLock`` raises
``AssertionError`` for anybody else, which the wrapper logs as ``release`` ``fail``.

The log brackets every operation: a process owns the lock from its ``acquire`` ``ok`` line, and
a ``release`` is logged (``invoke``) before it takes effect. So the depth counted from the log
is exact, and the next owner's ``acquire`` ``ok`` always comes after the last ``release``
``invoke`` of the one before. (Plain ``lock`` kinds are checked by ``sim.checks.SemaphoreBound``
with a bound of 1.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sim.checks import Check, Verdict

__all__ = ["OneOwner", "ReleasedByOwner", "checks_for"]

_SHOW = 3


class _Ownership:
    """Owner and depth of one RLock, followed from its ``acquire`` and ``release`` events."""

    def __init__(self) -> None:
        self.owner: str | None = None
        self.depth = 0
        self.deepest = 0

    def acquired(self, actor: str) -> str | None:
        """``actor`` got the lock; returns the other owner it shared it with, if any."""
        other = self.owner if self.owner not in (None, actor) else None
        if other is not None:
            # Follow the newcomer, so that one overlap is reported once, not at every later op.
            self.depth = 0
        self.owner = actor
        self.depth += 1
        self.deepest = max(self.deepest, self.depth)
        return other

    def releasing(self, actor: str) -> bool:
        """``actor`` begins a release; False if it does not own the lock."""
        if self.owner != actor or self.depth <= 0:
            return False
        self.depth -= 1
        if self.depth == 0:
            self.owner = None
        return True


class OneOwner(Check):
    """At most one process owns the RLock at a time; its owner may hold it several times."""

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: one owner at a time"
        self._state = _Ownership()
        self._acquires = 0
        self._reentries = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("prim") != self.prim or event.get("event") != "op":
            return
        op, phase, actor = event.get("op"), event.get("phase"), event["actor"]
        if op == "acquire" and phase == "ok":
            self._acquires += 1
            if self._state.owner == actor:
                self._reentries += 1
            other = self._state.acquired(actor)
            if other is not None:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{actor} acquired {self.prim} at {event['ts']:.6f} s while {other} "
                        "still owned it"
                    )
        elif op == "release" and phase == "invoke":
            self._state.releasing(actor)

    def verdict(self) -> Verdict:
        if not self._acquires:
            return Verdict(self.name, "skip", f"nobody acquired {self.prim}")
        ok = (
            f"{self._acquires} acquires ({self._reentries} re-entrant, nested up to depth "
            f"{self._state.deepest}), never two owners"
        )
        return self._result(self._problems, self._count, ok)


class ReleasedByOwner(Check):
    """Every release that succeeded was made by the lock's owner, one per acquire.

    A release by anybody else must fail (``AssertionError`` from the RLock, logged ``fail``);
    one that returned ``ok`` is a violation.
    """

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: released only by its owner"
        self._state = _Ownership()
        # Releases begun by a process that did not own the lock, awaiting their outcome.
        self._foreign: dict[str, tuple[float, str | None]] = {}
        self._releases = 0
        self._refused = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("prim") != self.prim or event.get("event") != "op":
            return
        op, phase, actor = event.get("op"), event.get("phase"), event["actor"]
        if op == "acquire" and phase == "ok":
            self._state.acquired(actor)
        elif op == "release" and phase == "invoke":
            owner = self._state.owner
            if not self._state.releasing(actor):
                self._foreign[actor] = (event["ts"], owner)
        elif op == "release":
            foreign = self._foreign.pop(actor, None)
            if phase != "ok":
                self._refused += foreign is not None
                return
            self._releases += 1
            if foreign is not None:
                self._count += 1
                if len(self._problems) < _SHOW:
                    ts, owner = foreign
                    whose = f"owned by {owner}" if owner else "not held by anybody"
                    self._problems.append(
                        f"{actor} released {self.prim} at {ts:.6f} s while it was {whose}"
                    )

    def verdict(self) -> Verdict:
        if not self._releases and not self._refused:
            return Verdict(self.name, "skip", f"nobody released {self.prim}")
        ok = f"{self._releases} releases, each by the owner"
        if self._refused:
            ok += f"; {self._refused} by others refused by the lock"
        return self._result(self._problems, self._count, ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The RLock checks for primitive ``name``."""
    return [OneOwner(name), ReleasedByOwner(name)]
