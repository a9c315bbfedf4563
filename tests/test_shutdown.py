"""Stopping a run: Ctrl-C, SIGTERM and SIGKILL of the engine leave no process and no socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import sim as sim_api

from .conftest import alive, manifest_of, sim, socket_files

CARS = 12
# Long stays, so the run is surely in progress when the signal arrives.
LONG = [
    "-s", f"params.cars={CARS}",
    "-s", "params.capacity=4",
    "-s", "params.drive.mean=1",
    "-s", "params.park.mean=100000",
    "-s", "clock.speedup=600",
]  # fmt: skip


def start(out: Path, *extra: str) -> subprocess.Popen[str]:
    # A session of its own: signalling its process group is what Ctrl-C in a terminal does.
    return subprocess.Popen(
        [sys.executable, "-m", "sim", "run", "carpark.toml", *LONG, *extra, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_actors(out: Path, count: int, timeout: float = 30) -> tuple[Path, list[int]]:
    """Poll the events file until ``count`` actors have started; return their pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for events in out.glob("*/events.jsonl"):
            pids = []
            for line in events.read_text(encoding="utf-8").splitlines():
                event = json.loads(line)
                if event["event"] == "actor_start":
                    pids.append(event["pid"])
            if len(pids) == count:
                return events.parent, pids
        time.sleep(0.05)
    raise AssertionError(f"{count} actors did not start within {timeout} s")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def engine(out: Path):  # type: ignore[no-untyped-def]
    proc = start(out)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


@pytest.mark.parametrize(("how", "sig"), [("ctrl-c", signal.SIGINT), ("sigterm", signal.SIGTERM)])
@pytest.mark.timeout(60)
def test_interrupt_stops_every_actor_and_marks_the_manifest(
    engine: subprocess.Popen[str], out: Path, how: str, sig: signal.Signals
) -> None:
    run_dir, pids = wait_for_actors(out, CARS)
    if how == "ctrl-c":
        os.killpg(engine.pid, sig)  # the whole group, as a terminal does
    else:
        os.kill(engine.pid, sig)
    _stdout, stderr = engine.communicate(timeout=30)
    assert engine.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert wait_gone(pids, 5) == []
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "interrupted"
    assert manifest["reason"].startswith("stopped by SIG")
    # The log was flushed and closed: every line is whole, and every actor's end is recorded.
    lines = (run_dir / "events.jsonl").read_bytes()
    assert lines.endswith(b"\n")
    ends = [json.loads(x) for x in lines.splitlines() if b'"actor_end"' in x]
    assert len(ends) == CARS
    assert {e["status"] for e in ends} == {"terminated"}
    assert not socket_files(out)
    # Replayed, it is still the interrupted run it was, from the command line as from Python
    # (replay --check said "ok" and exited 0, while sim.replay's exit_code said 130).
    replayed = sim_api.replay(run_dir)
    assert (replayed.status, replayed.exit_code, replayed.ok) == ("interrupted", 130, False)
    checked = sim("replay", str(run_dir), "--check", timeout=30)
    assert checked.returncode == 130, checked.stderr
    assert checked.stderr.rstrip().splitlines()[-1].startswith("interrupted")
    assert sim("replay", str(run_dir), timeout=30).returncode == 0  # no --check: only shown
    # The events file alone (no run.json beside it) says so too, by its stopping line.
    bare = out / "bare" / "events.jsonl"
    bare.parent.mkdir()
    bare.write_bytes((run_dir / "events.jsonl").read_bytes())
    assert sim("replay", str(bare), "--check", timeout=30).returncode == 130


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_sigkill_of_engine_leaves_no_orphans(out: Path, transport: str) -> None:
    engine = start(out, "-s", f"engine.transport={transport}")
    try:
        run_dir, pids = wait_for_actors(out, CARS)
        address = manifest_of(run_dir)["coordinator"]["address"]
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(timeout=10)
        # Actors notice that their engine has gone and exit within a few seconds.
        assert wait_gone(pids, 5) == []
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
        engine.communicate(timeout=10)
    # No socket is left: TCP has no file, and the Unix socket is an abstract one, whose name
    # the kernel drops with its last descriptor.
    assert not socket_files(out)
    if transport == "unix":
        assert address.startswith("\0")
        with open("/proc/net/unix", encoding="utf-8") as fh:
            assert "@" + address[1:] not in fh.read()
    else:
        assert isinstance(address, list)


@pytest.mark.timeout(60)
def test_a_stop_in_the_middle_of_logging_loses_no_line(out: Path, tmp_path: Path) -> None:
    # Actors logging flat out are stopped by the run's timeout: SIGTERM lands while lines are
    # being written, and not one of them may leave a gap in seq.
    config = tmp_path / "busy.toml"
    config.write_text('scenario = "tests.scenario_busy"\n[engine]\ntimeout = 1\n', "utf-8")
    for _ in range(3):
        result = sim("run", str(config), "--out", str(out / str(_)), "--quiet", timeout=50)
        assert result.returncode == 1, result.stderr
        manifest = manifest_of(next((out / str(_)).iterdir()))
        assert manifest["status"] == "timeout"
        verdicts = {v["name"]: v for v in manifest["invariants"]}
        assert verdicts["seq contiguous"]["status"] == "pass", verdicts["seq contiguous"]
        assert verdicts["every actor ended cleanly"]["status"] == "pass"
        assert manifest["events"] > 1000


@pytest.mark.timeout(60)
def test_losing_the_launcher_stops_the_run_and_leaves_no_actor(
    engine: subprocess.Popen[str], out: Path
) -> None:
    # Under fork the actors are children of the engine's launcher; if it dies, its actors
    # must not run on unsupervised, and the run must say it failed.
    run_dir, pids = wait_for_actors(out, CARS)
    starts = [json.loads(line) for line in (run_dir / "events.jsonl").read_text("utf-8")
              .splitlines() if '"actor_start"' in line]  # fmt: skip
    (launcher,) = {e["ppid"] for e in starts}
    assert launcher != engine.pid
    os.kill(launcher, signal.SIGKILL)
    _, stderr = engine.communicate(timeout=30)
    assert engine.returncode == 1, stderr
    assert wait_gone(pids, 5) == []
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "failed"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_the_moment_the_manifest_appears_still_marks_it_interrupted(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # The manifest is written once the coordinator listens, before any actor starts; a stop
    # from then on (a Dask worker's SIGTERM as soon as it sees run.json) must end as every
    # stop does: no process left, the manifest saying "interrupted", not "running" for ever.
    for attempt in range(3):
        out = tmp_path / f"try{attempt}"
        engine = start(out)
        stderr = _stop_when(engine, lambda folder=out: any(folder.glob("*/run.json")), sig)
        assert engine.returncode == 130, stderr
        assert "Traceback" not in stderr
        (manifest,) = out.glob("*/run.json")
        assert json.loads(manifest.read_text(encoding="utf-8"))["status"] == "interrupted"
        assert wait_gone(_pids(manifest.parent), 5) == []
        assert not socket_files(out)


@pytest.mark.timeout(90)
def test_a_stop_the_moment_the_run_folder_appears_leaves_it_marked_interrupted(
    tmp_path: Path,
) -> None:
    # The run's folder is made before its manifest: a Ctrl-C in between must not leave a
    # folder that looks like a run and has no run.json to say what became of it.
    for attempt in range(3):
        out = tmp_path / f"try{attempt}"
        engine = start(out)
        stderr = _stop_when(engine, lambda folder=out: any(folder.glob("*/")), signal.SIGINT)
        assert engine.returncode == 130, stderr
        assert "Traceback" not in stderr
        (run_dir,) = out.iterdir()
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        assert manifest["status"] == "interrupted"
        assert not socket_files(out)


def _stop_when(engine: subprocess.Popen[str], ready: Callable[[], bool], sig: int) -> str:
    """Signal ``engine`` as soon as ``ready()`` (polled every 0.5 ms, for up to 60 s) and
    wait for it to end; its stderr. Whatever is left of it is killed."""
    try:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline and engine.poll() is None:
            time.sleep(0.0005)
        assert engine.poll() is None, "it ended before the stop: nothing tested"
        os.kill(engine.pid, sig)
        _stdout, stderr = engine.communicate(timeout=30)
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.communicate(timeout=10)
    return stderr


def _pids(run_dir: Path) -> list[int]:
    return [json.loads(x)["pid"] for x in (run_dir / "events.jsonl").read_bytes().splitlines()
            if b'"actor_start"' in x]  # fmt: skip


@pytest.mark.timeout(90)
def test_a_stop_while_the_log_is_analysed_marks_the_run_interrupted(tmp_path: Path) -> None:
    # The engine's signal receiver is closed once the run has ended; asyncio then left SIGTERM
    # at its default, which killed the command in the analysis (exit -15, run.json "running").
    # About a second of four actors logging flat out gives an analysis long enough to land in.
    config = tmp_path / "busy.toml"
    config.write_text('scenario = "tests.scenario_busy"\n[engine]\ntimeout = 1\n', "utf-8")
    out = tmp_path / "logs"
    engine = subprocess.Popen(
        [sys.executable, "-m", "sim", "run", str(config), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    # The analysis begins once the run has ended (run_end) and the engine has reaped its
    # launcher: then the command has no child left, and its signal receiver is closed. (A
    # stop before that is the engine's: a run that ended by its timeout stays "timeout".)
    stderr = _stop_when(
        engine, lambda: _ended(out) and not _children_of(engine.pid), signal.SIGTERM
    )
    assert engine.returncode == 130, stderr
    assert "Traceback" not in stderr
    (manifest,) = out.glob("*/run.json")
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    assert recorded["status"] == "interrupted"
    assert "analysed" in recorded["reason"]


def _children_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()


def _ended(out: Path) -> bool:
    """Has the engine logged ``run_end`` (the run is over, its analysis begins)?"""
    for events in out.glob("*/events.jsonl"):
        with open(events, "rb") as fh:
            fh.seek(max(0, events.stat().st_size - 4096))
            if b'"run_end"' in fh.read():
                return True
    return False


@pytest.mark.timeout(30)
def test_a_stop_is_recorded_the_moment_it_comes_and_the_handlers_come_back() -> None:
    # Through asyncio's self-pipe a stop reached the run only once the loop had read the pipe:
    # one that came while the run's end ran without yielding was still in the pipe when the
    # handlers were removed, and was dropped (CI: explore ran on to its 500th schedule after
    # Ctrl-C, exit 0). And a reader cancelled in the step a stop came lost it with itself.
    import anyio

    from sim._signals import stop_signals

    got: list[signal.Signals] = []

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("the stop went past stop_signals")

    async def main() -> tuple[list[signal.Signals], list[signal.Signals], tuple[object, ...]]:
        with stop_signals() as stops:
            signal.raise_signal(signal.SIGTERM)
            at_once = stops.unread  # no await: the loop has not run since
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    async for signum in stops:
                        got.append(signum)

                tg.start_soon(read)
                await anyio.sleep(0.01)  # the reader takes the SIGTERM, then waits
                signal.raise_signal(signal.SIGINT)
                tg.cancel_scope.cancel()  # ... and is cancelled before it can take this one
            left = stops.unread
        return at_once, left, (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    saved = signal.signal(signal.SIGTERM, mine)
    try:
        at_once, left, handlers = anyio.run(main)
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert at_once == [signal.SIGTERM]
    assert got == [signal.SIGTERM]
    assert left == [signal.SIGINT]
    # Straight back to what was there before (asyncio's Runner's own SIGINT handler, and
    # ours for SIGTERM), with no moment of the default action, which for SIGTERM kills.
    assert handlers[1] is mine
    assert handlers[0] not in (signal.SIG_DFL, signal.SIG_IGN, None)


@pytest.mark.timeout(30)
def test_a_stop_the_process_was_started_to_ignore_stays_ignored() -> None:
    # A background job of a shell without job control starts with SIGINT ignored; Python
    # leaves it so, and a run must not start taking it (it would stop some runs, not others).
    import anyio

    from sim._signals import stop_signals

    async def main() -> tuple[object, object]:
        with stop_signals():
            return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    saved = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        term, interrupt = anyio.run(main)
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert term is signal.SIG_IGN
    assert interrupt not in (signal.SIG_IGN, signal.SIG_DFL, signal.default_int_handler)
