"""What replay prints and where: the timeline on stdout off a terminal, the summary after a
playback, lines that do not wrap off a terminal, titles that name the overrides."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from sim._replay import LoadedRun, load_run, open_history
from sim.player import render
from sim.views import Board

from .conftest import ROOT, finished


def replay(*args: str, columns: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m sim replay ARGS`` with stdout and stderr pipes (not terminals)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "sim", "replay", *args], capture_output=True,
                          text=True, timeout=90, cwd=ROOT, env=env, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def naive(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    out = tmp_path_factory.mktemp("output") / "logs"
    result = finished(out, "philosophers-naive", "clock.mode=virtual", args=("--quiet",
                      "--seed", "3"))  # fmt: skip
    assert result.code == 0, result.stderr
    return load_run(result.run_dir)


@pytest.mark.timeout(120)
def test_off_a_terminal_the_timeline_goes_to_stdout_and_the_summary_after_it(
    naive: LoadedRun,
) -> None:
    result = replay(str(naive.run_dir), "--speed", "10")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert "Not a terminal" in out[0]
    assert out[-1].startswith("end of the log:")
    for actor in naive.actors:
        assert any(f" {actor} " in line and "waiting" in line for line in out), actor
    assert "deadlock" in result.stdout
    assert "As this config expects" not in result.stdout  # the summary is not for scripts
    assert "As this config expects, the run shows deadlock" in result.stderr
    # Piped into head, the first lines are the timeline's.
    head = subprocess.run(f"{shlex(sys.executable)} -m sim replay {shlex(str(naive.run_dir))} "
                          "--speed 10 2>/dev/null | head -3", shell=True, capture_output=True,
                          text=True, timeout=90, cwd=ROOT, check=False)  # fmt: skip
    assert head.stdout.splitlines() == out[:3]


def shlex(text: str) -> str:
    import shlex as _shlex

    return _shlex.quote(text)


@pytest.mark.timeout(120)
def test_off_a_terminal_lines_do_not_wrap_and_end_without_padding(naive: LoadedRun) -> None:
    from sim._replay import lines_of

    explanation = next(str(line["explanation"]) for line in lines_of(naive)
                       if line.event == "deadlock")  # fmt: skip
    assert len(explanation) > 200
    result = replay(str(naive.run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.endswith(explanation) and "As this config expects" in line for line in lines)
    verdict = next(line for line in lines if "no deadlock" in line)
    assert verdict.endswith(explanation)  # the table row is one line, its detail whole
    assert all(line == line.rstrip() for line in lines)
    # COLUMNS, when given, still says how wide to be.
    narrow = replay(str(naive.run_dir), columns="80")
    assert max(len(line) for line in narrow.stderr.splitlines()) <= 80


@pytest.mark.timeout(120)
def test_titles_name_the_overrides_everywhere(tmp_path: Path) -> None:
    settings = ("params.cars=6", "params.capacity=2", "params.visits=1", "clock.speedup=12000")
    result = finished(tmp_path / "logs", "carpark", *settings, args=("--seed", "1"))
    assert result.code == 0, result.stderr
    said = f"(with {', '.join(settings)})"
    assert result.manifest["overrides"] == list(settings)
    assert said in result.stderr  # the run's own summary
    loaded = load_run(result.run_dir)
    assert loaded.title.endswith(said)
    # The title's {param} placeholders are filled from the run's own params: it says 6 cars.
    written = str(result.manifest["config"]["title"])
    assert "{cars}" in written
    title = written.replace("{capacity}", "2").replace("{cars}", "6").replace("{visits}", "1")
    assert loaded.title == f"{title} {said}"
    assert f"{title} {said}" in result.stderr
    # replay's summary, the plot, the page, the player's board.
    summary = replay(str(result.run_dir), "--plot", str(tmp_path / "car.svg"), "--export",
                     "html", str(tmp_path / "car.html"))  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    assert summary.stderr.splitlines()[0].startswith(f"{title} {said}")
    # Off a terminal the run's summary and the replay's are laid out alike (they once were
    # not: the run wrapped at 80 columns, the replay padded every value out to its longest).
    assert _metric_rows(result.stderr, title) == _metric_rows(summary.stderr, title)
    svg = (tmp_path / "car.svg").read_text(encoding="utf-8")
    assert said in svg
    page = (tmp_path / "car.html").read_text(encoding="utf-8")
    assert f"<title>{title} {said} · sim replay</title>" in page
    history = open_history(loaded, track_states=True)
    board = history.subscribe(Board())
    assert isinstance(board, Board)
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system=None)
    console.print(render(loaded, board, 0.0, 1.0, None, console))
    assert out.getvalue().splitlines()[0].strip() == f"{title} {said}"


def _metric_rows(text: str, title: str) -> list[str]:
    """The summary's metric rows, from its title line to the event count."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next(i for i, line in enumerate(lines) if line.startswith("  events logged"))
    rows = lines[start + 1 : end]
    assert len(rows) > 5
    return rows


@pytest.mark.timeout(120)
def test_play_off_a_terminal_says_so_and_prints_the_timeline(naive: LoadedRun) -> None:
    result = replay(str(naive.run_dir), "--play")
    assert result.returncode == 0, result.stderr
    assert "--play needs a terminal" in result.stderr
    assert result.stdout.splitlines()[-1].startswith("end of the log:")
    assert "As this config expects, the run shows deadlock" in result.stderr
