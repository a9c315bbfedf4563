"""The engine's side of declared faults: decide when each one happens, to whom, and do it.

A fault with ``at`` happens at that simulated time: in a wall run a task of the engine sleeps
until then; in a virtual run the scheduler fires it when its clock reaches that time, before
any task runs at it. A fault with ``after`` happens right after the line that sets it off:
the nemesis is a subscriber of the run's live history, notes the match, and the fault is done
as soon as the history has seen the line (a wall run: the engine's next turn after the
coordinator's reordering window has let the line through, a few tens of milliseconds after it
was logged; a virtual run: before the next step is granted, so at an exact step). Either way
the engine logs a ``fault`` line (what, to whom, why, with which signal) before the signal is
sent.
"""

from __future__ import annotations

import fnmatch
import random
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from sim.faults import SIGNALS, Fault
from sim.history import Operation, Subscriber

if TYPE_CHECKING:
    from sim.history.lines import Line

__all__ = ["Nemesis"]

_SIGNALS = {
    "kill": signal.SIGKILL,
    "term": signal.SIGTERM,
    "pause": signal.SIGSTOP,
    "crash": signal.SIGUSR1,
}


class Nemesis(Subscriber):
    """Performs a run's faults. ``live()`` gives the actors alive now (sorted); ``send(name,
    sig)`` signals one; ``act(name, fault, sig)``, if given, is called instead of ``send`` to
    do a fault (a virtual run's scheduler must know); ``log`` is the engine's logger."""

    prims: frozenset[str] | None
    events: frozenset[str] | None

    def __init__(
        self,
        faults: tuple[Fault, ...],
        *,
        seed: int,
        speedup: float,
        live: Callable[[], list[str]],
        send: Callable[[str, int], None],
        log: Any,
        act: Callable[[str, Fault, int], None] | None = None,
    ) -> None:
        self.faults = faults
        self._seed = seed
        self._per_minute = 60.0 / speedup
        self._live = live
        self._send = send
        self._act = act or (lambda name, fault, sig: send(name, sig))
        self._log = log
        #: Actors a fault was done to (their death is no failure of theirs).
        self.targets: set[str] = set()
        self._waiting = {i: f for i, f in enumerate(faults) if f.after is not None}
        self._seen: dict[int, int] = {}
        self._due: list[tuple[int, str]] = []
        self._woken = anyio.Event()
        self.on_due: Callable[[], None] | None = None
        # What the history must route here: the lines and operations the patterns name.
        op_prims: set[str] | None = set()  # None: every primitive's
        line_events: set[str] | None = set()  # None: every line
        for fault in self._waiting.values():
            after = fault.after
            assert after is not None
            if after.about_ops:
                if after.prim is None:
                    op_prims = None
                elif op_prims is not None:
                    op_prims.add(after.prim)
            elif after.event is None:
                line_events = None
            elif line_events is not None:
                line_events.add(after.event)
        self.prims = None if op_prims is None else frozenset(op_prims)
        self.events = None if line_events is None else frozenset(line_events)

    # -- when ----------------------------------------------------------------------------------

    def timed(self) -> list[tuple[float, int]]:
        """(seconds of ts, fault index) of every fault with ``at``."""
        return sorted((f.at * self._per_minute, i) for i, f in enumerate(self.faults)
                      if f.at is not None)  # fmt: skip

    def on_line(self, line: Line) -> None:
        self._check(line)

    def on_invoke(self, op: Operation) -> None:
        self._check(op.invoke)

    def on_op(self, op: Operation) -> None:
        if op.done is not None:
            self._check(op.done)

    def _check(self, line: Line) -> None:
        for i, fault in list(self._waiting.items()):
            after = fault.after
            assert after is not None
            if after.matches(line):
                self._seen[i] = seen = self._seen.get(i, 0) + 1
                if seen >= after.nth:
                    del self._waiting[i]
                    # Not done here: the history is in the middle of reading a chunk, and the
                    # fault's own line must not be fed into it before that chunk is through.
                    self._due.append((i, f"{fault.when()}: {line.actor} at {line.ts:.3f} s"))
                    self._woken.set()
                    if self.on_due is not None:
                        self.on_due()

    def fire_due(self) -> None:
        """Do every fault whose line has been read."""
        while self._due:
            i, why = self._due.pop(0)
            self.fire(i, why)

    async def run_wall(self, t0_seconds: Callable[[], float]) -> None:
        """A wall run's faults: the timed ones at their time, the others as they come due;
        and every pause's end."""
        async with anyio.create_task_group() as tg:
            for at, i in self.timed():
                tg.start_soon(self._at, at, i, t0_seconds)
            while True:
                await self._woken.wait()
                self._woken = anyio.Event()
                for i, why in self._due:
                    fault = self.faults[i]
                    for name in self.fire(i, why):
                        if fault.for_ is not None:
                            tg.start_soon(self._resume, name, fault.for_ * self._per_minute)
                self._due.clear()

    async def _at(self, at: float, i: int, t0_seconds: Callable[[], float]) -> None:
        await anyio.sleep(max(0.0, at - t0_seconds()))
        fault = self.faults[i]
        for name in self.fire(i, fault.when()):
            if fault.for_ is not None:
                await self._resume(name, fault.for_ * self._per_minute)

    async def _resume(self, name: str, seconds: float) -> None:
        await anyio.sleep(seconds)
        self.resume(name)

    # -- whom, and what -----------------------------------------------------------------------

    def fire(self, i: int, why: str) -> list[str]:
        """Do fault ``i`` now: choose its targets, log it, signal them. Returns the targets."""
        fault = self.faults[i]
        targets, missed = self._choose(i, fault)
        base = {"action": fault.action, "why": why, "fault": i}
        if not targets:
            self._log.info("fault", **base, target=None, missed=missed)
            return []
        for name in targets:
            extra = {"for": fault.for_} if fault.for_ is not None else {}
            self._log.info("fault", **base, target=name, signal=SIGNALS[fault.action], **extra)
            self.targets.add(name)
            self._act(name, fault, _SIGNALS[fault.action])
        return targets

    def fire_timed(self, i: int) -> None:
        """Do fault ``i``, whose time has come (a virtual run's timer)."""
        self.fire(i, self.faults[i].when())

    def resume(self, name: str) -> None:
        """A pause has ended: the target runs again."""
        self._log.info("fault", action="resume", target=name, signal="SIGCONT")
        self._send(name, signal.SIGCONT)

    def _choose(self, i: int, fault: Fault) -> tuple[list[str], str]:
        live = self._live()
        target = fault.target
        if target == "random":
            if not live:
                return [], "no actor was alive"
            return [random.Random(f"{self._seed}/fault/{i}").choice(live)], ""
        if target.startswith("holder:"):
            prim = target.removeprefix("holder:")
            holders = [a for a in self.history.holders(prim) if a in live]
            if not holders:
                return [], f"nobody held {prim}"
            return holders[:1], ""  # the one that has held it longest
        chosen = fnmatch.filter(live, target)
        return chosen, "" if chosen else f"no live actor matched {target!r}"
