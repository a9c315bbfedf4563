"""The run path end to end: the real CLI, real processes, the real coordinator and log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    alive,
    events_of,
    manifest_of,
    only_run_dir,
    sent_until_closed,
    sim,
    socket_files,
)

# A quick car park: 30 cars on 10 spaces, short stays, some impatient drivers give up.
QUICK = [
    "-s", "params.cars=30",
    "-s", "params.capacity=10",
    "-s", "params.visits=3",
    "-s", "params.drive.mean=5",
    "-s", "params.park.mean=40",
    "-s", "params.patience=8",
    "-s", "clock.speedup=12000",
]  # fmt: skip


def holders_over_time(events: list[dict[str, Any]], prim: str) -> list[int]:
    """Cars holding a space after each op, counted over [acquire ok, release invoke]."""
    ops = sorted(
        (e for e in events if e["event"] == "op" and e["prim"] == prim),
        key=lambda e: (e["ts"], e["actor"], e["seq"]),
    )
    level, levels = 0, []
    for e in ops:
        if e["op"] == "acquire" and e["phase"] == "ok":
            level += 1
        elif e["op"] == "release" and e["phase"] == "invoke":
            level -= 1
        levels.append(level)
    return levels


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.timeout(120)
def test_quick_carpark_runs_and_holds_its_invariants(out: Path, method: str) -> None:
    result = sim("run", "carpark.toml", *QUICK, "-s", f"engine.start_method={method}",
                 "--seed", "11", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    assert result.stdout.strip() == str(run_dir)
    events = events_of(run_dir)
    cars = [e["actor"] for e in events if e["event"] == "actor_start"]
    assert len(cars) == 30

    # Never more cars parked than spaces, and the car park did fill up.
    levels = holders_over_time(events, "spaces")
    assert max(levels) <= 10
    assert max(levels) == 10
    assert levels[-1] == 0

    # Per-actor seq runs 0..n-1 with no gap, and each line claims its own pid.
    by_actor: dict[str, list[int]] = defaultdict(list)
    pids: dict[str, set[int]] = defaultdict(set)
    for e in events:
        by_actor[e["actor"]].append(e["seq"])
        pids[e["actor"]].add(e["pid"])
    for actor, seqs in by_actor.items():
        assert sorted(seqs) == list(range(len(seqs))), actor
        assert len(pids[actor]) == 1, actor

    # Every visit is accounted for: it parked or gave up, exactly once.
    outcomes = Counter(
        (e["actor"], e["visit"]) for e in events if e["event"] in ("park", "give_up")
    )
    assert set(outcomes) == {(car, v) for car in cars for v in range(3)}
    assert set(outcomes.values()) == {1}
    completions = [e for e in events if e["event"] == "op" and e["op"] == "acquire"
                   and e["phase"] != "invoke"]  # fmt: skip
    assert len(completions) == 30 * 3

    manifest = manifest_of(run_dir)
    assert manifest["status"] == "ok"
    assert manifest["start_method"] == method
    assert manifest["seed"] == 11
    assert manifest["config"]["params"]["capacity"] == 10
    assert {v["status"] for v in manifest["invariants"]} == {"pass"}
    assert manifest["metrics"]["served"] + manifest["metrics"]["gave_up"] == 90
    assert manifest["metrics"]["occupancy_max"] == 10
    for name, record in manifest["actors"].items():
        assert record["exitcode"] == 0
        assert record["lines"] == len(by_actor[name])
        assert not alive(record["pid"])
    assert not socket_files(out)


@pytest.mark.timeout(120)
def test_same_seed_gives_same_draws(out: Path) -> None:
    def draws(seed: str) -> dict[str, list[float]]:
        folder = out / seed / str(len(list(out.glob(f"{seed}/*"))))
        result = sim("run", "carpark.toml", *QUICK, "--seed", seed, "--quiet", "--out", str(folder))
        assert result.returncode == 0, result.stderr
        found: dict[str, list[float]] = defaultdict(list)
        for e in events_of(only_run_dir(folder)):
            if e["event"] == "arrive":
                found[e["actor"]].append(e["drove"])
        return found

    first, second, other = draws("5"), draws("5"), draws("6")
    assert first == second
    assert first != other


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", [True, False])
def test_crashing_actor_fails_the_run(out: Path, tmp_path: Path, stop: bool) -> None:
    # A scenario (tests/scenario_crash.py) whose one actor raises ZeroDivisionError while the
    # other sleeps: by default the engine stops the sleeper instead of waiting for it.
    config = tmp_path / "broken.toml"
    config.write_text(
        'scenario = "tests.scenario_crash"\n[clock]\nspeedup = 6000\n'
        f"[params]\nsteady_minutes = {10_000 if stop else 1}\n"
        f"[engine]\nstop_on_crash = {str(stop).lower()}\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    result = sim("run", str(config), "--out", str(out))
    assert result.returncode == 1, result.stderr
    manifest = manifest_of(only_run_dir(out))
    assert manifest["status"] == "failed"
    failed = {v["name"]: v for v in manifest["invariants"] if v["status"] == "fail"}
    assert "every actor ended cleanly" in failed
    detail = failed["every actor ended cleanly"]["detail"]
    assert "crasher-000: crashed (ZeroDivisionError: division by zero" in detail
    assert "steady-000" not in detail  # stopped by the engine is not a failure of its own
    assert manifest["actors"]["crasher-000"]["exitcode"] == 1
    assert manifest["actors"]["steady-000"]["exitcode"] == (143 if stop else 0)
    if stop:
        assert time.monotonic() - started < 30  # 10,000 minutes would be 100 s


def _wait_for_address(out: Path, timeout: float = 30) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in out.glob("*/run.json"):
            address = json.loads(path.read_text(encoding="utf-8")).get("coordinator", {})
            if "address" in address:
                host, port = address["address"]
                return host, port
        time.sleep(0.02)
    raise AssertionError("the run never published its coordinator address")


@pytest.mark.timeout(120)
def test_intruders_are_refused_and_the_log_is_unaffected(out: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "run", "carpark.toml", *QUICK, "-s", "clock.speedup=3000",
         "--quiet", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = _wait_for_address(out)
        intruders = [
            b'{"hello":1,"secret":"guess","actor":"car-000","pid":1}\n',  # wrong secret
            b'{"ts":0.1,"actor":"car-001","pid":1,"seq":0,"event":"park"}\n',  # no hello
            bytes(range(256)) * 4 + b"\n",  # garbage bytes
            b"{" + b"x" * (200 * 1024),  # an over-long line
        ]
        for payload in intruders:
            assert sent_until_closed(address, payload) == b""  # closed without a word
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    run_dir = only_run_dir(out)
    manifest = manifest_of(run_dir)
    assert manifest["coordinator"]["refused"] == len(intruders)
    assert manifest["status"] == "ok"
    assert {v["status"] for v in manifest["invariants"]} == {"pass"}
    events = events_of(run_dir)
    refusals = [e for e in events if e["actor"] == "coordinator" and e["event"] == "refused"]
    assert len(refusals) == len(intruders)
    assert not any(e["actor"] == "car-001" and e["pid"] == 1 for e in events)
