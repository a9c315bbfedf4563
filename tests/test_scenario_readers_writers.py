"""Readers-writers: writers alone, readers together; readers-preference starves the writers,
the turnstile bounds their wait.

The runs use the real CLI (real processes, the coordinator socket); the invariants are
recomputed here from the events, independently of sim's own checks.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from .conftest import finished

SPEEDUP = 3600
BOUND = 45.0
# The bundled configs at double speed: six readers, 10 reads each, overlap for about 100
# simulated minutes (under 2 s).
QUICK = ["-s", f"clock.speedup={SPEEDUP}"]


run = partial(finished, args=QUICK, timeout=60)  # a quick run of a config


def occupancy(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(most readers inside at once, violations: a writer with anybody else inside)."""
    readers: set[str] = set()
    writers: set[str] = set()
    most = bad = 0
    for e in events:
        kind = e["event"]
        if kind == "enter_read":
            bad += bool(writers)
            readers.add(e["actor"])
            most = max(most, len(readers))
        elif kind == "enter_write":
            bad += bool(writers or readers)
            writers.add(e["actor"])
        elif kind == "exit_read":
            readers.discard(e["actor"])
        elif kind == "exit_write":
            writers.discard(e["actor"])
    return most, bad


def writer_waits(events: list[dict[str, Any]]) -> list[float]:
    """Simulated minutes from each want_write to its enter_write."""
    wanted: dict[str, float] = {}
    waits = []
    for e in events:
        if e["event"] == "want_write":
            wanted[e["actor"]] = e["ts"]
        elif e["event"] == "enter_write":
            waits.append((e["ts"] - wanted.pop(e["actor"])) * SPEEDUP / 60)
    return waits


def counts(events: list[dict[str, Any]]) -> tuple[int, int]:
    reads = sum(e["event"] == "exit_read" for e in events)
    return reads, sum(e["event"] == "exit_write" for e in events)


@pytest.mark.timeout(60)
def test_fair_writers_are_alone_and_wait_a_bounded_time(out: Path) -> None:
    result = run(out, "readers_writers")
    assert result.code == 0
    most, bad = occupancy(result.events)
    assert bad == 0
    assert most >= 2  # readers did share the resource
    waits = writer_waits(result.events)
    assert len(waits) == 2 * 3
    assert max(waits) <= BOUND
    assert counts(result.events) == (6 * 10, 2 * 3)
    assert {v["status"] for v in result.manifest["invariants"]} == {"pass"}
    metrics = result.manifest["metrics"]
    assert metrics["starved_writes"] == 0
    assert metrics["writer_wait_max"] == pytest.approx(max(waits), abs=0.01)


@pytest.mark.timeout(60)
def test_readers_preference_starves_the_writers_as_declared(out: Path) -> None:
    result = run(out, "readers_writers-starvation")
    assert result.code == 0
    most, bad = occupancy(result.events)
    assert bad == 0
    assert most >= 2
    waits = writer_waits(result.events)
    assert max(waits) > BOUND
    # The starved writer got in only after many reads had started after its request.
    assert counts(result.events) == (6 * 10, 2 * 3)
    shown = [v for v in result.manifest["invariants"] if v["status"] == "expected"]
    assert [v["phenomenon"] for v in shown] == ["writer_starvation"]
    assert "writers starved" in shown[0]["detail"]
    assert result.manifest["metrics"]["writer_wait_max"] == pytest.approx(max(waits), abs=0.01)
    assert result.manifest["metrics"]["starved_writes"] == sum(w > BOUND for w in waits)


@pytest.mark.timeout(60)
def test_the_starvation_undeclared_fails_the_run(out: Path) -> None:
    result = run(out, "readers_writers-starvation", "expect=[]")
    assert result.code == 1
    assert max(writer_waits(result.events)) > BOUND
    failed = [v["name"] for v in result.manifest["invariants"] if v["status"] == "fail"]
    assert failed == [f"no writer waits over {BOUND:g} sim min"]
