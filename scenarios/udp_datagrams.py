"""UDP datagrams: S senders, one receiver, and no promise of delivery or order.

The receiver binds a UDP socket, writes its port into the shared Value ``port`` and sets the
Event ``ready``. Each sender then sends ``datagrams`` numbered datagrams of varying size to it.
UDP keeps message boundaries (one ``sendto`` is one datagram, and one ``recvfrom`` returns exactly
one of them, whole) but guarantees nothing else: a datagram may be lost, or overtaken by a later
one. Loopback does neither on its own, so the senders inject both: with probability ``loss`` a
datagram is dropped, with probability ``reorder`` it is held back and sent after the next one.
The draws come from the sender's seeded RNG, so the same seed loses the same datagrams.

The receiver cannot tell a lost datagram from a late one. It stops once every sender has said
it is finished (the shared counter ``done``) and then a whole ``quiet`` period passes without a
datagram, or when ``listen`` minutes are over. It never stops by counting: anybody may send to
its port, and a datagram from outside the run (from a port none of the run's sockets has) is
logged like any other, and counted as *foreign*, never toward the senders' totals.

Outside peers: with ``port`` fixed, programs outside the run (``nc -u``, ``socat``, your own)
can send to the receiver; ``senders = 0`` receives from them only; ``target = "HOST:PORT"``
starts no receiver and the senders send there.
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
from sim.kinds.udp import Arrival, UdpModel

_SOCKET = "datagrams"  # the name every UDP socket of the run carries as ``prim`` in the log

Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The run's parameters; ``gap`` and ``quiet`` are in simulated minutes."""

    # The receiver's port; 0 lets the OS choose a free one (the senders learn it from the
    # shared Value ``port``). Fix it to send datagrams to the receiver from outside the run.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    # 0: the receiver alone, for datagrams from outside the run.
    senders: Annotated[int, msgspec.Meta(ge=0, le=50)] = 3
    datagrams: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 40
    # Probability that a datagram is dropped at the sender, as a network might lose it.
    loss: Probability = 0.0
    # Probability that a datagram is held back and sent after the next one: it arrives late.
    reorder: Probability = 0.0
    # Up to this many filler bytes per datagram, so that datagrams differ in size.
    pad: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 40
    gap: Duration = Duration(dist="fixed", mean=0.5)
    # How long the receiver waits for one more datagram, once the senders are done, before it
    # decides the rest are lost.
    quiet: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    # The receiver stops after this many minutes at the latest (none: once the senders are
    # done; with senders = 0, when the run is stopped by Ctrl-C or engine.timeout).
    listen: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # The address the receiver binds: "0.0.0.0" lets datagrams from other machines in too.
    host: str = "127.0.0.1"
    # "HOST:PORT" of a receiver outside the run: none of the run's starts, the senders send there.
    target: str | None = None

    def __post_init__(self) -> None:
        if self.target is not None:
            _address(self.target)
            if self.senders == 0:
                raise ValueError("senders = 0 with an outside target: nobody would run")


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port), or ValueError naming what is wrong."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target = {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7777")
    return host, int(port)


def receiver(ctx: Ctx[Params]) -> None:
    """Bind, publish the port, and receive until the senders are done and the rest are lost,
    or ``listen`` minutes are over."""
    p = ctx.params
    inbox = ctx.udp(_SOCKET, p.port, host=p.host)
    ctx.prim("port", Value).value = inbox.port
    ctx.prim("ready", Event).set()
    done = ctx.prim("done", Value)
    end = None if p.listen is None else ctx.now() + p.listen
    received = 0
    finished = False
    while end is None or ctx.now() < end:
        # With senders, a wait lasts one quiet period; without, as long as is left (or, with
        # no end, until the run is stopped: the next datagram can only come from outside).
        wait = p.quiet if p.senders else None
        if end is not None:
            left = end - ctx.now()
            wait = left if wait is None else min(wait, left)
        if inbox.recvfrom(timeout=wait) is not None:
            received += 1
            continue
        # A datagram is either in our buffer the moment sendto returns (loopback) or never
        # comes. So once every sender was finished before a wait began, a wait that times out
        # means nothing is left to come: the missing datagrams are lost.
        if finished:
            break
        finished = p.senders > 0 and done.value == p.senders
    inbox.close()
    # ``received`` counts foreign datagrams too: the receiver cannot tell them apart, replay can.
    ctx.log.info("receiver_done", received=received, expected=p.senders * p.datagrams)


def sender(ctx: Ctx[Params]) -> None:
    """Send ``datagrams`` numbered datagrams, dropping or delaying some of them on purpose."""
    p = ctx.params
    if p.target is not None:
        host, port = _address(p.target)
        # Bound to every interface: a socket bound to loopback cannot reach another machine.
        out = ctx.udp(_SOCKET, host="0.0.0.0")
    else:
        ctx.prim("ready", Event).wait()
        host, port = "127.0.0.1", ctx.prim("port", Value).value
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
        out.sendto(text, port, host)
        if held is not None:
            out.sendto(held, port, host)  # overtaken by the one just sent
            held = None
    if held is not None:
        out.sendto(held, port, host)
    out.close()
    if p.target is None:
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
    if p.target is not None:
        return {}  # the senders know the receiver's address from the config
    # "port" is written once before "ready" is set and read after it: the Event orders it, no
    # lock needed. "done" is incremented by every sender, so it needs its lock.
    return {"port": Value("i", 0, lock=False), "ready": Event(), "done": Value("i", 0)}


def _senders(p: Params) -> list[Actor]:
    return numbered("sender", p.senders, sender) if p.senders else []


def _actors(p: Params) -> list[Actor]:
    own_receiver = [] if p.target is not None else [Actor("receiver", receiver)]
    return [*own_receiver, *_senders(p)]


def _uncontrolled(p: Params) -> str | None:
    if p.target is not None:
        return "params.target: the receiver is outside the run"
    if p.senders == 0:
        return "params.senders: 0 senders, the datagrams come from outside the run"
    return None


def _deliveries(history: History) -> UdpModel | None:
    model = history.model(_SOCKET)
    return model if isinstance(model, UdpModel) else None


def _own(model: UdpModel | None) -> list[Arrival]:
    """The datagrams that came from one of the run's sockets (not foreign ones)."""
    if model is None:
        return []
    return [a for a in model.arrived if a.port in model.port_of]


def _numbers(model: UdpModel | None) -> dict[str, list[int]]:
    """Per sender, the numbers of its datagrams that arrived, in arrival order: only those
    that came from that sender's own port (a datagram from outside may claim any name)."""
    found: dict[str, list[int]] = defaultdict(list)
    for arrival in _own(model):
        parsed = _parse(arrival.text)
        if parsed is not None and model is not None and model.port_of[arrival.port] == parsed[0]:
            found[parsed[0]].append(parsed[1])
    return found


def _foreign(model: UdpModel | None) -> str:
    """The foreign datagrams in words (empty if none came)."""
    foreign = model.foreign() if model is not None else []
    if not foreign:
        return ""
    first = foreign[0]
    host = first.op.done.get("host", "?") if first.op.done is not None else "?"
    return (
        f"{len(foreign)} foreign datagrams from outside the run, not counted (e.g. "
        f"{first.text[:30]!r} from {host}:{first.port})"
    )


class BoundariesKept(Check):
    """Every ``recvfrom`` returned exactly one datagram that was sent, whole, from its sender."""

    name = "each datagram arrives whole, from its sender"
    events = frozenset()

    def __init__(self, target: str | None = None) -> None:
        super().__init__()
        self._target = target

    def verdict(self) -> Verdict:
        if self._target is not None:
            return self.skip(f"the receiver is outside the run ({self._target})")
        d = _deliveries(self.history)
        own = _own(d)
        foreign = _foreign(d)
        if not own:
            return self.skip("no datagram of the run arrived" + (f"; {foreign}" if foreign
                                                                  else ""))  # fmt: skip
        assert d is not None
        for arrival in own:
            text, port = arrival.text, arrival.port
            parsed = _parse(text)
            if text not in d.sent or parsed is None:
                self.problems.add(f"{text[:40]!r} is not a datagram that was sent")
            elif d.port_of.get(port) != parsed[0]:
                self.problems.add(f"{text[:20]!r} came from port {port}, not from {parsed[0]}")
        sizes = sorted({len(a.text.encode()) for a in own})
        return self.result(f"{len(own)} datagrams of {sizes[0]}..{sizes[-1]} bytes, each "
                           "whole" + (f"; {foreign}" if foreign else ""))  # fmt: skip


class NoLoss(Check):
    """Every datagram every sender meant to send arrived: what UDP does *not* promise."""

    name = "no datagram lost"
    phenomenon = "datagram_loss"
    needs_completion = True
    events = frozenset()

    def __init__(self, senders: list[str], datagrams: int, target: str | None = None) -> None:
        super().__init__()
        self._senders = senders
        self._datagrams = datagrams
        self._target = target

    def verdict(self) -> Verdict:
        if not self._senders:
            return self.skip("no senders")
        if self._target is not None:
            return self.skip(f"the receiver is outside the run ({self._target})")
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

    def __init__(self, target: str | None = None) -> None:
        super().__init__()
        self._target = target

    def verdict(self) -> Verdict:
        if self._target is not None:
            return self.skip(f"the receiver is outside the run ({self._target})")
        d = _deliveries(self.history)
        late = out_of_order(_numbers(d))
        arrived = sum(len(n) for n in _numbers(d).values())
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
        self._checks: list[Check] = [
            BoundariesKept(p.target),
            NoLoss(senders, p.datagrams, p.target),
            InOrder(p.target),
        ]

    def on_line(self, line: Line) -> None:
        if line.event == "drop":
            self._dropped += 1
        else:
            self._held += 1

    def metrics(self) -> dict[str, Any]:
        d = _deliveries(self.history)
        total = self.params.senders * self.params.datagrams
        arrived = _own(d)
        counts = Counter(a.text for a in arrived)
        numbers = _numbers(d)
        # With the receiver outside the run nobody here knows what arrived.
        lost = None if self.params.target else total - sum(len(set(n)) for n in numbers.values())
        # One-way delay: sendto invoke to recvfrom ok. Both ends stamp their lines with the
        # same monotonic clock, so the difference is meaningful across processes.
        delays = [(a.ts - a.sent.start) * 1000 for a in arrived if a.sent is not None]
        return {
            "sent": sum(d.sent.values()) if d is not None else 0,
            "dropped": self._dropped,
            "held_back": self._held,
            "received": len(arrived),
            "foreign": len(d.foreign()) if d is not None else 0,
            "lost": lost,
            "loss_rate": lost / total if total and lost is not None else None,
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
    uncontrolled=_uncontrolled,
    metrics=(
        Metric("sent", "datagrams sent"),
        Metric("dropped", "dropped at the sender (loss)"),
        Metric("held_back", "held back at the sender (reorder)"),
        Metric("received", "datagrams received"),
        Metric("foreign", "foreign datagrams (from outside the run)"),
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
