"""The interactive player: ``python -m sim replay RUN --play``.

A finished run, in the terminal, under the student's hand: pause and resume, step one
operation forward and back, jump to the start, the end and the next finding, play faster or
slower, follow one actor. It shows the same board as the live view (sim.views), read from a
tape of the run (:mod:`sim.views.tape`); an explanation appears in full, wrapped, at the step
where it happens, and the summary only at the end. Built on Textual, whose pilot drives it in
the tests.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim._replay import LoadedRun

__all__ = ["play_interactive"]


def play_interactive(loaded: LoadedRun, *, speed: float = 1.0) -> None:
    """Play ``loaded`` in this terminal until the student quits. Off a terminal there is
    nobody to press keys: the run is printed as a timeline instead (as ``--speed`` does)."""
    from rich.console import Console

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        from sim.player import play

        Console(stderr=True).print("--play needs a terminal; printing the timeline instead")
        play(loaded, Console(soft_wrap=True), speed)
        return
    from sim.views.tape import record

    from .app import Player

    Player(record(loaded), speed=speed).run()
