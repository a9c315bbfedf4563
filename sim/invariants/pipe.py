"""Invariants of a ``multiprocessing.Pipe``: FIFO, nothing lost or invented, EOF at the end.

A pipe is a byte stream between two ends, ``a`` and ``b`` (one-way: ``b`` sends, ``a``
receives; duplex: both ways). What one end sends, the other receives, whole and in the order
sent. Once every copy of the sending end is closed, the receiver gets what is still buffered
and then ``EOFError``. The pipe does not say who may use an end: two processes on one end
interleave their messages, which is why the notes say one process per end.

Derived from the ``op`` events alone: ``send`` (invoke, with ``item``), ``recv`` (ok with
``item``, or fail with ``EOFError``) and ``close``, each tagged with its ``end``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sim.checks import Check, Verdict

__all__ = [
    "Direction",
    "EofAfterLastSend",
    "FifoNoLoss",
    "OneProcessPerEnd",
    "PipeTraffic",
    "Received",
    "checks_for",
]

_SHOW = 3
_OTHER = {"a": "b", "b": "a"}


@dataclass
class _Send:
    ts: float  # of the send's invoke
    item: Any
    done: bool = False  # its ok was logged


class Received(NamedTuple):
    ts: float  # of the recv's ok
    item: Any
    actor: str


@dataclass
class Direction:
    """What went one way through a pipe: sends on one end, receives on the other."""

    sender: str
    receiver: str
    sends: list[_Send] = field(default_factory=list)
    recvs: list[Received] = field(default_factory=list)
    eof: tuple[float, str] | None = None
    closed: float | None = None  # the sending end's first close invoke

    @property
    def label(self) -> str:
        return f"{self.sender}->{self.receiver}"


class PipeTraffic:
    """Follows one pipe's ops, by direction (keyed by the sending end)."""

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.directions = {e: Direction(e, _OTHER[e]) for e in ("a", "b")}
        self.users: dict[str, set[str]] = defaultdict(set)
        self.ops = 0
        self.late: list[str] = []  # receives after EOF, sends after the other end saw EOF

    def feed(self, event: Mapping[str, Any]) -> None:
        """See one event; only ``op`` events on this pipe count."""
        if event.get("event") != "op" or event.get("prim") != self.prim:
            return
        end = event.get("end")
        if end not in _OTHER:
            return
        self.ops += 1
        actor, ts = event["actor"], event["ts"]
        op, phase = event.get("op"), event.get("phase")
        self.users[end].add(actor)
        out, into = self.directions[end], self.directions[_OTHER[end]]
        if op == "send" and phase == "invoke":
            out.sends.append(_Send(ts, event.get("item")))
            if out.eof is not None:
                self.late.append(f"{actor} sent on {end} at {ts:.4f} s, after EOF on the other end")
        elif op == "send" and phase == "ok" and out.sends:
            out.sends[-1].done = True
        elif op == "recv" and phase == "ok":
            into.recvs.append(Received(ts, event.get("item"), actor))
            if into.eof is not None:
                self.late.append(f"{actor} received on {end} at {ts:.4f} s, after EOF")
        elif op == "recv" and phase == "fail" and event.get("error") == "EOFError":
            if into.eof is None:
                into.eof = (ts, actor)
        elif op == "close" and phase == "invoke" and out.closed is None:
            out.closed = ts


class FifoNoLoss(Check):
    """Each end receives exactly what the other sent, in order; after EOF, all of it."""

    def __init__(self, prim: str) -> None:
        self.name = f"{prim}: FIFO, nothing lost or extra"
        self._t = PipeTraffic(prim)

    def feed(self, event: Mapping[str, Any]) -> None:
        self._t.feed(event)

    def verdict(self) -> Verdict:
        used = [d for d in self._t.directions.values() if d.sends or d.recvs]
        if not used:
            return Verdict(self.name, "skip", "nothing sent or received")
        problems: list[str] = []
        summary: list[str] = []
        for d in used:
            problems.extend(_direction_problems(d))
            rest = sum(1 for s in d.sends[len(d.recvs) :] if s.done)
            tail = ", then EOF" if d.eof else (f", {rest} still in the pipe" if rest else "")
            summary.append(
                f"{d.label}: {len(d.sends)} sent, {len(d.recvs)} received in order{tail}"
            )
        return self._result(problems[:_SHOW], len(problems), "; ".join(summary))


def _direction_problems(d: Direction) -> list[str]:
    problems: list[str] = []
    for k, (ts, item, actor) in enumerate(d.recvs):
        if k >= len(d.sends):
            problems.append(f"{d.label}: {actor} received {item!r} (#{k}), which was never sent")
            continue
        sent = d.sends[k]
        if item != sent.item:
            problems.append(
                f"{d.label}: message #{k} received as {item!r} but sent as {sent.item!r} "
                "(out of order or altered)"
            )
        elif ts < sent.ts:
            problems.append(f"{d.label}: message #{k} received at {ts:.4f} s before it was sent")
    if d.eof is not None:
        lost = [s for s in d.sends[len(d.recvs) :] if s.done]
        if lost:
            problems.append(
                f"{d.label}: {len(lost)} sent but EOF came first (the first: {lost[0].item!r})"
            )
    return problems


class EofAfterLastSend(Check):
    """EOF reaches a receiver only after the other end's last send (and its close)."""

    def __init__(self, prim: str) -> None:
        self.name = f"{prim}: EOF only after the last send"
        self._t = PipeTraffic(prim)

    def feed(self, event: Mapping[str, Any]) -> None:
        self._t.feed(event)

    def verdict(self) -> Verdict:
        seen = [d for d in self._t.directions.values() if d.eof is not None]
        if not seen:
            return Verdict(self.name, "skip", "no end saw EOF")
        problems = list(self._t.late)
        summary = []
        for d in seen:
            assert d.eof is not None
            eof_ts, actor = d.eof
            if d.closed is not None and d.closed > eof_ts:
                problems.append(f"{d.label}: EOF at {eof_ts:.4f} s before {d.sender} was closed")
            after = f", {1000 * (eof_ts - d.closed):.2f} ms after the close" if d.closed else ""
            summary.append(f"{actor} saw EOF on {d.receiver} after {len(d.sends)} sends{after}")
        return self._result(problems[:_SHOW], len(problems), "; ".join(summary))


class OneProcessPerEnd(Check):
    """Each end of the pipe is used by one process only (two writers interleave messages)."""

    def __init__(self, prim: str) -> None:
        self.name = f"{prim}: one process per end"
        self._t = PipeTraffic(prim)

    def feed(self, event: Mapping[str, Any]) -> None:
        self._t.feed(event)

    def verdict(self) -> Verdict:
        users = self._t.users
        if not users:
            return Verdict(self.name, "skip", "no end was used")
        problems = [f"end {e} used by {', '.join(sorted(a))}" for e, a in sorted(users.items())
                    if len(a) > 1]  # fmt: skip
        ok = "; ".join(f"{e}: {next(iter(a))}" for e, a in sorted(users.items()))
        return self._result(problems, len(problems), ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """Checks for a ``pipe`` primitive called ``name``."""
    return [FifoNoLoss(name), EofAfterLastSend(name), OneProcessPerEnd(name)]
