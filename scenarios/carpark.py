"""The car park at Franz-Josefs-Kai: ``capacity`` spaces guarded by a counting Semaphore.

Each car drives for a while, arrives, takes a space (waiting while the car park is full, or
giving up after ``patience`` minutes), stays parked for a while, leaves, and does so ``visits``
times. The semaphore's counter is the number of free spaces: ``acquire`` takes one or waits,
``release`` gives one back and wakes a waiting car.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from sim import Actor, Analysis, Check, Ctx, Duration, Metric, RunConfig, Scenario, Semaphore
from sim import actors as numbered
from sim.checks import Verdict
from sim.queueing import finite_source
from sim.stats import TimeWeighted, describe


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


def car(ctx: Ctx[Params]) -> None:
    """One car's day: drive, arrive, park (or give up), leave, ``visits`` times."""
    p = ctx.params
    spaces = ctx.prim("spaces")
    for visit in range(p.visits):
        # Both draws come first, so a car's random numbers do not depend on whether it gave up:
        # the same seed gives the same draws however the timing falls out.
        drive, stay = ctx.draw(p.drive), ctx.draw(p.park)
        ctx.sleep(drive)
        ctx.log.info("arrive", visit=visit, drove=drive)
        if not spaces.acquire(timeout=p.patience):
            ctx.log.info("give_up", visit=visit)
            continue
        ctx.log.info("park", visit=visit, stay=stay)
        ctx.sleep(stay)
        ctx.log.info("leave", visit=visit)
        spaces.release()


# Fewest arrivals in the steady window for its metrics to be reported.
_STEADY_MIN = 30


class VisitsAccounted(Check):
    """Every visit of every car ends parked or given up, never lost in between."""

    name = "every visit parked or gave up"
    needs_completion = True

    def __init__(self, cars: list[str], visits: int) -> None:
        self._expected = {c: visits for c in cars}
        self._parked: dict[str, int] = dict.fromkeys(cars, 0)
        self._gave_up: dict[str, int] = dict.fromkeys(cars, 0)

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "park":
            self._parked[event["actor"]] = self._parked.get(event["actor"], 0) + 1
        elif kind == "give_up":
            self._gave_up[event["actor"]] = self._gave_up.get(event["actor"], 0) + 1

    def verdict(self) -> Verdict:
        if not self._expected:
            return Verdict(self.name, "skip", "no cars")
        wrong = [
            f"{c}: {self._parked[c]} parked + {self._gave_up[c]} gave up of {n} visits"
            for c, n in sorted(self._expected.items())
            if self._parked[c] + self._gave_up[c] != n
        ]
        total = sum(self._expected.values())
        return self._result(wrong[:3], len(wrong), f"{total} visits accounted for")


class CarparkAnalysis(Analysis):
    """Waits and occupancy, from the op events on ``spaces`` and the domain events."""

    def __init__(self, config: RunConfig) -> None:
        p: Params = config.params
        self._p = p
        self._per_minute = config.clock.speedup / 60.0  # simulated minutes per wall second
        self._invoked: dict[str, float] = {}
        self._waits: list[float] = []
        self._served = 0
        self._gave_up = 0
        self._occupancy = TimeWeighted()
        self._end = 0.0
        # The steady window is what the queueing model describes: it opens after one mean
        # drive-and-park cycle (the car park starts empty, not in equilibrium) and closes when
        # the first car has made its last visit (from then on fewer cars come back).
        self._warm = (p.drive.mean + p.park.mean) * 60.0 / config.clock.speedup
        self._warm_area: float | None = None
        self._steady_end: float | None = None
        self._steady_occupancy = 0.0
        self._steady_waits: list[float] = []
        self._steady_full = 0
        self._arrived_full: dict[str, bool] = {}
        self._checks = [VisitsAccounted([a.name for a in _cars(p)], p.visits)]

    def feed(self, event: Mapping[str, Any]) -> None:
        ts = event["ts"]
        actor, kind = event["actor"], event["event"]
        if actor != "engine" and actor != "coordinator":
            self._end = ts  # events arrive in time order
        if self._warm_area is None and ts >= self._warm:
            self._warm_area = self._occupancy.area(ts)
        if kind != "op":
            if kind == "actor_end" and self._steady_end is None:
                self._close_steady_window(ts)
            return
        if event.get("prim") != "spaces":
            return
        op, phase = event.get("op"), event.get("phase")
        if op == "acquire":
            if phase == "invoke":
                self._invoked[actor] = ts
                self._arrived_full[actor] = self._occupancy.level >= self._p.capacity
                return
            started = self._invoked.pop(actor, ts)
            wait = (ts - started) * self._per_minute
            self._waits.append(wait)
            full = self._arrived_full.pop(actor, False)
            if self._steady_end is None and started >= self._warm:
                self._steady_waits.append(wait)
                self._steady_full += full
            if phase == "ok":
                self._served += 1
                self._occupancy.change(ts, +1)
            else:
                self._gave_up += 1
        elif op == "release" and phase == "invoke":
            self._occupancy.change(ts, -1)

    def _close_steady_window(self, ts: float) -> None:
        self._steady_end = ts
        if self._warm_area is not None and ts > self._warm:
            area = self._occupancy.area(ts) - self._warm_area
            self._steady_occupancy = area / (ts - self._warm)

    def metrics(self) -> dict[str, Any]:
        mean = self._occupancy.mean(self._end)
        return {
            "served": self._served,
            "gave_up": self._gave_up,
            **describe(self._waits, "wait"),
            "occupancy_mean": mean,
            "utilisation": mean / self._p.capacity,
            "occupancy_max": int(self._occupancy.maximum),
            "sim_minutes": self._end * self._per_minute,
            **self._steady(),
        }

    def _steady(self) -> dict[str, Any]:
        waits = self._steady_waits
        # Too few arrivals in the window give numbers that are mostly noise: say nothing.
        if self._steady_end is None or len(waits) < _STEADY_MIN:
            return {"steady_wait_mean": None, "steady_p_wait": None, "steady_utilisation": None}
        return {
            "steady_wait_mean": sum(waits) / len(waits),
            "steady_p_wait": self._steady_full / len(waits),
            "steady_utilisation": self._steady_occupancy / self._p.capacity,
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
    metrics=(
        Metric("served", "visits parked"),
        Metric("gave_up", "visits given up"),
        Metric("wait_mean", "wait, mean", "sim min"),
        Metric("wait_p50", "wait, p50", "sim min"),
        Metric("wait_p95", "wait, p95", "sim min"),
        Metric("wait_max", "wait, max", "sim min"),
        Metric("occupancy_mean", "occupancy, mean", "spaces"),
        Metric("utilisation", "utilisation", "%"),
        Metric("occupancy_max", "occupancy, max", "spaces"),
        Metric("sim_minutes", "simulated time", "sim min"),
        Metric("steady_wait_mean", "steady state: wait, mean", "sim min"),
        Metric("steady_p_wait", "steady state: P(find it full)", "%"),
        Metric("steady_utilisation", "steady state: utilisation", "%"),
    ),
    theory=lambda config: _theory(config.params),
)


def _theory(p: Params) -> dict[str, float]:
    """The finite-source queue's predictions, where its assumptions hold (exponential times,
    and cars that either wait as long as it takes or leave at once)."""
    if p.drive.dist != "exponential" or p.park.dist != "exponential":
        return {}
    if p.patience not in (None, 0):
        return {}
    model = finite_source(p.cars, p.capacity, p.drive.mean, p.park.mean,
                          waiting=p.patience is None)  # fmt: skip
    return {
        "steady_wait_mean": model.wait_mean,
        "steady_p_wait": model.p_wait,
        "steady_utilisation": model.utilisation,
    }
