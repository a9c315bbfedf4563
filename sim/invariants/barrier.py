"""Invariants of a Barrier (kind ``barrier``), from its op history alone.

A ``Barrier(parties)`` lets waiting processes through in *generations*: the ``parties``-th
arrival releases everyone who is waiting, and ``wait`` returns each of them its arrival index,
0 .. parties-1 (the wrapper logs it as ``index`` on the ``ok`` line). Nobody passes before
``parties`` have arrived, and a generation is complete: exactly ``parties`` waits return, with
the indices 0 .. parties-1 once each.

The log brackets every wait: a process arrives after its ``invoke`` line and leaves before its
``ok`` line. So in one generation every ``invoke`` comes before every ``ok`` (the moment of
release lies between them). Across generations the lines of a slow process may come late: a
process released in generation g can log its ``ok`` after processes of generation g+1 have
logged theirs, when more than ``parties`` processes share the barrier. The checks therefore
group the returns into generations by what the log proves, not by the order of ``ok`` lines:
a return joins the oldest open generation whose index it fills and whose first return came
after its own ``invoke``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.checks import Check, Verdict

__all__ = ["Generations", "checks_for"]

_SHOW = 3


@dataclass(frozen=True)
class _Return:
    actor: str
    invoke: float
    ok: float
    index: int


@dataclass
class _Generation:
    number: int
    first_ok: float
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
        self.prim = prim
        self.parties = parties
        self.prims = frozenset({prim})
        # "stopping": a run stopped by the engine may end with a generation half logged.
        self.events = frozenset({"stopping"})
        self.name = f"{prim}: generations of {parties}"
        self._invoked: dict[str, float] = {}
        self._invokes = 0
        self._returns = 0
        self._broken = 0
        self._open: list[_Generation] = []
        self._complete = 0
        self._stopped = False
        self._problems: list[str] = []
        self._count = 0

    def _problem(self, text: str) -> None:
        self._count += 1
        if len(self._problems) < _SHOW:
            self._problems.append(text)

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") == "stopping":
            self._stopped = True
            return
        if event.get("prim") != self.prim or event.get("op") != "wait":
            return
        actor, phase, ts = event["actor"], event.get("phase"), event["ts"]
        if phase == "invoke":
            self._invoked[actor] = ts
            self._invokes += 1
            return
        invoke = self._invoked.pop(actor, ts)
        if phase != "ok":
            self._broken += 1  # BrokenBarrierError or a timeout: no generation to join
            return
        self._returns += 1
        needed = self.parties * math.ceil(self._returns / self.parties)
        if self._invokes < needed:
            self._problem(
                f"{actor} passed at {ts:.6f} s when only {self._invokes} waits had begun; "
                f"return {self._returns} needs {needed}"
            )
        index = event.get("index")
        if not isinstance(index, int) or not 0 <= index < self.parties:
            self._problem(
                f"{actor} returned index {index!r} at {ts:.6f} s, not 0..{self.parties - 1}"
            )
            return
        self._place(_Return(actor, invoke, ts, index))

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
            return Verdict(self.name, "skip", f"no wait on {self.prim} returned")
        problems, count = list(self._problems), self._count
        if not self._stopped:
            for gen in self._open:
                count += 1
                if len(problems) < _SHOW:
                    who = ", ".join(
                        f"{r.actor} (index {i})" for i, r in sorted(gen.members.items())
                    )
                    problems.append(
                        f"generation {gen.number} has {len(gen.members)} returns instead of "
                        f"{self.parties}: {who} passed from {gen.first_ok:.6f} s, and no other "
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
        return self._result(problems, count, ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The Barrier checks for primitive ``name`` (``info`` carries ``parties``)."""
    parties = info.get("parties")
    if not isinstance(parties, int) or parties < 1:
        return []
    return [Generations(name, parties)]
