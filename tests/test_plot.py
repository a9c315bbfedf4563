"""Plots: valid PNG and SVG files from real runs, with the panels a run calls for."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sim import ConfigError
from sim._replay import LoadedRun, load_run, open_history
from sim.plot import GANTT_MAX_ACTORS, _Collector, plot

from .conftest import finished, manifest_of

PNG = b"\x89PNG\r\n\x1a\n"


def run(out: Path, config: str, *settings: str) -> LoadedRun:
    """Run ``config`` with ``-s`` ``settings``, which must succeed, and load the run back."""
    result = finished(out, config, *settings, args=("--quiet",))
    assert result.code == 0, result.stderr
    return load_run(result.run_dir)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.timeout(120)
def test_car_park_plot_as_png_and_svg(tmp_path: Path) -> None:
    loaded = run(
        tmp_path / "logs",
        "carpark.toml",
        "params.cars=12",
        "params.capacity=4",
        "params.visits=2",
        "clock.speedup=12000",
    )
    plot(loaded, tmp_path / "car.png")
    width, height = png_size(tmp_path / "car.png")
    assert width >= 1000
    assert height >= 800
    assert (tmp_path / "car.png").stat().st_size > 40_000
    plot(loaded, tmp_path / "car.svg")
    svg = (tmp_path / "car.svg").read_text(encoding="utf-8")
    assert svg.startswith("<?xml")
    assert "<svg" in svg
    # Title, parameters, the capacity line, and one Gantt lane per car.
    assert "scenario carpark" in svg
    assert "capacity=4" in svg
    assert "capacity 4" in svg
    assert all(f"car-{i:03d}" in svg for i in range(12))
    assert "simulated time (h)" in svg or "simulated time (min)" in svg
    # The waits' legend gives the summary's own mean and p95 (the p95 was once the plot's
    # own, not interpolated, and differed from the table's).
    metrics = manifest_of(loaded.run_dir or tmp_path)["metrics"]
    waits = f"mean {metrics['wait_mean']:.3g}, p95 {metrics['wait_p95']:.3g} min"
    assert f"acquire spaces: n=24, {waits}" in svg


@pytest.mark.timeout(120)
def test_occupancy_drawn_is_the_run_s_own_occupancy(tmp_path: Path) -> None:
    loaded = run(
        tmp_path / "logs",
        "carpark.toml",
        "params.cars=20",
        "params.capacity=5",
        "params.visits=2",
        "clock.speedup=12000",
    )
    data = _Collector(loaded)
    history = open_history(loaded, track_states=True)
    history.subscribe(data)
    history.feed_file(loaded.events_path)
    held = [v for _, v in data.series[("spaces", "held")]]
    metrics = manifest_of(loaded.run_dir or tmp_path)["metrics"]
    assert max(held) == metrics["occupancy_max"] == 5
    assert held[-1] == 0  # every car left
    waits = data.waits["acquire spaces"]
    assert len(waits) == metrics["served"] == 40


@pytest.mark.timeout(120)
def test_many_actors_skip_the_gantt_and_say_so(tmp_path: Path) -> None:
    cars = GANTT_MAX_ACTORS + 10
    loaded = run(
        tmp_path / "logs",
        "carpark.toml",
        f"params.cars={cars}",
        "params.capacity=20",
        "params.visits=1",
        "clock.speedup=12000",
    )
    plot(loaded, tmp_path / "many.svg")
    svg = (tmp_path / "many.svg").read_text(encoding="utf-8")
    assert f"{cars} actors" in svg
    assert "Gantt chart is skipped" in svg
    assert "car-059" not in svg  # no lane per car
    plot(loaded, tmp_path / "many.png")
    assert png_size(tmp_path / "many.png")[0] >= 1000
    assert (tmp_path / "many.png").stat().st_size > 40_000


@pytest.mark.timeout(120)
def test_a_deadlocked_run_marks_the_deadlock(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "philosophers-naive")
    plot(loaded, tmp_path / "deadlock.svg")
    svg = (tmp_path / "deadlock.svg").read_text(encoding="utf-8")
    assert "deadlock" in svg
    assert "waits never returned" in svg
    assert all(f"phil-{i:03d}" in svg for i in range(5))


def test_a_log_without_primitives_still_plots(tmp_path: Path) -> None:
    lines = [
        {"ts": 0.0, "actor": "engine", "pid": 1, "seq": 0, "event": "run_start"},
        {"ts": 0.1, "actor": "a", "pid": 2, "seq": 0, "event": "actor_start", "role": "a"},
        {"ts": 0.5, "actor": "a", "pid": 2, "seq": 1, "event": "actor_end", "status": "ok"},
    ]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    plot(load_run(folder), tmp_path / "empty.svg")
    svg = (tmp_path / "empty.svg").read_text(encoding="utf-8")
    assert "no shared primitive" in svg
    assert "no blocking operation" in svg


def test_only_png_and_svg(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"\.png or \.svg"):
        plot(load_run(folder), tmp_path / "plot.jpg")
    assert not (tmp_path / "plot.jpg").exists()


@pytest.mark.timeout(120)
def test_the_if_buffer_plot_shows_the_count_below_zero_beside_its_band(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "bounded_buffer-if", "clock.mode=virtual")
    capacity = manifest_of(loaded.run_dir)["config"]["params"]["capacity"]  # type: ignore[arg-type]
    with open(loaded.events_path, encoding="utf-8") as fh:
        events = [json.loads(line) for line in fh]
    writes = [e for e in events if (e.get("prim"), e.get("op"), e.get("phase")) == ("count",
              "write", "ok")]  # fmt: skip
    lowest = min(e["value"] for e in writes)
    assert lowest < 0  # the underflow the config exists to show
    plot(loaded, tmp_path / "buffer.svg")
    svg = (tmp_path / "buffer.svg").read_text(encoding="utf-8")
    assert f"allowed 0 .. {capacity} (capacity {capacity})" in svg
    assert f"lowest {lowest}" in svg
    # The value axis reaches below the lowest count (it used to start at 0).
    from sim.plot import _figure

    history = open_history(loaded, track_states=True)
    data = _Collector(loaded)
    history.subscribe(data)
    history.feed_file(loaded.events_path)
    figure = _figure(loaded, data)
    bottom, top = figure.axes[1].get_ylim()
    assert bottom < lowest
    assert top > capacity
    import matplotlib.pyplot as plt

    plt.close(figure)


@pytest.mark.timeout(120)
def test_the_header_carries_every_parameter_and_the_whole_title(tmp_path: Path) -> None:
    # The readers-writers parameters ran past the width and were cut with an ellipsis; the
    # header now wraps them, so the picture shown in class names all of them.
    loaded = run(tmp_path / "logs", "readers_writers.toml", "clock.mode=virtual")
    plot(loaded, tmp_path / "rw.svg")
    svg = (tmp_path / "rw.svg").read_text(encoding="utf-8")
    assert "…" not in svg
    params = manifest_of(loaded.run_dir or tmp_path)["config"]["params"]
    assert isinstance(params, dict)
    assert len(params) >= 8
    for key in params:
        assert f"{key}=" in svg, key
    for word in loaded.title.split():
        assert word in svg, word
    # ... and the overrides clause stays whole on its line: it tells this run from the config's.
    assert "(with clock.mode=virtual)" in svg


def test_a_title_of_its_own_with_brackets_keeps_the_overrides_clause_last() -> None:
    from sim.plot import _wrap_title

    title = "Readers (with writers) share one lock, " * 3 + "(with params.readers=4)"
    lines = _wrap_title(title, 90).splitlines()
    assert lines[-1] == "(with params.readers=4)"
    assert " ".join(lines) == title
