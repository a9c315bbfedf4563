"""Colours for what actors do, shared by every picture (plot, player, live view, page).

States of the same sort share a hue family, so that a picture reads at a glance: red and
orange for blocked in an operation, green for using what it waited for (holding a lock,
parked, eating), yellow for about to ask for it, blue for doing something else. A scenario
says which sort each of its own states is (its ``States.tones``); the colour within the
family is chosen from the state's name, so the same state has the same colour everywhere.
"""

from __future__ import annotations

import zlib

__all__ = ["color_of"]

# What an actor blocked in an operation is doing, by the operation's label (see Kind.waiting).
_BLOCKED = {
    "waiting": "#d62728",
    "getting": "#ff7f0e",
    "receiving": "#ff7f0e",
    "accepting": "#ff9f4a",
    "connecting": "#ff9f4a",
    "joining": "#e377c2",
    "sending": "#9467bd",
    "putting": "#9467bd",
}
_TONES = {
    "using": ("#2ca02c", "#74c476", "#1b7837", "#31a354", "#41ab5d"),
    "asking": ("#fdd835", "#fbc02d", "#f9a825", "#ffee58"),
    "idle": ("#aec7e8", "#9ecae1", "#c6dbef", "#c5b0d5", "#b3cde3"),
    "blocked": ("#d62728", "#e6550d", "#fd8d3c"),
}
_FIXED = {"holding": "#2ca02c", "running": "#dadada", "not started": "#eeeeee"}


def color_of(state: str, category: str = "", tone: str = "") -> str:
    """The colour of ``state`` (a :class:`~sim.history.State`'s ``state``, ``category`` and
    ``tone``)."""
    if category == "wait":
        return _BLOCKED.get(state, "#d62728")
    if category == "done":
        return "#c5b0d5"
    fixed = _FIXED.get(state)
    if fixed is not None and category != "domain":
        return fixed
    family = _TONES.get(tone or "idle", _TONES["idle"])
    return family[zlib.crc32(state.encode()) % len(family)]
