"""Sweep overhead: a 40-run sweep of a 1-second car park config, with --jobs 1 and 2.

Reports the sweep's wall time against the sum of its runs' own wall times divided by the jobs
(the sweep's own overhead), and the fixed cost per run: from the child process's start to the
first actor alive (interpreter start, imports, config, engine start), and from the last actor's
end to the process's exit (teardown, analysis, manifest).

    python bench/sweep_overhead.py            # 40 runs per jobs setting
    python bench/sweep_overhead.py --runs 8   # quicker
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import add_time_limit, time_limit

# A car park run of about one second of actor time.
CONFIG = [
    *("-s", "params.capacity=8", "-s", "params.visits=3"),
    *("-s", "params.drive.mean=10", "-s", "params.park.mean=10", "-s", "clock.speedup=7200"),
]


def sweep(out: Path, runs: int, jobs: int) -> dict[str, float]:
    axis = f"params.cars=range(20,{20 + runs})"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sim", "sweep", "carpark", "-p", axis, *CONFIG,
                    "--jobs", str(jobs), "--out", str(out), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - started
    (folder,) = (out / "sweeps").iterdir()
    timing = json.loads((folder / "timing.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(open(folder / "results.csv", encoding="utf-8")))  # noqa: SIM115
    before, after, actor_time = [], [], []
    for row in rows:
        lines = (Path(row["run_dir"]) / "events.jsonl").read_text(encoding="utf-8").splitlines()
        events = [json.loads(x) for x in lines]
        starts = [e["ts"] for e in events if e["event"] == "actor_start"]
        ends = [e["ts"] for e in events if e["event"] == "actor_end"]
        before.append(min(starts))  # engine clock start -> first actor alive
        after.append(float(row["wall_s"]) - max(ends))  # last actor end -> engine done
        actor_time.append(max(ends) - min(starts))
    elapsed = timing["runs_elapsed_s"]
    per_run_process = elapsed / len(rows)
    return {
        "runs": len(rows),
        "jobs": jobs,
        "sweep_wall": wall,
        "runs_elapsed_sum": elapsed,
        "overhead": (wall - elapsed / jobs) / (elapsed / jobs),
        "run_process_mean": per_run_process,
        "actor_time_mean": statistics.mean(actor_time),
        "engine_to_first_actor": statistics.mean(before),
        "last_actor_to_engine_end": statistics.mean(after),
        "fixed_per_run": per_run_process - statistics.mean(actor_time),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    add_time_limit(parser, 900)
    args = parser.parse_args()
    time_limit(args.time_limit)
    results = []
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(sweep(Path(tmp), args.runs, jobs))
    print(f"{'':38} {'jobs=1':>10} {'jobs=2':>10}")
    rows = [
        ("runs", "runs", "{:.0f}"),
        ("sweep wall time (s)", "sweep_wall", "{:.2f}"),
        ("sum of the runs' process times (s)", "runs_elapsed_sum", "{:.2f}"),
        ("sweep overhead vs runs/jobs", "overhead", "{:+.1%}"),
        ("per run: process time (s)", "run_process_mean", "{:.3f}"),
        ("per run: first to last actor (s)", "actor_time_mean", "{:.3f}"),
        ("per run: fixed cost (s)", "fixed_per_run", "{:.3f}"),
        ("  of which engine start -> first actor", "engine_to_first_actor", "{:.3f}"),
        ("  of which last actor -> engine done", "last_actor_to_engine_end", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:38} " + " ".join(f"{fmt.format(r[key]):>10}" for r in results))


if __name__ == "__main__":
    main()
