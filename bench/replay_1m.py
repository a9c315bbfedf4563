"""Replay benchmark: generate a car park log of about 1,000,000 events, then replay --check it.

The log is produced by an event-driven simulation of the car park (1,000 cars, 130 spaces, a
FIFO barrier queue) in the exact line format the engine writes, with the same batching
disorder: each car's lines are written in chunks of a few milliseconds, so the file is in order
per actor and only roughly across actors. Then ``python -m sim replay LOG --check`` runs in a
child process, whose wall time and peak memory (ru_maxrss) are reported.

    python bench/replay_1m.py                 # ~1,000,000 events
    python bench/replay_1m.py --events 200000 # quicker
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec


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
        line = {"ts": t, "actor": actor, "pid": pid.get(actor, 1), "seq": seq[actor],
                "event": event, **fields}  # fmt: skip
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


def _replay_peak(folder: Path) -> int:
    """Peak RSS (KiB) of a replay --check in a fresh process that reports its own."""
    code = (
        "import resource, sys; from sim.cli import main; main(['replay', sys.argv[1], "
        "'--check']); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                         text=True, check=False)  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cars", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="write the log here and keep it")
    parser.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only is not None:
        print(generate(args.generate_only, args.events, args.cars, 130, seed=1))
        return
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
        started = time.perf_counter()
        command = [sys.executable, "-m", "sim", "replay", str(folder), "--check", "--json"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        peak = _replay_peak(folder)
        verdicts = json.loads(result.stdout)["invariants"] if result.stdout else []
        stdlib = time.perf_counter()
        with open(log, "rb") as fh:
            for line in fh:
                json.loads(line)
        stdlib = time.perf_counter() - stdlib
        decode = msgspec.json.Decoder(dict[str, object]).decode
        fast = time.perf_counter()
        with open(log, "rb") as fh:
            for line in fh:
                decode(line)
        fast = time.perf_counter() - fast
    print(f"log             {count:,} events, {size / 1e6:.0f} MB (generated in {made:.1f} s)")
    print(f"replay --check  {wall:.2f} s wall, {wall / count * 1e6:.2f} µs/event, "
          f"exit {result.returncode}, peak RSS {peak / 1024:.0f} MiB")  # fmt: skip
    print(f"decode alone    msgspec {fast / count * 1e6:.2f} µs/event, "
          f"stdlib json {stdlib / count * 1e6:.2f} µs/event ({stdlib / fast:.1f}x)")  # fmt: skip
    for verdict in verdicts:
        print(f"  {verdict['status']:<5} {verdict['name']}: {verdict['detail']}")


if __name__ == "__main__":
    main()
