"""Sweeps on Dask: a real scheduler and workers, a LocalCluster, Ctrl-C, resume, errors.

The cluster tests need the ``distributed`` package (``pip install -e '.[dask]'``) and skip,
saying so, without it. The cluster is real: ``dask scheduler`` and two ``dask worker``
processes on 127.0.0.1, started with the ``dask`` command and stopped (their whole process
groups) when the module's tests are done.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from .conftest import sim

HAVE_DISTRIBUTED = find_spec("distributed") is not None
# CI sets this after installing the extra: there a missing cluster is a failure, not a skip.
REQUIRED = os.environ.get("SIM_REQUIRE_DASK") == "1"
NO_DASK = "distributed is not installed: pip install -e '.[dask]'"
needs_distributed = pytest.mark.skipif(not HAVE_DISTRIBUTED and not REQUIRED, reason=NO_DASK)

# A car park run of about a second: 10 cars, one visit each.
SMALL = ["-s", "params.cars=10", "-s", "params.visits=1", "-s", "clock.speedup=20000"]
# Runs of a few seconds, to be stopped mid-way.
LONG = ["-s", "params.capacity=4", "-s", "params.visits=100", "-s", "params.drive.mean=5",
        "-s", "params.park.mean=5", "-s", "clock.speedup=24000"]  # fmt: skip
# What a run measures with the wall clock (the OS decides when a process wakes up): two local
# sweeps with the same seeds differ in these too. Everything else must be identical.
TIMED = {"wall_s", "run_dir", "wait_mean", "wait_p50", "wait_p95", "wait_max",
         "occupancy_mean", "utilisation", "sim_minutes", "timer_late_ms", "timer_share",
         *(f"steady_{k}" for k in ("window", "from", "minutes", "arrivals", "ci")),
         *(f"steady_{m}{s}" for m in ("wait_mean", "p_wait", "utilisation")
           for s in ("", "_low", "_high"))}  # fmt: skip


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def sweep_dir(out: Path) -> Path:
    (found,) = (out / "sweeps").iterdir()
    return found


def draws(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """Every random driving time of every car of every run, from the run's own log."""
    found: dict[tuple[str, str], list[float]] = {}
    for row in results:
        lines = (Path(row["run_dir"]) / "events.jsonl").read_text(encoding="utf-8")
        for event in map(json.loads, lines.splitlines()):
            if event["event"] == "arrive":
                found.setdefault((row["run"], event["actor"]), []).append(event["drove"])
    return found


def _session(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def in_session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a sweep started in a session of its own)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [pid for pid in pids if pid != sid and _session(pid) == sid and _alive(pid)]


def session_ends(sid: int, timeout: float = 5) -> list[str]:
    """Wait until no process of session ``sid`` is left; the command lines of any that are.
    Processes that notice their parent's exit (multiprocessing's resource tracker, a worker
    process) take a moment to go."""
    deadline = time.monotonic() + timeout
    while (left := in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [_cmdline(pid) for pid in left]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"{pid} (gone)"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def sim_runs(marker: Path) -> list[int]:
    """``python -m sim run`` processes (engines and their forked actors) whose command line
    mentions ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        mine = b"sim" in argv and b"run" in argv and str(marker).encode() in b" ".join(argv)
        if mine and _alive(int(name)):
            found.append(int(name))
    return found


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a process started in a session of its own, and all of its group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    # A nanny's worker process may outlive its nanny by a moment; nothing may outlive the test.
    for pid in in_session(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Cluster:
    address: str
    root: Path  # holds each worker's --local-directory (their scratch folders)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Dask cluster on 127.0.0.1: ``dask scheduler`` and two ``dask worker`` processes
    of one thread each, started with the ``dask`` command of this environment."""
    dask = Path(sys.executable).parent / "dask"
    if not HAVE_DISTRIBUTED or not dask.exists():
        reason = NO_DASK if not HAVE_DISTRIBUTED else f"no dask command at {dask}"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("dask")
    file = root / "scheduler.json"
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str) -> None:
        with open(root / log, "wb") as fh:
            process = subprocess.Popen(
                [str(dask), *args], stdout=fh, stderr=fh, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        started.append(process)

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(file), log="scheduler.log")  # fmt: skip
        wait_for("the scheduler file", lambda: file.exists() and file.stat().st_size > 0)
        address = json.loads(file.read_text(encoding="utf-8"))["address"]
        for n in (1, 2):
            start("worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                  "--name", f"w{n}", "--local-directory", str(root / f"w{n}"),
                  log=f"worker{n}.log")  # fmt: skip
        # Both workers registered: asked through a client in a child, so that whatever
        # distributed warns about stays out of this test process (warnings are errors here).
        subprocess.run([sys.executable, "-c", "import sys, distributed; c = distributed.Client("
                        "sys.argv[1], timeout=30); c.wait_for_workers(2, timeout=60); c.close()",
                        address], check=True, timeout=90, capture_output=True)  # fmt: skip
        yield Cluster(address, root)
    finally:
        for proc in reversed(started):
            stop_group(proc)


def no_scratch_left(cluster: Cluster) -> bool:
    return not list(cluster.root.glob("w*/**/sim-p*"))


@pytest.mark.dask
@needs_distributed
@pytest.mark.timeout(180)
def test_a_sweep_on_a_dask_cluster_gives_the_local_results(
    cluster: Cluster, tmp_path: Path
) -> None:
    args = ["carpark", "-p", "params.capacity=3,4", "--repeat", "2", *SMALL, "--seed", "7"]
    local = sim("sweep", *args, "--out", str(tmp_path / "local"), "--quiet")
    assert local.returncode == 0, local.stderr
    dask = sim("sweep", *args, "--out", str(tmp_path / "dask"), "--scheduler", cluster.address)
    assert dask.returncode == 0, dask.stderr
    assert f"2 at a time on Dask at {cluster.address} (2 workers)" in dask.stderr
    assert "[4/4]" in dask.stderr  # progress, one line per finished run
    mine, theirs = (
        rows(sweep_dir(tmp_path / "local") / "results.csv"),
        rows(sweep_dir(tmp_path / "dask") / "results.csv"),
    )
    assert [r["run"] for r in theirs] == ["p000-r0", "p000-r1", "p001-r0", "p001-r1"]
    assert list(theirs[0]) == list(mine[0])  # the same columns in the same order
    for a, b in zip(mine, theirs, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMED} == {
            k: v for k, v in b.items() if k not in TIMED
        }
        assert b["status"] == "ok"
    # The same seeds drew the same numbers, car by car.
    assert draws(mine) == draws(theirs)
    # The runs came back into the sweep's folder, files and all, and left nothing on the workers.
    folder = sweep_dir(tmp_path / "dask")
    for row in theirs:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == folder / "runs" / row["run"]
        # The config as read is copied beside the log (provenance).
        assert {p.name for p in run_dir.iterdir()} == {"run.json", "events.jsonl", "config.toml"}
        assert json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["status"] == "ok"
    assert no_scratch_left(cluster)


@pytest.mark.dask
@needs_distributed
@pytest.mark.timeout(120)
def test_shared_out_lets_workers_write_into_the_sweep_folder(
    cluster: Cluster, tmp_path: Path
) -> None:
    result = sim("sweep", "carpark", "-p", "params.capacity=4", "--repeat", "2", *SMALL,
                 "--out", str(tmp_path), "--scheduler", cluster.address, "--shared-out",
                 "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = rows(sweep_dir(tmp_path) / "results.csv")
    assert [r["status"] for r in results] == ["ok", "ok"]
    for row in results:
        assert (Path(row["run_dir"]) / "events.jsonl").stat().st_size > 0
    assert no_scratch_left(cluster)


@pytest.mark.dask
@needs_distributed
@pytest.mark.timeout(180)
def test_ctrl_c_of_a_dask_sweep_stops_the_runs_on_the_workers_and_resume_finishes_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "sweep", "carpark", "-p", "params.cars=range(3,7)", *LONG,
         "--seed", "2", "--out", str(out), "--scheduler", cluster.address, "--quiet"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Both workers are in the middle of a run: its manifest exists in their scratch space.
        running = "w*/**/sim-p*/out/*/run.json"
        wait_for("two runs under way", lambda: len(list(cluster.root.glob(running))) == 2)
        assert len(sim_runs(cluster.root)) > 2  # two engines and their cars
        proc.send_signal(signal.SIGINT)  # Ctrl-C, to the sweep alone: the workers are elsewhere
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop_group(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    # No run goes on behind the sweep's back: every engine and actor on the workers is gone.
    assert sim_runs(cluster.root) == []
    assert no_scratch_left(cluster)
    folder = sweep_dir(out)
    assert stdout.strip() == str(folder)
    statuses = {r["run"]: r["status"] for r in rows(folder / "results.csv")}
    assert statuses == {"p000-r0": "interrupted", "p001-r0": "interrupted"}
    # The interrupted runs came back too, marked so by the runs themselves.
    for name in statuses:
        (manifest,) = (folder / "runs" / name).glob("*/run.json")
        assert json.loads(manifest.read_text(encoding="utf-8"))["status"] == "interrupted"

    result = sim("sweep", "--resume", str(folder), "--scheduler", cluster.address, timeout=150)
    assert result.returncode == 0, result.stderr
    results = rows(folder / "results.csv")
    assert [r["status"] for r in results] == ["ok"] * 4
    planned = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))["tasks"]
    assert [int(r["seed"]) for r in results] == [t["seed"] for t in planned]


@pytest.mark.dask
@needs_distributed
@pytest.mark.timeout(120)
def test_executor_dask_runs_the_sweep_on_a_local_cluster(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "sweep", "carpark", "-p", "params.capacity=3,4", *SMALL,
         "--out", str(tmp_path / "logs"), "--executor", "dask", "--jobs", "2"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200", "TMPDIR": str(scratch)},
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=100)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, stderr
    assert "2 at a time on a Dask LocalCluster of 2 worker processes" in stderr
    assert "[2/2]" in stderr
    assert "distributed" not in stderr  # none of the cluster's log lines
    # The workers' scratch went with the cluster (a dask-scratch-space with its locks stayed).
    assert list(scratch.iterdir()) == []
    folder = sweep_dir(tmp_path / "logs")
    assert stdout.strip() == str(folder)
    results = rows(folder / "results.csv")
    assert [r["status"] for r in results] == ["ok", "ok"]
    for row in results:
        assert Path(row["run_dir"]).parent == folder / "runs" / row["run"]
    assert session_ends(proc.pid) == []  # the cluster's processes went with the sweep


@pytest.mark.dask
@needs_distributed
@pytest.mark.timeout(120)
def test_ctrl_c_at_the_terminal_stops_a_local_cluster_sweep(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "sweep", "carpark", "-p", "params.cars=range(3,7)", *LONG,
         "--out", str(tmp_path / "logs"), "--executor", "dask", "--jobs", "2", "--quiet"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(scratch)},  # where the LocalCluster's workers scratch
    )  # fmt: skip
    try:
        wait_for("two runs under way on the workers",
                 lambda: len(list(scratch.glob("**/sim-p*/out/*/run.json"))) == 2)  # fmt: skip
        # A terminal sends Ctrl-C to the whole foreground group: the sweep, the cluster's
        # worker processes and the runs. The workers must survive it to return the runs.
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop_group(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert session_ends(proc.pid) == []
    statuses = {r["run"]: r["status"] for r in rows(sweep_dir(tmp_path / "logs") / "results.csv")}
    assert statuses == {"p000-r0": "interrupted", "p001-r0": "interrupted"}
    assert list(scratch.iterdir()) == []


@pytest.mark.timeout(60)
def test_without_distributed_the_dask_executor_is_a_one_line_usage_error(tmp_path: Path) -> None:
    # As if distributed were not installed: None in sys.modules makes its import fail.
    code = ("import sys; sys.modules['distributed'] = None; from sim.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code, "sweep", "carpark", "-p", "params.cars=2,3",
         "--out", str(tmp_path), "--executor", "dask"],
        capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "error: --executor: the dask executor needs the distributed package: "
        "pip install -e '.[dask]'"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scheduler", "127.0.0.1:8786"], "--scheduler: expected tcp://HOST:PORT"),
        (["--executor", "local", "--scheduler", "tcp://127.0.0.1:8786"],
         "--scheduler and --shared-out need --executor dask"),
        (["--shared-out"], "--scheduler and --shared-out need --executor dask"),
    ],
)  # fmt: skip
@pytest.mark.timeout(30)
def test_executor_options_are_checked_before_anything_runs(
    tmp_path: Path, args: list[str], words: str
) -> None:
    result = sim("sweep", "carpark", "-p", "params.cars=2,3", "--out", str(tmp_path), *args)
    assert result.returncode == 2, result
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.dask
@needs_distributed
@pytest.mark.timeout(120)
def test_a_dask_run_stopped_before_it_began_leaves_no_empty_folder(tmp_path: Path) -> None:
    # Ctrl-C soon after a sweep's start left runs/p002-r0/ and p002-r1/ empty: made when the
    # runs were submitted, never filled, since they had not begun on their workers.
    import anyio

    from sim._sweep.dask import DaskExecutor
    from sim._sweep.runner import plan_sweep

    plan = plan_sweep("carpark", ["params.cars=3,4"], overrides=LONG[1::2], out=tmp_path)

    async def stopped_at_once() -> None:
        async with DaskExecutor(plan.config, plan.overrides, workers=1) as executor:
            for task in plan.tasks:
                with anyio.move_on_after(0):  # cancelled at its first wait, once submitted
                    await executor.run(task)

    anyio.run(stopped_at_once)
    assert [t.name for t in plan.tasks] == ["p000-r0", "p001-r0"]
    assert [t.out for t in plan.tasks if t.out.exists()] == []
