"""The launcher (sim.runtime._launcher) on its own: what ``prepare`` sets up its actors inherit,
and its reports name every actor, each start before its exit."""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sys

import pytest

from sim.runtime import _launcher
from sim.runtime._sink import STOP_SIGNALS


class _State:
    prepared_in = 0  # the pid of the process that ran prepare(), in the launcher's copy


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
