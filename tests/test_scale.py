"""10,000 actors on one machine: not refused for open files on a 20,000 limit, and run whole."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sim.errors import ScenarioError
from sim.runtime import engine

from .conftest import ROOT

LIMIT = 20_000


def _fits() -> bool:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard == resource.RLIM_INFINITY or hard >= LIMIT


def _limit_to(n: int) -> None:
    # In the child only: the engine may raise its soft limit up to this, no further.
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def test_plan_of_10000_actors_fits_20000_open_files() -> None:
    """Under fork the engine holds one descriptor per actor: 10,000 fit in 20,000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not _fits():
        pytest.skip(f"the hard open-file limit is {hard}, below {LIMIT}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))
        engine._ensure_open_files(10_000, "fork")
        with pytest.raises(ScenarioError, match="open files"):
            engine._ensure_open_files(10_000, "spawn")  # three each: too many
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_10000_actors_run_with_no_line_lost(tmp_path: Path) -> None:
    """10,000 car processes on a 20,000 open-file limit: every one starts, logs every line and
    ends; the run's checks pass (seq contiguous per actor, every actor ended cleanly)."""
    if not _fits():
        pytest.skip(f"the hard open-file limit is below {LIMIT}")
    cars = 10_000
    args = [sys.executable, "-m", "sim", "run", "carpark.toml", "--quiet", "--out", str(tmp_path)]
    for item in (
        f"params.cars={cars}",
        f"params.capacity={cars}",
        "params.visits=1",
        "params.drive.mean=0.1",
        "params.park.mean=0.1",
        "clock.speedup=3600",
        "engine.start_method=fork",
        "engine.timeout=300",
    ):
        args += ["-s", item]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=380,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        preexec_fn=lambda: _limit_to(LIMIT),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "ok", manifest.get("reason")
    checks = {c["name"]: c for c in manifest["invariants"]}
    assert checks["seq contiguous"]["status"] == "pass", checks["seq contiguous"]
    assert checks["every actor ended cleanly"]["status"] == "pass"
    assert manifest["coordinator"]["refused"] == 0
    assert manifest["coordinator"]["protocol_errors"] == 0
    # Every actor's lines are there, from its start to its end.
    seqs: dict[str, list[int]] = {}
    events: Counter[str] = Counter()
    lines = 0
    with open(run_dir / "events.jsonl", "rb") as fh:
        for raw in fh:
            event = json.loads(raw)
            lines += 1
            events[event["event"]] += 1
            seqs.setdefault(event["actor"], []).append(event["seq"])
    assert lines == manifest["events"]
    assert events["actor_start"] == cars
    assert events["actor_end"] == cars
    assert len(seqs) == cars + 1  # and the engine
    for actor, got in seqs.items():
        assert sorted(got) == list(range(len(got))), actor
