"""Search the schedules of a virtual run for one that goes wrong: random, PCT or bounded DFS.

``explore`` runs the same config again and again in virtual mode, each time with another
schedule, through the very engine ``run`` uses (the same real processes on the same real
primitives). It stops at the first schedule where an invariant is violated or a phenomenon
shows (a deadlock, lost updates, an underflow): whether the config declares it in ``expect``
or not, finding it is what exploring is for, and the report says which it was. It then
shrinks that schedule, trying the same run with fewer preemptions, and keeps the smallest one
that still goes wrong beside it, so that ``run --schedule`` shows it again, step by step.

Strategies (Loom, Shuttle and CHESS search schedules of threads this way):

* ``random``: a new scheduling seed per run (the actors' own random draws stay the same);
* ``pct``: probabilistic concurrency testing, ``--preemptions`` priority changes per run;
* ``dfs``: every schedule with at most ``--preemptions`` preemptions, depth first. A choice
  among tasks whose next step touches nothing shared (a start, the end of a sleep) is never a
  branch: such steps commute with every other.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ._provenance import same_source
from ._runner import RunOutcome, run
from .config import RunConfig, load_config
from .errors import ConfigError
from .virtual.schedule import Schedule, load_schedule

__all__ = ["Exploration", "Found", "default_runs", "explore"]

Choice = tuple[list[str], list[str], str | None, str, dict[str, str]]


@dataclass
class Found:
    """The first schedule that went wrong, in words, and where its files are."""

    what: str
    declared: bool
    detail: str
    run_dir: Path
    schedule: Path
    preemptions: int
    steps: int
    shrunk: Path | None = None
    shrunk_preemptions: int | None = None
    shrunk_steps: int | None = None


@dataclass
class Exploration:
    """What an exploration did: schedules run, distinct ones, whether DFS finished."""

    config: str
    strategy: str
    # The -s overrides explored under: a schedule replays only on top of them (it carries
    # the seed itself).
    overrides: list[str] = field(default_factory=list)
    runs: int = 0
    distinct: int = 0
    complete: bool = False
    found: Found | None = None
    elapsed_s: float = 0.0
    out: Path = field(default_factory=Path)


def _preempts(choice: Choice) -> bool:
    """The choice switched away from a task that could have gone on (not to a local step)."""
    ready, local, last, chosen, _ = choice
    return (last is not None and chosen != last and last in ready and chosen not in local
            and last not in local)  # fmt: skip


def _preemptions(choices: Sequence[Choice]) -> int:
    return sum(1 for c in choices if _preempts(c))


def _went_wrong(outcome: RunOutcome) -> tuple[str, bool, str] | None:
    """(what, declared by the config, detail) of the first failed check or shown phenomenon."""
    for verdict in outcome.report.verdicts:
        if verdict.status in ("fail", "expected"):
            what = verdict.phenomenon or verdict.name
            return what, verdict.status == "expected", verdict.detail
    if outcome.status in ("failed", "timeout", "deadlock"):
        reason = str(_manifest(outcome.run_dir).get("reason", "")) or outcome.status
        return outcome.status, False, reason
    return None


def _manifest(run_dir: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _Runner:
    def __init__(self, name: str, overrides: list[str], seed: int | None, out: Path,
                 max_steps: int | None, keep: bool) -> None:  # fmt: skip
        self.name = name
        # The step limit is part of what a found schedule replays on (see explore).
        self.limits = [f"engine.max_steps={max_steps}"] if max_steps is not None else []
        self.overrides = [*overrides, "clock.mode=virtual", "engine.record_choices=true",
                          "engine.live=false", *self.limits]  # fmt: skip
        self.seed = seed
        self.out = out
        self.keep = keep
        self.runs = 0
        self.seen: set[tuple[str, ...]] = set()

    def config(self, extra: Sequence[str] = ()) -> RunConfig[Any]:
        return load_config(self.name, [*self.overrides, *extra], seed=self.seed, via="-s")

    def run(self, extra: Sequence[str] = (), schedule: Schedule | None = None
            ) -> tuple[RunOutcome, Schedule]:  # fmt: skip
        self.runs += 1
        outcome = run(self.config(extra), self.out, schedule=schedule)
        if outcome.status == "interrupted":
            # The run took the Ctrl-C (it watches for it while it runs): the search stops
            # with it, as any command does, rather than going on to the next schedule.
            self.discard(outcome)
            raise KeyboardInterrupt
        recorded = load_schedule(outcome.run_dir / "schedule.json")
        self.seen.add(tuple(t for t, _ in recorded.steps))
        return outcome, recorded

    def discard(self, outcome: RunOutcome) -> None:
        if not self.keep:
            shutil.rmtree(outcome.run_dir, ignore_errors=True)


def explore(
    name: str,
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    runs: int | None = None,
    strategy: str = "random",
    preemptions: int = 2,
    max_steps: int | None = None,
    out: Path = Path("logs"),
    keep: bool = False,
    console: Console | None = None,
    on_run: Callable[[int], None] | None = None,
) -> Exploration:
    """Explore up to ``runs`` schedules of config ``name`` (default: :func:`default_runs`);
    see the module's docstring."""
    if runs is None:
        runs = default_runs(strategy)
    started = time.monotonic()
    base = load_config(name, list(overrides), seed=seed, via="-s")  # validates before anything runs
    folder = out / "explore" / f"{Path(name).stem}-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the exploration's directory {folder}: "
                          f"{exc.strerror}", source="--out") from None  # fmt: skip
    runner = _Runner(name, list(overrides), base.seed if base.seed is not None else 0, folder,
                     max_steps, keep)  # fmt: skip
    try:
        with same_source():
            result = _search(name, runner, folder, strategy, runs, preemptions, on_run)
    except KeyboardInterrupt:
        if not keep:
            # Every run it made was to be thrown away (a stop between two runs can leave one
            # half removed): none of them is left.
            shutil.rmtree(folder, ignore_errors=True)
        raise
    result.elapsed_s = time.monotonic() - started
    # What a found schedule replays on top of: the step limit too, or the replay would go on
    # where the search's run was stopped.
    result.overrides = [*overrides, *runner.limits]
    if console is not None:
        report(console, result)
    return result


def default_runs(strategy: str) -> int:
    """How many schedules ``explore`` tries unless told: 100 random or pct ones; for ``dfs``
    10,000, so that a search of the bundled configs within their bound can finish (ordered
    philosophers with 2 preemptions: a few thousand) and a larger one still stops."""
    return 10_000 if strategy == "dfs" else 100


def _search(name: str, runner: _Runner, folder: Path, strategy: str, runs: int,
            preemptions: int, on_run: Callable[[int], None] | None) -> Exploration:  # fmt: skip
    result = Exploration(name, strategy, out=folder)
    found: tuple[RunOutcome, Schedule, tuple[str, bool, str]] | None = None
    if strategy == "dfs":
        found, result.complete = _dfs(runner, runs, preemptions, on_run)
    else:
        for i in range(runs):
            extra = [f"engine.schedule={strategy}", f"engine.schedule_seed={i}"]
            if strategy == "pct":
                extra.append(f"engine.pct_depth={preemptions + 1}")
            outcome, recorded = runner.run(extra)
            if on_run is not None:
                on_run(runner.runs)
            wrong = _went_wrong(outcome)
            if wrong is not None:
                found = (outcome, recorded, wrong)
                break
            runner.discard(outcome)
    result.runs, result.distinct = runner.runs, len(runner.seen)
    if found is not None:
        outcome, recorded, (what, declared, detail) = found
        choices = recorded.choices or []
        result.found = Found(what, declared, detail, outcome.run_dir,
                             outcome.run_dir / "schedule.json", _preemptions(choices),
                             len(recorded.steps))  # fmt: skip
        _shrink(runner, result.found, recorded, what)
    return result


def _dfs(runner: _Runner, limit: int, bound: int, on_run: Callable[[int], None] | None
         ) -> tuple[tuple[RunOutcome, Schedule, tuple[str, bool, str]] | None, bool]:  # fmt: skip
    """Depth first over the schedules with at most ``bound`` preemptions: each run forces a
    prefix of choices and goes on without preempting; its trace gives the next prefixes."""
    stack: list[list[str]] = [[]]
    tried: set[tuple[str, ...]] = set()
    while stack:
        if runner.runs >= limit:
            return None, False
        prefix = stack.pop()
        if tuple(prefix) in tried:
            continue
        tried.add(tuple(prefix))
        schedule = Schedule(steps=[(t, None) for t in prefix])
        outcome, recorded = runner.run(schedule=_loose(schedule))
        if on_run is not None:
            on_run(runner.runs)
        wrong = _went_wrong(outcome)
        if wrong is not None:
            return (outcome, recorded, wrong), False
        runner.discard(outcome)
        choices = recorded.choices or []
        taken = [c[3] for c in choices]
        for k in range(len(choices) - 1, len(prefix) - 1, -1):
            ready, local, last, chosen, prims = choices[k]
            if chosen in local:
                continue  # a local step: no branch here
            spent = _preemptions(choices[:k])
            for other in ready:
                # Operations on different primitives commute: running the other first leads
                # to a schedule equivalent to one that is explored anyway.
                if other == chosen or other in local or prims.get(other) != prims.get(chosen):
                    continue
                cost = 1 if last is not None and last in ready and other != last else 0
                if spent + cost <= bound:
                    stack.append([*taken[:k], other])
    return None, True


def _loose(schedule: Schedule) -> Schedule:
    """``schedule`` forced as far as it goes, then going on without preempting."""
    schedule.strict = False
    return schedule


def _shrink(runner: _Runner, found: Found, recorded: Schedule, what: str, budget: int = 40
            ) -> None:  # fmt: skip
    """Try to remove preemptions from the failing schedule, one at a time from the end, while
    it still goes wrong the same way; keep the smallest as ``schedule.min.json``."""
    best = recorded
    best_run: RunOutcome | None = None
    attempts = 0
    improved = True
    while improved and attempts < budget:
        improved = False
        choices = best.choices or []
        for k in range(len(choices) - 1, -1, -1):
            last = choices[k][2]
            if last is None or not _preempts(choices[k]):
                continue
            if attempts >= budget:
                break
            attempts += 1
            prefix = [c[3] for c in choices[:k]] + [last]
            outcome, trial = runner.run(schedule=_loose(Schedule([(t, None) for t in prefix])))
            wrong = _went_wrong(outcome)
            fewer = _preemptions(trial.choices or []) < _preemptions(choices)
            if wrong is not None and wrong[0] == what and fewer:
                if best_run is not None:
                    runner.discard(best_run)
                best, best_run, improved = trial, outcome, True
                break
            runner.discard(outcome)
    target = found.run_dir / "schedule.min.json"
    minimal = Schedule(best.steps, best.woke, best.policy, best.seed, best.scenario,
                       _preemptions(best.choices or []))  # fmt: skip
    minimal.write(target)
    found.shrunk = target
    found.shrunk_preemptions = minimal.preemptions
    found.shrunk_steps = len(best.steps)
    if best_run is not None:
        runner.discard(best_run)


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def report(console: Console, result: Exploration) -> None:
    """Print what ``result`` found, and how to see it again."""
    tried = (f"{_count(result.runs, 'schedule')} ({result.distinct} distinct) in "
             f"{result.elapsed_s:.1f} s")  # fmt: skip
    if result.found is None:
        console.print(f"[green]no failure[/] in {tried} of {escape(result.config)} "
                      f"({result.strategy})")  # fmt: skip
        if result.strategy == "dfs":
            console.print("every schedule within the preemption bound was explored" if
                          result.complete else "the run limit came first: not every schedule "
                          "within the bound was explored")  # fmt: skip
        return
    f = result.found
    kind = "as the config declares" if f.declared else "not declared by the config"
    console.print(f"[bold red]found {escape(f.what)}[/] ({kind}) after {tried}:")
    console.print(escape(f.detail), soft_wrap=True)
    # Paths are printed whole (soft_wrap), so that they can be copied from any terminal.
    console.print(f"run: {escape(str(f.run_dir))}  ({_count(f.steps, 'step')}, "
                  f"{_count(f.preemptions, 'preemption')})", soft_wrap=True)  # fmt: skip
    if f.shrunk is not None:
        console.print(f"shrunk to {_count(f.shrunk_preemptions or 0, 'preemption')}, "
                      f"{_count(f.shrunk_steps or 0, 'step')}: {escape(str(f.shrunk))}",
                      soft_wrap=True)  # fmt: skip
        again = ["python", "-m", "sim", "run", result.config]
        for item in result.overrides:
            again += ["-s", item]
        again += ["--schedule", str(f.shrunk)]
        console.print(f"again: {escape(shlex.join(again))}", soft_wrap=True)
