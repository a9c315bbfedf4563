"""Every bundled config runs to exit 0 with its defaults, and replay agrees with the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.config import bundled_configs

from .conftest import manifest_of, only_run_dir, sim

CONFIGS = sorted(p.name for p in (bundled_configs() or Path()).glob("*.toml"))


def test_there_are_bundled_configs() -> None:
    assert "carpark.toml" in CONFIGS
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.timeout(150)
def test_bundled_config_runs_clean_and_replays_the_same(out: Path, name: str) -> None:
    result = sim("run", name, "--out", str(out), "--quiet", timeout=140)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "ok"
    statuses = {v["status"] for v in manifest["invariants"]}
    assert "fail" not in statuses
    # A demo config shows what it declares.
    shown = {v["phenomenon"] for v in manifest["invariants"] if v["status"] == "expected"}
    assert shown == set(manifest["config"]["expect"])
    replayed = sim("replay", str(run_dir), "--check", "--json")
    assert replayed.returncode == 0, replayed.stderr
    again = json.loads(replayed.stdout)
    assert again["metrics"] == manifest["metrics"]
    assert again["invariants"] == manifest["invariants"]
