"""Log pipeline throughput: sim's real pipeline against a bare hand-written one, side by side.

4 actor processes log as fast as they can, to disk, and every line must arrive (per actor, ``seq``
runs 0..n-1 with no gap and the line count is exactly what was logged).

* bare: each process configures structlog with a JSON renderer (orjson if installed, else
  msgspec) and a logger whose ``msg`` does one ``sock.sendall(line)`` per event over TCP to a plain
  asyncio server (``asyncio.start_server``) that reads chunks and writes whole lines to a file.
* sim: ``python -m sim run bench/flood.toml`` (scenario ``bench.flood``) through the real engine:
  batching sink in every actor, validating anyio coordinator, events.jsonl; once per
  ``engine.flush_ms`` value.

Variants alternate within each repetition (the machine is shared and noisy); the table shows
medians. Rates:

* produce ev/s: actor lines / (last - first actor event ts): how fast actors could log.
* to-disk ev/s: actor lines / (first actor event .. events file closed): includes draining the
  backlog buffered in the sink, the sockets and the coordinator.
* CPU us/ev: user+system CPU of the whole run (all processes) per actor line.

Run from the repository root: ``python bench/log_pipeline.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    FLOOD_TOML,
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

BARE = "bare (sendall per event)"


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# -- the bare pipeline ------------------------------------------------------------------------


def _bare_actor(index: int, port: int, ticks: int, t0_ns: int) -> None:
    """One bare actor: structlog + JSON renderer + one sendall per event."""
    import structlog

    try:
        import orjson

        renderer: Any = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    except ImportError:  # pragma: no cover - orjson is installed in the benchmark venv
        import msgspec

        encode = msgspec.json.Encoder().encode
        renderer = structlog.processors.JSONRenderer(serializer=lambda obj, **kw: encode(obj))

    actor = f"bare-{index:03d}"
    pid = os.getpid()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clock = time.monotonic_ns
    counter = iter(range(1 << 62))

    def stamp(_logger: Any, _method: str, event_dict: Any) -> Any:
        # The same contract fields sim stamps: ts, actor, pid, seq.
        return {
            "ts": (clock() - t0_ns) / 1e9,
            "actor": actor,
            "pid": pid,
            "seq": next(counter),
            **event_dict,
        }

    class SocketLogger:
        def __init__(self, sock: socket.socket) -> None:
            self._sendall = sock.sendall

        def msg(self, line: bytes | str) -> None:
            if isinstance(line, str):
                line = line.encode()
            self._sendall(line + b"\n")

        info = debug = warning = error = critical = msg

    logger = SocketLogger(sock)
    structlog.configure(
        processors=[stamp, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        logger_factory=lambda *args: logger,
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger()
    log.info("actor_start", role="bare")
    info = log.info
    for i in range(ticks):
        info("tick", i=i)
    log.info("actor_end", status="ok")
    sock.shutdown(socket.SHUT_WR)
    sock.close()


async def _bare_server(out: Path, actors: int, ticks: int) -> dict[str, Any]:
    self0, children0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    t0_ns = time.monotonic_ns()
    fh = open(out, "wb", buffering=1 << 20)  # noqa: SIM115
    done = asyncio.Event()
    closed = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal closed
        tail = b""
        while chunk := await reader.read(256 * 1024):
            # Only whole lines go to the shared file, or connections would tear each other's.
            cut = chunk.rfind(b"\n")
            if cut < 0:
                tail += chunk
                continue
            fh.write(tail + chunk[: cut + 1] if tail else chunk[: cut + 1])
            tail = chunk[cut + 1 :]
        if tail:
            fh.write(tail)
        writer.close()
        closed += 1
        if closed == actors:
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    mp = multiprocessing.get_context("fork")
    procs = [
        mp.Process(target=_bare_actor, args=(i, port, ticks, t0_ns), daemon=True)
        for i in range(actors)
    ]
    for proc in procs:
        proc.start()
    await done.wait()
    for proc in procs:
        proc.join()
    server.close()
    await server.wait_closed()
    fh.close()
    return {
        "wall_s": (time.monotonic_ns() - t0_ns) / 1e9,
        "cpu_receiver_s": _cpu(resource.RUSAGE_SELF) - self0,
        "cpu_actors_s": _cpu(resource.RUSAGE_CHILDREN) - children0,
        "exitcodes": [p.exitcode for p in procs],
    }


def bare_child(out: Path, actors: int, ticks: int) -> None:
    result = asyncio.run(_bare_server(out, actors, ticks))
    print(json.dumps(result))


# -- one measurement ----------------------------------------------------------------------------


def measure_bare(work: Path, actors: int, ticks: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"bare-{time.monotonic_ns()}.jsonl"
    args = [sys.executable, str(Path(__file__).resolve()), "--bare-child", str(path)]
    args += ["--actors", str(actors), "--ticks", str(ticks)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env(), cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bare pipeline failed: {proc.stderr[-2000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {f"bare-{i:03d}": ticks + 2 for i in range(actors)}
    log = check_log(path, expected)
    if info["exitcodes"] != [0] * actors:
        log.problems.append(f"exit codes {info['exitcodes']}")
    path.unlink()
    return _row(BARE, log, info["wall_s"], wall, info["cpu_receiver_s"], info["cpu_actors_s"])


def measure_sim(
    work: Path,
    actors: int,
    ticks: int,
    flush_ms: float,
    transport: str,
    analysis: bool = False,
) -> dict[str, Any]:
    overrides = [f"params.actors={actors}", f"params.ticks={ticks}"]
    overrides += [f"engine.flush_ms={flush_ms:g}", f"engine.transport={transport}"]
    run = run_sim(FLOOD_TOML, overrides, work, skip_analysis=not analysis)
    expected = {f"flood-{i:03d}": ticks + 2 for i in range(actors)}
    log = check_log(run.run_dir / "events.jsonl", expected)
    if run.status != "ok":
        log.problems.append(f"run status {run.status}: {run.reason[:120]}")
    codes = {a["exitcode"] for a in run.execution["actors"].values()}
    if codes != {0}:
        log.problems.append(f"actor exit codes {sorted(codes, key=str)}")
    # The engine counts the lines the coordinator accepted; the file must hold as many.
    accepted = sum(a["lines"] for a in run.execution["actors"].values())
    if accepted != log.actor_lines:
        log.problems.append(f"coordinator accepted {accepted} lines, file has {log.actor_lines}")
    shutil.rmtree(run.run_dir)
    return _row(
        f"sim flush_ms={flush_ms:g}",
        log,
        run.engine_wall_s,
        run.wall_s,
        run.exec_cpu_engine_s,
        run.exec_cpu_actors_s,
    )


def _row(
    name: str, log: Any, run_wall: float, wall: float, cpu_receiver: float, cpu_actors: float
) -> dict[str, Any]:
    n = log.actor_lines
    per = 1e6 / n if n else float("nan")
    return {
        "name": name,
        "ok": log.ok,
        "problems": log.problems,
        "lines": n,
        # How fast the actors logged (what their own timestamps say).
        "produce": n / log.span_s if log.span_s > 0 else float("nan"),
        # From the first actor line until the events file was closed with every line in it.
        "to_disk": n / (run_wall - log.first_ts) if n else float("nan"),
        "span_s": log.span_s,
        "run_wall_s": run_wall,
        "wall_s": wall,
        "cpu_receiver_us": cpu_receiver * per,
        "cpu_actors_us": cpu_actors * per,
        "cpu_us": (cpu_receiver + cpu_actors) * per,
    }


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Run from the repository root. Exit status 1 if any run lost or damaged a line.",
    )
    parser.add_argument("--actors", type=int, default=4, help="logging processes (default 4)")
    parser.add_argument(
        "--ticks", type=int, default=200_000, help="events per actor (default 200000)"
    )
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions (default 5)")
    parser.add_argument(
        "--flush-ms",
        default="1,5,20",
        help="comma-separated engine.flush_ms values for sim (default 1,5,20)",
    )
    parser.add_argument("--transport", default="tcp", choices=["tcp", "unix"], help="for sim")
    parser.add_argument(
        "--with-analysis",
        action="store_true",
        help="let sim analyse each run's log afterwards, as `python -m sim run` does (not part "
        "of the measured pipeline; off by default)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 ticks, 1 rep")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--bare-child", type=Path, help=argparse.SUPPRESS)
    add_time_limit(parser, 1800)
    args = parser.parse_args()

    if args.bare_child is not None:
        bare_child(args.bare_child, args.actors, args.ticks)
        return 0
    time_limit(args.time_limit)
    if args.quick:
        args.ticks, args.reps = 20_000, 1
    flushes = [float(x) for x in args.flush_ms.split(",") if x]

    print(f"# log pipeline: {args.actors} actors x {args.ticks:,} events, {args.reps} reps")
    print(f"# {machine()}")
    variants: list[tuple[str, float]] = [("bare", 0.0)] + [("sim", f) for f in flushes]
    results: dict[str, list[dict[str, Any]]] = {}
    work = Path(tempfile.mkdtemp(prefix="sim-bench-pipeline-"))
    try:
        for rep in range(args.reps):
            # Rotate the order so that no variant always runs first (or right after another).
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for kind, flush in order:
                if kind == "bare":
                    row = measure_bare(work, args.actors, args.ticks)
                else:
                    row = measure_sim(
                        work, args.actors, args.ticks, flush, args.transport, args.with_analysis
                    )
                row["rep"] = rep
                results.setdefault(row["name"], []).append(row)
                status = "ok" if row["ok"] else "LOST/BAD: " + "; ".join(row["problems"][:2])
                print(
                    f"  rep {rep + 1}: {row['name']:<22} produce {fmt(row['produce']):>9} ev/s, "
                    f"to disk {fmt(row['to_disk']):>9} ev/s, CPU {row['cpu_us']:.2f} us/ev, "
                    f"wall {row['wall_s']:.2f} s  [{status}]",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    bare = {r["rep"]: r for r in results[BARE]}

    def ratio(runs: list[dict[str, Any]], key: str) -> float:
        # Each run against the bare run of the same repetition (minutes apart, not hours).
        return median(r[key] / bare[r["rep"]][key] for r in runs)

    rows = []
    for name, runs in results.items():
        rows.append(
            [
                name,
                fmt(median(r["produce"] for r in runs)),
                f"{ratio(runs, 'produce'):.2f}x",
                fmt(median(r["to_disk"] for r in runs)),
                f"{ratio(runs, 'to_disk'):.2f}x",
                fmt(median(r["cpu_receiver_us"] for r in runs), 2),
                fmt(median(r["cpu_actors_us"] for r in runs), 2),
                fmt(median(r["cpu_us"] for r in runs), 2),
                fmt(median(r["run_wall_s"] for r in runs), 2),
                fmt(median(r["wall_s"] for r in runs), 2),
                f"{sum(r['ok'] for r in runs)}/{len(runs)}",
            ]
        )
    print()
    print(
        table(
            [
                "pipeline",
                "produce ev/s",
                "vs bare",
                "to-disk ev/s",
                "vs bare",
                "CPU us/ev receiver",
                "CPU us/ev actors",
                "CPU us/ev total",
                "run wall s",
                "process wall s",
                "lossless runs",
            ],
            rows,
        )
    )
    print(
        "\nmedians; 'vs bare' is the median of per-repetition ratios; receiver = the asyncio "
        "server (bare) or the engine process with its coordinator (sim)"
    )
    lost = [(n, r["problems"]) for n, runs in results.items() for r in runs if not r["ok"]]
    if lost:
        print("\nruns that lost or damaged lines:")
        for name, problems in lost:
            print(f"  {name}: {'; '.join(problems[:3])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
