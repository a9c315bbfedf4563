"""Replay benchmark: generate a car park log of about 1,000,000 events, then replay --check it.

The log is produced by an event-driven simulation of the car park (1,000 cars, 130 spaces, a
FIFO barrier queue) in the exact line format the engine writes, with the same batching
disorder: each car's lines are written in chunks of a few milliseconds, so the file is in order
per actor and only roughly across actors. Then what ``replay --check`` does is timed in-process
side by side with a bare msgspec typed-Struct parse of the same file (the floor any replay
stands on), alternating, and the CLI's own wall time and peak memory (ru_maxrss) are measured
in a child process.

    python bench/replay_1m.py                 # ~1,000,000 events
    python bench/replay_1m.py --events 200000 # quicker
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import add_time_limit, time_limit


def generate(path: Path, events: int, cars: int, capacity: int, seed: int) -> int:
    """Write a car park log of about ``events`` lines; returns the exact count."""
    rng = random.Random(seed)
    speedup, drive, park = 3600.0, 20.0, 60.0  # simulated minutes
    visits = max(1, events // (cars * 7))  # seven lines per visit
    per_s = 60.0 / speedup
    width = max(3, len(str(cars - 1)))  # as sim.actors names them
    names = [f"car-{i:0{width}d}" for i in range(cars)]
    seq = dict.fromkeys(names, 0)
    pid = {name: 10_000 + i for i, name in enumerate(names)}
    lines: list[tuple[float, str, bytes]] = []
    encode = msgspec.json.Encoder().encode

    last: dict[str, float] = {}

    def emit(t: float, actor: str, event: str, **fields: object) -> None:
        # One actor's clock never goes back, even when two of its events fall together here.
        t = last[actor] = max(t, last.get(actor, 0.0) + 1e-6)
        # The engine's order: the contract's fields, the call's keywords, the event last.
        line = {"ts": t, "actor": actor, "pid": pid.get(actor, 1), "seq": seq[actor],
                **fields, "event": event}  # fmt: skip
        seq[actor] += 1
        lines.append((t, actor, encode(line) + b"\n"))

    def op(t: float, actor: str, name: str, phase: str) -> None:
        emit(t, actor, "op", prim="spaces", kind="semaphore", op=name, phase=phase)

    seq["engine"] = 0
    config = {"scenario": "carpark", "params": {"capacity": capacity, "cars": cars,
              "visits": visits, "drive": {"mean": drive}, "park": {"mean": park}},
              "clock": {"speedup": speedup}}  # fmt: skip
    emit(0.0, "engine", "run_start", scenario="carpark", config=config,
         primitives={"spaces": {"kind": "semaphore", "value": capacity}},
         actor_names=names)  # fmt: skip
    # (time, order, car, what): what is "arrive" or "leave".
    agenda: list[tuple[float, int, str, str]] = []
    order = 0
    left = dict.fromkeys(names, visits)
    for name in names:
        emit(0.001, name, "actor_start", role="car", ppid=1)
        first = 0.002 + rng.expovariate(1 / drive) * per_s
        heapq.heappush(agenda, (first, order, name, "arrive"))
        order += 1
    free, queue = capacity, []
    while agenda:
        t, _, car, what = heapq.heappop(agenda)
        if what == "arrive":
            emit(t, car, "arrive", visit=visits - left[car], drove=1.0)
            op(t + 1e-6, car, "acquire", "invoke")
            if free:
                free -= 1
                parked = [car]
            else:
                queue.append(car)
                parked = []
        else:
            emit(t, car, "leave", visit=visits - left[car])
            op(t + 1e-6, car, "release", "invoke")
            op(t + 2e-6, car, "release", "ok")
            left[car] -= 1
            if left[car]:
                heapq.heappush(agenda, (t + rng.expovariate(1 / drive) * per_s, order, car,
                                        "arrive"))  # fmt: skip
                order += 1
            else:
                emit(t + 3e-6, car, "actor_end", status="ok")
            free += 1
            parked = [queue.pop(0)] if queue else []
            if parked:
                free -= 1
        for who in parked:
            t2 = t + 5e-6
            op(t2, who, "acquire", "ok")
            emit(t2 + 1e-6, who, "park", visit=visits - left[who], stay=1.0)
            heapq.heappush(agenda, (t2 + rng.expovariate(1 / park) * per_s, order, who, "leave"))
            order += 1
    end = max(t for t, _, _ in lines)
    for i, name in enumerate(names):
        emit(end + 0.01 + i * 1e-6, "engine", "exit", target=name, target_pid=pid[name], code=0)
    # The file order of a real run: each actor's lines in order, sent in 5 ms batches.
    lines.sort(key=lambda x: (x[1], x[0]))
    batches = []
    for t, actor, raw in lines:
        key = (int(t / 0.005) + rng.random() * 0.6, actor)
        batches.append((key, t, raw))
    batches.sort(key=lambda b: (b[0], b[1]))
    with open(path, "wb") as fh:
        for _, _, raw in batches:
            fh.write(raw)
    return len(lines)


_PEAK = """
import resource, sys
from sim.cli import main
main(["replay", sys.argv[1], "--check"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    # The high-water mark of this process's own memory. ru_maxrss is not: exec keeps the
    # parent's high-water mark in it, and the parent has replayed the log in-process.
    with open("/proc/self/status") as status:
        peak = next(int(f.split()[1]) for f in status if f.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(peak)
"""


def _replay_peak(folder: Path) -> int:
    """Peak RSS (KiB) of a replay --check in a fresh process that reports its own."""
    out = subprocess.run([sys.executable, "-c", _PEAK, str(folder)], capture_output=True,
                         text=True, check=False)  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


class _Bare(msgspec.Struct):
    # The contract's fields and nothing else: the fastest typed parse of a line msgspec has.
    ts: float
    actor: str
    pid: int
    seq: int
    event: str


def bare_parse(log: Path) -> tuple[float, float]:
    """Seconds (wall, CPU) to decode every line of ``log`` into a typed Struct, and nothing
    else."""
    decode = msgspec.json.Decoder(_Bare).decode
    started, cpu = time.perf_counter(), time.process_time()
    with open(log, "rb") as fh:
        for line in fh:
            decode(line)
    return time.perf_counter() - started, time.process_time() - cpu


def replay_check(folder: Path) -> tuple[float, float, list[dict[str, str]]]:
    """Seconds (wall, CPU) for what ``replay --check`` does (read the run, its history, every
    check), and its verdicts."""
    from sim._replay import load_run, replay

    started, cpu = time.perf_counter(), time.process_time()
    report, _ = replay(load_run(folder))
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    return took, cpu, [{"name": v.name, "status": v.status, "detail": v.detail}
                       for v in report.verdicts]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cars", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="side-by-side rounds (median)")
    parser.add_argument("--quick", action="store_true", help="200,000 events, one round")
    parser.add_argument("--keep", type=Path, help="write the log here and keep it")
    parser.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    add_time_limit(parser, 1800)
    args = parser.parse_args()
    time_limit(args.time_limit)
    if args.generate_only is not None:
        print(generate(args.generate_only, args.events, args.cars, 130, seed=1))
        return
    if args.quick:
        args.events, args.repeat = 200_000, 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "events.jsonl"
        # Generated in a child process: this one stays small, so the replay child's peak memory
        # (ru_maxrss survives fork and exec) is the replay's own.
        started = time.perf_counter()
        made_by = subprocess.run([sys.executable, __file__, "--events", str(args.events),
                                  "--cars", str(args.cars), "--generate-only", str(log)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        count = int(made_by.stdout)
        made = time.perf_counter() - started
        size = log.stat().st_size
        bares, replays, ratios, cpu_ratios = [], [], [], []
        verdicts: list[dict[str, str]] = []
        for _ in range(args.repeat):
            # Side by side, alternating: both see the same load.
            bare, bare_cpu = bare_parse(log)
            took, took_cpu, verdicts = replay_check(folder)
            bares.append(bare)
            replays.append(took)
            ratios.append(took / bare)
            # CPU time too: on a shared machine, time spent waiting for a core is no part of
            # either, and a short bare parse and a long replay do not wait alike.
            cpu_ratios.append(took_cpu / bare_cpu)
        started = time.perf_counter()
        command = [sys.executable, "-m", "sim", "replay", str(folder), "--check", "--json"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        peak = _replay_peak(folder)
    load_after = os.getloadavg()
    bare, took, ratio = (statistics.median(v) for v in (bares, replays, ratios))
    print(f"log               {count:,} events, {size / 1e6:.0f} MB (generated in {made:.1f} s)")
    print(f"bare typed parse  {bare:.2f} s ({bare / count * 1e6:.2f} µs/event), median of "
          f"{args.repeat}")  # fmt: skip
    print(f"replay --check    {took:.2f} s ({took / count * 1e6:.2f} µs/event) in-process, "
          f"ratio {ratio:.2f}x the bare parse (median of per-round ratios: "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    print(f"in CPU time       ratio {statistics.median(cpu_ratios):.2f}x (per round: "
          f"{', '.join(f'{r:.2f}' for r in cpu_ratios)})")  # fmt: skip
    print(f"the CLI           python -m sim replay --check: {wall:.2f} s wall, exit "
          f"{result.returncode}, peak RSS {peak / 1024:.0f} MiB")  # fmt: skip
    print(f"load average      before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    for verdict in verdicts:
        print(f"  {verdict['status']:<5} {verdict['name']}: {verdict['detail']}")


if __name__ == "__main__":
    main()
