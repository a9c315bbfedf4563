"""A sweep's tables: one row per run (results.csv) and one per point (summary.csv)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.estimate import mean_interval
from sim.scenario import Metric

from .execute import Outcome
from .grid import Grid

__all__ = ["aggregate", "ci95", "result_rows", "write_table"]

# Two-sided 95 % Student t quantiles for 1..30 degrees of freedom; beyond that, the normal's.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the 95 % confidence interval."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.960
    return mean, std, t * std / math.sqrt(n)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def result_rows(
    grid: Grid, outcomes: Sequence[Outcome], theory: Mapping[int, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """One row per run: parameters, seed, status, every metric, and the model's predictions."""
    rows = []
    for outcome in outcomes:
        task = outcome.task
        row: dict[str, Any] = {"run": task.name, "point": task.point.index, "rep": task.rep}
        row.update(dict(task.point.values))
        row.update(
            seed=task.seed,
            status=outcome.status,
            exit_code=outcome.exit_code,
            wall_s=round(outcome.wall_s, 6),
            run_dir=str(outcome.run_dir or ""),
        )
        row.update(outcome.metrics)
        row.update({f"theory_{k}": v for k, v in theory.get(task.point.index, {}).items()})
        rows.append(row)
    return rows


def aggregate(
    grid: Grid, rows: Sequence[Mapping[str, Any]], metrics: Sequence[Metric] = ()
) -> list[dict[str, Any]]:
    """One row per point: mean, standard deviation and 95 % CI of every numeric metric, over
    the repetitions that completed (status ok).

    ``{key}_ci95`` is the half-width of the symmetric t interval, as always; ``{key}_low`` and
    ``{key}_high`` are the interval clipped to the bounds the metric cannot leave (declared in
    ``metrics``), and ``{key}_n`` the number of repetitions it rests on. A point with one
    repetition has no spread to estimate; where that run gave an interval of its own (batch
    means within the run), ``_low``/``_high`` are that one, and ``{key}_ci`` says which it is.
    """
    axis_keys = [axis.key for axis in grid.axes]
    fixed = {"run", "point", "rep", "seed", "status", "exit_code", "run_dir", *axis_keys}
    declared = {m.key: m for m in metrics}
    companions = {c: m.key for m in metrics for c in m.companions}
    words = {m.key for m in metrics if m.words}
    summary = []
    for point in grid.points:
        mine = [r for r in rows if r["point"] == point.index]
        ok = [r for r in mine if r["status"] == "ok"]
        out: dict[str, Any] = {"point": point.index, **dict(point.values)}
        interrupted = sum(1 for r in mine if r["status"] == "interrupted")
        out.update(runs=len(mine), ok=len(ok), interrupted=interrupted)
        keys = [k for k in (mine[0] if mine else {}) if k not in fixed and k not in companions]
        for key in keys:
            values = [float(r[key]) for r in ok if _number(r.get(key))]
            # Words (a window described, a share per consumer): nothing to average, even where
            # one run's words read as a number ("12" items for a single consumer). Undeclared
            # metrics are known by their values.
            if key in words or (not values and any(isinstance(r.get(key), str) for r in ok)):
                continue
            if key.startswith("theory_"):
                out[key] = values[0] if values else None
                continue
            mean, std, half = ci95(values)
            out[f"{key}_mean"] = mean
            out[f"{key}_std"] = std
            out[f"{key}_ci95"] = half
            metric = declared.get(key)
            out.update(_bounded(key, values, ok, metric))
        summary.append(out)
    return summary


def _bounded(
    key: str, values: list[float], ok: Sequence[Mapping[str, Any]], metric: Metric | None
) -> dict[str, Any]:
    lower, upper = metric.bounds if metric is not None else (None, None)
    # A value can leave its bounds only by rounding (a utilisation of 1 + 1e-16): put it back.
    kept = [min(max(v, lower if lower is not None else v), upper if upper is not None else v)
            for v in values]  # fmt: skip
    found: dict[str, Any] = {f"{key}_low": None, f"{key}_high": None, f"{key}_n": len(kept)}
    if len(kept) >= 2:
        interval = mean_interval(kept, lower=lower, upper=upper)
        found.update({f"{key}_low": interval.low, f"{key}_high": interval.high,
                      f"{key}_ci": f"{len(kept)} runs, {interval.method}"})  # fmt: skip
    elif len(kept) == 1 and metric is not None and metric.interval:
        run = next(r for r in ok if _number(r.get(key)))
        low, high = run.get(f"{key}_low"), run.get(f"{key}_high")
        if isinstance(low, int | float) and isinstance(high, int | float):
            found.update({f"{key}_low": float(low), f"{key}_high": float(high),
                          f"{key}_ci": "1 run, its own batch means"})  # fmt: skip
    return found


def write_table(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """CSV with the union of the rows' columns, in first-seen order; Parquet beside it when
    pyarrow is installed."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    pq.write_table(table, path.with_suffix(".parquet"))


def ok_cell(row: Mapping[str, Any]) -> str:
    """A summary row's runs as a table shows them: ``2/3``, and ``0/1, 1 interrupted`` (a run
    stopped by Ctrl-C is no failure of its point)."""
    cell = f"{row.get('ok')}/{row.get('runs')}"
    return cell + (f", {row['interrupted']} interrupted" if row.get("interrupted") else "")
