"""Run a sweep's tasks on a Dask cluster: a LocalCluster on this machine, or an existing one.

Each task is the very command the local executor runs (``LocalExecutor.command``), started as
a subprocess by a function on a Dask worker. The run writes into a scratch folder on the
worker, and its files (run.json, events.jsonl and whatever else the run wrote) come back to the
client as bytes, which writes them under the task's folder of the sweep: so a sweep's directory
looks the same whichever executor ran it and wherever the worker was. With ``shared_out`` the
user states that the sweep's folder is the same path on every worker (a shared file system);
runs then write there directly and nothing is shipped.

Cancellation has to be designed for: cancelling a Dask future does not stop a function that is
already running on a worker. So every task's function watches a per-sweep
``distributed.Event``. On Ctrl-C the client sets it; each worker then sends SIGTERM to its
``sim run`` (which stops its actors and marks its manifest ``interrupted``), kills it if it has
not stopped after a grace period, and returns the interrupted run's files as usual. As a second
line, the function also stops its run when the worker itself has been told to forget the task
(the client cancelled the future or went away without setting the event).

This module imports ``distributed``; ``sim._sweep.runner`` imports it only for
``--executor dask``, so the package stays an optional extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

import anyio
import dask.config
import distributed

from sim.errors import ConfigError

from .execute import LocalExecutor as _LocalExecutor
from .execute import Outcome, Task, latest_run_dir, outcome_from_run_dir

__all__ = ["DaskExecutor", "run_on_worker"]

# The same grace the local executor gives a run to stop cleanly after Ctrl-C.
_STOP_GRACE_S = 15.0
# How often a worker looks at the stop event. Each look is a long poll on the scheduler, so
# this is how late a run hears about Ctrl-C, not a busy loop.
_POLL_S = 0.2
# How long the client waits, after Ctrl-C, for a worker to return its stopped run: the run's
# grace, the kill, and shipping the files.
_RETURN_GRACE_S = _STOP_GRACE_S + 15.0
_CONNECT_TIMEOUT_S = 10.0
_WORKERS_TIMEOUT_S = 30.0
# Enough of a failed run's stderr for its last line (the error), not a whole traceback log.
_STDERR_TAIL = 4000


@dataclass(frozen=True)
class _Job:
    """What a worker needs for one task; pickled to the worker."""

    task: Task
    config_path: str  # the config on the client
    config_bytes: bytes  # and its text, for a worker that does not see that path
    overrides: list[str]
    stop_event: str  # name of the sweep's stop event
    shared_out: bool


@dataclass
class _Shipped:
    """What comes back from a worker: how the run ended and its directory's files."""

    started: bool
    exit_code: int | None = None
    run_name: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    stderr: str = ""
    elapsed_s: float = 0.0
    worker: str = ""


def _config_here(job: _Job, scratch: Path) -> Path:
    """The config on this worker: the client's own file if the worker sees it unchanged (the
    same machine, a shared file system), else the shipped copy under the same name."""
    path = Path(job.config_path)
    try:
        if path.read_bytes() == job.config_bytes:
            return path
    except OSError:
        pass
    copy = scratch / "config" / path.name
    copy.parent.mkdir()
    copy.write_bytes(job.config_bytes)
    return copy


def _released() -> bool:
    """True when this worker has been told to forget the running task (its future was
    cancelled or its client went away). Best effort: it reads the worker's state machine,
    which is not a public API, so any surprise there counts as "still wanted"."""
    try:
        worker = distributed.get_worker()
        key = distributed.worker.thread_state.key
        state = worker.state.tasks.get(key)
        return state is not None and state.state in ("cancelled", "released", "forgotten")
    except Exception:
        return False


def _stop_requested(stop: distributed.Event) -> bool:
    try:
        return bool(stop.wait(timeout=_POLL_S))
    except Exception:
        # The scheduler cannot be asked right now (a reconnect, a closing worker): decide from
        # the local state alone, and slow the loop down as the long poll would have.
        time.sleep(_POLL_S)
        return False


def _files(run_dir: Path) -> dict[str, bytes]:
    """Every regular file of a run directory, by its path relative to the directory."""
    found = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(run_dir).as_posix()] = path.read_bytes()
    return found


def run_on_worker(job: _Job) -> _Shipped:
    """The worker side of a task: run ``python -m sim run`` for it, stop the run on the sweep's
    stop event, and return the run's files (or only its name, when the output is shared)."""
    stop = distributed.Event(job.stop_event)
    worker = distributed.get_worker()
    if stop.is_set():
        return _Shipped(started=False)  # queued before Ctrl-C, reached a worker after it
    scratch = Path(tempfile.mkdtemp(prefix=f"sim-{job.task.name}-", dir=worker.local_directory))
    try:
        out = job.task.out if job.shared_out else scratch / "out"
        out.mkdir(parents=True, exist_ok=True)
        config = _config_here(job, scratch)
        # The local executor's command, built here so that it names this worker's Python.
        task = dataclasses.replace(job.task, out=out)
        command = _LocalExecutor(config, job.overrides).command(task)
        started = time.monotonic()
        with open(scratch / "stderr", "w+b") as stderr:
            # The worker's process group, not a session of its own: whatever kills the worker's
            # group (a LocalCluster's sweep killed with its group) takes the run along.
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=stderr)  # fmt: skip
            try:
                code = _wait(process, stop)
            finally:
                if process.poll() is None:  # only if _wait itself failed
                    process.kill()
                    process.wait()
            elapsed = time.monotonic() - started
            stderr.seek(0)
            err_text = stderr.read()[-_STDERR_TAIL:].decode("utf-8", "replace")
        run_dir = latest_run_dir(out)
        shipped = _Shipped(True, code, run_dir.name if run_dir else None, stderr=err_text,
                           elapsed_s=elapsed, worker=worker.address)  # fmt: skip
        if run_dir is not None and not job.shared_out:
            shipped.files = _files(run_dir)
        return shipped
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait(process: subprocess.Popen[bytes], stop: distributed.Event) -> int:
    """Wait for the run; on a stop, SIGTERM (the run marks itself interrupted), then SIGKILL.

    SIGTERM rather than the local executor's SIGINT: the run stops on either in the same way,
    but a LocalCluster's workers (and so their runs) ignore SIGINT, see _IgnoreCtrlC.
    """
    stopping_since: float | None = None
    while (code := process.poll()) is None:
        if stopping_since is None:
            if _stop_requested(stop) or _released():
                process.send_signal(signal.SIGTERM)
                stopping_since = time.monotonic()
            continue
        try:
            return process.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            if time.monotonic() - stopping_since > _STOP_GRACE_S:
                process.kill()
    return code


def _land(task: Task, shipped: _Shipped) -> Path | None:
    """Write a shipped run's files under the task's folder; the run directory."""
    if shipped.run_name is None:
        return None
    name = PurePosixPath(shipped.run_name)
    if len(name.parts) != 1 or name.name in ("", ".", ".."):
        raise ValueError(f"a worker returned a strange run name: {shipped.run_name!r}")
    run_dir = task.out / name.name
    for rel, data in shipped.files.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ValueError(f"a worker returned a file outside its run directory: {rel!r}")
        path = run_dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        # run.json last-write-wins by rename, so that a reader never sees half a manifest.
        tmp = path.with_name(f".{path.name}.landing")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return run_dir


class _IgnoreCtrlC(distributed.WorkerPlugin):  # type: ignore[misc]
    """Makes a LocalCluster's worker process ignore SIGINT.

    A Ctrl-C at the terminal reaches the whole process group, the LocalCluster's worker
    processes too, and would kill them (KeyboardInterrupt) before they could stop their runs
    and return them. The sweep stops them through the stop event instead. Their runs inherit
    the ignored SIGINT, which is why the worker stops a run with SIGTERM.
    """

    def setup(self, worker: object) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class DaskExecutor:
    """Runs tasks on a Dask cluster: a new LocalCluster of ``workers`` processes, or the
    cluster at ``scheduler`` (``tcp://HOST:PORT``) whose workers have ``sim`` installed.

    Use it as an async context manager (it connects, and starts the LocalCluster, on entry);
    ``slots`` is then the number of tasks the cluster runs at once.
    """

    def __init__(
        self,
        config: Path,
        overrides: list[str],
        *,
        scheduler: str | None = None,
        workers: int = 1,
        shared_out: bool = False,
    ) -> None:
        self._config = config
        self._config_bytes = config.read_bytes()
        self._overrides = overrides
        self._scheduler = scheduler
        self._workers = workers
        self._shared_out = shared_out
        self._token = secrets.token_hex(4)
        self._stop_name = f"sim-sweep-stop-{self._token}"
        self._cluster: distributed.LocalCluster | None = None
        # A LocalCluster's workers' scratch folders (and the locks Dask keeps beside them):
        # in a folder of the sweep's own, removed with the cluster, not in the shared
        # dask-scratch-space of the temporary directory, which Dask leaves behind.
        self._scratch: Path | None = None
        self._client: distributed.Client | None = None
        self._stop: distributed.Event | None = None
        self._stopping = False
        self.slots = workers
        self.where = scheduler or f"a Dask LocalCluster of {workers} worker processes"

    async def __aenter__(self) -> DaskExecutor:
        # distributed logs every worker's start and stop at INFO on stderr; a sweep's stderr is
        # its progress and its table.
        logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            if self._scheduler is None:
                # No dashboard; the scheduler's HTTP server (health checks) on a free port of
                # this host, not on 8787, which another cluster may hold.
                self._scratch = Path(tempfile.mkdtemp(prefix="sim-dask-"))
                # The scheduler and the nannies keep their locks in the temporary directory
                # of the config, the workers their folders in local_directory.
                with dask.config.set({"temporary-directory": str(self._scratch)}):
                    self._cluster = await distributed.LocalCluster(
                        n_workers=self._workers, threads_per_worker=1, processes=True,
                        local_directory=str(self._scratch),
                        host="127.0.0.1", dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                        silence_logs=logging.ERROR, asynchronous=True,
                    )  # fmt: skip
                self._client = await distributed.Client(self._cluster, asynchronous=True)
                # Registered for every worker the cluster will have, restarted ones too.
                await self._client.register_plugin(_IgnoreCtrlC(), name="sim-ignore-ctrl-c")
            else:
                self._client = await distributed.Client(
                    self._scheduler, asynchronous=True, timeout=_CONNECT_TIMEOUT_S
                )
                await self._client.wait_for_workers(1, timeout=_WORKERS_TIMEOUT_S)
                nthreads = await self._client.nthreads()
                self.slots = max(1, sum(nthreads.values()))
                self.where = f"Dask at {self._scheduler} ({len(nthreads)} workers)"
        except BaseException as exc:
            # Half a cluster is still processes and connections: close it even when Ctrl-C
            # came in the middle of the start.
            with anyio.CancelScope(shield=True):
                await self._close()
            if isinstance(exc, OSError | TimeoutError):
                where = self._scheduler or "a LocalCluster"
                raise ConfigError(f"cannot use {where}: {exc}", source="--scheduler"
                                  if self._scheduler else "--executor") from None  # fmt: skip
            raise
        self._stop = distributed.Event(self._stop_name, client=self._client)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._close()

    async def _close(self) -> None:
        if self._client is not None:
            if self._stop is not None:
                # Leave nothing behind on a long-lived scheduler: a cleared event is deleted.
                with anyio.move_on_after(5):
                    await self._stop.clear()
            await self._client.close()
            self._client = None
        if self._cluster is not None:
            await self._cluster.close()
            self._cluster = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    async def _request_stop(self) -> None:
        if not self._stopping and self._stop is not None:
            self._stopping = True
            await self._stop.set()

    async def run(self, task: Task) -> Outcome:
        """Run ``task`` on a worker; on cancellation, stop it there and keep what it wrote."""
        if self._client is None:
            raise RuntimeError("DaskExecutor.run outside `async with DaskExecutor(...)`")
        task.out.mkdir(parents=True, exist_ok=True)
        job = _Job(task, str(self._config), self._config_bytes, list(self._overrides),
                   self._stop_name, self._shared_out)  # fmt: skip
        future = self._client.submit(run_on_worker, job, key=f"sim-run-{task.name}-{self._token}",
                                     pure=False)  # fmt: skip
        started = time.monotonic()
        try:
            shipped: _Shipped = await future
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Ctrl-C (a cancellation of this task): stop the run on its worker, and land
                # whatever it wrote, as the local executor keeps an interrupted run's directory.
                with anyio.CancelScope(shield=True):
                    await self._interrupted(task, future)
                raise
            return Outcome(task, "error", None, None, elapsed_s=time.monotonic() - started,
                           error=f"dask: {type(exc).__name__}: {exc}")  # fmt: skip
        return await self._outcome(task, shipped)

    async def _interrupted(self, task: Task, future: distributed.Future) -> None:
        await self._request_stop()
        shipped: _Shipped | None = None
        with anyio.move_on_after(_RETURN_GRACE_S):
            try:
                shipped = await future
            except Exception:
                shipped = None
        if shipped is None:
            assert self._client is not None
            await self._client.cancel([future])
        elif shipped.started:
            await anyio.to_thread.run_sync(_land, task, shipped)
        # A run stopped before it began on its worker left nothing: no folder either, as the
        # local pool's runs that never started (rmdir takes only an empty one).
        with contextlib.suppress(OSError):
            task.out.rmdir()

    async def _outcome(self, task: Task, shipped: _Shipped) -> Outcome:
        if not shipped.started:
            return Outcome(task, "error", None, None, error="dask: the sweep was stopping")
        if self._shared_out:
            run_dir = task.out / shipped.run_name if shipped.run_name else None
        else:
            run_dir = await anyio.to_thread.run_sync(_land, task, shipped)
        if run_dir is None or not (run_dir / "run.json").is_file():
            last = shipped.stderr.strip().splitlines()[-1:] or [f"exit code {shipped.exit_code}"]
            return Outcome(task, "error", shipped.exit_code, None, elapsed_s=shipped.elapsed_s,
                           error=f"{last[0]} (on dask worker {shipped.worker})")  # fmt: skip
        outcome = outcome_from_run_dir(task, run_dir, shipped.exit_code)
        # The run's own process time on its worker, as the local executor measures it: so the
        # sweep's timing.json shows what Dask adds on top.
        outcome.elapsed_s = shipped.elapsed_s
        return outcome
