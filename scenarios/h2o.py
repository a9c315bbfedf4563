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
from typing import Annotated, Any

import msgspec

from sim import (
    Actor,
    Analysis,
    Barrier,
    Check,
    Ctx,
    Duration,
    History,
    Line,
    LoggedValue,
    Metric,
    PrimSpec,
    RunConfig,
    Scenario,
    Semaphore,
    States,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered


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


def _release_molecule(ctx: Ctx[Params], hydrogens: LoggedValue, oxygens: LoggedValue) -> None:
    # Called with mutex held, by the atom that completes a molecule; mutex stays locked until
    # the molecule's oxygen has passed the barrier.
    hq, oq = ctx.prim("hydro_queue", Semaphore), ctx.prim("oxy_queue", Semaphore)
    hq.release()
    hq.release()
    hydrogens.value -= 2
    oq.release()
    oxygens.value -= 1
    ctx.log.info("molecule")


def _bond(ctx: Ctx[Params]) -> None:
    ctx.log.info("bond")
    ctx.sleep(ctx.draw(ctx.params.bond))
    ctx.prim("barrier", Barrier).wait()


def hydrogen(ctx: Ctx[Params]) -> None:
    """Arrive, wait for a partner hydrogen and an oxygen, bond."""
    mutex = ctx.prim("mutex", Semaphore)
    hydrogens, oxygens = ctx.prim("hydrogens", Value), ctx.prim("oxygens", Value)
    _arrive(ctx)
    mutex.acquire()
    waiting = hydrogens.value + 1
    hydrogens.value = waiting
    if waiting >= 2 and oxygens.value >= 1:
        _release_molecule(ctx, hydrogens, oxygens)
    else:
        mutex.release()
    ctx.prim("hydro_queue", Semaphore).acquire()
    _bond(ctx)


def oxygen(ctx: Ctx[Params]) -> None:
    """Arrive, wait for two hydrogens, bond, and unlock the way for the next molecule."""
    mutex = ctx.prim("mutex", Semaphore)
    hydrogens, oxygens = ctx.prim("hydrogens", Value), ctx.prim("oxygens", Value)
    _arrive(ctx)
    mutex.acquire()
    oxygens.value += 1
    if hydrogens.value >= 2:
        _release_molecule(ctx, hydrogens, oxygens)
    else:
        mutex.release()
    ctx.prim("oxy_queue", Semaphore).acquire()
    _bond(ctx)
    mutex.release()  # this molecule is complete: the next may form


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
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
        super().__init__()
        self._current: list[str] = []
        self._molecules = 0

    def on_line(self, line: Line) -> None:
        self._current.append(line.actor)
        if len(self._current) < 3:
            return
        self._molecules += 1
        formula = Counter(_element(a) for a in self._current)
        if formula != Counter({"H": 2, "O": 1}):
            self.problems.add(
                f"molecule {self._molecules} ({', '.join(self._current)}, last at "
                f"{line.ts:.4f} s) has {formula['H']} H + {formula['O']} O"
            )
        self._current = []

    def verdict(self) -> Verdict:
        if not self._molecules and not self._current:
            return self.skip("no atom bonded")
        if self._current:
            self.problems.add(f"{len(self._current)} atoms bonded without a full molecule: "
                              + ", ".join(self._current))  # fmt: skip
        return self.result(f"{self._molecules} molecules of H2O")


class EveryAtomBonded(Check):
    """Every atom bonded exactly once."""

    name = "every atom bonded once"
    needs_completion = True
    events = frozenset({"bond"})

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self._bonds: Counter[str] = Counter(dict.fromkeys(names, 0))

    def on_line(self, line: Line) -> None:
        self._bonds[line.actor] += 1

    def verdict(self) -> Verdict:
        if not self._bonds:
            return self.skip("no atoms")
        for a, n in sorted(self._bonds.items()):
            if n != 1:
                self.problems.add(f"{a}: bonded {n} times")
        return self.result(f"{len(self._bonds)} atoms")


class H2OAnalysis(Analysis[Params]):
    """Molecules formed and how long each kind of atom waited for partners."""

    events = frozenset({"arrive", "bond"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        self._arrived: dict[str, float] = {}
        self._waits: dict[str, list[float]] = {"H": [], "O": []}
        self._bonds = 0
        self._checks: list[Check] = [
            WellFormed(),
            EveryAtomBonded([a.name for a in _atoms(self.params)]),
        ]

    def on_line(self, line: Line) -> None:
        actor, ts = line.actor, line.ts
        if line.event == "arrive":
            self._arrived[actor] = ts
            return
        self._bonds += 1
        waited = self.minutes(ts - self._arrived.pop(actor, ts))
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
    states=States(
        on={"arrive": "waiting for partners", "molecule": "releasing", "bond": "bonding"},
        start={"hydrogen": "floating", "oxygen": "floating"},
        tones={
            "waiting for partners": "asking",
            "bonding": "using",
            "releasing": "using",
            "floating": "idle",
        },
    ),
    metrics=(
        Metric("molecules", "molecules formed"),
        *Metric.stats("h_wait", "hydrogen wait for partners", "sim min", show=("mean", "max")),
        *Metric.stats("o_wait", "oxygen wait for partners", "sim min", show=("mean", "max")),
    ),
)
