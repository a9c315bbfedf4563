"""Dining philosophers: the naive strategy deadlocks and is detected; the fixes never do."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from .conftest import alive, events_of, manifest_of, only_run_dir, sim


def fork_holders(events: list[dict[str, Any]]) -> dict[str, int]:
    """The most holders each fork ever had, counted over [acquire ok, release invoke]."""
    level: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    for e in sorted(events, key=lambda e: (e["ts"], e["actor"], e["seq"])):
        if e["event"] != "op" or not e["prim"].startswith("fork-"):
            continue
        if e["op"] == "acquire" and e["phase"] == "ok":
            level[e["prim"]] += 1
            most[e["prim"]] = max(most[e["prim"]], level[e["prim"]])
        elif e["op"] == "release" and e["phase"] == "invoke":
            level[e["prim"]] -= 1
    return dict(most)


@pytest.mark.timeout(60)
def test_naive_philosophers_deadlock_is_detected_and_expected(out: Path) -> None:
    # A 2 s pause between the forks, not the config's 0.2 s: in a wall run the deadlock needs
    # every philosopher to take a first fork within the pause, and in one CI run on a loaded
    # machine the five started too far apart (26 s for 25 meals, no deadlock).
    result = sim("run", "philosophers-naive", "-s", "params.hesitate=20", "--out", str(out),
                 timeout=50)  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    deadlocks = [e for e in events if e["event"] == "deadlock"]
    assert len(deadlocks) == 1
    waits = deadlocks[0]["waits"]
    # Everyone waits for a fork its neighbour holds: the circle of waits is closed.
    assert len(waits) == 5
    for wait in waits:
        i = int(wait["actor"].split("-")[1])
        assert wait["op"] == "acquire"
        assert wait["prim"] == f"fork-{(i + 1) % 5}"
        assert wait["held_by"] == [f"phil-{(i + 1) % 5:03d}"]
    # Detected within a bounded time: the stall window (1 s) plus a little.
    last_progress = max(e["ts"] for e in events if e["actor"].startswith("phil")
                        and e["event"] == "op" and e["phase"] == "invoke")  # fmt: skip
    assert deadlocks[0]["ts"] - last_progress < 3.0
    assert max(fork_holders(events).values()) == 1
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "ok"
    shown = [v for v in manifest["invariants"] if v["status"] == "expected"]
    assert [v["phenomenon"] for v in shown] == ["deadlock"]
    for record in manifest["actors"].values():
        assert not alive(record["pid"])
    assert "As this config expects, the run shows deadlock" in result.stderr


@pytest.mark.timeout(60)
def test_the_same_deadlock_undeclared_fails_the_run(out: Path) -> None:
    result = sim("run", "philosophers-naive", "-s", "expect=[]", "--out", str(out), timeout=50)
    assert result.returncode == 1, result.stderr
    manifest = manifest_of(only_run_dir(out))
    assert manifest["status"] == "failed"
    assert manifest["reason"].startswith("deadlock: ")


@pytest.mark.parametrize("strategy", ["ordered", "waiter"])
@pytest.mark.timeout(60)
def test_ordered_and_waiter_never_deadlock(out: Path, strategy: str) -> None:
    result = sim("run", "philosophers", "-s", f"params.strategy={strategy}",
                 "-s", "params.meals=3", "-s", "clock.speedup=6000", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    assert not [e for e in events if e["event"] == "deadlock"]
    meals: dict[str, int] = defaultdict(int)
    for e in events:
        if e["event"] == "eat":
            meals[e["actor"]] += 1
    assert meals == {f"phil-{i:03d}": 3 for i in range(5)}
    assert max(fork_holders(events).values()) == 1
    if strategy == "waiter":
        seated = [e for e in events if e["event"] == "op" and e["prim"] == "waiter"]
        assert seated


@pytest.mark.timeout(60)
def test_a_declared_deadlock_that_does_not_happen_fails(out: Path, tmp_path: Path) -> None:
    config = tmp_path / "ordered-but-expecting.toml"
    config.write_text(
        'scenario = "philosophers"\nexpect = ["deadlock"]\n'
        '[params]\nmeals = 2\nstrategy = "ordered"\n[clock]\nspeedup = 6000\n',
        encoding="utf-8",
    )
    result = sim("run", str(config), "--out", str(out))
    assert result.returncode == 1, result.stderr
    verdicts = manifest_of(only_run_dir(out))["invariants"]
    failed = [v for v in verdicts if v["status"] == "fail"]
    assert failed
    assert "expected deadlock, but it did not appear" in failed[0]["detail"]


@pytest.mark.timeout(120)
def test_a_deadlocks_leak_checks_say_who_still_held_a_fork_when_it_was_stopped(
    tmp_path: Path,
) -> None:
    # Each said "every holder gave its units back" of a fork its philosopher held until the
    # engine stopped the deadlocked run: true of no one.
    import re

    import sim as api

    run = api.run("philosophers-naive", set={"clock.mode": "virtual"}, seed=3, out=tmp_path)
    leaks = [v for v in run.verdicts if v.name.endswith(": no unit lost with its holder")]
    assert len(leaks) == 5
    for verdict in leaks:
        assert verdict.status == "pass"
        assert re.fullmatch(r"no unit lost: phil-00\d still held its unit when the engine "
                            r"stopped the run \(stopped, not lost\)", verdict.detail)  # fmt: skip
