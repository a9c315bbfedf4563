"""Dining philosophers: n philosophers, n forks (Locks), and three ways to pick the forks up.

``naive``: left fork, then right fork. If every philosopher holds a left fork, each waits for
a right fork that its neighbour will never put down: a deadlock, which the engine detects.
``ordered``: the lower-numbered fork first. The cycle of waits cannot close: no deadlock.
``waiter``: a Semaphore(n-1) admits at most n-1 philosophers to the table at once, so at least
one of them can always get both forks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from sim import Analysis, Check, Ctx, Duration, Lock, Metric, RunConfig, Scenario, Semaphore
from sim import actors as numbered
from sim.checks import Verdict
from sim.primitives import PrimSpec
from sim.stats import describe


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
    forks = ctx.prim(f"fork-{first}"), ctx.prim(f"fork-{second}")
    waiter = ctx.prim("waiter") if p.strategy == "waiter" else None
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


def _primitives(p: Params) -> dict[str, PrimSpec]:
    prims: dict[str, PrimSpec] = {f"fork-{i}": Lock() for i in range(p.philosophers)}
    if p.strategy == "waiter":
        prims["waiter"] = Semaphore(p.philosophers - 1)
    return prims


class EveryoneAte(Check):
    """Every philosopher ate every meal: nobody starved."""

    name = "every philosopher ate every meal"
    needs_completion = True

    def __init__(self, names: list[str], meals: int) -> None:
        self._meals = meals
        self._ate: Counter[str] = Counter(dict.fromkeys(names, 0))

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") == "eat":
            self._ate[event["actor"]] += 1

    def verdict(self) -> Verdict:
        short = [f"{a}: {n} of {self._meals}" for a, n in sorted(self._ate.items())
                 if n != self._meals]  # fmt: skip
        return self._result(short[:3], len(short), f"{sum(self._ate.values())} meals")


class PhilosophersAnalysis(Analysis):
    def __init__(self, config: RunConfig) -> None:
        p: Params = config.params
        self._per_minute = config.clock.speedup / 60.0
        self._hungry: dict[str, float] = {}
        self._waits: list[float] = []
        self._meals = 0
        self._checks = [EveryoneAte([a.name for a in _actors(p)], p.meals)]

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "hungry":
            self._hungry[event["actor"]] = event["ts"]
        elif kind == "eat":
            self._meals += 1
            started = self._hungry.pop(event["actor"], event["ts"])
            self._waits.append((event["ts"] - started) * self._per_minute)

    def metrics(self) -> dict[str, Any]:
        return {"meals": self._meals, **describe(self._waits, "hungry")}

    def checks(self) -> list[Check]:
        return list(self._checks)


def _actors(p: Params) -> list[Any]:
    return numbered("phil", p.philosophers, philosopher)


scenario = Scenario(
    name="philosophers",
    description="Dining philosophers: forks as Locks; naive deadlocks, ordered and waiter do not",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=PhilosophersAnalysis,
    metrics=(
        Metric("meals", "meals eaten"),
        Metric("hungry_mean", "hungry until eating, mean", "sim min"),
        Metric("hungry_p95", "hungry until eating, p95", "sim min"),
        Metric("hungry_max", "hungry until eating, max", "sim min"),
    ),
)
