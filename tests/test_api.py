"""The Python API: sim.run, sim.replay, sim.sweep and their DataFrames, against the log."""

from __future__ import annotations

import csv
import json
import math
import signal
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sim
from sim.stats import describe
from tests.conftest import alive, events_of, manifest_of, only_run_dir, socket_files

# A small car park in virtual time: deterministic, a second or two.
SMALL: dict[str, Any] = {
    "scenario": "carpark",
    "title": "a small car park",
    "params": {"capacity": 3, "cars": 8, "visits": 3, "drive": {"dist": "exponential",
               "mean": 20}, "park": {"dist": "exponential", "mean": 30}},
    "clock": {"mode": "virtual", "speedup": 6000},
}  # fmt: skip


def _nothing_left(run: sim.Run, out: Path) -> None:
    for record in run.manifest["actors"].values():
        assert not alive(record["pid"]), record
    assert not socket_files(out)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> sim.Run:
    out = tmp_path_factory.mktemp("api") / "logs"
    run = sim.run(SMALL, seed=4, out=out)
    _nothing_left(run, out)
    return run


@pytest.mark.timeout(60)
def test_run_with_a_dict_config_reports_what_run_json_says(small: sim.Run) -> None:
    manifest = manifest_of(small.dir)
    assert small.ok
    assert small.status == "ok"
    assert small.exit_code == 0
    assert manifest["status"] == "ok"
    assert small.metrics == manifest["metrics"]
    assert [v.name for v in small.verdicts] == [v["name"] for v in manifest["invariants"]]
    assert small.config is not None
    assert small.config.params.cars == 8
    assert small.config.source.name == "<dict>"
    # The finite-source model's predictions for these parameters, as a sweep shows them.
    assert set(small.theory) == {"steady_wait_mean", "steady_p_wait", "steady_utilisation"}
    assert 0 < small.theory["steady_utilisation"] <= 1


@pytest.mark.timeout(60)
def test_events_has_one_row_per_log_line(small: sim.Run) -> None:
    lines = events_of(small.dir)
    events = small.events
    assert len(events) == len(lines) == small.metrics["events"]
    assert sorted(events.index) == list(range(1, len(lines) + 1))
    assert list(events.columns[:6]) == ["ts", "actor", "pid", "seq", "event", "step"]
    in_file = events.sort_index()
    assert list(in_file["event"]) == [e["event"] for e in lines]
    assert list(in_file["seq"]) == [e["seq"] for e in lines]
    assert (events["ts"].diff().dropna() >= 0).all()  # time order, as the history reads


@pytest.mark.timeout(60)
def test_ops_holds_and_states_match_the_log(small: sim.Run) -> None:
    lines = events_of(small.dir)
    invokes = [e for e in lines if e["event"] == "op" and e["phase"] == "invoke"]
    ops = small.ops
    assert len(ops) == len(invokes)
    assert ops["outcome"].value_counts().to_dict() == {"ok": len(invokes)}
    acquired = [e for e in lines if e.get("op") == "acquire" and e.get("phase") == "ok"]
    holds = small.holds
    assert len(holds) == len(acquired) == small.metrics["served"]
    assert (holds["cut"] == "").all()  # every unit was given back
    assert (holds["held_s"] >= 0).all()
    # Each actor's state intervals follow each other without a gap, from 0 to the log's end.
    end = max(e["ts"] for e in lines)
    for actor, rows in small.states.groupby("actor"):
        assert rows["start_ts"].iloc[0] == 0.0, actor
        assert list(rows["end_ts"].iloc[:-1]) == list(rows["start_ts"].iloc[1:]), actor
        assert rows["end_ts"].iloc[-1] == end
        assert rows["state"].iloc[-1] == "done"
    assert {"driving", "parked"} <= set(small.states["state"])


@pytest.mark.timeout(60)
def test_ops_waits_are_the_waits_the_summary_reports(small: sim.Run) -> None:
    acquires = small.ops.query("prim == 'spaces' and op == 'acquire'")
    # The summary's statistics of the same waits, recomputed from the frame: equal to the bit.
    recomputed = describe(acquires["wait_sim_min"].to_numpy(), "wait")
    assert recomputed == {k: small.metrics[k] for k in recomputed}
    assert acquires["wait_sim_min"].mean() == pytest.approx(small.metrics["wait_mean"], rel=1e-12)
    speedup = 6000 / 60
    assert (acquires["wait_sim_min"] == acquires["wait_s"] * speedup).all()


@pytest.mark.timeout(60)
def test_replay_recomputes_the_same_run_from_the_directory_or_the_file(small: sim.Run) -> None:
    for where in (small.dir, small.dir / "events.jsonl"):
        again = sim.replay(where)
        assert again.ok
        assert again.metrics == small.metrics
        assert [v.status for v in again.verdicts] == [v.status for v in small.verdicts]
        pd.testing.assert_frame_equal(again.ops, small.ops)
        assert len(again.events) == len(small.events)


@pytest.mark.timeout(60)
def test_a_run_shows_itself_as_html_with_its_plot(small: sim.Run) -> None:
    text = small._repr_html_()
    assert text.count("<table") == 2
    assert "visits parked" in text
    assert "model " in text
    for verdict in small.verdicts:
        assert verdict.name in text
    assert 'src="data:image/png;base64,iVBORw0KGgo' in text  # a PNG's signature


@pytest.mark.timeout(120)
def test_sweep_tables_are_results_csv_and_summary_csv(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    done = sim.sweep(SMALL, {"params.cars": [3, 6]}, repeat=2, seed=2, out=out)
    assert done.ok
    assert done.exit_code == 0
    for frame, name in ((done.results, "results.csv"), (done.summary, "summary.csv")):
        with open(done.dir / name, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(frame.columns) == list(rows[0])
        assert len(frame) == len(rows)
        for got, want in zip(frame.to_dict("records"), rows, strict=True):
            for key, text in want.items():
                _same(got[key], text, key)
    assert list(done.results["params.cars"]) == [3, 3, 6, 6]
    assert len(done.summary) == 2
    assert list(done.summary["ok"]) == [2, 2]
    assert "theory_steady_wait_mean" in done.summary.columns
    # The data the sweep ran from, beside its runs; every run opens as a Run.
    assert (done.dir / "config.toml").is_file()
    assert len(done.runs) == 4
    first = done.runs[0]
    assert first.ok
    assert (
        first.metrics
        == json.loads((Path(done.results["run_dir"][0]) / "run.json").read_text())["metrics"]
    )
    assert done.runs.named("p001-r1").config.params.cars == 6  # type: ignore[union-attr]
    text = done._repr_html_()
    assert "<table" in text
    assert "base64" in text


def _same(value: Any, text: str, key: str) -> None:
    if text == "":
        assert value is None or (isinstance(value, float) and math.isnan(value)), key
    elif isinstance(value, bool) or not isinstance(value, int | float):
        assert str(value) == text, key
    else:
        assert float(value) == pytest.approx(float(text), rel=1e-12, nan_ok=True), key


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda o: sim.run({**SMALL, "params": {"carz": 1}}, out=o), sim.ConfigError,
         "<dict>: params.carz: unknown key (did you mean 'cars'?)"),
        (lambda o: sim.run("carpark", set={"params.cars": -1}, out=o), sim.ConfigError,
         "carpark.toml: params.cars: expected int >= 0, got -1 (set with set=)"),
        (lambda o: sim.run("carpark", set={"scenario": ".."}, out=o), sim.ConfigError,
         "'..' is not a scenario name"),
        (lambda o: sim.run("no-such-config", out=o), sim.ConfigError, "no such file"),
        (lambda o: sim.run(SMALL, seed=-1, out=o), sim.ConfigError, "seed: must be an int"),
        (lambda o: sim.run(42, out=o), sim.ConfigError, "not int"),
        (lambda o: sim.run("carpark", set=42, out=o), sim.ConfigError,  # type: ignore[arg-type]
         "expected a mapping of dotted keys to values, or KEY=VALUE texts, not 42"),
        (lambda o: sim.replay(o / "nothing"), sim.ReplayError, "no such run directory"),
        (lambda o: sim.sweep(SMALL, {"params.cars": []}, out=o), sim.ConfigError, "no values"),
        (lambda o: sim.sweep(SMALL, {"params.cars": [1]}, jobs=0, out=o), sim.ConfigError,
         "jobs: must be"),
    ],
)  # fmt: skip
def test_errors_are_the_documented_classes(
    tmp_path: Path, call: Any, error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as caught:
        call(tmp_path)
    assert says in str(caught.value)
    assert not (tmp_path / "logs").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("call", "source", "says"),
    [
        (lambda o: sim.run(SMALL, out=o / "afile"), "out", "cannot create the run directory"),
        (lambda o: sim.run(SMALL, set=["params.cars"], out=o), "set",
         "expected KEY=VALUE with a dotted key, got 'params.cars'"),
        (lambda o: sim.run("carpark", set=["params.cars=x"], out=o), "carpark.toml",
         "params.cars: expected int, got str (set with set=)"),
        (lambda o: sim.sweep(SMALL, {"params.cars": [2, 3]}, set={"params.cars": 4}, out=o),
         "set", "params.cars is both swept and fixed (by the override params.cars=...): give it "
         "as an axis or as a fixed override, not both"),
        (lambda o: sim.sweep(SMALL, {"params.cars": "range(1,x)"}, out=o), "grid",
         "'x' is not a number"),
        (lambda o: sim.sweep(None, resume=o, repeat=2, seed=1), "resume",
         "repeat, seed cannot change a sweep that is resumed"),
        # sim.load_config's own parameter is overrides (it said "-s" and "(set with -s)").
        (lambda o: sim.load_config("carpark", ["params.cars"]), "overrides",
         "expected KEY=VALUE with a dotted key, got 'params.cars'"),
        (lambda o: sim.load_config("carpark", ["params.cars=x"]), "carpark.toml",
         "params.cars: expected int, got str (set with overrides)"),
    ],
)  # fmt: skip
def test_errors_of_the_api_name_its_parameters_not_the_cli_options(
    tmp_path: Path, call: Any, source: str, says: str
) -> None:
    # They said "--out: ...", "-s: ...": options a Python caller never gave.
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(sim.ConfigError) as caught:
        call(tmp_path)
    assert caught.value.source == source
    assert str(caught.value).startswith(f"{source}: ")
    assert says in str(caught.value)
    assert " -s" not in str(caught.value)
    assert "--" not in str(caught.value)


@pytest.mark.timeout(60)
def test_a_process_that_cannot_host_the_engine_runs_it_in_a_child(tmp_path: Path) -> None:
    # A thread of our own (as in a Jupyter kernel): forking here would be unsafe, so the run
    # goes to a child interpreter; the result, and an error's class and key, come back.
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        from sim._isolated import can_host

        assert not can_host()
        run = sim.run(SMALL, seed=4, out=tmp_path / "logs")
        with pytest.raises(sim.ConfigError) as caught:
            sim.run(SMALL, set={"params.cars": "many"}, out=tmp_path / "logs")
    finally:
        stop.set()
        helper.join()
    assert run.ok
    assert only_run_dir(tmp_path / "logs") == run.dir
    assert caught.value.key == "params.cars"
    assert "(set with set=)" in str(caught.value)
    _nothing_left(run, tmp_path / "logs")


@pytest.mark.timeout(60)
def test_a_run_gives_back_the_callers_signal_handlers(tmp_path: Path) -> None:
    # The engine reads SIGINT and SIGTERM through asyncio while it runs, and asyncio puts a
    # signal it let go of back to its default (SIGTERM's kills the process): a notebook's or a
    # program's own handlers must be there again afterwards.
    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("not called here")

    before = signal.signal(signal.SIGTERM, mine)
    # Whatever SIGINT was (a job started in the background by a shell has it ignored).
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        run = sim.run("mutex", set={"params.rounds": 1, "clock.mode": "virtual"}, seed=1,
                      out=tmp_path)  # fmt: skip
        assert run.status == "ok"
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.timeout(60)
def test_replay_with_a_scenario_that_does_not_fit_names_the_parameter(small: sim.Run) -> None:
    # "--scenario philosophers: ...": the CLI's option, which a Python caller never gave.
    with pytest.raises(sim.ReplayError) as caught:
        sim.replay(small.dir, scenario="philosophers")
    assert str(caught.value).startswith("scenario philosophers: the run's config does not fit it")
    assert caught.value.__traceback__ is not None
