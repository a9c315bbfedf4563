"""The car park at Franz-Josefs-Kai: ``capacity`` spaces guarded by a counting Semaphore.

Each car drives for a while, arrives, takes a space (waiting while the car park is full, or
giving up after ``patience`` minutes), stays parked for a while, leaves, and does so ``visits``
times. The semaphore's counter is the number of free spaces: ``acquire`` takes one or waits,
``release`` gives one back and wakes a waiting car.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    History,
    Line,
    Metric,
    Operation,
    RunConfig,
    Scenario,
    Semaphore,
    States,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.queueing import finite_source
from sim.steady import Estimate, Window, steady_metrics


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The car park's parameters; every duration is in simulated minutes."""

    capacity: Annotated[int, msgspec.Meta(gt=0)] = 130
    cars: Annotated[int, msgspec.Meta(ge=0)] = 200
    visits: Annotated[int, msgspec.Meta(ge=1)] = 3
    drive: Duration = Duration(dist="exponential", mean=60.0)
    park: Duration = Duration(dist="exponential", mean=90.0)
    # Minutes a car waits at the barrier before it gives up; none means it waits as long as it
    # takes.
    patience: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Minutes after the last car's start before the steady window opens; none: one mean
    # drive-and-park cycle.
    warmup: Annotated[float, msgspec.Meta(ge=0)] | None = None


def car(ctx: Ctx[Params]) -> None:
    """One car's day: drive, arrive, park (or give up), leave, ``visits`` times."""
    p = ctx.params
    spaces = ctx.prim("spaces", Semaphore)
    for visit in range(p.visits):
        # Both draws come first, so a car's random numbers do not depend on whether it gave up:
        # the same seed gives the same draws however the timing falls out.
        drive, stay = ctx.draw(p.drive), ctx.draw(p.park)
        ctx.sleep(drive, "drive")
        ctx.log.info("arrive", visit=visit, drove=drive)
        if not spaces.acquire(timeout=p.patience):
            ctx.log.info("give_up", visit=visit)
            continue
        ctx.log.info("park", visit=visit, stay=stay)
        ctx.sleep(stay, "park")
        ctx.log.info("leave", visit=visit)
        spaces.release()


class VisitsAccounted(Check):
    """Every visit of every car ends parked or given up, never lost in between."""

    name = "every visit parked or gave up"
    needs_completion = True
    events = frozenset({"park", "give_up"})

    def __init__(self, cars: list[str], visits: int) -> None:
        super().__init__()
        self._expected = {c: visits for c in cars}
        self._parked: dict[str, int] = dict.fromkeys(cars, 0)
        self._gave_up: dict[str, int] = dict.fromkeys(cars, 0)

    def on_line(self, line: Line) -> None:
        counts = self._parked if line.event == "park" else self._gave_up
        counts[line.actor] = counts.get(line.actor, 0) + 1

    def verdict(self) -> Verdict:
        if not self._expected:
            return self.skip("no cars")
        cut = 0
        faulted = self.history.faulted
        for c, n in sorted(self._expected.items()):
            done = self._parked[c] + self._gave_up[c]
            if c in faulted and done <= n:
                cut += n - done  # a declared fault ended this car's visits early
            elif done != n:
                self.problems.add(f"{c}: {self._parked[c]} parked + {self._gave_up[c]} gave up of "
                                  f"{n} visits")  # fmt: skip
        ok = f"{sum(self._expected.values()) - cut} visits accounted for"
        return self.result(ok + (f", {cut} cut short by a fault" if cut else ""))


class CarparkAnalysis(Analysis[Params]):
    """Waits and occupancy of ``spaces`` from the history, and the steady state window."""

    prims = frozenset({"spaces"})
    ops = frozenset({"acquire"})
    events = frozenset({"actor_start", "actor_end"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._waits = history.waits("spaces", "acquire")
        self._occupancy = history.level("spaces", "held")
        cars = [a.name for a in _cars(p)]
        self._cars = frozenset(cars)
        # The steady window is what the queueing model describes. The car park starts empty,
        # and the cars start one by one (200 processes take up to 2 s, hours of simulated time
        # at a high speedup): the window opens one mean drive-and-park cycle (or ``warmup``)
        # after the *last* car has started, and closes when the first car has made its last
        # visit (from then on fewer cars come back).
        warm = p.warmup if p.warmup is not None else p.drive.mean + p.park.mean
        # A car's cycle, over which its waits stay correlated: drive and park, or, when the
        # spaces are the bottleneck, what it takes all cars to park once (cars x park /
        # capacity), a lower bound of the model's cars / throughput.
        cycle = max(p.drive.mean + p.park.mean, p.cars * p.park.mean / max(p.capacity, 1))
        self._window = Window(cars, warm * 60.0 / config.clock.speedup,
                              per_second=self.minutes(1.0), what="arrivals",
                              correlated=cycle)  # fmt: skip
        # The occupancy's changes, for the window's utilisation.
        history.follow("spaces", "held", partial(self._window.level, "held"))
        # Cars that found the car park full (or others waiting) and wait for a space now. A
        # car that arrives while one of them waits finds it full too, even in the moment after
        # a release when a space is free but its waiter has not yet woken and taken it.
        self._queued = 0
        self._arrivals: dict[Operation, tuple[bool, bool, bool]] = {}
        self._checks = [VisitsAccounted(cars, p.visits)]

    def on_line(self, line: Line) -> None:
        if line.event == "actor_start":
            self._window.started(line.actor, line.ts)
        elif line.actor in self._cars:
            self._window.close(line.ts, "the first car made its last visit")

    def on_invoke(self, op: Operation) -> None:
        full = self._occupancy.level >= self.params.capacity or self._queued > 0
        # A car with patience 0 does not wait: it finds the car park full and drives on.
        waits = full and op.invoke.timeout != 0
        self._queued += waits
        self._arrivals[op] = (self._window.arrival(op.start), full, waits)

    def on_op(self, op: Operation) -> None:
        inside, full, waited = self._arrivals.pop(op, (False, False, False))
        self._queued -= waited
        done = op.done
        if not inside or done is None:
            return
        self._window.add("full", 1.0 if full else 0.0)
        if done.phase == "ok":
            self._window.add("wait", self.minutes(done.ts - op.invoke.ts))

    def metrics(self) -> dict[str, Any]:
        end = self.history.actor_now
        self._window.finish(end)
        mean = self._occupancy.mean(end)
        waits = self._waits.all
        capacity = self.params.capacity
        return {
            "served": self._waits.outcomes["ok"],
            "gave_up": self._waits.outcomes["timeout"],
            **describe(waits, "wait", scale=self.minutes(1.0)),
            "occupancy_mean": mean,
            "utilisation": mean / capacity,
            "occupancy_max": int(self._occupancy.maximum),
            "sim_minutes": self.minutes(end),
            **self._window.metrics(
                {
                    "steady_wait_mean": Estimate("wait"),
                    "steady_p_wait": Estimate("full", upper=1.0),
                    "steady_utilisation": Estimate(
                        "held", "level", upper=1.0, scale=1.0 / capacity
                    ),
                }
            ),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _cars(p: Params) -> list[Actor]:
    return numbered("car", p.cars, car)


scenario = Scenario(
    name="carpark",
    description="Cars share the 130 spaces of a car park guarded by a counting Semaphore",
    params=Params,
    primitives=lambda p: {"spaces": Semaphore(p.capacity)},
    actors=_cars,
    analysis=CarparkAnalysis,
    states=States(
        on={"arrive": "arriving", "park": "parked", "leave": "driving", "give_up": "driving"},
        start={"car": "driving"},
        tones={"arriving": "asking", "parked": "using", "driving": "idle"},
    ),
    metrics=(
        Metric("served", "visits parked"),
        Metric("gave_up", "visits given up"),
        *Metric.stats("wait", "wait", "sim min", show=("mean", "p50", "p95", "max")),
        Metric("occupancy_mean", "occupancy, mean", "spaces"),
        Metric("utilisation", "utilisation", "%"),
        Metric("occupancy_max", "occupancy, max", "spaces"),
        Metric("sim_minutes", "simulated time", "sim min"),
        *steady_metrics(
            Metric("steady_wait_mean", "steady state: wait, mean", "sim min", lower=0.0),
            Metric("steady_p_wait", "steady state: P(find it full)", "%"),
            Metric("steady_utilisation", "steady state: utilisation", "%"),
        ),
    ),
    theory=lambda config: _theory(config.params),
)


def _theory(p: Params) -> dict[str, float]:
    """The finite-source queue's predictions, where its assumptions hold (exponential times,
    and cars that either wait as long as it takes or leave at once)."""
    if p.drive.dist != "exponential" or p.park.dist != "exponential":
        return {}
    if p.patience not in (None, 0) or p.cars == 0 or min(p.drive.mean, p.park.mean) <= 0:
        return {}
    model = finite_source(p.cars, p.capacity, p.drive.mean, p.park.mean,
                          waiting=p.patience is None)  # fmt: skip
    return {
        "steady_wait_mean": model.wait_mean,
        "steady_p_wait": model.p_wait,
        "steady_utilisation": model.utilisation,
    }
