"""The player's Textual app: a header, the board, the step just taken, the findings so far, and
the summary once the end is reached; every key in the footer."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.timer import Timer
from textual.widgets import Footer, Static

from sim.export import speedup_of
from sim.report import summary
from sim.views.board import Snapshot
from sim.views.frame import counts, explanations, gauges, lanes, sim_time
from sim.views.tape import Tape, describe_line

__all__ = ["Player"]

# Redraws a second while playing.
_FPS = 10
# A virtual run has no wall time to play by: it plays this many scheduling steps a second at
# speed 1.
_STEPS_PER_S = 4.0
_SPEEDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
# Lines of the step just taken that are worth showing (a step of a virtual run has a few).
_CAPTION_LINES = 4


class Player(App[None]):
    """A run played under the student's hand. ``position`` is how many steps have been
    taken (0: before the first line; ``tape.end``: after the last)."""

    TITLE = "sim replay"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    #head { height: auto; padding: 0 1; }
    #body { height: 1fr; padding: 0 1; }
    #what { height: auto; padding: 0 1; color: $text-muted; }
    #notes { height: auto; padding: 0 1; }
    #summary { height: auto; display: none; }
    #summary.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "play_pause", "play/pause", key_display="space"),
        Binding("right,l", "step(1)", "step", key_display="→"),
        Binding("left,h", "step(-1)", "back", key_display="←"),
        Binding("home,g", "jump('start')", "start", key_display="g"),
        Binding("end,G", "jump('end')", "end", key_display="G"),
        Binding("n", "finding(1)", "finding"),
        Binding("p", "finding(-1)", "previous finding", show=False),
        Binding("plus,equals_sign,up", "faster", "faster", key_display="+"),
        Binding("minus,down", "slower", "slower", key_display="-"),
        Binding("f", "follow", "follow"),
        Binding("q,escape", "quit", "quit"),
    ]

    def __init__(self, tape: Tape, *, speed: float = 1.0) -> None:
        super().__init__()
        self.tape = tape
        self.loaded = tape.loaded
        self.speedup = speedup_of(tape.loaded)
        self.speed = speed
        self.position = 0
        self.playing = False
        self.following: str | None = None
        # Where play is between two steps: the run's time (wall runs) or a fraction of a step.
        self._clock = 0.0
        self._timer: Timer | None = None
        self.shown: Snapshot = tape.snapshot(0)

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        with VerticalScroll(id="body"):
            yield Static(id="board")
            yield Static(id="summary")
        yield Static(id="what")
        yield Static(id="notes")
        yield Footer()

    def on_mount(self) -> None:
        self._timer = self.set_interval(1 / _FPS, self._tick, pause=True)
        self.show()

    # -- the actions the keys call --------------------------------------------------------------

    def action_play_pause(self) -> None:
        if self.playing:
            self.pause()
        else:
            if self.position >= self.tape.end:
                self.go(0)  # played to the end: again from the start
            self.playing = True
            self._clock = self.tape.ts(self.position) if not self.tape.virtual else 0.0
            assert self._timer is not None
            self._timer.resume()
        self.show()

    def pause(self) -> None:
        self.playing = False
        if self._timer is not None:
            self._timer.pause()

    def action_step(self, by: int) -> None:
        self.pause()
        at = self.position + by
        if self.following is not None:
            # Following one actor, a step is that actor's next (or last) step.
            while 0 < at < self.tape.end and not self.tape.touches(at, self.following):
                at += by
        self.go(at)

    def action_jump(self, where: str) -> None:
        self.pause()
        self.go(0 if where == "start" else self.tape.end)

    def action_finding(self, way: int) -> None:
        self.pause()
        found = (self.tape.next_notice(self.position) if way > 0
                 else self.tape.previous_notice(self.position))  # fmt: skip
        if found is not None:
            self.go(found)
        else:
            self.bell()

    def action_faster(self) -> None:
        self.speed = next((s for s in _SPEEDS if s > self.speed * 1.001), self.speed)
        self.show()

    def action_slower(self) -> None:
        self.speed = next((s for s in reversed(_SPEEDS) if s < self.speed * 0.999), self.speed)
        self.show()

    def action_follow(self) -> None:
        names = list(self.tape.names)
        if not names:
            return
        if self.following is None:
            self.following = names[0]
        else:
            i = names.index(self.following) + 1 if self.following in names else 0
            self.following = names[i] if i < len(names) else None
        self.show()

    # -- moving and drawing --------------------------------------------------------------------

    def go(self, at: int) -> None:
        """Show the board after ``at`` steps."""
        self.position = max(0, min(at, self.tape.end))
        self.show()

    def _tick(self) -> None:
        if not self.playing:
            return
        tape = self.tape
        if tape.virtual:
            self._clock += self.speed * _STEPS_PER_S / _FPS
            whole = int(self._clock)
            self._clock -= whole
            at = self.position + whole
        else:
            self._clock += self.speed / _FPS
            at = tape.position_at(self._clock, self.position)
        # A finding stops the play where it happens: the moment a teacher wants to talk about.
        found = tape.next_notice(self.position)
        if found is not None and found <= at:
            at = found
            self.pause()
        if at >= tape.end:
            at = tape.end
            self.pause()
        self.go(at)

    def show(self) -> None:
        snap = self.shown = self.tape.snapshot(self.position)
        width = max(self.size.width - 2, 40)
        self.query_one("#head", Static).update(self._head(snap))
        room = max(self.size.height - 10 - len(snap.rows) - 2 * len(snap.notes), 3)
        board = Group(gauges(snap, width), counts(snap),
                      lanes(snap, width, room, self.speedup, self.following))  # fmt: skip
        self.query_one("#board", Static).update(board)
        self.query_one("#what", Static).update(self._what())
        self.query_one("#notes", Static).update(Group(*explanations(snap)))
        ended = self.position >= self.tape.end
        shown = self.query_one("#summary", Static)
        shown.set_class(ended, "shown")
        if ended:
            # Only at the end: before it, the summary would give the ending away.
            shown.update(self._summary())

    def _head(self, snap: Snapshot) -> RenderableType:
        tape = self.tape
        title = Text(self.loaded.title, style="bold cyan", no_wrap=True, overflow="ellipsis")
        state = "▶ playing" if self.playing else "⏸ paused"
        where = f"{state} {self.speed:g}x · step {self.position}/{tape.end}"
        if snap.step is not None:
            where += f" (scheduling step {snap.step})"
        where += f" · {snap.now:.3f} s"
        if self.speedup:
            where += f" = {sim_time(snap.now, self.speedup) or '0 min'} simulated"
        if self.following:
            where += f" · following {self.following}"
        return Group(title, Text(where, style="dim", no_wrap=True, overflow="ellipsis"))

    def _what(self) -> RenderableType:
        if self.position == 0:
            return Text("before the first line: press space to play, → to step", style="dim")
        step = self.tape.steps[self.position - 1]
        said = [describe_line(line, short=True) for line in step.lines]
        more = len(said) - _CAPTION_LINES
        text = "; ".join(said[:_CAPTION_LINES]) + (f"; and {more} more" if more > 0 else "")
        # One line: what the step did is a caption; the findings below say the rest in full.
        width = max(self.size.width - 2, 20)
        text = f"this step: {text}"
        return Text(text if len(text) <= width else text[: width - 1] + "…", style="dim")

    def _summary(self) -> RenderableType:
        report = self.tape.report
        if report is None:
            return Text("")
        spec = self.tape.spec
        recorded = (self.loaded.manifest or {}).get("status", "unknown")
        parts = summary(
            title=f"end of the log · {self.loaded.title} (recorded status: {recorded})",
            metrics=report.metrics,
            declared=spec.metrics if spec is not None else (),
            verdicts=report.verdicts,
            status="ok" if report.ok else "failed",
            reason=report.reason,
            wall_s=float((self.loaded.manifest or {}).get("wall_s", 0.0)),
            run_dir=str(self.loaded.run_dir or self.loaded.events_path),
            timing=report.timing,
            theory=spec.theory(self.loaded.config)
            if spec is not None and spec.theory and self.loaded.config
            else None,
        )
        return Group(Text(""), *parts)
