"""An actor's process set-up, however it is started: under fork most of it is done once in
the launcher (sim.runtime.worker.prepare) and inherited, and must come out the same."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import events_of, manifest_of, only_run_dir, sim

STOP = sorted(int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_actor_process_is_set_up_alike_under_every_start_method(
    out: Path, tmp_path: Path, method: str
) -> None:
    config = tmp_path / "startup.toml"
    config.write_text(
        f'scenario = "tests.scenario_startup"\n[engine]\nstart_method = "{method}"\n',
        encoding="utf-8",
    )
    result = sim("run", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    assert manifest_of(run_dir)["status"] == "ok"
    events = events_of(run_dir)
    setups = {e["actor"]: e for e in events if e["event"] == "setup"}
    assert sorted(setups) == ["probe-000", "probe-001", "probe-002"]
    for actor, setup in setups.items():
        # stdin: the null device, as multiprocessing leaves it in a child
        assert setup["stdin"] == "/dev/null"
        assert setup["stdin_read"] == ""
        # Ctrl-C is the engine's; SIGTERM and a crash fault's SIGUSR1 are the actor's own
        assert setup["sigint_ignored"]
        assert setup["sigterm_handled"]
        assert setup["sigusr1_handled"]
        # unblocked in the main thread once the role runs, blocked in every other thread
        assert not set(STOP) & set(setup["main_blocked"]), setup["main_blocked"]
        assert len(setup["threads_blocked"]) == 1, "the flusher thread"
        for blocked in setup["threads_blocked"]:
            assert set(STOP) <= set(blocked), blocked
        assert setup["comm"] == actor
        assert setup["heavy"] == [], "imported by the engine for its analysis, not by actors"
    via = [e for e in events if e["event"] == "via_structlog"]
    assert sorted(e["actor"] for e in via) == sorted(setups)
    for e in via:
        assert e["pid"] == setups[e["actor"]]["pid"]
        assert e["n"] == 1
        assert e["seq"] == setups[e["actor"]]["seq"] + 1
