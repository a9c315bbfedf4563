"""The live view during a run, on a real terminal: tmux at 80 columns, every frame the run
drew kept (pipe-pane) and read back. Lanes per actor, a gauge per primitive of every kind,
the counts, the deadlock or the phenomenon as soon as it is found."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim import load_config

from .conftest import ROOT, only_run_dir

_SGR = re.compile(r"\x1b\[[0-9;]*m")
_MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _tmux(server: str, *args: str) -> None:
    subprocess.run(["tmux", "-L", server, *args], check=True, capture_output=True, timeout=10)


def live_frames(tmp_path: Path, config: str, *settings: str) -> tuple[list[str], Path]:
    """Run ``config`` in an 80-column tmux pane; every frame of its live view, as text, and
    the run directory."""
    if shutil.which("tmux") is None:
        reason = "tmux is not installed (.ci/run installs it)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    out = tmp_path / "logs"
    raw = tmp_path / "pane.txt"
    done = tmp_path / "done"
    args = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "sim", "run", config, "--out",
                    str(out), *(x for s in settings for x in ("-s", s))])  # fmt: skip
    # The pane must be recorded before the run starts: it waits for the recorder's file.
    command = (f"cd {shlex.quote(str(ROOT))}; while [ ! -e {raw} ]; do sleep 0.05; done; "
               f"{args}; touch {done}; sleep 60")  # fmt: skip
    # A tmux server of its own (-L): tests running side by side (pytest -n) share nothing.
    name = f"sim-live-{os.getpid()}-{tmp_path.name}"
    _tmux(name, "new-session", "-d", "-s", name, "-x", "80", "-y", "40",
          "-e", "TERM=xterm-256color", "-e", "COLUMNS=", command)  # fmt: skip
    try:
        _tmux(name, "pipe-pane", "-t", name, "-o", f"cat >> {shlex.quote(str(raw))}")
        deadline = time.monotonic() + 90
        while not done.exists():
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.1)
        time.sleep(0.3)  # the last bytes reach the recorder
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)
    text = _MOVES.sub("\n", _SGR.sub("", raw.read_text(encoding="utf-8", errors="replace")))
    title = load_config(config, list(settings)).heading
    frames = [f"{title}\n{chunk}" for chunk in text.split(title + "\n")[1:]]
    frames = [f for f in frames if re.search(r"^wall +\d", f, re.M)]
    assert frames, text[-2000:]
    for frame in frames:
        lines = [line for line in frame.splitlines() if line.strip()]
        assert max(len(line) for line in lines) <= 80
    return frames, only_run_dir(out)


def lane(frame: str, actor: str) -> str:
    return next((line for line in frame.splitlines() if line.startswith(actor + " ")), "")


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.timeout(120)
def test_the_naive_philosophers_live_lanes_forks_counts_and_the_deadlock(tmp_path: Path) -> None:
    frames, run_dir = live_frames(tmp_path, "philosophers-naive")
    from sim._replay import lines_of, load_run

    loaded = load_run(run_dir)
    deadlock = next(line for line in lines_of(loaded) if line.event == "deadlock")
    explained = [f for f in frames if words(str(deadlock["explanation"])) in words(f)]
    assert explained, frames[-1]  # in full, wrapped, during the run
    assert re.search(r"^fork\*\s.*■■■■■ 5/5 held", explained[0], re.M)  # still locked
    # During the second the engine waits to be sure, every philosopher is blocked, and its
    # lane says on what, holding which fork. (Once the engine has stopped them, a frame may
    # show them terminated: how soon depends on the machine's load.)
    stuck = [f for f in frames if "actors: 0 not started   0 running   5 blocked   0 done" in f]
    assert stuck
    for wait in deadlock["waits"]:
        held = next(w["prim"] for w in deadlock["waits"] if wait["actor"] in w["held_by"])
        shown = lane(stuck[-1], wait["actor"])
        assert re.search(rf"waiting\s+{wait['prim']} \(holds {held}\)", shown), shown


@pytest.mark.timeout(120)
def test_the_if_buffer_live_condition_values_and_the_underflow_when_found(tmp_path: Path) -> None:
    frames, _ = live_frames(tmp_path, "bounded_buffer-if")
    gauges = {m.group(1) for f in frames for m in re.finditer(r"^(cond|count|in|out) ", f, re.M)}
    assert gauges == {"cond", "count", "in", "out"}
    assert any(re.search(r"^cond .*held by (nobody|\S+), \d+ waiting, \d+ in wait", f, re.M)
               for f in frames)  # fmt: skip
    assert any(re.search(r"^count .*value -\d+, OUTSIDE 0 \.\. 4", f, re.M) for f in frames)
    # Which negative value it is said at depends on how the consumers' lines interleave.
    found = [i for i, f in enumerate(frames)
             if re.search(r"buffer underflow: count went to -\d+ at", words(f))]  # fmt: skip
    assert found, frames[-1]  # said live, while the run went on
    assert found[0] < len(frames) - 1
    for actor in ("producer-000", "consumer-000", "consumer-001", "consumer-002"):
        assert any(lane(f, actor) for f in frames), actor


@pytest.mark.timeout(120)
def test_queue_workers_live_queue_length_and_lanes(tmp_path: Path) -> None:
    frames, run_dir = live_frames(tmp_path, "queue_workers")
    import json

    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    queues = [n for n, p in manifest["primitives"].items() if p["kind"] in ("queue",
              "joinable_queue")]  # fmt: skip
    assert queues
    for queue in queues:
        assert any(re.search(rf"^{queue} .*\d+ queued", f, re.M) for f in frames), queue
    for actor in manifest["actors"]:
        assert any(lane(f, actor) for f in frames), actor
    assert any(re.search(r"actors: .*\d+ done", f) for f in frames)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("config", "pattern"), [
    ("start_signal", r"[●○] (set|clear), \d+ waiting"),
    ("barrier", r"\d+/\d+ arrived|\d+ waiting"),
])  # fmt: skip
def test_events_and_barriers_have_their_gauge_live(
    tmp_path: Path, config: str, pattern: str
) -> None:
    frames, _ = live_frames(tmp_path, config)
    assert any(re.search(pattern, f) for f in frames), frames[-1]
