"""A stop signal never leaves an operation that has returned without its completion line.

An actor is stopped with SIGTERM (a crash fault: SIGUSR1) wherever it is. If that lands after
a wrapper's call has returned (a unit taken, a connection accepted) and before its ``ok`` or
``fail`` line is queued, the operation would look blocked for ever: replay and the exports
would show it pending. Each test runs one operation of a real primitive (a real socket, a real
multiprocessing object) through an actor's real log path, and delivers the stop, by calling
the actor's signal handler, at every point after the call returned where CPython could run a
signal handler: each Python function's entry (the frame passed is the callee's) and each
return of a C function (the caller's frame). The completion line must be there every time, and
the stop must still happen, at the latest with the next line.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import queue as stdlib_queue
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest
import structlog

import sim
from sim.kinds import condition, event, pipe, queue, semaphore, shared, tcp, udp
from sim.kinds.barrier import LoggedBarrier
from sim.runtime import worker
from sim.runtime._logger import ActorLogger
from sim.runtime._sink import HeldSink
from sim.runtime.clock import Clock
from sim.virtual.gate import Gate
from tests.test_actor_log import _lines, _path

MP = multiprocessing.get_context("fork")
SIM = str(Path(sim.__file__).parent)
CLOCK = Clock(60.0, time.monotonic_ns())  # a simulated minute is a second


@dataclass
class Case:
    """``make(log)`` gives the operation to run (on a fresh primitive, where it returns at
    once) and what to close after it; ``raw`` names the call whose return the stop follows."""

    make: Callable[[Any], tuple[Callable[[], Any], Callable[[], None]]]
    raw: str


def _nothing() -> None:
    pass


def _sem_acquire(log: Any) -> Any:
    w = semaphore.LoggedSemaphore("s", MP.Semaphore(1), log, CLOCK, "semaphore")
    return w.acquire, _nothing


def _sem_release(log: Any) -> Any:
    w = semaphore.LoggedSemaphore("s", MP.Semaphore(0), log, CLOCK, "semaphore")
    return w.release, _nothing


def _event_wait(log: Any) -> Any:
    raw = MP.Event()
    raw.set()
    return event.LoggedEvent("e", raw, log, CLOCK).wait, _nothing


def _event_set(log: Any) -> Any:
    return event.LoggedEvent("e", MP.Event(), log, CLOCK).set, _nothing


def _queue_put(log: Any) -> Any:
    raw = MP.Queue()
    w = queue.LoggedQueue("q", raw, log, CLOCK, "queue")

    def close() -> None:
        raw.close()
        raw.join_thread()

    return (lambda: w.put(1)), close


def _queue_get(log: Any) -> Any:
    raw = MP.Queue()
    raw.put(1)
    deadline = time.monotonic() + 10
    while raw.empty() and time.monotonic() < deadline:  # in the pipe: the get returns at once
        time.sleep(0.001)
    return queue.LoggedQueue("q", raw, log, CLOCK, "queue").get, _nothing


def _pipe(do: Callable[[pipe.LoggedConnection], Any]) -> Callable[[Any], Any]:
    """``do`` on one end of a fresh pipe whose other end has sent an item already."""

    def make(log: Any) -> Any:
        a, b = MP.Pipe()
        b.send(1)
        w = pipe.LoggedConnection("p", a, log, CLOCK, "a")

        def close() -> None:
            a.close()
            b.close()

        return (lambda: do(w)), close

    return make


def _barrier_wait(log: Any) -> Any:
    return LoggedBarrier("b", MP.Barrier(1), log, CLOCK).wait, _nothing


def _condition_wait(log: Any) -> Any:
    raw = MP.Condition()
    raw.acquire()
    w = condition.LoggedCondition("c", raw, log, CLOCK)
    return (lambda: w.wait(timeout=0.0001)), raw.release


def _condition_notify(log: Any) -> Any:
    raw = MP.Condition()
    raw.acquire()
    return condition.LoggedCondition("c", raw, log, CLOCK).notify, raw.release


def _value_read(log: Any) -> Any:
    w = shared.LoggedValue("v", MP.Value("i", 3), log, CLOCK)
    return (lambda: w.value), _nothing


class _Accepting:
    """A listening socket that keeps what it accepts: a stop after ``accept`` returned must
    not leave the test a connection it cannot close."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.accepted: list[socket.socket] = []

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = self.sock.accept()
        self.accepted.append(conn)
        return conn, address

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _tcp_accept(log: Any) -> Any:
    listener = tcp.tcp_listen("t", log, CLOCK, "127.0.0.1", 0, 8)
    accepting = _Accepting(listener._sock)
    listener._sock = accepting  # type: ignore[assignment]
    client = socket.create_connection(("127.0.0.1", listener.port))

    def close() -> None:
        for conn in accepting.accepted:
            conn.close()
        client.close()
        accepting.sock.close()

    return listener.accept, close


def _tcp_accept_closed(log: Any) -> Any:
    # The case: another thread closed the listener, so accept fails and says so.
    listener = tcp.tcp_listen("t", log, CLOCK, "127.0.0.1", 0, 8)
    listener.close()
    return listener.accept, _nothing


@contextmanager
def _connected(log: Any) -> Iterator[tuple[tcp.TcpStream, socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0))
    raw = socket.create_connection(server.getsockname())
    other, _ = server.accept()
    server.close()
    try:
        yield tcp.TcpStream("t", raw, log, CLOCK, "peer"), other
    finally:
        raw.close()
        other.close()


def _tcp_stream(which: str) -> Callable[[Any], Any]:
    def make(log: Any) -> Any:
        cm = _connected(log)
        stream, other = cm.__enter__()
        other.sendall(b"hello\n")
        op = (lambda: stream.send_line("hi")) if which == "send" else stream.recv_line
        return op, lambda: cm.__exit__(None, None, None)

    return make


def _udp_recvfrom(log: Any) -> Any:
    w = udp.udp("u", log, CLOCK, "127.0.0.1", 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"hi", ("127.0.0.1", w.port))

    def close() -> None:
        sender.close()
        w._sock.close()

    return w.recvfrom, close


def _queue_get_empty(log: Any) -> Any:
    w = queue.LoggedQueue("q", MP.Queue(), log, CLOCK, "queue")

    def get() -> None:
        with contextlib.suppress(stdlib_queue.Empty):
            w.get(block=False)

    return get, _nothing


def _pipe_recv_eof(log: Any) -> Any:
    a, b = MP.Pipe()
    b.close()
    w = pipe.LoggedConnection("p", a, log, CLOCK, "a")

    def recv() -> None:
        with contextlib.suppress(EOFError):
            w.recv()

    return recv, a.close


def _barrier_broken(log: Any) -> Any:
    raw = MP.Barrier(2)
    raw.abort()
    w = LoggedBarrier("b", raw, log, CLOCK)

    def wait() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            w.wait()

    return wait, _nothing


def _sem_release_fail(log: Any) -> Any:
    w = semaphore.LoggedSemaphore("s", MP.BoundedSemaphore(1), log, CLOCK, "semaphore")

    def release() -> None:
        with contextlib.suppress(ValueError):
            w.release()

    return release, _nothing


def _udp_timeout(log: Any) -> Any:
    w = udp.udp("u", log, CLOCK, "127.0.0.1", 0)
    return (lambda: w.recvfrom(timeout=0.0001)), w._sock.close


def _value_write(log: Any) -> Any:
    w = shared.LoggedValue("v", MP.Value("i", 3), log, CLOCK)

    def write() -> None:
        w.value = 4

    return write, _nothing


CASES = {
    "semaphore-acquire": Case(_sem_acquire, "acquire"),
    "semaphore-release": Case(_sem_release, "release"),
    "event-wait": Case(_event_wait, "wait"),
    "event-set": Case(_event_set, "set"),
    "queue-put": Case(_queue_put, "put"),
    "queue-get": Case(_queue_get, "get"),
    "pipe-send": Case(_pipe(lambda w: w.send(1)), "send"),
    "pipe-recv": Case(_pipe(lambda w: w.recv()), "recv"),
    "barrier-wait": Case(_barrier_wait, "wait"),
    "condition-wait": Case(_condition_wait, "_call"),
    "condition-notify": Case(_condition_notify, "_call"),
    "value-read": Case(_value_read, "getvalue"),
    "tcp-accept": Case(_tcp_accept, "accept"),
    "tcp-accept-closed": Case(_tcp_accept_closed, "accept"),
    "tcp-send": Case(_tcp_stream("send"), "sendall"),
    "tcp-recv": Case(_tcp_stream("recv"), "recv"),
    "udp-recvfrom": Case(_udp_recvfrom, "recvfrom"),
    "queue-get-empty": Case(_queue_get_empty, "get"),
    "pipe-recv-eof": Case(_pipe_recv_eof, "recv"),
    "barrier-broken": Case(_barrier_broken, "wait"),
    "semaphore-release-fail": Case(_sem_release_fail, "release"),
    "udp-recvfrom-timeout": Case(_udp_timeout, "recvfrom"),
    "value-write": Case(_value_write, "setvalue"),
}

_LOG_CALLS = {"ActorLogger.info", "ActorLogger.debug", "ActorLogger.warning"}
# Where a handler can run: a Python function's entry, the return of a C function.
_POINTS = ("call", "c_return")


def _key(frame: FrameType, what: str, arg: Any) -> tuple[CodeType, str, str]:
    return frame.f_code, what, getattr(arg, "__name__", "") if what.startswith("c_") else ""


def _under(frame: FrameType | None, code: CodeType) -> bool:
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _profile(case: Case, stop_at: tuple[Any, int] | None = None) -> dict[str, Any]:
    """Run the case's operation once, profiled; with ``stop_at`` (a point's key and its
    occurrence), deliver SIGTERM there. What happened: the points seen, the lines logged,
    whether the stop was raised by the operation or by the next line."""
    log, guard, _threads, sink, got, reader = _path()
    op, close = case.make(log)
    stamp = next(iter(guard.codes))
    seen: list[tuple[str, FrameType, Any]] = []
    counts: dict[Any, int] = {}
    delivered = False

    def profiler(frame: FrameType, what: str, arg: Any) -> None:
        nonlocal delivered
        seen.append((what, frame, arg))
        if stop_at is None or delivered or what not in _POINTS:
            return
        key = _key(frame, what, arg)
        counts[key] = counts.get(key, 0) + 1
        if (key, counts[key]) == stop_at:
            delivered = True
            guard.handler(signal.SIGTERM, frame)

    raised = None
    hook = sys.unraisablehook
    # As in an actor (worker.prepare): a point may be inside a finalizer that the garbage
    # collector runs (multiprocessing frees a shared-memory block in one), where Python drops
    # what is raised.
    guard.install()
    try:
        with warnings.catch_warnings():
            # A connection accepted by an accept that a stop then cut short is dropped
            # unclosed, as it is when the actor exits.
            warnings.simplefilter("ignore", ResourceWarning)
            sys.setprofile(profiler)
            try:
                op()
            except worker._Terminated:
                raised = "op"
            finally:
                sys.setprofile(None)
        if raised is None:
            try:
                log.info("after")
            except worker._Terminated:
                raised = "next line"
    finally:
        sys.unraisablehook = hook
    close()
    sink.close()
    reader.join(timeout=10)
    return {
        "seen": seen,
        "lines": _lines(got) if got else [],
        "delivered": delivered,
        "raised": raised,
        "stamp": stamp,
    }


_CALLBACKS = ("/weakref.py", "/_weakrefset.py")


def _points(case: Case, run: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The points before and after the case's call returned into the frame that logs the
    completion, outside the processor (which defers a stop by itself), as (key, occurrence)."""
    seen = run["seen"]
    logs = [f for what, f, _ in seen if what == "call" and f.f_code.co_qualname in _LOG_CALLS]
    assert logs, "the operation logged nothing"
    completing = logs[-1].f_back.f_code
    returned = next(
        i for i, (what, f, arg) in enumerate(seen)
        if (what == "return" and f.f_code.co_name == case.raw and f.f_back
            and f.f_back.f_code is completing)
        or (what in ("c_return", "c_exception") and f.f_code is completing
            and arg.__name__ == case.raw)
    )  # fmt: skip
    before, after, counts = [], [], {}
    for i, (what, frame, arg) in enumerate(seen):
        if what not in _POINTS:
            continue
        key = _key(frame, what, arg)
        counts[key] = counts.get(key, 0) + 1
        if not _under(frame, completing) or _under(frame, run["stamp"]):
            continue
        if frame.f_code.co_filename.endswith(_CALLBACKS):
            # A weak reference's callback runs wherever the collector happens to free
            # something: no place of the wrapper's, and the next run may not have it there
            # (CI once stopped "before the return" at one that came after it).
            continue
        if i > returned:
            after.append((key, counts[key]))
        elif (frame if what == "c_return" else frame.f_back or frame).f_code is completing:
            # Before the return only the wrapper's own points: one inside the library would
            # break its invariants (a lock left half released), as a real signal could.
            before.append((key, counts[key]))
    return before, after


def _balanced(lines: list[dict[str, Any]]) -> bool:
    ops = [e for e in lines if e.get("event") == "op"]
    return (
        bool(ops)
        and ops[-1]["phase"] != "invoke"
        and sum(e["phase"] == "invoke" for e in ops) * 2 == len(ops)
    )


def _cut_short(complete: list[dict[str, Any]], lines: list[dict[str, Any]]) -> bool:
    """Did the stop cut the operation short, rather than wait for it to return? Its invoke
    was not logged, or it has no completion, or a completion that says it was interrupted."""
    ops = [e for e in lines if e.get("event") == "op"]
    whole = [e for e in complete if e.get("event") == "op"]
    if len(ops) < len(whole):
        return True
    return ops[-1].get("error") == "interrupted"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_a_stop_after_the_call_returned_waits_for_the_completion_line(name: str) -> None:
    case = CASES[name]
    dry = _profile(case)
    assert dry["raised"] is None
    assert _balanced(dry["lines"]), dry["lines"]
    before, points = _points(case, dry)
    assert points, "no point after the call: the case tests nothing"
    assert before, "no point before the return: the case tests nothing"
    for point in before:
        # The call has not returned: the stop is raised where it lands, at once (a wrapper
        # that marked itself returned too early would defer it, maybe while it blocks).
        run = _profile(case, stop_at=point)
        if run["delivered"]:
            where = f"{name}: a stop before the return, at {point}"
            assert run["raised"] == "op", f"{where}, was not raised in the operation"
            assert _cut_short(dry["lines"], run["lines"]), f"{where}, waited: {run['lines']}"
    for point in points:
        run = _profile(case, stop_at=point)
        if not run["delivered"]:
            # Only a point outside sim may not come again (a weak reference's callback).
            assert not point[0][0].co_filename.startswith(SIM), point
            continue
        where = f"{name}: a stop at {point[0][1]} of {point[0][0].co_qualname} #{point[1]}"
        assert _balanced(run["lines"]), f"{where} lost the completion line: {run['lines']}"
        assert run["raised"] is not None, f"{where} was lost"


@pytest.mark.timeout(30)
def test_a_stop_while_waiting_for_a_virtual_turn_is_raised_at_once() -> None:
    # In a virtual run a release takes effect, is marked returned, then waits for its turn:
    # waiting is no part of the operation, so a stop there is raised at once. (Deferred, it
    # would wait for a grant that may never come; here one is ready, so a deferred stop
    # would let the release log its ok line first.)
    ours, theirs = socket.socketpair()
    try:
        guard, threads = worker._StopGuard(), worker._Threads()
        sink = HeldSink(ours, after=guard.end)
        gate = Gate("a-1", ours, sink.take)
        t0 = time.monotonic_ns()
        procs = worker._processors("a-1", 42, t0, guard, threads, gate)
        log = structlog.wrap_logger(sink, processors=procs, wrapper_class=ActorLogger).bind()
        w = semaphore.LoggedSemaphore("s", MP.Semaphore(0), log, Clock(60.0, t0, gate), "s")
        theirs.sendall(b'{"do":"go","ts":0.0,"step":1}\n')
        waiting = Gate._read.__code__

        def profiler(frame: FrameType, what: str, arg: Any) -> None:
            if what == "call" and frame.f_code is waiting:
                sys.setprofile(None)
                guard.handler(signal.SIGTERM, frame)

        sys.setprofile(profiler)
        try:
            with pytest.raises(worker._Terminated):
                w.release()
        finally:
            sys.setprofile(None)
        sent = theirs.recv(1 << 16)
        assert b'"op":"release","phase":"invoke"' in sent
        assert b'"phase":"ok"' not in sent + sink.take()
    finally:
        ours.close()
        theirs.close()


class _Stopped:
    """An object whose finalizer a stop signal lands in."""

    def __init__(self, guard: worker._StopGuard) -> None:
        self.guard = guard

    def __del__(self) -> None:
        self.guard.handler(signal.SIGTERM, sys._getframe())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("by", ["refcount", "collector"])
def test_a_stop_that_lands_in_a_finalizer_is_raised_with_the_next_line(by: str) -> None:
    # Python prints what a finalizer raises and goes on: the stop would be lost, and the
    # actor would run until the engine kills it (seen in CI: a stop in multiprocessing's
    # Heap._remove_allocated_block, called by the garbage collector during an accept).
    log, guard, _threads, sink, got, reader = _path()
    hook = sys.unraisablehook
    guard.install()
    try:
        doomed = _Stopped(guard)
        if by == "collector":
            doomed.cycle = doomed  # type: ignore[attr-defined]
            del doomed
            gc.collect()
        else:
            del doomed  # the finalizer runs here; what it raised is dropped
        with pytest.raises(worker._Terminated):
            log.info("after")
        # Raised once: stopping is under way, and a repeat of the signal changes nothing.
        guard.handler(signal.SIGTERM, sys._getframe())
    finally:
        sys.unraisablehook = hook
        sink.close()
        reader.join(timeout=10)
    assert [e["event"] for e in _lines(got)] == ["after"]
