"""pyplot for sim's pictures: Agg (draw into files, never open a window), unless the program
has chosen a backend of its own (a notebook's inline one, MPLBACKEND), whose figures must
still show after sim has drawn its own."""

from __future__ import annotations

import os
import sys

import matplotlib

if "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["plt"]
