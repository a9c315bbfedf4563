"""Plain data written as TOML: a config given as a dict becomes a file a run can be re-run from.

Only what a config holds: tables, strings, numbers, booleans, lists of those. ``None`` has no
TOML spelling and means "not set", so such keys are left out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "value"]

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name)


def value(obj: Any) -> str:
    """One value as TOML (a table inline)."""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=False)  # a TOML basic string is a JSON string
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return repr(obj)
    if isinstance(obj, Mapping):
        items = [f"{_key(str(k))} = {value(v)}" for k, v in obj.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(value(v) for v in obj) + "]"
    raise TypeError(f"{type(obj).__name__} cannot be written as TOML: {obj!r}")


def dumps(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document: scalars first, then one ``[table]`` per nested mapping."""
    lines: list[str] = []
    _table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    scalars = [(k, v) for k, v in data.items() if v is not None and not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    if path and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, item in scalars:
        lines.append(f"{_key(str(key))} = {value(item)}")
    for key, item in tables:
        _table(item, (*path, str(key)), lines)
