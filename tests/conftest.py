"""Shared helpers: run the real CLI in a subprocess, read a run back, find leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The tests of Ctrl-C send SIGINT to the processes they start, as a terminal would. Started in
# the background by a shell without job control (`.ci/run &`), every process inherits SIGINT
# ignored, and sim rightly leaves an ignored stop ignored; with a handler here, the processes
# the tests start begin with its default, as under a terminal (exec resets a caught signal).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core. Most tests wait on real processes and simulated
    time rather than compute, so a core running one test at a time sits idle for most of it
    (the default suite on 2 cores: 316 s with 2 workers, 203 s with 4).
    PYTEST_XDIST_AUTO_NUM_WORKERS still decides, as xdist documents."""
    asked = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if asked:
        return int(asked)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 * (cores or 1)


def sim(
    *args: str, timeout: float = 90, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sim ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "sim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def events_of(run_dir: Path) -> list[dict[str, Any]]:
    """Every event line of a run, in file order."""
    with open(run_dir / "events.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def manifest_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def only_run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def socket_files(*folders: Path) -> list[Path]:
    import stat

    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    found.append(path)
            except FileNotFoundError:
                pass
    return found


def sent_until_closed(address: Any, data: bytes, timeout: float = 10.0) -> bytes:
    """Connect to the coordinator at ``address``, send ``data`` (as far as it takes it) and
    read until it hangs up; what it sent back."""
    import contextlib
    import socket

    with socket.create_connection(tuple(address), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                received += chunk
        return received


@dataclass(frozen=True)
class Finished:
    """A run of the CLI that has ended, read back from its run directory."""

    code: int
    run_dir: Path
    events: list[dict[str, Any]]  # in time order: (ts, actor, seq)
    manifest: dict[str, Any]
    stderr: str


def finished(
    out: Path, config: str, *overrides: str, args: Sequence[str] = (), timeout: float = 90
) -> Finished:
    """Run ``config`` with ``args`` and then ``-s`` ``overrides`` into a fresh numbered folder
    under ``out``, read the one run back and check that nothing outlived it: no actor process
    from run.json, no socket file."""
    out.mkdir(parents=True, exist_ok=True)
    folder = out / str(len(list(out.iterdir())))
    settings = [arg for override in overrides for arg in ("-s", override)]
    result = sim("run", config, *args, *settings, "--out", str(folder), timeout=timeout)
    run_dir = only_run_dir(folder)
    manifest = manifest_of(run_dir)
    for record in manifest["actors"].values():
        assert not alive(record["pid"]), record
    assert not socket_files(folder)
    events = sorted(events_of(run_dir), key=lambda e: (e["ts"], e["actor"], e["seq"]))
    return Finished(result.returncode, run_dir, events, manifest, result.stderr)


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    """A fresh folder for run directories."""
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


def kind_verdicts(prim: str, info: dict[str, Any], events: Sequence[dict[str, Any]]) -> list[Any]:
    """The verdicts of ``prim``'s kind's own checks over a synthetic history (events as
    dicts, fed in time order, ties in the given order)."""
    from sim.history import History, line_of

    history = History({prim: info})
    kind = history.kind(info["kind"])
    assert kind is not None
    checks = kind.checks(prim, info)
    for check in checks:
        history.subscribe(check)
    lines = [line_of({"pid": 1, "seq": 0, **e}) for e in events]
    history.feed(sorted(lines, key=lambda line: line.ts))
    history.finish()
    return [check.verdict() for check in checks]
