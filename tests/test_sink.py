"""The actor sink's own parts: its flag (an Event on a bare lock) and its flusher thread."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from sim.runtime._sink import BatchingSink, EngineWatch, HeldSink, _Flag


def test_flag_behaves_as_an_event() -> None:
    flag = _Flag()
    assert not flag.wait(0.01)
    flag.set()
    flag.set()  # twice: still just set
    assert flag.wait(0)
    assert flag.wait(0)
    flag.clear()
    flag.clear()
    assert not flag.wait(0)
    assert _Flag(True).wait(0)


@pytest.mark.timeout(10)
def test_flag_set_by_another_thread_wakes_the_waiter() -> None:
    flag = _Flag()
    setter = threading.Timer(0.05, flag.set)
    setter.start()
    assert flag.wait(5)
    setter.join()


@pytest.mark.timeout(20)
def test_close_sends_everything_and_waits_for_the_flusher() -> None:
    ours, theirs = socket.socketpair()
    before = set(os.listdir("/proc/self/task"))
    sink = BatchingSink(ours, 0.2, EngineWatch(os.getpid()))
    (flusher,) = set(os.listdir("/proc/self/task")) - before  # a thread of its own
    assert flusher
    for i in range(1000):
        sink.msg(b"line %d" % i)
    sink.close()
    # Everything, then EOF: the connection was shut down only after the flusher had sent all.
    data = b""
    while chunk := theirs.recv(1 << 16):
        data += chunk
    assert data.split(b"\n")[:-1] == [b"line %d" % i for i in range(1000)]
    assert data.endswith(b"\n")
    theirs.close()


@pytest.mark.timeout(60)
def test_a_full_batch_goes_at_once_not_after_the_flush_interval() -> None:
    # A producer that reaches the high-water mark waits for the flusher: the flusher must
    # then send at once, not sleep out its flush interval first (here far longer than the
    # test's timeout, so the old sleep would fail it).
    ours, theirs = socket.socketpair()
    sink = BatchingSink(ours, 3600.0, EngineWatch(os.getpid()))
    # The flusher is gathering (woken by the first line) when the batch fills up.
    sent = [b"first", *(b"line %d" % i for i in range(sink.HIGH_WATER))]
    for line in sent:
        sink.msg(line)  # the one that fills the batch waits until it is taken
    data = b""
    while data.count(b"\n") < sink.HIGH_WATER:
        data += theirs.recv(1 << 20)
    assert data.split(b"\n")[: sink.HIGH_WATER] == sent[: sink.HIGH_WATER]
    sink.close()  # the line after them, without waiting out the interval either
    while chunk := theirs.recv(1 << 20):
        data += chunk
    assert data.split(b"\n")[:-1] == sent
    theirs.close()


def test_a_sealed_held_sink_keeps_what_it_held_and_drops_what_comes_after() -> None:
    # Under fork a virtual run's actor seals its sink where it would close it (its last words
    # send what was held): a line logged later is dropped, as a closed sink drops it.
    ours, theirs = socket.socketpair()
    try:
        sink = HeldSink(theirs)
        sink.msg(b'{"event":"a"}\n')
        sink.seal()
        sink.msg(b'{"event":"late"}\n')
        assert sink.take() == b'{"event":"a"}\n'
        sink.msg(b'{"event":"later"}\n')
        assert sink.take() == b""
    finally:
        ours.close()
        theirs.close()
