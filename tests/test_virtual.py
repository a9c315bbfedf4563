"""Virtual runs: real processes under a controlled scheduler, the same run every time.

Every test here runs the real CLI (real actor processes, real primitives and sockets) with
``clock.mode = "virtual"``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.queueing import finite_source

from .conftest import ROOT, events_of, manifest_of, only_run_dir, sim

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.toml"))
# What the OS assigns (like a pid) and what measures wall time: a virtual run's log is the
# same apart from these. A socket bound to port 0 gets another port every run.
_OS_FIELDS = {"pid", "ppid", "target_pid", "run_id", "wall_s", "peer", "local", "sender", "host"}
_PORT_FIELDS = {"port", "to"}
# Fixed ports for the socket scenarios, so that even the values written to `port` agree; each
# pytest-xdist worker (gw0, gw1, ...) has ports of its own, as tests run side by side. Below
# Linux's ephemeral range (32768-60999): in it, any connection's local port (the actors' own,
# to the coordinator) may hold one of them (it did: "Address already in use", once in CI).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_SOCKETS = ["tcp_echo", "udp_datagrams", "udp_datagrams-lossy"]
_PORTS = {name: 27311 + 3 * _WORKER + i for i, name in enumerate(_SOCKETS)}


def normalised(run_dir: Path) -> list[str]:
    """The run's lines without OS-assigned and wall-clock fields, in step order."""
    lines = []
    for event in events_of(run_dir):
        for key in _OS_FIELDS:
            event.pop(key, None)
        if event.get("kind") in ("udp", "tcp") or event.get("event") == "bound":
            for key in _PORT_FIELDS:
                event.pop(key, None)
        if event.get("event") == "run_start":
            event.pop("start_method", None)
            event["config"]["engine"].pop("start_method", None)
        lines.append(event)
    lines.sort(key=lambda e: (e["step"], e["actor"], e["seq"]))
    return [json.dumps(e, sort_keys=True) for e in lines]


def virtual_run(out: Path, config: str, *sets: str, seed: int = 7, **kw: Any) -> Path:
    extra = [f"params.port={_PORTS[config]}"] if config in _PORTS else []
    args = [a for s in ["clock.mode=virtual", *extra, *sets] for a in ("-s", s)]
    result = sim("run", config, *args, "--seed", str(seed), "--out", str(out), "--quiet",
                 timeout=kw.get("timeout", 60))  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return Path(result.stdout.strip())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("config", CONFIGS)
def test_three_virtual_runs_with_one_seed_give_the_same_log(config: str, tmp_path: Path) -> None:
    runs = [virtual_run(tmp_path / str(i), config) for i in range(3)]
    first = normalised(runs[0])
    assert len(first) > 10
    for other in runs[1:]:
        assert normalised(other) == first
    # Every line carries the step, and the log is in step order as written.
    steps = [e["step"] for e in events_of(runs[0])]
    assert all(isinstance(s, int) for s in steps)
    assert (runs[0] / "schedule.json").is_file()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("config", ["carpark-sweep", "h2o", "tcp_echo", "queue_workers-joinable",
                                    "bounded_buffer-if", "pipe-pingpong"])  # fmt: skip
def test_fork_forkserver_and_spawn_give_the_same_log(config: str, tmp_path: Path) -> None:
    logs = [
        normalised(virtual_run(tmp_path / m, config, f"engine.start_method={m}", timeout=150))
        for m in ("fork", "forkserver", "spawn")
    ]
    assert logs[0] == logs[1] == logs[2]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("config", ["mutex", "tcp_echo"])
def test_a_unix_socket_transport_gives_the_same_log_as_tcp(config: str, tmp_path: Path) -> None:
    # A virtual run over engine.transport = "unix" once failed at its first step with an
    # AttributeError (a Unix socket's stream has no asyncio transport to take over).
    logs = []
    for transport in ("tcp", "unix"):
        run_dir = virtual_run(tmp_path / transport, config, f"engine.transport={transport}")
        lines = [json.loads(line) for line in normalised(run_dir)]
        for line in lines:
            if line["event"] == "run_start":
                line["config"]["engine"].pop("transport")
        logs.append(lines)
    assert len(logs[0]) > 10
    assert logs[0] == logs[1]


@pytest.mark.timeout(180)
def test_a_crash_stops_a_virtual_run_at_the_same_step_under_every_start_method(
    tmp_path: Path,
) -> None:
    # The crasher's exit is judged before another step is granted, whether its process said
    # it (fork) or was reaped (forkserver, spawn): the other actor's ticks end at one step.
    config = tmp_path / "crash.toml"
    config.write_text(
        'scenario = "tests.scenario_crash"\n'
        "[params]\nsteady_minutes = 1.0\ncrash_after = 0.5\nticks = 1000\n",
        encoding="utf-8",
    )
    runs = {m: virtual_run(tmp_path / m, str(config), f"engine.start_method={m}", timeout=150)
            for m in ("fork", "forkserver", "spawn")}  # fmt: skip
    runs["fork again"] = virtual_run(tmp_path / "again", str(config), "engine.start_method=fork")
    logs = {m: normalised(run_dir) for m, run_dir in runs.items()}
    assert logs["fork"] == logs["forkserver"] == logs["spawn"] == logs["fork again"]
    events = events_of(runs["fork"])
    ticks = [e for e in events if e["event"] == "tick"]
    (stopping,) = [e for e in events if e["event"] == "stopping"]
    assert 0 < len(ticks) < 1000, "stopped by the crash, not done"
    assert stopping["reason"] == "crasher-000 exited with code 1"
    assert stopping["live"] == 1
    (crashed,) = [e for e in events if e["event"] == "actor_end" and e["actor"] == "crasher-000"]
    # The stop comes at the step the crasher ended (its exit line's), nothing granted between.
    (exit_line,) = [e for e in events if e["event"] == "exit" and e["target"] == "crasher-000"]
    assert stopping["step"] == exit_line["step"] == crashed["step"]
    assert manifest_of(runs["fork"])["status"] == "failed"


@pytest.mark.timeout(60)
def test_every_bundled_config_keeps_its_verdicts_in_virtual_mode(tmp_path: Path) -> None:
    # The kept wall-mode run of each config (tests/fixtures), replayed by today's checks,
    # against a virtual run of it.
    from tests.fixtures.record import RUNS, replayed, unpack

    for config in CONFIGS:
        wall = json.loads((RUNS / config / "run.json").read_text())
        kept = replayed(unpack(RUNS / config, tmp_path))
        run_dir = virtual_run(tmp_path / config, config, seed=1)
        virtual = manifest_of(run_dir)
        assert virtual["status"] == wall["status"] == "ok", (config, virtual["reason"])
        assert {v["name"]: v["status"] for v in virtual["invariants"]} == {
            name: status for name, status, _ in kept["verdicts"]
        }, config


@pytest.mark.timeout(60)
def test_another_seed_takes_another_schedule(tmp_path: Path) -> None:
    def steps(seed: int) -> list[str]:
        run_dir = virtual_run(tmp_path / str(seed), "shared_counter", "params.increments=5",
                              seed=seed)  # fmt: skip
        return [t for t, _ in json.loads((run_dir / "schedule.json").read_text())["steps"]]

    assert steps(1) != steps(2)


@pytest.mark.timeout(60)
def test_a_replayed_schedule_gives_the_same_log_and_a_tampered_one_names_the_step(
    tmp_path: Path,
) -> None:
    first = virtual_run(tmp_path / "a", "queue_workers", seed=3)
    schedule = first / "schedule.json"
    result = sim("run", "queue_workers", "--schedule", str(schedule), "--out", str(tmp_path / "b"),
                 "--quiet", timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert normalised(only_run_dir(tmp_path / "b")) == normalised(first)

    data = json.loads(schedule.read_text())
    step, _ = next((i, s) for i, s in enumerate(data["steps"]) if s[0].startswith("prod"))
    data["steps"][step][0] = "intruder-000"  # a task this run does not have
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    result = sim("run", "queue_workers", "--schedule", str(tampered), "--out",
                 str(tmp_path / "c"), "--quiet", timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert f"the schedule does not fit this run at step {step + 1}" in result.stderr
    assert "Traceback" not in result.stderr
    assert manifest_of(only_run_dir(tmp_path / "c"))["status"] == "failed"
    assert result.stdout.strip() == str(only_run_dir(tmp_path / "c"))  # where it is, as always
    # A seed other than the schedule's cannot fit it: refused before anything runs.
    result = sim("run", "queue_workers", "--schedule", str(schedule), "--seed", "4", "--out",
                 str(tmp_path / "d"), "--quiet", timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--seed: 4: the schedule was recorded with seed 3" in result.stderr
    assert not (tmp_path / "d").exists()
    # The wall clock asked for with it was replaced by the virtual one without a word; also
    # when the whole clock table is given.
    for setting in ("clock.mode=wall", 'clock={mode="wall", speedup=600}'):
        result = sim("run", "queue_workers", "--schedule", str(schedule), "-s", setting,
                     "--out", str(tmp_path / "e"), "--quiet", timeout=60)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert ("-s: clock.mode: wall: a schedule replays a virtual run, on the virtual clock "
                "only") in result.stderr, setting  # fmt: skip
        assert not (tmp_path / "e").exists()
    # Saying virtual is no contradiction.
    result = sim("run", "queue_workers", "--schedule", str(schedule), "-s", "clock.mode=virtual",
                 "--out", str(tmp_path / "f"), "--quiet", timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def _explore(tmp_path: Path, *args: str, timeout: float = 100) -> tuple[int, str, str]:
    result = sim("explore", *args, "--out", str(tmp_path), timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.strip(), result.stderr


@pytest.mark.timeout(120)
def test_explore_finds_the_naive_philosophers_deadlock_and_its_shrunk_schedule_replays_it(
    tmp_path: Path,
) -> None:
    code, shrunk, report = _explore(tmp_path, "philosophers-naive", "--runs", "50")
    assert code == 1
    assert "found deadlock (as the config declares) after" in report
    found_after = int(report.split(" after ")[1].split()[0])
    assert found_after <= 50
    minimal = Path(shrunk)
    assert minimal.name == "schedule.min.json"
    original = next(e for e in events_of(minimal.parent) if e["event"] == "deadlock")
    result = sim("run", "philosophers-naive", "--schedule", str(minimal), "--out",
                 str(tmp_path / "again"), "--quiet", timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr  # the config expects the deadlock
    again = [e for e in events_of(only_run_dir(tmp_path / "again")) if e["event"] == "deadlock"]
    assert again[0]["cycle"] == original["cycle"]
    assert len(original["cycle"]) == 6  # five philosophers and back to the first
    assert again[0]["explanation"] == original["explanation"]


@pytest.mark.timeout(120)
def test_a_run_cut_short_by_max_steps_is_a_timeout_not_a_missing_declared_deadlock(
    tmp_path: Path,
) -> None:
    # It said "found deadlock (not declared by the config) ... expected deadlock, but it did
    # not appear": the config does declare it, and what happened was the step limit.
    code, _, report = _explore(tmp_path, "philosophers-naive", "--runs", "5", "--max-steps",
                               "10")  # fmt: skip
    assert code == 1
    assert "\nfound timeout (not declared by the config) after 1 schedule" in report
    assert "still running after 10 steps (engine.max_steps)" in report
    assert "did not appear" not in report
    run = sim("run", "philosophers-naive", "-s", "clock.mode=virtual", "-s", "engine.max_steps=10",
              "--out", str(tmp_path / "run"), "--quiet", timeout=60)  # fmt: skip
    assert run.returncode == 1
    verdicts = manifest_of(only_run_dir(tmp_path / "run"))["invariants"]
    (deadlock,) = [v for v in verdicts if v["name"] == "no deadlock"]
    assert deadlock["status"] == "skip"
    assert deadlock["detail"].startswith("run was stopped early, before deadlock appeared")
    # A run the engine stopped at its end (the deadlock) is no run cut short: a declared
    # phenomenon that did not appear by then still fails it.
    ended = sim("run", "philosophers-naive", "-s", 'expect=["deadlock","leaked_unit"]',
                "-s", "clock.mode=virtual", "--out", str(tmp_path / "ended"), "--quiet",
                timeout=60)  # fmt: skip
    assert ended.returncode == 1
    verdicts = manifest_of(only_run_dir(tmp_path / "ended"))["invariants"]
    leaked = [v for v in verdicts if v["phenomenon"] == "leaked_unit" and v["status"] == "fail"]
    assert leaked
    assert leaked[0]["detail"].startswith("expected leaked_unit, but it did not appear")
    assert [v["status"] for v in verdicts if v["name"] == "no deadlock"] == ["expected"]


@pytest.mark.timeout(120)
def test_explore_dfs_covers_every_schedule_of_ordered_philosophers_without_deadlock(
    tmp_path: Path,
) -> None:
    # No --runs: a dfs search's default lets the bound be finished.
    code, _, report = _explore(tmp_path, "philosophers", "--strategy", "dfs", "--preemptions",
                               "2", "-s", "params.meals=2")  # fmt: skip
    assert code == 0, report
    assert "every schedule within the preemption bound was explored" in report
    tried = int(report.split("no failure in ")[1].split()[0].replace(",", ""))
    assert tried > 10  # it did branch


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_explore_dfs_covers_the_bundled_ordered_philosophers(tmp_path: Path) -> None:
    code, _, report = _explore(tmp_path, "philosophers", "--strategy", "dfs", "--preemptions",
                               "2", "--runs", "5000", timeout=580)  # fmt: skip
    assert code == 0, report
    assert "every schedule within the preemption bound was explored" in report


@pytest.mark.timeout(120)
def test_explore_finds_lost_updates_and_none_with_the_lock(tmp_path: Path) -> None:
    code, _, report = _explore(tmp_path / "a", "shared_counter", "--runs", "20",
                               "-s", "params.increments=5")  # fmt: skip
    assert code == 1
    assert "found lost_updates" in report
    # The command it prints runs that schedule again: with the overrides it explored under.
    (again,) = [line for line in report.splitlines() if line.startswith("again: ")]
    argv = shlex.split(again.removeprefix("again: "))
    assert argv[:4] == ["python", "-m", "sim", "run"]
    assert "params.increments=5" in argv
    replayed = sim(*argv[3:], "--out", str(tmp_path / "again"), "--quiet", timeout=60)
    assert "does not fit" not in replayed.stderr, replayed.stderr
    assert replayed.returncode == 0, replayed.stderr  # the config declares lost updates
    verdicts = manifest_of(only_run_dir(tmp_path / "again"))["invariants"]
    assert "lost_updates" in {v["phenomenon"] for v in verdicts if v["status"] == "expected"}
    code, _, report = _explore(tmp_path / "b", "shared_counter-locked", "--runs", "200",
                               "-s", "params.increments=2", "-s", "params.processes=2",
                               timeout=110)  # fmt: skip
    assert code == 0, report
    assert "no failure in 200 schedules" in report
    # Progress, though stderr is no terminal: a line at every tenth of the search.
    shown = [line for line in report.splitlines() if line.startswith("schedule ")]
    assert shown == [f"schedule {n}/200" for n in range(20, 201, 20)]


@pytest.mark.timeout(120)
def test_ctrl_c_stops_an_exploration(tmp_path: Path) -> None:
    # Each run watches for Ctrl-C while it runs and ends "interrupted": the search must stop
    # with it (it went on to the next schedule, and finished with exit 0).
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "explore", "shared_counter-locked", "--runs", "500",
         "-s", "params.increments=2", "-s", "params.processes=2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        # Progress off a terminal: a line at every tenth (50 schedules).
        first = proc.stderr.readline()
        assert first.startswith("schedule 50/500"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert "schedule 500/500" not in err
    assert "no failure" not in err
    assert out == ""
    # Nothing was found, and without --keep no run of the search is left (not even half of
    # one that was being thrown away when the stop came).
    assert list((tmp_path / "explore").iterdir()) == []


@pytest.mark.timeout(60)
def test_explore_finds_the_if_underflow_with_two_items(tmp_path: Path) -> None:
    # The wall demo needs 20 items per producer for the race to show; a search of the
    # schedules finds it with two.
    code, _, report = _explore(tmp_path, "bounded_buffer-if", "--runs", "50",
                               "-s", "params.items=2")  # fmt: skip
    assert code == 1
    assert "found out_of_bounds" in report
    assert "underflow" in report


@pytest.mark.timeout(240)
def test_a_virtual_car_park_matches_the_finite_source_queue(tmp_path: Path) -> None:
    # 40 cars, 12 spaces, exponential drives (mean 30) and stays (mean 20): about 70 % busy
    # with a queue; at a speedup where a wall run's timer lateness would show (1e7) the
    # virtual clock has no lateness at all.
    sets = ["params.cars=40", "params.capacity=12", "params.visits=30", "params.drive.mean=30",
            "params.park.mean=20", "clock.speedup=10000000"]  # fmt: skip
    model = finite_source(40, 12, 30.0, 20.0)
    metrics = [manifest_of(virtual_run(tmp_path / str(s), "carpark", *sets, seed=s))["metrics"]
               for s in range(5)]  # fmt: skip
    for key, expected in (("steady_utilisation", model.utilisation),
                          ("steady_wait_mean", model.wait_mean),
                          ("steady_p_wait", model.p_wait)):  # fmt: skip
        values = [m[key] for m in metrics]
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        half = 2.776 * sd / math.sqrt(len(values))  # t(0.975, 4)
        assert mean - half <= expected <= mean + half, (key, values, expected)


@pytest.mark.timeout(60)
def test_a_kind_added_through_the_registry_runs_virtually_and_an_uncontrolled_config_is_refused(
    tmp_path: Path,
) -> None:
    # tests/toykind.py: its model's `ready` is all the scheduler needs to know about it.
    config = tmp_path / "toy.toml"
    config.write_text('scenario = "tests.scenario_toy"\n[clock]\nmode = "virtual"\n')
    result = sim("run", str(config), "--out", str(tmp_path / "logs"), "--quiet", timeout=50)
    assert result.returncode == 0, result.stderr
    verdicts = {v["name"]: v for v in manifest_of(only_run_dir(tmp_path / "logs"))["invariants"]}
    assert verdicts["token: one holder of the token"]["detail"] == "taken 9 times, never by two"

    result = sim("run", str(config), "-s", "params.outside=true", "--out", str(tmp_path / "no"),
                 "--quiet", timeout=50)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {config}: clock.mode: scenario 'tests.scenario_toy' cannot run under the "
        "virtual clock: params.outside: a peer outside the run"
    )
    assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())
