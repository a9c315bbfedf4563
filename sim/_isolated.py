"""Run the engine in a process that can host it: this one, or a fresh interpreter.

The engine forks actors (so the process must have no other thread: a fork copies a lock some
thread holds, held forever), handles SIGINT and SIGTERM (so it must be the main thread) and
runs its own event loop (so none may be running). A script meets all three; a Jupyter kernel
meets none (its threads, its event loop). There, :func:`call` runs the function in a fresh
``python`` child instead, started with this process's ``sys.path`` and working directory,
and brings back its result or its :class:`~sim.errors.SimError`. No ``__main__`` is imported
again in the child (unlike multiprocessing's spawn), so a script or a notebook runs once.

An interrupt of the waiting process (the notebook's stop button) is passed on to the child as
SIGINT, which stops the run cleanly (its manifest says ``interrupted``); its result is still
returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import SimError

__all__ = ["call", "can_host"]

T = TypeVar("T")

# How long an interrupted child gets to stop its run and report (its actors get 3 s).
_STOP_GRACE_S = 30.0


def can_host() -> bool:
    """True if the engine can run in this process: main thread, alone, no event loop."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if threading.active_count() > 1:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` here if this process can host the engine, else in a child interpreter
    (``fn`` and ``args`` must then pickle, by reference for functions)."""
    if can_host():
        return fn(*args)
    with tempfile.TemporaryDirectory(prefix="sim-call-") as folder:
        result = Path(folder) / "result.pickle"
        code = "import sys; from sim._isolated import _child; _child(sys.argv[1])"
        process = subprocess.Popen([sys.executable, "-c", code, str(result)],
                                   stdin=subprocess.PIPE, cwd=os.getcwd())  # fmt: skip
        assert process.stdin is not None
        try:
            # The search path first, on its own: the rest may name modules only it finds.
            pickle.dump(list(sys.path), process.stdin)
            pickle.dump((fn, args), process.stdin)
            process.stdin.close()
            process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if not result.is_file():
                raise
        found: T = _outcome(result, process.returncode)
        return found


def _outcome(result: Path, code: int | None) -> Any:
    if not result.is_file():
        raise SimError(f"the engine's process ended without a result (exit code {code})")
    kind, payload = pickle.loads(result.read_bytes())
    if kind == "ok":
        return payload
    if kind == "sim":
        cls, args, state = payload
        exc = cls.__new__(cls)
        exc.args = args
        exc.__dict__.update(state)
        raise exc
    raise SimError(f"the engine's process failed:\n{payload}")


def _child(result: str) -> None:
    """The child's side: read the path and the call from stdin, write the outcome."""
    sys.path[:] = pickle.load(sys.stdin.buffer)
    fn, args = pickle.load(sys.stdin.buffer)
    outcome: tuple[str, Any]
    try:
        outcome = ("ok", fn(*args))
    except SimError as exc:
        outcome = ("sim", (type(exc), exc.args, dict(exc.__dict__)))
    except BaseException:
        import traceback

        outcome = ("crash", traceback.format_exc())
    Path(result).write_bytes(pickle.dumps(outcome))
