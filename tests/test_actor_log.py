"""An actor's log path in one process: sim's structlog wrapper class, the one processor that
stamps, renders and queues, the batching sink, other threads and deferred stop signals."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import msgspec
import pytest
import structlog

from sim.faults import FaultCrash
from sim.runtime import worker
from sim.runtime._logger import DELIVERED, ActorLogger
from sim.runtime._sink import BatchingSink, EngineWatch


class _Keep:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda value: self.got.append((name, value))


def _logger(processors: list[Any]) -> tuple[Any, _Keep]:
    keep = _Keep()
    log = structlog.wrap_logger(
        keep, processors=processors, wrapper_class=ActorLogger, cache_logger_on_first_use=True
    )
    return log.bind(), keep


def test_actor_logger_is_structlog_api() -> None:
    log, keep = _logger([lambda _l, _m, ed: dict(ed)])
    log.info("plain", a=1)
    log.bind(prim="p", kind="k").warning("bound", a=2)
    log.info("%s parked at %d", "car-1", 3)
    log.info("%(who)s left", {"who": "car-2"})
    log.exception("boom")
    log.log(40, "as error")
    log.debug("low")
    assert keep.got == [
        ("info", {"a": 1, "event": "plain"}),
        ("warning", {"prim": "p", "kind": "k", "a": 2, "event": "bound"}),
        ("info", {"event": "car-1 parked at 3"}),
        ("info", {"event": "car-2 left"}),
        ("error", {"exc_info": True, "event": "boom"}),
        ("error", {"event": "as error"}),
        ("debug", {"event": "low"}),
    ]
    assert log.bind(x=1).unbind("x")._context == {}


def test_each_level_calls_the_loggers_method_of_its_own_name() -> None:
    class Levels:
        def __init__(self) -> None:
            self.got: list[tuple[str, Any]] = []

        def _keep(self, name: str) -> Any:
            return lambda value: self.got.append((name, value))

        def __getattribute__(self, name: str) -> Any:
            if name in ("debug", "info", "warning", "error", "critical", "msg"):
                return object.__getattribute__(self, "_keep")(name)
            return object.__getattribute__(self, name)

    levels = Levels()
    log = structlog.wrap_logger(
        levels, processors=[lambda _l, m, ed: (m, ed["event"])], wrapper_class=ActorLogger
    ).bind()
    for method in ("debug", "info", "warning", "warn", "error", "critical", "fatal", "msg"):
        getattr(log, method)(method)
    assert levels.got == [
        ("debug", ("debug", "debug")),
        ("info", ("info", "info")),
        ("warning", ("warning", "warning")),
        ("warning", ("warning", "warn")),
        ("error", ("error", "error")),
        ("critical", ("critical", "critical")),
        ("critical", ("critical", "fatal")),
        ("msg", ("msg", "msg")),
    ]
    assert ActorLogger.warn.__qualname__ == "ActorLogger.warning"  # as a traceback shows it


def test_a_chain_of_several_processors_runs_in_order() -> None:
    # One processor is called without a loop; a longer chain runs in order as before.
    def tag(name: str) -> Any:
        return lambda _l, _m, ed: {**ed, "seen": [*ed.get("seen", []), name]}

    log, keep = _logger([tag("a"), tag("b"), tag("c")])
    log.info("x")
    assert keep.got == [("info", {"event": "x", "seen": ["a", "b", "c"]})]


def test_a_line_delivered_by_its_processor_calls_no_logger_method() -> None:
    # sim's processor queues the line itself and returns DELIVERED: ActorLogger calls no
    # logger method then; any other value still goes to the logger.
    seen: list[Any] = []

    def deliver(_l: Any, _m: str, ed: Any) -> Any:
        seen.append(dict(ed))
        return DELIVERED if ed["event"] == "queued" else b"line"

    log, keep = _logger([deliver])
    log.info("queued", a=1)
    log.warning("kept")
    assert seen == [{"a": 1, "event": "queued"}, {"event": "kept"}]
    assert keep.got == [("warning", b"line")]
    # Under any other structlog wrapper it is an empty line, which sim's loggers ignore.
    plain = structlog.wrap_logger(
        worker._Queued(), processors=[deliver], wrapper_class=structlog.BoundLogger
    )
    assert DELIVERED == b""
    assert plain.info("queued") == 0


def test_actor_logger_drop_event() -> None:
    def drop(_l: Any, _m: str, ed: Any) -> Any:
        if ed["event"] == "no":
            raise structlog.DropEvent
        return ed

    log, keep = _logger([drop])
    log.info("no")
    log.info("yes")
    assert keep.got == [("info", {"event": "yes"})]


def _drained() -> tuple[socket.socket, list[bytes], threading.Thread]:
    ours, theirs = socket.socketpair()
    got: list[bytes] = []

    def read() -> None:
        while data := theirs.recv(1 << 16):
            got.append(data)
        theirs.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return ours, got, reader


def _path(flush_s: float = 0.001) -> tuple[Any, Any, Any, BatchingSink, list[bytes], Any]:
    sock, got, reader = _drained()
    sink = BatchingSink(sock, flush_s, EngineWatch(os.getpid()))
    guard, threads = worker._StopGuard(), worker._Threads()
    procs = worker._processors("a-1", 42, time.monotonic_ns(), guard, threads, sink=sink)
    log = structlog.wrap_logger(
        worker._Queued(), processors=procs, wrapper_class=ActorLogger
    ).bind()
    return log, guard, threads, sink, got, reader


def _lines(got: list[bytes]) -> list[dict[str, Any]]:
    data = b"".join(got)
    assert data.endswith(b"\n")
    return [msgspec.json.decode(raw) for raw in data.split(b"\n")[:-1]]


def test_threads_lose_no_line_and_seq_follows_time() -> None:
    log, _guard, threads, sink, got, reader = _path()
    n, helpers = 20_000, 4

    def helper(k: int) -> None:
        for i in range(n):
            log.info("tick", k=k, i=i)

    pool = [threading.Thread(target=helper, args=(k,)) for k in range(1, helpers + 1)]
    for t in pool:
        t.start()
    for i in range(n):
        log.info("tick", k=0, i=i, seq=-1)  # a contract field passed as a field is overwritten
    for t in pool:
        t.join()
    threads.end()
    log.info("actor_end", status="ok")
    pool = [threading.Thread(target=helper, args=(9,))]
    pool[0].start()
    pool[0].join()  # after the end: dropped
    sink.close()
    reader.join()
    lines = _lines(got)
    assert len(lines) == n * (helpers + 1) + 1
    by_seq = sorted(lines, key=lambda e: e["seq"])
    assert [e["seq"] for e in by_seq] == list(range(len(lines)))
    assert all(a["ts"] <= b["ts"] for a, b in itertools.pairwise(by_seq))
    assert by_seq[-1]["event"] == "actor_end"
    for k in range(helpers + 1):
        assert [e["i"] for e in lines if e.get("k") == k] == list(range(n))
    assert list(lines[0])[:4] == ["ts", "actor", "pid", "seq"]
    assert {e["actor"] for e in lines} == {"a-1"}
    assert {e["pid"] for e in lines} == {42}


class _Odd:
    def __repr__(self) -> str:
        return "<odd>"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda log: log.info("tick", i=1), id="plain"),
        pytest.param(lambda log: log.info('é ☃ "q"', x=[1.5, None], y={"ts": 1}), id="nested"),
        pytest.param(lambda log: log.bind(prim="p").warning("bound", seq=-1), id="seq-field"),
        pytest.param(lambda log: log.info("t", ts="no", actor=1, pid=None), id="contract-fields"),
        pytest.param(lambda log: log.info(), id="no-event"),
        pytest.param(lambda log: log.info(None, odd=_Odd(), big=2**70, f=1e-7), id="enc-hook"),
    ],
)
def test_a_line_is_what_encoding_its_stamped_dict_gives(call: Any) -> None:
    # A line is spliced from the contract's fields and the encoded event: it must be byte for
    # byte the merged dict (the contract's fields first, never overwritten) encoded whole.
    log, _guard, _threads, sink, got, reader = _path()
    call(log)
    call(log)
    sink.close()
    reader.join()
    raws = b"".join(got).split(b"\n")[:-1]
    assert len(raws) == 2
    encode = msgspec.json.Encoder(enc_hook=repr).encode
    for seq, raw in enumerate(raws):
        fields = msgspec.json.decode(raw)
        event = {k: v for k, v in fields.items() if k not in ("ts", "actor", "pid", "seq")}
        stamped = {"ts": fields["ts"], "actor": "a-1", "pid": 42, "seq": seq}
        assert list(fields)[:4] == list(stamped)
        assert raw == encode({**stamped, **event})


def test_high_water_back_pressure_loses_nothing() -> None:
    log, _guard, _threads, sink, got, reader = _path(flush_s=0.05)
    n = 3 * BatchingSink.HIGH_WATER
    for i in range(n):
        log.info("tick", i=i)
        assert len(sink.lines) <= BatchingSink.HIGH_WATER
    sink.close()
    reader.join()
    assert [e["i"] for e in _lines(got)] == list(range(n))


def test_stop_while_a_line_is_on_its_way_is_deferred_until_it_is_queued() -> None:
    log, guard, _threads, sink, got, reader = _path(flush_s=0.001)
    log.info("first")
    deadline = time.monotonic() + 5
    while not sink.idle and time.monotonic() < deadline:
        time.sleep(0.001)
    assert sink.idle
    wake = sink.wake

    def wake_and_signal() -> None:
        # As if SIGTERM came while the line was being queued: the handler sees the processor
        # among the frames it interrupted.
        guard.handler(signal.SIGTERM, sys._getframe())
        wake()

    sink.wake = wake_and_signal  # type: ignore[method-assign]
    with pytest.raises(worker._Terminated):
        log.info("second")
    sink.wake = wake  # type: ignore[method-assign]
    guard.handler(signal.SIGTERM, sys._getframe())  # a repeat while stopping: ignored
    log.info("third")
    # Outside a line, a stop is raised where it lands.
    with pytest.raises(FaultCrash):
        worker._StopGuard().handler(signal.SIGUSR1, sys._getframe())
    sink.close()
    reader.join()
    assert [e["event"] for e in _lines(got)] == ["first", "second", "third"]
