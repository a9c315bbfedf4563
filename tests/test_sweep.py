"""Sweeps: grid grammar, seeds, failures recorded, resume, tables, theory beside measurement."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sim import ConfigError
from sim._sweep import expand, parse_axis, plan_sweep, run_seed

from .conftest import alive, sim

# A car park run of well under a second.
QUICK = ["-s", "params.capacity=4", "-s", "params.visits=2", "-s", "params.drive.mean=5",
         "-s", "params.park.mean=5", "-s", "clock.speedup=24000"]  # fmt: skip


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def sweep_dir(out: Path) -> Path:
    found = list((out / "sweeps").iterdir())
    assert len(found) == 1, found
    return found[0]


def test_axis_grammar() -> None:
    assert parse_axis("params.cars=100,200,300").values == (100, 200, 300)
    assert parse_axis("params.cars=range(50,201,50)").values == (50, 100, 150, 200)
    assert parse_axis("clock.speedup=linspace(1,2,3)").values == (1.0, 1.5, 2.0)
    assert parse_axis("params.drive.dist=exponential,fixed").values == ("exponential", "fixed")
    with pytest.raises(ConfigError, match="range takes"):
        parse_axis("params.cars=range(1.5,3)")
    with pytest.raises(ConfigError, match="KEY=VALUES"):
        parse_axis("params.cars")


def test_grid_product_and_zip() -> None:
    a, b = parse_axis("params.cars=1,2,3"), parse_axis("params.capacity=7,8,9")
    product = expand([a, b], repeat=1, zipped=False)
    assert len(product.points) == 9
    assert product.points[1].values == (("params.cars", 1), ("params.capacity", 8))
    zipped = expand([a, b], repeat=2, zipped=True)
    assert [p.values for p in zipped.points] == [
        (("params.cars", n), ("params.capacity", c)) for n, c in ((1, 7), (2, 8), (3, 9))
    ]
    with pytest.raises(ConfigError, match="same number of values"):
        expand([a, parse_axis("params.capacity=1,2")], repeat=1, zipped=True)


def test_seeds_are_derived_deterministically(tmp_path: Path) -> None:
    first = plan_sweep("carpark", ["params.cars=10,20"], repeat=3, seed=5, out=tmp_path)
    second = plan_sweep("carpark", ["params.cars=10,20"], repeat=3, seed=5, out=tmp_path)
    seeds = [t.seed for t in first.tasks]
    assert seeds == [t.seed for t in second.tasks]
    assert len(set(seeds)) == 6
    assert seeds[0] == run_seed(5, first.grid.points[0], 0)
    other = plan_sweep("carpark", ["params.cars=10,20"], repeat=3, seed=6, out=tmp_path)
    assert seeds != [t.seed for t in other.tasks]
    assert not (tmp_path / "sweeps").exists()  # planning writes nothing


@pytest.mark.parametrize(
    ("axis", "words"),
    [
        ("params.carz=1,2", "params.carz: unknown key (did you mean 'cars'?)"),
        ("params.cars=many,few", "params.cars: expected int, got str"),
        ("params.capacity=10,0", "params.capacity: expected int >= 1, got 0"),
        ("params.cars=range(1)", "range takes"),
        ("params.cars=range(1,5", "'range(1,5': the parenthesis of range( is not closed"),
        ("params.cars=linspace(1,5,100000000)", "a sweep takes at most 100,000 runs"),
    ],
)
@pytest.mark.timeout(30)
def test_a_bad_axis_exits_2_naming_it_before_anything_runs(
    out: Path, axis: str, words: str
) -> None:
    result = sim("sweep", "carpark", "-p", axis, "--out", str(out))
    assert result.returncode == 2, result
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


@pytest.mark.timeout(120)
def test_a_sweep_writes_one_row_per_run_with_every_metric(out: Path) -> None:
    result = sim("sweep", "carpark", "-p", "params.cars=6,8", "--repeat", "2", *QUICK,
                 "--seed", "3", "--out", str(out), "--plot", "wait_mean")  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = sweep_dir(out)
    assert result.stdout.strip() == str(folder)
    results = rows(folder / "results.csv")
    assert [r["run"] for r in results] == ["p000-r0", "p000-r1", "p001-r0", "p001-r1"]
    assert [int(r["params.cars"]) for r in results] == [6, 6, 8, 8]
    for row in results:
        assert row["status"] == "ok"
        manifest = json.loads((Path(row["run_dir"]) / "run.json").read_text(encoding="utf-8"))
        assert int(row["seed"]) == manifest["seed"]
        for key, value in manifest["metrics"].items():
            assert key in row
            if isinstance(value, int) and not isinstance(value, bool):
                assert int(row[key]) == value
    summary = rows(folder / "summary.csv")
    assert len(summary) == 2
    assert {"served_mean", "served_std", "served_ci95", "theory_steady_p_wait"} <= set(summary[0])
    assert float(summary[0]["served_mean"]) == 12.0  # 6 cars x 2 visits, no patience
    record = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    assert [t["seed"] for t in record["tasks"]] == [int(r["seed"]) for r in results]
    assert (folder / "wait_mean.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_same_command_gives_the_same_draws(tmp_path: Path) -> None:
    def draws(out: Path) -> dict[tuple[str, str], list[float]]:
        result = sim("sweep", "carpark", "-p", "params.cars=3,4", *QUICK, "--seed", "9",
                     "--out", str(out), "--quiet")  # fmt: skip
        assert result.returncode == 0, result.stderr
        found: dict[tuple[str, str], list[float]] = {}
        for row in rows(sweep_dir(out) / "results.csv"):
            lines = (Path(row["run_dir"]) / "events.jsonl").read_text(encoding="utf-8")
            for event in map(json.loads, lines.splitlines()):
                if event["event"] == "arrive":
                    found.setdefault((row["run"], event["actor"]), []).append(event["drove"])
        return found

    first, second = draws(tmp_path / "a"), draws(tmp_path / "b")
    assert first == second
    assert all(first.values())


@pytest.mark.timeout(120)
def test_a_failing_point_is_recorded_and_the_sweep_goes_on(out: Path) -> None:
    # The naive philosophers deadlock; without `expect` that fails its run. In virtual mode,
    # with this seed, they do every time (in wall mode, with one meal each, not always).
    result = sim("sweep", "philosophers-naive", "-p", "params.strategy=naive,ordered",
                 "-s", "expect=[]", "-s", "clock.mode=virtual", "--seed", "1",
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 1, result.stderr
    statuses = {r["params.strategy"]: r["status"] for r in rows(sweep_dir(out) / "results.csv")}
    assert statuses == {"naive": "failed", "ordered": "ok"}


@pytest.mark.timeout(180)
def test_resume_after_a_killed_sweep_runs_only_what_is_missing(out: Path) -> None:
    args = ["sweep", "carpark", "-p", "params.cars=range(3,9)", *QUICK, "--seed", "4",
            "--out", str(out), "--quiet"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "sim", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = [p for p in out.glob("sweeps/*/runs/*/*/run.json")
                    if json.loads(p.read_text(encoding="utf-8")).get("status") == "ok"]  # fmt: skip
            if len(done) >= 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the sweep never finished two runs")
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the run in progress, mid-way
    finally:
        proc.communicate(timeout=30)
    folder = sweep_dir(out)
    before = {p.parent.parent.name for p in folder.glob("runs/*/*/run.json")
              if json.loads(p.read_text(encoding="utf-8"))["status"] == "ok"}  # fmt: skip
    assert 2 <= len(before) < 6
    result = sim("sweep", "--resume", str(folder))
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} already done" in result.stderr
    results = rows(folder / "results.csv")
    assert [r["status"] for r in results] == ["ok"] * 6
    # Rows of runs the killed sweep finished keep their exit code (they were written blank).
    assert [r["exit_code"] for r in results] == ["0"] * 6
    # The runs that had completed were kept, not run again.
    for row in results:
        if row["run"] in before:
            assert len(list((folder / "runs" / row["run"]).glob("*/run.json"))) == 1
    # Resumed runs use the seeds the uninterrupted sweep would have used.
    planned = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))["tasks"]
    assert [int(r["seed"]) for r in results] == [t["seed"] for t in planned]
    # Nothing of the killed sweep outlives it: its engine's actors noticed and exited.
    pids = {json.loads(line)["pid"] for events in folder.glob("runs/*/*/events.jsonl")
            for line in events.read_text(encoding="utf-8").splitlines()}  # fmt: skip
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_measured_car_park_agrees_with_the_finite_source_model(out: Path) -> None:
    # 12 cars, 5 spaces, exponential drive (20 min) and park (10 min): M/M/5//12.
    result = sim("sweep", "carpark", "-p", "params.cars=12", "-s", "params.capacity=5",
                 "-s", "params.visits=25", "-s", "params.drive.mean=20",
                 "-s", "params.park.mean=10", "-s", "clock.speedup=24000", "--repeat", "6",
                 "--seed", "1", "--out", str(out), "--quiet", timeout=230)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (point,) = rows(sweep_dir(out) / "summary.csv")
    for key in ("steady_p_wait", "steady_utilisation", "steady_wait_mean"):
        low, high = float(point[f"{key}_low"]), float(point[f"{key}_high"])
        predicted = float(point[f"theory_{key}"])
        assert int(point[f"{key}_n"]) == 6
        assert low <= predicted <= high, (key, point[f"{key}_mean"], low, high, predicted)


def _children(pid: int, *, deep: bool = True) -> set[int]:
    """The live children of ``pid`` (from /proc), and with ``deep`` theirs, and so on."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with_kids = {int(p) for p in task.read_text().split()}
            found |= with_kids
            if deep:
                todo.extend(with_kids)
    return found


def _background_sweep(out: Path, *args: str) -> subprocess.Popen[str]:
    """A carpark sweep over 3..8 cars in a session of its own (its pipes read at the end)."""
    command = [sys.executable, "-m", "sim", "sweep", "carpark", "-p", "params.cars=range(3,9)",
               *QUICK, *args, "--out", str(out)]  # fmt: skip
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for_run(out: Path, run: str) -> None:
    deadline = time.monotonic() + 90
    while not list(out.glob(f"sweeps/*/runs/{run}/*/run.json")):
        assert time.monotonic() < deadline, f"run {run} never started"
        time.sleep(0.05)


def _wait_gone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_sweep_and_keeps_what_finished(out: Path, sig: signal.Signals) -> None:
    # Ctrl-C in a terminal reaches the whole group; so does a SIGTERM of the group (`timeout`,
    # a batch system), which once killed the sweep's zygote and left the run under way an
    # "error" although its own run.json said "interrupted".
    proc = _background_sweep(out, "-s", "params.visits=40", "--quiet")
    try:
        _wait_for_run(out, "p001-r0")
        os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        _end(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    folder = sweep_dir(out)
    assert stdout.strip() == str(folder)
    results = rows(folder / "results.csv")
    statuses = {r["run"]: r["status"] for r in results}
    assert statuses["p000-r0"] == "ok"
    assert statuses["p001-r0"] == "interrupted"
    assert len(statuses) < 6
    assert {r["run"]: r["exit_code"] for r in results}["p001-r0"] == "130"
    # Even with --quiet the user is told how to finish it (nothing said so before).
    finished = list(statuses.values()).count("ok")
    assert (f"interrupted: {finished} of 6 runs done; finish the sweep with: python -m sim "
            f"sweep --resume {folder}") in stderr  # fmt: skip


@pytest.mark.timeout(120)
def test_a_wrong_plot_metric_lists_the_scenarios_metrics_also_on_resume(out: Path) -> None:
    from sim import scenario
    from sim._sweep import plottable

    keys = [m.key for m in plottable(scenario.load("carpark").metrics)]
    fresh = sim("sweep", "carpark", "-p", "params.cars=3", *QUICK, "--out", str(out),
                "--plot", "steady_wait")  # fmt: skip
    assert fresh.returncode == 2, fresh
    assert f"no metric 'steady_wait'; one of: {', '.join(keys)}" in fresh.stderr
    assert not (out / "sweeps").exists()  # refused before anything ran
    # The window's words were let through, to be refused after every run was done.
    for words in ("steady_window", "steady_ci"):
        refused = sim("sweep", "carpark", "-p", "params.cars=3", *QUICK, "--out", str(out),
                      "--plot", words)  # fmt: skip
        assert refused.returncode == 2, refused
        assert refused.stderr.strip() == (f"error: --plot: no metric {words!r} (words, not a "
                                          f"number); one of: {', '.join(keys)}")  # fmt: skip
        assert not (out / "sweeps").exists()
    done = sim("sweep", "carpark", "-p", "params.cars=3", *QUICK, "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    resumed = sim("sweep", "--resume", str(sweep_dir(out)), "--plot", "steady_wait")
    assert resumed.returncode == 2, resumed
    assert f"one of: {', '.join(keys)}" in resumed.stderr
    assert "theory_" not in resumed.stderr


@pytest.mark.timeout(120)
def test_a_sweep_killed_alone_leaves_its_run_interrupted_and_nothing_running(out: Path) -> None:
    # The runs are forked by the sweep's zygote (sim/_sweep/zygote.py), not by the sweep: when
    # the sweep dies by itself (SIGKILL of its process, not of its group), the zygote sees its
    # stdin close, interrupts the run as Ctrl-C would, and exits.
    proc = _background_sweep(out, "-s", "params.visits=40", "--quiet")
    try:
        _wait_for_run(out, "p000-r0")
        below = _children(proc.pid)
        assert below  # the zygote, the run, its launcher and its actors
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        _wait_gone(below, 30)
    finally:
        _end(proc)
    (manifest,) = out.glob("sweeps/*/runs/p000-r0/*/run.json")
    assert json.loads(manifest.read_text(encoding="utf-8"))["status"] == "interrupted"


@pytest.mark.timeout(120)
def test_a_sweep_whose_zygote_dies_reports_the_rest_as_errors_and_ends(out: Path) -> None:
    proc = _background_sweep(out, "-s", "params.visits=10")
    try:
        _wait_for_run(out, "p000-r0")
        direct = _children(proc.pid, deep=False)
        (zygote,) = [p for p in direct if b"zygote" in Path(f"/proc/{p}/cmdline").read_bytes()]
        below = _children(zygote)
        os.kill(zygote, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
        # The run it had started does not go on unwatched: the kernel tells it its parent
        # died (SIGINT), and it stops as on Ctrl-C, marked so.
        _wait_gone(below, 30)
    finally:
        _end(proc)
    assert "Traceback" not in stderr
    assert proc.returncode == 1, stderr
    assert "the sweep's run launcher exited" in stderr
    (manifest,) = out.glob("sweeps/*/runs/p000-r0/*/run.json")
    assert json.loads(manifest.read_text(encoding="utf-8"))["status"] == "interrupted"
    # The run under way says itself how it ended; the rest never ran: each is an error.
    results = rows(sweep_dir(out) / "results.csv")
    assert [r["status"] for r in results] == ["interrupted"] + ["error"] * 5


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        # The grid is a mapping: the second axis silently replaced the first.
        (["-p", "params.cars=2,3", "-p", "params.cars=4"],
         "error: -p: params.cars: this axis is given twice"),
        # Which value would a run take? The axis's, silently.
        (["-p", "params.cars=2,3", "-s", "params.cars=4"],
         "error: -s: params.cars: params.cars is both swept and fixed (by the override "
         "params.cars=...)"),
        (["-p", "params.cars=2,3", "--heatmap"],
         "error: --heatmap: draws the metric of --plot: give --plot METRIC too"),
    ],
)  # fmt: skip
def test_contradictory_sweep_options_are_refused_before_anything_runs(
    out: Path, args: list[str], says: str
) -> None:
    result = sim("sweep", "carpark", *args, *QUICK, "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == says or result.stderr.startswith(says), result.stderr
    assert not (out / "sweeps").exists()


@pytest.mark.timeout(120)
def test_a_resume_cannot_change_the_plan_and_an_out_that_is_a_file_is_named(out: Path) -> None:
    # --out a file was a NotADirectoryError traceback.
    afile = out / "afile"
    afile.write_text("not a folder")
    refused = sim("sweep", "carpark", "-p", "params.cars=3", *QUICK, "--out", str(afile))
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"error: --out: cannot create the sweep directory {afile}/")
    assert "Not a directory" in refused.stderr
    done = sim("sweep", "carpark", "-p", "params.cars=3", *QUICK, "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    folder = sweep_dir(out)
    # --repeat, --seed, -s on a resume were ignored without a word: the plan is recorded.
    for extra in (["--repeat", "3"], ["--seed", "9"], ["-s", "params.visits=5"]):
        resumed = sim("sweep", "--resume", str(folder), *extra)
        assert resumed.returncode == 2, resumed.stderr
        assert resumed.stderr.startswith(f"error: --resume: {extra[0]} cannot change a sweep "
                                         "that is resumed")  # fmt: skip
    assert len(list(folder.glob("runs/*/*/run.json"))) == 1


@pytest.mark.timeout(60)
def test_a_bad_sweep_table_names_the_file_and_its_key_in_check_and_sweep(tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text('scenario = "carpark"\n[sweep.axes]\n"params.cars" = "range(1,x)"\n')
    for command in (["check"], ["sweep", "--out", str(tmp_path / "logs")]):
        result = sim(command[0], str(config), *command[1:])
        assert result.returncode == 2, (command, result.stderr)
        # It was blamed on -p, an option nobody gave.
        assert result.stderr.strip() == (f"error: {config}: sweep.axes.params.cars: 'x' is "
                                         "not a number"), command  # fmt: skip
    config.write_text('scenario = "carpark"\n[sweep]\naxis = {}\n')
    result = sim("check", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"error: {config}: sweep.axis: unknown key (did you mean "
                                     "'axes'?)")  # fmt: skip
    # A good table is checked as the sweep would run it, every point of it.
    good = sim("check", "carpark-sweep")
    assert good.returncode == 0, good.stderr
    assert "; sweep of 6 points x 3 = 18 runs" in good.stderr
    # ... and check refuses nothing a run takes: -s of a swept key is a run's own setting, and
    # a table with no axes waits for them from -p.
    assert sim("check", "carpark-sweep", "-s", "params.cars=8").returncode == 0
    config.write_text('scenario = "carpark"\n[sweep]\nrepeat = 3\n')
    result = sim("check", str(config))
    assert result.returncode == 0, result.stderr
    assert "; [sweep] table without axes (give them with sim sweep -p)" in result.stderr


def test_zip_pairs_the_axes_of_a_sweep_table_and_a_nested_fixed_key_clashes(
    tmp_path: Path,
) -> None:
    from sim.config import load_config

    config = tmp_path / "z.toml"
    config.write_text('scenario = "carpark"\n[sweep.axes]\n"params.cars" = [3, 4]\n'
                      '"params.capacity" = [1, 2]\n')  # fmt: skip
    # --zip was dropped for a table's axes: the product ran, N x N runs instead of N.
    assert len(plan_sweep(load_config(config), zipped=True).grid.points) == 2
    assert len(plan_sweep(load_config(config)).grid.points) == 4
    # A table that fixes the parent fixes the key: which value would a run take?
    with pytest.raises(ConfigError, match=r"params.drive.mean is both swept and fixed \(by the "
                       r"override params.drive=\.\.\.\)"):  # fmt: skip
        plan_sweep("carpark", ["params.drive.mean=3,4"],
                   overrides=['params.drive={mean=3, dist="fixed"}'])  # fmt: skip


@pytest.mark.timeout(120)
def test_a_file_scenarios_sweep_is_named_by_it_and_its_plot_title_says_the_swept_range(
    tmp_path: Path,
) -> None:
    import sim as api

    (tmp_path / "mine").mkdir()
    assert sim("new", "bank", "--dir", str(tmp_path / "mine")).returncode == 0
    config = tmp_path / "mine" / "bank.toml"
    settings = ["clock.mode=virtual", "params.jobs=2", 'title="{workers} tellers"']
    done = api.sweep(config, {"params.workers": [2, 3, 4]}, out=tmp_path / "logs", set=settings)
    assert done.ok
    # Named "bank.py-…" before: the config's file name, not the scenario's.
    assert done.dir.parent == tmp_path / "logs" / "sweeps"
    assert done.dir.name.startswith("bank-")
    metric = api.scenario.load(str(tmp_path / "mine" / "bank.py")).metrics[0].key
    svg = done.plot(metric, tmp_path / "m.svg").read_text(encoding="utf-8")
    # The title said "3 tellers", the base config's value, over a picture of 2, 3 and 4.
    assert "2…4 tellers" in svg
    assert "3 tellers" not in svg


@pytest.mark.timeout(120)
def test_plot_takes_exactly_the_metrics_a_sweep_can_draw_and_refuses_one_no_run_measured(
    tmp_path: Path,
) -> None:
    import sim as api
    from sim._sweep import check_metric, plottable

    metrics = api.scenario.load("carpark").metrics
    drawable = [m.key for m in plottable(metrics)]
    # The window's words were offered by the check before the runs, refused after them.
    assert "steady_window" not in drawable
    assert "steady_ci" not in drawable
    assert {"wait_mean", "steady_wait_mean", "steady_arrivals"} <= set(drawable)
    # ... and the list after them offered theory_steady_wait, which the check before refused,
    # and the engine's own columns (events, wall_s), which no declaration describes.
    assert not [k for k in drawable if k.startswith("theory_") or k in ("events", "wall_s")]
    with pytest.raises(ConfigError) as before:
        check_metric(metrics, "steady_window")
    assert before.value.source == "--plot"
    assert str(before.value) == ("--plot: no metric 'steady_window' (words, not a number); "
                                 f"one of: {', '.join(drawable)}")  # fmt: skip
    # Runs far too short for a steady window: every steady_* mean is empty.
    done = api.sweep("carpark", {"params.cars": [3, 4]}, set=["clock.mode=virtual"],
                     out=tmp_path / "logs")  # fmt: skip
    assert done.ok
    assert done.summary["steady_wait_mean_n"].tolist() == [0, 0]
    for metric in ("steady_window", "steady_ci", "theory_steady_wait", "nope"):
        with pytest.raises(ConfigError) as after:
            done.plot(metric, tmp_path / f"{metric}.png")
        # The same list after the runs as before them, in the API's words.
        assert after.value.source == "metric", metric
        assert str(after.value).endswith(f"; one of: {', '.join(drawable)}"), metric
        assert not (tmp_path / f"{metric}.png").exists()
    # A metric no run measured drew an empty picture ("n = 0 runs") and said nothing.
    with pytest.raises(ConfigError, match=r"^metric: no run of this sweep measured "
                       r"'steady_wait_mean', nothing to draw"):  # fmt: skip
        done.plot("steady_wait_mean", tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
    assert done.plot("wait_mean", tmp_path / "wait.png").stat().st_size > 0
    # In Jupyter it drew the first modelled metric, measured or not: now one some run measured.
    assert "base64" in done._repr_html_()
    # The command line says the same after a sweep (a resume with nothing left to run).
    resumed = sim("sweep", "--resume", str(done.dir), "--plot", "steady_wait_mean", "--quiet")
    assert resumed.returncode == 2, resumed.stderr
    assert resumed.stderr.strip().splitlines()[-1] == (
        "error: --plot: no run of this sweep measured 'steady_wait_mean', nothing to draw (each "
        "run's metrics are in results.csv)")  # fmt: skip
    assert not (done.dir / "steady_wait_mean.png").exists()


@pytest.mark.timeout(60)
def test_a_point_the_config_refuses_names_the_grid_or_minus_p_or_the_table(
    tmp_path: Path,
) -> None:
    import sim as api

    out = tmp_path / "logs"
    for grid, key in (({"params.carz": [1, 2]}, "params.carz"),
                      ({"params.cars": [-1]}, "params.cars")):  # fmt: skip
        # An unknown key's source was "sweep axis", a name neither the API nor the CLI has.
        with pytest.raises(ConfigError) as refused:
            api.sweep("carpark", grid, out=out)
        assert (refused.value.source, refused.value.key) == ("grid", key)
        assert str(refused.value).startswith(f"grid: {key}: ")
    result = sim("sweep", "carpark", "-p", "params.carz=1,2", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: -p: params.carz: unknown key (did you mean "
                                     "'cars'?) (at point carz=1)")  # fmt: skip
    # Axes from a [sweep] table are the file's: its name and the table's key.
    config = tmp_path / "grid.toml"
    config.write_text('scenario = "carpark"\n[sweep.axes]\n"params.carz" = [1, 2]\n')
    says = (f"error: {config}: sweep.axes.params.carz: unknown key (did you mean 'cars'?) "
            "(at point carz=1)")  # fmt: skip
    for command in (["check"], ["sweep", "--out", str(out)]):
        result = sim(command[0], str(config), *command[1:])
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.strip() == says, command
    with pytest.raises(ConfigError) as refused:
        api.sweep(config, out=out)
    assert (refused.value.source, refused.value.key) == (str(config), "sweep.axes.params.carz")
    # An override of another key of the table is not blamed; one that set the axes is, and a
    # bundled config is named by its name (it was its full path).
    for command in (["check"], ["sweep", "--out", str(out)]):
        other = sim(command[0], str(config), "-s", "sweep.repeat=2", *command[1:])
        assert other.stderr.strip() == says, command
        table = sim(command[0], "carpark-sweep", "-s", 'sweep.axes={"params.carz"=[1,2]}',
                    *command[1:])  # fmt: skip
        assert table.returncode == 2, table.stderr
        assert table.stderr.strip() == (
            "error: carpark-sweep.toml: sweep.axes.params.carz: unknown key (did you mean "
            "'cars'?) (at point carz=1) (set with -s)"
        ), command
    assert not out.exists()


def test_axes_with_the_same_last_name_are_told_apart() -> None:
    from sim._sweep.grid import axis_names

    keys = ["params.drive.mean", "params.park.mean", "params.cars"]
    assert axis_names(keys) == ["drive.mean", "park.mean", "cars"]
    assert axis_names(["a.b", "x.a.b"]) == ["a.b", "x.a.b"]
    grid = expand([parse_axis("params.drive.mean=20"), parse_axis("params.park.mean=10")],
                  repeat=1, zipped=False)  # fmt: skip
    # Was "mean=20, mean=10".
    assert grid.points[0].label == "drive.mean=20, park.mean=10"


@pytest.mark.timeout(120)
def test_a_sweep_whose_runs_all_failed_says_so_for_its_plot_and_keeps_its_outcome(
    out: Path,
) -> None:
    done = sim("sweep", "carpark-crash", "-s", "expect=[]", "-s", "clock.mode=virtual",
               "-p", "params.cars=12", "-p", "params.drive.mean=20", "-p", "params.park.mean=60",
               "--plot", "wait_mean", "--out", str(out), timeout=110)  # fmt: skip
    # It exited 2 ("no run of this sweep measured 'wait_mean'", which results.csv belied) and
    # printed no sweep directory.
    assert done.returncode == 1, done.stderr
    assert Path(done.stdout.strip().splitlines()[-1]) == sweep_dir(out)
    assert ("error: --plot: no run of this sweep ended ok, so none has a 'wait_mean' to draw "
            "(the failed runs' metrics are in results.csv)") in done.stderr  # fmt: skip
    (row,) = rows(sweep_dir(out) / "results.csv")
    assert row["status"] == "failed"
    assert row["wait_mean"] != ""
    # The table and the progress lines name both nested axes, not "mean" twice.
    assert "cars=12, drive.mean=20, park.mean=60: failed" in done.stderr
    assert "┃ drive.mean ┃ park.mean ┃" in done.stderr


@pytest.mark.timeout(120)
def test_the_bundled_sweeps_plot_title_says_the_grid_that_was_swept(tmp_path: Path) -> None:
    import sim as api

    done = api.sweep("carpark-sweep", {"params.cars": [6, 10], "params.capacity": [3, 5]},
                     set=["clock.mode=virtual", "params.visits=3"], repeat=1,
                     out=tmp_path / "logs")  # fmt: skip
    assert done.ok
    svg = done.plot("wait_mean", tmp_path / "w.svg").read_text(encoding="utf-8")
    # The title was the literal "6 to 16 cars on 5 spaces" over any grid.
    assert "6/10 cars on 3/5 spaces" in svg
    assert "on 5 spaces" not in svg


@pytest.mark.timeout(120)
def test_the_table_of_an_interrupted_sweep_says_which_runs_were_interrupted(out: Path) -> None:
    # Its row read "0/1" ok, as if the run had failed, while results.csv said interrupted.
    command = [sys.executable, "-m", "sim", "sweep", "carpark", "-p", "params.cars=range(3,9)",
               *QUICK, "-s", "params.visits=40", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    try:
        _wait_for_run(out, "p001-r0")
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        _end(proc)
    assert proc.returncode == 130, stderr
    statuses = {r["run"]: r["status"] for r in rows(sweep_dir(out) / "results.csv")}
    assert statuses["p001-r0"] == "interrupted"
    table = [line for line in stderr.splitlines() if line.startswith("│")]
    assert any(re.match(r"│ +4 │ +0/1, 1 interrupted │", line) for line in table), table
    assert not any(re.match(r"│ +3 │ +1/1, ", line) for line in table), table
