"""The launcher ("zygote") of the fork start method: one small process that forks every actor.

Forking 1,000 actors from the engine is slow: every fork copies the page tables of a process
whose event loop and coordinator keep writing to its memory between forks (each written page is
then copied again), and later actors inherit thousands of the engine's descriptors. So the engine
forks this launcher once, before its event loop exists, with every actor's process object
already built; the launcher closes what it must not hold (the coordinator's listening socket)
and, once told to go, forks the actors in a tight loop. It stays idle otherwise, so its pages
stay shared with the actors.

Engine and launcher talk through two pipes, in plain ASCII (nothing is ever unpickled):

* commands, engine → launcher: ``g`` (start forking), ``s`` (stop forking), ``k<sig> <index>``
  and ``k<sig> *`` (send signal <sig> to actor <index>, or to every live actor), each ended by
  a newline; EOF means that the engine has gone, and the launcher exits at once (its actors
  then see their parent change and exit too, as orphans);
* reports, launcher → engine, one record per line::

      S <index> <pid>    actor <index> was forked as <pid>
      F <index> <errno>  forking actor <index> failed; no more actors are forked
      D <count>          the launcher forks no more actors (<count> were forked)
      X <pid> <code>     actor <pid> exited (as multiprocessing reports it: -N for signal N)

The launcher reaps its actors and reports their exit codes, and signals them for the engine:
as their parent it is the one process for which an actor's pid cannot have been reused before
it was reaped, and the engine then holds no descriptor per actor (a pidfd each would cost
10,000 descriptors for 10,000 actors).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import context, process, util
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

__all__ = ["Launcher", "on_exit", "start"]

GO = b"g"
STOP = b"s"
# Exit status of a launcher that failed (an internal error, reported on stderr).
_FAILED = 70
# Children that exit while the launcher is still forking are reaped every this many forks.
_REAP_EVERY = 8

# In an actor forked by the launcher: its pid (not its children's, which inherit it), and what
# :func:`on_exit` registered.
_actor_pid = 0
_at_exit: Callable[[int], None] | None = None


def on_exit(hook: Callable[[int], None]) -> bool:
    """In an actor forked by the launcher: have ``hook(code)`` called just before the process
    exits with ``code``, once multiprocessing's bootstrap has done all it does (the role, the
    finalizers, the wait for threads, stdio flushed), and return True. Anywhere else (an actor
    of forkserver or spawn, a process an actor forked, the engine) register nothing and return
    False."""
    global _at_exit
    if _actor_pid != os.getpid():
        return False
    _at_exit = hook
    return True


@dataclass
class Launcher:
    """The engine's side of a running launcher."""

    pid: int
    commands: int  # write end
    reports: int  # read end, non-blocking

    def go(self) -> None:
        os.write(self.commands, GO)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.commands, STOP + b"\n")

    def signal(self, sig: int, index: int | None = None) -> None:
        """Have the launcher send ``sig`` to actor ``index`` (None: to every live actor)."""
        with contextlib.suppress(OSError):
            os.write(self.commands, f"k{sig} {'*' if index is None else index}\n".encode())

    def close(self) -> None:
        """Let go of the pipes (the launcher exits if it still waits) and reap the launcher."""
        for fd in (self.commands, self.reports):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def start(
    procs: Sequence[BaseProcess],
    close: Sequence[Any],
    pipes: Sequence[Any],
    prepare: Callable[[], None] | None = None,
) -> Launcher:
    """Fork the launcher of ``procs`` (not yet started; started in order, each by one fork).

    ``close`` are objects (with ``close()``) the launcher lets go of at once, ``pipes`` the
    pipe ends it holds only until every actor has its copies. ``prepare`` is called in the
    launcher before it forks: what it sets up every actor inherits instead of doing it
    itself. Call with the engine single-threaded and with the stop signals blocked: the
    launcher and its actors inherit the mask.
    """
    cmd_r, cmd_w = os.pipe()
    rep_r, rep_w = os.pipe()
    # As multiprocessing's fork start does: a line a script printed but has not flushed yet
    # would otherwise be copied into every actor, and written again when each one exits.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the launcher
        code = _FAILED
        try:
            os.close(cmd_w)
            os.close(rep_r)
            for obj in close:
                with contextlib.suppress(OSError):
                    obj.close()
            if prepare is not None:
                prepare()  # while the engine starts its event loop
            code = _serve(procs, cmd_r, rep_w, pipes)
        except BrokenPipeError:
            code = 0  # the engine has gone
        except BaseException:
            traceback.print_exc()
            with contextlib.suppress(Exception):
                sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(cmd_r)
    os.close(rep_w)
    os.set_blocking(rep_r, False)
    return Launcher(pid, cmd_w, rep_r)


def _serve(procs: Sequence[BaseProcess], cmd: int, rep: int, pipes: Sequence[Any]) -> int:
    # Nothing the launcher allocates needs collecting, and a collection would write to (and so
    # copy) pages it shares with the engine and the actors. The actors inherit this, as they
    # did from the engine's start loop.
    gc.disable()
    _share_stdin()
    _share_process_state(procs)
    if os.read(cmd, 1) != GO:
        return 0  # the engine failed, or went, before the run began
    os.set_blocking(cmd, False)
    live: set[int] = set()
    commands = _Commands(cmd)
    forked = 0
    for index, proc in enumerate(procs):
        if not commands.read(live):
            return 0  # the engine has gone: stop now, the orphans exit by themselves
        if commands.stopped:
            break
        try:
            pid = os.fork()
        except OSError as exc:
            _report(rep, f"F {index} {exc.errno or 0}\n")
            break
        if pid == 0:
            _child(proc, cmd, rep)
        live.add(pid)
        commands.pids[index] = pid
        forked += 1
        # At once, not batched: an actor logs within milliseconds of its fork, and the engine
        # must know it by then (a fault's target is looked up among the live actors).
        _report(rep, f"S {index} {pid}\n")
        if forked % _REAP_EVERY == 0:
            _reap(live, rep)
    # Every actor has its copies now: a pipe's reader sees EOF once its writers close theirs.
    for end in pipes:
        end.close()
    _report(rep, f"D {forked}\n")
    os.set_blocking(cmd, True)
    # From now on only wait: for an exit (SIGCHLD, through the wake-up pipe) or for the engine
    # to go (EOF on the command pipe). Installed after the last fork: no actor inherits it.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        _reap(live, rep)
        if not live:
            return 0
        ready, _, _ = select.select([cmd, wake_r], [], [])
        if cmd in ready and not commands.read(live):
            return 0
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)


def _share_stdin() -> None:
    """Do to stdin once, here, what multiprocessing's bootstrap does in every child (close it,
    open the null device in its place, as a text file): every actor inherits the result, and
    the bootstrap skips its own pass (opening a text file cost each actor ~0.2 ms, mostly pages
    copied on write)."""
    util._close_stdin()  # type: ignore[attr-defined]
    util._close_stdin = _stdin_shared  # type: ignore[attr-defined]


def _stdin_shared() -> None:
    """multiprocessing's ``_close_stdin`` in the launcher and its actors: already done."""


class _Commands:
    """The engine's commands, read as they come (the pipe is non-blocking while forking)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.stopped = False
        self.pids: dict[int, int] = {}
        self._buf = b""

    def read(self, live: set[int]) -> bool:
        """Do what has come; False once the engine has gone (EOF)."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return True
        if not data:
            return False
        *lines, self._buf = (self._buf + data).split(b"\n")
        for line in lines:
            if line.strip() == STOP:
                self.stopped = True
            if line.startswith(b"k"):
                self._signal(line, live)
        return True

    def _signal(self, line: bytes, live: set[int]) -> None:
        sig, _, who = line[1:].partition(b" ")
        # Only children not yet reaped: their pids cannot belong to anybody else.
        if who == b"*":
            targets = list(live)
        else:
            pid = self.pids.get(int(who))
            targets = [pid] if pid is not None and pid in live else []
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, int(sig))


def _share_process_state(procs: Sequence[BaseProcess]) -> None:
    """Do once, here, the parts of multiprocessing's bootstrap of a child that are the same in
    every actor, so that each inherits them instead of writing them again (every write in a
    fresh actor copies a page it shares with the launcher: the bootstrap cost each ~0.35 ms).

    The state set is that of a child process of the engine, true of the launcher as well: the
    start method, a fresh counter for the children it would make, no children yet, the
    engine as its parent, and no finalizers: the engine's are not the actors' to run (each
    checks its pid and would do nothing in another process), and with none left an actor can
    skip multiprocessing's exit function (see :func:`_bootstrap`).
    """
    if not procs:
        return
    first = procs[0]
    method = getattr(first, "_start_method", None)
    if method is not None:
        context._force_start_method(method)
    process._process_counter = itertools.count(1)  # type: ignore[attr-defined]
    process._children = set()  # type: ignore[attr-defined]
    parent: Any = first  # the engine, as every actor's process object records it
    process._parent_process = process._ParentProcess(  # type: ignore[attr-defined]
        parent._parent_name, parent._parent_pid, None
    )
    util._finalizer_registry.clear()  # type: ignore[attr-defined]


def _child(proc: BaseProcess, cmd: int, rep: int) -> NoReturn:  # pragma: no cover
    """An actor, just forked: run it as multiprocessing's fork start would, never return."""
    global _actor_pid
    _actor_pid = os.getpid()
    code = 1
    try:
        os.close(cmd)
        os.close(rep)
        code = _bootstrap(proc)
        if _at_exit is not None:
            try:
                _at_exit(code)
            except BaseException as exc:  # the process exits anyway; its parent reaps it
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"sim: {proc.name}: at exit: {exc!r}\n")
                    sys.stderr.flush()
    finally:
        os._exit(code)


def _bootstrap(proc: BaseProcess) -> int:  # pragma: no cover - runs in an actor
    """What multiprocessing's bootstrap of a forked child does that differs between actors
    (the rest was done once, by :func:`_share_process_state`): the current process, the
    after-fork hooks of the objects inherited (a lock's count of holds by this process), the
    target with SystemExit mapped to an exit code and any other exception reported, the
    finalizers (a queue's feeder flushes), the wait for non-daemon threads, stdio flushed.
    Returns the exit code."""
    try:
        process._current_process = proc  # type: ignore[attr-defined]
        threading.main_thread()._set_native_id()  # type: ignore[attr-defined]
        util._run_after_forkers()  # type: ignore[attr-defined]
        try:
            proc.run()
            code = 0
        finally:
            # With no finalizer registered and no child started since the fork, multiprocessing's
            # exit function has nothing to do (~60 µs of calls, and the pages they write).
            if util._finalizer_registry or process._children:  # type: ignore[attr-defined]
                util._exit_function()  # type: ignore[attr-defined]
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        code = 1
        sys.stderr.write(f"Process {proc.name}:\n")
        traceback.print_exc()
    finally:
        threading._shutdown()  # type: ignore[attr-defined]
        util._flush_std_streams()  # type: ignore[attr-defined]
    return code


def _exit_code(exc: SystemExit) -> int:
    """The exit status of a process that raised ``exc``, as multiprocessing maps it."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return 1


def _reap(live: set[int], rep: int) -> None:
    while live:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            live.clear()
            return
        if pid == 0:
            return
        live.discard(pid)
        _report(rep, f"X {pid} {os.waitstatus_to_exitcode(status)}\n")


def _report(rep: int, record: str) -> None:
    data = record.encode("ascii")
    while data:
        data = data[os.write(rep, data) :]
