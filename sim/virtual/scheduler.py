"""The engine's side of the virtual clock: one task runs at a time, time jumps when none can.

The scheduler lives in the coordinator's event loop and reads the run's live history, which
in a virtual run is exact: every line arrives before the request that follows it, in the
order the tasks ran. When no task is running it looks at every waiting one: a task waiting to
start, to begin (a new thread) or to join an ended thread can go; a sleeping one can go once
its time has come; one waiting in an operation can go when the operation's kind says it can
return now (``Model.ready``: a free unit, an item in the queue, a notify), or with ``timeout``
once its deadline has passed. Among those that can go, the policy chooses one; if none can,
simulated time jumps to the earliest wake-up; if there is none, the run is deadlocked, exactly.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from sim.history import Operation, Subscriber

from .cpu import pin
from .policy import Least, Policy
from .schedule import Divergence, Schedule, digest

if TYPE_CHECKING:
    from sim.history import History
    from sim.kinds._base import Model

__all__ = ["Scheduler", "Task"]

_encode = msgspec.json.Encoder().encode
# Requests whose step touches nothing another task can see: running them earlier or later
# changes no outcome (explore does not branch on them).
_LOCAL = frozenset({"start", "begin", "sleep", "spawn", "join"})
# Sends a grant to an actor (an OSError: the actor has gone).
Send = Callable[[bytes], None]
State = Literal["held", "waiting", "running", "ended"]
#: One step's choice: the ready tasks, those whose step is local, the task that ran last, the
#: one chosen, and the primitive each ready task's operation is on.
Choice = tuple[list[str], list[str], str | None, str, dict[str, str]]


@dataclass(eq=False, slots=True)
class Task:
    """A schedulable unit: an actor's main thread (task 0, named like the actor) or a thread
    it started (``actor/n``)."""

    name: str
    actor: str
    number: int
    state: State = "waiting"
    req: str = "start"
    op: Operation | None = None
    wake: float | None = None  # a sleep's end, or an operation's deadline
    zero: bool = False  # an operation that must not wait at all
    child: int | None = None  # the thread a spawn started, a join waits for
    since: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # The model of ``op``'s primitive (looked up once, when the task asks to do ``op``).
    model: Model | None = None


class Scheduler(Subscriber):
    """Decides, step by step, which task of a virtual run runs next.

    ``expected`` are the run's actors: nothing runs before all of them have connected and
    asked to start (so how fast processes start cannot change the run). ``on_deadlock`` is
    called with who waits on what when no task can ever go again; ``on_limit`` when the run
    has taken ``max_steps`` steps.
    """

    events = frozenset()

    def __init__(
        self,
        history: History,
        policy: Policy,
        *,
        expected: list[str],
        max_steps: int,
        on_deadlock: Callable[[list[dict[str, Any]], str, list[str]], None],
        on_limit: Callable[[int], None],
        on_end: Callable[[str], bool] | None = None,
        on_exit: Callable[[str, int], None] | None = None,
        on_diverge: Callable[[Divergence], None] | None = None,
        cpu: int | None = None,
    ) -> None:
        self.history = history
        self.policy = policy
        self.now = 0.0
        self.step = 0
        self.schedule = Schedule(policy=policy.name)
        self.preemptions = 0
        self.stopping = False
        self.finished = False
        #: The engine has started every actor (and logged it): until then nothing runs.
        self.spawned = False
        #: If a list: every step's choice, appended (ready, local, ran last, chosen, and the
        #: primitive each ready task's operation is on).
        self.trace: list[Choice] | None = None
        self._max_steps = max_steps
        self._on_deadlock = on_deadlock
        self._on_limit = on_limit
        self._on_end = on_end
        self._on_exit = on_exit
        self._on_diverge = on_diverge or (lambda exc: None)
        self._fallback = Least()
        #: Set when a replayed schedule did not fit the run.
        self.diverged: Divergence | None = None
        self._expected = set(expected)
        # Expected actors whose main task has not asked to start yet.
        self._missing = set(expected)
        self._tasks: dict[str, Task] = {}
        # The waiting tasks, split so that a step looks only at those that may go: asleep
        # (a sleep whose end is still to come) or not. A run of thousands of actors is
        # mostly asleep.
        self._waiting: dict[str, Task] = {}
        self._asleep: dict[str, Task] = {}
        self._by_actor: dict[str, dict[int, Task]] = {}
        self._send: dict[str, Send] = {}
        self._running: Task | None = None
        self._last: str | None = None
        self._last_invoke: dict[str, Operation] = {}
        self._wakes: list[tuple[float, int, str]] = []
        #: When (ts, step) each actor ended, and the order they ended in.
        self.ended_at: dict[str, tuple[float, int]] = {}
        self.end_order: list[str] = []
        # Actors that have ended and whose process exit has not been seen yet.
        self._awaiting: set[str] = set()
        # Timers (ts, order, callback): a fault's time, a pause's end. They count as wake-ups
        # and are called when the clock reaches them, before any task runs at that time.
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        # Actors a fault was done to: nothing runs until each has ended (so its end, its exit
        # and whatever its death changes come at this step, every time).
        self._held_for: set[str] = set()
        # Actors paused by a fault: none of their tasks runs until the pause ends.
        self._paused: set[str] = set()
        #: Called at every look for a task to run (the faults that have come due).
        self.before_grant: Callable[[], None] | None = None
        # The CPU the run moves to once every actor has started (sim.virtual.cpu): the
        # engine's thread at the first grant, each actor with the grant of its start.
        self._cpu = cpu
        # A policy that keeps nothing of when tasks became ready is not told (a call a step).
        keeps = type(policy).became_ready is not Policy.became_ready
        self._became_ready = policy.became_ready if keeps else None
        history.subscribe(self)

    # -- what the history tells --------------------------------------------------------------

    def on_invoke(self, op: Operation) -> None:
        # The operation a task's next "op" request is about: its actor's latest invoke (only
        # the running task logs, so there is no other).
        self._last_invoke[op.actor] = op

    # -- what the actors tell ------------------------------------------------------------------

    def connected(self, actor: str, send: Send) -> None:
        self._send[actor] = send

    def request(self, actor: str, msg: dict[str, Any]) -> None:
        """A request from ``actor``'s connection (after every line it logged before it)."""
        req = str(msg.get("req", ""))
        if req == "exit":
            # The actor's process says it exits now, its descriptors closed: as good as the
            # engine's seeing it exit (sim.runtime.worker._exit_virtual), and sooner.
            code = msg.get("code")
            if self._on_exit is not None and isinstance(code, int):
                self._on_exit(actor, code)
            return
        number = int(msg.get("task", 0))
        tasks = self._by_actor.setdefault(actor, {})
        task = tasks.get(number)
        if task is None:
            name = actor if number == 0 else f"{actor}/{number}"
            task = tasks[number] = self._tasks[name] = Task(name, actor, number)
        if number == 0:
            self._missing.discard(actor)
        if self._running is task:
            self._running = None
        if req == "end":
            self._end(task)
            return
        task.state = "waiting"
        task.req = req
        task.op = None
        task.model = None
        task.wake = None
        task.zero = False
        task.child = None
        task.since = self.step
        if self._became_ready is not None:
            self._became_ready(task.name, self.step)
        if req == "op":
            op = task.op = self._last_invoke.get(actor)
            if op is not None:
                task.model = self.history.model(op.prim)
            timeout = msg.get("timeout")
            if isinstance(timeout, (int, float)):
                task.zero = timeout <= 0
                if not task.zero:
                    self._wake_at(task, self.now + float(timeout))
        elif req == "sleep":
            seconds = msg.get("seconds")
            self._wake_at(task, self.now + (float(seconds) if isinstance(seconds, (int, float))
                                            else 0.0))  # fmt: skip
            if task.wake is not None and task.wake > self.now:
                self._asleep[task.name] = task
                return
        elif req in ("spawn", "join"):
            child = msg.get("child")
            task.child = int(child) if isinstance(child, int) else None
            if req == "spawn" and task.child is not None:
                # The thread exists only once its parent's spawn has gone through: until then
                # it is held, not waiting.
                name = f"{actor}/{task.child}"
                child_task = Task(name, actor, task.child, "held", req="begin", since=self.step)
                tasks[task.child] = self._tasks[name] = child_task
        self._waiting[task.name] = task

    def exited(self, actor: str) -> None:
        """The engine has seen ``actor``'s process exit (and logged it)."""
        self._awaiting.discard(actor)

    def gone(self, actor: str) -> None:
        """``actor``'s process has exited: none of its tasks will ever ask again."""
        self._expected.discard(actor)
        self._missing.discard(actor)
        self._held_for.discard(actor)
        self._paused.discard(actor)
        for task in list(self._by_actor.get(actor, {}).values()):
            self._end(task)

    def _settle(self, task: Task) -> None:
        """``task`` is no longer waiting (it runs, or it has ended)."""
        self._waiting.pop(task.name, None)
        self._asleep.pop(task.name, None)

    def _end(self, task: Task) -> None:
        task.state = "ended"
        self._settle(task)
        if self._running is task:
            self._running = None
        if task.number == 0:
            # The actor is done: its threads never run again (they die with its process).
            self._expected.discard(task.actor)
            self._held_for.discard(task.actor)
            if task.actor not in self.ended_at:
                self.ended_at[task.actor] = (self.now, self.step)
                self.end_order.append(task.actor)
                if self._on_end is None or not self._on_end(task.actor):
                    # Nothing else runs until its process is seen to exit (the engine logs
                    # that exit at this step, so the log is the same every time).
                    self._awaiting.add(task.actor)
            for other in self._by_actor.get(task.actor, {}).values():
                other.state = "ended"
                self._settle(other)
                if self._running is other:
                    self._running = None

    def _wake_at(self, task: Task, ts: float) -> None:
        task.wake = ts
        heapq.heappush(self._wakes, (ts, self.step, task.name))

    # -- faults ------------------------------------------------------------------------------

    def add_timer(self, ts: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` when simulated time reaches ``ts`` (before any task runs then)."""
        heapq.heappush(self._timers, (ts, len(self._timers) + id(callback) % 997, callback))

    def hold_for(self, actor: str) -> None:
        """A fault was done to ``actor``: run nothing until it has ended."""
        if actor in self._expected:
            self._held_for.add(actor)

    def pause(self, actor: str, until: float, resume: Callable[[], None]) -> None:
        """None of ``actor``'s tasks runs before ``until``; then ``resume`` is called."""
        self._paused.add(actor)

        def end() -> None:
            self._paused.discard(actor)
            resume()

        self.add_timer(until, end)

    def _ring(self) -> None:
        while self._timers and self._timers[0][0] <= self.now and not self.stopping:
            heapq.heappop(self._timers)[2]()

    # -- deciding -----------------------------------------------------------------------------

    def next_grant(self) -> tuple[Send, bytes] | None:
        """If no task runs now, the next one to run and the grant to send it (or None)."""
        if self._running is not None or self.finished or not (self.spawned or self.stopping):
            return None
        if self._missing:
            return None  # still starting: nothing runs until every actor is in
        while True:
            if self.before_grant is not None:
                self.before_grant()
            self._ring()
            if self._awaiting or self._held_for:
                return None
            ready = self._ready()
            if ready:
                return self._grant(ready)
            if not self._advance():
                waiting = [t for t in self._tasks.values() if t.state == "waiting"]
                if waiting and not self.stopping:
                    self._deadlock(waiting)
                    continue  # stopping now: every waiting task can go (to stop)
                self.finished = not waiting
                return None

    def _ready(self) -> dict[str, str]:
        """Every waiting task that can go now, and how (``go``, ``timeout``, ``stop``)."""
        if self.stopping:
            return dict.fromkeys([*self._waiting, *self._asleep], "stop")
        ready: dict[str, str] = {}
        paused = self._paused
        for task in self._waiting.values():
            if paused and task.actor in paused:
                continue
            how = self._can(task)
            if how is not None:
                ready[task.name] = how
        return ready

    def _can(self, task: Task) -> str | None:
        req = task.req
        if req in ("start", "begin", "spawn"):
            return "go"
        if req == "join":
            child = self._by_actor.get(task.actor, {}).get(task.child or -1)
            return "go" if child is None or child.state == "ended" else None
        due = task.wake is not None and task.wake <= self.now
        if req == "sleep":
            return "go" if due else None
        op = task.op
        model = task.model
        if op is None or model is None:
            return "go"
        if model.ready(op):
            return "go"
        if task.zero or due:
            return "timeout" if model.ready_to_give_up(op) else None
        return None

    def _advance(self) -> bool:
        """Jump to the earliest wake-up still pending (a task's or a timer's); False if
        there is none."""
        wakes = self._wakes
        while wakes:
            ts, _, name = wakes[0]
            task = self._tasks.get(name)
            if task is None or task.state != "waiting" or task.wake != ts:
                heapq.heappop(wakes)  # stale: it has run since, or ended
                continue
            if ts > self.now:
                break
            heapq.heappop(wakes)
            self._wake(task)
        soonest = [wakes[0][0]] if wakes else []
        if self._timers and not self.stopping:
            soonest.append(self._timers[0][0])
        if not soonest:
            return False
        self.now = max(self.now, min(soonest))
        # Everything due now is awake for the next look.
        while wakes and wakes[0][0] <= self.now:
            _, _, name = heapq.heappop(wakes)
            task = self._tasks.get(name)
            if task is not None and task.wake is not None and task.wake <= self.now:
                self._wake(task)
        return True

    def _wake(self, task: Task) -> None:
        if self._asleep.pop(task.name, None) is not None:
            self._waiting[task.name] = task

    def _grant(self, ready: dict[str, str]) -> tuple[Send, bytes]:
        names = sorted(ready)
        self.step += 1
        last = self._last
        policy = self.policy if not self.stopping else self._fallback
        local: frozenset[str] = frozenset()
        if policy.uses_local or self.trace is not None:
            local = frozenset(n for n in names
                              if self._tasks[n].req in _LOCAL or ready[n] == "stop")  # fmt: skip
            policy.local = local
        try:
            chosen = policy.choose(names, self.step, last)
        except Divergence as exc:
            # A replayed schedule that does not fit: the run is stopped, saying where.
            self.diverged = exc
            self.stopping = True
            self._on_diverge(exc)
            ready = dict.fromkeys(names, "stop")
            chosen = self._fallback.choose(names, self.step, last)
        if self.trace is not None:
            prims = {n: op.prim for n in names if (op := self._tasks[n].op) is not None}
            self.trace.append((names, sorted(local), last, chosen, prims))
        if last is not None and chosen != last and last in ready:
            self.preemptions += 1
        task = self._tasks[chosen]
        do = ready[chosen]
        grant: dict[str, Any] = {"task": task.number, "do": do, "ts": self.now, "step": self.step}
        if self._cpu is not None:
            if self.step == 1:
                pin(self._cpu)
            if task.req == "start":
                grant["cpu"] = self._cpu
        if do == "go" and task.op is not None:
            model = task.model
            if model is not None:
                extra = model.grant(task.op, self._pick)
                if extra:
                    grant.update(extra)
                    if "woke" in extra:
                        self.schedule.woke[self.step] = list(extra["woke"])
        self.schedule.steps.append((chosen, _digest(tuple(names))))
        if task.req == "spawn" and task.child is not None:
            child = self._by_actor.get(task.actor, {}).get(task.child)
            if child is not None and child.state == "held":
                child.state = "waiting"
                self._waiting[child.name] = child
        task.state = "running"
        self._settle(task)
        self._running = task
        self._last = chosen
        if self.step >= self._max_steps and not self.stopping:
            self._on_limit(self.step)
        return self._send[task.actor], _encode(grant) + b"\n"

    def _pick(self, waiters: list[str], n: int) -> list[str]:
        return self.policy.pick(waiters, n, self.step)

    def stop_all(self) -> None:
        """Stop the run: every task still waiting is told to stop, one at a time."""
        self.stopping = True

    def _deadlock(self, waiting: list[Task]) -> None:
        waits = []
        edges: dict[str, list[str]] = {}
        for task in sorted(waiting, key=lambda t: t.name):
            op = task.op
            prim = op.prim if op is not None else "?"
            name = op.name if op is not None else task.req
            held_by = self.history.blockers(prim) if op is not None else []
            waits.append({"actor": task.name, "prim": prim, "op": name, "held_by": held_by})
            edges[task.name] = held_by
        words = "; ".join(
            f"{w['actor']} waits in {w['op']} on {w['prim']}"
            + (f" (held by {', '.join(w['held_by'])})" if w["held_by"] else "")
            for w in waits
        )
        self._on_deadlock(waits, words, _cycle(edges))
        self.stopping = True


def _cycle(edges: dict[str, list[str]]) -> list[str]:
    """A cycle in the wait-for graph (task → the actors holding what it waits for), if any:
    ``[a, b, c, a]``."""
    for start in sorted(edges):
        path = [start]
        seen = {start}
        node = start
        while True:
            nxt = next((n for n in edges.get(node, []) if n in edges), None)
            if nxt is None:
                break
            if nxt in seen:
                return [*path[path.index(nxt) :], nxt]
            path.append(nxt)
            seen.add(nxt)
            node = nxt
    return []


# A run's ready sets recur (the same few tasks, step after step): each one's digest is made once.
_digest = functools.lru_cache(maxsize=4096)(digest)
