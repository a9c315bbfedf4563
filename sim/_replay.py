"""Read a finished run back from its log: the same metrics and verdicts, nothing re-run.

``RUN`` is a run directory or its events file. The manifest (run.json) is optional: the
engine's ``run_start`` line carries the resolved config, the primitives and the actor names, so
a log alone is enough. Problems with the files (a torn last line, a line that is not JSON, a
missing manifest, a newer schema) are findings with line numbers, never tracebacks.

Replay never imports code that only the log names: a bundled or installed scenario is read
with its own analysis and checks, but a file or module the manifest names is left alone
(generic checks only, and a finding that says so) unless the user names it (``scenario``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from . import scenario as _scenario
from .analysis import Report, analyse
from .config import RunConfig, config_from_data, with_overrides
from .errors import ConfigError, ReplayError, ScenarioError
from .history import History
from .history.lines import Finding, Line, decode_line, ordered, read_lines
from .manifest import SCHEMA_VERSION

__all__ = ["LoadedRun", "lines_of", "load_run", "open_history", "replay"]

# run_start is the engine's first line; it arrives within the first lines of the file.
_HEADER_LINES = 10_000
# Lines of a file given by itself looked at for an event line (see _has_event_lines).
_SNIFF_LINES = 100


@dataclass
class LoadedRun:
    """What replay knows about a run before reading its events."""

    events_path: Path
    run_dir: Path | None
    manifest: dict[str, Any] | None
    config: RunConfig[Any] | None
    primitives: dict[str, dict[str, Any]]
    actors: list[str]
    findings: list[Finding] = field(default_factory=list)

    @property
    def overrides(self) -> list[str]:
        """The ``-s`` overrides the run was made with (run.json records them)."""
        recorded = (self.manifest or {}).get("overrides")
        return [str(o) for o in recorded] if isinstance(recorded, list) else []

    @property
    def title(self) -> str:
        """The config's title and the overrides that changed it: what every view is headed
        with (summary, plot, player, page)."""
        if self.config is None:
            return self.events_path.parent.name
        return with_overrides(
            self.config.title or self.config.scenario, self.overrides, self.config.params
        )


def _locate(run: Path) -> tuple[Path, Path | None]:
    if run.is_dir():
        events = run / "events.jsonl"
        if not events.is_file():
            raise ReplayError(f"{run}: no events.jsonl in this directory")
        return events, run
    if run.is_file():
        beside = run.parent if (run.parent / "run.json").is_file() else None
        if beside is None and not _has_event_lines(run):
            raise ReplayError(f"{run}: not a run's events file (none of its first "
                              f"{_SNIFF_LINES} lines is an event line): give a run "
                              "directory or its events.jsonl")  # fmt: skip
        return run, beside
    raise ReplayError(f"{run}: no such run directory or events file")


def _has_event_lines(path: Path) -> bool:
    """Does ``path`` start like an events file: an event line among its first lines, or
    nothing at all (a run that logged nothing)? A file given by itself, with no run.json
    beside it, is taken for a log only then."""
    try:
        with open(path, "rb") as fh:
            head = list(itertools.islice(fh, _SNIFF_LINES))
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not any(line.strip() for line in head):
        return True
    for line in head:
        try:
            decode_line(line)
        except (msgspec.DecodeError, RecursionError):
            continue
        return True
    return False


def _manifest(run_dir: Path | None, findings: list[Finding]) -> dict[str, Any] | None:
    if run_dir is None:
        findings.append(Finding(0, "no run.json: analysing from the log alone", "warning"))
        return None
    path = run_dir / "run.json"
    if not path.is_file():
        findings.append(Finding(0, "no run.json: analysing from the log alone", "warning"))
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        findings.append(Finding(0, f"run.json is unreadable ({exc}); using the log", "warning"))
        return None
    if not isinstance(manifest, dict):
        findings.append(Finding(0, "run.json is not an object; using the log", "warning"))
        return None
    schema = manifest.get("schema")
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        findings.append(Finding(
            0, f"run.json has schema {schema}, newer than this sim's {SCHEMA_VERSION}: "
            "reading only what this version understands", "warning"))  # fmt: skip
    if manifest.get("status") == "running":
        findings.append(
            Finding(0, "run.json still says running: the engine did not finish (killed?)", "error")
        )
    return manifest


def _header(events: Path) -> dict[str, Any] | None:
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    with open(events, "rb") as fh:
        for number, line in enumerate(fh):
            if number >= _HEADER_LINES:
                break
            if b'"run_start"' not in line:
                continue
            try:
                event = decode(line)
            except (msgspec.DecodeError, RecursionError):
                continue  # read_lines reports it
            if event.get("event") == "run_start" and event.get("actor") == "engine":
                return event
    return None


def _retry(scenario: str) -> str:
    return f"replay RUN --scenario {scenario}"


def load_run(
    run: Path, scenario: str | None = None, *, retry: Callable[[str], str] | None = None
) -> LoadedRun:
    """Find a run's files and what they say about it; raises ReplayError if there is no log.

    ``scenario`` is the scenario to read the log with, as the user names it (a bundled or
    installed name, a file relative to the current directory, a dotted module); without it,
    the log's own is used if it is bundled or installed (see sim._lookup). ``retry`` says how
    the caller would name it (default: the command line's way), in the finding that says a
    scenario was not imported."""
    events, run_dir = _locate(run)
    findings: list[Finding] = []
    manifest = _manifest(run_dir, findings)
    header = _header(events)
    source = manifest if manifest is not None and "config" in manifest else header
    config = None
    if source is None or not isinstance(source.get("config"), dict):
        findings.append(Finding(0, "no resolved config in run.json or the log: "
                                "only the generic checks apply", "warning"))  # fmt: skip
    else:
        data = dict(source["config"])
        if scenario is not None:
            data["scenario"] = scenario
        try:
            config = config_from_data(data, source="run config", path=events, base=Path.cwd(),
                                      user=scenario is not None)  # fmt: skip
        except ConfigError as exc:
            if scenario is not None:
                # The key is what tells a wrong scenario from a wrong config: say it.
                where = f"{exc.key}: " if exc.key else ""
                raise ReplayError(f"--scenario {scenario}: the run's config does not fit it: "
                                  f"{where}{exc.reason}") from None  # fmt: skip
            findings.append(Finding(0, f"the recorded config is not valid here: {exc}", "warning"))
        else:
            if config.skipped:
                how = (retry or _retry)(config.scenario)
                findings.append(Finding(0, f"{config.skipped}, so it was not imported: the "
                                        "scenario's own analysis and checks (and any primitive "
                                        "kind it registers) were skipped, only the generic "
                                        f"checks ran (to run them: {how})", "warning"))  # fmt: skip
    primitives = _pick(manifest, header, "primitives", {})
    if not isinstance(primitives, dict) or not all(
        isinstance(info, dict) and isinstance(info.get("kind"), str) for info in primitives.values()
    ):
        why = "the recorded primitives are not a table of primitives with their kinds"
        findings.append(Finding(0, f"{why}: each is taken from its lines", "warning"))
        primitives = {}
    # run.json maps each actor to its record; the log's run_start lists their names.
    recorded = manifest.get("actors") if manifest is not None else None
    if not isinstance(recorded, dict):
        recorded = _pick(None, header, "actor_names", [])
    if not isinstance(recorded, (dict, list)) or not all(isinstance(a, str) for a in recorded):
        findings.append(Finding(0, "the recorded actor names are not a list of names: the "
                                "actors are taken from the lines", "warning"))  # fmt: skip
        recorded = []
    actors = list(recorded)
    return LoadedRun(events, run_dir, manifest, config, dict(primitives), actors, findings)


def _pick(manifest: dict[str, Any] | None, header: dict[str, Any] | None, key: str,
          default: Any) -> Any:  # fmt: skip
    for source in (manifest, header):
        if source is not None and key in source:
            return source[key]
    return default


def replay(loaded: LoadedRun) -> tuple[Report, _scenario.Scenario[Any] | None]:
    """Recompute the run's metrics and verdicts from its log."""
    spec = None
    expected: tuple[str, ...] = ()
    if loaded.config is not None and loaded.config.origin is not None:
        try:
            spec = _scenario.of(loaded.config)
        except ScenarioError as exc:
            loaded.findings.append(Finding(0, f"{exc}: only the generic checks apply", "warning"))
        else:
            expected = loaded.config.expect
            if not loaded.primitives:
                # Not recorded (or not readable): the scenario says what its config declares.
                loaded.primitives = _declared(spec, loaded.config, loaded.findings)
    report = analyse(
        loaded.events_path,
        primitives=loaded.primitives,
        actors=loaded.actors,
        config=loaded.config,
        scenario=spec,
        expected=expected,
        findings=loaded.findings,
    )
    return report, spec


def _declared(
    spec: _scenario.Scenario[Any], config: RunConfig[Any], findings: list[Finding]
) -> dict[str, dict[str, Any]]:
    try:
        return {name: prim.describe() for name, prim in spec.primitives(config.params).items()}
    except Exception as exc:  # a scenario's own code, on a recorded config
        findings.append(Finding(0, f"{spec.name} cannot declare its primitives for the "
                                f"recorded config ({exc}); each is taken from its lines",
                                "warning"))  # fmt: skip
        return {}


def open_history(loaded: LoadedRun, *, track_states: bool = False) -> History:
    """A history of ``loaded``, not yet fed: its primitives, its actors, and the names its
    scenario gives to the states of its actors (when the scenario can be loaded)."""
    states = None
    if loaded.config is not None and loaded.config.origin is not None:
        try:
            states = _scenario.of(loaded.config).states
        except ScenarioError:
            states = None
    return History(
        loaded.primitives, actors=loaded.actors, states=states, track_states=track_states
    )


def lines_of(loaded: LoadedRun) -> Iterator[Line]:
    """The run's lines in time order, one at a time (for a display that steps through them)."""
    for chunk in ordered(read_lines(loaded.events_path)):
        yield from chunk
