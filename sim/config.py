"""Read a scenario's TOML file, apply ``-s`` overrides and validate it into typed objects.

Nothing is started and nothing is written until :func:`load_config` has returned: every error is a
:class:`~sim.errors.ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from ._lookup import Refused, Source, find
from .errors import ConfigError, ScenarioError
from .faults import Fault

__all__ = [
    "ClockConfig",
    "EngineConfig",
    "RunConfig",
    "bundled_configs",
    "config_from_data",
    "config_from_mapping",
    "convert_section",
    "load_config",
    "override_key",
    "parse_value",
    "reload",
    "resolve_config_path",
    "with_overrides",
]

StartMethod = Literal["fork", "forkserver", "spawn"]
P = TypeVar("P")


class ClockConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How simulated time runs.

    ``mode = "wall"``: real timing and true parallelism; ``speedup`` simulated seconds per wall
    second. ``mode = "virtual"``: a scheduler in the engine lets one actor run at a time and
    moves simulated time only when nobody can proceed, so the same config and seed give the
    same run; ``ts`` is then simulated time on the wall mode's scale (``speedup`` still says
    how many simulated minutes a second of ``ts`` stands for) and a run takes as long as its
    scheduling points cost.
    """

    mode: Literal["wall", "virtual"] = "wall"
    speedup: Annotated[float, msgspec.Meta(gt=0)] = 600.0


class EngineConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How the engine runs the actors (defaults chosen by measurement, see docs/benchmarks.md)."""

    start_method: StartMethod = "fork"
    # Wall seconds before a run is stopped and reported as timed out.
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # Worker-side batching: the longest an event may wait in an actor before it is sent.
    flush_ms: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 5.0
    # How actors reach the coordinator: "tcp" (127.0.0.1), "unix" (an abstract Unix socket), or
    # "auto": unix in a virtual run, where every step is a round trip through it and the Unix
    # socket's shorter kernel path shows (7-12 % of a car park's run), tcp in a wall run, where
    # batching hides the difference (docs/benchmarks.md, section 2).
    transport: Literal["auto", "tcp", "unix"] = "auto"
    live: bool = True
    # Wall seconds of silence, with every live actor blocked in an operation that has no
    # timeout, after which the run is declared deadlocked.
    stall_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    # Stop the other actors when one crashes: they may wait forever for what it never does.
    stop_on_crash: bool = True
    # A virtual run's scheduling policy: which ready actor goes next (seeded from the run's
    # seed): "random", "pct" (probabilistic concurrency testing with pct_depth priority
    # changes) or "fifo" (the one ready longest).
    schedule: Literal["random", "pct", "fifo"] = "random"
    pct_depth: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # Seeds the scheduling policy on its own (default: the run's seed), so that explore can
    # try other schedules with the same random draws of the actors.
    schedule_seed: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # Write every step's ready tasks into schedule.json too (what explore needs to branch).
    record_choices: bool = False
    # A virtual run that takes more steps than this is stopped (as timed out).
    max_steps: Annotated[int, msgspec.Meta(ge=1)] = 10_000_000
    # Run a virtual run's engine and actors on one CPU: only one task runs at a time, and
    # waking a process on another CPU costs more than the step itself (sim.virtual.cpu).
    pin_cpu: bool = True


class _Top(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # The top level as written; ``params`` stays raw until the scenario is known.
    scenario: str
    title: str = ""
    seed: Annotated[int, msgspec.Meta(ge=0)] | None = None
    expect: list[str] = msgspec.field(default_factory=list)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    clock: dict[str, Any] = msgspec.field(default_factory=dict)
    engine: dict[str, Any] = msgspec.field(default_factory=dict)
    # Read by `sim sweep` (sim._sweep.grid.SweepTable); a single run ignores it.
    sweep: dict[str, Any] = msgspec.field(default_factory=dict)
    faults: list[Any] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class RunConfig(Generic[P]):
    """A fully validated run: which scenario, its typed parameters (``params``, of the
    scenario's ``Params`` type), clock and engine settings."""

    source: Path
    scenario: str
    title: str
    seed: int | None
    params: P
    clock: ClockConfig
    engine: EngineConfig
    # Phenomena this config is meant to demonstrate (a deadlock, lost updates).
    expect: tuple[str, ...] = ()
    sweep: dict[str, Any] = field(default_factory=dict)
    # The -s overrides applied on top of the file, for titles that tell the truth.
    overrides: tuple[str, ...] = ()
    # Declared faults (sim.faults): what the engine does to the actors, and when.
    faults: tuple[Fault, ...] = ()
    # The TOML text exactly as read (for a config given as data: that data written as TOML).
    text: str = ""
    # Where the scenario comes from (None when its code was not imported: see ``skipped``).
    origin: Source | None = None
    # Why the scenario's own code was not imported: a log named a file or module that the
    # user did not (sim._lookup); ``params`` are then the recorded values, unvalidated.
    skipped: str = ""

    @property
    def heading(self) -> str:
        """The title, its ``{param}`` placeholders filled, and the overrides that changed the
        config it describes: "130 spaces, {cars} cars" after ``-s params.cars=40`` says 40 cars,
        and a title with the number written out at least says what changed."""
        return with_overrides(self.title or self.scenario, self.overrides, self.params)

    @property
    def transport(self) -> Literal["tcp", "unix"]:
        """The socket the actors reach the coordinator by, ``engine.transport``'s "auto"
        decided by the clock's mode."""
        if self.engine.transport == "auto":
            return "unix" if self.clock.mode == "virtual" else "tcp"
        return self.engine.transport

    def resolved(self, seed: int) -> dict[str, Any]:
        """The config as run with ``seed``: what run.json and the log's run_start record."""
        return self.to_dict() | {"seed": seed}

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (as run.json stores it)."""
        return {
            "scenario": self.scenario,
            "title": self.title,
            "seed": self.seed,
            "expect": list(self.expect),
            "params": msgspec.to_builtins(self.params),
            "clock": msgspec.to_builtins(self.clock),
            "engine": msgspec.to_builtins(self.engine),
        } | ({"faults": msgspec.to_builtins(list(self.faults))} if self.faults else {})


def with_overrides(title: str, overrides: Sequence[str], params: object = None) -> str:
    """``title (with a=1, b=2)``: a title, each ``{name}`` in it filled with that parameter of
    ``params`` (``{drive.mean}`` for a nested one; a name it lacks stays as written), and the
    ``-s`` overrides that changed its config."""
    if params is not None and "{" in title:
        title = _PLACEHOLDER.sub(lambda m: _param_text(params, m.group(1), m.group(0)), title)
    return f"{title} (with {', '.join(overrides)})" if overrides else title


# A parameter named in a title: "{cars}", "{drive.mean}".
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}")
_ABSENT = object()


def _param_text(params: object, path: str, written: str) -> str:
    value: object = params
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _ABSENT)
        else:
            value = getattr(value, part, _ABSENT)
        if value is _ABSENT:
            return written
    return f"{value:g}" if isinstance(value, float) else str(value)


def _repo_configs() -> Path:
    return Path(__file__).resolve().parent.parent / "configs"


def bundled_configs() -> Path | None:
    """The folder of bundled configs: the checkout's ``configs/`` or the installed copy."""
    for candidate in (_repo_configs(), Path(__file__).resolve().parent / "_bundled_configs"):
        if candidate.is_dir():
            return candidate
    return None


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or else a bundled config of that name (``carpark`` or ``carpark.toml``)."""
    path = Path(name)
    if path.is_file():
        return path
    folder = bundled_configs()
    if folder is not None and path.parent == Path("."):
        for candidate in (folder / path.name, folder / f"{path.name}.toml"):
            if candidate.is_file():
                return candidate
    if path.is_dir():
        raise ConfigError("is a directory, not a config file", source=str(name))
    if path.parent != Path("."):
        raise ConfigError("no such file", source=str(name))  # a path was meant as a path
    # A bare name: the bundled config it is closest to, compared without ".toml" (which
    # every name shares, and which made "missing.toml" look like "start_signal.toml"), and
    # suggested in the form it was given in.
    suffix = ".toml" if path.suffix == ".toml" else ""
    known = sorted(p.stem for p in folder.glob("*.toml")) if folder else []
    close = difflib.get_close_matches(path.stem if suffix else path.name, known, n=1)
    hint = (f" (did you mean {close[0] + suffix!r}?)" if close
            else "; python -m sim list shows the bundled configs")  # fmt: skip
    raise ConfigError(f"no such file, nor a bundled config{hint}", source=str(name))


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_value(text: str) -> Any:
    """A command-line value read as TOML (numbers, booleans, lists), else as a string."""
    # A value is read as a TOML value, so numbers, booleans and lists get their types; anything
    # that is not valid TOML (a bare word like `uniform`) is taken as a string.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def override_key(item: str) -> str:
    """The dotted key a ``KEY=VALUE`` override sets (``params.drive`` of
    ``params.drive={mean=3}``), as the config reads it."""
    return item.partition("=")[0].strip()


def _apply_override(data: dict[str, Any], item: str, via: str = "-s") -> str:
    source = via.rstrip("=")  # "set=" names the parameter set
    _, sep, raw = item.partition("=")
    key = override_key(item)
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"expected KEY=VALUE with a dotted key, got {item!r}", source=source)
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            # An array of tables (``[[faults]]``): ``faults.0.at`` is the first one's ``at``.
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"no such entry (there are {len(node)})", source=source,
                                  key=where)  # fmt: skip
            if last:
                node[int(part)] = parse_value(raw.strip())
                break
            node = node[int(part)]
            continue
        if last:
            node[part] = parse_value(raw.strip())
            break
        child = node.setdefault(part, {})
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"{where} is a value, not a table", source=source, key=key)
        node = child
    return key


def _struct_of(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct type inside ``tp`` (through Annotated and Optional), if there is one."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _struct_of(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        for arm in typing.get_args(tp):
            found = _struct_of(arm)
            if found is not None:
                return found
        return None
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    return None


def _check_keys(data: Any, struct: type[msgspec.Struct], prefix: str) -> tuple[str, str] | None:
    """The first unknown key in ``data`` for ``struct``, as (dotted key, did-you-mean hint)."""
    if not isinstance(data, dict):
        return None
    hints = typing.get_type_hints(struct, include_extras=True)
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            return dotted, _did_you_mean(str(key), list(fields))
        inner = _struct_of(hints.get(fields[key].name))
        if inner is not None:
            found = _check_keys(value, inner, f"{dotted}.")
            if found:
                return found
    return None


_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def convert_section(data: dict[str, Any], tp: type[Any], section: str) -> Any:
    """Validate one section of a config (a table such as ``[sweep]``) into ``tp``; errors name
    ``section.key`` and say what is wrong as the rest of the config's errors do."""
    unknown = _check_keys(data, tp, f"{section}." if section else "")
    if unknown:
        raise ConfigError(f"unknown key{unknown[1]}", key=unknown[0])
    try:
        return msgspec.convert(data, tp, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH.search(message)
        path = match.group("path") if match else ""
        if match:
            message = message[: match.start()]
        key = (section + path) if section else path.lstrip(".")
        value = _lookup(data, path)
        # A whole table's validation error (from a __post_init__) needs no "got {table}".
        shown = "got" in message or "value" in message or isinstance(value, dict)
        got = f", got {value!r}" if value is not _MISSING and not shown else ""
        message = message.replace("`", "").replace("Expected", "expected")
        message = message.replace("Object missing required field", "missing required key")
        if message.startswith("Invalid enum"):
            # A choice among names: the user needs the names, not only the refusal.
            choices = _choices(tp, path)
            message = message.replace("Invalid enum", "invalid")
            if choices:
                message += f"; one of: {', '.join(choices)}"
        raise ConfigError(f"{message}{got}", key=key.lstrip(".") or None) from None


def _unwrap(tp: Any) -> Any:
    """``tp`` without Annotated and without None in an Optional."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union or origin is types.UnionType:
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(arms) != 1:
                return tp
            tp = arms[0]
        else:
            return tp


def _choices(tp: Any, path: str) -> list[str]:
    """The names a Literal at ``path`` (``.drive.dist``) inside ``tp`` allows."""
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        tp = _unwrap(tp)
        if index:
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            continue
        struct = _struct_of(tp)
        if struct is None:
            return []
        fields = {f.encode_name: f.name for f in msgspec.structs.fields(struct)}
        if name not in fields:
            return []
        tp = typing.get_type_hints(struct, include_extras=True).get(fields[name], Any)
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return [str(a) for a in typing.get_args(tp)]
    return []


_MISSING = object()


def _fault(raw: Any, index: int) -> Fault:
    key = f"faults[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table ([[faults]]), got {raw!r}", key=key)
    fault: Fault = convert_section(raw, Fault, key)
    return fault


def _lookup(data: Any, path: str) -> Any:
    node = data
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        name, index = part
        try:
            node = node[int(index)] if index else node[name]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def load_config(
    name: str | Path,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    *,
    via: str = "overrides",
) -> RunConfig[Any]:
    """Read, override and validate a config. Raises ConfigError naming the file and key.

    ``via`` is how an error names where ``overrides`` came from: the parameter, for a Python
    caller; the command line passes ``-s``."""
    path = resolve_config_path(name)
    source = path.name if Path(name).parent == Path(".") else str(name)
    try:
        # Bytes decoded as they are (no newline translation): run.json keeps the text exact.
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib reports "(at line L, column C)", which is what a user needs to find it.
        raise ConfigError(f"TOML syntax error: {exc}", source=source) from None

    return config_from_data(
        data, source=source, path=path, overrides=overrides, seed=seed, text=text, via=via
    )


#: The ``source`` of a config given as data (a dict) rather than as a file.
DATA_SOURCE = "<dict>"


def config_from_mapping(
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    seed: int | None = None,
    *,
    via: str = "set=",
) -> RunConfig[Any]:
    """Validate a config given as data; its text is that data written as TOML, and a
    scenario file in it is relative to the current directory."""
    from ._toml import dumps

    if not isinstance(data, Mapping):
        raise ConfigError(f"a config is a path, a bundled name or a mapping, not {data!r}")
    try:
        text = dumps(data)
    except TypeError as exc:
        raise ConfigError(str(exc), source=DATA_SOURCE) from None
    return config_from_data(
        tomllib.loads(text), source=DATA_SOURCE, path=Path.cwd() / DATA_SOURCE,
        overrides=overrides, seed=seed, text=text, via=via,
    )  # fmt: skip


def _as_named(key: str) -> str:
    """A dotted key as errors name it: ``faults.0.at`` is ``faults[0].at``."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)


def _blamed(exc: ConfigError, source: str, overridden: set[str], via: str) -> ConfigError:
    """``exc`` from ``source``, saying ``(set with -s)`` if an override set what it is about:
    its key, a table holding it (``-s params.drive={...}``, ``-s 'faults=[...]'``), or the
    part of it the error names (``-s faults.0.for=3``: "faults[0]: for is for pause only";
    ``-s nosuch.key=1``: "nosuch: unknown key", a table the override made up). Another
    override inside that table is not blamed for what the file says there."""
    key = exc.key or ""
    if not key:
        return ConfigError(exc.reason, source=source, key=exc.key)
    by_override = set_by(key, overridden) or any(
        _names_part(exc.reason, o, key) for o in overridden
    )
    how = f" (set with {via})" if by_override else ""
    return ConfigError(exc.reason + how, source=source, key=exc.key)


def set_by(key: str, overridden: Iterable[str]) -> bool:
    """One of the ``overridden`` keys (as errors name them) set ``key``: it is that key, or a
    table that holds it (``params.drive`` holds ``params.drive.mean``, ``faults`` holds
    ``faults[0].at``)."""
    return any(o == key or key.startswith((f"{o}.", f"{o}[")) for o in overridden)


def _names_part(reason: str, override: str, key: str) -> bool:
    """``override`` sets a part of the table ``key`` that the error ``reason`` is about."""
    if not override.startswith((f"{key}.", f"{key}[")):
        return False
    if reason.startswith("unknown key"):
        return True
    part = re.split(r"[.\[]", override[len(key) :].lstrip("."), maxsplit=1)[0]
    return bool(part) and re.search(rf"\b{re.escape(part)}\b", reason) is not None


def named(config: RunConfig[Any]) -> str:
    """How errors name ``config``'s file: a bundled config (or a mapping) by its name, any
    other by its path as the user gave it."""
    name = config.source.name
    if name == DATA_SOURCE or config.source.parent == bundled_configs():
        return name
    return str(config.source)


def refused(config: RunConfig[Any], exc: ConfigError, via: str = "-s") -> ConfigError:
    """``exc``, found once the run is planned (a fault's target), as the loader would have
    said it: naming the config's file, and the override that set the key."""
    return _blamed(exc, named(config), overridden_keys(config.overrides), via)


def overridden_keys(overrides: Iterable[str]) -> set[str]:
    """The keys ``overrides`` (``KEY=VALUE`` texts) set, as errors name them."""
    return {_as_named(override_key(item)) for item in overrides}


def reload(
    config: RunConfig[Any],
    overrides: Sequence[str] = (),
    *,
    seed: int | None = None,
    via: str = "-s",
) -> RunConfig[Any]:
    """``config`` validated again from its text, with ``overrides`` on top of its own."""
    if not config.text:
        raise ConfigError("this config has no text to read again (make it with load_config)",
                          source=str(config.source))  # fmt: skip
    return config_from_data(
        tomllib.loads(config.text), source=named(config), path=config.source,
        overrides=[*config.overrides, *overrides], seed=config.seed if seed is None else seed,
        text=config.text, via=via,
    )  # fmt: skip


def config_from_data(
    data: dict[str, Any],
    *,
    source: str,
    path: Path,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    text: str = "",
    base: Path | None = None,
    user: bool = True,
    via: str = "-s",
) -> RunConfig[Any]:
    """Validate already-parsed config data (a TOML file's, or a run's resolved config).

    A scenario file is found relative to ``base`` (default: the config file's folder; the
    current directory for a scenario set with an override). ``user=False`` is for data a log
    recorded: its scenario is imported only if it is bundled or installed (see sim._lookup);
    otherwise the config comes back with ``skipped`` saying why and its params unvalidated.
    """
    overridden = {_as_named(_apply_override(data, item, via)) for item in overrides}

    skipped = ""
    origin: Source | None = None
    try:
        top = convert_section(data, _Top, "")
        where = Path.cwd() if "scenario" in overridden else (base or path.parent)
        try:
            origin = find(top.scenario, base=where, user=user)
            spec = origin.load()
        except Refused as exc:
            skipped = str(exc)
        except ScenarioError as exc:
            raise ConfigError(str(exc), key="scenario") from None
        clock = convert_section(top.clock, ClockConfig, "clock")
        engine = convert_section(top.engine, EngineConfig, "engine")
        faults = tuple(_fault(raw, i) for i, raw in enumerate(top.faults))
        if skipped:
            params: Any = top.params
        else:
            from . import kinds

            params = convert_section(top.params, spec.params, "params")
            known = {"deadlock", *kinds.phenomena(), *spec.phenomena}
            for phenomenon in top.expect:
                if phenomenon not in known:
                    hint = _did_you_mean(phenomenon, sorted(known))
                    choices = ", ".join(sorted(known))
                    raise ConfigError(f"unknown phenomenon {phenomenon!r}{hint}; one of: "
                                      f"{choices}", key="expect")  # fmt: skip
            if clock.mode == "virtual" and spec.uncontrolled is not None:
                why = spec.uncontrolled(params)
                if why is not None:
                    raise ConfigError(f"scenario {top.scenario!r} cannot run under the virtual "
                                      f"clock: {why}", key="clock.mode")  # fmt: skip
    except ConfigError as exc:
        raise _blamed(exc, source, overridden, via) from None

    return RunConfig(
        source=path,
        scenario=top.scenario,
        title=top.title,
        seed=seed if seed is not None else top.seed,
        params=params,
        clock=clock,
        engine=engine,
        expect=tuple(top.expect),
        sweep=top.sweep,
        overrides=tuple(overrides),
        faults=faults,
        text=text,
        origin=origin,
        skipped=skipped,
    )
