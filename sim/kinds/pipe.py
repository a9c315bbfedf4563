"""Pipes (kind ``pipe``): FIFO, nothing lost or invented, EOF at the end.

A pipe is a byte stream between two ends, ``a`` and ``b`` (one-way: ``b`` sends, ``a``
receives; duplex: both ways). What one end sends, the other receives, whole and in the order
sent. Once every copy of the sending end is closed, the receiver gets what is still buffered
and then ``EOFError``. The pipe does not say who may use an end: two processes on one end
interleave their messages, which is why the notes say one process per end.

Read from the ``op`` lines alone: ``send`` (invoke, with ``item``), ``recv`` (ok with
``item``, or fail with ``EOFError``) and ``close``, each tagged with its ``end``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Operation
from sim.history.lines import Line

from ._base import Display, Kind, Logged, Model, PrimSpec, Reading

__all__ = [
    "Direction",
    "EofAfterLastSend",
    "FifoNoLoss",
    "LoggedConnection",
    "LoggedPipe",
    "OneProcessPerEnd",
    "Pipe",
    "PipeModel",
]

_OTHER = {"a": "b", "b": "a"}


class LoggedConnection(Logged):
    """One end of a Pipe: send, recv (EOFError once the other end is closed), close."""

    kind = "pipe"

    def __init__(self, name: str, raw: Any, log: Any, clock: Any, end: str) -> None:
        super().__init__(name, raw, log, clock)
        self._log = self._log.bind(end=end)

    def send(self, item: Any) -> None:
        self._log.info("op", op="send", phase="invoke", item=item)
        self._turn()
        try:
            self._raw.send(item)
            _returned = True  # a stop from here on waits for the line below (see RETURNED)
        except OSError as exc:
            _returned = True
            self._log.info("op", op="send", phase="fail", error=f"{type(exc).__name__}: {exc}")
            raise
        self._log.info("op", op="send", phase="ok", item=item)

    def recv(self) -> Any:
        self._log.info("op", op="recv", phase="invoke")
        self._turn()
        try:
            item = self._raw.recv()
            _returned = True
        except EOFError:
            _returned = True
            self._log.info("op", op="recv", phase="fail", error="EOFError")
            raise
        self._log.info("op", op="recv", phase="ok", item=item)
        return item

    def poll(self, timeout: float | None = 0.0) -> bool:
        return bool(self._raw.poll(None if timeout is None else self._clock.seconds(timeout)))

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._raw.close()
        _returned = True
        # After the close took effect: the history counts the end closed at the invoke line,
        # and a reader let go for EOF must find it closed.
        self._turn()
        self._log.info("op", op="close", phase="ok")


class LoggedPipe:
    """A Pipe's two ends, ``a`` and ``b``. An actor takes one end with :meth:`end`, which
    closes this process's copy of the other, so that EOF reaches the reader once the writer is
    done. For a one-way pipe, ``a`` receives and ``b`` sends (as ``multiprocessing.Pipe``)."""

    def __init__(self, name: str, raw: tuple[Any, Any], log: Any, clock: Any) -> None:
        self.name = name
        self._raw = raw
        self._log = log
        self._clock = clock

    def end(self, which: str) -> LoggedConnection:
        index = {"a": 0, "b": 1}[which]
        mine, other = self._raw[index], self._raw[1 - index]
        other.close()
        return LoggedConnection(self.name, mine, self._log, self._clock, which)

    def receiver(self) -> LoggedConnection:
        """The reading end of a one-way pipe."""
        return self.end("a")

    def sender(self) -> LoggedConnection:
        """The writing end of a one-way pipe."""
        return self.end("b")


@dataclass(frozen=True)
class Pipe(PrimSpec[LoggedPipe]):
    """A pipe between two processes: one-way (``duplex=False``) or both ways."""

    kind: ClassVar[str] = "pipe"
    duplex: bool = False

    def build(self, mp: BaseContext) -> Any:
        return mp.Pipe(self.duplex)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "duplex": self.duplex}

    def handed_over(self, raw: Any) -> list[Any]:
        return list(raw)


@dataclass
class Direction:
    """What went one way through a pipe: sends on one end, receives on the other."""

    sender: str
    receiver: str
    sends: list[Operation] = field(default_factory=list)
    recvs: list[Operation] = field(default_factory=list)
    #: The receive that raised EOFError, if any.
    eof: Operation | None = None
    closed: float | None = None  # the sending end's first close invoke
    late: list[str] = field(default_factory=list)
    sent: int = 0  # sends that returned ok

    @property
    def label(self) -> str:
        return f"{self.sender}->{self.receiver}"

    def in_pipe(self) -> int:
        """Messages sent (returned ok) and not yet received."""
        return self.sent - len(self.recvs)


class PipeModel(Model):
    """One pipe's traffic, by direction (keyed by the sending end)."""

    series: ClassVar[tuple[str, ...]] = ("in pipe",)

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        self.directions = {e: Direction(e, _OTHER[e]) for e in ("a", "b")}
        self.users: dict[str, set[str]] = defaultdict(set)
        self.ops = 0
        self._in_pipe = 0

    def key(self, line: Line) -> Any:
        return (line.actor, line.op, line.end)

    def ready(self, op: Operation) -> bool:
        end = op.invoke.end
        if op.invoke.op != "recv" or end not in _OTHER:
            return True
        # What the other end sent and this one has not received yet, or EOF once the other
        # end was closed.
        into = self.directions[_OTHER[end]]
        return into.in_pipe() > 0 or into.closed is not None

    def reading(self) -> Reading:
        self._peak = max(getattr(self, "_peak", 0), self._in_pipe)
        return Reading(self._in_pipe, max(self._peak, 1),
                       f"{self._in_pipe} in transit (peak {self._peak})")  # fmt: skip

    def invoke(self, op: Operation) -> None:
        end = op.invoke.end
        if end not in _OTHER:
            return
        self.ops += 1
        self.users[end].add(op.actor)
        out = self.directions[end]
        name = op.invoke.op
        if name == "send":
            out.sends.append(op)
            if out.eof is not None:  # the other end has seen EOF already
                out.late.append(f"{op.actor} sent on {end} at {op.start:.4f} s, after EOF on "
                                "the other end")  # fmt: skip
        elif name == "close" and out.closed is None:
            out.closed = op.start

    def complete(self, op: Operation) -> None:
        end = op.invoke.end
        done = op.done
        if end not in _OTHER or done is None:
            return
        self.ops += 1
        name = op.invoke.op
        into = self.directions[_OTHER[end]]
        if name == "send" and done.phase == "ok":
            self.directions[end].sent += 1
            self._in_pipe += 1
            self.set_gauge(**{"in pipe": self._in_pipe})
        elif name == "recv" and done.phase == "ok":
            k = len(into.recvs)
            into.recvs.append(op)
            if into.eof is not None:
                into.late.append(f"{op.actor} received on {end} at {done.ts:.4f} s, after EOF")
            if k < len(into.sends):
                self.history.transfer(into.sends[k], op, "message")
            self._in_pipe -= 1
            self.set_gauge(**{"in pipe": self._in_pipe})
        elif (
            name == "recv"
            and done.phase == "fail"
            and done.error == "EOFError"
            and into.eof is None
        ):
            into.eof = op


class FifoNoLoss(Check):
    """Each end receives exactly what the other sent, in order; after EOF, all of it."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.events = frozenset()
        self.name = f"{prim}: FIFO, nothing lost or extra"

    def verdict(self) -> Verdict:
        model = self.history.model(self.prim)
        assert isinstance(model, PipeModel)
        used = [d for d in model.directions.values() if d.sends or d.recvs]
        if not used:
            return self.skip("nothing sent or received")
        summary: list[str] = []
        for d in used:
            self.problems.extend(_direction_problems(d))
            rest = sum(1 for s in d.sends[len(d.recvs) :] if s.ok)
            tail = ", then EOF" if d.eof else (f", {rest} still in the pipe" if rest else "")
            summary.append(
                f"{d.label}: {len(d.sends)} sent, {len(d.recvs)} received in order{tail}"
            )
        return self.result("; ".join(summary))


def _direction_problems(d: Direction) -> list[str]:
    problems: list[str] = []
    for k, recv in enumerate(d.recvs):
        item, actor = recv.item, recv.actor
        if k >= len(d.sends):
            problems.append(f"{d.label}: {actor} received {item!r} (#{k}), which was never sent")
            continue
        sent = d.sends[k]
        if item != sent.item:
            problems.append(
                f"{d.label}: message #{k} received as {item!r} but sent as {sent.item!r} "
                "(out of order or altered)"
            )
        elif recv.ended is not None and recv.ended < sent.began:
            problems.append(
                f"{d.label}: message #{k} received at {recv.end:.4f} s before it was sent"
            )
    if d.eof is not None:
        lost = [s for s in d.sends[len(d.recvs) :] if s.ok]
        if lost:
            problems.append(
                f"{d.label}: {len(lost)} sent but EOF came first (the first: {lost[0].item!r})"
            )
    return problems


class EofAfterLastSend(Check):
    """EOF reaches a receiver only after the other end's last send (and its close)."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.events = frozenset()
        self.name = f"{prim}: EOF only after the last send"

    def verdict(self) -> Verdict:
        model = self.history.model(self.prim)
        assert isinstance(model, PipeModel)
        seen = [d for d in model.directions.values() if d.eof is not None]
        if not seen:
            return self.skip("no end saw EOF")
        for d in model.directions.values():
            self.problems.extend(d.late)
        summary = []
        for d in seen:
            assert d.eof is not None
            assert d.eof.end is not None
            eof_ts, actor = d.eof.end, d.eof.actor
            if d.closed is not None and d.closed > eof_ts:
                self.problems.add(f"{d.label}: EOF at {eof_ts:.4f} s before {d.sender} was "
                                  "closed")  # fmt: skip
            after = f", {1000 * (eof_ts - d.closed):.2f} ms after the close" if d.closed else ""
            summary.append(f"{actor} saw EOF on {d.receiver} after {len(d.sends)} sends{after}")
        return self.result("; ".join(summary))


class OneProcessPerEnd(Check):
    """Each end of the pipe is used by one process only (two writers interleave messages)."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.events = frozenset()
        self.name = f"{prim}: one process per end"

    def verdict(self) -> Verdict:
        model = self.history.model(self.prim)
        assert isinstance(model, PipeModel)
        users = model.users
        if not users:
            return self.skip("no end was used")
        for e, a in sorted(users.items()):
            if len(a) > 1:
                self.problems.add(f"end {e} used by {', '.join(sorted(a))}")
        return self.result("; ".join(f"{e}: {next(iter(a))}" for e, a in sorted(users.items())))


def _checks(name: str, info: Any) -> list[Check]:
    return [FifoNoLoss(name), EofAfterLastSend(name), OneProcessPerEnd(name)]


KINDS = [
    Kind(
        "pipe",
        PipeModel,
        Pipe,
        LoggedPipe,
        _checks,
        frozenset({"send", "recv"}),
        {"send": "sending", "recv": "receiving"},
        ("send", "recv"),
        Display((("in pipe", "fill"),), "messages in transit (sent and not yet received)",
                "items", rank=0),
    )
]  # fmt: skip
