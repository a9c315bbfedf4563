"""sim: a scenario engine for inter-process communication.

A TOML file describes a scenario; ``python -m sim run`` runs it as real OS processes that share
multiprocessing primitives and stream structured events to a socket coordinator, which writes one
log per run. This module is the public API for scenario authors and scripts: everything a
scenario module needs is importable from here, and so are ``sim.run``, ``sim.replay`` and
``sim.sweep`` with their results (docs/api.md); nothing else in sim is meant to be.
"""

from __future__ import annotations

from .analysis import Analysis, Report
from .api import Run, Sweep, replay, run, sweep
from .checks import Check, Problems, Verdict
from .config import RunConfig, load_config
from .durations import Duration
from .errors import (
    ActorCrashed,
    ConfigError,
    ProtocolError,
    ReplayError,
    ScenarioError,
    SimError,
    StorageError,
)
from .faults import FaultCrash
from .history import (
    History,
    Hold,
    Level,
    Line,
    Operation,
    State,
    Subscriber,
    Transfer,
    Waits,
)
from .kinds import (
    Array,
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    JoinableQueue,
    Lock,
    Pipe,
    PrimSpec,
    Queue,
    RLock,
    Semaphore,
    SharedMemory,
    Value,
)
from .kinds.barrier import LoggedBarrier
from .kinds.condition import LoggedCondition
from .kinds.event import LoggedEvent
from .kinds.pipe import LoggedConnection, LoggedPipe
from .kinds.queue import Handled, LoggedQueue
from .kinds.semaphore import LoggedSemaphore
from .kinds.shared import LoggedArray, LoggedSharedMemory, LoggedValue
from .kinds.tcp import TcpListener, TcpStream
from .kinds.udp import UdpSocket
from .runtime.ctx import Ctx
from .scenario import Actor, Metric, Scenario, States, actors
from .stats import TimeWeighted, describe, percentile

__version__ = "0.2.0"

__all__ = [
    "Actor",
    "ActorCrashed",
    "Analysis",
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Check",
    "Condition",
    "ConfigError",
    "Ctx",
    "Duration",
    "Event",
    "FaultCrash",
    "Handled",
    "History",
    "Hold",
    "JoinableQueue",
    "Level",
    "Line",
    "Lock",
    "LoggedArray",
    "LoggedBarrier",
    "LoggedCondition",
    "LoggedConnection",
    "LoggedEvent",
    "LoggedPipe",
    "LoggedQueue",
    "LoggedSemaphore",
    "LoggedSharedMemory",
    "LoggedValue",
    "Metric",
    "Operation",
    "Pipe",
    "PrimSpec",
    "Problems",
    "ProtocolError",
    "Queue",
    "RLock",
    "ReplayError",
    "Report",
    "Run",
    "RunConfig",
    "Scenario",
    "ScenarioError",
    "Semaphore",
    "SharedMemory",
    "SimError",
    "State",
    "States",
    "StorageError",
    "Subscriber",
    "Sweep",
    "TcpListener",
    "TcpStream",
    "TimeWeighted",
    "Transfer",
    "UdpSocket",
    "Value",
    "Verdict",
    "Waits",
    "__version__",
    "actors",
    "describe",
    "load_config",
    "percentile",
    "replay",
    "run",
    "sweep",
]
