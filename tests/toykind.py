"""A primitive kind of the tests' own, known to sim through the registry alone.

A ``token`` is passed hand to hand: ``take`` waits until nobody has it, ``give`` hands it back
(a multiprocessing Lock underneath). Its model says who has it (a hold), its gauge how many
have taken it, and its check that nobody took it while another had it.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim import Check, Hold, Operation, PrimSpec, Verdict, kinds
from sim.kinds import Display, Holds, Kind, Logged, Model, Reading


class LoggedToken(Logged):
    kind = "token"

    def take(self) -> None:
        self._log.info("op", op="take", phase="invoke")
        # Virtual runs: the scheduler lets this go only when the model says it is ready (the
        # token is free), so the real call never blocks; a wall run gets None and just waits.
        if self._turn() is not None:
            assert self._raw.acquire(False)
        else:
            self._raw.acquire()
        self._log.info("op", op="take", phase="ok")

    def give(self) -> None:
        self._log.info("op", op="give", phase="invoke")
        self._raw.release()
        self._turn()  # after the real effect: a waiter may be let go at once
        self._log.info("op", op="give", phase="ok")


@dataclass(frozen=True)
class Token(PrimSpec[LoggedToken]):
    kind: ClassVar[str] = "token"

    def build(self, mp: BaseContext) -> Any:
        return mp.Lock()


class TokenModel(Model):
    series = ("taken", "passes")

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        self.holds = Holds()
        self.passes = 0

    def reading(self) -> Reading:
        who = ", ".join(self.holders()) or "nobody"
        return Reading(len(self.holders()), 1, f"token with {who}, passed {self.passes} times")

    def ready(self, op: Operation) -> bool:
        return op.name != "take" or not self.holders()

    def invoke(self, op: Operation) -> None:
        if op.name == "give":
            for hold in self.holds.mine(op.actor) if self.holds is not None else ():
                self.history.close_hold(self, hold, op.start)
            self.set_gauge(taken=len(self.holders()))

    def complete(self, op: Operation) -> None:
        if op.name == "take" and op.ok:
            self.passes += 1
            assert op.end is not None
            self.history.open_hold(self, op.actor, op.end, op)
            self.set_gauge(taken=len(self.holders()), passes=self.passes)


class NeverShared(Check):
    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.name = f"{prim}: one holder of the token"
        self.taken = 0

    def on_hold_start(self, hold: Hold) -> None:
        self.taken += 1
        if len(self.history.holders(self.prim)) > 1:
            self.problems.add(f"{hold.actor} took {self.prim} while another had it")

    def verdict(self) -> Verdict:
        if not self.taken:
            return self.skip("nobody took the token")
        return self.result(f"taken {self.taken} times, never by two")


def _wrap(name: str, raw: Any, log: Any, clock: Any) -> LoggedToken:
    return LoggedToken(name, raw, log, clock)


TOKEN = kinds.register(
    Kind(
        "token",
        TokenModel,
        Token,
        _wrap,
        lambda name, info: [NeverShared(name)],
        frozenset({"take"}),
        {"take": "waiting for the token"},
        display=Display((("taken", "fill"), ("passes", ":")), "the token: who has it",
                        "holders", rank=0),
    )
)  # fmt: skip
