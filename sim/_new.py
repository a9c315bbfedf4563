"""``python -m sim new NAME``: a scenario module and a config from a template.

The template (sim/_templates) is a complete small scenario (parameters, a role, a Lock, a
metric from the history, a check of its own, states) that runs and passes as written, so a
new scenario starts from something that works; docs/authoring.md explains each part.
"""

from __future__ import annotations

import importlib.machinery
import keyword
import os
import sys
from pathlib import Path

from .errors import ConfigError

__all__ = ["write_template"]

_TEMPLATES = Path(__file__).resolve().parent / "_templates"


def write_template(name: str, folder: Path, *, force: bool = False) -> list[Path]:
    """Write ``NAME.py`` and ``NAME.toml`` into ``folder``; return their paths."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise ConfigError(f"{name!r} is not a Python identifier (letters, digits, _)",
                          source="NAME")  # fmt: skip
    if _taken(name):
        raise ConfigError(f"{name}.py would hide the module {name!r} of Python's or of an "
                          f"installed package from `python -m sim` run in its folder (which "
                          f"puts that folder first on the import path); choose another name, "
                          f"such as {name}_demo", source="NAME")  # fmt: skip
    if _bundled_config(name):
        # A config path comes before a bundled name: `python -m sim run carpark.toml` in this
        # folder would run the template instead of the car park, and nothing would say so.
        raise ConfigError(f"{name}.toml would hide the bundled config {name!r} from "
                          f"`python -m sim run {name}.toml` in its folder; choose another "
                          f"name, such as {name}_demo", source="NAME")  # fmt: skip
    if not folder.is_dir():
        raise ConfigError("no such folder", source=str(folder))
    targets = [folder / f"{name}.py", folder / f"{name}.toml"]
    there = [str(path) for path in targets if path.exists()]
    if there and not force:
        raise ConfigError(f"{', '.join(there)} already there (--force overwrites)", source="new")
    cls = "".join(part.capitalize() for part in name.split("_")) or "Scenario"
    for target, template in zip(targets, ("scenario.py.txt", "config.toml.txt"), strict=True):
        text = (_TEMPLATES / template).read_text(encoding="utf-8")
        target.write_text(text.replace("__NAME__", name).replace("__CLASS__", cls),
                          encoding="utf-8")  # fmt: skip
    return targets


def _bundled_config(name: str) -> bool:
    from .config import bundled_configs

    folder = bundled_configs()
    return folder is not None and (folder / f"{name}.toml").is_file()


def _taken(name: str) -> bool:
    """Is ``name`` a module Python or an installed package provides (``queue``, ``random``,
    ``sim``, ``numpy``)? The current folder is left out of the search: a scenario written
    here before (``--force``) is no reason to refuse its name."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return True
    here = {"", ".", os.getcwd()}
    path = [entry for entry in sys.path if entry not in here]
    return importlib.machinery.PathFinder.find_spec(name, path) is not None
