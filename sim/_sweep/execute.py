"""The execution layer of a sweep: run one task (a point and a repetition), report its outcome.

The interface is deliberately small, so that a distributed engine can take over when a sweep
outgrows one machine: anything with ``async run(task) -> Outcome`` will do. The default runs each
task as a full, normal ``python -m sim run`` in a child process: real processes, its own run
directory, nothing shared with the sweep but the files it writes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.streams.text import TextReceiveStream

from .grid import Point

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


def outcome_from_run_dir(task: Task, run_dir: Path, exit_code: int | None) -> Outcome:
    """Read a finished run's manifest into an Outcome."""
    try:
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Outcome(task, "error", exit_code, run_dir, error=f"unreadable run.json: {exc}")
    status = str(manifest.get("status", "error"))
    if status == "running":
        status = "interrupted"  # the run never finished its manifest
    return Outcome(
        task,
        status,
        exit_code,
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
    """Runs tasks as ``python -m sim run`` child processes on this machine."""

    def __init__(self, config: Path, overrides: list[str]) -> None:
        self._config = config
        self._overrides = overrides

    def command(self, task: Task) -> list[str]:
        sets = [arg for ov in [*self._overrides, *task.point.overrides] for arg in ("-s", ov)]
        return [sys.executable, "-m", "sim", "run", str(self._config), *sets,
                "--seed", str(task.seed), "--out", str(task.out), "--quiet"]  # fmt: skip

    async def run(self, task: Task) -> Outcome:
        task.out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        process = await anyio.open_process(
            self.command(task), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        stderr = ""
        try:
            assert process.stderr is not None
            async for chunk in TextReceiveStream(process.stderr):
                stderr += chunk
            code = await process.wait()
        except BaseException:
            # Ctrl-C or a stop of the sweep: let the run stop cleanly (it marks its manifest
            # interrupted), and only then give up on it.
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
                    with anyio.move_on_after(_STOP_GRACE_S):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
            raise
        finally:
            await process.aclose()
        elapsed = time.monotonic() - started
        run_dir = latest_run_dir(task.out)
        if run_dir is None:
            last = stderr.strip().splitlines()[-1:] or [f"exit code {code}"]
            return Outcome(task, "error", code, None, elapsed_s=elapsed, error=last[0])
        outcome = outcome_from_run_dir(task, run_dir, code)
        outcome.elapsed_s = elapsed
        return outcome
