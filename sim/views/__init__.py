"""What the teaching views share: one board (the run's state at a moment, read from the
history), its colours, and how a frame of it is drawn in a terminal.

The live view during a run, the replay player and the replay page all show a :class:`Board`,
so that what a student sees live and what the teacher replays are the same thing.
"""

from __future__ import annotations

from .board import Board, Note, Row, Snapshot
from .palette import color_of

__all__ = ["Board", "Note", "Row", "Snapshot", "color_of"]
