"""Process start cost of fork, forkserver and spawn: N idle actors under each start method.

Each repetition runs ``bench/flood.toml`` with ``params.ticks = 0`` (an actor connects, logs
``actor_start`` and ``actor_end``, exits) once per ``engine.start_method``, in rotating order,
through the real engine. From the events file:

* spawn loop: ``ts`` of the engine's first and last ``spawn`` event (the engine's own start loop);
* all started: the largest ``ts`` of an ``actor_start`` event (every actor running its role);
* processes/s: N / all started (from the run's t0, so start-up of a fork server counts).

Also the run's wall time (run.json ``wall_s``), the whole process's wall time, CPU and minor page
faults per actor, of the engine process and of the actors (under forkserver the actors are the
fork server's children, so their CPU and faults are not visible to the engine).

Run from the repository root: ``python bench/start_methods.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    FLOOD_TOML,
    add_time_limit,
    check_log,
    fmt,
    machine,
    median,
    run_sim,
    table,
    time_limit,
)

METHODS = ("fork", "forkserver", "spawn")


def measure(work: Path, method: str, actors: int) -> dict[str, Any]:
    run = run_sim(
        FLOOD_TOML,
        [f"params.actors={actors}", "params.ticks=0", f"engine.start_method={method}"],
        work,
    )
    expected = {f"flood-{i:03d}": 2 for i in range(actors)}
    log = check_log(run.run_dir / "events.jsonl", expected, keep=("spawn", "actor_start"))
    if run.status != "ok":
        log.problems.append(f"status {run.status}: {run.reason[:200]}")
    spawns = sorted(e.ts for e in log.by_event["spawn"])
    starts = sorted(e.ts for e in log.by_event["actor_start"])
    shutil.rmtree(run.run_dir)
    all_started = starts[-1] if starts else float("nan")
    cpu = run.exec_cpu_engine_s + (run.exec_cpu_actors_s if method != "forkserver" else 0.0)
    return {
        "method": method,
        "ok": log.ok and len(starts) == actors,
        "problems": log.problems,
        "first_spawn": spawns[0] if spawns else float("nan"),
        "last_spawn": spawns[-1] if spawns else float("nan"),
        "half_started": starts[len(starts) // 2] if starts else float("nan"),
        "all_started": all_started,
        "per_s": actors / all_started if starts else float("nan"),
        "run_wall_s": run.engine_wall_s,
        "wall_s": run.wall_s,
        "cpu_ms_per_actor": cpu / actors * 1e3,
        "engine_cpu_ms_per_actor": run.exec_cpu_engine_s / actors * 1e3,
        "engine_faults_per_actor": run.minflt_engine / actors,
        "actor_faults_per_actor": run.minflt_actors / actors,
        "visible_cpu": method != "forkserver",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Run from the repository root. Exit status 1 if any run failed.",
    )
    parser.add_argument("--actors", type=int, default=200, help="idle actors (default 200)")
    parser.add_argument(
        "--reps", type=int, default=5, help="repetitions of fork and forkserver (default 5)"
    )
    parser.add_argument(
        "--spawn-reps",
        type=int,
        default=1,
        help="repetitions of spawn, the slow one, in the first repetitions (default 1)",
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated (default all three)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 actors, 1 rep")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    add_time_limit(parser, 1200)
    args = parser.parse_args()
    time_limit(args.time_limit)
    if args.quick:
        args.actors, args.reps, args.spawn_reps = 50, 1, 1
    methods = [m for m in args.methods.split(",") if m]

    print(
        f"# start methods: {args.actors} idle actors, {args.reps} reps "
        f"({min(args.spawn_reps, args.reps)} of spawn)"
    )
    print(f"# {machine()}")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    work = Path(tempfile.mkdtemp(prefix="sim-bench-start-"))
    try:
        for rep in range(args.reps):
            order = methods[rep % len(methods) :] + methods[: rep % len(methods)]
            if rep >= args.spawn_reps:
                order = [m for m in order if m != "spawn"]
            for method in order:
                row = measure(work, method, args.actors)
                results[method].append(row)
                status = "ok" if row["ok"] else "BAD: " + "; ".join(row["problems"][:2])
                print(
                    f"  rep {rep + 1}: {method:<10} all started at {row['all_started']:.3f} s "
                    f"({fmt(row['per_s'])}/s), run wall {row['run_wall_s']:.2f} s  [{status}]",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fork = results.get("fork")
    rows = []
    for method, runs in results.items():
        all_started = median(r["all_started"] for r in runs)
        vs_fork = "n/a"
        if fork:
            pairs = zip(runs, fork, strict=False)  # spawn runs in the first repetitions only
            vs_fork = f"{median(r['all_started'] / f['all_started'] for r, f in pairs):.1f}x"
        rows.append(
            [
                method,
                fmt(median(r["first_spawn"] for r in runs), 3),
                fmt(median(r["last_spawn"] for r in runs), 3),
                fmt(median(r["half_started"] for r in runs), 3),
                fmt(all_started, 3),
                vs_fork,
                fmt(median(r["per_s"] for r in runs)),
                fmt(median(r["run_wall_s"] for r in runs), 2),
                fmt(median(r["wall_s"] for r in runs), 2),
                fmt(median(r["engine_cpu_ms_per_actor"] for r in runs), 2),
                fmt(median(r["cpu_ms_per_actor"] for r in runs), 1)
                if runs[0]["visible_cpu"]
                else "n/a",
                fmt(median(r["engine_faults_per_actor"] for r in runs)),
                fmt(median(r["actor_faults_per_actor"] for r in runs))
                if runs[0]["visible_cpu"]
                else "n/a",
                f"{sum(r['ok'] for r in runs)}/{len(runs)}",
            ]
        )
    print()
    print(
        table(
            [
                "start method",
                "first spawn s",
                "last spawn s",
                "half started s",
                "all started s",
                "vs fork",
                "processes/s",
                "run wall s",
                "process wall s",
                "engine CPU ms/actor",
                "total CPU ms/actor",
                "engine faults/actor",
                "faults per actor",
                "ok runs",
            ],
            rows,
        )
    )
    print(
        "\nmedians; times are event ts (seconds since the run's t0); 'vs fork' = all started; "
        "faults = minor page faults (copy-on-write copies, page-ins); n/a: forkserver's actors "
        "are not the engine's children, so their CPU and faults are not visible to it"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
