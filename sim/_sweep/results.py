"""A sweep's tables: one row per run (results.csv) and one per point (summary.csv)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def aggregate(grid: Grid, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per point: mean, standard deviation and 95 % CI of every numeric metric, over
    the repetitions that completed (status ok)."""
    axis_keys = [axis.key for axis in grid.axes]
    fixed = {"run", "point", "rep", "seed", "status", "exit_code", "run_dir", *axis_keys}
    summary = []
    for point in grid.points:
        mine = [r for r in rows if r["point"] == point.index]
        ok = [r for r in mine if r["status"] == "ok"]
        out: dict[str, Any] = {"point": point.index, **dict(point.values)}
        out.update(runs=len(mine), ok=len(ok))
        metrics = [k for k in (mine[0] if mine else {}) if k not in fixed]
        for key in metrics:
            values = [float(r[key]) for r in ok if _number(r.get(key))]
            if key.startswith("theory_"):
                out[key] = values[0] if values else None
                continue
            mean, std, half = ci95(values)
            out[f"{key}_mean"] = mean
            out[f"{key}_std"] = std
            out[f"{key}_ci95"] = half
        summary.append(out)
    return summary


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
