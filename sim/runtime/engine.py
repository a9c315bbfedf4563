"""The engine: start one OS process per actor, supervise them, stop them, leave nothing behind.

The engine process stays single-threaded on purpose: forking a multi-threaded process can
deadlock the child. So the coordinator's socket is bound without a resolver thread, the live view
refreshes from the event loop (no refresh thread), and process exits are awaited on descriptors
rather than joined on threads.

Under the fork start method the engine does not fork the actors itself: before its event loop
exists it forks one launcher (sim.runtime._launcher), which forks them from a small, quiet
process. The launcher reports each actor's pid and exit code, and signals them when the engine
asks (so the engine holds one descriptor per actor: its connection). Under forkserver and
spawn, multiprocessing starts them as usual.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import resource
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio

from sim._signals import Stops, stop_signals
from sim.config import RunConfig, refused
from sim.coordinator import Coordinator, LiveCounters, address_of, bind, live_window_s
from sim.errors import ConfigError, ScenarioError, SimError, StorageError
from sim.faults import Fault, check_faults
from sim.history import History
from sim.kinds import PrimSpec
from sim.scenario import Actor, Scenario, States
from sim.virtual.policy import Policy
from sim.virtual.policy import make as make_policy
from sim.virtual.schedule import Forced, Schedule
from sim.virtual.scheduler import Scheduler

from . import _launcher, worker
from ._sink import STOP_SIGNALS
from .nemesis import Nemesis

__all__ = ["ActorRecord", "Execution", "LiveDisplay", "Plan", "execute", "plan"]

Status = Literal["ok", "failed", "interrupted", "timeout", "deadlock"]

# How long actors get to unwind after SIGTERM before they are killed.
_GRACE_S = 3.0
# SIGTERM is sent again this often during the grace period: one that lands just before an
# actor's blocking call begins to sleep is taken by Python but wakes nothing (see worker).
_NUDGE_S = 0.2
# Actors started between two turns of the event loop: the coordinator must keep accepting
# their connections while a large run is still starting.
_START_BATCH = 512


class LiveDisplay(Protocol):
    """What the engine drives while a run is in progress (see sim.live)."""

    async def run(self, counters: LiveCounters, total: int) -> None: ...


@dataclass
class ActorRecord:
    """One actor process as run.json reports it."""

    name: str
    pid: int | None = None
    exitcode: int | None = None
    lines: int = 0


@dataclass
class Execution:
    """What happened while the actors ran (before the log is analysed)."""

    run_dir: Path
    events_path: Path
    seed: int
    start_method: str
    status: Status
    reason: str
    started_at: float
    ended_at: float
    wall_s: float
    actors: dict[str, ActorRecord]
    counters: LiveCounters
    extra_lines: dict[str, int] = field(default_factory=dict)
    # A replayed schedule that did not fit the run (it was stopped, saying where).
    error: SimError | None = None


def _context(method: str, scenario_module: str) -> BaseContext:
    mp = multiprocessing.get_context(method)
    if method == "forkserver":
        # Preloading makes each start a cheap fork of a warm server instead of fresh imports.
        mp.set_forkserver_preload(["sim.runtime.worker", scenario_module])
    return mp


@dataclass(frozen=True)
class Plan:
    """What a run will start, asked of the scenario once: its primitives and actors."""

    config: RunConfig[Any]
    prims: dict[str, PrimSpec[Any]]
    actors: list[Actor]
    # What run.json and the log's run_start record about each primitive.
    described: dict[str, dict[str, Any]]
    # What the scenario's domain events mean, for the live view.
    states: States | None = None


def plan(config: RunConfig[Any], scenario: Scenario[Any]) -> Plan:
    """Ask the scenario for its primitives and actors; actor names must be unique."""
    prims = dict(scenario.primitives(config.params))
    actors = list(scenario.actors(config.params))
    seen: set[str] = set()
    for actor in actors:
        if actor.name in ("engine", "coordinator"):
            raise ScenarioError(f"{config.scenario}: actor name {actor.name!r} is reserved")
        if actor.name in seen:
            raise ScenarioError(f"{config.scenario}: actor name {actor.name!r} is not unique")
        seen.add(actor.name)
    described = {name: spec.describe() for name, spec in prims.items()}
    if config.faults:
        try:
            check_faults(config, [a.name for a in actors], prims)
        except ConfigError as exc:
            raise refused(config, exc) from None
    return Plan(config, prims, actors, described, scenario.states)


def execute(
    planned: Plan,
    run_dir: Path,
    display: LiveDisplay | None,
    *,
    seed: int,
    on_started: Callable[[dict[str, Any]], object] | None = None,
    schedule: Schedule | None = None,
    cpu: int | None = None,
) -> Execution:
    """Run every actor of the plan to its end (or to a stop) and return what happened.

    A virtual run (``clock.mode = "virtual"``) follows ``schedule`` if one is given (a replay
    of an earlier run's ``schedule.json``), else its config's scheduling policy, and writes the
    choices it made to ``schedule.json`` beside its log; with ``cpu`` (claimed by the caller,
    sim.virtual.cpu) it runs on that CPU once every actor has started."""
    config, prims, actors = planned.config, planned.prims, planned.actors
    _ensure_open_files(len(actors), config.engine.start_method)
    # Preloaded by a forkserver: the module the scenario was found in (sim._lookup).
    module = config.origin.module if config.origin is not None else "scenarios"
    mp = _context(config.engine.start_method, module)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {run_dir}: {exc.strerror}",
                          source="--out") from None  # fmt: skip
    # Built after the directory exists: a shared-memory block must never outlive a failed start.
    raw = {name: (spec.kind, spec.build(mp)) for name, spec in prims.items()}
    supervisor = _Supervisor(
        config, actors, raw, mp, run_dir, display, seed, on_started, planned.described
    )
    supervisor.states = planned.states
    supervisor.specs = list(prims.values())
    supervisor.replaying = schedule
    supervisor.cpu = cpu
    try:
        # Bound before the event loop runs: the launcher's actors need the address.
        supervisor.listener = bind(config.transport)
        if config.engine.start_method == "fork":
            supervisor.start_launcher()
        execution = anyio.run(supervisor.run)
    finally:
        try:
            supervisor.close()
        finally:
            # Even if a stop cuts the close short: no shared-memory block outlives the run.
            _release(list(prims.values()), raw)
    return execution


class _Supervisor:
    def __init__(
        self,
        config: RunConfig[Any],
        actors: Sequence[Actor],
        raw: dict[str, tuple[str, Any]],
        mp: BaseContext,
        run_dir: Path,
        display: LiveDisplay | None,
        seed: int,
        on_started: Callable[[dict[str, Any]], object] | None,
        primitives: dict[str, dict[str, Any]],
    ) -> None:
        self.config = config
        self.on_started = on_started
        self.actors = actors
        self.raw = raw
        self.mp = mp
        self.run_dir = run_dir
        self.display = display
        self.seed = seed
        self.records = {a.name: ActorRecord(a.name) for a in actors}
        self.procs: dict[str, BaseProcess] = {}
        self.status: Status = "ok"
        self.reason = ""
        self.stop = anyio.Event()
        self.all_reaped = anyio.Event()
        # Actors started and not yet exited (as the run knows it: see _judge), and those not
        # yet reaped (a virtual run's actor may say its exit before it is reaped).
        self.live = 0
        self.unreaped = 0
        self.started_all = False
        self.counters: LiveCounters | None = None
        self.primitives = primitives
        self.states: States | None = None
        self.specs: list[PrimSpec[Any]] = []
        self.virtual = config.clock.mode == "virtual"
        self.replaying: Schedule | None = None
        # A virtual run's CPU, once every actor has started (sim.virtual.cpu).
        self.cpu: int | None = None
        self.scheduler: Scheduler | None = None
        self._exits_seen: dict[str, tuple[int, int | None]] = {}
        # A virtual run's actors whose exit line is logged; actors whose exit was judged
        # (_judge), reaped or not.
        self._exit_logged: set[str] = set()
        self._judged: set[str] = set()
        self.coordinator: Coordinator | None = None
        self.log: Any = None
        self.t0_ns = time.monotonic_ns()
        self.secret = secrets.token_hex(16)
        # The run's files could not be written (a full disk): the run was stopped for it.
        self.storage_error: StorageError | None = None
        self.listener: socket.socket | None = None
        # Under fork: the launcher (which signals the actors for the engine), each actor's
        # index by name, names by pid, and the last signal sent to every actor (late ones get
        # it too).
        self.launcher: _launcher.Launcher | None = None
        self.index_of = {a.name: i for i, a in enumerate(actors)}
        self.by_pid: dict[int, str] = {}
        self.launcher_done = False
        self.signalled = 0
        self.nemesis: Nemesis | None = None

    def _boot(self, index: int, actor: Actor, address: tuple[str, int] | str) -> worker.Boot:
        engine = self.config.engine
        return worker.Boot(
            actor=actor.name,
            index=index,
            role=actor.role,
            params=self.config.params,
            prims=self.raw,
            address=address,
            secret=self.secret,
            t0_ns=self.t0_ns,
            speedup=self.config.clock.speedup,
            seed=self.seed,
            flush_s=engine.flush_ms / 1000.0,
            virtual=self.virtual,
            engine_pid=os.getpid(),
        )

    def start_launcher(self) -> None:
        """Fork the launcher (fork start method), before the event loop exists: it holds every
        actor's process object, and forks them once the run has begun (see _start_all)."""
        assert self.listener is not None
        address = address_of(self.listener)
        procs = [
            self.mp.Process(  # type: ignore[attr-defined]
                target=worker.main, args=(self._boot(i, a, address),), name=a.name, daemon=True
            )
            for i, a in enumerate(self.actors)
        ]
        pipes = [end for spec, (_, raw) in zip(self.specs, self.raw.values(), strict=True)
                 for end in spec.handed_over(raw)]  # fmt: skip
        _assert_single_threaded("fork")
        # Objects made before the fork are never touched by the collector again, so neither the
        # launcher nor its actors copy the pages that hold them.
        gc.freeze()
        # Blocked while forking, and in the launcher for good: its actors start with the
        # engine's signal handlers and must not act on a signal before their own are installed.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.launcher = _launcher.start(
                procs,
                close=[self.listener],
                pipes=pipes,
                prepare=functools.partial(worker.prepare, os.getpid()),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            gc.unfreeze()
        # The launcher holds the pipe ends until every actor has its copies; the engine never
        # uses them, so that a reader sees EOF once the writers have closed theirs.
        for end in pipes:
            end.close()

    def close(self) -> None:
        """After the run, or after a failure: no actor or launcher is left behind."""
        if self.launcher is not None:
            if any(r.pid is not None and r.exitcode is None for r in self.records.values()):
                # As multiprocessing does with daemonic children at exit.
                self.launcher.signal(signal.SIGTERM)
            self.launcher.close()
            self.launcher = None
        if self.listener is not None:
            self.listener.close()

    async def run(self) -> Execution:
        # Listening for a stop before anything is recorded: from the moment run.json says
        # "running", a stop (a Dask worker's SIGTERM as soon as it sees that file) ends the run
        # as every stop does, marked "interrupted"; a signal that comes before the actors'
        # watch has begun waits in the receiver.
        with stop_signals() as signals:
            async with anyio.create_task_group() as watch:
                # For the whole run, its end and drain included: a stop after the last actor
                # ended still marks the run interrupted (and the command exits 130).
                watch.start_soon(self._watch_signals, signals)
                execution = await self._run()
                watch.cancel_scope.cancel()
            # A stop that came in the step the run ended in reached the watch only as it was
            # cancelled: it is a stop all the same (it was lost, and the run said "ok").
            for signum in signals.unread:
                self._stopped_by(signum)
        if (self.status, self.reason) != (execution.status, execution.reason):
            execution = replace(execution, status=self.status, reason=self.reason)
        return execution

    async def _run(self) -> Execution:
        t0_ns = self.t0_ns
        started_at = time.time()
        events_path = self.run_dir / "events.jsonl"
        secret = self.secret
        engine = self.config.engine
        listener, self.listener = self.listener, None  # the coordinator owns it now
        history = History(
            self.primitives,
            actors=[a.name for a in self.actors],
            states=self.states,
            track_states=self.display is not None,
        )
        if self.virtual:
            self.scheduler = self._scheduler(history)
        async with Coordinator(
            events_path,
            secret=secret,
            t0_ns=t0_ns,
            transport=self.config.transport,
            listener=listener,
            history=history,
            scheduler=self.scheduler,
            actors=[a.name for a in self.actors],
            on_write_error=lambda exc: self._storage_failed(events_path, exc),
            reorder_s=live_window_s(engine.flush_ms),
        ) as coordinator:
            log = self.log = coordinator.logger("engine")
            self.coordinator = coordinator
            self.counters = coordinator.counters
            if self.on_started is not None:
                address = coordinator.address
                try:
                    self.on_started(
                        {"address": address if isinstance(address, str) else list(address)}
                    )
                except StorageError as exc:
                    # Nothing has started: a run that cannot be recorded is not begun.
                    self.storage_error = exc
                    self.status, self.reason = "failed", str(exc)
                    self.stop.set()
            log.info(
                "run_start",
                scenario=self.config.scenario,
                run_id=self.run_dir.name,
                seed=self.seed,
                start_method=engine.start_method,
                actors=len(self.actors),
                # The log carries what it takes to analyse it again, even without run.json.
                config=self.config.resolved(self.seed),
                primitives=self.primitives,
                actor_names=[a.name for a in self.actors],
            )
            # The display outlives the actors: its last frame is drawn once every line has
            # come in (drain) and the live history has all of them (settle).
            async with anyio.create_task_group() as shown:
                if self.storage_error is None:  # else nothing is started: see above
                    if self.display is not None:
                        shown.start_soon(self.display.run, coordinator.counters, len(self.actors))
                    await self._run_actors(coordinator, history, log)
                drained = await coordinator.drain(5.0)
                coordinator.settle()
                shown.cancel_scope.cancel()
            log.info(
                "run_end",
                status=self.status,
                reason=self.reason,
                drained=drained,
                wall_s=round((time.monotonic_ns() - t0_ns) / 1e9, 6),
            )
        if self.scheduler is not None:
            schedule = self.scheduler.schedule
            schedule.seed, schedule.scenario = self.seed, self.config.scenario
            schedule.preemptions = self.scheduler.preemptions
            schedule.choices = self.scheduler.trace
            schedule.write(self.run_dir / "schedule.json")
        wall_s = (time.monotonic_ns() - t0_ns) / 1e9
        counters = coordinator.counters
        for name, record in self.records.items():
            record.lines = counters.lines.get(name, 0)
        extra = {a: n for a, n in counters.lines.items() if a not in self.records}
        return Execution(
            run_dir=self.run_dir,
            events_path=events_path,
            seed=self.seed,
            start_method=engine.start_method,
            status=self.status,
            reason=self.reason,
            started_at=started_at,
            ended_at=time.time(),
            wall_s=wall_s,
            actors=self.records,
            counters=counters,
            extra_lines=extra,
            error=self.storage_error
            or (self.scheduler.diverged if self.scheduler is not None else None),
        )

    async def _run_actors(self, coordinator: Coordinator, history: History, log: Any) -> None:
        """Start every actor and watch the run until all of them have been reaped."""
        engine = self.config.engine
        if self.config.faults:
            self._faults(history, log)
        async with anyio.create_task_group() as tg:
            if self.nemesis is not None and self.scheduler is None:
                tg.start_soon(self.nemesis.run_wall, self._seconds)
            tg.start_soon(self._watchdog, engine.timeout, log)
            if not self.virtual:
                # A virtual run's deadlocks are exact: its scheduler finds them.
                tg.start_soon(self._detect_stall, coordinator, engine.stall_s, log)
            await self._start_all(coordinator, self.secret, self.t0_ns, log, tg)
            await self.all_reaped.wait()
            tg.cancel_scope.cancel()

    async def _start_all(
        self, coordinator: Coordinator, secret: str, t0_ns: int, log: Any, tg: Any
    ) -> None:
        if self.launcher is not None:
            tg.start_soon(self._follow_launcher, self.launcher, log)
            self.launcher.go()
            return
        engine = self.config.engine
        # Objects created before the first fork are never touched by the collector again, so
        # children do not copy the pages that hold them (copy-on-write stays shared).
        gc.freeze()
        # No collections while forking either: a collection writes to every object it visits,
        # and every page it writes is then copied, once per child that shares it.
        gc.disable()
        try:
            for index, actor in enumerate(self.actors):
                if self.stop.is_set():
                    break
                boot = self._boot(index, actor, coordinator.address)
                _assert_single_threaded(engine.start_method)
                proc = self.mp.Process(  # type: ignore[attr-defined]
                    target=worker.main, args=(boot,), name=actor.name, daemon=True
                )
                # Blocked while forking: the child starts with the engine's signal handlers
                # and must not act on a signal before its own are installed.
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                try:
                    proc.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                self.procs[actor.name] = proc
                self.records[actor.name].pid = proc.pid
                self.live += 1
                self.unreaped += 1
                log.info("spawn", target=actor.name, target_pid=proc.pid)
                tg.start_soon(self._reap, actor.name, proc, log)
                if index % _START_BATCH == _START_BATCH - 1:
                    await anyio.sleep(0)
        finally:
            gc.enable()
            gc.unfreeze()
        self.started_all = True
        self._spawned()
        # Every actor has its copies now. The engine lets go of its pipe ends, so that a reader
        # sees EOF once the writers have closed theirs.
        for spec, (_, raw) in zip(self.specs, self.raw.values(), strict=True):
            for end in spec.handed_over(raw):
                end.close()
        if self.unreaped == 0:
            self.all_reaped.set()

    async def _follow_launcher(self, launcher: _launcher.Launcher, log: Any) -> None:
        """Read the launcher's reports (see sim.runtime._launcher) until it has gone."""
        buf = b""
        while True:
            await anyio.wait_readable(launcher.reports)
            try:
                data = os.read(launcher.reports, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                break
            *lines, buf = (buf + data).split(b"\n")
            for line in lines:
                self._on_report(line.decode("ascii").split(), log)
        if self.all_reaped.is_set():
            return
        # The launcher has gone before its actors: their exits can no longer be known (and
        # nobody can signal them safely: they are orphans now, and exit as such).
        for record in self.records.values():
            if record.pid is not None and record.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGKILL)
        if self.status == "ok":
            self.status = "failed"
            self.reason = "the launcher exited before its actors"
        self.started_all = True
        self.all_reaped.set()

    def _on_report(self, record: list[str], log: Any) -> None:
        kind = record[0]
        if kind == "S":
            name, pid = self.actors[int(record[1])].name, int(record[2])
            self.by_pid[pid] = name
            self.records[name].pid = pid
            self.live += 1
            self.unreaped += 1
            log.info("spawn", target=name, target_pid=pid)
            if self.signalled:
                self._send(name, self.signalled)  # forked while the run was being stopped
        elif kind == "X":
            pid, code = int(record[1]), int(record[2])
            name = self.by_pid.pop(pid)
            self._exited(name, pid, code, log)
        elif kind == "D":
            self.launcher_done = self.started_all = True
            self._spawned()
            if self.unreaped == 0:
                self.all_reaped.set()
        elif kind == "F":
            name, errno = self.actors[int(record[1])].name, int(record[2])
            if self.status == "ok":
                self.status = "failed"
                self.reason = f"cannot start {name}: {os.strerror(errno)}"
            self.stop.set()

    def _send(self, name: str, sig: int) -> None:
        """Signal a live actor (not one already reaped)."""
        if self.launcher is not None:
            self.launcher.signal(sig, self.index_of[name])
            return
        proc = self.procs.get(name)
        if proc is None or proc.exitcode is not None or proc.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            # multiprocessing keeps the child unreaped until join(): its pid is still its own.
            os.kill(proc.pid, sig)

    async def _reap(self, name: str, proc: BaseProcess, log: Any) -> None:
        await anyio.wait_readable(proc.sentinel)
        proc.join()
        assert proc.pid is not None
        self._exited(name, proc.pid, proc.exitcode, log)

    def _exited(self, name: str, pid: int, code: int | None, log: Any) -> None:
        self.records[name].exitcode = code
        if self.counters is not None:
            self.counters.gone(name)
        if self.scheduler is not None:
            # A virtual run logs an actor's exit at the step it ended: the scheduler lets no
            # other task run until the exit is seen, whichever comes first, the exit or the
            # actor's last lines.
            if name in self._exit_logged:
                # It said so before it went (_exit_said), and was judged on the code it said.
                # (It exits with that code: os._exit follows; only a SIGKILL in between, the
                # run being stopped, could change it, and the record keeps the real one.)
                pass
            elif name in self.scheduler.ended_at:
                self._log_exit(name, pid, code)
                self.scheduler.exited(name)
            else:
                self._exits_seen[name] = (pid, code)
                if self.coordinator is None or not self.coordinator.is_connected(name):
                    # Never connected, or its connection was read to the end: it is gone.
                    self.scheduler.gone(name)
            if self.coordinator is not None:
                self.coordinator.kick()
        else:
            log.info("exit", target=name, target_pid=pid, code=code)
        if name not in self._judged:
            self._judge(name, code)
        self.unreaped -= 1
        if self.unreaped == 0 and self._all_started():
            self.all_reaped.set()

    def _judge(self, name: str, code: int | None) -> None:
        """What an actor's exit means for the run, once an actor: when it is reaped, or, in a
        virtual run under fork, when it says its exit (``_exit_said``). Either way before the
        scheduler can grant another step: a stop it causes comes at the same step every time,
        whatever the start method."""
        self._judged.add(name)
        self.live -= 1
        faulted = self.nemesis is not None and name in self.nemesis.targets
        if code != 0 and self.status == "ok" and not faulted:
            # (A fault's target dying is what the config asked for; what follows from it is
            # for the checks to say.)
            self.status = "failed"
            self.reason = f"{name} exited with code {code}"
            if self.config.engine.stop_on_crash and self.live > 0:
                # The others may be waiting for what the crashed actor will never do.
                if self.scheduler is not None:
                    # At this step: the watchdog's stop would come a few steps later, as
                    # many as the event loop runs before it.
                    self._say_stopping()
                    self.scheduler.stop_all()
                self.stop.set()

    def _all_started(self) -> bool:
        """No more actors will be started."""
        if self.launcher is not None:
            return self.launcher_done
        return self.stop.is_set() or len(self.procs) == len(self.actors)

    async def _detect_stall(self, coordinator: Coordinator, stall_s: float, log: Any) -> None:
        counters = coordinator.counters
        while not self.stop.is_set():
            await anyio.sleep(min(0.25, stall_s / 4))
            if not self.started_all or not counters.stalled(stall_s):
                continue
            # An actor still starting up (slow under spawn) may be the one that wakes the rest.
            if any(
                name not in counters.history.started and record.exitcode is None
                for name, record in self.records.items()
                if record.pid is not None
            ):
                continue
            waits = counters.waits()
            words = "; ".join(
                f"{w['actor']} waits in {w['op']} on {w['prim']}"
                + (f" (held by {', '.join(w['held_by'])})" if w["held_by"] else "")
                for w in waits
            )
            log.info("deadlock", stall_s=stall_s, waits=waits, explanation=words)
            if self.status == "ok":
                self.status = "deadlock"
                self.reason = f"deadlock: {words}"
            self.stop.set()
            return

    async def _watch_signals(self, signals: Stops) -> None:
        async for signum in signals:
            self._stopped_by(signum)

    def _stopped_by(self, signum: signal.Signals) -> None:
        if self.status in ("ok", "failed"):
            self.status = "interrupted"
            self.reason = f"stopped by {signal.Signals(signum).name}"
        self.stop.set()

    async def _watchdog(self, timeout: float, log: Any) -> None:
        with anyio.move_on_after(timeout) as scope:
            await self.stop.wait()
        if scope.cancelled_caught:
            self.status = "timeout"
            self.reason = f"still running after {timeout:g} s (engine.timeout)"
            outside = self.counters.outside() if self.counters is not None else {}
            if outside:
                # Not a deadlock: these wait on the outside world, which only the timeout ends.
                self.reason += "; waiting on the outside world: " + "; ".join(
                    f"{actor} in {wait}" for actor, wait in sorted(outside.items())
                )
            self.stop.set()
        if self.scheduler is not None and self.scheduler.stopping:
            pass  # logged at the step it happened (a deadlock, the step limit)
        else:
            self._say_stopping()
        if self.scheduler is not None and self.coordinator is not None:
            # A virtual run stops its tasks in turn, each at its scheduling point; a signal
            # only for one that does not come back in time.
            self.scheduler.stop_all()
            self.coordinator.kick()
            await anyio.sleep(_GRACE_S)
            self._signal_all(signal.SIGKILL)
            return
        if self.launcher is not None and not self.launcher_done:
            self.launcher.stop()
        self._signal_all(signal.SIGTERM)
        deadline = anyio.current_time() + _GRACE_S
        while (left := deadline - anyio.current_time()) > 0:
            await anyio.sleep(min(_NUDGE_S, left))
            if left > _NUDGE_S:
                self._signal_all(signal.SIGTERM)
        self._signal_all(signal.SIGKILL)

    def _seconds(self) -> float:
        """Seconds since the run began (the wall scale of ``ts``)."""
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def _live(self) -> list[str]:
        """Actors alive now, by name (started, not exited, not ended in a virtual run)."""
        ended = self.scheduler.ended_at if self.scheduler is not None else {}
        return sorted(
            name for name, r in self.records.items()
            if r.pid is not None and r.exitcode is None and name not in ended
        )  # fmt: skip

    def _faults(self, history: History, log: Any) -> None:
        """Arm the config's faults (sim.runtime.nemesis)."""
        config = self.config
        scheduler = self.scheduler
        nemesis = self.nemesis = Nemesis(
            config.faults, seed=self.seed, speedup=config.clock.speedup, live=self._live,
            send=self._send, log=log, act=None if scheduler is None else self._virtual_act,
        )  # fmt: skip
        history.subscribe(nemesis)
        if scheduler is None:
            return
        # A virtual run does each fault at an exact step: before the next grant.
        scheduler.before_grant = nemesis.fire_due
        for at, i in nemesis.timed():
            scheduler.add_timer(at, functools.partial(nemesis.fire_timed, i))

    def _virtual_act(self, name: str, fault: Fault, sig: int) -> None:
        """A fault in a virtual run: the scheduler lets nothing run until the target has
        ended, or, for a pause, none of its tasks until the pause is over."""
        scheduler, nemesis = self.scheduler, self.nemesis
        assert scheduler is not None
        assert nemesis is not None
        if fault.for_ is not None:
            until = scheduler.now + fault.for_ * 60.0 / self.config.clock.speedup
            scheduler.pause(name, until, lambda: nemesis.resume(name))
        else:
            scheduler.hold_for(name)
        self._send(name, sig)

    def _scheduler(self, history: History) -> Scheduler:
        engine = self.config.engine
        policy: Policy
        if self.replaying is not None:
            policy = Forced(self.replaying, strict=self.replaying.strict)
        else:
            seed = engine.schedule_seed if engine.schedule_seed is not None else self.seed
            policy = make_policy(engine.schedule, seed, engine.pct_depth, 1000)
        scheduler = Scheduler(
            history,
            policy,
            expected=[a.name for a in self.actors],
            max_steps=engine.max_steps,
            on_deadlock=self._virtual_deadlock,
            on_limit=self._step_limit,
            on_end=self._ended,
            on_exit=self._exit_said,
            on_diverge=self._diverged,
            cpu=self.cpu,
        )
        if engine.record_choices:
            scheduler.trace = []
        return scheduler

    def _spawned(self) -> None:
        """Every actor has been started (and its spawn logged): a virtual run may begin."""
        if self.scheduler is not None:
            self.scheduler.spawned = True
            if self.coordinator is not None:
                self.coordinator.kick()

    def _ended(self, name: str) -> bool:
        """The scheduler says ``name`` has ended: if its exit was seen already, log it now
        (True); otherwise the scheduler waits for it."""
        seen = self._exits_seen.pop(name, None)
        if seen is None:
            return False
        self._log_exit(name, *seen)
        return True

    def _exit_said(self, name: str, code: int) -> None:
        """``name``'s process, ended, says it exits with ``code`` now, every descriptor but its
        connection closed (sim.runtime.worker._exit_virtual): for the run it has exited, as if
        it had been reaped (logged, judged, the scheduler let go on); the reaping is only
        recorded when it comes."""
        scheduler = self.scheduler
        record = self.records.get(name)
        if scheduler is None or record is None or name not in scheduler.ended_at:
            return  # not an actor of the run that has ended: not a word to take
        if name in self._exit_logged:
            return  # reaped and logged already
        self._log_exit(name, record.pid, code)
        self._judge(name, code)
        scheduler.exited(name)

    def _log_exit(self, name: str, pid: int | None, code: int | None) -> None:
        """A virtual run's exit line, once an actor: at the step it ended."""
        self._exit_logged.add(name)
        self.log.info("exit", target=name, target_pid=pid, code=code)

    def _storage_failed(self, path: Path, exc: OSError) -> None:
        """The events file cannot be written: stop the run, which can no longer be recorded."""
        if self.storage_error is not None:
            return
        self.storage_error = StorageError(
            f"cannot write {path}: {exc.strerror or exc}; the run was stopped"
        )
        self.status, self.reason = "failed", str(self.storage_error)
        self.stop.set()

    def _virtual_deadlock(self, waits: list[dict[str, Any]], words: str, cycle: list[str]) -> None:
        extra = {"cycle": cycle} if cycle else {}
        self.log.info("deadlock", waits=waits, explanation=words, **extra)
        if self.status == "ok":
            self.status = "deadlock"
            self.reason = f"deadlock: {words}"
        self._say_stopping()
        self.stop.set()

    def _say_stopping(self) -> None:
        """The engine's ``stopping`` line: why, what the run comes to (a replay tells a run cut
        short from one at its end by it), and how many actors are still running."""
        self.log.info("stopping", reason=self.reason, status=self.status, live=self.live)

    def _diverged(self, exc: Exception) -> None:
        self.status = "failed"
        self.reason = str(exc)
        self._say_stopping()
        self.stop.set()

    def _step_limit(self, steps: int) -> None:
        if self.status == "ok":
            self.status = "timeout"
            self.reason = f"still running after {steps:,} steps (engine.max_steps)"
        self._say_stopping()
        assert self.scheduler is not None
        self.scheduler.stop_all()
        self.stop.set()

    def _signal_all(self, sig: int) -> None:
        self.signalled = sig
        if self.launcher is not None:
            self.launcher.signal(sig)  # every live actor, in one command
        else:
            for name in list(self.procs):
                if self.records[name].exitcode is None:
                    self._send(name, sig)
        if self.unreaped == 0 and self._all_started():
            self.all_reaped.set()


def _ensure_open_files(actors: int, method: str) -> None:
    """Raise the open-file limit as far as allowed. The engine holds one descriptor per live
    actor under fork (its connection: the launcher reaps and signals the actors), about three
    under forkserver and spawn (its exit sentinel, its connection, a pipe end while it
    starts)."""
    needed = (1 if method == "fork" else 3) * actors + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = min(limit, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ScenarioError(
            f"{actors} actors need about {needed} open files, but the limit is {soft} "
            "(raise it with `ulimit -n`, or run fewer actors)"
        )


def _assert_single_threaded(method: str) -> None:
    if method == "fork" and threading.active_count() > 1:
        # A thread in the engine could hold a lock at the moment of fork and leave it held
        # forever in the child; refuse rather than risk a hang.
        names = ", ".join(t.name for t in threading.enumerate())
        raise ScenarioError(
            f"the engine is multi-threaded ({names}), so it cannot fork safely: a scenario "
            "module must not start threads when it is imported"
        )


def _release(specs: Sequence[PrimSpec[Any]], raw: dict[str, tuple[str, Any]]) -> None:
    """Free what outlives processes (shared-memory blocks are unlinked here, by their owner)."""
    for spec, (_, obj) in zip(specs, raw.values(), strict=True):
        spec.release(obj)
