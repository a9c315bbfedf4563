"""What every primitive kind provides, and the small machinery the kinds share.

A kind module (``sim/kinds/semaphore.py``...) holds everything about its kind: the spec a
scenario declares (:class:`PrimSpec`), the wrapper that logs every operation in the actors,
the :class:`Model` that says what each operation means when the log is read back (who holds
what, what blocks, what wakes whom, what moved where, the gauges), and the kind's generic
checks. It describes itself with one :class:`Kind`, which the registry in ``sim.kinds`` maps
from the log's ``kind`` field.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from sim.history.facts import Hold, Operation

if TYPE_CHECKING:
    from sim.checks import Check
    from sim.history import History
    from sim.history.lines import Line
    from sim.history.stats import Waits
    from sim.runtime.clock import Clock
    from sim.virtual.gate import Grant

__all__ = [
    "RETURNED",
    "Display",
    "Holds",
    "Kind",
    "Logged",
    "Model",
    "PrimSpec",
    "Reading",
    "Wakes",
    "item_key",
    "limit",
    "turn",
]

W = TypeVar("W")


@dataclass(frozen=True)
class PrimSpec(Generic[W]):
    """Base of every primitive a scenario declares; ``kind`` is what the log's ``kind`` says.

    The type parameter is the logged wrapper an actor gets for it, so that
    ``ctx.prim("spaces", Semaphore)`` is typed as what it returns.
    """

    kind: ClassVar[str]

    def build(self, mp: BaseContext) -> Any:
        """Create the raw multiprocessing object in the engine, before any actor starts."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What run.json records about this primitive (replay's checks read it back)."""
        return {"kind": self.kind}

    def handed_over(self, raw: Any) -> list[Any]:
        """What of ``raw`` the actors each take a copy of and the engine must close once all
        of them have started (a pipe's ends: a reader sees EOF only when every copy of the
        writing end is closed)."""
        return []

    def release(self, raw: Any) -> None:
        """Free what outlives the processes, after the run (a shared-memory block)."""


@dataclass(frozen=True)
class Reading:
    """A primitive's state at one moment, as one gauge a display draws: a ``value`` against a
    ``capacity`` (if it has one), and the same in words (``3/130 taken, 2 waiting``)."""

    value: float
    capacity: float | None
    text: str


class Model:
    """What the operations on one primitive mean, followed line by line.

    The history creates one model per primitive and calls :meth:`invoke` and :meth:`complete`
    with each operation, in time order, and :meth:`actor_ended` when an actor is gone. A model
    tells the history what follows from them, through ``self.history``: holds opened and
    closed, transfers, gauge values. Subclass it per kind; the base pairs nothing and means
    nothing.
    """

    #: Initial value of each gauge series, before the first line.
    series: ClassVar[tuple[str, ...]] = ()
    #: What is held of this primitive now, for a kind whose units are held (the history keeps
    #: it up to date as holds open and close).
    holds: Holds | None = None

    def __init__(self, name: str, info: Mapping[str, Any], history: History) -> None:
        self.name = name
        self.info = info
        self.history = history
        self.gauges: dict[str, float] = dict.fromkeys(self.series, 0)
        # Kept by the history: operations begun and not returned (by pairing key), the
        # subscribers' hooks for this primitive and for each of its operations, the operations
        # that can block, the key function if this kind has its own, the statistics asked of
        # it, and who follows each gauge series (called with the time and the new value).
        self.open: dict[Any, Any] = {}
        self.routes: tuple[list[Callable[..., None]], ...] = ((), (), (), (), (), ())  # type: ignore[assignment]
        self.by_op: dict[Any, tuple[list[Callable[..., None]], ...]] = {}
        self.blocking: frozenset[str] = frozenset()
        self.keyed: Callable[[Line], Any] | None = None
        self.collectors: dict[str, list[Waits]] | None = None
        self.followers: dict[str, list[Callable[[float, float], None]]] = {}

    # -- what the history calls --------------------------------------------------------------

    def key(self, line: Line) -> Any:
        """What pairs a completion line with its invoke, besides the primitive: the actor and
        the operation, and for a kind whose actors run several operations at once (a server
        thread per connection), what tells them apart."""
        return (line.actor, line.op)

    def invoke(self, op: Operation) -> None:
        """``op`` has begun (its invoke line)."""

    def complete(self, op: Operation) -> None:
        """``op`` has returned (its completion line is ``op.done``)."""

    def actor_ended(self, actor: str, ts: float, died: bool) -> None:
        """``actor`` has ended (``died``: killed, or crashed without unwinding)."""

    def cut_short(self, op: Operation) -> None:
        """``op`` will never return: its actor ended inside it (stopped while blocked). A
        gauge that counts it (processes waiting) lets it go."""

    # -- what consumers ask ------------------------------------------------------------------

    @property
    def capacity(self) -> int | None:
        """The most the main gauge can show (units, slots, parties), if there is a most."""
        return None

    def holders(self) -> list[str]:
        """Who holds this primitive (a unit of it) now."""
        return [] if self.holds is None else self.holds.actors()

    def reading(self) -> Reading | None:
        """The state now, for a gauge on the live view and the player (None: no gauge)."""
        return None

    def abandoned(self) -> list[str]:
        """Actors that ended (or died) holding (a unit of) this primitive, whose units nobody
        has given back: a waiter for it may wait forever."""
        return []

    # -- what the virtual scheduler asks ---------------------------------------------------

    def ready(self, op: Operation) -> bool:
        """Could ``op`` (begun, not returned) return now? The virtual scheduler lets its task
        go only then, so that the real primitive never blocks. An operation that never
        blocks is always ready."""
        return True

    def ready_to_give_up(self, op: Operation) -> bool:
        """Could ``op``, whose timeout has passed, return with ``timeout`` now? (A condition's
        wait takes its lock back first.)"""
        return True

    def grant(self, op: Operation, pick: Callable[[list[str], int], list[str]]) -> dict[str, Any]:
        """What the scheduler decides for ``op`` as it lets it go, where the real primitive
        would leave it to the operating system (which waiters a notify wakes, a barrier's
        arrival index). ``pick(waiters, n)`` asks the run's policy to choose."""
        return {}

    def outside(self, op: Operation) -> str | None:
        """Who outside the run ``op`` (begun, not returned) waits on, in words, or None if
        only the run's own actors can let it return. A socket's peer may be another program:
        waiting on it is not a deadlock, since the outside world may still answer."""
        return None

    def describe_wait(self, op: Operation) -> str:
        """What ``op``, blocked, waits for, in words (the deadlock report uses it)."""
        held = self.holders()
        return f"held by {', '.join(held)}" if held else ""

    # -- helpers for subclasses ----------------------------------------------------------------

    def gauge(self, series: str, value: float) -> None:
        """One gauge series changes (the fast path of :meth:`set_gauge`)."""
        gauges = self.gauges
        if gauges.get(series) == value:
            return
        gauges[series] = value
        followers = self.followers.get(series)
        if followers:
            now = self.history.now
            for follow in followers:
                follow(now, value)
        if self.routes[5]:
            self.history.gauge_changed(self)

    def set_gauge(self, **values: float) -> None:
        """Gauge series change (several at once: one ``on_gauge`` for all of them)."""
        changed = False
        gauges = self.gauges
        now = self.history.now
        for series, value in values.items():
            if gauges.get(series) != value:
                gauges[series] = value
                changed = True
                for follow in self.followers.get(series, ()):
                    follow(now, value)
        if changed and self.routes[5]:
            self.history.gauge_changed(self)


class Holds:
    """The holds of one primitive, oldest first, and per actor (a dict as an ordered set)."""

    __slots__ = ("all", "by_actor")

    def __init__(self) -> None:
        self.all: dict[Hold, None] = {}
        self.by_actor: dict[str, list[Hold]] = {}

    def __len__(self) -> int:
        return len(self.all)

    def __iter__(self) -> Iterator[Hold]:
        return iter(self.all)

    def add(self, hold: Hold) -> None:
        self.all[hold] = None
        self.by_actor.setdefault(hold.actor, []).append(hold)

    def remove(self, hold: Hold) -> None:
        del self.all[hold]
        mine = self.by_actor[hold.actor]
        mine.remove(hold)
        if not mine:
            del self.by_actor[hold.actor]

    def mine(self, actor: str) -> list[Hold]:
        return self.by_actor.get(actor, [])

    def actors(self) -> list[str]:
        return [h.actor for h in self.all]


@dataclass(slots=True)
class _Wake:
    op: Operation
    left: int


class Wakes:
    """Which completion a release, notify, set or last arrival caused.

    A waker (a ``release``) is offered to the waiters that were already waiting when it came;
    the earliest waker after a waiter began is the one that let it go. ``left`` is how many
    waiters a waker may still account for (a ``notify_all`` wakes them all).
    """

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[_Wake] = deque()

    def offer(self, op: Operation, count: int) -> None:
        if count > 0:
            self._queue.append(_Wake(op, count))

    def clear(self) -> None:
        self._queue.clear()

    def take(self, woken: Operation) -> Operation | None:
        """The waker that let ``woken`` go, if there is one; it accounts for one waiter less."""
        queue = self._queue
        found = None
        start = woken.start
        for wake in queue:
            if wake.op.start > start and wake.op.actor != woken.actor:
                wake.left -= 1
                found = wake.op
                break
        while queue and queue[0].left <= 0:
            queue.popleft()
        return found


def _no_checks(name: str, info: Mapping[str, Any]) -> list[Check]:
    return []


@dataclass(frozen=True)
class Display:
    """How pictures show a kind: its gauge series (name and style: ``fill`` for the level,
    ``--`` for processes waiting, ``-`` a plain line, ``:`` a count), the title and unit of
    a panel of them, and ``rank``: which kinds a panel with room for a few shows first (a
    pool of units or a queue before a lock, a lock before a barrier). ``lock``: a kind with
    one holder at most, so that many of one sort (five forks) are drawn together."""

    series: tuple[tuple[str, str], ...] = ()
    title: str = ""
    unit: str = ""
    rank: int = 9
    lock: bool = False


@dataclass(frozen=True)
class Kind:
    """One primitive kind, as the registry knows it.

    ``wrap(name, raw, log, clock)`` makes the logged wrapper an actor uses; ``model`` reads the
    kind's operations back; ``checks(name, info)`` gives the kind's generic invariant checks
    for one primitive; ``blocking`` names the operations that can block their caller (their
    duration is a wait), ``waiting`` what a person calls the state of an actor blocked in one.
    ``spec`` is None for a kind a scenario does not declare but opens at run time (sockets).
    """

    name: str
    model: type[Model]
    spec: type[PrimSpec[Any]] | None = None
    wrap: Callable[[str, Any, Any, Clock], Any] | None = None
    checks: Callable[[str, Mapping[str, Any]], list[Check]] = _no_checks
    blocking: frozenset[str] = frozenset()
    waiting: Mapping[str, str] = field(default_factory=dict)
    # What the message flow of a kind is, for displays: (sending op, receiving op).
    flow: tuple[str, str] | None = None
    display: Display = field(default_factory=Display)
    # What this kind's checks can show, by phenomenon name (a config may declare it in
    # ``expect``): a unit lost with a dead holder, a lost item.
    phenomena: Mapping[str, str] = field(default_factory=dict)

    def label(self, op: str) -> str:
        """The state of an actor blocked in ``op`` (``waiting``, ``getting``)."""
        return self.waiting.get(op, "waiting")


def item_key(item: Any) -> Any:
    """An item as something hashable that compares by value (lists and dicts as JSON text)."""
    if item is None or isinstance(item, (str, int, float)):
        return item
    import msgspec

    return msgspec.json.encode(item, order="sorted")


#: The local a wrapper sets (``_returned = True``) as soon as its call is back: right after
#: the call (first thing in an ``except`` that logs a completion, and before a virtual run's
#: ``timeout`` line), and back to False once its completion line is logged if more calls
#: follow. A stop signal that comes while it is set waits until the completion line is queued
#: (``sim.runtime.worker._StopGuard`` looks for it in the frames it interrupts, in the
#: functions :func:`returning_codes` finds), so an operation that took effect never looks
#: blocked for ever in the log. Nothing may block while it is set but the virtual turn.
#: (A stop that lands inside the library's own call once its work is done, or as a C call
#: returns before the store, still counts as a stop during the call.)
RETURNED = "_returned"


def returning_codes(modules: Iterable[ModuleType]) -> frozenset[CodeType]:
    """The code of every function, method and property of ``modules`` (their own, not what
    they import) that sets :data:`RETURNED`: only these frames may defer a stop, never a
    scenario's own code that happens to use the name."""
    found: set[CodeType] = set()
    for module in modules:
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            members = vars(obj).values() if isinstance(obj, type) else (obj,)
            for member in members:
                if isinstance(member, property):
                    functions = [member.fget, member.fset, member.fdel]
                else:
                    functions = [getattr(member, "__func__", member)]
                for function in functions:
                    code = getattr(function, "__code__", None)
                    if isinstance(code, CodeType) and RETURNED in code.co_varnames:
                        found.add(code)
    return frozenset(found)


class Logged:
    """Base of the wrappers actors use: every operation logged as two ``op`` lines.

    Jepsen style: ``phase="invoke"`` before the call and ``ok``/``fail``/``timeout`` after it.
    The engine wraps each primitive once per actor; a scenario only ever sees these wrappers,
    so no operation can go unlogged. Timeouts are given in simulated minutes, like every
    duration in a scenario. Each method sets :data:`RETURNED` between its call and its
    completion line.
    """

    kind = "primitive"

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock) -> None:
        self.name = name
        self._raw = raw
        self._clock = clock
        # Binding once keeps the per-operation cost to the two log calls.
        self._log = log.bind(prim=name, kind=self.kind)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _turn(self, timeout: float | None = None, block: bool = True) -> Grant | None:
        """In a virtual run, wait for this operation's turn (its invoke was just logged);
        ``timeout`` in simulated minutes. None in a wall run: the operation just happens."""
        return turn(self._clock, timeout, block)


def turn(clock: Clock, timeout: float | None = None, block: bool = True) -> Grant | None:
    """The scheduling point of one operation (see :meth:`Logged._turn`)."""
    gate = clock.gate
    if gate is None:
        return None
    if not block:
        return gate.turn(0.0)
    return gate.turn(None if timeout is None else clock.seconds(timeout))


def limit(timeout: float | None, block: bool = True) -> dict[str, float]:
    """The ``timeout`` field of an invoke line: present whenever the call cannot block forever
    (deadlock detection counts only invokes without it as blocked)."""
    if not block:
        return {"timeout": 0.0}
    return {} if timeout is None else {"timeout": timeout}
