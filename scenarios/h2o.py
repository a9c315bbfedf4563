"""Building H2O: hydrogen and oxygen atoms (one process each) bond in molecules of exactly two
hydrogens and one oxygen.

The solution from Downey's *Little Book of Semaphores*. ``hydrogens`` and ``oxygens`` (shared
Values, guarded by ``mutex``) count the atoms waiting. The atom that completes a molecule
(the second hydrogen next to an oxygen, or an oxygen next to two hydrogens) lets exactly two
hydrogens through ``hydro_queue`` and one oxygen through ``oxy_queue``, and keeps ``mutex``
locked. The three bond, then meet at a ``Barrier(3)``; the oxygen, once past it, unlocks
``mutex`` for the next molecule. So the three atoms of one molecule all bond before any atom
of the next: the ``bond`` events of the log, taken three at a time, are the molecules.
``mutex`` is a Semaphore, not a Lock, because the process that releases it (the oxygen) is
often not the one that took it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from sim import Actor, Analysis, Check, Ctx, Duration, Metric, RunConfig, Scenario, Semaphore
from sim import actors as numbered
from sim.checks import Verdict
from sim.primitives import Barrier, PrimSpec, Value
from sim.stats import describe

_SHOW = 3


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes. There are 2 x ``molecules`` hydrogen atoms and
    ``molecules`` oxygen atoms, so every atom finds partners."""

    molecules: Annotated[int, msgspec.Meta(ge=1)] = 6
    # Atoms arrive at uniformly random minutes of this window.
    arrive_within: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Minutes an atom takes to bond once let through: the time the others wait at the barrier.
    bond: Duration = Duration(dist="uniform", mean=2.0)


def _arrive(ctx: Ctx[Params]) -> None:
    ctx.sleep(ctx.rng.uniform(0.0, ctx.params.arrive_within))
    ctx.log.info("arrive")


def _release_molecule(ctx: Ctx[Params], hydrogens: Any, oxygens: Any) -> None:
    # Called with mutex held, by the atom that completes a molecule; mutex stays locked until
    # the molecule's oxygen has passed the barrier.
    hq, oq = ctx.prim("hydro_queue"), ctx.prim("oxy_queue")
    hq.release()
    hq.release()
    hydrogens.value -= 2
    oq.release()
    oxygens.value -= 1
    ctx.log.info("molecule")


def _bond(ctx: Ctx[Params]) -> None:
    ctx.log.info("bond")
    ctx.sleep(ctx.draw(ctx.params.bond))
    ctx.prim("barrier").wait()


def hydrogen(ctx: Ctx[Params]) -> None:
    """Arrive, wait for a partner hydrogen and an oxygen, bond."""
    mutex, hydrogens, oxygens = ctx.prim("mutex"), ctx.prim("hydrogens"), ctx.prim("oxygens")
    _arrive(ctx)
    mutex.acquire()
    waiting = hydrogens.value + 1
    hydrogens.value = waiting
    if waiting >= 2 and oxygens.value >= 1:
        _release_molecule(ctx, hydrogens, oxygens)
    else:
        mutex.release()
    ctx.prim("hydro_queue").acquire()
    _bond(ctx)


def oxygen(ctx: Ctx[Params]) -> None:
    """Arrive, wait for two hydrogens, bond, and unlock the way for the next molecule."""
    mutex, hydrogens, oxygens = ctx.prim("mutex"), ctx.prim("hydrogens"), ctx.prim("oxygens")
    _arrive(ctx)
    mutex.acquire()
    oxygens.value += 1
    if hydrogens.value >= 2:
        _release_molecule(ctx, hydrogens, oxygens)
    else:
        mutex.release()
    ctx.prim("oxy_queue").acquire()
    _bond(ctx)
    mutex.release()  # this molecule is complete: the next may form


def _primitives(p: Params) -> dict[str, PrimSpec]:
    return {
        "mutex": Semaphore(1),
        "hydrogens": Value("i", 0, lock=False),  # guarded by mutex
        "oxygens": Value("i", 0, lock=False),
        "hydro_queue": Semaphore(0),
        "oxy_queue": Semaphore(0),
        "barrier": Barrier(3),
    }


def _element(actor: str) -> str:
    return "O" if actor.startswith("oxygen") else "H"


class WellFormed(Check):
    """The ``bond`` events, three at a time in log order, are molecules of 2 H + 1 O."""

    name = "every molecule is 2 H + 1 O"
    events = frozenset({"bond"})

    def __init__(self) -> None:
        self._current: list[str] = []
        self._molecules = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        self._current.append(event["actor"])
        if len(self._current) < 3:
            return
        self._molecules += 1
        formula = Counter(_element(a) for a in self._current)
        if formula != Counter({"H": 2, "O": 1}):
            self._count += 1
            if len(self._problems) < _SHOW:
                self._problems.append(
                    f"molecule {self._molecules} ({', '.join(self._current)}, last at "
                    f"{event['ts']:.4f} s) has {formula['H']} H + {formula['O']} O"
                )
        self._current = []

    def verdict(self) -> Verdict:
        if not self._molecules and not self._current:
            return Verdict(self.name, "skip", "no atom bonded")
        problems, count = list(self._problems), self._count
        if self._current:
            count += 1
            problems.append(f"{len(self._current)} atoms bonded without a full molecule: "
                            + ", ".join(self._current))  # fmt: skip
        return self._result(problems[:_SHOW], count, f"{self._molecules} molecules of H2O")


class EveryAtomBonded(Check):
    """Every atom bonded exactly once."""

    name = "every atom bonded once"
    needs_completion = True
    events = frozenset({"bond"})

    def __init__(self, names: list[str]) -> None:
        self._bonds: Counter[str] = Counter(dict.fromkeys(names, 0))

    def feed(self, event: Mapping[str, Any]) -> None:
        self._bonds[event["actor"]] += 1

    def verdict(self) -> Verdict:
        if not self._bonds:
            return Verdict(self.name, "skip", "no atoms")
        wrong = [f"{a}: bonded {n} times" for a, n in sorted(self._bonds.items()) if n != 1]
        return self._result(wrong[:_SHOW], len(wrong), f"{len(self._bonds)} atoms")


class H2OAnalysis(Analysis):
    """Molecules formed and how long each kind of atom waited for partners."""

    def __init__(self, config: RunConfig) -> None:
        p: Params = config.params
        self._per_minute = config.clock.speedup / 60.0
        self._arrived: dict[str, float] = {}
        self._waits: dict[str, list[float]] = {"H": [], "O": []}
        self._bonds = 0
        self._checks: list[Check] = [WellFormed(), EveryAtomBonded([a.name for a in _atoms(p)])]

    def feed(self, event: Mapping[str, Any]) -> None:
        kind, actor, ts = event["event"], event["actor"], event["ts"]
        if kind == "arrive":
            self._arrived[actor] = ts
        elif kind == "bond":
            self._bonds += 1
            waited = (ts - self._arrived.pop(actor, ts)) * self._per_minute
            self._waits[_element(actor)].append(waited)

    def metrics(self) -> dict[str, Any]:
        return {
            "molecules": self._bonds // 3,
            **describe(self._waits["H"], "h_wait"),
            **describe(self._waits["O"], "o_wait"),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _atoms(p: Params) -> list[Actor]:
    return numbered("hydrogen", 2 * p.molecules, hydrogen) + numbered("oxygen", p.molecules, oxygen)


scenario = Scenario(
    name="h2o",
    description="H2O: hydrogen and oxygen processes bond 2 H + 1 O via semaphores and a Barrier",
    params=Params,
    primitives=_primitives,
    actors=_atoms,
    analysis=H2OAnalysis,
    metrics=(
        Metric("molecules", "molecules formed"),
        Metric("h_wait_mean", "hydrogen wait for partners, mean", "sim min"),
        Metric("h_wait_max", "hydrogen wait for partners, max", "sim min"),
        Metric("o_wait_mean", "oxygen wait for partners, mean", "sim min"),
        Metric("o_wait_max", "oxygen wait for partners, max", "sim min"),
    ),
)
