"""The launcher (sim.runtime._launcher) on its own: what ``prepare`` sets up its actors inherit,
its reports name every actor, each start before its exit, and an actor's last words come before
its exit."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import socket
import sys

import pytest

from sim.runtime import _launcher
from sim.runtime._sink import STOP_SIGNALS
from sim.runtime.worker import _exit_virtual
from sim.virtual.gate import Gate


class _State:
    prepared_in = 0  # the pid of the process that ran prepare(), in the launcher's copy
    engine = os.getpid()  # the test process
    late = ""  # the file a thread of an actor writes after the actor's target has returned


def _prepare() -> None:
    _State.prepared_in = os.getpid()


def _child() -> None:
    # Exit status: 3 if prepare() ran in the parent (the launcher) and stdin is the null device.
    inherited = _State.prepared_in == os.getppid()
    null = os.path.realpath(f"/proc/self/fd/{sys.stdin.fileno()}") == os.devnull
    sys.exit(3 if inherited and null else 4)


def _reports(fd: int) -> list[list[str]]:
    data = b""
    while True:
        select.select([fd], [], [], 30)
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            return [line.split() for line in data.decode("ascii").splitlines()]
        data += chunk


@pytest.mark.timeout(60)
def test_actors_inherit_what_prepare_set_up_and_every_one_is_reported() -> None:
    n = 20  # more than one round of reaping (every 8 forks)
    mp = multiprocessing.get_context("fork")
    procs = [mp.Process(target=_child, name=f"a-{i}", daemon=True) for i in range(n)]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        launcher = _launcher.start(procs, close=[], pipes=[], prepare=_prepare)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    assert _State.prepared_in == 0  # in the launcher only
    try:
        launcher.go()
        reports = _reports(launcher.reports)
    finally:
        launcher.close()
    started = {int(r[2]): int(r[1]) for r in reports if r[0] == "S"}
    assert sorted(started.values()) == list(range(n))
    assert [r for r in reports if r[0] == "D"] == [["D", str(n)]]
    order = [(r[0], int(r[2] if r[0] == "S" else r[1])) for r in reports if r[0] in "SX"]
    exits = {int(r[1]): int(r[2]) for r in reports if r[0] == "X"}
    assert exits == dict.fromkeys(started, 3)
    for pid in started:
        assert order.index(("S", pid)) < order.index(("X", pid))


# -- the actor's bootstrap: what multiprocessing's gave a forked child, the launcher gives ------

_QUEUE: multiprocessing.queues.Queue[object] | None = None


def _identity() -> None:
    # Exit status 5 if the process looks to multiprocessing as a child of the test process (the
    # engine), whose launcher forked it.
    me = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    fine = (
        me.name == "identity"
        and parent is not None
        and parent.pid == me._parent_pid == _State.engine  # type: ignore[attr-defined]
        and os.getppid() != _State.engine
        and multiprocessing.get_start_method() == "fork"
        and not multiprocessing.active_children()
    )
    sys.exit(5 if fine else 6)


def _exit_with_text() -> None:
    sys.exit("a reason")


def _exit_none() -> None:
    sys.exit(None)


def _raises() -> None:
    raise RuntimeError("a role's bug")


def _queues_and_returns() -> None:
    # Returns at once: the item is still in the queue's buffer, and only the exit's
    # finalizers (the feeder's flush and join) get it to the parent.
    assert _QUEUE is not None
    _QUEUE.put("x" * 200_000)


def _late_thread() -> None:
    # A non-daemon thread outlives the target: the exit waits for it, as multiprocessing's does.
    import threading
    import time

    def late() -> None:
        time.sleep(0.2)
        with open(_State.late, "w") as fh:
            fh.write("late")

    threading.Thread(target=late).start()


def _mark_finalized(path: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")


@pytest.mark.timeout(60)
def test_actors_start_exit_and_report_as_multiprocessing_children(
    capfd: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]
) -> None:
    global _QUEUE
    from multiprocessing import util

    mp = multiprocessing.get_context("fork")
    _QUEUE = mp.Queue()
    marks = os.path.join(tmp_path, "finalized")
    _State.late = os.path.join(tmp_path, "late")
    # A finalizer of the parent's: an actor must not run it when it exits.
    finalize = util.Finalize(_State, _mark_finalized, args=(marks,), exitpriority=10)
    targets = {
        "identity": _identity,
        "text": _exit_with_text,
        "none": _exit_none,
        "raises": _raises,
        "queue": _queues_and_returns,
        "thread": _late_thread,
    }
    procs = [mp.Process(target=t, name=name, daemon=True) for name, t in targets.items()]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        launcher = _launcher.start(procs, close=[], pipes=[])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        launcher.go()
        # (First: the queue's actor exits only once its item has been read.)
        got = _QUEUE.get(timeout=30)
        reports = _reports(launcher.reports)
    finally:
        launcher.close()
        finalize()  # ours, now: the file gets the test's pid once
        _QUEUE = None
    index = {int(r[2]): int(r[1]) for r in reports if r[0] == "S"}
    codes = {list(targets)[index[int(r[1])]]: int(r[2]) for r in reports if r[0] == "X"}
    assert codes == {"identity": 5, "text": 1, "none": 0, "raises": 1, "queue": 0, "thread": 0}
    assert got == "x" * 200_000
    with open(_State.late) as fh:
        assert fh.read() == "late"  # before the actor's exit was reported
    err = capfd.readouterr().err
    assert "a reason\n" in err
    assert "Process raises:\n" in err
    assert "RuntimeError: a role's bug" in err
    with open(marks) as fh:
        assert fh.read().split() == [str(os.getpid())]  # the parent's run only


class _Exiting:
    sock: socket.socket | None = None  # the actor's end of its connection


def _says_its_exit() -> None:
    # A virtual run's actor at its end: its last words close every other descriptor and say
    # the exit status; then it lingers, as a process being torn down would, until the test
    # has looked (it closes its end of the connection).
    assert _Exiting.sock is not None
    gate = Gate("exiting", _Exiting.sock, lambda: b'{"event":"held"}\n')
    sock = _Exiting.sock

    def last(code: int) -> None:
        _exit_virtual(gate, sock, code)
        sock.settimeout(30)
        sock.recv(1)

    assert _launcher.on_exit(last)
    sys.exit(7)


@pytest.mark.timeout(60)
def test_an_actors_last_words_close_its_descriptors_and_say_its_exit_before_it_exits() -> None:
    assert not _launcher.on_exit(print), "registered nowhere but in an actor"
    mp = multiprocessing.get_context("fork")
    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    # Handed to the launcher as a pipe end it lets go of once its actors have their copies.
    writer = open(write_end, "wb", buffering=0)  # noqa: SIM115 - closed by the launcher
    _Exiting.sock = theirs
    proc = mp.Process(target=_says_its_exit, name="exiting", daemon=True)
    so_far: list[list[str]] = []
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        launcher = _launcher.start([proc], close=[ours], pipes=[writer])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        writer.close()
        _Exiting.sock = None
    try:
        launcher.go()
        ours.settimeout(30)
        said = b""
        while not said.endswith(b"\n") or b"!" not in said:
            chunk = ours.recv(4096)
            assert chunk, "the connection closed before the actor said its exit"
            said += chunk
        # Said with what was held, and with the status it exits with.
        assert said == b'{"event":"held"}\n!{"req":"exit","code":7}\n'
        # Its copy of the pipe's write end was closed before it said so: EOF, without its exit
        # (it waits for us to close our end first). The launcher's copy goes once it has forked
        # its actors, which on a loaded machine may be a moment after the actor spoke.
        ready, _, _ = select.select([read_end], [], [], 10)
        assert ready, "no EOF: the actor still holds the write end"
        assert os.read(read_end, 1) == b""
        # ...and the connection is shut down for writing (nothing more will come on it)...
        assert ours.recv(1) == b""
        # ...while the process is still there: started, not reaped.
        so_far = _reports_so_far(launcher.reports)
        assert "X" not in [r[0] for r in so_far]
        os.kill(int(so_far[0][2]), 0)
    finally:
        ours.close()  # the actor's last words return: it exits
        reports = so_far + _reports(launcher.reports)
        launcher.close()
        os.close(read_end)
    assert [(r[0], r[2]) for r in reports if r[0] == "X"] == [("X", "7")]


def _reports_so_far(fd: int) -> list[list[str]]:
    """The launcher's reports that have come (whole lines: each is one write)."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    return [line.split() for line in data.decode("ascii").splitlines()]
