"""Config loading: TOML, overrides, validation errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import ConfigError, load_config
from sim.config import resolve_config_path


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_config_is_found_by_bare_name() -> None:
    assert resolve_config_path("carpark.toml").name == "carpark.toml"
    assert resolve_config_path("carpark") == resolve_config_path("carpark.toml")


def test_bundled_carpark_validates_into_typed_params() -> None:
    config = load_config("carpark.toml")
    assert config.scenario == "carpark"
    assert config.params.capacity == 130
    assert config.params.drive.dist == "exponential"
    assert config.engine.start_method in ("fork", "forkserver", "spawn")


def test_overrides_convert_types_and_reach_nested_tables() -> None:
    config = load_config(
        "carpark.toml",
        [
            "params.cars=400",
            "clock.speedup=120",
            "params.drive.dist=uniform",
            "params.patience=2.5",
        ],
        seed=7,
    )
    assert config.params.cars == 400
    assert config.clock.speedup == 120.0
    assert config.params.drive.dist == "uniform"
    assert config.params.patience == 2.5
    assert config.seed == 7


def test_integer_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    path = write(tmp_path, 'scenario = "carpark"\n[params.drive]\nmean = 3\n')
    assert load_config(path).params.drive.mean == 3.0


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            'scenario = "carpark"\n[params]\ncapcity = 1\n',
            "params.capcity",
            "did you mean 'capacity'",
        ),
        ('scenario = "carpark"\n[params]\ncapacity = "lots"\n', "params.capacity", "got str"),
        ('scenario = "carpark"\n[params]\ncapacity = 0\n', "params.capacity", "got 0"),
        ('scenario = "carpark"\n[params]\ncars = -1\n', "params.cars", "got -1"),
        ('scenario = "carpark"\n[params.drive]\ndist = "weird"\n', "params.drive.dist", "weird"),
        ('scenario = "carpark"\n[clock]\nspeedup = 0\n', "clock.speedup", "> 0"),
        (
            'scenario = "carpark"\n[engine]\nstart_methd = "fork"\n',
            "engine.start_methd",
            "did you mean",
        ),
        ('scenario = "carpak"\n', "scenario", "did you mean 'carpark'"),
        ('scenerio = "carpark"\n', "scenerio", "did you mean 'scenario'"),
    ],
)
def test_invalid_value_names_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'scenario = "carpark"\n[params\ncapacity = 1\n')
    with pytest.raises(ConfigError, match=r"line 2, column \d+"):
        load_config(path)


def test_bad_override_says_where_it_came_from() -> None:
    # A Python caller gave the parameter overrides; the command line passes via="-s".
    with pytest.raises(ConfigError, match=r"carz: unknown key .*'cars'.*set with overrides"):
        load_config("carpark.toml", ["params.carz=1"])
    with pytest.raises(ConfigError, match=r"params\.carz: unknown key .*'cars'.*set with -s\)$"):
        load_config("carpark.toml", ["params.carz=1"], via="-s")
    with pytest.raises(ConfigError, match=r"^overrides: .*KEY=VALUE"):
        load_config("carpark.toml", ["params.cars"])
    with pytest.raises(ConfigError, match=r"^-s: .*KEY=VALUE"):
        load_config("carpark.toml", ["params.cars"], via="-s")
    with pytest.raises(ConfigError, match=r"params\.cars: expected int >= 0, got -1"):
        load_config("carpark.toml", ["params.cars=-1"])
    # A key an override made up, and a table it set whose content is wrong.
    with pytest.raises(ConfigError, match=r"^carpark\.toml: nosuch: unknown key \(set with -s\)$"):
        load_config("carpark.toml", ["nosuch.key=1"], via="-s")
    with pytest.raises(ConfigError, match=r"params\.drive\.mean: .* \(set with -s\)$"):
        load_config("carpark.toml", ['params.drive={mean="x"}'], via="-s")


def test_an_error_in_the_file_is_not_blamed_on_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, 'scenario = "carpark"\n[params]\ncars = -1\n[params.drive]\nmean = 3\n')
    # Overrides beside the bad key, and of the table that holds it: none of them set it.
    for override in ("params.capacity=5", "params.drive.mean=4", "params.drive.dist=fixed"):
        with pytest.raises(ConfigError) as caught:
            load_config(path, [override], via="-s")
        assert str(caught.value).endswith("params.cars: expected int >= 0, got -1"), override


def test_missing_file_suggests_a_bundled_name() -> None:
    with pytest.raises(ConfigError, match=r"no such file.*carpark\.toml"):
        load_config("carpak.toml")
    with pytest.raises(ConfigError, match=r"\(did you mean 'carpark'\?\)$"):
        load_config("carpak")


@pytest.mark.parametrize(
    ("name", "says"),
    [
        # It said "no such file" with no pointer to the bundled configs.
        ("nosuchscenario", "nosuchscenario: no such file, nor a bundled config; python -m sim "
         "list shows the bundled configs"),
        # It suggested 'start_signal.toml': the shared ".toml" made them look alike.
        ("missing.toml", "missing.toml: no such file, nor a bundled config; python -m sim list "
         "shows the bundled configs"),
        # It said "no such file (did you mean 'pipe.toml'?)" of a folder.
        ("dir.toml", "dir.toml: is a directory, not a config file"),
    ],
)  # fmt: skip
def test_a_config_that_is_not_there_says_what_is(
    name: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dir.toml").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(name)
    assert str(caught.value) == says


def test_an_invalid_choice_lists_the_valid_ones() -> None:
    import typing

    from sim.config import ClockConfig
    from sim.durations import Duration

    dists = typing.get_args(typing.get_type_hints(Duration)["dist"])
    with pytest.raises(ConfigError) as caught:
        load_config("carpark.toml", ["params.drive.dist=normal"])
    message = str(caught.value)
    assert "params.drive.dist: invalid value 'normal'" in message
    assert f"one of: {', '.join(dists)}" in message
    assert message.endswith("(set with overrides)")
    modes = typing.get_args(typing.get_type_hints(ClockConfig)["mode"])
    with pytest.raises(ConfigError, match=f"clock.mode: .*one of: {', '.join(modes)}"):
        load_config("carpark.toml", ["clock.mode=virt"])


def test_the_auto_transport_is_unix_in_a_virtual_run_and_tcp_in_a_wall_run() -> None:
    assert load_config("carpark.toml").engine.transport == "auto"
    assert load_config("carpark.toml").transport == "tcp"
    assert load_config("carpark.toml", ["clock.mode=virtual"]).transport == "unix"
    # An explicit choice wins over the mode.
    assert (
        load_config("carpark.toml", ["clock.mode=virtual", "engine.transport=tcp"]).transport
        == "tcp"
    )
    assert load_config("carpark.toml", ["engine.transport=unix"]).transport == "unix"
    with pytest.raises(ConfigError, match="transport"):
        load_config("carpark.toml", ["engine.transport=pipe"])


def test_a_title_names_its_params_through_placeholders() -> None:
    from sim.config import with_overrides

    config = load_config("carpark.toml", ["params.cars=40"])
    assert (
        config.heading
        == "Franz-Josefs-Kai: 130 spaces, 40 cars, 4 visits each (with params.cars=40)"
    )
    params = {"cars": 40, "drive": {"mean": 2.5}}
    assert with_overrides("{cars} cars, {drive.mean} min", [], params) == "40 cars, 2.5 min"
    # A name the params lack, and braces that name nothing, stay as written.
    assert with_overrides("{bikes} bikes {} {1}", [], params) == "{bikes} bikes {} {1}"
    assert with_overrides("{cars} cars", ["params.cars=40"]) == "{cars} cars (with params.cars=40)"
