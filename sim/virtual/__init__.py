"""Deterministic runs: real processes under a controlled scheduler with a virtual clock.

Under ``clock.mode = "virtual"`` the actors are the same real OS processes on the same real
multiprocessing primitives and sockets, but only one of them runs at a time: between two
scheduling points (every primitive and socket operation, every sleep, an actor's start and
end, a thread's start and join) the one the scheduler chose. Simulated time moves only when
nobody can proceed, to the earliest wake-up. The same config and seed then give the same run:

* :mod:`sim.virtual.gate` is an actor's side (its requests and the grants it waits for);
* :mod:`sim.virtual.scheduler` is the engine's side, in the coordinator's event loop;
* :mod:`sim.virtual.policy` chooses among the tasks that can run (random, PCT, FIFO);
* :mod:`sim.virtual.schedule` records the choices (``schedule.json``) and replays them.

What each operation needs to proceed is its kind's business (``Model.ready`` in sim.kinds).
"""

from __future__ import annotations

from .policy import Policy
from .schedule import Divergence, Schedule, load_schedule

__all__ = ["Divergence", "Policy", "Schedule", "load_schedule"]
