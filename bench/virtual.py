"""Virtual-mode benchmark: what a scheduling point costs, the car park virtual against wall,
and how many schedules ``explore`` gets through per second.

1. The anchor: two plain multiprocessing processes hand a token back and forth through two
   semaphores (no sim code at all); one one-way handoff is half a round trip. Also the same
   with both processes on one CPU (for comparison only: the target is judged on the first).
2. One scheduling point: the mutex scenario in virtual mode at two sizes (``rounds``), the
   engine phase's wall time against the steps in its schedule.json; the slope (extra wall time
   per extra step) leaves process start-up and analysis out. Given in handoffs of (1). Once
   with the run on one CPU (``engine.pin_cpu``, the default) and once spread over all,
   alternating.
3. The default car park (200 cars, 3 visits) in virtual mode (on one CPU, and spread) and in
   wall mode, alternating.
4. ``explore`` throughput: philosophers-naive, one random schedule after another through the
   same ``sim._runner.run`` that ``explore`` calls, schedules per second and how many deadlocked.

    python bench/virtual.py            # about a minute
    python bench/virtual.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/virtual.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    CARPARK_TOML,
    ROOT,
    add_time_limit,
    fmt,
    machine,
    median,
    run_sim,
    table,
    time_limit,
)


def _bounce(ping: Any, pong: Any, n: int) -> None:
    for _ in range(n):
        ping.acquire()
        pong.release()


def handoff_us(rounds: int, one_cpu: bool = False) -> float:
    """Microseconds per one-way handoff between two processes through a semaphore (both
    on the CPU this process is on, if ``one_cpu``)."""
    from sim.virtual.cpu import one_cpu as pinned

    with pinned() if one_cpu else contextlib.nullcontext():
        return _handoff_us(rounds)


def _handoff_us(rounds: int) -> float:
    ctx = mp.get_context("fork")
    ping, pong = ctx.Semaphore(0), ctx.Semaphore(0)
    child = ctx.Process(target=_bounce, args=(ping, pong, rounds))
    child.start()
    # Warm up, so the child is running before timing starts.
    ping.release()
    pong.acquire()
    t0 = time.perf_counter()
    for _ in range(rounds - 1):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - t0
    child.join(10)
    return elapsed / (2 * (rounds - 1)) * 1e6


def steps_of(run_dir: Path) -> int:
    import json

    data = json.loads((run_dir / "schedule.json").read_text(encoding="utf-8"))
    return len(data["steps"])


def point_cost(
    out: Path, rounds: tuple[int, int], reps: int
) -> tuple[dict[bool, float], list[list[Any]]]:
    """Microseconds of wall time per scheduling point (the slope between two sizes), on one
    CPU and spread over all, alternating."""
    mutex = ROOT / "configs" / "mutex.toml"
    rows = []
    slopes: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(reps):
        for pin in (True, False):
            got = []
            for n in rounds:
                r = run_sim(mutex, ["clock.mode=virtual", f"params.rounds={n}", "engine.live=false",
                                    f"engine.pin_cpu={str(pin).lower()}"],
                            out, skip_analysis=True)  # fmt: skip
                got.append((steps_of(r.run_dir), r.exec_wall_s))
                shutil.rmtree(r.run_dir, ignore_errors=True)
            (s0, w0), (s1, w1) = got
            slope = (w1 - w0) / (s1 - s0) * 1e6
            slopes[pin].append(slope)
            rows.append(["one" if pin else "all", f"{s0:,} → {s1:,}", f"{w0:.2f} → {w1:.2f}",
                         fmt(slope, 1)])  # fmt: skip
    return {pin: median(values) for pin, values in slopes.items()}, rows


def carpark(out: Path, reps: int) -> list[list[Any]]:
    rows = []
    for _ in range(reps):
        for mode, pin in (("virtual", True), ("virtual", False), ("wall", False)):
            r = run_sim(CARPARK_TOML, [f"clock.mode={mode}", "engine.live=false",
                                       f"engine.pin_cpu={str(pin).lower()}"], out)  # fmt: skip
            wait = float(r.manifest.get("metrics", {}).get("wait_mean", float("nan")))
            cpus = "one" if pin else "all"
            rows.append([mode, cpus, f"{r.wall_s:.2f}", f"{r.exec_wall_s:.2f}", r.status,
                         fmt(wait, 2)])  # fmt: skip
            shutil.rmtree(r.run_dir, ignore_errors=True)
    return rows


def explore_rate(out: Path, n: int) -> tuple[float, int, int]:
    """Schedules per second for philosophers-naive, and how many of ``n`` deadlocked."""
    from sim._runner import run
    from sim.config import load_config

    base = ["clock.mode=virtual", "engine.record_choices=true", "engine.live=false"]
    deadlocked = 0
    t0 = time.perf_counter()
    for i in range(n):
        config = load_config("philosophers-naive", [*base, f"engine.schedule_seed={i}"], seed=1)
        outcome = run(config, out)
        if any(v.phenomenon == "deadlock" for v in outcome.report.verdicts if v.status != "pass"):
            deadlocked += 1
        shutil.rmtree(outcome.run_dir, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    return n / elapsed, deadlocked, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    add_time_limit(parser, 900)
    args = parser.parse_args()
    time_limit(args.time_limit)
    reps = 2 if args.quick else 5
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sim-bench-virtual-") as tmp:
        out = Path(tmp)
        anchors, pinned = [], []
        for _ in range(reps):
            anchors.append(handoff_us(20_000))
            pinned.append(handoff_us(20_000, one_cpu=True))
        anchor = median(anchors)
        each = ", ".join(f"{a:.1f}" for a in anchors)
        print(f"\n1. plain multiprocessing, one-way handoff through a semaphore: "
              f"{anchor:.1f} µs (median of {reps}: {each}); both on one CPU: "
              f"{median(pinned):.1f} µs")  # fmt: skip
        costs, rows = point_cost(out, (20, 120), reps)
        print("\n2. one scheduling point (mutex, 4 workers, virtual; engine phase)\n")
        print(table(["CPUs", "steps", "wall s", "µs per extra step"], rows))
        for pin, cost in costs.items():
            print(f"   {'one CPU' if pin else 'all CPUs'}: median {cost:.1f} µs per scheduling "
                  f"point = {cost / anchor:.2f} handoffs (target ≤ 2)")  # fmt: skip
        print("\n3. default car park (200 cars, 3 visits), virtual and wall alternating\n")
        print(table(["mode", "CPUs", "CLI wall s", "engine wall s", "status", "wait_mean min"],
                    carpark(out, 1 if args.quick else 3)))  # fmt: skip
        rate, dead, n = explore_rate(out, 10 if args.quick else 30)
        print(f"\n4. explore philosophers-naive: {rate:.2f} schedules/s "
              f"({dead} of {n} random schedules deadlocked)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
