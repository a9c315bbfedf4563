"""Coordinator transport: TCP on 127.0.0.1 against a Unix socket, with the flood scenario.

Every repetition runs ``bench/flood.toml`` once with ``engine.transport = "tcp"`` and once with
``"unix"`` (the order alternates), through the real engine; every run must be lossless. The
table shows medians and the median of the per-repetition ratios unix/tcp. Rates as in
bench/log_pipeline.py: *produce* from the actors' first to last event ``ts``, *to disk* from the
first actor event until the events file is closed.

Run from the repository root: ``python bench/transport.py`` (``--quick`` for a smoke run).
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

from bench._common import add_time_limit, fmt, machine, median, table, time_limit
from bench.log_pipeline import measure_sim

TRANSPORTS = ("tcp", "unix")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Run from the repository root. Exit status 1 if any run lost or damaged a line.",
    )
    parser.add_argument("--actors", type=int, default=4, help="logging processes (default 4)")
    parser.add_argument(
        "--ticks", type=int, default=200_000, help="events per actor (default 200000)"
    )
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each (default 7)")
    parser.add_argument("--flush-ms", type=float, default=5.0, help="engine.flush_ms (default 5)")
    parser.add_argument(
        "--with-analysis",
        action="store_true",
        help="let sim analyse each run's log afterwards (not measured; off by default)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 ticks, 2 reps")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    add_time_limit(parser, 1200)
    args = parser.parse_args()
    time_limit(args.time_limit)
    if args.quick:
        args.ticks, args.reps = 20_000, 2

    print(
        f"# transport: {args.actors} actors x {args.ticks:,} events, flush_ms={args.flush_ms:g}, "
        f"{args.reps} reps"
    )
    print(f"# {machine()}")
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    work = Path(tempfile.mkdtemp(prefix="sim-bench-transport-"))
    try:
        for rep in range(args.reps):
            order = TRANSPORTS if rep % 2 == 0 else TRANSPORTS[::-1]
            for transport in order:
                row = measure_sim(
                    work, args.actors, args.ticks, args.flush_ms, transport, args.with_analysis
                )
                results[transport].append(row)
                status = "ok" if row["ok"] else "LOST/BAD: " + "; ".join(row["problems"][:2])
                print(
                    f"  rep {rep + 1}: {transport:<4} produce {fmt(row['produce']):>9} ev/s, "
                    f"to disk {fmt(row['to_disk']):>9} ev/s, "
                    f"CPU {row['cpu_receiver_us']:.2f}+{row['cpu_actors_us']:.2f} us/ev "
                    f"[{status}]",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    tcp = results["tcp"]
    rows = []
    for transport, runs in results.items():

        def ratio(key: str, runs: list[dict[str, Any]] = runs) -> str:
            return f"{median(r[key] / t[key] for r, t in zip(runs, tcp, strict=True)):.2f}x"

        rows.append(
            [
                transport,
                fmt(median(r["produce"] for r in runs)),
                ratio("produce"),
                fmt(median(r["to_disk"] for r in runs)),
                ratio("to_disk"),
                fmt(min(r["to_disk"] for r in runs)),
                fmt(max(r["to_disk"] for r in runs)),
                fmt(median(r["cpu_receiver_us"] for r in runs), 2),
                fmt(median(r["cpu_actors_us"] for r in runs), 2),
                f"{sum(r['ok'] for r in runs)}/{len(runs)}",
            ]
        )
    print()
    print(
        table(
            [
                "transport",
                "produce ev/s",
                "vs tcp",
                "to-disk ev/s",
                "vs tcp",
                "to-disk min",
                "to-disk max",
                "CPU us/ev coordinator",
                "CPU us/ev actors",
                "lossless runs",
            ],
            rows,
        )
    )
    print("\nmedians over repetitions; 'vs tcp' is the median of per-repetition ratios")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
