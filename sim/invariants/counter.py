"""Invariants of shared memory (``Value``, ``Array``, ``SharedMemory``): no lost updates.

Shared memory guarantees only that one read or one write of a slot is whole (no torn values).
It does not make ``x = x + 1`` atomic: that is a read, then a write, and another process may
write the slot in between. Its update is then lost, overwritten by a value computed from what
was there before it.

Everything here is derived from the ``op`` events alone. A *cycle* is a process's read of a slot
followed by its next write of that slot. The write replaces whatever the last completed write
left in the slot (writes taken in the order they completed). If that is not the value the
process read, another write came in between and is wiped out: a *stale write*, the trace of a
lost update. Writes that replace an equal value are not stale (four processes that all read 5
and all write 6 lose three increments, and the first three of those writes are stale), so the
count never claims more than the log proves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from sim.checks import Check, Verdict

__all__ = ["LockOwner", "LostUpdates", "ReadModifyWrite", "checks_for"]

_SHOW = 3


@dataclass(frozen=True)
class _Write:
    actor: str
    ok: float
    value: Any


@dataclass(frozen=True)
class _Cycle:
    actor: str
    read_ok: float
    read_value: Any
    write_invoke: float


def slot_label(prim: str, slot: Hashable) -> str:
    """``counter`` for a Value, ``counter[2]`` for a slot of an Array or SharedMemory."""
    return prim if slot is None else f"{prim}[{slot}]"


class ReadModifyWrite:
    """Follows the reads and writes of one primitive, slot by slot (``index``; none for a Value).

    After feeding: ``cycles`` (a read followed by the same process's write of that slot),
    ``stale`` (cycles whose write replaced a value other than the one they had read),
    ``collisions`` (pairs of cycles of two processes that read the same value, each before the
    other wrote) and the first stale write in words (``examples``).
    """

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.cycles = 0
        self.writes = 0
        self.stale = 0
        self.collisions = 0
        self.examples: list[str] = []
        # The latest read of a slot by an actor since that actor last wrote it: (ts, value).
        self._reads: dict[tuple[Hashable, str], tuple[float, Any]] = {}
        # Per slot: the last completed write, and the cycles in the order their writes began.
        self._last: dict[Hashable, _Write] = {}
        self._cycles: dict[Hashable, list[_Cycle]] = defaultdict(list)

    def feed(self, event: Mapping[str, Any]) -> None:
        """See one event; only ``op`` events on this primitive count."""
        if event.get("event") != "op" or event.get("prim") != self.prim:
            return
        op, phase = event.get("op"), event.get("phase")
        slot: Hashable = event.get("index")
        key = (slot, event["actor"])
        if op == "read" and phase == "ok":
            self._reads[key] = (event["ts"], event.get("value"))
        elif op == "write" and phase == "invoke":
            read = self._reads.pop(key, None)
            if read is not None:
                self._cycle(slot, event, read)
        elif op == "write" and phase == "ok":
            self.writes += 1
            self._last[slot] = _Write(event["actor"], event["ts"], event.get("value"))

    def _cycle(self, slot: Hashable, event: Mapping[str, Any], read: tuple[float, Any]) -> None:
        actor, now = event["actor"], event["ts"]
        read_ts, read_value = read
        self.cycles += 1
        # The value this write replaces is the one the last completed write left. If that is
        # not what this process read, somebody wrote in between and this write wipes it out.
        last = self._last.get(slot)
        if last is not None and last.value != read_value:
            self.stale += 1
            if not self.examples:
                self.examples.append(
                    f"{actor} read {read_value!r} from {slot_label(self.prim, slot)} at "
                    f"{read_ts:.4f} s, {last.actor} wrote {last.value!r} at {last.ok:.4f} s, "
                    f"then {actor} wrote {event.get('value')!r} over it"
                )
        # Earlier cycles that read the same value before this one wrote, and whose write began
        # after this one's read: two processes read the same value before either wrote.
        for c in reversed(self._cycles[slot]):
            if c.write_invoke <= read_ts:
                break
            if c.actor != actor and c.read_value == read_value:
                self.collisions += 1
        self._cycles[slot].append(_Cycle(actor, read_ts, read_value, now))


class LostUpdates(Check):
    """Each write of a read-then-write replaces the value its process read: no write between."""

    phenomenon = "lost_updates"

    def __init__(self, prim: str) -> None:
        self.name = f"{prim}: no lost updates"
        self._rmw = ReadModifyWrite(prim)

    def feed(self, event: Mapping[str, Any]) -> None:
        self._rmw.feed(event)

    def verdict(self) -> Verdict:
        r = self._rmw
        if not r.cycles:
            return Verdict(self.name, "skip", "no read followed by a write of the same slot")
        if not r.stale:
            ok = f"{r.cycles} read-then-write cycles, each wrote over the value it had read"
            return Verdict(self.name, "pass", ok, self.phenomenon)
        detail = (
            f"lost updates: {r.stale} of {r.cycles} writes ({100 * r.stale / r.cycles:.0f} %) "
            f"replaced a value their process had not read; {r.collisions} times two processes "
            f"read the same value before either wrote it back; first: {r.examples[0]}"
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class LockOwner(Check):
    """A re-entrant lock (a Value's ``get_lock()``) has at most one owning process at a time."""

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.name = f"{prim}: one owner at a time"
        self._owner: str | None = None
        self._depth = 0
        self._acquires = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "op" or event.get("prim") != self.prim:
            return
        op, phase, actor = event.get("op"), event.get("phase"), event["actor"]
        if op == "acquire" and phase == "ok":
            self._acquires += 1
            if self._owner is not None and self._owner != actor:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{actor} acquired at {event['ts']:.4f} s while {self._owner} held it"
                    )
                # Follow the newcomer, so one overlap is reported once, not at every later op.
                self._depth = 0
            self._owner = actor
            self._depth += 1
        elif op == "release" and phase == "invoke" and self._owner == actor:
            # Logged before the release takes effect: from here on the next owner may come.
            self._depth -= 1
            if self._depth <= 0:
                self._owner, self._depth = None, 0

    def verdict(self) -> Verdict:
        if not self._acquires:
            return Verdict(self.name, "skip", f"nobody took {self.prim}")
        return self._result(self._problems, self._count, f"{self._acquires} acquires, one owner")


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """Checks for a ``value``, ``array`` or ``shared_memory`` primitive called ``name``."""
    checks: list[Check] = [LostUpdates(name)]
    # A synchronized Value or Array has its own RLock, logged as "<name>.lock" when an actor
    # takes it with get_lock(); a SharedMemory block has none.
    if info.get("kind") in ("value", "array") and info.get("lock", False):
        checks.append(LockOwner(f"{name}.lock"))
    return checks
