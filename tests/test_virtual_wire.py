"""A virtual run's plumbing: its connections, read by the event loop's callback, and its CPU.

Real sockets, a real coordinator and scheduler, real forked processes; nothing mocked. The
coordinator tests' helpers make the clients (tests/test_coordinator.py).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from sim.history import History
from sim.virtual import cpu as cpu_claims
from sim.virtual.cpu import one_cpu
from sim.virtual.policy import Fifo
from sim.virtual.scheduler import Scheduler
from tests.test_coordinator import WAIT, closed_by_server, connect, event, hello, serve

pytestmark = pytest.mark.timeout(60)


def _scheduler(history: History, actors: list[str]) -> Scheduler:
    deadlocks: list[Any] = []
    scheduler = Scheduler(
        history,
        Fifo(),
        expected=actors,
        max_steps=1000,
        on_deadlock=lambda waits, words, cycle: deadlocks.append(words),
        on_limit=lambda step: None,
    )
    scheduler.spawned = True  # what the engine says once every actor has been started
    return scheduler


async def _grant(sock: socket.socket) -> dict[str, Any]:
    """The next grant the coordinator sends (one line)."""
    got = bytearray()
    with anyio.fail_after(WAIT):
        while not got.endswith(b"\n"):
            await anyio.wait_readable(sock)
            data = sock.recv(4096)
            assert data, "the coordinator closed the connection"
            got += data
    return dict(json.loads(got))


def _request(req: str, **fields: Any) -> bytes:
    return b"!" + json.dumps({"req": req, "task": 0, **fields}).encode() + b"\n"


async def test_a_request_sent_in_one_write_with_the_hello_is_answered(tmp_path: Path) -> None:
    # The stream's transport reads from the moment the connection is accepted, so the hello,
    # a line and the first request may all sit in its buffer when the virtual pump takes the
    # connection over: they must be taken over too, and the transport must stop reading, or
    # an actor waits for ever for the grant of a request nobody read. (Whether the transport
    # or the pump reads first is up to the event loop: a real run of four actors hung within
    # a few steps, and every test of tests/test_virtual.py would time out.)
    history = History()
    scheduler = _scheduler(history, ["a"])
    path = tmp_path / "events.jsonl"
    async with serve(tmp_path, history=history, scheduler=scheduler, actors=["a"]) as coord:
        # A plain blocking client, as an actor is: connected (by the kernel, before the
        # coordinator has accepted) and its first bytes sent before the event loop runs again.
        assert isinstance(coord.address, tuple)
        client = socket.create_connection(coord.address, timeout=WAIT)
        try:
            client.sendall(hello("a") + event("a", 0, "before") + _request("start"))
            client.setblocking(False)
            grant = await _grant(client)
            assert (grant["do"], grant["step"], grant["task"]) == ("go", 1, 0)
            # Steps of a line and a sleep each; the clock jumps to each sleep's end.
            for step in range(2, 52):
                client.sendall(event("a", step - 1, "after") + _request("sleep", seconds=2.5))
                grant = await _grant(client)
                assert (grant["do"], grant["step"]) == ("go", step)
                assert grant["ts"] == pytest.approx(2.5 * (step - 1))
            client.sendall(_request("end"))
            client.shutdown(socket.SHUT_WR)
            with anyio.fail_after(WAIT):
                await anyio.wait_readable(client)
            assert client.recv(100) == b""
        finally:
            client.close()
        with anyio.fail_after(WAIT + 1):
            assert await coord.drain(WAIT)
    lines = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    assert [line["event"] for line in lines if line["actor"] == "a"] == ["before"] + ["after"] * 50
    assert scheduler.end_order == ["a"]


async def test_a_bad_line_on_a_virtual_connection_closes_it(tmp_path: Path) -> None:
    history = History()
    scheduler = _scheduler(history, ["a", "b"])
    path = tmp_path / "events.jsonl"
    async with serve(tmp_path, history=history, scheduler=scheduler, actors=["a", "b"]) as coord:
        client = await connect(coord)
        await client.send(hello("a") + event("a", 0) + b"not json\n")
        assert await closed_by_server(client) == b""
        with anyio.fail_after(WAIT + 1):
            assert await coord.drain(WAIT)
    assert coord.counters.protocol_errors == 1
    lines = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    assert [line["event"] for line in lines if line["actor"] == "a"] == ["tick"]
    errors = [line for line in lines if line["event"] == "protocol_error"]
    assert [e["client"] for e in errors] == ["a"]
    assert "not a valid event line" in errors[0]["reason"]


def _affinity(conn: Any) -> None:
    conn.send(sorted(os.sched_getaffinity(0)))


@pytest.fixture
def own_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU claims of this test's own, which no other test's run takes: what it sees claimed
    is what it claimed itself (the kernel's abstract names, as every run's are)."""
    monkeypatch.setattr(cpu_claims, "_NAMES", f"sim-cpu-test-{uuid.uuid4().hex}")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU only: nothing to pin")
def test_one_cpu_pins_every_process_started_inside_and_gives_the_cpus_back(
    own_claims: None,
) -> None:
    before = os.sched_getaffinity(0)
    ctx = mp.get_context("fork")
    with one_cpu() as cpu:
        assert cpu in before
        assert os.sched_getaffinity(0) == {cpu}
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_affinity, args=(child,))
        proc.start()
        assert parent.poll(WAIT)
        assert parent.recv() == [cpu]
        proc.join(WAIT)
        assert proc.exitcode == 0
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU only: nothing to pin")
def test_a_virtual_run_leaves_its_callers_cpus_as_they_were(tmp_path: Path) -> None:
    import sim

    before = os.sched_getaffinity(0)
    run = sim.run("mutex", set={"clock.mode": "virtual", "params.rounds": 1}, seed=1,
                  out=tmp_path)  # fmt: skip
    assert run.status == "ok"
    assert os.sched_getaffinity(0) == before


def _hold_a_cpu(conn: Any, release: Any) -> None:
    with one_cpu() as cpu:
        conn.send(cpu)
        release.wait(WAIT)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU only: nothing to pin")
def test_runs_at_once_get_a_cpu_each_and_one_more_is_not_pinned(own_claims: None) -> None:
    # Virtual runs side by side (a sweep's pool, tests in parallel) must not pile onto one
    # CPU: each claims its own, and once every CPU is claimed a run is not pinned at all.
    allowed = os.sched_getaffinity(0)
    ctx = mp.get_context("fork")
    release = ctx.Event()
    holders, got = [], []
    try:
        for _ in range(len(allowed) + 1):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_hold_a_cpu, args=(child, release))
            proc.start()
            holders.append(proc)
            assert parent.poll(WAIT)
            got.append(parent.recv())
    finally:
        release.set()
        for proc in holders:
            proc.join(WAIT)
    # Every CPU once, then none left for the last.
    assert sorted(got[:-1]) == sorted(allowed)
    assert got[-1] is None
    assert [proc.exitcode for proc in holders] == [0] * len(holders)
    assert os.sched_getaffinity(0) == allowed


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU only: nothing to pin")
@pytest.mark.parametrize("pin", [True, False])
def test_a_virtual_runs_actors_and_their_threads_run_on_its_one_cpu(
    tmp_path: Path, pin: bool, own_claims: None
) -> None:
    import sim

    allowed = sorted(os.sched_getaffinity(0))
    config = {"scenario": "tests.scenario_cpus", "clock": {"mode": "virtual"},
              "engine": {"pin_cpu": pin}}  # fmt: skip
    run = sim.run(config, seed=1, out=tmp_path)
    assert run.status == "ok"
    lines = [json.loads(raw) for raw in (run.dir / "events.jsonl").read_bytes().splitlines()]
    seen = {(line["actor"], line["where"]): line["cpus"] for line in lines
            if line["event"] == "cpus"}  # fmt: skip
    assert len(seen) == 3 * 3
    cpus = {tuple(c) for c in seen.values()}
    if pin:
        # Every actor, from its start on, and every thread it starts: one and the same CPU.
        assert len(cpus) == 1
        (only,) = cpus
        assert len(only) == 1
        assert only[0] in allowed
    else:
        assert cpus == {tuple(allowed)}
    assert sorted(os.sched_getaffinity(0)) == allowed
