"""The sleeping barber: one barber, ``chairs`` waiting chairs, customers arriving at random.

The classic semaphore solution. ``waiting`` (a shared Value, guarded by the ``seats`` lock)
counts the customers on the waiting chairs. A customer who finds every chair taken leaves at
once (turned away, counted in ``turned_away``). Otherwise the customer sits down, signals
``customers`` and waits on ``barber`` until the barber calls; the barber sleeps on
``customers`` until somebody is waiting. Two more semaphores close the hand-over: the barber
signals ``cut_done`` when the haircut is finished and waits on ``chair_free`` until the
customer has left the chair, so the barber serves one customer at a time.

The customers log ``sit_down`` and ``to_chair`` inside the ``seats`` lock, so the number of
occupied waiting chairs counted from the log is exact.
"""

from __future__ import annotations

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
    Lock,
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
from sim.queueing import mm1k
from sim.steady import Estimate, Window, steady_metrics


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes."""

    customers: Annotated[int, msgspec.Meta(ge=0)] = 20
    # Waiting chairs, not counting the barber's chair. At least one: a customer who is turned
    # away always leaves somebody waiting, whom the barber will serve; that is how the barber
    # learns, when he counts, that nobody is left to come.
    chairs: Annotated[int, msgspec.Meta(ge=1)] = 3
    # Customers arrive at uniformly random minutes of the opening hours: random arrivals.
    open_for: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    cut: Duration = Duration(dist="exponential", mean=8.0)
    # Minutes after the last actor's start before the steady window opens; none: as many mean
    # haircuts as the shop has places (chairs + 1).
    warmup: Annotated[float, msgspec.Meta(ge=0)] | None = None


def customer(ctx: Ctx[Params]) -> None:
    """Arrive; sit down and wait for the barber, or leave if every chair is taken."""
    p = ctx.params
    seats, waiting = ctx.prim("seats", Lock), ctx.prim("waiting", Value)
    ctx.sleep(ctx.rng.uniform(0.0, p.open_for), "arrival")
    ctx.log.info("arrive")
    with seats:
        sitting = waiting.value
        if sitting >= p.chairs:
            away = ctx.prim("turned_away", Value)
            away.value += 1
            ctx.log.info("turned_away", waiting=sitting)
            return
        waiting.value = sitting + 1
        ctx.log.info("sit_down", waiting=sitting + 1)
    ctx.prim("customers", Semaphore).release()  # wakes the barber if he sleeps
    ctx.prim("barber", Semaphore).acquire()  # until the barber calls
    with seats:
        sitting = waiting.value - 1
        waiting.value = sitting  # the waiting chair is free again
        ctx.log.info("to_chair", waiting=sitting)
    ctx.prim("cut_done", Semaphore).acquire()
    ctx.log.info("leave")
    ctx.prim("chair_free", Semaphore).release()


def barber(ctx: Ctx[Params]) -> None:
    """Sleep until a customer waits, call, cut, see the customer out; until all have come."""
    p = ctx.params
    seats = ctx.prim("seats", Lock)
    waiting, away = ctx.prim("waiting", Value), ctx.prim("turned_away", Value)
    customers, chair = ctx.prim("customers", Semaphore), ctx.prim("barber", Semaphore)
    cut_done, chair_free = ctx.prim("cut_done", Semaphore), ctx.prim("chair_free", Semaphore)
    served = 0
    while True:
        with seats:
            gone, idle = away.value, waiting.value == 0
        if served + gone == p.customers:
            break  # everybody has come: served or turned away
        if idle:
            ctx.log.info("asleep")
        customers.acquire()
        chair.release()  # "next, please"
        minutes = ctx.draw(p.cut)
        ctx.log.info("cut_start", served=served)
        ctx.sleep(minutes, "cut")
        ctx.log.info("cut_end", served=served, minutes=minutes)
        cut_done.release()
        chair_free.acquire()
        served += 1
    ctx.log.info("close", served=served, turned_away=gone)


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    return {
        "seats": Lock(),  # guards the two counters
        "waiting": Value("i", 0, lock=False),
        "turned_away": Value("i", 0, lock=False),
        "customers": Semaphore(0),  # customers waiting for the barber
        "barber": Semaphore(0),  # the barber is ready for the next one
        "cut_done": Semaphore(0),
        "chair_free": Semaphore(0),
    }


class EveryCustomerAccounted(Check):
    """Every customer was either served (left after the haircut) or turned away, once."""

    name = "every customer served or turned away"
    needs_completion = True
    events = frozenset({"leave", "turned_away"})

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self._names = names
        self._outcomes: dict[str, list[str]] = {n: [] for n in names}

    def on_line(self, line: Line) -> None:
        self._outcomes.setdefault(line.actor, []).append(line.event)

    def verdict(self) -> Verdict:
        if not self._names:
            return self.skip("no customers")
        for c, o in sorted(self._outcomes.items()):
            if len(o) != 1:
                self.problems.add(f"{c}: {' + '.join(o) or 'neither'}")
        served = sum(o == ["leave"] for o in self._outcomes.values())
        return self.result(
            f"{served} served + {len(self._names) - served} turned away = {len(self._names)}"
        )


class WaitingRoom(Check):
    """Never more than ``chairs`` customers waiting; nobody turned away while a chair is free."""

    events = frozenset({"sit_down", "to_chair", "turned_away"})

    def __init__(self, chairs: int) -> None:
        super().__init__()
        self.name = f"at most {chairs} waiting, turned away only when full"
        self._chairs = chairs
        self._sitting = 0
        self._most = 0
        self._seen = 0

    def on_line(self, line: Line) -> None:
        kind, ts, actor = line.event, line.ts, line.actor
        self._seen += 1
        if kind == "sit_down":
            self._sitting += 1
            self._most = max(self._most, self._sitting)
            if self._sitting > self._chairs:
                self.problems.add(f"{actor} sat down at {ts:.4f} s as customer {self._sitting} "
                                  "waiting")  # fmt: skip
        elif kind == "to_chair":
            self._sitting -= 1
        elif self._sitting < self._chairs:
            self.problems.add(
                f"{actor} was turned away at {ts:.4f} s with only {self._sitting} of "
                f"{self._chairs} chairs taken"
            )

    def verdict(self) -> Verdict:
        if not self._seen:
            return self.skip("no customer came in")
        return self.result(f"at most {self._most} of {self._chairs} chairs taken")


class OneInTheChair(Check):
    """The barber serves one customer at a time: from being called (``to_chair``) to
    ``leave``, no two customers' stays in the barber's chair overlap."""

    name = "one customer in the barber's chair at a time"
    events = frozenset({"to_chair", "leave"})

    def __init__(self) -> None:
        super().__init__()
        self._in_chair: dict[str, float] = {}
        self._calls = 0

    def on_line(self, line: Line) -> None:
        actor, ts = line.actor, line.ts
        if line.event == "leave":
            self._in_chair.pop(actor, None)
            return
        self._calls += 1
        if self._in_chair:
            others = ", ".join(self._in_chair)
            self.problems.add(f"{actor} took the chair at {ts:.4f} s from {others}")
        self._in_chair[actor] = ts

    def verdict(self) -> Verdict:
        if not self._calls:
            return self.skip("nobody was called to the chair")
        return self.result(f"{self._calls} haircuts, one by one")


class BarberAnalysis(Analysis[Params]):
    """Served, turned away, waits and the barber's working time, from the domain events; and
    the steady window, in which the shop is M/M/1/(1 + chairs) while customers keep coming."""

    events = frozenset({"arrive", "sit_down", "to_chair", "turned_away", "leave", "asleep",
                        "cut_start", "cut_end", "actor_start"})  # fmt: skip

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._arrived: dict[str, float] = {}
        self._waits: list[float] = []
        self._turned_away = 0
        self._served = 0
        self._naps = 0
        self._cut_from: float | None = None
        self._busy = 0.0
        self._first: float | None = None
        self._last = 0.0
        self._most = self._sitting = 0
        self._checks: list[Check] = [
            EveryCustomerAccounted([a.name for a in _customers(p)]),
            WaitingRoom(p.chairs),
            OneInTheChair(),
        ]
        # Each customer arrives at a uniform minute of ``open_for`` after its own start, so
        # arrivals come at the full rate customers / open_for only between the last start and
        # the first start + open_for: the window lies within, after a warm-up.
        warm = p.warmup if p.warmup is not None else (p.chairs + 1) * p.cut.mean
        self._window = Window([a.name for a in _actors(p)], warm * 60.0 / config.clock.speedup,
                              per_second=self.minutes(1.0), what="arrivals")  # fmt: skip
        self._open_for = p.open_for * 60.0 / config.clock.speedup
        self._inside: set[str] = set()  # customers who arrived in the window

    def on_line(self, line: Line) -> None:
        kind, actor, ts = line.event, line.actor, line.ts
        if kind == "actor_start":
            self._window.started(actor, ts)
            if actor != "barber":
                self._window.close(ts + self._open_for, "arrivals began to thin out")
            return
        if kind == "arrive":
            self._arrived[actor] = ts
            if self._window.arrival(ts):
                self._inside.add(actor)
        elif kind == "sit_down":
            self._sitting += 1
            self._most = max(self._most, self._sitting)
        elif kind == "to_chair":
            self._sitting -= 1
            wait = self.minutes(ts - self._arrived.pop(actor, ts))
            self._waits.append(wait)
            if actor in self._inside:
                self._window.add("away", 0.0)
                self._window.add("wait", wait)
        elif kind == "turned_away":
            self._turned_away += 1
            if actor in self._inside:
                self._window.add("away", 1.0)
        elif kind == "leave":
            self._served += 1
        elif kind == "asleep":
            self._naps += 1
        elif kind == "cut_start":
            self._cut_from = ts
            self._window.level("cutting", ts, 1.0)
        elif kind == "cut_end" and self._cut_from is not None:
            self._busy += ts - self._cut_from
            self._cut_from = None
            self._window.level("cutting", ts, 0.0)
        # The shop is open from the first arrival to the last customer's exit.
        self._first = ts if self._first is None else self._first
        self._last = ts

    def metrics(self) -> dict[str, Any]:
        span = (self._last - self._first) if self._first is not None else 0.0
        self._window.finish(self.history.actor_now)
        return {
            "served": self._served,
            "turned_away": self._turned_away,
            **describe(self._waits, "wait"),
            "waiting_max": self._most,
            "naps": self._naps,
            "utilisation": self._busy / span if span > 0 else None,
            "sim_minutes": self.minutes(span),
            **self._window.metrics(
                {
                    "steady_p_block": Estimate("away", upper=1.0),
                    "steady_wait_mean": Estimate("wait"),
                    "steady_utilisation": Estimate("cutting", "level", upper=1.0),
                }
            ),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _theory(p: Params) -> dict[str, float]:
    """M/M/1/(1 + chairs) with Poisson arrivals at rate customers / open_for: the arrivals are
    that Poisson process given its count; the haircuts must be exponential."""
    if p.cut.dist != "exponential" or p.cut.mean <= 0 or p.customers == 0:
        return {}
    model = mm1k(p.customers / p.open_for, p.cut.mean, 1 + p.chairs)
    return {
        "steady_p_block": model.p_block,
        "steady_wait_mean": model.wait_mean,
        "steady_utilisation": model.utilisation,
    }


def _customers(p: Params) -> list[Actor]:
    return numbered("customer", p.customers, customer)


def _actors(p: Params) -> list[Actor]:
    return [Actor("barber", barber), *_customers(p)]


scenario = Scenario(
    name="sleeping_barber",
    description="Sleeping barber: waiting chairs and semaphores; customers turned away counted",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=BarberAnalysis,
    states=States(
        on={
            "arrive": "arriving",
            "sit_down": "sitting",
            "to_chair": "in the chair",
            "leave": "gone",
            "turned_away": "gone",
            "asleep": "asleep",
            "cut_start": "cutting",
            "cut_end": "idle",
        },
        start={"customer": "outside", "barber": "idle"},
        tones={
            "arriving": "asking",
            "sitting": "asking",
            "in the chair": "using",
            "cutting": "using",
            "asleep": "idle",
            "gone": "idle",
            "outside": "idle",
            "idle": "idle",
        },
    ),
    metrics=(
        Metric("served", "customers served"),
        Metric("turned_away", "customers turned away"),
        *Metric.stats("wait", "wait for the barber", "sim min"),
        Metric("waiting_max", "waiting at once, max", "customers"),
        Metric("naps", "times the barber fell asleep"),
        Metric("utilisation", "barber busy cutting", "%"),
        Metric("sim_minutes", "first arrival to last exit", "sim min", lower=0.0),
        *steady_metrics(
            Metric("steady_p_block", "steady state: P(turned away)", "%"),
            Metric(
                "steady_wait_mean", "steady state: wait for the barber, mean", "sim min", lower=0.0
            ),
            Metric("steady_utilisation", "steady state: barber busy cutting", "%"),
        ),
    ),
    theory=lambda config: _theory(config.params),
)
