"""1,000 car processes: start-up time, wall time and memory per actor, against the targets.

    python -m sim run carpark.toml -s params.cars=1000 -s params.capacity=130 -s params.visits=2 \\
        -s params.drive.mean=5 -s params.park.mean=5 -s clock.speedup=480

(through bench/_driver.py, which does what that command does). Two kinds of run, alternating:

* timing runs, with nothing else watching: when the last actor logged ``actor_start`` (max
  ``ts``), the engine's spawn loop, the run's and the whole process's wall time;
* one memory run: while it is in progress, every ~0.25 s, /proc/<pid>/smaps_rollup of the actors
  (the engine's descendants, found by ppid in /proc/*/stat; a random 200 of them per sweep, since
  reading smaps slows the forking engine down) is read. PSS shares each
  copy-on-write page among the processes that map it, so the actors' PSS plus the engine's is
  their real footprint. Reported: the mean PSS per actor at the sample where the actors' total
  PSS peaked; the highest mean PSS per actor over the samples with at least half that many actors
  alive (actors grow as they age); the largest actor read; private (unshared) memory per actor.
  The PSS target is judged on the higher of the two means.

Each timing run follows a plain fork of as many processes, in a fresh interpreter that imported
the same modules (each child says it is alive on a pipe, then waits until all are): the
baseline that the all-started time is compared with, side by side.

``--quiet-start`` is a variant for the start-up time alone: every drive lasts exactly
``QUIET_DRIVE_S`` of wall time (a fixed duration, not exponential with mean 5 minutes), so no
car does anything between its ``actor_start`` and that long after it: while the actors start,
they wait, as the plain fork's children do. In the default run the first cars drive, park,
end and exit while the last ones are still being forked, competing with the forks for the
CPUs; both are reported, and neither replaces the other.

Targets: all actors alive within 2x the plain fork's time; at most 4 MiB PSS per actor.
Run from the repository root: ``python bench/scale.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    CARPARK_TOML,
    ROOT,
    add_time_limit,
    check_log,
    env,
    fmt,
    machine,
    median,
    run_sim,
    table,
    time_limit,
)

# All actors alive within this many times what a plain fork of as many processes takes.
ALIVE_TARGET_X = 2.0
# --quiet-start: how long (wall seconds) every drive lasts, longer than the start window.
QUIET_DRIVE_S = 5.0
PSS_TARGET_MIB = 4.0
PAGE = 4096
# The pages an actor copies on write from its fork to its first sleep: of the 627 page faults
# perf recorded for one actor of a 300-car quiet start (perf record -e page-faults -d, mapped
# to /proc/PID/maps; 2026-12-03), 535 were in its writable memory (the allocator's arenas, the
# heap, the interpreter's static data) and the rest text pages mapped, which are not copied.
ACTOR_WRITES = 535


def overrides(
    cars: int, speedup: float, method: str, capacity: int = 130, quiet_start: bool = False
) -> list[str]:
    # quiet_start: every drive lasts QUIET_DRIVE_S of wall time exactly (see the docstring).
    drive = (
        ["params.drive.dist=fixed", f"params.drive.mean={QUIET_DRIVE_S * speedup / 60:g}"]
        if quiet_start
        else ["params.drive.mean=5"]
    )
    return [
        f"params.cars={cars}",
        f"params.capacity={capacity}",
        "params.visits=2",
        *drive,
        "params.park.mean=5",
        f"clock.speedup={speedup:g}",
        f"engine.start_method={method}",
    ]


# -- the baseline: plain fork ------------------------------------------------------------------


def plain_fork(n: int, writes: int = 0) -> dict[str, float]:
    """Fork ``n`` processes from one that has imported what an actor imports (sim's worker
    and the car park scenario: structlog, anyio, msgspec and sim itself), each of which says
    it is alive on a pipe and then waits until all are; the time until the last has said so.

    What any engine must at least pay to have ``n`` live processes of these modules on this
    machine: sim's all-started time is judged against it. With ``writes``, each child first
    writes one byte to each of that many pages it shares with the parent, so that each is
    copied: what a child that runs any Python code pays for the pages it writes (reference
    counts), without doing anything else (see ACTOR_WRITES)."""
    import scenarios.carpark  # noqa: F401 - imported for its pages, as the engine does
    import sim.runtime.worker  # noqa: F401

    shared = bytearray(b"\1" * (writes * PAGE))  # written here, so backed before the forks
    alive_r, alive_w = os.pipe()
    hold_r, hold_w = os.pipe()
    t0 = time.perf_counter()
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(hold_w)  # (or no child would ever see EOF)
            for page in range(writes):
                shared[page * PAGE] = 0
            os.write(alive_w, b"x")
            os.read(hold_r, 1)  # EOF once the parent lets go: all were alive together
            os._exit(0)
        pids.append(pid)
    forked = time.perf_counter() - t0
    got = 0
    while got < n:
        got += len(os.read(alive_r, 1 << 16))
    alive = time.perf_counter() - t0
    os.close(hold_w)
    for pid in pids:
        os.waitpid(pid, 0)
    return {"forked_s": forked, "alive_s": alive, "reaped_s": time.perf_counter() - t0}


def measure_plain_fork(n: int, writes: int = 0, timeout: float = 600) -> dict[str, float]:
    """:func:`plain_fork` in a fresh interpreter (as the engine is), its result."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--plain-fork",
            str(n),
            "--writes",
            str(writes),
        ],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        check=True,
        timeout=timeout,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- memory -----------------------------------------------------------------------------------


def _actor_pids(engine: int) -> list[int]:
    """The engine's descendants that have no children of their own: the actors (under fork
    the engine's children, under forkserver/spawn the children of the fork server or of the
    engine), without multiprocessing's resource tracker."""
    parent_of: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in (b"Z", b"X"):
            parent_of[int(entry.name)] = int(fields[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(engine, []))
    while todo:
        pid = todo.pop()
        if pid in children:
            todo.extend(children[pid])
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"resource_tracker" in fh.read():
                    continue
        except OSError:
            continue
        found.append(pid)
    return found


def _rollup(pid: int) -> dict[str, int] | None:
    """Pss, Private_Clean + Private_Dirty and Rss of ``pid`` in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(b":")
        if key in (b"Pss", b"Rss", b"Private_Clean", b"Private_Dirty"):
            values[key.decode()] = int(rest.split()[0])
    if "Pss" not in values:
        return None
    return {
        "pss": values["Pss"],
        "rss": values.get("Rss", 0),
        "private": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


def sample_memory(
    proc: subprocess.Popen[bytes], deadline: float, interval: float = 0.25, subset: int = 200
) -> list[dict[str, Any]]:
    """While ``proc`` (the engine) runs, until ``deadline`` (``time.perf_counter()``), sample
    the memory of its actors every ``interval``.

    Reading smaps_rollup walks a process's page tables under its mmap lock, which slows a
    forking engine down; so each sweep reads a random ``subset`` of the actors (0: all) and
    scales the sums up to every actor alive. Every actor is counted; PSS already divides each
    shared page among all the processes that map it, so a random subset's mean is unbiased."""
    rng = random.Random(0)
    samples: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() < deadline:
        start = time.perf_counter()
        kids = _actor_pids(proc.pid)
        picked = rng.sample(kids, subset) if 0 < subset < len(kids) else kids
        engine = _rollup(proc.pid)
        rollups = [r for r in map(_rollup, picked) if r is not None]
        if rollups and engine is not None:
            scale = len(kids) / len(rollups)
            samples.append(
                {
                    "t": start - t0,
                    "actors": len(kids),
                    "read": len(rollups),
                    "pss_total": sum(r["pss"] for r in rollups) * scale,
                    "pss_max": max(r["pss"] for r in rollups),
                    "private_total": sum(r["private"] for r in rollups) * scale,
                    "rss_max": max(r["rss"] for r in rollups),
                    "engine_pss": engine["pss"],
                    "sweep_s": time.perf_counter() - start,
                }
            )
        time.sleep(max(0.0, interval - (time.perf_counter() - start)))
    return samples


# -- one run ----------------------------------------------------------------------------------


def measure(
    work: Path,
    cars: int,
    speedup: float,
    method: str,
    memory: bool,
    subset: int = 200,
    capacity: int = 130,
    extra: Sequence[str] = (),
    timeout: float = 600,
    quiet_start: bool = False,
) -> dict[str, Any]:
    run = run_sim(
        CARPARK_TOML,
        [*overrides(cars, speedup, method, capacity, quiet_start), *extra],
        work,
        monitor=(lambda proc, until: sample_memory(proc, until, subset=subset)) if memory else None,
        timeout=timeout,
    )
    log = check_log(run.run_dir / "events.jsonl", None, keep=("spawn", "actor_start", "actor_end"))
    starts = sorted(e.ts for e in log.by_event["actor_start"])
    # How many actors were alive at once (between their actor_start and actor_end lines).
    steps = sorted(
        [(e.ts, 1) for e in log.by_event["actor_start"]]
        + [(e.ts, -1) for e in log.by_event["actor_end"]]
    )
    alive = peak_alive = 0
    for _, step in steps:
        alive += step
        peak_alive = max(peak_alive, alive)
    spawns = sorted(e.ts for e in log.by_event["spawn"])
    ends = len(log.by_event["actor_end"])
    if run.status != "ok":
        log.problems.append(f"status {run.status}: {run.reason[:200]}")
    if len(starts) != cars or ends != cars:
        log.problems.append(f"{len(starts)} actor_start and {ends} actor_end of {cars} cars")
    shutil.rmtree(run.run_dir)
    row: dict[str, Any] = {
        "memory_run": memory,
        "ok": log.ok,
        "problems": log.problems,
        "events": log.lines,
        "last_spawn": spawns[-1] if spawns else float("nan"),
        "half_started": starts[len(starts) // 2] if starts else float("nan"),
        "all_started": starts[-1] if starts else float("nan"),
        "run_wall_s": run.engine_wall_s,
        "wall_s": run.wall_s,
        "peak_alive": peak_alive,
        "engine_cpu_ms": run.exec_cpu_engine_s / cars * 1e3,
        "actor_cpu_ms": run.exec_cpu_actors_s / cars * 1e3,
        "engine_faults": run.minflt_engine / cars,
        "actor_faults": run.minflt_actors / cars,
    }
    samples = run.monitored or []
    if samples:
        peak = max(samples, key=lambda s: s["pss_total"])
        # Actors grow as they age (each touches, and so copies, more inherited pages), so also
        # the highest mean over the samples while at least half as many actors were alive
        # (the tail, with a few actors sharing the pages, would overstate it).
        most = max(s["actors"] for s in samples)
        busy = [s for s in samples if s["actors"] >= most / 2]
        aged = max(busy, key=lambda s: s["pss_total"] / s["actors"])
        row.update(
            aged_pss_mean_mib=aged["pss_total"] / aged["actors"] / 1024,
            aged_actors=aged["actors"],
            aged_t=aged["t"],
            aged_private_mib=aged["private_total"] / aged["actors"] / 1024,
            samples=len(samples),
            sweep_s=median(s["sweep_s"] for s in samples),
            peak_actors=peak["actors"],
            pss_mean_mib=peak["pss_total"] / peak["actors"] / 1024,
            pss_max_mib=peak["pss_max"] / 1024,
            private_mean_mib=peak["private_total"] / peak["actors"] / 1024,
            rss_max_mib=max(s["rss_max"] for s in samples) / 1024,
            engine_pss_mib=peak["engine_pss"] / 1024,
            total_mib=(peak["pss_total"] + peak["engine_pss"]) / 1024,
            series=[
                [round(x["t"], 2), x["actors"], round(x["pss_total"] / x["actors"] / 1024, 2)]
                for x in samples
            ],
        )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status 1 if a run failed or a target was missed.",
    )
    parser.add_argument("--cars", type=int, default=1000, help="car processes (default 1000)")
    parser.add_argument(
        "--speedup", type=float, default=480, help="clock.speedup (default 480: a ~10 s run)"
    )
    parser.add_argument("--reps", type=int, default=2, help="timing runs (default 2)")
    parser.add_argument("--start-method", default="fork", help="engine.start_method (default fork)")
    parser.add_argument(
        "--sample",
        type=int,
        default=200,
        help="actors whose memory each sweep reads, at random (default 200; 0 = all)",
    )
    parser.add_argument("--capacity", type=int, default=130, help="params.capacity (default 130)")
    parser.add_argument(
        "-s",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another override for every run (e.g. engine.actors_per_process=10)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="timing runs only (no memory-sampling run)"
    )
    parser.add_argument(
        "--quiet-start",
        action="store_true",
        help=f"every drive lasts {QUIET_DRIVE_S:g} s exactly: no car acts while the others start",
    )
    parser.add_argument(
        "--run-timeout", type=float, default=600, help="seconds one run may take (default 600)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 cars, 1 timing run")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--plain-fork", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--writes", type=int, default=0, help=argparse.SUPPRESS)
    add_time_limit(parser, 2400)
    args = parser.parse_args()
    if args.plain_fork is not None:
        print(json.dumps(plain_fork(args.plain_fork, args.writes)))
        return 0
    time_limit(args.time_limit)
    if args.quick:
        args.cars, args.reps = 200, 1
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    extra = " ".join(f"-s {x}" for x in args.extra)
    drive = (
        f"QUIET START: every drive fixed at {QUIET_DRIVE_S:g} s wall, park mean 5 sim min"
        if args.quiet_start
        else "drive/park mean 5 sim min"
    )
    print(
        f"# scale: {args.cars} cars, capacity {args.capacity}, 2 visits, {drive}, "
        f"speedup {args.speedup:g}, {args.start_method} {extra}; {args.reps} timing runs "
        f"(each after a plain fork of as many processes)"
        + ("" if args.no_memory else " + 1 memory run")
    )
    print(f"# {machine()}")
    work = Path(tempfile.mkdtemp(prefix="sim-bench-scale-"))
    runs: list[dict[str, Any]] = []
    try:
        # The memory run goes in the middle, so that timing runs see both its before and after.
        plan = [False] * args.reps
        if not args.no_memory:
            plan.insert(len(plan) // 2 + (len(plan) % 2), True)
        for memory in plan:
            baseline: dict[str, float] = {}
            if not memory:
                # Side by side: the baseline right before the run it is compared with.
                baseline = measure_plain_fork(args.cars)
                print(
                    f"  plain fork of {args.cars}: all alive at {baseline['alive_s']:.3f} s "
                    f"(forked at {baseline['forked_s']:.3f} s)  # {machine().split(' · ')[-2]}",
                    flush=True,
                )
                bound = measure_plain_fork(args.cars, ACTOR_WRITES)
                baseline["bound_alive_s"] = bound["alive_s"]
                print(
                    f"  plain fork of {args.cars}, each child writing {ACTOR_WRITES} shared "
                    f"pages: all alive at {bound['alive_s']:.3f} s  # "
                    f"{machine().split(' · ')[-2]}",
                    flush=True,
                )
            row = measure(
                work, args.cars, args.speedup, args.start_method, memory, args.sample,
                args.capacity, args.extra, args.run_timeout, args.quiet_start,
            )  # fmt: skip
            if baseline:
                row["fork_alive_s"] = baseline["alive_s"]
                row["vs_fork"] = row["all_started"] / baseline["alive_s"]
                row["bound_alive_s"] = baseline["bound_alive_s"]
                row["vs_bound"] = row["all_started"] / baseline["bound_alive_s"]
            runs.append(row)
            kind = "memory" if memory else "timing"
            status = "ok" if row["ok"] else "BAD: " + "; ".join(row["problems"][:2])
            pss = (
                f", PSS {row['pss_mean_mib']:.2f} MiB/actor at {row['peak_actors']} actors, "
                f"up to {row['aged_pss_mean_mib']:.2f} at {row['aged_actors']}"
                if "pss_mean_mib" in row
                else ""
            )
            ratio = (
                f" ({row['vs_fork']:.2f}x plain fork, {row['vs_bound']:.2f}x the one writing pages)"
                if "vs_fork" in row
                else ""
            )
            print(
                f"  {kind} run: all {args.cars} started at {row['all_started']:.3f} s{ratio}, "
                f"run wall {row['run_wall_s']:.2f} s, process wall {row['wall_s']:.2f} s"
                f"{pss}  [{status}]  # {machine().split(' · ')[-2]}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))

    timing = [r for r in runs if not r["memory_run"]]
    mem = next((r for r in runs if r["memory_run"]), {"all_started": float("nan")})
    alive = median(r["all_started"] for r in timing)
    worst_alive = max(r["all_started"] for r in timing)
    vs_fork = median(r["vs_fork"] for r in timing)
    worst_vs_fork = max(r["vs_fork"] for r in timing)
    met_alive = worst_vs_fork <= ALIVE_TARGET_X
    rows = [
        [
            f"last spawn event (s, median of {len(timing)})",
            fmt(median(r["last_spawn"] for r in timing), 3),
            "",
        ],
        ["half of the actors started (s)", fmt(median(r["half_started"] for r in timing), 3), ""],
        [
            f"all {args.cars} actors started (s): median / worst",
            f"{alive:.3f} / {worst_alive:.3f}",
            "",
        ],
        [
            f"plain fork of {args.cars}, all alive (s): median",
            fmt(median(r["fork_alive_s"] for r in timing), 3),
            "the run before each",
        ],
        [
            "all started / plain fork, alive: median / worst",
            f"{vs_fork:.2f}x / {worst_vs_fork:.2f}x",
            f"<= {ALIVE_TARGET_X:g}x: " + ("met" if met_alive else "MISSED"),
        ],
        [
            f"plain fork, each child writing {ACTOR_WRITES} pages, all alive (s)",
            fmt(median(r["bound_alive_s"] for r in timing), 3),
            "what copying an actor's pages costs",
        ],
        [
            "all started / that plain fork: median / worst",
            f"{median(r['vs_bound'] for r in timing):.2f}x / "
            f"{max(r['vs_bound'] for r in timing):.2f}x",
            "",
        ],
        ["  the same, in the memory run (s)", fmt(mem["all_started"], 3), "(sampling adds load)"],
        [
            "most actors alive at once (from the log)",
            fmt(median(r["peak_alive"] for r in timing)),
            "",
        ],
        ["run wall time (s)", fmt(median(r["run_wall_s"] for r in timing), 2), ""],
        ["process wall time (s)", fmt(median(r["wall_s"] for r in timing), 2), "incl. analysis"],
        ["events per run", fmt(median(r["events"] for r in timing)), ""],
        [
            "engine CPU per actor, whole run (ms)",
            fmt(median(r["engine_cpu_ms"] for r in timing), 2),
            "",
        ],
        [
            "actor CPU per actor, whole run (ms)",
            fmt(median(r["actor_cpu_ms"] for r in timing), 2),
            "",
        ],
        [
            "engine minor page faults per actor",
            fmt(median(r["engine_faults"] for r in timing)),
            "x 4 KiB copied",
        ],
        ["minor page faults per actor process", fmt(median(r["actor_faults"] for r in timing)), ""],
    ]
    met_pss = True
    if "pss_mean_mib" in mem:
        worst = max(mem["pss_mean_mib"], mem["aged_pss_mean_mib"])
        met_pss = worst <= PSS_TARGET_MIB
        rows += [
            [
                f"PSS per actor when the actors' total peaked (MiB, {mem['peak_actors']} alive)",
                fmt(mem["pss_mean_mib"], 2),
                "",
            ],
            [
                f"highest mean PSS per actor (MiB, {mem['aged_actors']} alive, "
                f"{mem['aged_t']:.1f} s into sampling)",
                fmt(mem["aged_pss_mean_mib"], 2),
                f"<= {PSS_TARGET_MIB:g} MiB: " + ("met" if met_pss else "MISSED"),
            ],
            ["largest actor PSS read at that moment (MiB)", fmt(mem["pss_max_mib"], 2), ""],
            [
                "private (unshared) memory per actor (MiB): at total peak / highest",
                f"{mem['private_mean_mib']:.2f} / {mem['aged_private_mib']:.2f}",
                "a floor for PSS",
            ],
            ["largest actor RSS (MiB)", fmt(mem["rss_max_mib"], 2), "counts shared pages fully"],
            ["engine PSS at that moment (MiB)", fmt(mem["engine_pss_mib"], 2), ""],
            ["actors + engine PSS (MiB)", fmt(mem["total_mib"], 1), ""],
            [
                "memory samples (median sweep time, s)",
                f"{mem['samples']} ({mem['sweep_s']:.2f})",
                f"{args.sample or 'all'} actors read per sweep",
            ],
        ]
    else:
        rows.append(["peak PSS per actor", "no sample", "run too short to sample"])
    print()
    print(table(["measure", "value", "target"], rows))
    ok = all(r["ok"] for r in runs)
    return 0 if ok and met_alive and met_pss else 1


if __name__ == "__main__":
    sys.exit(main())
