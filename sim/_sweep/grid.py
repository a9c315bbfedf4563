"""The grid of a sweep: axes from the command line or a ``[sweep]`` table, points, seeds.

An axis is a dotted config key and its values: ``params.cars=100,200,300``,
``params.cars=range(50,501,50)`` or ``clock.speedup=linspace(600,6000,4)``. Points are the
cartesian product of the axes (or, with ``zip``, the axes side by side). Each repetition of a
point gets a seed derived from the base seed, the point and the repetition number, so the same
command always gives the same seeds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from sim.config import parse_value
from sim.errors import ConfigError

__all__ = ["Axis", "Grid", "Point", "SweepTable", "expand", "parse_axis", "run_seed"]

# Far more runs than a machine can do in a day: a typo such as linspace(1,5,100000000) is
# refused instead of filling memory with a grid.
MAX_RUNS = 100_000
_FUNC = re.compile(r"^\s*(range|linspace)\s*\((.*)\)\s*$")
_OPENED = re.compile(r"^\s*(range|linspace)\s*\(")


class SweepTable(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``[sweep]`` table of a config."""

    axes: dict[str, Any] = msgspec.field(default_factory=dict)
    repeat: Annotated[int, msgspec.Meta(ge=1)] = 1
    zip: bool = False


@dataclass(frozen=True)
class Axis:
    """One swept key and the values it takes."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One combination of axis values, numbered in grid order."""

    index: int
    values: tuple[tuple[str, Any], ...]

    @property
    def overrides(self) -> list[str]:
        """The point as ``-s key=value`` overrides (values written as TOML)."""
        return [f"{key}={_toml(value)}" for key, value in self.values]

    @property
    def label(self) -> str:
        names = axis_names([key for key, _ in self.values])
        values = [value for _, value in self.values]
        return ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))


def axis_names(keys: Sequence[str]) -> list[str]:
    """What a table or a progress line calls each swept key: its last part, or as many of its
    last parts as it takes to tell it from the others (``drive.mean`` and ``park.mean``, never
    ``mean`` twice)."""
    parts = [key.split(".") for key in keys]
    names = []
    for mine in parts:
        depth = 1
        while depth < len(mine) and any(
            other is not mine and other[-depth:] == mine[-depth:] for other in parts
        ):
            depth += 1
        names.append(".".join(mine[-depth:]))
    return names


@dataclass(frozen=True)
class Grid:
    """Every point of a sweep and how often each one runs."""

    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    repeat: int
    zipped: bool


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _numbers(text: str, key: str) -> list[float | int]:
    values = []
    for part in text.split(","):
        value = parse_value(part.strip())
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{part.strip()!r} is not a number", source="-p", key=key)
        values.append(value)
    return values


def _function(name: str, args: str, key: str) -> list[Any]:
    nums = _numbers(args, key)
    if name == "range":
        if not 2 <= len(nums) <= 3 or not all(isinstance(n, int) for n in nums):
            raise ConfigError("range takes 2 or 3 integers: range(start,stop[,step])",
                              source="-p", key=key)  # fmt: skip
        if len(nums) == 3 and nums[2] == 0:
            raise ConfigError("the step of range() must not be 0", source="-p", key=key)
        values = range(*(int(n) for n in nums))
        if len(values) > MAX_RUNS:
            raise ConfigError(f"range of {len(values):,} values; a sweep takes at most "
                              f"{MAX_RUNS:,} runs", source="-p", key=key)  # fmt: skip
        return list(values)
    if len(nums) != 3 or not isinstance(nums[2], int) or nums[2] < 2:
        raise ConfigError("linspace takes linspace(start,stop,n) with an integer n >= 2",
                          source="-p", key=key)  # fmt: skip
    start, stop, n = float(nums[0]), float(nums[1]), int(nums[2])
    if n > MAX_RUNS:
        raise ConfigError(f"linspace of {n:,} values; a sweep takes at most {MAX_RUNS:,} runs",
                          source="-p", key=key)  # fmt: skip
    return [start + (stop - start) * i / (n - 1) for i in range(n)]


def _values(spec: Any, key: str) -> list[Any]:
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, str) and (match := _FUNC.match(spec)):
        values = _function(match.group(1), match.group(2), key)
    elif isinstance(spec, str) and (opened := _OPENED.match(spec)):
        # Else it would be split at its commas into "range(1" and "5": a confusing type error.
        raise ConfigError(f"{spec.strip()!r}: the parenthesis of {opened.group(1)}( is not "
                          f"closed", source="-p", key=key)  # fmt: skip
    elif isinstance(spec, str):
        values = [parse_value(part.strip()) for part in spec.split(",")]
    else:
        values = [spec]
    if not values:
        raise ConfigError("the axis has no values", source="-p", key=key)
    return values


def parse_axis(text: str) -> Axis:
    """``key=values`` from the command line."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected KEY=VALUES, got {text!r}", source="-p")
    return Axis(key, tuple(_values(spec, key)))


def table_axes(table: SweepTable) -> list[Axis]:
    """Axes from a ``[sweep]`` table; nested tables are read as dotted keys."""

    def flatten(prefix: str, node: Mapping[str, Any]) -> list[Axis]:
        found = []
        for name, spec in node.items():
            key = f"{prefix}{name}"
            if isinstance(spec, dict):
                found.extend(flatten(f"{key}.", spec))
            else:
                found.append(Axis(key, tuple(_values(spec, key))))
        return found

    return flatten("", table.axes)


def expand(axes: Sequence[Axis], *, repeat: int, zipped: bool) -> Grid:
    """All points: the cartesian product of the axes, or with ``zipped`` the axes side by side."""
    keys = [axis.key for axis in axes]
    size = repeat * (
        len(axes[0].values) if zipped and axes else math.prod(len(a.values) for a in axes)
    )
    if size > MAX_RUNS:
        raise ConfigError(f"{size:,} runs; a sweep takes at most {MAX_RUNS:,}", source="-p",
                          key=", ".join(keys))  # fmt: skip
    if len(set(keys)) != len(keys):
        raise ConfigError("an axis is given twice", source="-p", key=", ".join(keys))
    if zipped:
        lengths = {len(axis.values) for axis in axes}
        if len(lengths) > 1:
            raise ConfigError(
                "zipped axes must have the same number of values: "
                + ", ".join(f"{a.key} has {len(a.values)}" for a in axes),
                source="--zip",
            )
        combos: list[tuple[Any, ...]] = list(zip(*(a.values for a in axes), strict=True))
    else:
        combos = list(itertools.product(*(a.values for a in axes)))
    points = tuple(Point(i, tuple(zip(keys, combo, strict=True))) for i, combo in enumerate(combos))
    return Grid(tuple(axes), points, repeat, zipped)


def run_seed(base: int, point: Point, rep: int) -> int:
    """The seed of repetition ``rep`` of ``point``: a hash, stable across runs and machines."""
    text = json.dumps([base, [list(kv) for kv in point.values], rep], sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")
