"""Theory beside measurement, without processes: the bounded-buffer model against an exact
solve of the buffer's own mechanics and in its limits, the steady window, the timer-lateness
rule, and a sweep's bounded intervals with their repetitions."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest

from sim import load_config
from sim._sweep import expand, parse_axis
from sim._sweep.results import aggregate
from sim.errors import ScenarioError
from sim.history import History, line_of
from sim.queueing import bounded_buffer, mm1k, mmc, mmck
from sim.scenario import Metric
from sim.steady import Estimate, Window
from sim.timing import SIGNIFICANT, TimerLateness, lateness_rule

from .ctmc import stationary as solve

# ---------------------------------------------------------------------------------------------
# The bounded buffer


def buffer_chain(
    producers: int, consumers: int, capacity: int, make: Fraction, work: Fraction
) -> tuple[dict[tuple[int, int, int], Fraction], dict[tuple[Any, Any], Fraction]]:
    """The buffer's mechanics as a CTMC on (items in the buffer, consumers working, producers
    waiting), written from what the scenario's actors do, not from the birth-death chain."""
    states = [(b, k, j) for b in range(capacity + 1) for k in range(consumers + 1)
              for j in range(producers + 1)
              if (b == 0 or k == consumers) and (j == 0 or b == capacity)]  # fmt: skip
    rates: dict[tuple[Any, Any], Fraction] = {}
    for b, k, j in states:
        making = producers - j
        if making:
            # A producer finishes an item: an idle consumer takes it, or it goes into the
            # buffer, or its producer waits with it.
            if k < consumers:
                nxt = (b, k + 1, j)
            else:
                nxt = (b + 1, k, j) if b < capacity else (b, k, j + 1)
            rates[((b, k, j), nxt)] = making / make
        if k:
            # A consumer finishes: it takes the next item (and a waiting producer puts its
            # own), or goes idle.
            nxt = (b, k, j - 1) if j else (b - 1, k, j) if b else (b, k - 1, j)
            rates[((b, k, j), nxt)] = k / work
    return solve(rates, states), rates


@pytest.mark.parametrize(
    ("producers", "consumers", "capacity", "make", "work"),
    [(2, 2, 4, "1", "1"), (3, 1, 2, "2", "1"), (1, 3, 1, "1/2", "2"), (4, 2, 3, "1", "3/2")],
)
def test_bounded_buffer_model_against_the_buffer_s_own_mechanics(
    producers: int, consumers: int, capacity: int, make: str, work: str
) -> None:
    a, s = Fraction(make), Fraction(work)
    pi, _ = buffer_chain(producers, consumers, capacity, a, s)
    model = bounded_buffer(producers, consumers, capacity, float(a), float(s))
    arrivals = {st: (producers - st[2]) / a * p for st, p in pi.items()}
    throughput = sum(arrivals.values())
    full = sum(r for (b, _, _), r in arrivals.items() if b == capacity) / throughput
    blocked = sum(j * p for (_, _, j), p in pi.items())
    idle = sum((consumers - k) * p for (_, k, _), p in pi.items())
    for got, want in (
        (model.p_full, full),
        (model.throughput, throughput),
        (model.fill_mean, sum(b * p for (b, _, _), p in pi.items())),
        (model.utilisation, sum(k * p for (_, k, _), p in pi.items()) / consumers),
        (model.blocked_mean, blocked),
        (model.wait_full_mean, blocked / throughput),
        (model.wait_empty_mean, idle / throughput),
    ):
        assert math.isclose(got, float(want), rel_tol=1e-12, abs_tol=1e-15)


def test_bounded_buffer_with_one_producer_is_mmck_with_one_place_more() -> None:
    # The waiting producer is the last place: M/M/c/(c + K + 1) with rate 1 / produce_mean.
    for consumers, capacity, make, work in ((1, 3, 2.0, 1.0), (2, 1, 0.5, 1.5), (3, 4, 1.0, 4.0)):
        buffer = bounded_buffer(1, consumers, capacity, make, work)
        queue = mmck(1 / make, work, consumers, consumers + capacity + 1)
        assert math.isclose(buffer.utilisation, queue.utilisation, rel_tol=1e-12)
        assert math.isclose(buffer.blocked_mean, queue.p_block, rel_tol=1e-12)
        assert math.isclose(buffer.throughput, queue.throughput, rel_tol=1e-12)
    # One consumer and one slot: the published M/M/1/3 law, p(n) = (1 - r) r^n / (1 - r^4).
    r = 0.5
    p = [(1 - r) * r**n / (1 - r**4) for n in range(4)]
    model = bounded_buffer(1, 1, 1, 2.0, 1.0)
    assert math.isclose(model.utilisation, 1 - p[0], rel_tol=1e-12)
    assert math.isclose(model.p_full, p[2] / (1 - p[3]), rel_tol=1e-12)  # arrivals see n <= 2
    assert math.isclose(model.fill_mean, p[2] + p[3], rel_tol=1e-12)


def test_bounded_buffer_tends_to_mmc_as_the_buffer_grows() -> None:
    limit = mmc(3.0, 1.0, 5)  # rho = 0.6
    small, large = bounded_buffer(3, 5, 2, 1.0, 1.0), bounded_buffer(3, 5, 400, 1.0, 1.0)
    assert small.p_full > 0.01
    assert large.p_full < 1e-80
    assert math.isclose(large.utilisation, limit.utilisation, rel_tol=1e-12)
    assert math.isclose(large.fill_mean, limit.queue_mean, rel_tol=1e-12)
    assert math.isclose(large.throughput, 3.0, rel_tol=1e-12)


def test_bounded_buffer_with_quick_producers_is_always_full_and_busy() -> None:
    model = bounded_buffer(3, 2, 4, 1e-6, 1.0)
    assert model.utilisation > 1 - 1e-9
    assert model.fill_mean > 4 - 1e-6
    assert model.p_full > 1 - 1e-6
    assert math.isclose(model.throughput, 2.0, rel_tol=1e-9)  # the consumers' pace
    # Little's law on the waiting producers and on the idle consumers.
    busy = bounded_buffer(2, 2, 4, 1.0, 1.0)
    assert math.isclose(busy.blocked_mean, busy.throughput * busy.wait_full_mean, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 1, 1, 1.0, 1.0), "producers"), ((1, 1, 0, 1.0, 1.0), "capacity"),
     ((1, 1, 1, -1.0, 1.0), "produce_mean"), ((1, 1, 1, 1.0, math.inf), "consume_mean")],
)  # fmt: skip
def test_bounded_buffer_refuses_bad_parameters_by_name(args: tuple[Any, ...], name: str) -> None:
    with pytest.raises(ScenarioError, match=name):
        bounded_buffer(*args)


def test_the_barber_s_model_at_its_published_values() -> None:
    # M/M/1/K at rho = 1: every state equally likely, P(block) = 1 / (K + 1).
    model = mm1k(1 / 8, 8.0, 4)
    assert math.isclose(model.p_block, 1 / 5, rel_tol=1e-12)
    assert math.isclose(model.utilisation, 4 / 5, rel_tol=1e-12)
    # Lq = (1 + 2 + 3) / 5 and Wq = Lq / (lambda (1 - 1/5)).
    assert math.isclose(model.wait_mean, 12.0, rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# The steady window


def test_the_window_opens_a_warm_up_after_the_last_start_and_says_why_it_is_withheld() -> None:
    window = Window(["a", "b"], 10.0, per_second=1.0)
    window.started("a", 0.0)
    assert not window.arrival(50.0)  # b has not started: the window is not open yet
    window.started("b", 30.0)
    assert window.opens == 40.0
    assert not window.arrival(39.0)
    for t in range(40, 60):
        assert window.arrival(float(t))
        window.add("wait", 1.0)
    window.close(60.0, "the first car made its last visit")
    assert not window.arrival(60.0)
    found = window.metrics({"steady_wait_mean": Estimate("wait")})
    assert found["steady_wait_mean"] is None
    assert found["steady_window"] == "withheld: 20 arrivals in minutes 40 to 60, fewer than 30"
    assert found["steady_arrivals"] == 20

    never = Window(["a"], 10.0, per_second=1.0)
    never.started("a", 5.0)
    never.close(12.0, "the first car made its last visit")
    assert never.metrics({})["steady_window"].startswith(
        "withheld: the window never opened (the last actor started at minute 5, warm-up until 15"
    )


def test_window_intervals_respect_the_bounds_and_levels_start_where_they_were() -> None:
    window = Window(["a"], 0.0, per_second=1.0)
    window.level("held", 0.0, 2.0)  # before the start: only the latest level counts
    window.started("a", 1.0)
    for i in range(200):
        t = 1.0 + i
        window.arrival(t)
        window.add("wait", 0.0 if i % 10 else 5.0)  # mostly nothing: an interval near 0
        window.add("full", 1.0 if i % 50 == 0 else 0.0)
        window.level("held", t + 0.5, float(i % 3))
    window.finish(201.0)
    found = window.metrics({
        "w": Estimate("wait"), "p": Estimate("full", upper=1.0),
        "u": Estimate("held", "level", upper=1.0, scale=0.5),
    })  # fmt: skip
    assert found["w_low"] >= 0.0
    assert found["p_low"] >= 0.0
    assert found["p_high"] <= 1.0
    assert found["u_high"] <= 1.0
    assert math.isclose(found["w"], 0.5)
    # The level 2 from 1.0 to 1.5 (set before the window opened), then 0, 1, 2, ... halved.
    expected = (2.0 * 0.5 + sum((i % 3) * 1.0 for i in range(199)) + 199 % 3 * 0.5) * 0.5 / 200
    assert math.isclose(found["u"], expected, rel_tol=1e-12)
    assert found["steady_ci"].startswith("95 %, batch means of 10 batches (20 arrivals")


# ---------------------------------------------------------------------------------------------
# Timer lateness


def _lines(speedup: float, late: float, mode: str = "wall") -> dict[str, Any]:
    config = load_config("carpark", [f"clock.speedup={speedup}", f"clock.mode={mode}"])
    lateness = TimerLateness(config)
    history = History()
    history.subscribe(lateness)
    per_minute = 60.0 / speedup
    lines, t = [], 0.0
    for i in range(40):
        minutes = 5.0 if i % 2 else 20.0
        began, t = t, t + minutes * per_minute + late
        fields = {"ts": t, "actor": "car-000", "seq": i, "event": "sleep", "minutes": minutes,
                  "began": began, "what": "park" if i % 2 else "drive"}  # fmt: skip
        if mode == "virtual":
            fields["step"] = i
        lines.append(line_of({"pid": 1, **fields}))
    history.feed(lines)
    history.finish()
    return lateness.summary()


def test_lateness_is_measured_per_named_duration_and_warned_about_past_the_rule() -> None:
    calm = _lines(600.0, 0.0002)
    assert calm["sleeps"] == 40
    assert math.isclose(calm["late_mean_ms"], 0.2, rel_tol=1e-6)
    assert calm["shortest"] == {"what": "park", "mean": 5.0}
    assert math.isclose(calm["share"], lateness_rule(0.0002, 600.0, 5.0), rel_tol=1e-6)
    assert calm["warning"] is None
    park = next(m for m in calm["means"] if m["what"] == "park")
    assert math.isclose(park["realised"] - park["requested"], 0.0002 * 10, rel_tol=1e-6)
    # The same lateness at a speedup 1000 times higher stretches every park by 40 %.
    fast = _lines(600_000.0, 0.0002)
    assert fast["share"] > SIGNIFICANT
    assert "clock.speedup=" in fast["warning"]
    assert "clock.mode=virtual" in fast["warning"]
    assert fast["max_speedup"] < 600_000.0
    assert lateness_rule(0.0002, fast["max_speedup"], 5.0) == pytest.approx(SIGNIFICANT)
    assert _lines(600_000.0, 0.0, mode="virtual")["warning"] is None


# ---------------------------------------------------------------------------------------------
# A sweep's intervals


def test_sweep_intervals_stay_in_bounds_and_say_how_many_runs_they_rest_on() -> None:
    grid = expand([parse_axis("params.cars=1,2")], repeat=3, zipped=False)
    declared = [Metric("wait", "wait", "sim min", lower=0.0), Metric("p", "p", "%"),
                Metric("steady", "s", "%", interval=True)]  # fmt: skip
    rows = []
    for point, values in ((0, [(0.01, 0.0), (0.0, 0.0), (0.5, 0.98)]), (1, [(3.0, 0.99)])):
        for rep, (wait, p) in enumerate(values):
            rows.append({"point": point, "rep": rep, "status": "ok", "params.cars": point + 1,
                         "wait": wait, "p": p, "steady": p, "steady_low": p / 2,
                         "steady_high": min(1.0, p * 1.01)})  # fmt: skip
    summary = aggregate(grid, rows, declared)
    first, second = summary
    # 3 runs: the symmetric t interval would reach below 0 and above 100 %; it does not.
    assert first["wait_mean"] - first["wait_ci95"] < 0
    assert first["wait_low"] == 0.0
    assert first["wait_n"] == 3
    assert first["p_high"] == 1.0
    assert first["p_low"] == 0.0
    assert "3 runs" in first["wait_ci"]
    assert "steady_low_mean" not in first  # a run's own interval is no metric of its own
    # 1 run: no spread across runs, but its own batch-means interval.
    assert second["wait_low"] is None
    assert second["wait_n"] == 1
    assert (second["steady_low"], second["steady_high"]) == (0.495, 0.9999)
    assert second["steady_ci"] == "1 run, its own batch means"


def test_a_metric_in_words_is_never_averaged_even_when_it_reads_as_a_number() -> None:
    # One consumer's share is "12": read back from results.csv it is a number, and it was
    # averaged as one, while "12 / 9" of two consumers was not.
    grid = expand([parse_axis("params.consumers=1,2")], repeat=2, zipped=False)
    declared = [Metric("handled_per_consumer", "items per consumer", words=True),
                Metric("taken", "items taken")]  # fmt: skip
    rows = [{"point": point, "rep": rep, "status": "ok", "params.consumers": point + 1,
             "handled_per_consumer": share, "taken": 12 + rep}
            for point, shares in ((0, (12, 13)), (1, ("12 / 9", "10 / 11")))
            for rep, share in enumerate(shares)]  # fmt: skip
    for point in aggregate(grid, rows, declared):
        assert "handled_per_consumer_mean" not in point
        assert point["taken_mean"] == 12.5
