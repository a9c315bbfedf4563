"""One run, end to end: config → actors → log → analysis → run.json and a summary."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from . import scenario as _scenario
from ._provenance import provenance
from .analysis import Report, analyse
from .config import RunConfig
from .errors import SimError, StorageError
from .live import LiveView
from .manifest import drop_reserve, exit_code, iso, reserve, versions, write_manifest
from .report import print_findings, print_summary
from .runtime.engine import Execution, execute, plan
from .virtual.cpu import claimed_cpu
from .virtual.schedule import Schedule

__all__ = ["CONFIG_COPY", "RunOutcome", "new_run_id", "run"]

#: The copy of the config's TOML text in the run directory.
CONFIG_COPY = "config.toml"


@dataclass(frozen=True)
class RunOutcome:
    """Where a run's files are, how it ended, and the exit code the CLI returns."""

    run_dir: Path
    status: str
    report: Report
    exit_code: int


def new_run_id(scenario: str) -> str:
    """``carpark-20261128T101500-ab12``: scenario, UTC start time, a short random suffix."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{scenario}-{stamp}-{secrets.token_hex(2)}"


def run(
    config: RunConfig[Any],
    out: Path,
    *,
    console: Console | None = None,
    schedule: Schedule | None = None,
) -> RunOutcome:
    """Run ``config`` into a new directory under ``out``; print progress and a summary to
    ``console`` (nothing when None). A virtual run follows ``schedule`` if given."""
    spec = _scenario.of(config)
    seed = config.seed if config.seed is not None else secrets.randbelow(2**32)
    run_dir = out / new_run_id(spec.name)
    display = None
    planned = plan(config, spec)
    prims = planned.described
    if console is not None and console.is_terminal and config.engine.live:
        display = LiveView(console, config.heading, config.clock.speedup, config)
    base: dict[str, Any] = {
        "run_id": run_dir.name,
        "status": "running",
        "source": str(config.source),
        "config": config.resolved(seed),
        "seed": seed,
        "start_method": config.engine.start_method,
        "versions": versions(),
        "started_at": iso(time.time()),
        "primitives": prims,
        # The config's text exactly as read (also copied to config.toml beside the log) and
        # the overrides on top of it: with provenance, what it takes to run it again.
        "config_text": config.text,
        "overrides": list(config.overrides),
        "provenance": provenance(config.origin),
    }
    listening: dict[str, Any] = {}

    def started(info: dict[str, Any]) -> None:
        # The manifest exists from the moment actors may start: a run whose engine is killed
        # stays marked "running", never passes for complete.
        listening.update(info)
        if config.text:
            (run_dir / CONFIG_COPY).write_bytes(config.text.encode("utf-8"))
        try:
            write_manifest(run_dir, base | {"coordinator": info})
        except OSError as exc:
            raise StorageError(f"cannot write {run_dir / 'run.json'}: {exc.strerror or exc}; "
                               "the run was not started") from None  # fmt: skip
        # Room for the final manifest, in case the log fills the disk: about 100 bytes per
        # actor and a few KiB besides in practice, kept with a margin.
        reserve(run_dir, 16384 + 256 * len(planned.actors))

    try:
        pinned = config.clock.mode == "virtual" and config.engine.pin_cpu
        with claimed_cpu() if pinned else nullcontext() as cpu:
            execution = execute(planned, run_dir, display, seed=seed, on_started=started,
                                schedule=schedule, cpu=cpu)  # fmt: skip
        return _conclude(execution, config, spec, prims, run_dir, base, listening, console)
    except KeyboardInterrupt:
        # A stop the engine did not take (while it shut down, or during the analysis): what
        # is recorded says the run was stopped rather than "running" for ever.
        _mark_interrupted(run_dir, base)
        raise


def _conclude(
    execution: Execution,
    config: RunConfig[Any],
    spec: _scenario.Scenario[Any],
    prims: dict[str, Any],
    run_dir: Path,
    base: dict[str, Any],
    listening: dict[str, Any],
    console: Console | None,
) -> RunOutcome:
    """After the engine: the analysis, the final run.json and the summary."""
    try:
        report = analyse(
            execution.events_path,
            primitives=prims,
            actors=execution.actors,
            config=config,
            scenario=spec,
            expected=config.expect,
        )
    except SimError as exc:
        if execution.error is not None:
            # The log was cut short (a full disk): an analysis that cannot make sense of what
            # is left is no news; why the run failed is.
            _record(run_dir, base | {"status": "failed", "reason": str(execution.error),
                                     "ended_at": iso(execution.ended_at)})  # fmt: skip
            raise execution.error from None
        # The log is complete; only reading it failed (a scenario's analysis is broken). The
        # manifest says so rather than "running", and the error reaches the user.
        _record(run_dir, base | {"status": "failed", "reason": f"analysis: {exc}",
                                 "ended_at": iso(execution.ended_at)})  # fmt: skip
        raise
    theory = dict(spec.theory(config)) if spec.theory is not None else {}
    # The verdicts decide, so that replay reaches the same one from the log alone; only a stop
    # from outside (Ctrl-C, the timeout) or an engine error that cut the run short (a replayed
    # schedule that does not fit) overrides them.
    status = execution.status
    if execution.error is not None:
        status = "failed"
    elif status not in ("interrupted", "timeout"):
        status = "ok" if report.ok else "failed"
    manifest = base | {
        "status": status,
        "reason": execution.reason or report.reason,
        "started_at": iso(execution.started_at),
        "ended_at": iso(execution.ended_at),
        "wall_s": round(execution.wall_s, 6),
        "actors": {name: asdict(rec) for name, rec in execution.actors.items()},
        "coordinator": listening
        | {
            "refused": execution.counters.refused,
            "protocol_errors": execution.counters.protocol_errors,
            "lines": execution.extra_lines,
        },
        "events": report.events,
        "metrics": report.metrics,
        "theory": theory,
        "timing": report.timing,
        "invariants": [asdict(v) for v in report.verdicts],
        "findings": [asdict(f) for f in report.findings],
    }
    unrecorded = _record(
        run_dir,
        manifest,
        base
        | {key: manifest[key] for key in ("status", "reason", "started_at", "ended_at", "wall_s")},
    )
    if console is not None:
        # What replay would say about the log, the run says too: one line per finding.
        print_findings(console, report.findings, execution.events_path)
        print_summary(
            console,
            title=config.heading,
            metrics=report.metrics,
            declared=spec.metrics,
            verdicts=report.verdicts,
            status=status,
            reason=manifest["reason"],
            wall_s=execution.wall_s,
            run_dir=str(run_dir),
            timing=report.timing,
            theory=theory,
        )
    code = exit_code(status)
    if unrecorded is not None:
        # The user must hear both: why the run failed, and that run.json does not say so.
        why = f"{execution.error}; " if execution.error is not None else ""
        error = StorageError(f"{why}{unrecorded}")
        error.run_dir = run_dir
        raise error
    if execution.error is not None:
        # The run is recorded as failed; the user must hear why, and where it is.
        execution.error.run_dir = run_dir
        raise execution.error
    return RunOutcome(run_dir, status, report, code)


def _mark_interrupted(run_dir: Path, base: dict[str, Any]) -> None:
    """After a stop: if run.json still says "running", make it say "interrupted"; if the run
    was stopped before its actors could start (its folder made, no run.json yet), write one
    that says so, so that no folder is left that looks like a run and says nothing. A run.json
    that already says how the run ended is left alone."""
    if not run_dir.is_dir():
        return  # stopped before anything was made
    try:
        status = json.loads((run_dir / "run.json").read_bytes()).get("status")
    except FileNotFoundError:
        status = None
    except (OSError, ValueError, AttributeError):
        return
    if status is None:
        reason = "stopped before its actors started"
    elif status == "running":
        reason = "stopped while the run was ending, being analysed or recorded"
    else:
        return
    _record(run_dir, base | {"status": "interrupted", "reason": reason,
                             "ended_at": iso(time.time())})  # fmt: skip


def _record(
    run_dir: Path, manifest: dict[str, Any], short: dict[str, Any] | None = None
) -> str | None:
    """Write the final run.json; on a full disk, at least ``short`` (how the run ended).
    Returns None, or what could not be written, in words."""
    try:
        try:
            write_manifest(run_dir, manifest)
        except OSError:
            if short is None:
                raise
            write_manifest(run_dir, short | {"incomplete": "the disk was full: this manifest "
                                             "has no actors, metrics or verdicts"})  # fmt: skip
    except OSError as exc:
        return (f"cannot write {run_dir / 'run.json'}: {exc.strerror or exc} "
                '(it still says "running")')  # fmt: skip
    finally:
        drop_reserve(run_dir)
    return None
