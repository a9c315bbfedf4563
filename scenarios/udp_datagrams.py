"""UDP datagrams: S senders, one receiver, and no promise of delivery or order.

The receiver binds a UDP socket, writes its port into the shared Value ``port`` and sets the
Event ``ready``. Each sender then sends ``datagrams`` numbered datagrams of varying size to it.
UDP keeps message boundaries (one ``sendto`` is one datagram, and one ``recvfrom`` returns exactly
one of them, whole) but guarantees nothing else: a datagram may be lost, or overtaken by a later
one. Loopback does neither on its own, so the senders inject both: with probability ``loss`` a
datagram is dropped, with probability ``reorder`` it is held back and sent after the next one.
The draws come from the sender's seeded RNG, so the same seed loses the same datagrams.

The receiver cannot tell a lost datagram from a late one. It stops when it has them all, or when
every sender has said it is finished (the shared counter ``done``) and then a whole ``quiet``
period passes without a datagram.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    Event,
    History,
    Line,
    Metric,
    PrimSpec,
    RunConfig,
    Scenario,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.kinds.udp import UdpModel

_SOCKET = "datagrams"  # the name every UDP socket of the run carries as ``prim`` in the log

Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The run's parameters; ``gap`` and ``quiet`` are in simulated minutes."""

    # The receiver's port; 0 lets the OS choose a free one (the senders learn it from the
    # shared Value ``port``). Fix it to send datagrams to the receiver from outside the run.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    senders: Annotated[int, msgspec.Meta(ge=1, le=50)] = 3
    datagrams: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 40
    # Probability that a datagram is dropped at the sender, as a network might lose it.
    loss: Probability = 0.0
    # Probability that a datagram is held back and sent after the next one: it arrives late.
    reorder: Probability = 0.0
    # Up to this many filler bytes per datagram, so that datagrams differ in size.
    pad: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 40
    gap: Duration = Duration(dist="fixed", mean=0.5)
    # How long the receiver waits for one more datagram before it decides the rest are lost.
    # Keep it under a wall second (quiet * 60 / speedup < engine.stall_s): the log does not
    # record recvfrom's timeout, so a longer silence looks like a stall to the engine.
    quiet: Annotated[float, msgspec.Meta(gt=0)] = 2.0


def receiver(ctx: Ctx[Params]) -> None:
    """Bind, publish the port, and receive until every datagram came or the rest are lost."""
    p = ctx.params
    inbox = ctx.udp(_SOCKET, p.port)
    ctx.prim("port", Value).value = inbox.port
    ctx.prim("ready", Event).set()
    done = ctx.prim("done", Value)
    expected = p.senders * p.datagrams
    received = 0
    finished = False
    while received < expected:
        if inbox.recvfrom(timeout=p.quiet) is not None:
            received += 1
            continue
        # A datagram is either in our buffer the moment sendto returns (loopback) or never
        # comes. So once every sender was finished before a wait began, a wait that times out
        # means nothing is left to come: the missing datagrams are lost.
        if finished:
            break
        finished = done.value == p.senders
    inbox.close()
    ctx.log.info("receiver_done", received=received, expected=expected)


def sender(ctx: Ctx[Params]) -> None:
    """Send ``datagrams`` numbered datagrams, dropping or delaying some of them on purpose."""
    p = ctx.params
    ctx.prim("ready", Event).wait()
    port = ctx.prim("port", Value).value
    out = ctx.udp(_SOCKET)
    # The receiver sees only this port; the log needs it to tell who sent what.
    ctx.log.info("bound", port=out.port)
    held: str | None = None
    for n in range(p.datagrams):
        # Every draw is made for every datagram, in the same order, so the same seed drops and
        # delays the same datagrams whatever happens to the others.
        lose, late = ctx.rng.random() < p.loss, ctx.rng.random() < p.reorder
        text = _datagram(ctx.name, n, ctx.rng.randrange(p.pad + 1))
        ctx.sleep(ctx.draw(p.gap))
        if lose:
            ctx.log.info("drop", n=n)
            continue
        if late and held is None:
            ctx.log.info("hold_back", n=n)
            held = text
            continue
        out.sendto(text, port)
        if held is not None:
            out.sendto(held, port)  # overtaken by the one just sent
            held = None
    if held is not None:
        out.sendto(held, port)
    out.close()
    done = ctx.prim("done", Value)
    with done.get_lock():
        done.value += 1


def _datagram(actor: str, n: int, pad: int) -> str:
    return f"{actor} #{n:03d} {'.' * pad}"


def _parse(text: str) -> tuple[str, int] | None:
    """(sender, number) of a datagram's text, or None if it is not one whole datagram."""
    parts = text.split(" ")
    if len(parts) != 3 or not parts[1].startswith("#") or parts[2].strip(".") != "":
        return None
    try:
        return parts[0], int(parts[1][1:])
    except ValueError:
        return None


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    # "port" is written once before "ready" is set and read after it: the Event orders it, no
    # lock needed. "done" is incremented by every sender, so it needs its lock.
    return {"port": Value("i", 0, lock=False), "ready": Event(), "done": Value("i", 0)}


def _senders(p: Params) -> list[Actor]:
    return numbered("sender", p.senders, sender)


def _actors(p: Params) -> list[Actor]:
    return [Actor("receiver", receiver), *_senders(p)]


def _deliveries(history: History) -> UdpModel | None:
    model = history.model(_SOCKET)
    return model if isinstance(model, UdpModel) else None


def _numbers(model: UdpModel | None) -> dict[str, list[int]]:
    """Per sender, the numbers of the datagrams that arrived, in arrival order."""
    found: dict[str, list[int]] = defaultdict(list)
    for arrival in model.arrived if model is not None else ():
        parsed = _parse(arrival.text)
        if parsed is not None:
            found[parsed[0]].append(parsed[1])
    return found


class BoundariesKept(Check):
    """Every ``recvfrom`` returned exactly one datagram that was sent, whole, from its sender."""

    name = "each datagram arrives whole, from its sender"
    events = frozenset()

    def verdict(self) -> Verdict:
        d = _deliveries(self.history)
        if d is None or not d.arrived:
            return self.skip("no datagram arrived")
        for arrival in d.arrived:
            text, port = arrival.text, arrival.port
            parsed = _parse(text)
            if text not in d.sent or parsed is None:
                self.problems.add(f"{text[:40]!r} is not a datagram that was sent")
            elif d.port_of.get(port) != parsed[0]:
                self.problems.add(f"{text[:20]!r} came from port {port}, not from {parsed[0]}")
        sizes = sorted({len(a.text.encode()) for a in d.arrived})
        return self.result(f"{len(d.arrived)} datagrams of {sizes[0]}..{sizes[-1]} bytes, each "
                           "whole")  # fmt: skip


class NoLoss(Check):
    """Every datagram every sender meant to send arrived: what UDP does *not* promise."""

    name = "no datagram lost"
    phenomenon = "datagram_loss"
    needs_completion = True
    events = frozenset()

    def __init__(self, senders: list[str], datagrams: int) -> None:
        super().__init__()
        self._senders = senders
        self._datagrams = datagrams

    def verdict(self) -> Verdict:
        if not self._senders:
            return self.skip("no senders")
        got = _numbers(_deliveries(self.history))
        total = len(self._senders) * self._datagrams
        missing = {s: sorted(set(range(self._datagrams)) - set(got[s])) for s in self._senders}
        lost = sum(len(m) for m in missing.values())
        if not lost:
            return Verdict(self.name, "pass", f"all {total} datagrams arrived", self.phenomenon)
        example = next(f"{s} #{m[0]:03d}" for s, m in missing.items() if m)
        detail = (
            f"lost {lost} of {total} datagrams ({100 * lost / total:.0f} %, e.g. {example}): "
            "UDP neither acknowledges nor resends, so the receiver gave up waiting for them"
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class InOrder(Check):
    """Datagrams from one sender arrive in the order it sent them: also not promised by UDP."""

    name = "datagrams arrive in the order sent"
    phenomenon = "datagram_reordering"
    events = frozenset()

    def verdict(self) -> Verdict:
        d = _deliveries(self.history)
        late = out_of_order(_numbers(d))
        arrived = len(d.arrived) if d is not None else 0
        if not arrived:
            return self.skip("no datagram arrived")
        if not late:
            return Verdict(self.name, "pass", f"{arrived} datagrams, each sender's in order",
                           self.phenomenon)  # fmt: skip
        sender, n, after = late[0]
        detail = (
            f"{len(late)} of {arrived} datagrams arrived after a later one from the same sender "
            f"(e.g. {sender} #{n:03d} after #{after:03d}): UDP keeps no order"
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


def out_of_order(numbers: Mapping[str, list[int]]) -> list[tuple[str, int, int]]:
    """(sender, number, highest number before it) for each datagram that arrived late."""
    late = []
    for sender_name, seen in sorted(numbers.items()):
        highest = -1
        for n in seen:
            if n < highest:
                late.append((sender_name, n, highest))
            highest = max(highest, n)
    return late


class DatagramAnalysis(Analysis[Params]):
    """Sent, dropped, lost, late and one-way delay, from the history of the sockets."""

    events = frozenset({"drop", "hold_back"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._dropped = 0
        self._held = 0
        senders = [a.name for a in _senders(p)]
        self._checks: list[Check] = [BoundariesKept(), NoLoss(senders, p.datagrams), InOrder()]

    def on_line(self, line: Line) -> None:
        if line.event == "drop":
            self._dropped += 1
        else:
            self._held += 1

    def metrics(self) -> dict[str, Any]:
        d = _deliveries(self.history)
        total = self.params.senders * self.params.datagrams
        arrived = d.arrived if d is not None else []
        counts = Counter(a.text for a in arrived)
        numbers = _numbers(d)
        lost = total - sum(len(set(n)) for n in numbers.values())
        # One-way delay: sendto invoke to recvfrom ok. Both ends stamp their lines with the
        # same monotonic clock, so the difference is meaningful across processes.
        delays = [(a.ts - a.sent.start) * 1000 for a in arrived if a.sent is not None]
        return {
            "sent": sum(d.sent.values()) if d is not None else 0,
            "dropped": self._dropped,
            "held_back": self._held,
            "received": len(arrived),
            "lost": lost,
            "loss_rate": lost / total if total else None,
            "out_of_order": len(out_of_order(numbers)),
            "duplicated": sum(c - 1 for c in counts.values()),
            **describe(delays, "delay"),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


scenario = Scenario(
    name="udp_datagrams",
    description="UDP senders and a receiver: boundaries kept; loss and reordering counted",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=DatagramAnalysis,
    metrics=(
        Metric("sent", "datagrams sent"),
        Metric("dropped", "dropped at the sender (loss)"),
        Metric("held_back", "held back at the sender (reorder)"),
        Metric("received", "datagrams received"),
        Metric("lost", "datagrams lost"),
        Metric("loss_rate", "loss rate", "%"),
        Metric("out_of_order", "arrived out of order"),
        Metric("duplicated", "arrived twice"),
        *Metric.stats("delay", "one-way delay", "wall ms"),
    ),
    phenomena={
        "datagram_loss": "datagrams never arrive: UDP does not acknowledge or resend",
        "datagram_reordering": "a datagram arrives after a later one from the same sender",
    },
)
