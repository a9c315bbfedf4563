"""Dining philosophers: n philosophers, n forks (Locks), and three ways to pick the forks up.

``naive``: left fork, then right fork. If every philosopher holds a left fork, each waits for
a right fork that its neighbour will never put down: a deadlock, which the engine detects.
``ordered``: the lower-numbered fork first. The cycle of waits cannot close: no deadlock.
``waiter``: a Semaphore(n-1) admits at most n-1 philosophers to the table at once, so at least
one of them can always get both forks.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    History,
    Line,
    Lock,
    Metric,
    PrimSpec,
    RunConfig,
    Scenario,
    Semaphore,
    States,
    Verdict,
    describe,
)
from sim import actors as numbered


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes."""

    philosophers: Annotated[int, msgspec.Meta(ge=2)] = 5
    meals: Annotated[int, msgspec.Meta(ge=1)] = 5
    strategy: Literal["naive", "ordered", "waiter"] = "ordered"
    think: Duration = Duration(dist="exponential", mean=10.0)
    eat: Duration = Duration(dist="exponential", mean=10.0)
    # Minutes between taking the first fork and reaching for the second: the window in which
    # a neighbour can take the other one.
    hesitate: Annotated[float, msgspec.Meta(ge=0)] = 1.0


def _forks(i: int, n: int) -> tuple[int, int]:
    return i, (i + 1) % n


def philosopher(ctx: Ctx[Params]) -> None:
    """Think, take two forks, eat, put them down; ``meals`` times."""
    p = ctx.params
    left, right = _forks(ctx.index, p.philosophers)
    first, second = (
        (min(left, right), max(left, right)) if p.strategy == "ordered" else (left, right)
    )
    forks = ctx.prim(f"fork-{first}", Lock), ctx.prim(f"fork-{second}", Lock)
    waiter = ctx.prim("waiter", Semaphore) if p.strategy == "waiter" else None
    for meal in range(p.meals):
        ctx.sleep(ctx.draw(p.think))
        ctx.log.info("hungry", meal=meal)
        if waiter is not None:
            waiter.acquire()
        forks[0].acquire()
        ctx.sleep(p.hesitate)
        forks[1].acquire()
        ctx.log.info("eat", meal=meal)
        ctx.sleep(ctx.draw(p.eat))
        forks[1].release()
        forks[0].release()
        if waiter is not None:
            waiter.release()
        ctx.log.info("done_eating", meal=meal)


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    prims: dict[str, PrimSpec[Any]] = {f"fork-{i}": Lock() for i in range(p.philosophers)}
    if p.strategy == "waiter":
        prims["waiter"] = Semaphore(p.philosophers - 1)
    return prims


class EveryoneAte(Check):
    """Every philosopher ate every meal: nobody starved."""

    name = "every philosopher ate every meal"
    needs_completion = True
    events = frozenset({"eat"})

    def __init__(self, names: list[str], meals: int) -> None:
        super().__init__()
        self._meals = meals
        self._ate: Counter[str] = Counter(dict.fromkeys(names, 0))

    def on_line(self, line: Line) -> None:
        self._ate[line.actor] += 1

    def verdict(self) -> Verdict:
        faulted = self.history.faulted
        for a, n in sorted(self._ate.items()):
            if n != self._meals and a not in faulted:
                self.problems.add(f"{a}: {n} of {self._meals}")
        cut = sorted(a for a in faulted if a in self._ate)
        ok = f"{sum(self._ate.values())} meals"
        return self.result(ok + (f" ({', '.join(cut)} hit by a fault)" if cut else ""))


class PhilosophersAnalysis(Analysis[Params]):
    """Meals, and how long each philosopher was hungry before eating."""

    events = frozenset({"hungry", "eat"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        self._hungry: dict[str, float] = {}
        self._waits: list[float] = []
        self._checks = [EveryoneAte([a.name for a in _actors(self.params)], self.params.meals)]

    def on_line(self, line: Line) -> None:
        if line.event == "hungry":
            self._hungry[line.actor] = line.ts
        else:
            started = self._hungry.pop(line.actor, line.ts)
            self._waits.append(self.minutes(line.ts - started))

    def metrics(self) -> dict[str, Any]:
        return {"meals": len(self._waits), **describe(self._waits, "hungry")}

    def checks(self) -> list[Check]:
        return list(self._checks)


def _actors(p: Params) -> list[Actor]:
    return numbered("phil", p.philosophers, philosopher)


scenario = Scenario(
    name="philosophers",
    description="Dining philosophers: forks as Locks; naive deadlocks, ordered and waiter do not",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=PhilosophersAnalysis,
    states=States(
        on={"hungry": "hungry", "eat": "eating", "done_eating": "thinking"},
        start={"philosopher": "thinking"},
        tones={"hungry": "asking", "eating": "using", "thinking": "idle"},
    ),
    metrics=(
        Metric("meals", "meals eaten"),
        *Metric.stats("hungry", "hungry until eating", "sim min"),
    ),
)
