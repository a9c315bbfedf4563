"""The live history's reordering window: lines handed on in time order, a bounded time late.

A wall-clock run's lines reach the coordinator in arrival order, which is time order per actor
(one connection each) but only roughly across actors: each actor sends its lines in batches
every ``engine.flush_ms``. Fed in arrival order, a history can pass through states that never
happened (a lock with two holders, a semaphore above its capacity, a buffer's count at a value
it never had at that moment): the live view would show them. The window holds each line until
``hold_s`` after its ``ts`` (the clock every process of the run shares) and then hands the
lines on sorted by ``ts``, as :func:`~sim.history.lines.ordered` does for the file. A line that
comes later than that is still handed on, at once, and the history counts it as late
(:attr:`History.late_lines`): never dropped.

Lines nobody reads one by one (:meth:`History.quiet`: most lines of a busy run) are not merged
line by line: a few calls into C take each actor's block whole, leaving the history exactly as
feeding them merged would (:meth:`History.feed_run`'s way), so that such lines cost the window
no Python step each. The events file is no business of the window's: it is written as the
lines arrive.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from .lines import Line, decode_line

if TYPE_CHECKING:
    from . import History

__all__ = ["ReorderWindow"]

_TS = attrgetter("ts")


class _Piece:
    """Consecutive lines of one actor, in its order, held until they are due.

    ``raws`` are the lines' bytes where the lines do not carry them (a block taken whole
    has no use for them, unless it ends up fed line by line); ``own``: the lines were decoded
    by a connection's own decoder (sim.coordinator), which nothing may keep, and must be
    decoded again before a history keeps them."""

    __slots__ = ("actor", "lines", "own", "quiet", "raws")

    def __init__(
        self, actor: str, lines: list[Line], raws: list[bytes] | None, quiet: bool, own: bool
    ) -> None:
        self.actor = actor
        self.lines = lines
        self.raws = raws
        self.quiet = quiet
        self.own = own

    def split(self, at: int) -> _Piece:
        """The first ``at`` lines as a piece of their own; this one keeps the rest. (New
        lists: the caller's are left as they were given.)"""
        raws = self.raws
        head = _Piece(self.actor, self.lines[:at], raws[:at] if raws is not None else None,
                      self.quiet, self.own)  # fmt: skip
        self.lines = self.lines[at:]
        if raws is not None:
            self.raws = raws[at:]
        return head

    def plain(self) -> list[Line]:
        """The lines as a history may keep them: plain, with their raw bytes."""
        raws = self.raws
        if raws is None:
            return self.lines
        lines = list(map(decode_line, raws)) if self.own else self.lines
        for line, raw in zip(lines, raws, strict=True):
            line.raw = raw
        return lines


class ReorderWindow:
    """Feeds ``history`` the lines :meth:`add` is given, in ``ts`` order, each once it is
    ``hold_s`` old: call :meth:`release` with the time now (in ``ts``'s seconds) whenever
    :meth:`due` says, and :meth:`flush` at the end. With ``hold_s`` 0, lines are fed as they
    come (arrival order). ``on_held`` is called when the window, empty, is given lines: a
    caller that sleeps until :meth:`due` wakes up for them."""

    def __init__(
        self, history: History, hold_s: float, on_held: Callable[[], None] | None = None
    ) -> None:
        self.history = history
        self.hold_s = hold_s
        self._on_held = on_held
        self._pieces: list[_Piece] = []
        # The earliest ts held (inf: nothing), and the subscribers the quiet answers were
        # given for: a subscriber added since may read lines that were quiet before.
        self._oldest = float("inf")
        self._subscribers = len(history.subscribers)
        #: Lines held now.
        self.held = 0

    def add(
        self,
        actor: str,
        lines: list[Line],
        raws: list[bytes] | None = None,
        *,
        quiet: bool = False,
        own: bool = False,
    ) -> None:
        """Hold ``lines`` (``actor``'s, in its order, newer than any of its lines given
        before). ``quiet``: the history says so (:meth:`History.quiet`). ``raws``: their bytes,
        if they do not carry them; ``own``: they are of a connection's own decoder."""
        if not lines:
            return
        piece = _Piece(actor, lines, raws, quiet, own)
        if self.hold_s <= 0:
            # As they come: a block whole if the history can take it so, else line by line.
            if not (quiet and self.history.feed_run(actor, lines)):
                self.history.feed(piece.plain())
            return
        if not self._pieces and self._on_held is not None:
            self._on_held()
        self._pieces.append(piece)
        self.held += len(lines)
        first = lines[0].ts
        if first < self._oldest:
            self._oldest = first

    def due(self) -> float | None:
        """When (in ``ts``'s seconds) the oldest line held is due; None if nothing is held."""
        return self._oldest + self.hold_s if self._pieces else None

    def release(self, now: float) -> None:
        """Hand on every line held whose ``ts`` is ``hold_s`` or more before ``now``."""
        upto = now - self.hold_s
        if upto < self._oldest:
            return
        taken: list[_Piece] = []
        kept: list[_Piece] = []
        for piece in self._pieces:
            lines = piece.lines
            if lines[-1].ts <= upto:
                taken.append(piece)
                continue
            # (An actor's times go back only where two of its threads log at once: a line may
            # then go a little early or late, by the time they are apart.)
            at = bisect.bisect_right(lines, upto, key=_TS)
            if at:
                taken.append(piece.split(at))
            kept.append(piece)
        self._pieces = kept
        self._oldest = min((p.lines[0].ts for p in kept), default=float("inf"))
        self.held = sum(len(p.lines) for p in kept)
        self._hand_on(taken)

    def flush(self) -> None:
        """Hand on everything held (the run has ended: nothing earlier can come any more)."""
        pieces, self._pieces = self._pieces, []
        self._oldest = float("inf")
        self.held = 0
        self._hand_on(pieces)

    def _hand_on(self, pieces: Sequence[_Piece]) -> None:
        """Feed ``pieces`` (in arrival order) to the history as it would be fed their lines
        merged in time order. The lines of a piece somebody reads line by line are merged and
        fed so; quiet pieces are taken whole, each with the lateness it would have had among
        the others: an actor's quiet pieces before its first busy one (all of them, if it has
        none) before the busy lines, its pieces after its last busy one after them, so that
        its lines reach the history in its order."""
        if not pieces:
            return
        history = self.history
        subscribers = len(history.subscribers)
        if subscribers != self._subscribers:
            self._subscribers = subscribers
            for piece in [*pieces, *self._pieces]:
                piece.quiet = piece.quiet and history.quiet(piece.actor, piece.lines)
        before, busy, after = _parts(pieces)
        floor = history.now
        if before:
            runs = [(p.actor, p.lines) for p in before]
            stamps = history._runs_fit(runs)
            if stamps is None:
                # Something the quick way cannot take (a gap in an actor's seq, its time going
                # back, an alarm due): everything line by line.
                history.feed(_merged(pieces))
                return
            # The clocks move once the busy lines are in: those must see them as feeding it
            # all merged would (not late, their gauges changing at their own times).
            history._take_runs(runs, stamps, floor, clocks=False)
        if busy:
            history.feed(_merged(busy))
        if after:
            runs = [(p.actor, p.lines) for p in after]
            taken = history._runs_fit(runs)
            if taken is None or not history._take_runs(runs, taken, floor):
                # As the quick way would not take them: line by line, after the busy lines
                # (an alarm one of those set may be due).
                history.feed(_merged(after))
        if before:
            history._catch_up(max(p.lines[-1].ts for p in before))


def _parts(pieces: Sequence[_Piece]) -> tuple[list[_Piece], list[_Piece], list[_Piece]]:
    """``pieces`` cut into the quiet ones taken before the busy lines, the busy ones (with a
    quiet one between two busy ones of its actor), and the quiet ones taken after them. An
    actor whose quiet lines would not keep their place among its busy ones in time order (its
    times going back) is busy throughout."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        if not piece.quiet:
            first.setdefault(piece.actor, i)
            last[piece.actor] = i
    if not first:
        return list(pieces), [], []
    before: list[_Piece] = []
    busy: list[_Piece] = []
    after: list[_Piece] = []
    for i, piece in enumerate(pieces):
        start = first.get(piece.actor)
        if start is None or i < start:
            before.append(piece)
        elif i > last[piece.actor]:
            after.append(piece)
        else:
            busy.append(piece)
    # Their times must not overlap those of the actor's busy lines.
    earliest: dict[str, float] = {}
    latest: dict[str, float] = {}
    for piece in busy:
        times = list(map(_TS, piece.lines))
        actor = piece.actor
        earliest[actor] = min(earliest.get(actor, times[0]), min(times))
        latest[actor] = max(latest.get(actor, times[-1]), max(times))
    mixed = {p.actor for p in before if p.actor in earliest and p.lines[-1].ts > earliest[p.actor]}
    mixed |= {p.actor for p in after if p.lines[0].ts < latest[p.actor]}
    if mixed:
        chosen = {id(p) for p in busy}
        busy = [p for p in pieces if p.actor in mixed or id(p) in chosen]
        before = [p for p in before if p.actor not in mixed]
        after = [p for p in after if p.actor not in mixed]
    return before, busy, after


def _merged(pieces: Sequence[_Piece]) -> list[Line]:
    """The pieces' lines, plain, in ``ts`` order; a stable sort, so that lines of one actor
    with the same ``ts`` stay in its order (as :func:`~sim.history.lines.ordered` sorts)."""
    if len(pieces) == 1:
        return sorted(pieces[0].plain(), key=_TS)
    lines = [line for piece in pieces for line in piece.plain()]
    lines.sort(key=_TS)
    return lines
