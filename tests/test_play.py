"""The interactive player (``replay --play``), driven through Textual's pilot, and once for real
in tmux at 80 columns."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from sim._replay import LoadedRun, lines_of, load_run, open_history
from sim.history import History
from sim.views import Board, Snapshot
from sim.views.tape import Tape, record

from .conftest import ROOT, finished


@pytest.fixture(scope="module")
def naive(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    """philosophers-naive under the virtual clock: the same deadlock every time."""
    out = tmp_path_factory.mktemp("play") / "logs"
    result = finished(out, "philosophers-naive", "clock.mode=virtual", args=("--quiet",
                      "--seed", "3"))  # fmt: skip
    assert result.code == 0, result.stderr
    return load_run(result.run_dir)


def board_after(loaded: LoadedRun, steps: int) -> Snapshot:
    """The board after ``steps`` scheduling steps, from a history of its own: the lines are
    grouped by their ``step`` here, independently of the tape."""
    history: History = open_history(loaded, track_states=True)
    board = history.subscribe(Board())
    assert isinstance(board, Board)
    taken: list[int] = []
    for line in lines_of(loaded):
        if not taken or line.step != taken[-1]:
            if len(taken) == steps:
                break
            taken.append(line.step or 0)
        history.feed([line])
    return board.snapshot()


def same_board(shown: Snapshot, expected: Snapshot) -> None:
    assert [r.text for r in shown.rows] == [r.text for r in expected.rows]
    for name in expected.names:
        mine, theirs = shown.state(name), expected.state(name)
        if theirs is None or theirs.category == "new":
            assert mine is None or mine.category == "new"
        else:
            assert mine is not None, name
            assert (mine.state, mine.detail) == (theirs.state, theirs.detail), name
    assert shown.news == expected.news


def text_of(renderable: object, width: int = 78) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    text = console.export_text()
    console.file.close()
    return text


def deadlock_line(loaded: LoadedRun) -> dict[str, object]:
    return next(line.fields for line in lines_of(loaded) if line.event == "deadlock")


@pytest.mark.timeout(120)
async def test_keys_step_forward_and_back_and_the_board_matches_the_history(
    naive: LoadedRun,
) -> None:
    from sim.play.app import Player

    tape = record(naive)
    app = Player(tape)
    async with app.run_test(size=(80, 40)) as pilot:
        for k in range(1, 16):
            await pilot.press("right")
            assert app.position == k
            same_board(app.shown, board_after(naive, k))
        board = text_of(app.query_one("#board").content)  # type: ignore[attr-defined]
        for name in naive.actors:
            state = app.shown.state(name)
            assert state is not None
            assert f"{name}     {state.state}" in board
        for k in range(14, 5, -1):
            await pilot.press("left")
            assert app.position == k
            same_board(app.shown, board_after(naive, k))
        await pilot.press("home")
        assert app.position == 0
        assert app.shown.counts()["not started"] == len(naive.actors)
        await pilot.press("end")
        assert app.position == tape.end
        same_board(app.shown, board_after(naive, tape.end + 1))


@pytest.mark.timeout(120)
async def test_the_next_finding_is_the_deadlock_explained_in_full_and_the_summary_waits(
    naive: LoadedRun,
) -> None:
    from sim.play.app import Player

    tape = record(naive)
    explanation = str(deadlock_line(naive)["explanation"])
    app = Player(tape)
    async with app.run_test(size=(80, 40)) as pilot:
        summary = app.query_one("#summary")
        await pilot.press("n")
        at = app.position
        assert any(line.event == "deadlock" for line in tape.steps[at - 1].lines)
        notes = " ".join(text_of(app.query_one("#notes").content).split())  # type: ignore[attr-defined]
        assert explanation in notes  # whole, wrapped, not cut
        assert not summary.has_class("shown")
        await pilot.press("left")
        assert app.position == at - 1
        assert explanation not in " ".join(
            text_of(app.query_one("#notes").content).split()  # type: ignore[attr-defined]
        )
        await pilot.press("G")
        assert summary.has_class("shown")
        shown = " ".join(text_of(summary.content).split())  # type: ignore[attr-defined]
        assert "no deadlock" in shown
        assert "end of the log" in shown


@pytest.mark.timeout(120)
async def test_playing_stops_at_the_finding_and_speed_keys_change_the_speed(
    naive: LoadedRun,
) -> None:
    from sim.play.app import Player

    tape = record(naive)
    deadlock = next(i + 1 for i, s in enumerate(tape.steps)
                    if any(line.event == "deadlock" for line in s.lines))  # fmt: skip
    app = Player(tape, speed=1.0)
    async with app.run_test(size=(80, 40)) as pilot:
        for _ in range(4):
            await pilot.press("plus")
        assert app.speed == 20.0
        await pilot.press("minus")
        assert app.speed == 10.0
        await pilot.press("space")
        assert app.playing
        for _ in range(200):
            if not app.playing:
                break
            await pilot.pause(0.05)
        assert not app.playing
        assert app.position == deadlock


@pytest.mark.timeout(120)
async def test_following_an_actor_steps_through_its_own_steps(naive: LoadedRun) -> None:
    from sim.play.app import Player

    tape: Tape = record(naive)
    app = Player(tape)
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.press("f")
        await pilot.press("f")
        who = naive.actors[1]
        assert app.following == who
        mine = [i + 1 for i, s in enumerate(tape.steps) if any(x.actor == who for x in s.lines)]
        for expected in mine[:4]:
            await pilot.press("right")
            assert app.position == expected
        board = text_of(app.query_one("#board").content)  # type: ignore[attr-defined]
        lanes = [line for line in board.splitlines() if line.startswith("phil-")]
        assert lanes[0].startswith(who)  # the followed actor on top


# A tmux server of the test's own (-L): tests running side by side (pytest -n) share nothing.
_SERVER = f"sim-play-{os.getpid()}"


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", _SERVER, *args], check=True, capture_output=True,
                          text=True, timeout=10).stdout  # fmt: skip


@pytest.fixture
def tmux_session() -> Iterator[str]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    name = f"sim-play-{os.getpid()}"
    yield name
    subprocess.run(["tmux", "-L", _SERVER, "kill-server"], capture_output=True, check=False)


@pytest.mark.timeout(120)
def test_in_tmux_at_80_columns_the_deadlock_explanation_is_whole(
    naive: LoadedRun, tmux_session: str
) -> None:
    explanation = str(deadlock_line(naive)["explanation"])
    command = (f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m sim replay "
               f"{shlex.quote(str(naive.run_dir))} --play; sleep 60")  # fmt: skip
    _tmux("new-session", "-d", "-s", tmux_session, "-x", "80", "-y", "30",
          "-e", "TERM=xterm-256color", command)  # fmt: skip

    def screen() -> str:
        return _tmux("capture-pane", "-p", "-t", tmux_session)

    deadline = time.monotonic() + 60
    while "paused" not in screen():
        assert time.monotonic() < deadline, screen()
        time.sleep(0.2)
    _tmux("send-keys", "-t", tmux_session, "n")
    while "deadlock:" not in screen():
        assert time.monotonic() < deadline, screen()
        time.sleep(0.2)
    shown = screen()
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert explanation in " ".join(shown.split()), shown
    assert "…" not in "".join(line for line in lines if "waits in" in line)
    _tmux("send-keys", "-t", tmux_session, "q")
    while "   log:" not in screen():
        assert time.monotonic() < deadline, screen()
        time.sleep(0.2)
    # Quit: the summary follows the play, on the terminal.
    after = " ".join(screen().split())
    assert "As this config expects, the run shows deadlock" in after
