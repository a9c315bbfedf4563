"""Pipes: FIFO delivery, EOFError once the sender has closed, and the ping-pong round trip.

Every test runs the real CLI with real processes and a real multiprocessing Pipe, and checks
the pipe's guarantees from the events itself, independently of sim's own checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import Finished, finished, kind_verdicts

# 15 messages, one every 0.2 minutes, read at 0.4 minutes each: messages pile up in the pipe.
ONEWAY = [
    "-s", "params.messages=15",
    "-s", "params.pause.mean=0.2",
    "-s", "params.read.mean=0.4",
    "-s", "clock.speedup=1200",
]  # fmt: skip
PINGPONG = ["-s", "params.messages=40", "-s", "params.pause.mean=0.05", "-s", "clock.speedup=1200"]


def run(out: Path, config: str, *args: str) -> Finished:
    """Run ``config`` with ``args``, which must succeed, every actor with exit code 0."""
    result = finished(out, config, args=(*args, "--seed", "5"), timeout=60)
    assert result.code == 0, result.stderr
    for record in result.manifest["actors"].values():
        assert record["exitcode"] == 0
    return result


def pipe_ops(events: list[dict[str, Any]], end: str, op: str, phase: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "op" and e["prim"] == "chan"
            and e["end"] == end and e["op"] == op and e["phase"] == phase]  # fmt: skip


def statuses(manifest: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["status"] for v in manifest["invariants"]}


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.timeout(60)
def test_oneway_pipe_delivers_in_order_then_eof(out: Path, method: str) -> None:
    result = run(out, "pipe.toml", *ONEWAY, "-s", f"engine.start_method={method}")
    sent = pipe_ops(result.events, "b", "send", "invoke")
    received = pipe_ops(result.events, "a", "recv", "ok")
    # FIFO, nothing lost, nothing extra: exactly what was sent, in the order sent.
    assert [e["item"] for e in sent] == [[i, "Hallo Pipe!"] for i in range(15)]
    assert [e["item"] for e in received] == [e["item"] for e in sent]
    assert {e["actor"] for e in sent} == {"sender"}
    assert {e["actor"] for e in received} == {"receiver"}
    for s, r in zip(sent, received, strict=True):
        assert s["ts"] <= r["ts"]

    # EOF: once, after the last message and after the sender closed its end; the receiver's
    # loop ends there (it never asks again).
    eofs = pipe_ops(result.events, "a", "recv", "fail")
    assert [e["error"] for e in eofs] == ["EOFError"]
    eof = eofs[0]
    close = pipe_ops(result.events, "b", "close", "invoke")
    assert len(close) == 1
    assert eof["ts"] > close[0]["ts"] > pipe_ops(result.events, "b", "send", "ok")[-1]["ts"]
    assert eof["ts"] > received[-1]["ts"]
    asked = pipe_ops(result.events, "a", "recv", "invoke")
    assert len(asked) == 16  # 15 messages and the one that found EOF
    assert [e["received"] for e in result.events if e["event"] == "eof"] == [15]
    # The reader is slower than the writer: messages were still in the pipe when the sender
    # closed, and were delivered before the EOF.
    in_pipe = sum(1 for e in received if e["ts"] > close[0]["ts"])
    assert in_pipe > 0

    manifest = result.manifest
    assert set(statuses(manifest).values()) == {"pass"}
    assert statuses(manifest)["chan: FIFO, nothing lost or extra"] == "pass"
    assert statuses(manifest)["chan: EOF only after the last send"] == "pass"
    assert manifest["metrics"]["sent"] == manifest["metrics"]["received"] == 15
    assert manifest["metrics"]["in_pipe_at_close"] == in_pipe


@pytest.mark.timeout(60)
def test_receiver_loop_ends_on_eof_even_when_nothing_is_sent(out: Path) -> None:
    result = run(out, "pipe.toml", *ONEWAY, "-s", "params.messages=0")
    assert pipe_ops(result.events, "a", "recv", "ok") == []
    assert [e["error"] for e in pipe_ops(result.events, "a", "recv", "fail")] == ["EOFError"]
    assert [e["received"] for e in result.events if e["event"] == "eof"] == [0]
    got = statuses(result.manifest)
    assert got["chan: FIFO, nothing lost or extra"] == "skip"  # nothing to look at
    assert got["chan: EOF only after the last send"] == "pass"
    assert "fail" not in got.values()


@pytest.mark.timeout(60)
def test_pingpong_answers_every_ping_and_measures_the_round_trip(out: Path) -> None:
    result = run(out, "pipe-pingpong.toml", *PINGPONG)
    pings = pipe_ops(result.events, "a", "send", "invoke")
    pongs_back = pipe_ops(result.events, "a", "recv", "ok")
    assert [e["item"] for e in pings] == [["ping", i] for i in range(40)]
    assert [e["item"] for e in pipe_ops(result.events, "b", "recv", "ok")] == [
        e["item"] for e in pings
    ]
    assert [e["item"] for e in pongs_back] == [["pong", i] for i in range(40)]
    # Strictly alternating: ping i is answered before ping i+1 is sent.
    for i in range(39):
        assert pings[i]["ts"] < pongs_back[i]["ts"] < pings[i + 1]["ts"]
    rtts = [1000 * (b["ts"] - a["ts"]) for a, b in zip(pings, pongs_back, strict=True)]
    assert all(r > 0 for r in rtts)
    # The ponger's loop ended on EOF, after the pinger closed its end.
    eof = pipe_ops(result.events, "b", "recv", "fail")
    assert len(eof) == 1
    assert eof[0]["ts"] > pipe_ops(result.events, "a", "close", "invoke")[0]["ts"]
    assert [e["answered"] for e in result.events if e["event"] == "eof"] == [40]

    metrics = result.manifest["metrics"]
    assert metrics["rounds"] == 40
    assert metrics["rtt_mean"] == pytest.approx(sum(rtts) / len(rtts))
    assert metrics["rtt_max"] == pytest.approx(max(rtts))
    assert set(statuses(result.manifest).values()) == {"pass"}


def _op(ts: float, actor: str, end: str, op: str, phase: str, **kw: Any) -> dict[str, Any]:
    return {"ts": ts, "actor": actor, "seq": 0, "event": "op", "prim": "p", "kind": "pipe",
            "end": end, "op": op, "phase": phase, **kw}  # fmt: skip


def _verdicts(history: list[dict[str, Any]]) -> dict[str, Any]:
    return {v.name: v for v in kind_verdicts("p", {"kind": "pipe", "duplex": False}, history)}


def test_pipe_checks_catch_reordering_loss_and_a_shared_end() -> None:
    # Hand-written histories no real pipe produces: the checks must say what is wrong.
    reordered = [
        _op(0.1, "s", "b", "send", "invoke", item=1),
        _op(0.2, "s", "b", "send", "invoke", item=2),
        _op(0.3, "r", "a", "recv", "ok", item=2),
        _op(0.4, "r", "a", "recv", "ok", item=1),
        _op(0.5, "t", "b", "send", "invoke", item=3),
    ]
    v = _verdicts(reordered)
    assert v["p: FIFO, nothing lost or extra"].status == "fail"
    assert "received as 2 but sent as 1" in v["p: FIFO, nothing lost or extra"].detail
    assert v["p: one process per end"].status == "fail"
    assert v["p: EOF only after the last send"].status == "skip"

    lost_then_eof = [
        _op(0.1, "s", "b", "send", "invoke", item=1),
        _op(0.11, "s", "b", "send", "ok", item=1),
        _op(0.2, "s", "b", "close", "invoke"),
        _op(0.3, "r", "a", "recv", "fail", error="EOFError"),
        _op(0.4, "r", "a", "recv", "ok", item=1),
    ]
    v = _verdicts(lost_then_eof)
    assert v["p: EOF only after the last send"].status == "fail"
    assert "after EOF" in v["p: EOF only after the last send"].detail
    eof_before_close = [
        _op(0.1, "s", "b", "send", "invoke", item=1),
        _op(0.11, "s", "b", "send", "ok", item=1),
        _op(0.2, "r", "a", "recv", "fail", error="EOFError"),
        _op(0.3, "s", "b", "close", "invoke"),
    ]
    v = _verdicts(eof_before_close)
    assert "1 sent but EOF came first" in v["p: FIFO, nothing lost or extra"].detail
    assert "before b was closed" in v["p: EOF only after the last send"].detail
