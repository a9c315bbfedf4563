"""sim: a scenario engine for inter-process communication.

A TOML file describes a scenario; ``python -m sim run`` runs it as real OS processes that share
multiprocessing primitives and stream structured events to a socket coordinator, which writes one
log per run. This module is the public API for scenario authors and scripts.
"""

from __future__ import annotations

from .analysis import Analysis, Report
from .checks import Check, Verdict
from .config import RunConfig, load_config
from .durations import Duration
from .errors import ActorCrashed, ConfigError, ProtocolError, ReplayError, ScenarioError, SimError
from .primitives import (
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
from .runtime.ctx import Ctx
from .scenario import Actor, Metric, Scenario, actors

__version__ = "0.1.0"

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
    "JoinableQueue",
    "Lock",
    "Metric",
    "Pipe",
    "PrimSpec",
    "ProtocolError",
    "Queue",
    "RLock",
    "ReplayError",
    "Report",
    "RunConfig",
    "Scenario",
    "ScenarioError",
    "Semaphore",
    "SharedMemory",
    "SimError",
    "Value",
    "Verdict",
    "__version__",
    "actors",
    "load_config",
]
