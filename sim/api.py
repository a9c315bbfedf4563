"""sim as a library: run, replay and sweep scenarios from Python and get DataFrames back.

>>> import sim
>>> run = sim.run("carpark", set={"params.cars": 40, "clock.mode": "virtual"}, seed=1)
>>> run.ok, run.metrics["wait_mean"]
>>> run.ops.query("prim == 'spaces' and op == 'acquire'").wait_sim_min.describe()

Everything here is what the command line does (the CLI is a thin layer over these functions),
and errors are the same :class:`~sim.errors.SimError` classes it maps to exit codes. See
docs/api.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _isolated
from . import scenario as _scenario
from .config import RunConfig, config_from_mapping, load_config, override_key, reload
from .errors import ConfigError, ReplayError
from .manifest import exit_code

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from ._replay import LoadedRun
    from ._runner import RunOutcome
    from ._sweep import Executor, SweepOutcome, SweepPlan
    from .analysis import Report
    from .checks import Verdict
    from .history.lines import Finding
    from .scenario import Scenario

__all__ = ["Run", "Sweep", "replay", "run", "sweep"]

Settings = Mapping[str, Any] | Iterable[str] | None

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The checks behind these functions are the command line's own, so their errors name its
# options; a Python caller gave parameters, and reads those: "out: cannot create ...", not
# "--out: ...". The CLI, calling the same functions, keeps its spelling (_cli_spelling).
_PARAMETERS = {
    "-s": "set", "-p": "grid", "--out": "out", "--seed": "seed", "--schedule": "schedule",
    "--resume": "resume", "--repeat": "repeat", "--jobs": "jobs", "--executor": "executor",
    "--scheduler": "scheduler", "--shared-out": "shared_out", "--zip": "zip",
    "--plot": "metric", "--heatmap": "heatmap", "--scenario": "scenario",
}  # fmt: skip
# An option where a message names it, with the metavar that may follow (`-s KEY=VALUE`); not
# inside a quoted value of the user's own ("got '-s'").
_OPTION = re.compile(r"(?<![\w'\"-])(" + "|".join(re.escape(o) for o in sorted(_PARAMETERS,
                     key=len, reverse=True)) + r")(?![\w'\"-])(?: [A-Z][A-Z_=:/]*\b)?")  # fmt: skip
_CLI = contextvars.ContextVar("sim_cli_spelling", default=False)


@contextlib.contextmanager
def _cli_spelling() -> Iterator[None]:
    """Within the block, errors keep the command line's option names (the CLI's own calls)."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def _spoken(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """``fn`` with its ConfigErrors naming parameters, not options, for a Python caller."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ReplayError) as exc:
            if _CLI.get():
                raise
            spoken = _as_parameters(exc)
            if spoken is exc:
                raise
            raise spoken.with_traceback(exc.__traceback__) from None

    return wrapper


def _as_parameters(exc: ConfigError | ReplayError) -> ConfigError | ReplayError:
    def said(match: re.Match[str]) -> str:
        # "(set with -s)" after a value: the argument it was given with, as the caller wrote it.
        name = _PARAMETERS[match.group(1)]
        return f"{name}=" if match.string[: match.start()].endswith("set with ") else name

    spoken: ConfigError | ReplayError
    if isinstance(exc, ConfigError):
        source = _PARAMETERS.get(exc.source, exc.source) if exc.source else None
        spoken = ConfigError(_OPTION.sub(said, exc.reason), source=source, key=exc.key)
    else:
        spoken = ReplayError(_OPTION.sub(said, str(exc)))
    if str(spoken) == str(exc):
        return exc
    spoken.run_dir = exc.run_dir
    return spoken


def _overrides(settings: Settings, via: str) -> list[str]:
    """``set`` as ``-s`` texts: a mapping's values written as TOML, or the texts as given."""
    from ._toml import value

    if settings is None:
        return []
    if isinstance(settings, Mapping):
        texts = []
        for key, item in settings.items():
            try:
                texts.append(f"{key}={value(item)}")
            except TypeError as exc:
                raise ConfigError(str(exc), source=via, key=str(key)) from None
        return texts
    if isinstance(settings, (str, bytes)) or not isinstance(settings, Iterable):
        what = f"the string {settings!r}" if isinstance(settings, str) else repr(settings)
        raise ConfigError("expected a mapping of dotted keys to values, or KEY=VALUE texts, "
                          f"not {what}", source=via)  # fmt: skip
    return [str(item) for item in settings]


def _config(
    config: str | Path | Mapping[str, Any] | RunConfig[Any],
    settings: Settings = None,
    seed: int | None = None,
) -> RunConfig[Any]:
    """Any of the forms a config may be given in, validated, with ``set`` and ``seed``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"must be an int >= 0, got {seed!r}", source="seed")
    # Errors say where a value came from: a mapping is the API's set=, texts are -s texts.
    via = "set=" if isinstance(settings, Mapping) else "-s"
    texts = _overrides(settings, via)
    if isinstance(config, RunConfig):
        return reload(config, texts, seed=seed, via=via) if texts or seed is not None else config
    if isinstance(config, Mapping):
        return config_from_mapping(config, texts, seed, via=via)
    if isinstance(config, (str, Path)):
        return load_config(config, texts, seed=seed, via=via)
    raise ConfigError(f"a config is a path, a bundled name, a mapping or a RunConfig, not "
                      f"{type(config).__name__}")  # fmt: skip


# -- running -----------------------------------------------------------------------------


@_spoken
def run(
    config: str | Path | Mapping[str, Any] | RunConfig[Any],
    *,
    set: Settings = None,
    seed: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    schedule: str | Path | None = None,
) -> Run:
    """Run a scenario with real processes and return the finished :class:`Run`.

    ``config`` is a TOML path, a bundled config's name (``"carpark"``), a mapping with the
    same content as a TOML file, or a :class:`~sim.RunConfig`. ``set`` overrides values by
    dotted key (``{"params.cars": 400}``, or ``-s``-style ``"params.cars=400"`` texts);
    ``seed`` seeds every actor (default: the config's, else random). The run directory goes
    under ``out`` (default ``logs``). ``progress`` shows the live view and the summary on
    stderr. ``schedule`` replays a virtual run's schedule.json exactly.

    A run that fails (a violated invariant, a crash, a deadlock) is returned with ``ok``
    false; a config that is wrong raises :class:`~sim.ConfigError` before anything starts.
    """
    chosen = None
    if schedule is not None:
        from .virtual.schedule import load_schedule

        chosen = load_schedule(Path(schedule))
        if seed is None:
            seed = chosen.seed
        elif chosen.seed is not None and seed != chosen.seed:
            # The draws are part of what the schedule replays: another seed cannot fit it.
            raise ConfigError(f"{seed}: the schedule was recorded with seed {chosen.seed}, and "
                              "replays only with it (leave the seed out)",
                              source="--seed")  # fmt: skip
    validated = _config(config, set, seed)
    if chosen is not None:
        validated = _on_the_virtual_clock(validated)
    folder = Path("logs") if out is None else Path(out)
    outcome = _isolated.call(_run_here, validated, folder, progress, chosen)
    return Run._finished(validated, outcome)


def _on_the_virtual_clock(config: RunConfig[Any]) -> RunConfig[Any]:
    """``config`` as a schedule replays it: on the virtual clock, which an override that asks
    for another (`clock.mode=wall`, `clock={mode="wall"}`) contradicts; it was replaced without
    a word. A config file's own wall clock is no contradiction: a schedule implies virtual."""
    if config.clock.mode == "virtual":
        return config
    if any(override_key(t).split(".")[0] == "clock" for t in config.overrides):
        raise ConfigError(f"{config.clock.mode}: a schedule replays a virtual run, on the virtual "
                          "clock only (leave clock.mode out)", source="-s",
                          key="clock.mode")  # fmt: skip
    return reload(config, ["clock.mode=virtual"])


def _run_here(config: RunConfig[Any], out: Path, progress: bool, schedule: Any) -> RunOutcome:
    # Module level, so that a child interpreter can be handed it (sim._isolated).
    from ._runner import run as run_config

    console = _console() if progress else None
    outcome = run_config(config, out, console=console, schedule=schedule)
    # The history that made the report stays here: it holds the whole run's models.
    outcome.report.history = None
    return outcome


def _console() -> Console:
    from ._console import console

    return console(stderr=True)


def _named_with_scenario(name: str) -> str:
    return f"sim.replay(..., scenario={name!r})"


@_spoken
def replay(path: str | Path, *, scenario: str | None = None) -> Run:
    """Read a finished run back from its log (a run directory or its events file): the same
    metrics and verdicts, recomputed, nothing re-run.

    The log's scenario is read with its own analysis and checks if it is bundled or installed;
    a file or module that only the log names is not imported unless you name it with
    ``scenario`` (a bundled or installed name, a path, a dotted module): without it, only the
    generic checks run and ``findings`` says what was skipped.
    """
    from ._replay import load_run
    from ._replay import replay as recompute

    # The command line's own call keeps its way of naming the scenario (replay --scenario).
    loaded = load_run(Path(path), scenario, retry=None if _CLI.get() else _named_with_scenario)
    report, spec = recompute(loaded)
    # The manifest's word, else (a bare events file) what the engine's stopping line said.
    recorded = str((loaded.manifest or {}).get("status", "")) or report.stopped_as
    # As for a run: the verdicts decide, unless the run was stopped from outside, or the
    # scenario's own checks did not run here (a file the log names is not imported unasked):
    # then the generic ones passing cannot make a failed run ok.
    partial = spec is None and recorded == "failed" and report.ok
    status = recorded if recorded in ("interrupted", "timeout") else (
        "ok" if report.ok and not partial else "failed")  # fmt: skip
    reason = ("as recorded: the scenario's own checks did not run here (the findings say how "
              "to run them)") if partial and status == "failed" else report.reason  # fmt: skip
    return Run(loaded, report, spec, status, reason)


# -- the result of a run -----------------------------------------------------------------


class Run:
    """A finished run: how it ended, its config, metrics and verdicts, and its history as
    DataFrames (each built on first use, from one pass of the run's history).

    In Jupyter it shows as a table of metrics and verdicts with the run's plot.
    """

    def __init__(
        self,
        loaded: LoadedRun,
        report: Report,
        spec: Scenario[Any] | None,
        status: str,
        reason: str | None = None,
    ) -> None:
        self._loaded = loaded
        self._report = report
        self._spec = spec
        #: ``ok``, ``failed``, ``interrupted`` or ``timeout``.
        self.status = status
        #: Why it is not ok, in words ("" if it is).
        self.reason = report.reason if reason is None else reason
        self._frames: dict[str, pd.DataFrame] = {}
        self._png: str | None = None

    @classmethod
    def _finished(cls, config: RunConfig[Any], outcome: RunOutcome) -> Run:
        import json

        from ._replay import LoadedRun

        run_dir = outcome.run_dir
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        loaded = LoadedRun(
            run_dir / "events.jsonl", run_dir, manifest, config,
            dict(manifest.get("primitives", {})), list(manifest.get("actors", {})),
            list(outcome.report.findings),
        )  # fmt: skip
        return cls(loaded, outcome.report, _scenario.of(config), outcome.status)

    @property
    def ok(self) -> bool:
        """The run completed and every invariant held (or showed what its config expects)."""
        return self.status == "ok"

    @property
    def exit_code(self) -> int:
        """What ``python -m sim run`` exits with: 0 ok, 1 failed, 130 interrupted."""
        return exit_code(self.status)

    @property
    def dir(self) -> Path:
        """The run directory (for a bare events file, its folder)."""
        return self._loaded.run_dir or self._loaded.events_path.parent

    @property
    def config(self) -> RunConfig[Any] | None:
        """The validated config (None when neither run.json nor the log records one)."""
        return self._loaded.config

    @property
    def manifest(self) -> dict[str, Any]:
        """run.json as a dict (empty when the run has none)."""
        return dict(self._loaded.manifest or {})

    @property
    def metrics(self) -> dict[str, Any]:
        """The summary metrics, by the keys the scenario declares (as in run.json)."""
        return dict(self._report.metrics)

    @property
    def verdicts(self) -> list[Verdict]:
        """Every invariant check's verdict."""
        return list(self._report.verdicts)

    @property
    def findings(self) -> list[Finding]:
        """Problems with the files themselves (torn lines, a missing manifest, skipped code)."""
        return list(self._report.findings)

    @functools.cached_property
    def theory(self) -> dict[str, float]:
        """What the scenario's model predicts for this config, by metric key (empty without)."""
        config = self._loaded.config
        if self._spec is None or self._spec.theory is None or config is None:
            return {}
        return dict(self._spec.theory(config))

    def _frame(self, which: str) -> pd.DataFrame:
        if which not in self._frames:
            from ._frames import frame

            self._frames[which] = frame(self._loaded, which)
        return self._frames[which]

    @property
    def events(self) -> pd.DataFrame:
        """One row per log line, in time order, indexed by line number: the contract's fields
        (ts, actor, pid, seq, event, and step in a virtual run), then every other field."""
        return self._frame("events")

    @property
    def ops(self) -> pd.DataFrame:
        """One row per operation on a primitive: actor, prim, kind, op, invoke_ts, end_ts,
        wait_s, wait_sim_min, outcome (ok, timeout, fail, pending), blocking, item, value and
        the line numbers of its two halves; in order of invoke time."""
        return self._frame("ops")

    @property
    def holds(self) -> pd.DataFrame:
        """Who held (a unit of) which primitive from when to when, and why it ended (``cut``:
        empty when released, ``ended``, ``died`` or ``log``)."""
        return self._frame("holds")

    @property
    def states(self) -> pd.DataFrame:
        """Each actor's state intervals: state (waiting, parked, ...), category (wait, hold,
        domain, run, done, new), detail, start_ts, end_ts, duration_s."""
        return self._frame("states")

    @_spoken
    def plot(self, path: str | Path) -> Path:
        """Draw the run (PNG or SVG by the suffix): gauges, what each actor did, waits."""
        from .plot import plot

        target = Path(path)
        plot(self._loaded, target)
        return target

    def __repr__(self) -> str:
        title = self._title()
        return f"<Run {title} {self.status} {self.dir}>"

    def _title(self) -> str:
        return self._loaded.title

    def _repr_html_(self) -> str:
        from ._display import png_of, run_html

        if self._png is None:
            self._png = png_of(lambda path: self.plot(path))
        return run_html(
            title=self._title(),
            status=self.status,
            where=str(self.dir),
            metrics=self._report.metrics,
            declared=self._spec.metrics if self._spec is not None else (),
            theory=self.theory,
            verdicts=self._report.verdicts,
            png=self._png,
        )


# -- sweeps ------------------------------------------------------------------------------


def _axes(grid: Mapping[str, Any] | None) -> list[Any]:
    from ._sweep.grid import Axis, parse_axis

    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise ConfigError("the grid maps dotted keys to lists of values", source="grid")
    axes = []
    for key, values in grid.items():
        if isinstance(values, str):
            axes.append(parse_axis(f"{key}={values}"))  # "range(6,17,2)" and the like
            continue
        try:
            listed = list(values)
        except TypeError:
            listed = [values]
        if not listed:
            raise ConfigError("the axis has no values", source="grid", key=str(key))
        axes.append(Axis(str(key), tuple(listed)))
    return axes


@_spoken
def sweep(
    config: str | Path | Mapping[str, Any] | RunConfig[Any] | None,
    grid: Mapping[str, Any] | None = None,
    *,
    repeat: int | None = None,
    jobs: int | None = None,
    executor: str | Executor | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    set: Settings = None,
    seed: int | None = None,
    zip: bool = False,
    scheduler: str | None = None,
    shared_out: bool = False,
    progress: bool = False,
) -> Sweep:
    """Run a scenario over a grid of parameters and return the :class:`Sweep`.

    ``grid`` maps dotted keys to lists of values (``{"params.cars": [6, 10, 14]}``; a string
    such as ``"range(6,17,2)"`` works too); without it, the config's ``[sweep]`` table.
    ``repeat`` runs each point that often (default 1, or the table's), each with its own
    derived seed; ``jobs`` runs at a time (default 1). ``executor`` is ``"local"`` (child
    processes), ``"dask"`` (``scheduler`` for an existing cluster) or your own object with
    ``async run(task) -> Outcome``. ``resume`` finishes the sweep in that directory (give
    ``config=None``). A failing run is recorded and the sweep goes on.
    """
    from ._sweep import load_plan, plan_sweep

    for name, number in (("jobs", jobs), ("repeat", repeat)):
        if number is not None and (not isinstance(number, int) or number < 1):
            raise ConfigError(f"must be an int >= 1, got {number!r}", source=name)
    if resume is not None:
        if config is not None or grid:
            raise ConfigError("resume takes the sweep directory alone", source="resume")
        # The resumed sweep runs as planned: its seeds, repetitions and settings are recorded.
        changed = [name for name, given in (("--repeat", repeat is not None), ("-s", bool(set)),
                   ("--seed", seed is not None), ("--zip", zip)) if given]  # fmt: skip
        if changed:
            raise ConfigError(f"{', '.join(changed)} cannot change a sweep that is resumed: it "
                              "finishes as it was planned (see its sweep.json)",
                              source="--resume")  # fmt: skip
        plan = load_plan(Path(resume))
    else:
        if config is None:
            raise ConfigError("give a config, or resume=DIR", source="sweep")
        base = _config(config, set, None)
        plan = plan_sweep(base, axes=_axes(grid), repeat=repeat, zipped=zip, seed=seed,
                          out=Path("logs") if out is None else Path(out))  # fmt: skip
    outcome = _isolated.call(_sweep_here, plan, jobs, executor or ("dask" if scheduler else None),
                             scheduler, shared_out, progress, resume is not None)  # fmt: skip
    return Sweep(plan, outcome)


def _sweep_here(
    plan: SweepPlan,
    jobs: int | None,
    executor: str | Executor | None,
    scheduler: str | None,
    shared_out: bool,
    progress: bool,
    resume: bool,
) -> SweepOutcome:
    from ._sweep import run_sweep

    return run_sweep(plan, jobs=jobs, console=_console() if progress else None, resume=resume,
                     executor=executor, scheduler=scheduler, shared_out=shared_out)  # fmt: skip


class _Runs(Sequence[Run]):
    """A sweep's runs, in results order, each replayed when first asked for (by position or
    by its name, ``p000-r0``)."""

    def __init__(self, dirs: list[tuple[str, Path | None]], scenario: str | None) -> None:
        self._dirs = dirs
        self._scenario = scenario
        self._opened: dict[int, Run] = {}

    def __len__(self) -> int:
        return len(self._dirs)

    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Run]: ...
    def __getitem__(self, index: int | slice) -> Run | Sequence[Run]:
        if isinstance(index, slice):
            return [self._open(i) for i in range(len(self._dirs))[index]]
        return self._open(range(len(self._dirs))[index])

    def __iter__(self) -> Iterator[Run]:
        return (self._open(i) for i in range(len(self._dirs)))

    def named(self, name: str) -> Run:
        """The run called ``name`` (the ``run`` column of ``results``)."""
        for i, (known, _) in enumerate(self._dirs):
            if known == name:
                return self._open(i)
        raise KeyError(name)

    def _open(self, index: int) -> Run:
        if index not in self._opened:
            name, folder = self._dirs[index]
            if folder is None:
                raise ReplayError(f"run {name} left no run directory (it could not start)")
            # The user named this scenario when starting the sweep: it is read with its own
            # analysis and checks, whatever form it has.
            self._opened[index] = replay(folder, scenario=self._scenario)
        return self._opened[index]


class Sweep:
    """A finished sweep: ``results`` (one row per run, as results.csv), ``summary`` (one row
    per point: mean, standard deviation and 95 % CI of every metric, and the model's values,
    as summary.csv) and ``runs``, to open any run."""

    def __init__(self, plan: SweepPlan, outcome: SweepOutcome) -> None:
        self._plan = plan
        self._outcome = outcome
        self._png: str | None = None

    @property
    def dir(self) -> Path:
        return self._outcome.sweep_dir

    @property
    def exit_code(self) -> int:
        """What ``python -m sim sweep`` exits with: 0 every run ok, 1 some failed, 130."""
        return self._outcome.exit_code

    @property
    def ok(self) -> bool:
        return self._outcome.exit_code == 0

    @property
    def axes(self) -> list[str]:
        return [axis.key for axis in self._plan.grid.axes]

    @property
    def progress(self) -> tuple[int, int]:
        """How many of the planned runs completed ok, and how many were planned: an
        interrupted sweep's ``(4, 6)`` is what ``resume`` has left to do."""
        done = sum(1 for row in self._outcome.rows if row.get("status") == "ok")
        return done, len(self._plan.tasks)

    @functools.cached_property
    def results(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self._outcome.rows, columns=_columns(self._outcome.rows))

    @functools.cached_property
    def summary(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self._outcome.summary, columns=_columns(self._outcome.summary))

    @functools.cached_property
    def runs(self) -> _Runs:
        """Every run, replayed on first use: ``sweep.runs[0]``, ``sweep.runs.named("p001-r2")``."""
        dirs = [(str(row["run"]), Path(row["run_dir"]) if row.get("run_dir") else None)
                for row in self._outcome.rows]  # fmt: skip
        scenario = self._scenario_name()
        return _Runs(dirs, scenario)

    def _scenario_name(self) -> str | None:
        from ._sweep.runner import plan_config

        origin = plan_config(self._plan).origin
        if origin is None:
            return None
        return str(origin.path) if origin.form == "file" else origin.name

    @_spoken
    def plot(self, metric: str, path: str | Path | None = None, *, heatmap: bool = False) -> Path:
        """Draw ``metric`` against the first axis, with the model's values where there are
        any (or a heatmap of two axes); PNG or SVG, by default ``<dir>/<metric>.png``."""
        from ._sweep import plot_sweep

        return plot_sweep(self._plan, self._outcome.summary, metric,
                          path=None if path is None else Path(path), heatmap=heatmap)  # fmt: skip

    def _declared(self) -> Sequence[Any]:
        from ._sweep.runner import plan_config

        return _scenario.of(plan_config(self._plan)).metrics

    def __repr__(self) -> str:
        return f"<Sweep {self._plan.scenario} {len(self._outcome.rows)} runs {self.dir}>"

    def _repr_html_(self) -> str:
        from ._display import png_of, sweep_html
        from ._sweep import drawable

        declared = self._declared()
        if self._png is None:
            summary = self._outcome.summary
            # What a plot can draw: a metric some run measured, one the model predicts first.
            measured = [m.key for m in drawable(declared, summary)]
            modelled = [k for k in measured if any(row.get(f"theory_{k}") is not None
                                                   for row in summary)]  # fmt: skip
            chosen = (modelled or measured or [""])[0]
            self._png = png_of(lambda path: self.plot(chosen, path)) if chosen else ""
        return sweep_html(
            title=f"{self._plan.scenario} sweep: {len(self._outcome.rows)} runs",
            where=str(self.dir),
            axes=self.axes,
            summary=self._outcome.summary,
            declared=declared,
            png=self._png,
        )


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    # The union of the rows' columns in first-seen order: what write_table puts in the CSV.
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)
