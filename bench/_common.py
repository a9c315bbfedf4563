"""Helpers shared by the benchmarks: run the real CLI, verify a run's log, print tables.

Every benchmark runs ``python -m sim run`` in a fresh subprocess (as a user would), with the
repository root on ``PYTHONPATH`` so that ``bench.flood`` can be imported by the engine and by
spawned actors alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
FLOOD_TOML = ROOT / "bench" / "flood.toml"
CARPARK_TOML = ROOT / "configs" / "carpark.toml"
ENGINE_ACTORS = ("engine", "coordinator")


def add_time_limit(parser: argparse.ArgumentParser, default: float) -> None:
    """The ``--time-limit`` option every benchmark has (see :func:`time_limit`)."""
    parser.add_argument(
        "--time-limit",
        type=float,
        default=default,
        metavar="S",
        help=f"stop after S seconds, killing everything this benchmark started "
        f"(default {default:g})",
    )


def time_limit(seconds: float) -> None:
    """Bound this benchmark's run time: after ``seconds`` every process it started (its
    descendants, by pid) is killed, it says so on stderr, and exits with status 124.

    A signal (SIGALRM) rather than a thread: several benchmarks fork, and forking a process
    with a second thread is what the engine refuses to do too."""

    def expire(signum: int, frame: object) -> None:
        killed = kill_descendants(os.getpid())
        print(
            f"\n# {Path(sys.argv[0]).name}: time limit of {seconds:g} s reached; killed "
            f"{killed} process(es) it had started",
            file=sys.stderr,
            flush=True,
        )
        os._exit(124)

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (from /proc's ppid links), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_descendants(root: int) -> int:
    """SIGKILL every process started by ``root`` (directly or not); how many were signalled.

    The whole tree is stopped first, so that no process can fork or be re-parented (and so
    escape) while the rest are being killed."""
    pids = _descendants(root)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own children; others are their parents'
    return len(pids)


def env() -> dict[str, str]:
    """The environment for a child run: the repository root importable, a wide terminal."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "COLUMNS": "200",
    }


def cpu_self_and_children() -> float:
    """User + system CPU seconds of this process and every descendant it has reaped."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass
class SimRun:
    """One run of the real engine (bench/_driver.py: what ``python -m sim run --quiet`` does)."""

    run_dir: Path
    exit_code: int
    wall_s: float  # the whole process: interpreter start-up, run, analysis, run.json
    exec_wall_s: float  # the engine phase alone (sim.runtime.engine.execute)
    exec_cpu_engine_s: float  # CPU of the engine process (engine + coordinator) in that phase
    exec_cpu_actors_s: float  # CPU of every actor process
    manifest: dict[str, Any]  # run.json (only the initial one with skip_analysis)
    execution: dict[str, Any]  # what the engine returned: status, reason, wall_s, actors
    monitored: Any = None
    minflt_engine: int = 0  # minor page faults of the engine process in the engine phase
    minflt_actors: int = 0  # ... and of every reaped actor (not under forkserver)

    @property
    def engine_wall_s(self) -> float:
        """The engine's own wall time (``Execution.wall_s``, as run.json reports it: from the
        run's t0 until the coordinator has closed the events file)."""
        return float(self.execution["wall_s"])

    @property
    def status(self) -> str:
        """The run's status: run.json's after the analysis, else the engine's."""
        final = self.manifest.get("status")
        return str(final if final not in (None, "running") else self.execution["status"])

    @property
    def reason(self) -> str:
        return str(self.manifest.get("reason") or self.execution.get("reason", ""))


def run_sim(
    config: Path | str,
    overrides: Sequence[str],
    out: Path,
    *,
    monitor: Callable[[subprocess.Popen[bytes], float], Any] | None = None,
    skip_analysis: bool = False,
    timeout: float = 300,
) -> SimRun:
    """Run ``config`` with ``-s`` overrides through the real engine in a fresh process; the run
    lands under ``out``. ``monitor(popen, deadline)``, if given, runs while the process does
    (and must return by ``deadline``, on ``time.perf_counter()``); after ``timeout`` seconds
    the run and everything it started are killed."""
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "bench._driver", str(config), "--out", str(out)]
    for item in overrides:
        args += ["-s", item]
    if skip_analysis:
        args.append("--skip-analysis")
    # Output goes to files, not pipes: a monitor runs before anything reads the output, and
    # the driver's report of a large run (a record per actor) outgrows a pipe's 64 KiB, which
    # would block the driver in its last write forever while the monitor waits for its exit.
    with tempfile.TemporaryFile() as out_fh, tempfile.TemporaryFile() as err_fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out_fh, stderr=err_fh, env=env(), cwd=ROOT)
        deadline = t0 + timeout
        try:
            monitored = monitor(proc, deadline) if monitor is not None else None
            proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            killed = kill_descendants(proc.pid) + 1
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"no result after {timeout:g} s (killed {killed} processes): {' '.join(args)}"
            ) from None
        wall = time.perf_counter() - t0
        out_fh.seek(0)
        err_fh.seek(0)
        stdout = out_fh.read().decode(errors="replace")
        stderr = err_fh.read().decode(errors="replace")
    lines = stdout.strip().splitlines()
    try:
        info = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"sim run failed ({proc.returncode}): {stderr[-2000:]}") from None
    run_dir = Path(info["run_dir"])
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    return SimRun(
        run_dir,
        proc.returncode,
        wall,
        info["exec_wall_s"],
        info["exec_cpu_engine_s"],
        info["exec_cpu_actors_s"],
        manifest,
        info["execution"],
        monitored,
        info.get("exec_minflt_engine", 0),
        info.get("exec_minflt_actors", 0),
    )


class _Event(msgspec.Struct):
    ts: float
    actor: str
    pid: int
    seq: int
    event: str
    target: str | None = None
    target_pid: int | None = None


@dataclass
class LogCheck:
    """What a run's events file holds, and whether any line of the actors was lost."""

    lines: int = 0
    actor_lines: int = 0
    other_lines: dict[str, int] = field(default_factory=dict)
    per_actor: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    first_ts: float = float("inf")  # first and last ts of the actors' own lines
    last_ts: float = float("-inf")
    by_event: dict[str, list[_Event]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def span_s(self) -> float:
        return self.last_ts - self.first_ts if self.actor_lines > 1 else float("nan")


def check_log(
    path: Path,
    expected: dict[str, int] | None,
    keep: Iterable[str] = (),
) -> LogCheck:
    """Read ``path``; every actor's ``seq`` must run 0..n-1 in file order with no gap, and, when
    ``expected`` is given, actor ``a`` must have exactly ``expected[a]`` lines and no other actor
    may appear. Events named in ``keep`` are returned in ``by_event``."""
    decode = msgspec.json.Decoder(_Event).decode
    keep = set(keep)
    result = LogCheck(by_event={name: [] for name in keep})
    next_seq: dict[str, int] = {}
    counts: dict[str, int] = {}
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            result.lines += 1
            if not raw.endswith(b"\n"):
                result.problems.append(f"line {number} is torn (no newline)")
                break
            try:
                ev = decode(raw)
            except msgspec.DecodeError as exc:
                result.problems.append(f"line {number} is not a valid event: {exc}")
                continue
            if ev.event in keep:
                result.by_event[ev.event].append(ev)
            if ev.actor in ENGINE_ACTORS:
                result.other_lines[ev.actor] = result.other_lines.get(ev.actor, 0) + 1
                continue
            result.actor_lines += 1
            counts[ev.actor] = counts.get(ev.actor, 0) + 1
            result.first_ts = min(result.first_ts, ev.ts)
            result.last_ts = max(result.last_ts, ev.ts)
            due = next_seq.get(ev.actor, 0)
            if ev.seq != due and len(result.problems) < 10:
                result.problems.append(f"{ev.actor}: seq {ev.seq} where {due} was due")
            next_seq[ev.actor] = max(due, ev.seq + 1)
    result.per_actor = counts
    if expected is not None:
        lost = 0
        for actor, n in expected.items():
            got = counts.get(actor, 0)
            if got != n or next_seq.get(actor, 0) != n:
                lost += n - got
                if len(result.problems) < 10:
                    result.problems.append(f"{actor}: {got} of {n} lines")
        extra = set(next_seq) - set(expected)
        if extra:
            result.problems.append(f"unexpected actors: {sorted(extra)[:3]}")
        want = sum(expected.values())
        if result.actor_lines != want:
            result.problems.append(
                f"{result.actor_lines} actor lines where {want} were expected "
                f"({want - result.actor_lines} lost)"
            )
    return result


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v == v]  # drop NaN
    return statistics.median(data) if data else float("nan")


def fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if digits == 0:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into docs/benchmarks.md)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(row):
            parts.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        return "| " + " | ".join(parts) + " |"

    sep = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def machine() -> str:
    """One line describing where the numbers were taken."""
    try:
        load = os.getloadavg()
        loadavg = f"load {load[0]:.2f}"
    except OSError:
        loadavg = ""
    return (
        f"sim at {commit()} · {os.cpu_count()} CPUs · Linux {platform.release()} · "
        f"Python {platform.python_version()} · {loadavg} · "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
    )


def commit() -> str:
    """The checked-out commit, with ``+dirty`` if sim/ or scenarios/ have local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sim", "scenarios"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")
