"""The execution layer of a sweep: run one task (a point and a repetition), report its outcome.

The interface is deliberately small, so that a distributed engine can take over when a sweep
outgrows one machine: anything with ``async run(task) -> Outcome`` will do. The default runs each
task as a full, normal ``python -m sim run`` in a child process (forked from a process that has
sim imported already): real processes, its own run directory, nothing shared with the sweep but
the files it writes.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sim.manifest import exit_code

from .grid import Point
from .zygote import Zygote, ZygoteGone

__all__ = ["Executor", "LocalExecutor", "Outcome", "Task", "outcome_from_run_dir"]

# How long a run gets to stop cleanly after the sweep forwards Ctrl-C to it.
_STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class Task:
    """One run of a sweep: ``point`` repeated for the ``rep``-th time with ``seed``."""

    name: str
    point: Point
    rep: int
    seed: int
    out: Path


@dataclass
class Outcome:
    """How a task ended: status as run.json says (ok, failed, interrupted, timeout) or
    ``error`` when the run could not even start (its stderr is kept in ``error``)."""

    task: Task
    status: str
    exit_code: int | None
    run_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    elapsed_s: float = 0.0
    error: str = ""


class Executor(Protocol):
    """Runs one task to its end."""

    async def run(self, task: Task) -> Outcome: ...


def latest_run_dir(folder: Path) -> Path | None:
    """The newest run directory in a task's folder (earlier attempts stay beside it)."""
    runs = sorted(p for p in folder.glob("*/run.json"))
    return max(runs, key=lambda p: p.stat().st_mtime).parent if runs else None


def outcome_from_run_dir(task: Task, run_dir: Path, code: int | None) -> Outcome:
    """Read a finished run's manifest into an Outcome. Without the process's own exit
    ``code`` (a run finished by an earlier, resumed sweep; one whose launcher went away), the
    code is the one its recorded status stands for: ``sim run`` exits with nothing else."""
    try:
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Outcome(task, "error", code, run_dir, error=f"unreadable run.json: {exc}")
    status = str(manifest.get("status", "error"))
    if status == "running":
        status = "interrupted"  # the run never finished its manifest
    return Outcome(
        task,
        status,
        exit_code(status) if code is None else code,
        run_dir,
        metrics=dict(manifest.get("metrics", {})) | _timing(manifest.get("timing")),
        wall_s=float(manifest.get("wall_s", 0.0)),
        error=str(manifest.get("reason", "")),
    )


def _timing(timing: Any) -> dict[str, Any]:
    """The run's timer lateness, as columns beside its metrics (see sim.timing)."""
    if not isinstance(timing, dict) or not timing.get("sleeps"):
        return {}
    return {"timer_late_ms": timing.get("late_mean_ms"), "timer_share": timing.get("share")}


class LocalExecutor:
    """Runs tasks on this machine, each a ``python -m sim run`` of its own: forked from one
    process that has imported sim once (:mod:`sim._sweep.zygote`), rather than started as a
    fresh interpreter. Use it as an async context manager (the sweep does)."""

    def __init__(self, config: Path, overrides: list[str]) -> None:
        self._config = config
        self._overrides = overrides
        self._zygote: Zygote | None = None
        self._stack = contextlib.AsyncExitStack()
        self._errors: Path | None = None

    def command(self, task: Task) -> list[str]:
        """The command line of ``task``'s run (what the zygote runs, and the Dask workers)."""
        return [sys.executable, "-m", "sim", *self._arguments(task)]

    def _arguments(self, task: Task) -> list[str]:
        sets = [arg for ov in [*self._overrides, *task.point.overrides] for arg in ("-s", ov)]
        return ["run", str(self._config), *sets, "--seed", str(task.seed), "--out",
                str(task.out), "--quiet"]  # fmt: skip

    async def __aenter__(self) -> LocalExecutor:
        self._errors = Path(
            self._stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-sweep-"))
        )
        self._zygote = await self._stack.enter_async_context(Zygote(warm=self._config))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._zygote = None
        await self._stack.aclose()

    async def run(self, task: Task) -> Outcome:
        assert self._zygote is not None, "use `async with LocalExecutor(...)`"
        assert self._errors is not None
        task.out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        # The run's stderr, kept out of its directory (which holds what the run wrote).
        errors = self._errors / f"{task.name.replace('/', '_')}.stderr"
        code: int | None
        try:
            _, code = await self._zygote.run(self._arguments(task), errors, _STOP_GRACE_S)
        except ZygoteGone:
            # Its exit is not known; its own manifest, if it wrote one, says how it ended.
            code = None
        stderr = errors.read_text(encoding="utf-8", errors="replace") if errors.is_file() else ""
        errors.unlink(missing_ok=True)
        elapsed = time.monotonic() - started
        run_dir = latest_run_dir(task.out)
        if run_dir is None:
            last = (["the sweep's run launcher exited"] if code is None else
                    stderr.strip().splitlines()[-1:] or [f"exit code {code}"])  # fmt: skip
            return Outcome(task, "error", code, None, elapsed_s=elapsed, error=last[0])
        outcome = outcome_from_run_dir(task, run_dir, code)
        outcome.elapsed_s = elapsed
        return outcome
