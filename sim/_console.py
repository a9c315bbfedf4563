"""The consoles human output goes to: the same for ``python -m sim`` and the Python API, so a
run's summary reads the same as its replay's, on a terminal or off one."""

from __future__ import annotations

import os
import sys
from typing import IO, Any, cast

from rich.console import Console

# Output that is not a terminal (a pipe, a file, CI's log) is read whole or searched: a table
# row wrapped at 80 columns is five lines of a log. Wide enough to never wrap in practice.
_UNWRAPPED = 10_000


def console(*, stderr: bool) -> Console:
    """A console on stderr (human output) or stdout; off a terminal it does not wrap unless
    COLUMNS says how wide to be, and its lines end without the padding of table cells."""
    out = _Console(stderr=stderr, highlight=False)
    if out.is_terminal or out.is_jupyter:
        # A notebook renders what it is given (its own width and colours): nothing to trim.
        return out
    stream = sys.stderr if stderr else sys.stdout
    width = None if "COLUMNS" in os.environ else _UNWRAPPED
    return _Console(file=cast("IO[str]", _Trimmed(stream)), width=width, highlight=False,
                    stderr=stderr)  # fmt: skip


class _Console(Console):
    """rich's Console, but a reader that has gone is sim's to handle: rich's own answer is
    to exit with status 1 on the spot, which reads as a failed run (`replay --speed 10 |
    head`). On stdout the error goes on to the command, which stops writing and exits with
    what it came to; on stderr the human output stops and the work goes on."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        if not self.stderr:
            raise BrokenPipeError


class _Trimmed:
    """A text stream that drops the spaces at the end of each line written to it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._tail = ""

    def write(self, text: str) -> int:
        lines = (self._tail + text).split("\n")
        self._tail = lines.pop()
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._tail:
            self._stream.write(self._tail)
            self._tail = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False
