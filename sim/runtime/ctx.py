"""The context object an actor's role function receives: all a scenario author needs."""

from __future__ import annotations

import difflib
import random
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from sim.durations import Duration
from sim.errors import ScenarioError

from . import _sockets
from .clock import Clock

__all__ = ["Ctx"]

P = TypeVar("P")


class Ctx(Generic[P]):
    """What a role function sees: its name, the run's parameters, primitives, clock, RNG, log.

    Everything is plain blocking Python; sockets and JSON stay inside the engine.
    """

    def __init__(
        self,
        *,
        name: str,
        index: int,
        params: P,
        prims: Mapping[str, Any],
        clock: Clock,
        rng: random.Random,
        log: Any,
    ) -> None:
        self.name = name
        #: Position of this actor in the scenario's actor list (0-based).
        self.index = index
        self.params = params
        self.clock = clock
        #: This actor's own RNG, derived from the run seed and the actor's name.
        self.rng = rng
        #: A structlog logger: ``ctx.log.info("park", visit=2)`` writes one event line.
        self.log = log
        self._prims = prims

    def prim(self, name: str) -> Any:
        """The shared primitive called ``name`` in the scenario, wrapped so it logs every op."""
        try:
            return self._prims[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._prims), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScenarioError(f"{self.name}: no primitive named {name!r}{hint}") from None

    def sleep(self, minutes: float) -> None:
        """Let ``minutes`` simulated minutes pass."""
        self.clock.sleep(minutes)

    def draw(self, duration: Duration) -> float:
        """A random duration in simulated minutes, from this actor's RNG."""
        return duration.draw(self.rng)

    def now(self) -> float:
        """Simulated minutes since the run started."""
        return self.clock.now()

    def tcp_listen(
        self, name: str, port: int = 0, *, host: str = "127.0.0.1", backlog: int = 64
    ) -> _sockets.LoggedListener:
        """A listening TCP socket called ``name`` in the log (port 0: the OS picks one)."""
        return _sockets.tcp_listen(name, self.log, host, port, backlog)

    def tcp_connect(
        self, name: str, port: int, *, host: str = "127.0.0.1", timeout: float | None = None
    ) -> _sockets.LoggedStream:
        """A TCP connection to ``host:port``, logged under ``name``."""
        return _sockets.tcp_connect(name, self.log, self.clock, host, port, timeout)

    def udp(self, name: str, port: int = 0, *, host: str = "127.0.0.1") -> _sockets.LoggedDatagram:
        """A bound UDP socket, logged under ``name`` (port 0: any free port)."""
        return _sockets.udp(name, self.log, self.clock, host, port)
