"""Pipes: a sender and a receiver on a one-way Pipe, or a ping-pong on a duplex Pipe.

``oneway`` (the example of the notes): the sender sends ``messages`` tuples ``(i, "Hallo
Pipe!")``, pausing ``pause`` minutes before each, then closes its end. The receiver reads until
``recv`` raises ``EOFError``, spending ``read`` minutes on each message: it stops because the
sender closed, not because it counted. With a slow reader, messages wait in the pipe's buffer,
and EOF comes only after the last of them has been read.

``pingpong``: a duplex Pipe. The pinger sends ``("ping", i)`` on end ``a`` and waits for the
answer; the ponger answers each on end ``b`` with ``("pong", i)`` until EOF. The time from a
ping's send to its pong's arrival is the round-trip time, measured from the log in wall ms.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    History,
    Metric,
    Operation,
    Pipe,
    PrimSpec,
    RunConfig,
    Scenario,
    Verdict,
    describe,
)
from sim.kinds.pipe import PipeModel

GREETING = "Hallo Pipe!"


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The pipe's traffic; durations in simulated minutes."""

    mode: Literal["oneway", "pingpong"] = "oneway"
    # Messages the sender sends (oneway), or pings the pinger sends (pingpong).
    messages: Annotated[int, msgspec.Meta(ge=0)] = 20
    # Before each send (oneway) or each ping (pingpong).
    pause: Duration = Duration(dist="fixed", mean=1.0)
    # The receiver's time per message (oneway): longer than `pause`, and messages pile up in
    # the pipe.
    read: Duration = Duration(dist="fixed", mean=0.0)


def sender(ctx: Ctx[Params]) -> None:
    """Send ``messages`` tuples, then close: closing is what tells the receiver it is over."""
    p = ctx.params
    out = ctx.prim("chan", Pipe).sender()
    for i in range(p.messages):
        ctx.sleep(ctx.draw(p.pause))
        out.send((i, GREETING))
    out.close()


def receiver(ctx: Ctx[Params]) -> None:
    """Read until EOFError: the loop does not know how many messages will come."""
    p = ctx.params
    into = ctx.prim("chan", Pipe).receiver()
    received = 0
    while True:
        try:
            into.recv()
        except EOFError:
            break
        received += 1
        ctx.sleep(ctx.draw(p.read))
    ctx.log.info("eof", received=received)
    into.close()


def pinger(ctx: Ctx[Params]) -> None:
    """Send a ping on end ``a``, wait for its pong; ``messages`` times. Then close."""
    p = ctx.params
    end = ctx.prim("chan", Pipe).end("a")
    for i in range(p.messages):
        ctx.sleep(ctx.draw(p.pause))
        end.send(("ping", i))
        end.recv()
    end.close()


def ponger(ctx: Ctx[Params]) -> None:
    """Answer every ping on end ``b`` with a pong of the same number, until EOF."""
    end = ctx.prim("chan", Pipe).end("b")
    answered = 0
    while True:
        try:
            _, number = end.recv()
        except EOFError:
            break
        end.send(("pong", number))
        answered += 1
    ctx.log.info("eof", answered=answered)
    end.close()


def _actors(p: Params) -> list[Actor]:
    if p.mode == "oneway":
        return [Actor("sender", sender), Actor("receiver", receiver)]
    return [Actor("pinger", pinger), Actor("ponger", ponger)]


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    return {"chan": Pipe(duplex=p.mode == "pingpong")}


def _traffic(history: History) -> PipeModel:
    model = history.model("chan")
    assert isinstance(model, PipeModel)
    return model


class EverythingThenEof(Check):
    """What the scenario sent arrived, in order, and the reading loop then ended on EOF."""

    name = "every message arrived, then EOF ended the reader"
    needs_completion = True
    events = frozenset()

    def __init__(self, p: Params) -> None:
        super().__init__()
        self._p = p

    def verdict(self) -> Verdict:
        n, d = self._p.messages, _traffic(self.history).directions
        if self._p.mode == "oneway":
            # One-way: "b" sends, "a" receives.
            wanted = {"b": [[i, GREETING] for i in range(n)]}
        else:
            wanted = {"a": [["ping", i] for i in range(n)], "b": [["pong", i] for i in range(n)]}
        for end, items in wanted.items():
            got = [r.item for r in d[end].recvs]
            if got != items:
                first = next(
                    (k for k, (g, w) in enumerate(zip(got, items, strict=False)) if g != w), None
                )
                where = f"first difference at #{first}" if first is not None else "a prefix"
                self.problems.add(f"{d[end].label}: {len(got)} of {len(items)} arrived ({where})")
        # The reading loop ends on EOF: from the sender (oneway) or the pinger (pingpong).
        if d["b" if self._p.mode == "oneway" else "a"].eof is None:
            self.problems.add("the reader never saw EOF")
        return self.result(f"{n * len(wanted)} messages in order, then EOF")


class PipeAnalysis(Analysis[Params]):
    """Latency and queueing (oneway) or round-trip time (pingpong), in wall ms, from the
    history of the pipe."""

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        self._check = EverythingThenEof(self.params)

    def metrics(self) -> dict[str, Any]:
        d = _traffic(self.history).directions
        if self.params.mode == "pingpong":
            pings, pongs = d["a"].sends, d["b"].recvs
            rtts = [1000 * (_end(pong) - ping.start)
                    for ping, pong in zip(pings, pongs, strict=False)]  # fmt: skip
            return {"rounds": len(pongs), **describe(rtts, "rtt")}
        way = d["b"]
        latency = [1000 * (_end(r) - s.start) for s, r in zip(way.sends, way.recvs, strict=False)]
        eof = way.eof
        return {
            "sent": sum(1 for s in way.sends if s.ok),
            "received": len(way.recvs),
            **describe(latency, "latency"),
            "in_pipe_max": _most_in_flight(
                [s.start for s in way.sends], [_end(r) for r in way.recvs]
            ),
            "in_pipe_at_close": _in_flight_at(way.closed, way.sends, way.recvs),
            "eof_after_close_ms": (
                1000 * (_end(eof) - way.closed) if eof and way.closed is not None else None
            ),
        }

    def checks(self) -> list[Check]:
        return [self._check]


def _end(op: Operation) -> float:
    return op.end if op.end is not None else op.start


def _most_in_flight(sent: list[float], received: list[float]) -> int:
    """Most messages sent and not yet received at any moment (sends taken at invoke)."""
    marks = sorted([(t, 1) for t in sent] + [(t, -1) for t in received])
    level = most = 0
    for _, step in marks:
        level += step
        most = max(most, level)
    return most


def _in_flight_at(t: float | None, sends: list[Operation], recvs: list[Operation]) -> int | None:
    """Messages sent before ``t`` and not yet received by then."""
    if t is None:
        return None
    return sum(1 for s in sends if s.start < t) - sum(1 for r in recvs if _end(r) < t)


scenario = Scenario(
    name="pipe",
    description="A sender and a receiver on a one-way Pipe (FIFO, EOF on close), or a duplex "
    "ping-pong (round-trip time)",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=PipeAnalysis,
    metrics=(
        Metric("sent", "messages sent"),
        Metric("received", "messages received"),
        *Metric.stats("latency", "send to receive", "ms"),
        Metric("in_pipe_max", "messages waiting in the pipe, max"),
        Metric("in_pipe_at_close", "messages in the pipe when the sender closed"),
        Metric("eof_after_close_ms", "EOF after the sender's close", "ms"),
        Metric("rounds", "ping-pong rounds"),
        *Metric.stats("rtt", "round trip", "ms", show=("mean", "p50", "p95", "max")),
    ),
)
