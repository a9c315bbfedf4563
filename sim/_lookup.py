"""Where a scenario comes from, and which code sim may import to get it.

A config's ``scenario`` is one of four forms:

- a bare name (``carpark``): a module of the bundled ``scenarios`` package, or else a scenario
  an installed package registers under the entry-point group ``sim.scenarios``;
- a file (``printer.py``, ``lab/printer.py``: it ends in ``.py`` or has a ``/``), relative to
  the config file's folder (to the current directory when set with ``-s`` or given as a dict);
- a dotted module (``mypkg.printer``), importable from the current directory, ``PYTHONPATH``
  or an installed package.

The rule for importing code: bundled and installed scenarios are code the user installed as
scenarios, and any of them may be named from anywhere. A file or a dotted module is imported
only when the user named it, in a config or on the command line (``user=True``), never because
a log did (``replay`` reads the name from the log's manifest and passes ``user=False``). Even
then, a file or module is located without running it (its parent packages are not imported
either) and imported only if its source assigns ``scenario`` at module level: so
``-s scenario=this.x`` prints no Zen of Python, and a name that is not a name at all is a
:class:`~sim.errors.ScenarioError`, never a TypeError from importlib.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.machinery
import importlib.metadata
import keyword
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ScenarioError

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = [
    "GROUP",
    "Listed",
    "Refused",
    "Source",
    "bundled",
    "catalogue",
    "find",
    "installed",
]

#: The entry-point group under which installed packages register scenarios.
GROUP = "sim.scenarios"

Form = Literal["bundled", "installed", "file", "module"]

_FORMS_HINT = (
    'a scenario of your own is a file (scenario = "printer.py", relative to the config) or a '
    'dotted module (scenario = "mypkg.printer"); an installed package registers one under the '
    f"entry-point group {GROUP!r}"
)


class Refused(ScenarioError):
    """A file or module named only by a log: sim does not import it unless the user asks."""


@dataclass(frozen=True)
class Source:
    """A scenario found: what was written (``name``), which form that is, and what to import."""

    name: str
    form: Form
    module: str
    path: Path | None = None
    attr: str = "scenario"
    distribution: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        """Where it comes from, in words: ``bundled``, ``installed: pkg 1.0``, ``file ...``."""
        if self.form == "installed":
            return f"installed: {self.distribution or '?'} {self.version or ''}".rstrip()
        if self.form == "file":
            return f"file {self.path}"
        if self.form == "module":
            return f"module {self.module}"
        return "bundled"

    def describe(self) -> dict[str, Any]:
        """What run.json records about it."""
        found: dict[str, Any] = {"name": self.name, "form": self.form, "module": self.module}
        if self.path is not None:
            found["path"] = str(self.path)
        if self.form == "installed":
            found |= {"entry_point": f"{self.module}:{self.attr}",
                      "distribution": self.distribution, "version": self.version}  # fmt: skip
        return found

    def load(self) -> Scenario[Any]:
        """Import the scenario; errors in its code name the file and the line."""
        from .scenario import Scenario

        module = self._import()
        scenario = getattr(module, self.attr, None)
        if not isinstance(scenario, Scenario):
            raise ScenarioError(
                f"{self.label}: {self.module} does not define `{self.attr} = Scenario(...)`"
            )
        return scenario

    def _import(self) -> Any:
        loaded = sys.modules.get(self.module)
        if loaded is not None and self.form == "file" and self.path is not None:
            # A file edited since it was imported (a notebook's session goes on) is read again.
            mtime = _mtime(self.path)
            if getattr(loaded, "__sim_mtime__", mtime) != mtime:
                del sys.modules[self.module]
        try:
            module = importlib.import_module(self.module)
        except SyntaxError as exc:
            raise ScenarioError(f"{exc.filename} line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:
            raise ScenarioError(f"importing {self.label} failed: {_where(exc)}") from None
        if self.form == "file" and self.path is not None:
            module.__dict__["__sim_mtime__"] = _mtime(self.path)
        return module


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _where(exc: BaseException) -> str:
    """``file line N: Error: message``, from the innermost frame of the failed import."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename]
    text = f"{type(exc).__name__}: {exc}"
    if ours:
        return f"{ours[-1].filename} line {ours[-1].lineno}: {text}"
    return text


# -- the catalogue -------------------------------------------------------------------------


def bundled() -> list[str]:
    """Names of the scenarios bundled in the ``scenarios`` package."""
    import pkgutil

    import scenarios

    return sorted(m.name for m in pkgutil.iter_modules(scenarios.__path__) if not m.ispkg)


def installed() -> dict[str, Source]:
    """Scenarios registered by installed packages, by name (the first of a name wins)."""
    found: dict[str, Source] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in found:
            continue
        dist = getattr(ep, "dist", None)
        found[ep.name] = Source(
            ep.name,
            "installed",
            ep.module,
            attr=ep.attr or "scenario",
            distribution=dist.name if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
    return found


def _choices(word: str) -> str:
    names = bundled()
    extra = sorted(installed())
    close = difflib.get_close_matches(word, names + extra, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = f"bundled: {', '.join(names)}"
    if extra:
        listing += f"; installed: {', '.join(extra)}"
    return f"{hint}. Known scenarios, {listing}; {_FORMS_HINT}"


# -- finding -------------------------------------------------------------------------------


def _is_file_form(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def find(name: object, *, base: Path | None = None, user: bool = True) -> Source:
    """The scenario ``name`` stands for, found without importing anything of the user's.

    ``base`` is the folder a file name is relative to (default: the current directory).
    ``user`` says that the user wrote the name (a config, the command line); without it only
    bundled and installed scenarios are found, and a file or module raises :class:`Refused`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(f"{name!r} is not a scenario name; {_FORMS_HINT}")
    base = Path.cwd() if base is None else base
    if _is_file_form(name):
        if not user:
            raise Refused(f"the file {name!r} is named only by the log")
        return _file(name, base)
    parts = name.split(".")
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise ScenarioError(f"{name!r} is not a scenario name: a bundled or installed name is a "
                            f"Python identifier (carpark); {_FORMS_HINT}")  # fmt: skip
    if len(parts) > 1:
        if not user:
            raise Refused(f"the module {name!r} is named only by the log")
        return _module(name)
    if name in bundled():
        return Source(name, "bundled", f"scenarios.{name}", _bundled_path(name))
    registered = installed().get(name)
    if registered is not None:
        return registered
    beside = base / f"{name}.py"
    if beside.is_file():
        raise ScenarioError(f"no scenario named {name!r}; the file {beside} is there: to use "
                            f'it, write scenario = "{name}.py"')  # fmt: skip
    raise ScenarioError(f"no scenario named {name!r}{_choices(name)}")


def _bundled_path(name: str) -> Path | None:
    spec = importlib.machinery.PathFinder.find_spec("scenarios")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / f"{name}.py"
        if candidate.is_file():
            return candidate
    return None


def _file(name: str, base: Path) -> Source:
    from . import _files

    path = (base / Path(name).expanduser()).resolve()
    if not path.is_file():
        raise ScenarioError(f"no scenario file {path} ({name!r}, relative to {base})")
    if path.suffix != ".py":
        raise ScenarioError(f"{path}: a scenario file is Python source ending in .py")
    _declares(path, f"the file {path}")
    return Source(name, "file", _files.module_for(path), path)


def _module(name: str) -> Source:
    if name.split(".")[0] == "sim":
        raise ScenarioError(f"{name!r}: sim's own modules are not scenarios; {_FORMS_HINT}")
    path, plain = _locate(name)
    if plain is not None:
        # `os.path`: `os` is found, but as a plain module; what it calls `path` is set when it
        # runs, and there is no file of that name for sim to read without importing it.
        raise ScenarioError(f"no module file {name!r}: {plain!r} is a module, not a package, "
                            f"so it has no submodules to find without running it"
                            f"{_choices(name)}")  # fmt: skip
    if path is None:
        raise ScenarioError(f"no module {name!r} importable from here (the current directory, "
                            f"PYTHONPATH, installed packages){_choices(name)}")  # fmt: skip
    _declares(path, f"the module {name} ({path})")
    return Source(name, "module", name, path)


def _locate(dotted: str) -> tuple[Path | None, str | None]:
    """The source file of ``dotted``, found the way import would, without running anything
    (not even the ``__init__`` of its packages); or, if a leading part of it is a plain module
    (not a package, so it has no submodules to find), that part's name."""
    parts = dotted.split(".")
    search: list[str] | None = None
    spec = None
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), search)
        if spec is None:
            return None, None
        if i < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None, ".".join(parts[: i + 1])
            search = list(spec.submodule_search_locations)
    if spec is None or not spec.has_location or spec.origin is None:
        return None, None
    return Path(spec.origin), None


def _declares(path: Path, what: str) -> None:
    """Refuse, without importing it, source that does not assign ``scenario`` at top level."""
    if path.suffix != ".py":
        raise ScenarioError(f"{what} is not Python source: not imported")
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ScenarioError(f"{path} line {exc.lineno}: {exc.msg}") from None
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from None
    if not _assigns_scenario(tree):
        raise ScenarioError(f"{what} does not define `scenario = Scenario(...)` at module level: "
                            "not imported")  # fmt: skip


def _assigns_scenario(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == "scenario" for t in node.targets):
                return True
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            if isinstance(target, ast.Name) and target.id == "scenario" and node.value:
                return True
        elif isinstance(node, ast.ImportFrom) and any(
            (alias.asname or alias.name) == "scenario" for alias in node.names
        ):
            return True
    return False


def _description(path: Path) -> str:
    """The ``description=`` of a file's ``Scenario(...)``, read from its source."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, OSError, ValueError):
        return "(not readable as Python)"
    if not _assigns_scenario(tree):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Scenario":
            for kw in node.keywords:
                if kw.arg == "description" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
    return "(a scenario file)"


@dataclass(frozen=True)
class Listed:
    """One line of ``sim list``: a scenario's name, where it comes from, what it shows."""

    name: str
    source: str
    description: str


def catalogue(here: Path | None = None) -> list[Listed]:
    """Every scenario ``sim list`` shows: bundled, installed, and the files of ``here``
    (default: the current directory) that define a scenario. Bundled and installed ones are
    imported for their description; files are only read."""
    found: list[Listed] = []
    for name in bundled():
        found.append(_listed(Source(name, "bundled", f"scenarios.{name}")))
    for source in installed().values():
        found.append(_listed(source))
    here = Path.cwd() if here is None else here
    for path in sorted(here.glob("*.py")):
        what = _description(path)
        if what:
            found.append(Listed(path.name, f"file {path.name}", what))
    return found


def _listed(source: Source) -> Listed:
    try:
        what = source.load().description
    except ScenarioError as exc:
        what = f"(broken: {exc})"
    return Listed(source.name, source.label, what)
