"""Run one config through the real engine, as ``python -m sim run CONFIG --quiet`` does, and
report what the benchmarks need: the run directory, and the wall and CPU time of the engine
phase alone (actors + coordinator, without start-up and without the analysis that follows).

    python -m bench._driver CONFIG [-s KEY=VALUE ...] --out DIR [--seed N] [--skip-analysis]

It calls ``sim.config.load_config`` and ``sim._runner.run(config, out, console=None)``,
unchanged; the only wrapper is a timer around ``sim._runner.execute``. The last line of stdout is
a JSON object with the timings and what the engine's ``Execution`` says (status, wall time,
lines per actor).

``--skip-analysis`` stops right after the engine phase, before ``sim._runner.run`` analyses the
log and writes the final run.json: the log pipeline benchmarks use it because the analysis is not
what they measure, and because at the time of writing it does not finish on their logs (see
docs/benchmarks.md: ``sim.events.ordered`` is quadratic when more than 32768 events fall within
its 2 s window).
"""

from __future__ import annotations

# Under forkserver and spawn every actor imports the main module (this one) as __mp_main__, which
# `python -m sim` does not cost (multiprocessing skips a package's __main__): so this module
# imports nothing at the top level, and start-method measurements stay comparable to the CLI.


def _cpu(who: int) -> float:
    import resource

    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class _Stop(BaseException):
    """Raised after the engine phase to skip the analysis (--skip-analysis)."""


def main() -> int:
    import argparse
    import json
    import resource
    import time
    from pathlib import Path
    from typing import Any

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("-s", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-analysis", action="store_true")
    args = parser.parse_args()
    t_start = time.perf_counter()

    import sim._runner
    from sim.config import load_config

    timing: dict[str, Any] = {}
    execute = sim._runner.execute

    def timed_execute(*a: Any, **kw: Any) -> Any:
        self0, children0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cflt0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        t0 = time.perf_counter()
        try:
            execution = execute(*a, **kw)
            timing["execution"] = {
                "run_dir": str(execution.run_dir),
                "status": execution.status,
                "reason": execution.reason,
                "wall_s": execution.wall_s,
                "actors": {
                    name: {"pid": rec.pid, "exitcode": rec.exitcode, "lines": rec.lines}
                    for name, rec in execution.actors.items()
                },
            }
            if args.skip_analysis:
                raise _Stop
            return execution
        finally:
            timing["exec_wall_s"] = time.perf_counter() - t0
            # The engine process (engine + coordinator) and its reaped children (the actors).
            timing["exec_cpu_engine_s"] = _cpu(resource.RUSAGE_SELF) - self0
            timing["exec_cpu_actors_s"] = _cpu(resource.RUSAGE_CHILDREN) - children0
            # Minor page faults: under fork mostly copy-on-write copies of shared pages.
            timing["exec_minflt_engine"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
            timing["exec_minflt_actors"] = (
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - cflt0
            )

    sim._runner.execute = timed_execute  # type: ignore[assignment]
    config = load_config(args.config, args.overrides, seed=args.seed, via="-s")
    try:
        outcome = sim._runner.run(config, args.out, console=None)
    except _Stop:
        execution = timing["execution"]
        run_dir, status = execution["run_dir"], execution["status"]
        code = 0 if status == "ok" else 1
    else:
        run_dir, status, code = str(outcome.run_dir), outcome.status, outcome.exit_code
    timing["process_wall_s"] = time.perf_counter() - t_start
    print(json.dumps({"run_dir": run_dir, "status": status, "exit_code": code, **timing}))
    return code


if __name__ == "__main__":
    import sys

    sys.exit(main())
