"""Virtual-mode benchmark: what a scheduling point costs, the car park virtual against wall,
and how many schedules ``explore`` gets through per second.

1. The anchor: two plain multiprocessing processes hand a token back and forth through two
   semaphores (no sim code at all); one one-way handoff is half a round trip. The target is
   judged on the handoff across CPUs: each process pinned to a CPU of its own. Beside it, for
   comparison only, the figure this benchmark gave before 2026-12-01 (night): the same two
   processes left wherever the kernel puts them, which is now across CPUs and now both on
   one (where a handoff is about 1 µs), so that its samples spread over 9-32 µs; and both
   pinned to one CPU. Each figure is the median of several samples, with their range, and the
   CPUs' idle entries per handoff (``/sys/devices/system/cpu/cpu*/cpuidle``): across CPUs every
   handoff wakes a halted CPU (one entry per handoff), which is what it costs.
2. One scheduling point: the mutex scenario in virtual mode at two sizes (``rounds`` 20 and
   320: 324 and 5,124 steps; with 120, as before 2026-12-02, the 1,600 extra steps took about
   0.1 s and the slopes of one run spread over 48-119 µs), the engine phase's wall time against
   the steps in its schedule.json; the slope (extra wall time per extra step) leaves process
   start-up and analysis out. Given in handoffs of (1). Once
   with the run on one CPU (``engine.pin_cpu``, the default) and once spread over all,
   alternating.
3. The default car park (200 cars, 4 visits) in virtual mode (on one CPU, and spread) and in
   wall mode, alternating.
4. ``explore`` throughput: philosophers-naive, one random schedule after another through the
   same ``sim._runner.run`` that ``explore`` calls, schedules per second and how many deadlocked.

    python bench/virtual.py            # about a minute
    python bench/virtual.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

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


def _bounce(ping: Any, pong: Any, n: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    for _ in range(n):
        ping.acquire()
        pong.release()


#: Where the anchor's two processes run: each on a CPU of its own (what the target is judged
#: on), wherever the kernel puts them (this benchmark's figure before 2026-12-01, night), both on
#: the CPU this process is on.
Placement = Literal["across", "free", "one"]


def handoff_us(rounds: int, placement: Placement = "across") -> tuple[float, float]:
    """Microseconds per one-way handoff between two processes through a semaphore, placed as
    ``placement`` says, and the CPUs' idle entries per handoff meanwhile."""
    from sim.virtual.cpu import one_cpu

    if placement == "one":
        with one_cpu():
            return _handoff_us(rounds, None)
    if placement == "across":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return float("nan"), float("nan")
        allowed = set(cpus)
        os.sched_setaffinity(0, {cpus[0]})
        try:
            return _handoff_us(rounds, cpus[1])
        finally:
            os.sched_setaffinity(0, allowed)
    return _handoff_us(rounds, None)


def _idle_entries() -> int:
    """How many times the CPUs have gone idle since boot (-1 where Linux does not say)."""
    total = 0
    # A VM may have no cpuidle driver at all (no such files, as on 2026-12-02's machine):
    # that is "Linux does not say", not "no CPU went idle".
    counters = list(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpuidle/state*/usage"))
    if not counters:
        return -1
    try:
        for cpu in counters:
            total += int(cpu.read_text())
    except (OSError, ValueError):
        return -1
    return total


def _handoff_us(rounds: int, child_cpu: int | None) -> tuple[float, float]:
    ctx = mp.get_context("fork")
    ping, pong = ctx.Semaphore(0), ctx.Semaphore(0)
    warm = 1000
    child = ctx.Process(target=_bounce, args=(ping, pong, warm + rounds, child_cpu))
    child.start()
    # Warm up, so the child is running (and where it is to be) before timing starts.
    for _ in range(warm):
        ping.release()
        pong.acquire()
    idle0 = _idle_entries()
    t0 = time.perf_counter()
    for _ in range(rounds):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - t0
    idle1 = _idle_entries()
    child.join(10)
    idle = (idle1 - idle0) / (2 * rounds) if idle0 >= 0 and idle1 >= 0 else float("nan")
    return elapsed / (2 * rounds) * 1e6, idle


# Idle entries per handoff of a sample across CPUs taken with the other CPU free: each handoff
# wakes a CPU that went idle to wait for it (measured on the quiet machine: 0.98-0.99).
_QUIET = 0.9


def anchors(rounds: int, samples: int) -> dict[Placement, list[tuple[float, float]]]:
    """``samples`` handoff figures of each placement, taken in turn."""
    got: dict[Placement, list[tuple[float, float]]] = {"across": [], "free": [], "one": []}
    for _ in range(samples):
        for placement, values in got.items():
            values.append(handoff_us(rounds, placement))
    return got


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


def report_anchors(got: dict[Placement, list[tuple[float, float]]]) -> tuple[float, float]:
    """Print the handoff figures; return the anchor and the old figure (see the docstring)."""
    figures = {p: median(us for us, _ in values) for p, values in got.items()}
    # Samples in which the other CPU ran something else are left out of the anchor: the
    # handoff had to preempt it, and the figure is not a handoff's.
    # Without cpuidle counters (idle is NaN) nothing can be told apart: every sample counts.
    filtered = not all(math.isnan(idle) for _, idle in got["across"])
    quiet = [us for us, idle in got["across"] if not idle < _QUIET]
    words = {"across": "across CPUs, one each (the anchor)",
             "free": "wherever the kernel puts them (the old figure)",
             "one": "both on one CPU"}  # fmt: skip
    print(f"\n1. plain multiprocessing, one-way handoff through a semaphore "
          f"({len(got['across'])} samples of 20,000 round trips each)\n")  # fmt: skip
    print(table(
        ["the two processes", "median µs", "range", "samples", "idle entries per handoff"],
        [[words[p], fmt(figures[p], 1),
          f"{min(us for us, _ in v):.1f}-{max(us for us, _ in v):.1f}",
          ", ".join(f"{us:.1f}" for us, _ in v), fmt(median(i for _, i in v), 2)]
         for p, v in got.items()],
    ))  # fmt: skip
    anchor = median(quiet)
    if quiet and not filtered:
        print(f"\n   the anchor: {fmt(anchor, 1)} µs, the median of the {len(quiet)} samples "
              "across CPUs (idle filter n/a: this machine has no cpuidle counters)")  # fmt: skip
    elif quiet:
        print(f"\n   the anchor: {fmt(anchor, 1)} µs, the median of the {len(quiet)} samples "
              f"across CPUs with the other CPU idle between handoffs (≥ {_QUIET} idle entries "
              "a handoff)")  # fmt: skip
    else:
        print(
            "\n   the anchor: not measured: in every sample across CPUs the other CPU was "
            "busy with something else (a loaded machine); run again on a quiet one"
        )
    return anchor, figures["free"]


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
        anchor, old = report_anchors(anchors(20_000, 3 if args.quick else 9))
        costs, rows = point_cost(out, (20, 320), reps)
        print("\n2. one scheduling point (mutex, 4 workers, virtual; engine phase)\n")
        print(table(["CPUs", "steps", "wall s", "µs per extra step"], rows))
        for pin, cost in costs.items():
            print(f"   {'one CPU' if pin else 'all CPUs'}: median {cost:.1f} µs per scheduling "
                  f"point = {cost / anchor:.2f} handoffs of the anchor (target ≤ 2); "
                  f"{cost / old:.2f} of the old figure")  # fmt: skip
        print("\n3. default car park (200 cars, 4 visits), virtual and wall alternating\n")
        print(table(["mode", "CPUs", "CLI wall s", "engine wall s", "status", "wait_mean min"],
                    carpark(out, 1 if args.quick else 3)))  # fmt: skip
        rate, dead, n = explore_rate(out, 10 if args.quick else 30)
        print(f"\n4. explore philosophers-naive: {rate:.2f} schedules/s "
              f"({dead} of {n} random schedules deadlocked)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
