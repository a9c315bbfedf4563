"""Scenario files imported by path, under module names that carry the path.

A config may name its scenario by file (``scenario = "printer.py"``). Actors started by spawn
or forkserver import their role functions by module name, so the file's module needs a name
that any process can import without being told anything else: ``sim._files.<stem>_<hex>``,
where ``<hex>`` is the file's absolute path in hexadecimal. The finder installed here, when
this package is first imported (always before one of its modules, by the import system's
rules), turns such a name back into the path. Nothing is put on ``sys.path``, so a file called
``queue.py`` shadows nothing and nothing shadows it.

Only :mod:`sim._lookup` makes these names, for a file the user named in a config or on the
command line; dotted scenario names never reach this package (``_`` parts are refused there).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = ["module_for", "path_of"]

_PREFIX = __name__ + "."
_NAME = re.compile(r"^[A-Za-z0-9_]*_(?P<hex>(?:[0-9a-f]{2})+)$")


def module_for(path: Path) -> str:
    """The module name under which the scenario file ``path`` is imported."""
    absolute = str(path.resolve())
    stem = re.sub(r"\W", "_", path.stem, flags=re.ASCII) or "scenario"
    return f"{_PREFIX}{stem}_{absolute.encode().hex()}"


def path_of(module: str) -> Path | None:
    """The file a module name made by :func:`module_for` stands for (None for any other)."""
    if not module.startswith(_PREFIX):
        return None
    match = _NAME.match(module[len(_PREFIX) :])
    if match is None:
        return None
    try:
        return Path(bytes.fromhex(match.group("hex")).decode())
    except (ValueError, UnicodeDecodeError):
        return None


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``sim._files.<stem>_<hex>`` at the path the name carries."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        where = path_of(fullname)
        if where is None or not where.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, where)


if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.append(_Finder())
