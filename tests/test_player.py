"""The player: a timeline when not on a terminal, a live board in 80 columns on one."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

import sim.player as player
from sim import ConfigError
from sim._replay import LoadedRun, load_run
from sim.player import play

from .conftest import finished

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def run(out: Path, config: str, *settings: str) -> LoadedRun:
    """Run ``config`` with ``-s`` ``settings``, which must succeed, and load the run back."""
    result = finished(out, config, *settings, args=("--quiet",))
    assert result.code == 0, result.stderr
    return load_run(result.run_dir)


def printed(loaded: LoadedRun, speed: float = 1.0, **console: object) -> str:
    out = io.StringIO()
    play(loaded, Console(file=out, width=80, **console), speed)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timeline is printed at once: a sleep in the player fails the test."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"the timeline slept {seconds} s")

    monkeypatch.setattr(player, "time", SimpleNamespace(sleep=refuse, monotonic=time.monotonic))


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("no_sleep")
def test_not_a_terminal_prints_a_timeline_of_every_car(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "carpark.toml", "params.cars=8", "params.capacity=3",
                 "params.visits=2", "clock.speedup=12000")  # fmt: skip
    text = printed(loaded, speed=0.01)  # a speed that would take minutes to animate
    lines = text.splitlines()
    assert "Not a terminal" in lines[0]
    for i in range(8):
        mine = [line for line in lines if f" car-{i:03d} " in line]
        states = [line.split()[-1] for line in mine]
        assert states.count("parked") == 2, mine  # two visits, each parked once
        assert states[-1] == "done"
    assert lines[-1].startswith("end of the log:")
    # Times run forward, line after line.
    times = [float(line.split()[0]) for line in lines[1:-1]]
    assert times == sorted(times)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("no_sleep")
def test_timeline_of_a_deadlock_shows_who_waits_for_what(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "philosophers-naive")
    text = printed(loaded)
    for i in range(5):
        wanted, held = (i + 1) % 5, i
        assert re.search(rf"phil-00{i}\s+waiting\s+fork-{wanted} \(holds fork-{held}\)", text)
    assert "deadlock:" in text
    assert text.count("terminated") == 5


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("no_sleep")
def test_timeline_of_many_actors_counts_them_per_state(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "carpark.toml", "params.cars=60", "params.capacity=10",
                 "params.visits=1", "clock.speedup=12000")  # fmt: skip
    lines = printed(loaded).splitlines()
    snapshots = [line for line in lines if " car: " in line]
    assert len(snapshots) >= 10
    assert any("waiting" in line and "spaces 10/10 taken" in line for line in snapshots)
    assert "car: done 60" in snapshots[-1]
    assert not any(" car-0" in line for line in lines)  # no line per car


@pytest.mark.timeout(120)
def test_on_a_terminal_the_board_fits_80_columns_and_ends(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "philosophers")
    wall = float((loaded.manifest or {})["wall_s"])
    text = printed(loaded, speed=wall / 0.5, force_terminal=True, height=24, color_system=None)
    frames = _CONTROL.sub("\n", text)
    lines = [line for line in frames.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 80
    clocks = {line for line in lines if line.startswith("wall ")}
    assert len(clocks) >= 2  # the clock moved between frames
    assert "fork*" in frames
    last = frames[frames.rindex("wall ") :]
    assert all(re.search(rf"phil-00{i}\s+done", last) for i in range(5))
    assert lines[-1].startswith("end of the log:")


@pytest.mark.timeout(120)
def test_a_board_with_many_actors_folds_them_into_groups(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "carpark.toml", "params.cars=40", "params.capacity=10",
                 "params.visits=1", "clock.speedup=12000")  # fmt: skip
    wall = float((loaded.manifest or {})["wall_s"])
    text = printed(loaded, speed=wall / 0.3, force_terminal=True, height=24, color_system=None)
    frames = _CONTROL.sub("\n", text)
    assert "car (40)" in frames
    assert "█" * 40 in frames  # one cell per car
    assert max(len(line) for line in frames.splitlines()) <= 80


def test_speed_must_be_positive(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("")
    with pytest.raises(ConfigError, match="speed"):
        play(load_run(folder), Console(file=io.StringIO()), 0)
