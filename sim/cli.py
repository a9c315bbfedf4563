"""The command line: ``python -m sim run|replay|sweep|explore|check|list|new``, a thin layer over
the Python API (sim.api): it parses arguments, calls the same functions and prints.

Human output (progress, tables, errors) goes to stderr; what a script reads (the run directory,
``--json`` summaries) goes to stdout. Exit codes: 0 done and every invariant held, 1 the run
failed, 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape

from . import api
from . import scenario as _scenario
from ._console import console
from ._signals import sigterm_as_ctrl_c
from .config import bundled_configs, load_config
from .errors import ConfigError, ReplayError, ScenarioError, SimError, StorageError
from .report import print_summary

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Run IPC scenarios as real OS processes and log every operation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario config", description="Run a scenario.")
    run.add_argument("config", metavar="CONFIG", help="a TOML file, or a bundled name (carpark)")
    run.add_argument(
        "-s",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. -s params.cars=400 (repeatable)",
    )
    run.add_argument(
        "--seed",
        type=int,
        help="seed for every actor's RNG (default: the config's seed, else random)",
    )
    run.add_argument(
        "--out", type=Path, default=Path("logs"), help="where run directories go (default: logs)"
    )
    run.add_argument("--quiet", action="store_true", help="no live view and no summary")
    run.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    run.add_argument(
        "--schedule", type=Path, metavar="FILE",
        help="replay a virtual run's schedule.json exactly (implies clock.mode=virtual and "
        "the schedule's seed)",
    )  # fmt: skip

    check = sub.add_parser("check", help="validate a config without running it",
                           description="Validate a config (and its overrides) without running "
                           "it: exit 0 and 'ok', or 2 and what is wrong.")  # fmt: skip
    check.add_argument("config", metavar="CONFIG", help="a TOML file, or a bundled name")
    check.add_argument("-s", "--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config value, as run does "
                       "(repeatable)")  # fmt: skip

    replay = sub.add_parser(
        "replay",
        help="rebuild a run from its log: metrics, invariant checks",
        description="Read a run back from its events file, without re-running anything.",
    )
    replay.add_argument("run", metavar="RUN", type=Path, help="a run directory or its events file")
    replay.add_argument("--check", action="store_true",
                        help="exit as the run would with these verdicts: 1 if an invariant is "
                        "violated (or it timed out), 130 if it was interrupted")  # fmt: skip
    replay.add_argument("--json", action="store_true", help="print metrics and verdicts as JSON")
    replay.add_argument(
        "--speed", type=float, metavar="X",
        help="replay the run live in the terminal at X times its speed",
    )  # fmt: skip
    replay.add_argument(
        "--play", action="store_true",
        help="play the run in the terminal: pause, step forward and back, seek, follow an actor",
    )  # fmt: skip
    replay.add_argument(
        "--export", nargs=2, metavar=("FORMAT", "PATH"), action="append", default=[],
        help="write chrome (Perfetto/chrome://tracing JSON), csv (one row per operation) or "
        "html (one self-contained page to replay the run in a browser, offline)",
    )  # fmt: skip
    replay.add_argument("--plot", type=Path, metavar="PATH", help="draw the run (PNG or SVG)")
    replay.add_argument(
        "--scenario", metavar="SCENARIO",
        help="read the log with this scenario (a name, a file or a dotted module): a file or "
        "module that only the log names is never imported without it",
    )  # fmt: skip

    sweep = sub.add_parser(
        "sweep",
        help="run a scenario over a grid of parameters",
        description="Run a scenario over a grid of parameters, with repetitions, and tabulate.",
        epilog="Values: v1,v2,... | range(start,stop[,step]) | linspace(a,b,n). "
        "Without -p, the axes come from the config's [sweep] table.",
    )
    sweep.add_argument("config", metavar="CONFIG", nargs="?", help="a TOML file or bundled name")
    sweep.add_argument(
        "-p", "--param", dest="axes", action="append", default=[], metavar="KEY=VALUES",
        help="an axis, e.g. -p params.cars=100,200,300 (repeatable)",
    )  # fmt: skip
    sweep.add_argument("-s", "--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="a fixed override for every run")  # fmt: skip
    sweep.add_argument("--repeat", type=int, help="runs per point (default 1, or [sweep] repeat)")
    sweep.add_argument("--zip", action="store_true", help="pair the axes instead of crossing them")
    sweep.add_argument(
        "--jobs", type=int,
        help="runs at a time (default 1: runs that share the 2 cores distort each other's "
        "timing; with --scheduler, every thread of the cluster's workers)",
    )  # fmt: skip
    sweep.add_argument(
        "--executor", choices=("local", "dask"),
        help="local: child processes (default); dask: a Dask LocalCluster of --jobs worker "
        "processes, or the cluster at --scheduler (needs pip install -e '.[dask]')",
    )  # fmt: skip
    sweep.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT",
        help="run on this Dask cluster (its workers need sim installed); implies --executor dask",
    )  # fmt: skip
    sweep.add_argument(
        "--shared-out", action="store_true",
        help="with dask: OUT is the same path on every worker (a shared file system), so runs "
        "write there instead of being shipped back",
    )  # fmt: skip
    sweep.add_argument("--seed", type=int, help="base seed of the derived run seeds (default: "
                       "the config's seed, else 0)")  # fmt: skip
    sweep.add_argument("--out", type=Path, default=Path("logs"), help="sweeps go to OUT/sweeps")
    sweep.add_argument("--resume", type=Path, metavar="DIR", help="finish an earlier sweep")
    sweep.add_argument("--quiet", action="store_true", help="no progress and no table")
    sweep.add_argument("--plot", metavar="METRIC", help="draw METRIC against the first axis")
    sweep.add_argument("--heatmap", action="store_true", help="with --plot: a heatmap of 2 axes")

    explore = sub.add_parser(
        "explore",
        help="search a config's schedules (virtual mode) for one that goes wrong",
        description="Run a config in virtual mode again and again, each time with another "
        "schedule, until an invariant is violated or a phenomenon shows; shrink that schedule "
        "and save it beside the run, so that `run --schedule` shows it again.",
    )
    explore.add_argument("config", metavar="CONFIG", help="a TOML file or bundled name")
    explore.add_argument("--runs", type=int,
                         help="schedules to try (default 100; with --strategy dfs 10,000, "
                         "enough to finish the bundled configs' bounds)")  # fmt: skip
    explore.add_argument(
        "--strategy", choices=("random", "pct", "dfs"), default="random",
        help="random schedules, PCT (probabilistic concurrency testing), or every schedule "
        "within --preemptions, depth first",
    )  # fmt: skip
    explore.add_argument(
        "--preemptions", type=int, default=2, metavar="K",
        help="dfs: the preemption bound; pct: the bug depth minus one (default 2)",
    )  # fmt: skip
    explore.add_argument("--max-steps", type=int, metavar="S",
                         help="stop a schedule after S steps (reported as timed out)")  # fmt: skip
    explore.add_argument(
        "-s", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value (repeatable)",
    )  # fmt: skip
    explore.add_argument("--seed", type=int, help="the actors' seed (default: the config's, or 0)")
    explore.add_argument("--out", type=Path, default=Path("logs"),
                         help="explorations go to OUT/explore (default: logs)")  # fmt: skip
    explore.add_argument(
        "--keep", action="store_true",
        help="keep every schedule's run directory, not only the failing one",
    )  # fmt: skip

    sub.add_parser("list", help="list the scenarios (bundled, installed, own) and configs",
                   description="List the scenarios sim can find (bundled, installed, and the "
                   "files beside configs here) and the bundled configs.")  # fmt: skip

    new = sub.add_parser(
        "new",
        help="write a scenario module and a config from a template",
        description="Write NAME.py (a scenario) and NAME.toml (a config that runs it), which "
        "run and pass as written; docs/authoring.md explains every part.",
    )
    new.add_argument("name", metavar="NAME", help="the scenario's name, a Python identifier")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write (default: .)")
    new.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sim``; returns the exit code."""
    args = _parser().parse_args(argv)
    err = console(stderr=True)
    try:
        # SIGTERM stops a command as Ctrl-C does (sim._signals): cleanup runs, exit 130.
        with sigterm_as_ctrl_c(), api._cli_spelling():
            code = _command(args, err)
    except BrokenPipeError:
        # Somewhere no command expected it: the reader has gone, and the outcome with it.
        _reader_gone()
        return EXIT_FAILED
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_gone()
    return code


def _reader_gone() -> None:
    """The reader of stdout went away (``sim list | head -1``): what is left to print has
    nowhere to go, and Python's own flush at exit must not fail on it again. No failure of
    the command: it exits with what it came to (the README's exit codes)."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _emit(text: object) -> None:
    """A line on stdout, for a script to read; a reader that has gone is no error."""
    try:
        print(text)
    except BrokenPipeError:
        _reader_gone()


def _command(args: argparse.Namespace, err: Console) -> int:
    try:
        if args.command == "run":
            return _run(args, err)
        if args.command == "check":
            return _check(args, err)
        if args.command == "replay":
            return _replay(args, err)
        if args.command == "sweep":
            return _sweep(args, err)
        if args.command == "explore":
            return _explore(args, err)
        if args.command == "new":
            return _new(args, err)
        return _list()
    except (ConfigError, ScenarioError, ReplayError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return EXIT_USAGE
    except SimError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        if exc.run_dir is not None:
            _emit(exc.run_dir)  # a run that failed is still a run: its path, as always
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, err: Console) -> int:
    if args.seed is not None and args.seed < 0:
        raise ConfigError("must be >= 0", source="--seed")
    finished = api.run(args.config, set=args.overrides, seed=args.seed, out=args.out,
                       progress=not args.quiet, schedule=args.schedule)  # fmt: skip
    if args.json:
        _emit((finished.dir / "run.json").read_text(encoding="utf-8"))
    else:
        _emit(finished.dir)
    return finished.exit_code


def _explore(args: argparse.Namespace, err: Console) -> int:
    from .explore import default_runs, explore, report

    for flag, value, least in (
        ("--runs", args.runs, 1),
        ("--preemptions", args.preemptions, 0),
        ("--max-steps", args.max_steps, 1),
        ("--seed", args.seed, 0),
    ):
        if value is not None and value < least:
            raise ConfigError(f"must be >= {least}", source=flag)  # fmt: skip
    runs = args.runs if args.runs is not None else default_runs(args.strategy)
    progress = _Progress(err, runs)
    try:
        result = explore(
            args.config,
            overrides=args.overrides,
            seed=args.seed,
            runs=runs,
            strategy=args.strategy,
            preemptions=args.preemptions,
            max_steps=args.max_steps,
            out=args.out,
            keep=args.keep,
            on_run=progress,
        )
    finally:
        progress.done()  # the report (or "interrupted") starts a line of its own
    report(err, result)
    if result.found is not None:
        _emit(result.found.shrunk or result.found.schedule)
        return EXIT_FAILED
    _emit(result.out)
    return EXIT_OK


class _Progress:
    """The schedules run so far: a line rewritten in place on a terminal; elsewhere (a log, a
    CI job) a line at every tenth of the total, so a long search still shows it is going."""

    def __init__(self, console: Console, total: int) -> None:
        self._console = console
        self._total = total
        self._every = max(1, -(-total // 10))

    def __call__(self, n: int) -> None:
        if self._console.is_terminal:
            self._console.file.write(f"\rschedule {n}/{self._total}")
            self._console.file.flush()
        elif n % self._every == 0 or n == self._total:
            self._console.file.write(f"schedule {n}/{self._total}\n")

    def done(self) -> None:
        if self._console.is_terminal:
            self._console.file.write("\r\033[K")


_EXPORTS = ("chrome", "csv", "html")


def _check_outputs(args: argparse.Namespace) -> None:
    """What replay is asked to write, checked before it reads the log: a bad format or a
    folder that is not there is said at once, not after the summary (or as a traceback)."""
    targets: list[tuple[str, Path]] = []
    for fmt, target in args.export:
        if fmt not in _EXPORTS:
            raise ConfigError(f"unknown format {fmt!r}; one of: {', '.join(_EXPORTS)}",
                              source="--export")  # fmt: skip
        targets.append(("--export", Path(target)))
    if args.plot is not None:
        if args.plot.suffix.lower() not in (".png", ".svg"):
            raise ConfigError("the picture must be a .png or .svg file", source="--plot")
        targets.append(("--plot", args.plot))
    for option, path in targets:
        folder = path.parent
        if path.is_dir():
            raise ConfigError(f"{path} is a directory; give a file name", source=option)
        if not folder.is_dir():
            why = "is not a directory" if folder.exists() else "does not exist"
            raise ConfigError(f"cannot write {path}: the folder {folder} {why}", source=option)
    if args.speed is not None and args.speed <= 0:
        raise ConfigError("must be > 0", source="--speed")


def _replay(args: argparse.Namespace, err: Console) -> int:
    from .report import print_findings

    _check_outputs(args)
    replayed = api.replay(args.run, scenario=args.scenario)
    loaded, report, spec = replayed._loaded, replayed._report, replayed._spec
    recorded = (loaded.manifest or {}).get("status", "unknown")
    # What the run comes to, as the API says it: the verdicts, unless it was stopped.
    verdict = replayed.status
    print_findings(err, loaded.findings, loaded.events_path)

    def summary() -> None:
        print_summary(
            err,
            title=f"{loaded.title} (replayed; recorded status: {recorded})",
            metrics=report.metrics,
            declared=spec.metrics if spec is not None else (),
            verdicts=report.verdicts,
            status=verdict,
            reason=replayed.reason,
            wall_s=_wall_s(loaded.manifest, loaded.config, report.history),
            run_dir=str(loaded.run_dir or loaded.events_path),
            timing=report.timing,
            theory=spec.theory(loaded.config) if spec and spec.theory and loaded.config else None,
        )

    # --check: what the run would exit with, its verdicts recomputed (an interrupted run's log
    # is incomplete however its checks came out: 130, as sim.replay's exit_code says).
    code = replayed.exit_code if args.check else EXIT_OK
    # Played, the run keeps its ending for the end: the summary would give it away.
    playing = args.play or args.speed is not None
    if not playing:
        summary()
    try:
        _replay_outputs(args, loaded, err)
    except BrokenPipeError:
        # The timeline or an export to stdout was piped into a reader that has read enough
        # (`| head`): playing on, to nobody, would take the rest of the run's time. The
        # verdicts still go where the human reads them.
        _reader_gone()
        if playing:
            summary()
        return code
    if playing:
        summary()
    if args.json:
        _emit(msgspec.json.encode({
            "metrics": report.metrics,
            "invariants": report.verdicts,
            "findings": report.findings,
        }).decode())  # fmt: skip
    return code


def _wall_s(manifest: Mapping[str, Any] | None, config: Any, history: Any) -> float | None:
    """The run's wall time: the manifest's, or (no run.json, or an engine killed before it
    wrote its end) the time of the log's last line, which counts wall seconds from the start
    in a wall-clock run; None if neither says (a virtual run's times are its own)."""
    recorded = _number((manifest or {}).get("wall_s"))
    if recorded > 0:
        return recorded
    if history is None or config is None or config.clock.mode != "wall":
        return None
    return float(history.now)


def _number(value: object) -> float:
    """A number from a manifest that may have been edited by hand (0.0 if it is none)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _replay_outputs(args: argparse.Namespace, loaded: Any, err: Console) -> None:
    """--export, --plot and --speed: each reads the log again, streaming."""
    try:
        _write_outputs(args, loaded, err)
    except BrokenPipeError:
        raise  # a reader that has gone (stdout as the target), not a storage failure
    except OSError as exc:
        # Checked up front, a target can still fail to be written (no permission, disk full).
        raise StorageError(f"{exc.filename}: {exc.strerror or exc}") from exc
    _play(args, loaded)


def _write_outputs(args: argparse.Namespace, loaded: Any, err: Console) -> None:
    for fmt, target in args.export:
        path = Path(target)
        if fmt == "chrome":
            from .export.chrome import export_chrome

            written = export_chrome(loaded, path)
            err.print(
                f"chrome trace: {escape(str(path))} ({written:,} trace events; "
                "open in ui.perfetto.dev)"
            )
        elif fmt == "csv":
            from .export.csv import export_csv

            rows = export_csv(loaded, path)
            err.print(f"csv: {escape(str(path))} ({rows:,} operations)")
        elif fmt == "html":
            from .export.html import export_html

            steps = export_html(loaded, path)
            err.print(f"html: {escape(str(path))} ({steps:,} steps; open it in a browser)")
    if args.plot is not None:
        from .plot import plot

        plot(loaded, args.plot)
        err.print(f"plot: {escape(str(args.plot))}")


def _play(args: argparse.Namespace, loaded: Any) -> None:
    if args.play:
        from .play import play_interactive

        play_interactive(loaded, speed=args.speed or 1.0)
    elif args.speed is not None:
        from .player import play

        # The timeline is what a script reads off a pipe: stdout, like every such output.
        play(loaded, console(stderr=False), args.speed)


def _sweep(args: argparse.Namespace, err: Console) -> int:
    from ._sweep import parse_axis

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError("must be >= 1", source="--jobs")
    if args.repeat is not None and args.repeat < 1:
        raise ConfigError("must be >= 1", source="--repeat")
    # A scheduler address says where to run: --executor dask need not be typed as well.
    executor = args.executor or ("dask" if args.scheduler else "local")
    if args.resume is not None and (args.config or args.axes):
        raise ConfigError("--resume takes the sweep directory alone", source="--resume")
    if args.resume is None and args.config is None:
        raise ConfigError("give a CONFIG, or --resume DIR", source="sweep")
    if args.heatmap and args.plot is None:
        raise ConfigError("draws the metric of --plot: give --plot METRIC too", source="--heatmap")
    axes = [parse_axis(text) for text in args.axes]
    seen: set[str] = set()
    for axis in axes:
        if axis.key in seen:
            # The grid is a mapping: the second -p would silently replace the first.
            raise ConfigError("this axis is given twice", source="-p", key=axis.key)
        seen.add(axis.key)
    if args.plot is not None:
        # Checked before hours of runs, not after them (a resumed sweep's too).
        if args.resume is not None:
            from ._sweep.runner import load_plan, plan_config

            spec = _scenario.of(plan_config(load_plan(args.resume)))
        else:
            spec = _scenario.of(load_config(args.config, args.overrides, via="-s"))
        _check_metric(spec, args.plot)
    done = api.sweep(
        args.config, {axis.key: list(axis.values) for axis in axes} or None,
        repeat=args.repeat, jobs=args.jobs, executor=executor, out=args.out, resume=args.resume,
        set=args.overrides, seed=args.seed, zip=args.zip, scheduler=args.scheduler,
        shared_out=args.shared_out, progress=not args.quiet,
    )  # fmt: skip
    code = done.exit_code
    if args.plot is not None:
        try:
            done.plot(args.plot, heatmap=args.heatmap)
        except ConfigError as exc:
            # The sweep happened: a picture it cannot give does not hide where it is or how
            # its runs ended (a failed or interrupted sweep keeps its own exit code).
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            code = code or EXIT_USAGE
        else:
            if not args.quiet:
                err.print(f"plot: {escape(str(done.dir / (args.plot + '.png')))}")
    if done.exit_code == EXIT_INTERRUPTED:
        finished, planned = done.progress
        left = (f"; finish the sweep with: python -m sim sweep --resume "
                f"{escape(shlex.quote(str(done.dir)))}" if finished < planned else "")  # fmt: skip
        err.print(f"interrupted: {finished} of {planned} runs done{left}", soft_wrap=True)
    _emit(done.dir)
    return code


def _check_metric(spec: _scenario.Scenario[Any], metric: str | None) -> None:
    """A ``--plot`` metric must be one a sweep of the scenario can draw: checked before hours
    of runs, not after them, against the list the plot itself is checked against."""
    if metric is None:
        return
    from ._sweep import check_metric

    check_metric(spec.metrics, metric)


def _check(args: argparse.Namespace, err: Console) -> int:
    config = load_config(args.config, args.overrides, via="-s")
    from .runtime.engine import plan

    # The same plan a run makes: a duplicate actor name is found here, not at run time.
    planned = plan(config, _scenario.of(config))
    kinds = ", ".join(f"{n} ({p.kind})" for n, p in planned.prims.items()) or "none"
    grid = ""
    if config.sweep:
        # The [sweep] table is checked as `sim sweep` would, every point of it: a bad axis is
        # found now, not after the first hour of runs.
        from ._sweep.runner import check_table

        swept = check_table(config)
        if swept is None:
            grid = "; \\[sweep] table without axes (give them with sim sweep -p)"
        else:
            runs = len(swept.points) * swept.repeat
            grid = f"; sweep of {len(swept.points)} points x {swept.repeat} = {runs} runs"
    err.print(
        f"[green]ok[/] {escape(str(config.source))}: scenario {config.scenario}, "
        f"{len(planned.actors)} actors, primitives {kinds}{grid}",
        soft_wrap=True,
    )
    _emit(msgspec.json.encode(config.to_dict()).decode())
    return EXIT_OK


def _list() -> int:
    from ._lookup import catalogue

    lines: list[tuple[str, str, str, str]] = []
    for found in catalogue():
        lines.append(("scenario", found.name, found.source, found.description))
    folder = bundled_configs()
    for path in sorted(folder.glob("*.toml")) if folder else []:
        try:
            config = load_config(path)
            what = config.heading
        except ConfigError as exc:
            what = f"(invalid: {exc.reason})"
        lines.append(("config", path.name, "bundled", what))
    width = max((len(name) for _, name, _, _ in lines), default=0)
    source = max((len(where) for _, _, where, _ in lines), default=0)
    _emit("\n".join(f"{kind:<9} {name:<{width}}  {where:<{source}}  {what}"
                     for kind, name, where, what in lines))  # fmt: skip
    return EXIT_OK


def _new(args: argparse.Namespace, err: Console) -> int:
    from ._new import write_template

    written = write_template(args.name, args.dir, force=args.force)
    _emit("\n".join(map(str, written)))
    config = written[-1]
    err.print(f"[green]written[/]: run it with python -m sim run {escape(str(config))}")
    return EXIT_OK
