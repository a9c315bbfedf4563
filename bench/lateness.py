"""Timer lateness on this machine: how late a sleeping actor wakes, and what that costs in
simulated minutes at a given speedup (docs/theory.md, "How fast the wall clock may run").

Runs the car park in wall mode with few and with many cars at several speedups and prints, from
each run's run.json (``timing``, measured from the log's ``sleep`` lines): the mean and p95
lateness per sleep in milliseconds, that lateness in simulated minutes, its share of the
shortest mean duration, and the speedup at which that share would reach the warning threshold
(sim.timing.SIGNIFICANT), taking the lateness in seconds as fixed.

    python bench/lateness.py           # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/lateness.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import add_time_limit, env, machine, table, time_limit
from sim.timing import SIGNIFICANT

# (cars, spaces, visits): a handful of processes, and 200 that contend for the 2 cores.
SIZES = ((10, 5, 20), (200, 130, 4))
SPEEDUPS = (3600.0, 24000.0, 100000.0)


def one(cars: int, spaces: int, visits: int, speedup: float, out: Path) -> dict[str, float]:
    sets = [f"params.cars={cars}", f"params.capacity={spaces}", f"params.visits={visits}",
            "params.drive.mean=20", "params.park.mean=30", f"clock.speedup={speedup}"]  # fmt: skip
    args = [a for s in sets for a in ("-s", s)]
    result = subprocess.run(
        [sys.executable, "-m", "sim", "run", "carpark", *args, "--seed", "1", "--out", str(out),
         "--quiet"],
        capture_output=True, text=True, env=env(), check=False, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"run failed: {result.stderr}")
    run_dir = Path(result.stdout.strip())
    timing = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["timing"]
    return {k: timing[k] for k in ("late_mean_ms", "late_p95_ms", "late_minutes", "share",
                                   "max_speedup", "sleeps")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_time_limit(parser, 900)
    args = parser.parse_args()
    time_limit(args.time_limit)
    print(machine())
    print(f"load average before: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cars, spaces, visits in SIZES:
            for speedup in SPEEDUPS:
                t = one(cars, spaces, visits, speedup, Path(tmp))
                rows.append([f"{cars} cars", f"{speedup:g}", f"{t['sleeps']:.0f}",
                             f"{t['late_mean_ms']:.3f}", f"{t['late_p95_ms']:.3f}",
                             f"{t['late_minutes']:.4f}", f"{t['share']:.2%}",
                             f"{t['max_speedup']:,.0f}"])  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    print(f"warning threshold: {SIGNIFICANT:.0%} of the shortest mean (drive, 20 min)")
    print(table(["run", "speedup", "sleeps", "late mean ms", "late p95 ms", "late sim min",
                 "share", "speedup at threshold"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
