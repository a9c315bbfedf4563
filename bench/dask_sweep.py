"""Dask executor overhead: the same small sweep on the local pool and on Dask, side by side.

Three ways to run one grid (8 car park runs of about a second, two at a time), in rounds, each
round in the same order, so that a change of load on the machine hits all three alike:

- ``local``: ``--jobs 2``, child processes (the default executor);
- ``dask LocalCluster``: ``--executor dask --jobs 2``, which starts a LocalCluster of two
  worker processes for the sweep and stops it after (its start is part of the cost);
- ``dask scheduler``: ``--scheduler tcp://...``, a cluster started once by this benchmark
  (``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1), as a user with a cluster
  would run it; runs come back to the sweep's folder as bytes.

Reports the sweeps' wall times (median of the rounds), the ratio to the local pool and the
extra seconds per run, and the runs' own process time (timing.json) to show where the
difference lies. The whole benchmark stops starting rounds once ``--budget`` seconds are spent
(and no sweep may take longer than what is left), so it bounds its own run time.

    python bench/dask_sweep.py                # 3 rounds, at most 300 s
    python bench/dask_sweep.py --quick        # 1 round, at most 90 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, add_time_limit, env, fmt, machine, median, table, time_limit

GRID = ["-p", "params.cars=range(10,18)"]
FIXED = ["-s", "params.capacity=4", "-s", "params.visits=1", "-s", "clock.speedup=20000"]


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


class Cluster:
    """``dask scheduler`` and two one-thread ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _start(self, *args: str) -> None:
        dask = Path(sys.executable).parent / "dask"
        quiet = subprocess.DEVNULL
        self.procs.append(subprocess.Popen([str(dask), *args], stdout=quiet, stderr=quiet,
                                           start_new_session=True))  # fmt: skip

    def __enter__(self) -> Cluster:
        file = self.root / "scheduler.json"
        self._start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(file))  # fmt: skip
        deadline = time.monotonic() + 60
        while not (file.exists() and file.stat().st_size):
            if time.monotonic() > deadline:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.05)
        self.address = json.loads(file.read_text(encoding="utf-8"))["address"]
        for n in (1, 2):
            self._start("worker", self.address, "--nthreads", "1", "--no-dashboard",
                        "--local-directory", str(self.root / f"w{n}"))  # fmt: skip
        subprocess.run([sys.executable, "-c", "import sys, distributed; c = distributed.Client("
                        "sys.argv[1], timeout=30); c.wait_for_workers(2, timeout=60); c.close()",
                        self.address], check=True, timeout=90, capture_output=True)  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def sweep(out: Path, extra: list[str], timeout: float) -> dict[str, float]:
    """One sweep of the grid; its wall time (the whole command) and its timing.json."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sim", "sweep", "carpark", *GRID, *FIXED, "--seed", "1",
                    "--out", str(out), "--quiet", *extra], check=True, stdout=subprocess.DEVNULL,
                   env=env(), cwd=ROOT, timeout=timeout)  # fmt: skip
    wall = time.perf_counter() - started
    (folder,) = (out / "sweeps").iterdir()
    timing = json.loads((folder / "timing.json").read_text(encoding="utf-8"))
    statuses = [json.loads(p.read_text(encoding="utf-8"))["status"]
                for p in folder.glob("runs/*/*/run.json")]  # fmt: skip
    if statuses != ["ok"] * 8:
        raise RuntimeError(f"{out}: runs ended {statuses}")
    return {"wall": wall, "runs": timing["runs_elapsed_s"], "sweep": timing["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds, all told")
    parser.add_argument("--quick", action="store_true", help="one round, at most 90 s")
    add_time_limit(parser, 900)
    args = parser.parse_args()
    time_limit(args.time_limit)
    if args.quick:
        args.rounds, args.budget = 1, min(args.budget, 90.0)
    began = time.monotonic()
    print(machine())
    print(f"before: {load()}")
    kinds = ["local", "dask LocalCluster", "dask scheduler"]
    found: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp)) as cluster:
        options = {
            "local": ["--jobs", "2"],
            "dask LocalCluster": ["--executor", "dask", "--jobs", "2"],
            "dask scheduler": ["--scheduler", cluster.address],
        }
        for n in range(args.rounds):
            # A round is three sweeps; start one only if the last round's time still fits.
            spent = time.monotonic() - began
            last = sum(found[k][-1]["wall"] for k in kinds) if n else 0.0
            if n and spent + last > args.budget:
                print(f"budget: stopping after {n} rounds ({spent:.0f} s spent)")
                break
            for kind in kinds:
                left = args.budget - (time.monotonic() - began)
                if left <= 0:
                    raise SystemExit(f"budget of {args.budget:g} s spent in round {n + 1}")
                found[kind].append(sweep(Path(tmp) / f"{n}-{kind}", options[kind], left))
    print(f"after:  {load()}")
    rounds = len(found["local"])
    local = median(r["wall"] for r in found["local"])
    rows = []
    for kind in kinds:
        wall = median(r["wall"] for r in found[kind])
        rows.append([
            kind,
            fmt(wall, 2),
            f"{wall / local:.2f}x",
            fmt((wall - local) / 8, 3),
            fmt(median(r["runs"] for r in found[kind]), 2),
            " ".join(f"{r['wall']:.2f}" for r in found[kind]),
        ])  # fmt: skip
    print(f"\n8 runs, 2 at a time, {rounds} rounds (median wall time):\n")
    print(table(["executor", "sweep wall (s)", "vs local", "extra per run (s)",
                 "runs' own time (s)", "each round (s)"], rows))  # fmt: skip
    print(f"\nbenchmark took {time.monotonic() - began:.0f} s (budget {args.budget:g} s)")


if __name__ == "__main__":
    main()
