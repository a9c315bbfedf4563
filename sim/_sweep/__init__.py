"""Parameter sweeps: a scenario over a grid of parameters, repeated, in parallel, tabulated."""

from __future__ import annotations

from .execute import Executor, LocalExecutor, Outcome, Task
from .grid import Axis, Grid, Point, expand, parse_axis, run_seed
from .plot import check_metric, drawable, plottable
from .runner import (
    SweepOutcome,
    SweepPlan,
    load_plan,
    make_executor,
    plan_sweep,
    plot_sweep,
    run_sweep,
)

__all__ = [
    "Axis",
    "Executor",
    "Grid",
    "LocalExecutor",
    "Outcome",
    "Point",
    "SweepOutcome",
    "SweepPlan",
    "Task",
    "check_metric",
    "drawable",
    "expand",
    "load_plan",
    "make_executor",
    "parse_axis",
    "plan_sweep",
    "plot_sweep",
    "plottable",
    "run_seed",
    "run_sweep",
]
