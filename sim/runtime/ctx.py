"""The context object an actor's role function receives: all a scenario author needs."""

from __future__ import annotations

import difflib
import random
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from sim import kinds
from sim.durations import Duration
from sim.errors import ScenarioError
from sim.kinds.tcp import TcpListener, TcpStream, tcp_connect, tcp_listen
from sim.kinds.udp import UdpSocket, udp

from .clock import Clock

__all__ = ["Ctx"]

P = TypeVar("P")
W = TypeVar("W")


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
        prims: Mapping[str, tuple[str, Any]],
        clock: Clock,
        rng: random.Random,
        log: FilteringBoundLogger,
    ) -> None:
        self.name = name
        #: Position of this actor in the scenario's actor list (0-based).
        self.index = index
        self.params = params
        self.clock = clock
        #: This actor's own RNG, derived from the run seed and the actor's name.
        self.rng = rng
        #: A structlog logger: ``ctx.log.info("park", visit=2)`` writes one event line.
        self.log: FilteringBoundLogger = log
        self._prims = prims

    def prim(self, name: str, kind: type[kinds.PrimSpec[W]]) -> W:
        """The shared primitive called ``name``, of the kind the spec class ``kind`` declares
        (``ctx.prim("spaces", Semaphore)``), wrapped so that it logs every operation."""
        try:
            actual, wrapped = self._prims[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._prims), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScenarioError(f"{self.name}: no primitive named {name!r}{hint}") from None
        spec = kinds.get(actual).spec
        if spec is None or not issubclass(spec, kind):
            raise ScenarioError(
                f"{self.name}: primitive {name!r} is a {actual}, not a {kind.__name__}"
            )
        return wrapped  # type: ignore[no-any-return]

    def sleep(self, minutes: float, what: str | None = None) -> None:
        """Let ``minutes`` simulated minutes pass; ``what`` names the duration (``"drive"``).

        When it returns it logs a ``sleep`` line with the minutes asked for and the ``ts`` at
        which it began, so that the run's timer lateness can be read from the log (see
        :mod:`sim.timing`); ``what`` lets the summary show each named duration's realised mean
        beside the requested one.
        """
        began = self.clock.elapsed()
        self.clock.sleep(minutes)
        if what is None:
            self.log.info("sleep", minutes=minutes, began=began)
        else:
            self.log.info("sleep", minutes=minutes, began=began, what=what)

    def draw(self, duration: Duration) -> float:
        """A random duration in simulated minutes, from this actor's RNG."""
        return duration.draw(self.rng)

    def now(self) -> float:
        """Simulated minutes since the run started."""
        return self.clock.now()

    def tcp_listen(
        self, name: str, port: int = 0, *, host: str = "127.0.0.1", backlog: int = 64
    ) -> TcpListener:
        """A listening TCP socket called ``name`` in the log (port 0: the OS picks one)."""
        return tcp_listen(name, self.log, self.clock, host, port, backlog)

    def tcp_connect(
        self, name: str, port: int, *, host: str = "127.0.0.1", timeout: float | None = None
    ) -> TcpStream:
        """A TCP connection to ``host:port``, logged under ``name``."""
        return tcp_connect(name, self.log, self.clock, host, port, timeout)

    def udp(self, name: str, port: int = 0, *, host: str = "127.0.0.1") -> UdpSocket:
        """A bound UDP socket, logged under ``name`` (port 0: any free port)."""
        return udp(name, self.log, self.clock, host, port)
