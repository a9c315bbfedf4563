"""The sleeping barber: every customer served or turned away, never more waiting than chairs,
one customer in the barber's chair at a time.

The runs use the real CLI (real processes, the coordinator socket); the invariants are
recomputed here from the events, independently of sim's own checks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import finished


def assert_barber_invariants(events: list[dict[str, Any]], customers: int, chairs: int) -> None:
    """The scenario's invariants, recomputed from the domain events and the op events."""
    # Every customer ends exactly once: served (leave) or turned away.
    outcomes = Counter(e["actor"] for e in events if e["event"] in ("leave", "turned_away"))
    assert set(outcomes) == {f"customer-{i:03d}" for i in range(customers)}
    assert set(outcomes.values()) == {1}
    # Waiting chairs: never more than `chairs` taken; turned away only when all are.
    sitting = 0
    in_chair: set[str] = set()
    for e in events:
        kind = e["event"]
        if kind == "sit_down":
            sitting += 1
            assert sitting <= chairs
            assert e["waiting"] == sitting  # the shared counter agrees with the log
        elif kind == "to_chair":
            sitting -= 1
            assert not in_chair, f"{e['actor']} took the chair from {in_chair}"
            in_chair.add(e["actor"])
        elif kind == "leave":
            in_chair.remove(e["actor"])
        elif kind == "turned_away":
            assert sitting == chairs
    assert sitting == 0
    assert not in_chair
    # The barber cut exactly the customers who were served, one cut after the other.
    cuts = [e for e in events if e["actor"] == "barber" and e["event"] in ("cut_start", "cut_end")]
    assert [e["event"] for e in cuts] == ["cut_start", "cut_end"] * (len(cuts) // 2)
    served = sum(e["event"] == "leave" for e in events)
    assert len(cuts) == 2 * served
    (close,) = [e for e in events if e["event"] == "close"]
    assert close["served"] + close["turned_away"] == customers


@pytest.mark.timeout(60)
def test_the_barber_serves_or_turns_away_every_customer(out: Path) -> None:
    result = finished(out, "sleeping_barber", "clock.speedup=4800", timeout=60)
    assert result.code == 0
    assert_barber_invariants(result.events, customers=20, chairs=3)
    metrics = result.manifest["metrics"]
    verdicts = {v["name"]: v["status"] for v in result.manifest["invariants"]}
    # A wall run's timing decides whether anybody is turned away; when nobody is, the lost
    # update check of that counter has nothing to look at (it once failed this test so, in a
    # full suite on a loaded machine). Every other check passes.
    if metrics["turned_away"] == 0:
        assert verdicts.pop("turned_away: no lost updates") == "skip"
    assert set(verdicts.values()) == {"pass"}
    assert metrics["served"] + metrics["turned_away"] == 20
    assert metrics["waiting_max"] <= 3


@pytest.mark.timeout(60)
def test_a_crowded_shop_turns_customers_away(out: Path) -> None:
    # Twelve customers in 30 minutes, 10-minute haircuts, one waiting chair: the barber can
    # start at most four cuts while they arrive and seat one more, so at least 7 are turned away.
    result = finished(
        out, "sleeping_barber", "params.customers=12", "params.chairs=1", "params.open_for=30",
        "params.cut.dist=fixed", "params.cut.mean=10", "clock.speedup=4800", timeout=60,
    )  # fmt: skip
    assert result.code == 0
    assert_barber_invariants(result.events, customers=12, chairs=1)
    away = [e for e in result.events if e["event"] == "turned_away"]
    assert len(away) >= 7
    assert result.manifest["metrics"]["turned_away"] == len(away)
    verdicts = {v["name"]: v for v in result.manifest["invariants"]}
    assert verdicts["at most 1 waiting, turned away only when full"]["status"] == "pass"
    assert f"{len(away)} turned away" in verdicts["every customer served or turned away"]["detail"]
