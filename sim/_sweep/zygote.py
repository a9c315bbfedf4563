"""Where a local sweep's runs start: one process that has imported what a run needs, and forks
a child per run.

Each run of a local sweep used to be a fresh ``python -m sim run``: an interpreter start and
0.34 s of imports (rich, structlog, anyio, sim itself) before its engine began, most of a short
run's fixed cost (docs/benchmarks.md, section 6). The zygote pays for them once; each run is
then a fork of it that calls :func:`sim.cli.main` with the very arguments the command line
would get, and is as much a process of its own as before: its own run directory, its stdout
and stderr, its exit code, Ctrl-C by SIGINT.

The zygote speaks JSON lines over its stdin and stdout:

- ``{"id": N, "argv": [...], "stderr": PATH}`` asks for a run; its stderr goes to ``PATH``;
- ``{"id": N, "pid": P}`` says it started, ``{"id": N, "code": C}`` that it ended (C as
  :attr:`subprocess.Popen.returncode`: negative for a signal).

EOF on its stdin (the sweep is done, or gone) makes it interrupt what still runs, wait for it,
and exit: no run outlives the sweep by more than its own clean stop. A zygote that dies itself
(killed alone) takes its runs along the same way: on Linux each run asks the kernel for SIGINT
when its parent dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

__all__ = ["Zygote", "ZygoteGone", "serve"]

# How long runs still going when the sweep has gone get to stop cleanly.
_ORPHAN_GRACE_S = 15.0


class ZygoteGone(Exception):
    """The zygote exited while a run was asked of it or running."""


@dataclass
class _Job:
    pid: int | None = None
    code: int | None = None
    started: anyio.Event = field(default_factory=anyio.Event)
    ended: anyio.Event = field(default_factory=anyio.Event)


class Zygote:
    """The sweep's side of a running zygote (an async context manager)."""

    def __init__(self, warm: Path | None = None) -> None:
        self._warm = warm
        self._process: anyio.abc.Process | None = None
        self._jobs: dict[int, _Job] = {}
        self._next = 0
        self._gone = False
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Zygote:
        # -c, not -m: the package imports this module, and runpy warns about running a
        # module that is imported already.
        code = "import sys; from sim._sweep.zygote import serve; sys.exit(serve(sys.argv[1:]))"
        command = [sys.executable, "-c", code]
        if self._warm is not None:
            command.append(str(self._warm))
        self._process = await anyio.open_process(command, stderr=None)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read)
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self._process
        assert process is not None
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            assert process.stdin is not None
            await process.stdin.aclose()  # EOF: the zygote ends
            await process.wait()
        # The reader ends with the zygote's stdout; the group is left in the scope it was
        # entered in (not inside the shield above).
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await process.aclose()

    async def run(self, argv: Sequence[str], stderr: Path, grace_s: float) -> tuple[int, int]:
        """Run ``python -m sim ARGV``'s equivalent, its stderr to ``stderr``; return its pid
        and exit code. Cancelled, it sends the run SIGINT and waits ``grace_s`` for it to stop
        cleanly (SIGKILL after that) before it lets the cancellation through."""
        process = self._process
        assert process is not None, "use `async with Zygote()`"
        assert process.stdin is not None
        if self._gone:
            raise ZygoteGone
        self._next += 1
        job = self._jobs[self._next] = _Job()
        request = {"id": self._next, "argv": list(argv), "stderr": str(stderr)}
        try:
            await process.stdin.send(json.dumps(request).encode() + b"\n")
            await job.started.wait()
            if job.pid is None:
                raise ZygoteGone
            await job.ended.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop(job, grace_s)
            raise
        if job.code is None:
            raise ZygoteGone
        return job.pid, job.code

    async def _stop(self, job: _Job, grace_s: float) -> None:
        await job.started.wait()
        if job.pid is None or job.ended.is_set():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGINT)
        with anyio.move_on_after(grace_s):
            await job.ended.wait()
        if not job.ended.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)
            await job.ended.wait()

    async def _read(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        buf = b""
        try:
            async for data in process.stdout:
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    said = json.loads(line)
                    job = self._jobs.get(said["id"])
                    if job is None:
                        continue
                    if "pid" in said:
                        job.pid = said["pid"]
                        job.started.set()
                    else:
                        job.code = said["code"]
                        del self._jobs[said["id"]]
                        job.ended.set()
        except anyio.BrokenResourceError:
            pass
        # The zygote has gone: nobody will say how the rest ended.
        self._gone = True
        for job in self._jobs.values():
            job.started.set()
            job.ended.set()


# -- the zygote process ----------------------------------------------------------------------


def serve(argv: Sequence[str]) -> int:  # pragma: no cover - runs in the zygote
    """The zygote's main loop; ``argv`` may name the sweep's config, to import its scenario
    before the first fork."""
    warm = argv[0] if argv else None
    # The sweep decides what an interrupt means for each run (it forwards SIGINT to them); a
    # Ctrl-C reaches this process too (the terminal's process group), also while it imports,
    # and so does a SIGTERM of the group: this process must outlive its runs to say how they
    # ended (its own stop is EOF on stdin).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # What every run imports, paid once (a child imports only its scenario, and only if the
    # warm-up below could not).
    import anyio._backends._asyncio  # noqa: F401  (anyio.run imports it lazily)

    import sim._runner
    import sim.analysis
    import sim.cli

    if warm is not None:
        with contextlib.suppress(Exception):
            from sim.config import load_config

            load_config(warm)  # imports the sweep's scenario and its kinds

    import ctypes  # noqa: F401  (each run's _stop_with_parent, paid once here)

    me = os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    live: dict[int, int] = {}  # pid -> the request's id
    buf = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            _reap(live, block=False)
        if 0 in ready:
            data = os.read(0, 1 << 16)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request["argv"], request["stderr"], (wake_r, wake_w), sim.cli.main, me)
                live[pid] = request["id"]
                _say({"id": request["id"], "pid": pid})
    # The sweep is done or gone: what still runs is stopped as Ctrl-C would stop it.
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    signal.signal(signal.SIGALRM, _too_late)
    signal.alarm(int(_ORPHAN_GRACE_S))
    try:
        _reap(live, block=True)
    except _TooLate:
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(live, block=True)
    finally:
        signal.alarm(0)
    return 0


class _TooLate(Exception):
    pass


# prctl(2)'s option: a signal for this process when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> None:  # pragma: no cover - in a run
    """Ask for SIGINT when the zygote dies, so that a zygote killed alone stops its runs as
    Ctrl-C would (each marks itself interrupted) instead of leaving them to run unwatched.
    Linux only; elsewhere nothing (the zygote's EOF path still holds)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return
    if prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # died before the request was made: nobody will signal
        os.kill(os.getpid(), signal.SIGINT)


def _too_late(signum: int, frame: Any) -> None:  # pragma: no cover - in the zygote
    raise _TooLate


def _reap(live: dict[int, int], *, block: bool) -> None:  # pragma: no cover - in the zygote
    while live:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            live.clear()
            return
        if pid == 0:
            return
        ident = live.pop(pid, None)
        if ident is not None:
            with contextlib.suppress(OSError):
                _say({"id": ident, "code": os.waitstatus_to_exitcode(status)})


def _say(reply: dict[str, Any]) -> None:  # pragma: no cover - runs in the zygote
    data = json.dumps(reply).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def _child(
    argv: list[str],
    stderr: str,
    close: tuple[int, int],
    main: Callable[[list[str]], int],
    parent: int,
) -> None:  # pragma: no cover - runs in a run forked by the zygote
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # sim.cli.main's own comes next
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        # As a child process of its own: nothing on stdin, stdout discarded (the sweep reads
        # the run directory), stderr to its file; the zygote's pipes are out of its reach.
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)
        # Once SIGINT stops it (the zygote ignores SIGINT) and stderr is its own.
        _stop_with_parent(parent)
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        code = 130  # stopped before the command began (its zygote died): as sim's own exit
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
