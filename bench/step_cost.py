"""Where a virtual run's scheduling point goes: the engine's bookkeeping against the whole step.

A step is: the running actor's lines and request reach the engine, the engine feeds them to the
history, the scheduler chooses, the grant goes out, the lines go to the file; then the granted
actor runs until its next request. Measured three ways, for the mutex scenario (4 workers):

1. the real run: wall time and the engine process's CPU (``time.process_time``, which is
   precise, unlike ``ru_utime``) per step, as the slope between two sizes (``rounds``), so that
   start-up and the end of the run cancel out;
2. the engine's bookkeeping alone: the engine's inputs of a real run (each connection's bytes,
   the engine's own lines, in order) are recorded, then fed in-process to the same
   Coordinator, History and Scheduler code with grants that go nowhere: no socket, no event
   loop, no other process; best of several passes, CPU per step;
3. the difference: what the system calls, the two context switches of a step and the caches
   the other process has cooled cost the engine, and (wall minus engine CPU) the actor's part.

    python bench/step_cost.py            # about half a minute
    python bench/step_cost.py --quick

The recording reaches into private methods of sim.coordinator and sim.virtual.scheduler (it
wraps them to see their arguments); it measures, it changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/step_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import add_time_limit, fmt, machine, median, table, time_limit

Tape = list[tuple[Any, ...]]


def _mutex(rounds: int, out: Path) -> list[str]:
    return ["run", "mutex", "-s", "clock.mode=virtual", "-s", f"params.rounds={rounds}",
            "-s", "engine.live=false", "--quiet", "--out", str(out)]  # fmt: skip


def _record(rounds: int, out: Path, tape_path: Path) -> None:
    """In this process: a real virtual run, its engine's inputs written to ``tape_path``."""
    import sim.cli
    import sim.coordinator as co
    import sim.virtual.scheduler as sc

    tape: Tape = []
    inside = [0]  # within a step: what happens there is the step's own doing
    take, local = co.Coordinator._take_steps, co.Coordinator._put_local
    dispatch = co.Coordinator.dispatch
    connected, gone = sc.Scheduler.connected, sc.Scheduler.gone

    def take_steps(self: Any, stream: Any, actor: str, buf: bytearray, data: bytes) -> bool:
        tape.append(("take", actor, bytes(buf) + data))
        inside[0] += 1
        try:
            return take(self, stream, actor, buf, data)
        finally:
            inside[0] -= 1

    def put_local(self: Any, line: bytes) -> None:
        if not inside[0]:
            tape.append(("local", line))
        local(self, line)

    def dispatched(self: Any) -> None:
        if not inside[0]:
            tape.append(("dispatch",))
        dispatch(self)

    def on_connect(self: Any, actor: str, send: Any) -> None:
        tape.append(("connected", actor))
        connected(self, actor, send)

    def on_gone(self: Any, actor: str) -> None:
        tape.append(("gone", actor))
        gone(self, actor)

    co.Coordinator._take_steps = take_steps  # type: ignore[method-assign]
    co.Coordinator._put_local = put_local  # type: ignore[method-assign]
    co.Coordinator.dispatch = dispatched  # type: ignore[method-assign]
    sc.Scheduler.connected = on_connect  # type: ignore[method-assign]
    sc.Scheduler.gone = on_gone  # type: ignore[method-assign]
    with contextlib.suppress(SystemExit):
        sim.cli.main(_mutex(rounds, out))
    tape_path.write_bytes(pickle.dumps(tape))


def _analysis(run_dir: Path) -> float:
    """CPU seconds of replaying a run (what the engine does with its log after the run)."""
    from sim._replay import load_run, replay

    began = time.process_time()
    replay(load_run(run_dir))
    return time.process_time() - began


def _real(rounds: int, out: Path) -> tuple[int, float, float]:
    """A real run in a fresh process: its steps, the run's wall time, the engine's CPU."""
    code = ("import sys, time\nimport sim.cli\nt = time.process_time()\n"
            f"try:\n    sim.cli.main({_mutex(rounds, out)!r})\nexcept SystemExit:\n    pass\n"
            "print('cpu', time.process_time() - t, file=sys.stderr)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=True)  # fmt: skip
    cpu = float(next(x for x in done.stderr.splitlines() if x.startswith("cpu ")).split()[1])
    (run_dir,) = out.iterdir()
    steps = len(json.loads((run_dir / "schedule.json").read_text())["steps"])
    return steps, json.loads((run_dir / "run.json").read_text())["wall_s"], cpu


def _bookkeeping(tape: Tape, run_dir: Path, scratch: Path, passes: int) -> tuple[float, int]:
    """The engine's CPU per step for the recorded inputs, in-process (best of ``passes``)."""
    import anyio

    from sim.coordinator import Coordinator
    from sim.history import History
    from sim.virtual.policy import make
    from sim.virtual.scheduler import Scheduler

    run = json.loads((run_dir / "run.json").read_text())
    actors = sorted({t[1] for t in tape if t[0] == "connected"})

    def once() -> tuple[float, int]:
        history = History(run["primitives"], actors=actors)
        scheduler = Scheduler(history, make("random", run["seed"]), expected=actors,
                              max_steps=10**9, on_deadlock=lambda *a: None,
                              on_limit=lambda step: None)  # fmt: skip
        coordinator = Coordinator(scratch, secret="-", t0_ns=0, history=history,
                                  scheduler=scheduler, actors=actors)  # fmt: skip
        sent: list[bytes] = []
        bufs = {a: bytearray() for a in actors}
        with open(scratch, "wb", buffering=1 << 20) as file:
            coordinator._file = file
            began = time.process_time()
            for entry in tape:
                what = entry[0]
                if what == "take":
                    coordinator._take_steps(None, entry[1], bufs[entry[1]], entry[2])  # type: ignore[arg-type]
                elif what == "local":
                    coordinator._put_local(entry[1])
                elif what == "dispatch":
                    scheduler.spawned = True
                    coordinator.dispatch()
                    coordinator._write_held()
                elif what == "connected":
                    scheduler.connected(entry[1], sent.append)
                    coordinator._actors.add(entry[1])
                else:
                    scheduler.gone(entry[1])
            took = time.process_time() - began
        return took, scheduler.step

    async def best() -> tuple[float, int]:
        runs = [once() for _ in range(passes)]  # a Coordinator is made in an event loop
        return min(t for t, _ in runs), runs[0][1]

    return anyio.run(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="the larger run's rounds")
    parser.add_argument("--repeat", type=int, default=3, help="real-run pairs (median)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, one pair")
    parser.add_argument("--record", nargs=3, help=argparse.SUPPRESS)
    add_time_limit(parser, 600)
    args = parser.parse_args()
    if args.record:
        _record(int(args.record[0]), Path(args.record[1]), Path(args.record[2]))
        return
    time_limit(args.time_limit)
    rounds, repeat = (500, 1) if args.quick else (args.rounds, args.repeat)
    small = max(1, rounds // 10)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sim-step-cost-") as tmp:
        root = Path(tmp)
        walls, cpus, after = [], [], []
        for i in range(repeat):
            a = _real(small, root / f"a{i}")
            b = _real(rounds, root / f"b{i}")
            steps = b[0] - a[0]
            walls.append((b[1] - a[1]) / steps * 1e6)
            cpus.append((b[2] - a[2]) / steps * 1e6)
            (small_dir,), (large_dir,) = (root / f"a{i}").iterdir(), (root / f"b{i}").iterdir()
            _analysis(small_dir)  # the first replay imports what replays need
            after.append((_analysis(large_dir) - _analysis(small_dir)) / steps * 1e6)
        tape_path = root / "tape.pickle"
        subprocess.run([sys.executable, __file__, "--record", str(rounds), str(root / "rec"),
                        str(tape_path)], check=True, timeout=600, capture_output=True)  # fmt: skip
        tape = pickle.loads(tape_path.read_bytes())
        (run_dir,) = (root / "rec").iterdir()
        took, steps = _bookkeeping(tape, run_dir, root / "scratch.jsonl", 5)
    book = took / steps * 1e6
    wall, cpu, analysis = median(walls), median(cpus), median(after)
    print(table(
        ["per scheduling point (mutex, 4 workers)", "µs"],
        [
            ["real run: wall (median of slopes)", fmt(wall, 1)],
            ["real run: the engine's CPU", fmt(cpu, 1)],
            ["  of which the analysis after the run (a replay of the step's lines)",
             fmt(analysis, 1)],
            ["  the actor's part (wall - engine CPU)", fmt(wall - cpu, 1)],
            [f"the engine's bookkeeping alone, in-process ({steps} steps, best of 5)",
             fmt(book, 1)],
            ["  what the engine pays beyond it during the run (system calls, switches, "
             "cold caches)", fmt(cpu - analysis - book, 1)],
        ],
    ))  # fmt: skip
    print(
        f"slopes: wall {', '.join(fmt(w, 1) for w in walls)}; "
        f"engine CPU {', '.join(fmt(c, 1) for c in cpus)}; "
        f"analysis {', '.join(fmt(x, 1) for x in after)}"
    )


if __name__ == "__main__":
    main()
