"""Plan a sweep (validate the whole grid first), run its tasks, write its tables, resume it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import secrets
import sys
import textwrap
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sim import scenario as _scenario
from sim._signals import stop_signals
from sim._toml import dumps
from sim.config import (
    DATA_SOURCE,
    RunConfig,
    config_from_data,
    convert_section,
    load_config,
    named,
    overridden_keys,
    override_key,
    reload,
    set_by,
    with_overrides,
)
from sim.errors import ConfigError
from sim.timing import SIGNIFICANT

from .execute import Executor, LocalExecutor, Outcome, Task, latest_run_dir, outcome_from_run_dir
from .grid import (
    Axis,
    Grid,
    Point,
    SweepTable,
    axis_names,
    expand,
    parse_axis,
    run_seed,
    table_axes,
)
from .plot import check_metric, plot_metric
from .results import aggregate, ok_cell, result_rows, write_table

__all__ = [
    "SweepOutcome",
    "SweepPlan",
    "check_table",
    "load_plan",
    "make_executor",
    "plan_config",
    "plan_sweep",
    "plot_sweep",
    "run_sweep",
]

# A scheduler address as distributed takes it; tls:// and others would need their own options.
_SCHEDULER = re.compile(r"^tcp://[^\s/:]+:\d{1,5}$|^tcp://\[[0-9A-Fa-f:.]+\]:\d{1,5}$")


@dataclass
class SweepPlan:
    """Everything a sweep will run, decided and validated before the first run starts."""

    sweep_dir: Path
    config: Path
    overrides: list[str]
    grid: Grid
    base_seed: int
    tasks: list[Task]
    scenario: str
    # The config's text, for a config given as data: written to ``config`` when the sweep
    # starts, so that every run (a child ``sim run``) reads the same file.
    config_text: str | None = None


@dataclass
class SweepOutcome:
    """A finished (or interrupted) sweep: its tables as written and its exit code."""

    sweep_dir: Path
    exit_code: int
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]


def _axis_error(
    point: Point, exc: ConfigError, table: str | None, fixed: Sequence[str] = ()
) -> ConfigError:
    """A point the config refuses, blamed on where its axes came from: ``-p`` (the API's
    ``grid``), or the file of a ``[sweep]`` table and the table's key, and the override that
    set the table, if one did (``-s 'sweep.axes={...}'``: ``fixed`` are the overrides)."""
    key = exc.key or ", ".join(k for k, _ in point.values)
    reason = f"{exc.reason.replace(' (set with -s)', '')} (at point {point.label})"
    if table is None:
        return ConfigError(reason, source="-p", key=key)
    swept = any(key == k or key.startswith(f"{k}.") for k, _ in point.values)
    where = f"sweep.axes.{key}" if swept else key
    if swept and set_by(where, overridden_keys(fixed)):
        reason += " (set with -s)"
    return ConfigError(reason, source=table, key=where)


def plan_sweep(
    config_name: str | Path | RunConfig[Any],
    axis_texts: Sequence[str] = (),
    *,
    axes: Sequence[Axis] | None = None,
    overrides: Sequence[str] = (),
    repeat: int | None = None,
    zipped: bool = False,
    seed: int | None = None,
    out: Path = Path("logs"),
) -> SweepPlan:
    """Validate the config, the axes and every point; nothing is written or started.

    ``config_name`` is a path or bundled name, or a validated config (its own overrides stay
    on); ``axis_texts`` are ``-p`` texts, ``axes`` already parsed ones."""
    if isinstance(config_name, RunConfig):
        base = reload(config_name, overrides)
        overrides = list(base.overrides)
        label = named(config_name)
    else:
        base = load_config(config_name, overrides, via="-s")
        label = str(config_name)
    table = sweep_table(base, label)
    chosen: list[Axis] = list(axes or ()) + [parse_axis(text) for text in axis_texts]
    if chosen:
        grid = expand(chosen, repeat=repeat or table.repeat, zipped=zipped or table.zip)
    else:
        grid = _table_grid(table, label, repeat=repeat, zipped=zipped)
    if not grid.axes:
        raise ConfigError("nothing to sweep: give -p KEY=VALUES or a [sweep] table in the config",
                          source="sweep")  # fmt: skip
    unchanged = base.overrides
    fixed = [override_key(text) for text in unchanged]
    for axis in grid.axes:
        # `-s params.drive={mean=3}` fixes params.drive.mean as well.
        clash = next((f for f in fixed if f == axis.key or axis.key.startswith(f"{f}.")
                      or f.startswith(f"{axis.key}.")), None)  # fmt: skip
        if clash is not None:
            # Which value would a run take? The axis's, silently: say so instead.
            raise ConfigError(f"{axis.key} is both swept and fixed (by the override {clash}="
                              "...): give it as an axis or as a fixed override, not both",
                              source="-s", key=axis.key)  # fmt: skip
    base = replace(base, overrides=())
    _check_points(base, grid, unchanged, None if chosen else label)
    base_seed = seed if seed is not None else (base.seed if base.seed is not None else 0)
    # Named as its runs are: by the scenario's own name ("bank", not the "../x/bank.py" the
    # config may give, which would even nest the folder).
    name = _scenario.of(base).name
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    sweep_dir = out / "sweeps" / f"{name}-{stamp}-{secrets.token_hex(2)}"
    config_file, text = base.source.resolve(), None
    if base.source.name == DATA_SOURCE:
        # Data, not a file: the runs read it from the sweep's own copy, with a scenario file
        # made absolute (the copy is not where the data's relative path starts from).
        config_file, text = sweep_dir / "config.toml", _portable(base)
    return SweepPlan(sweep_dir, config_file, list(unchanged), grid, base_seed,
                     _tasks(grid, base_seed, sweep_dir), name, text)  # fmt: skip


def _check_points(
    base: RunConfig[Any], grid: Grid, fixed: Sequence[str], table: str | None = None
) -> None:
    """Every point of ``grid`` validated; ``table`` is the config file whose ``[sweep]``
    table gave the axes, None for axes given with ``-p`` (or the API's grid)."""
    for point in grid.points:
        try:
            reload(base, [*fixed, *point.overrides])
        except ConfigError as exc:
            raise _axis_error(point, exc, table, fixed) from None


def check_table(config: RunConfig[Any]) -> Grid | None:
    """The grid of ``config``'s ``[sweep]`` table, every point of it validated as a sweep
    would (``sim check``); None if the table gives no axes (they may come from ``-p``)."""
    label = named(config)
    table = sweep_table(config, label)
    grid = _table_grid(table, label)
    if not grid.axes:
        return None
    # A -s of the check is the run's own: here a point's value wins over it, as in a run of
    # that point (a sweep refuses the clash, but a config is not wrong for allowing both).
    _check_points(replace(config, overrides=()), grid, config.overrides, label)
    return grid


def sweep_table(config: RunConfig[Any], label: str) -> SweepTable:
    """The config's ``[sweep]`` table, validated (an empty one if it has none)."""
    try:
        table: SweepTable = convert_section(dict(config.sweep), SweepTable, "sweep")
    except ConfigError as exc:
        raise ConfigError(exc.reason, source=label, key=exc.key) from None
    return table


def _table_grid(
    table: SweepTable, label: str, *, repeat: int | None = None, zipped: bool = False
) -> Grid:
    # The axes the config's [sweep] table gives: a bad one is the file's, not a -p's.
    try:
        return expand(table_axes(table), repeat=repeat or table.repeat,
                      zipped=zipped or table.zip)  # fmt: skip
    except ConfigError as exc:
        key = f"sweep.axes.{exc.key}" if exc.key and "," not in exc.key else "sweep.axes"
        raise ConfigError(exc.reason, source=label, key=key) from None


def plan_config(plan: SweepPlan) -> RunConfig[Any]:
    """The sweep's config with its fixed overrides (read from the plan's text until the sweep
    has written its copy)."""
    if plan.config_text is not None and not plan.config.is_file():
        return config_from_data(tomllib.loads(plan.config_text), source=str(plan.config),
                                path=plan.config, overrides=plan.overrides,
                                text=plan.config_text)  # fmt: skip
    return load_config(plan.config, plan.overrides, via="-s")


def _portable(config: RunConfig[Any]) -> str:
    if config.origin is None or config.origin.form != "file" or config.origin.path is None:
        return config.text
    data = tomllib.loads(config.text)
    data["scenario"] = str(config.origin.path)
    return dumps(data)


def _tasks(grid: Grid, base_seed: int, sweep_dir: Path) -> list[Task]:
    return [
        Task(name, point, rep, run_seed(base_seed, point, rep), sweep_dir / "runs" / name)
        for point in grid.points
        for rep in range(grid.repeat)
        for name in [f"p{point.index:03d}-r{rep}"]
    ]


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the sweep directory {folder}: {exc.strerror}",
                          source="--out") from None  # fmt: skip


def _save_plan(plan: SweepPlan, jobs: int, executor: str) -> None:
    _make_dir(plan.sweep_dir)
    if plan.config_text is not None:
        plan.config.write_bytes(plan.config_text.encode("utf-8"))
    record = {
        "schema": 1,
        "command": sys.argv,
        "config": str(plan.config),
        "scenario": plan.scenario,
        "overrides": plan.overrides,
        "axes": [{"key": a.key, "values": list(a.values)} for a in plan.grid.axes],
        "repeat": plan.grid.repeat,
        "zip": plan.grid.zipped,
        "base_seed": plan.base_seed,
        "jobs": jobs,
        "executor": executor,
        "tasks": [_task_record(t) for t in plan.tasks],
    }
    path = plan.sweep_dir / "sweep.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(record)))


class _AxisRecord(msgspec.Struct):
    key: str
    values: list[Any]


class _SweepRecord(msgspec.Struct):
    # What --resume needs from sweep.json; other fields are for people and are ignored.
    config: str
    scenario: str
    overrides: list[str]
    axes: list[_AxisRecord]
    repeat: int
    zip: bool
    base_seed: int


def _task_record(task: Task) -> dict[str, Any]:
    values = dict(task.point.values)
    return {"name": task.name, "point": task.point.index, "values": values, "rep": task.rep,
            "seed": task.seed}  # fmt: skip


def load_plan(sweep_dir: Path) -> SweepPlan:
    """The plan of an earlier sweep, from its sweep.json (for ``--resume``)."""
    path = sweep_dir / "sweep.json"
    try:
        record = msgspec.json.decode(path.read_bytes(), type=_SweepRecord)
    except OSError as exc:
        raise ConfigError(f"cannot read the sweep to resume: {exc.strerror}",
                          source=str(path)) from None  # fmt: skip
    except msgspec.DecodeError as exc:
        raise ConfigError(f"not a sweep record: {exc}", source=str(path)) from None
    axes = [Axis(a.key, tuple(a.values)) for a in record.axes]
    grid = expand(axes, repeat=record.repeat, zipped=record.zip)
    plan = SweepPlan(sweep_dir, Path(record.config), record.overrides, grid,
                     record.base_seed, [], record.scenario)  # fmt: skip
    plan.tasks = _tasks(grid, plan.base_seed, sweep_dir)
    return plan


def _done(task: Task) -> Outcome | None:
    run_dir = latest_run_dir(task.out) if task.out.is_dir() else None
    if run_dir is None:
        return None
    outcome = outcome_from_run_dir(task, run_dir, None)
    return outcome if outcome.status == "ok" else None


class _Progress:
    """A progress bar with an ETA on a terminal; one line per finished run otherwise."""

    def __init__(self, console: Console | None, total: int, done: int) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._total, self._done = total, done
        if console is not None and console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[last]}"), TimeRemainingColumn(), console=console,
            )  # fmt: skip
            self._id = self._bar.add_task("sweep", total=total, completed=done, last="")

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, outcome: Outcome) -> None:
        self._done += 1
        text = f"{outcome.task.name} {outcome.task.point.label}: {outcome.status}"
        if self._bar is not None:
            self._bar.update(self._id, advance=1, last=text)
        elif self._console is not None:
            self._console.print(
                f"\\[{self._done}/{self._total}] {escape(text)} ({outcome.elapsed_s:.1f} s)"
            )


async def _execute(
    tasks: list[Task], executor: Executor, jobs: int, progress: _Progress
) -> tuple[list[Outcome], bool]:
    limiter = anyio.CapacityLimiter(jobs)
    outcomes: list[Outcome] = []
    interrupted = False

    async def one(task: Task) -> None:
        async with limiter:
            outcome = await executor.run(task)
        outcomes.append(outcome)
        progress.advance(outcome)

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal interrupted
            with stop_signals() as signals:
                try:
                    async for _ in signals:
                        interrupted = True
                        tg.cancel_scope.cancel()
                        return
                finally:
                    # A stop as the last run ended reached the watch only as it was cancelled.
                    interrupted = interrupted or bool(signals.unread)

        tg.start_soon(watch)
        async with anyio.create_task_group() as runs:
            for task in tasks:
                runs.start_soon(one, task)
        tg.cancel_scope.cancel()
    return outcomes, interrupted


def make_executor(
    plan: SweepPlan,
    kind: str,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    shared_out: bool = False,
) -> Executor:
    """The executor named ``kind`` (``local`` or ``dask``) for ``plan``'s runs."""
    if kind == "local":
        if scheduler is not None or shared_out:
            raise ConfigError("--scheduler and --shared-out need --executor dask",
                              source="--executor")  # fmt: skip
        return LocalExecutor(plan.config, plan.overrides)
    if kind != "dask":
        raise ConfigError(f"unknown executor {kind!r}; one of: local, dask", source="--executor")
    if scheduler is not None and not _SCHEDULER.match(scheduler):
        raise ConfigError(f"expected tcp://HOST:PORT, got {scheduler!r}", source="--scheduler")
    try:
        # Imported here and only here: distributed is an optional extra.
        from .dask import DaskExecutor
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("distributed", "dask"):
            raise
        raise ConfigError("the dask executor needs the distributed package: "
                          "pip install -e '.[dask]'", source="--executor") from None  # fmt: skip
    return DaskExecutor(plan.config, plan.overrides, scheduler=scheduler, workers=jobs or 1,
                        shared_out=shared_out)  # fmt: skip


def run_sweep(
    plan: SweepPlan,
    *,
    jobs: int | None = None,
    console: Console | None = None,
    resume: bool = False,
    plot: str | None = None,
    heatmap: bool = False,
    executor: str | Executor | None = None,
    scheduler: str | None = None,
    shared_out: bool = False,
) -> SweepOutcome:
    """Run what is missing of ``plan``, write its tables; they and the sweep's exit code.

    ``executor`` is ``"local"`` (the default: child processes on this machine), ``"dask"`` (a
    Dask LocalCluster, or the cluster at ``scheduler``; ``shared_out`` says the sweep's folder
    is the same path on every worker) or any object with ``async run(task) -> Outcome``.
    ``jobs`` is how many runs go at a time: by default 1, or for a Dask ``scheduler`` every
    thread of its workers.
    """
    chosen: Executor
    if isinstance(executor, str) or executor is None:
        chosen = make_executor(plan, executor or "local", jobs=jobs, scheduler=scheduler,
                               shared_out=shared_out)  # fmt: skip
    elif scheduler is not None or shared_out:
        raise ConfigError("scheduler and shared_out only go with executor='dask'",
                          source="--scheduler")  # fmt: skip
    else:
        chosen = executor
    spec = _scenario.of(plan_config(plan))
    if not resume:
        # Where the sweep's folder goes is checked before an executor starts (a Dask cluster
        # is seconds of start-up to find that --out is a file); the folder itself comes later.
        _make_dir(plan.sweep_dir.parent)
    finished = {t.name: o for t in plan.tasks if resume and (o := _done(t)) is not None}
    todo = [t for t in plan.tasks if t.name not in finished]
    started = time.monotonic()

    async def sweep() -> tuple[list[Outcome], bool, int]:
        async with contextlib.AsyncExitStack() as stack:
            # An executor with a life of its own (a Dask cluster) is set up before anything is
            # written, so that one that cannot start leaves no half-begun sweep behind.
            if isinstance(chosen, contextlib.AbstractAsyncContextManager):
                await stack.enter_async_context(chosen)
            slots = jobs or int(getattr(chosen, "slots", 1))
            where = getattr(chosen, "where", None)
            if not resume:
                _save_plan(plan, slots, str(where or "local"))
            if console is not None:
                console.print(
                    f"[bold]{plan.scenario}[/]: {len(plan.grid.points)} points x "
                    f"{plan.grid.repeat} repetitions = {len(plan.tasks)} runs, {slots} at a time"
                    + (f" on {escape(str(where))}" if where else "")
                    + (f"; {len(finished)} already done" if finished else "")
                )
            with _Progress(console, len(plan.tasks), len(finished)) as progress:
                fresh, interrupted = await _execute(todo, chosen, slots, progress)
            return fresh, interrupted, slots

    fresh, interrupted, slots = anyio.run(sweep)
    by_name = finished | {o.task.name: o for o in fresh}
    for task in plan.tasks:
        # A run stopped by Ctrl-C may still have left its directory: report what it says.
        if task.name not in by_name and task.out.is_dir() and (d := latest_run_dir(task.out)):
            by_name[task.name] = outcome_from_run_dir(task, d, None)
    outcomes = [by_name[t.name] for t in plan.tasks if t.name in by_name]
    theory = _theory(plan, spec)
    rows = result_rows(plan.grid, outcomes, theory)
    write_table(plan.sweep_dir / "results.csv", rows)
    summary = aggregate(plan.grid, rows, spec.metrics)
    write_table(plan.sweep_dir / "summary.csv", summary)
    elapsed = time.monotonic() - started
    _record_timing(plan.sweep_dir, elapsed, fresh, slots)
    if console is not None:
        _print_summary(console, plan, spec, summary)
    if plot is not None:
        plot_sweep(plan, summary, plot, heatmap=heatmap, console=console)
    if interrupted:
        return SweepOutcome(plan.sweep_dir, 130, rows, summary)
    failed = [o for o in outcomes if o.status != "ok"]
    missing = len(plan.tasks) - len(outcomes)
    if console is not None and (failed or missing):
        for outcome in failed[:10]:
            console.print(f"[red]{outcome.task.name}[/] {escape(outcome.task.point.label)}: "
                          f"{outcome.status} {escape(outcome.error)}")  # fmt: skip
    return SweepOutcome(plan.sweep_dir, 1 if failed or missing else 0, rows, summary)


def plot_sweep(
    plan: SweepPlan,
    summary: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    path: Path | None = None,
    heatmap: bool = False,
    console: Console | None = None,
) -> Path:
    """Draw ``metric`` of a sweep's summary against its first axis (with the model's values
    where there are any), or as a heatmap of two axes; return the picture's path."""
    config = plan_config(plan)
    spec = _scenario.of(config)
    declared = check_metric(spec.metrics, metric)
    unit = declared.unit
    shown = {"%": "%, 0-100"}.get(unit, unit)
    label = declared.label + (f" ({shown})" if shown else "")
    named = with_overrides(config.title, (), _swept_params(config, plan.grid))
    fixed = textwrap.fill(", ".join([named, *plan.overrides]).strip(", "), 100)
    title = f"{plan.scenario}: {label}" + (f"\n{fixed}" if fixed else "")
    path = path or plan.sweep_dir / f"{metric}.png"
    plot_metric(plan.grid, list(summary), metric, path, title=title, label=label, heatmap=heatmap,
                declared=declared)  # fmt: skip
    if console is not None:
        console.print(f"plot: {escape(str(path))}")
    return path


def _swept_params(config: RunConfig[Any], grid: Grid) -> dict[str, Any]:
    """The params a sweep's title is filled from: a swept one says its range ("3…8"), not the
    value the base config happens to hold, which no run of the picture may have had."""
    params: dict[str, Any] = msgspec.to_builtins(config.params)
    for axis in grid.axes:
        head, _, path = axis.key.partition(".")
        if head != "params" or not path:
            continue
        *parents, leaf = path.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[leaf] = _span(axis.values)
    return params


def _span(values: Sequence[Any]) -> str:
    def text(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numbers and len(values) > 2:
        return f"{text(min(values))}…{text(max(values))}"
    return "/".join(text(v) for v in values)


def _theory(plan: SweepPlan, spec: _scenario.Scenario[Any]) -> dict[int, Mapping[str, float]]:
    if spec.theory is None:
        return {}
    found: dict[int, Mapping[str, float]] = {}
    base = replace(plan_config(plan), overrides=())
    for point in plan.grid.points:
        config = reload(base, [*plan.overrides, *point.overrides])
        found[point.index] = spec.theory(config)
    return found


def _record_timing(sweep_dir: Path, elapsed: float, fresh: list[Outcome], jobs: int) -> None:
    # The sweep's own overhead: its wall time against the runs' own time spread over the jobs.
    runs = sum(o.elapsed_s for o in fresh)
    record = {"wall_s": elapsed, "runs_elapsed_s": runs, "jobs": jobs, "runs": len(fresh),
              "overhead": (elapsed - runs / jobs) / (runs / jobs) if runs else None}  # fmt: skip
    (sweep_dir / "timing.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def _print_summary(
    console: Console, plan: SweepPlan, spec: _scenario.Scenario[Any], summary: list[dict[str, Any]]
) -> None:
    table = Table(title=f"{plan.scenario} sweep", title_justify="left")
    for name in axis_names([axis.key for axis in plan.grid.axes]):
        table.add_column(name, justify="right")
    table.add_column("ok", justify="right")
    present = [m for m in spec.metrics if any(f"{m.key}_mean" in row for row in summary)]
    # What a model predicts comes first: measured beside predicted is what a sweep is for.
    modelled = [m for m in present if any(f"theory_{m.key}" in row for row in summary)]
    shown = (modelled + [m for m in present if m not in modelled])[:4]
    for metric in shown:
        unit = f" ({metric.unit})" if metric.unit else ""
        table.add_column(metric.label + unit, justify="right")
    for row in summary:
        cells = [str(row[a.key]) for a in plan.grid.axes] + [ok_cell(row)]
        for metric in shown:
            cells.append(_cell(row, metric.key, metric.unit))
        table.add_row(*cells)
    console.print(table)
    console.print("[dim]\\[low, high]: 95 % interval within the metric's bounds; n: runs it "
                  "rests on (one run: its own batch means)[/]")  # fmt: skip
    shares = [r["timer_share_mean"] for r in summary if _finite(r.get("timer_share_mean"))]
    if shares and max(shares) >= SIGNIFICANT:
        console.print(
            f"[bold yellow]warning:[/] timer lateness reached {max(shares):.1%} of the shortest "
            "mean duration: measured times are stretched; use a lower clock.speedup or "
            "clock.mode=virtual (see docs/theory.md)"
        )
    console.print(f"results: {plan.sweep_dir / 'results.csv'}   summary: "
                  f"{plan.sweep_dir / 'summary.csv'}")  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def _cell(row: Mapping[str, Any], key: str, unit: str) -> str:
    """``mean [low, high] (n)``, the interval clipped to the metric's bounds, with the number of
    repetitions it rests on (and the model's value when there is one), numbers only."""
    scale = 100.0 if unit == "%" else 1.0

    def num(value: Any) -> str:
        if isinstance(value, int | float) and value == value:
            return f"{value * scale:,.2f}"
        return "-"

    text = num(row.get(f"{key}_mean"))
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    n = row.get(f"{key}_n")
    if isinstance(low, float) and isinstance(high, float):
        text += f" [{num(low)}, {num(high)}]"
    if isinstance(n, int) and row.get(f"{key}_mean") == row.get(f"{key}_mean"):
        text += f" n={n}"
    theory = row.get(f"theory_{key}")
    if isinstance(theory, float):
        text += f" [dim](model {num(theory)})[/]"
    return text
