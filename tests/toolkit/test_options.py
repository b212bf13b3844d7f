"""One table of options (edgecast/options.py): `edgecast train`, `edgecast fleet train`,
`edgecast export`, `edgecast.train`, `edgecast.fleet.train` and `edgecast.export` are all
built from it; library errors name settings, the command line says them as flags."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import typer
from conftest import REPO_ROOT, run_cli

# Options of `edgecast train` that are not training or reading options, each with its
# own meaning in the fleet: the bundle's name and folder, neighbours as files and a count
# (the fleet's --neighbours is 'all' or K over its own stations).
# A new station started from a global model (--from, --station) is one bundle: train's alone.
TRAIN_ONLY = {"--name", "--models-dir", "--neighbours", "--neighbour-count", "--help", "--from", "--station"}


def _commands() -> dict:
    """The click command objects typer builds (typer carries its own copy of click)."""
    from edgecast.cli import app

    group = typer.main.get_command(app)
    return {"train": group.commands["train"], "fleet train": group.commands["fleet"].commands["train"],
            "export": group.commands["export"]}


def _options(command) -> dict:
    return {param.opts[0]: param for param in command.params if param.param_type_name == "option"}


def test_fleet_train_takes_every_training_and_reading_option_of_train():
    commands = _commands()
    train, fleet = _options(commands["train"]), _options(commands["fleet train"])
    shared = set(train) - TRAIN_ONLY
    assert {"--target", "--look-back", "--dayfirst", "--valid-range", "--target-min", "--clip-target",
            "--neighbour-masking", "--neighbour-fallback", "--delimiter", "--decimal", "--time-unit",
            "--time-format", "--neighbour-features", "--split", "--max-gap"} <= shared
    assert not shared - set(fleet), f"missing from `edgecast fleet train`: {sorted(shared - set(fleet))}"
    for flag in sorted(shared - {"--target"}):  # train's is optional with --from only
        mine, theirs = train[flag], fleet[flag]
        assert (mine.secondary_opts, mine.type_descriptor.annotation, mine.is_flag, mine.default, mine.required, mine.multiple, mine.help) == (
            theirs.secondary_opts, theirs.type_descriptor.annotation, theirs.is_flag, theirs.default, theirs.required, theirs.multiple, theirs.help), flag


def test_export_options_of_fleet_train_are_those_of_export():
    from edgecast.exporter.settings import EXPORT_DEFAULTS

    commands = _commands()
    export, fleet = _options(commands["export"]), _options(commands["fleet train"])
    for flag in ("--opset", "--tflite", "--quantize", "--builtin-ops"):
        assert (export[flag].default, export[flag].help) == (fleet[flag].default, fleet[flag].help), flag
    assert fleet["--opset"].default == export["--opset"].default == EXPORT_DEFAULTS.opset


def test_python_api_keywords_and_command_defaults_come_from_the_table():
    import edgecast
    from edgecast import fleet, options
    from edgecast.options import REQUIRED

    train_cli, fleet_cli = _options(_commands()["train"]), _options(_commands()["fleet train"])
    for function, table in ((edgecast.train, options.TRAIN), (fleet.train, options.FLEET),
                            (edgecast.export, options.EXPORT_COMMAND)):
        params = inspect.signature(function).parameters
        for option in table:
            assert option.name in params, (function.__qualname__, option.name)
            assert params[option.name].default == option.default or option.default is REQUIRED, option.name
    assert fleet_cli["--target"].required and not train_cli["--target"].required
    for option in options.TRAIN_COMMAND:
        cli = train_cli[option.cli_flag]
        if option.default is REQUIRED:
            assert cli.required
        elif option.text:
            assert option.text[0](cli.default) == option.default
        else:
            assert (list(cli.default) if option.many else cli.default) == (
                list(option.default) if option.many else option.default), option.name


def test_an_unknown_keyword_is_a_type_error_as_for_any_function(tiny_csv, tmp_path):
    from edgecast import fleet

    with pytest.raises(TypeError, match="train.. got an unexpected keyword argument 'dayfirs'"):
        fleet.train([tiny_csv], "PM2.5", dayfirs=True, models_dir=tmp_path)


def test_library_errors_name_the_setting_and_the_command_line_says_the_flag(tiny_csv, tmp_path):
    import edgecast
    from edgecast.trainer.errors import DataError

    with pytest.raises(DataError) as caught:
        edgecast.train(tiny_csv, "PM2.5", max_gap=-1, models_dir=tmp_path)
    assert str(caught.value) == "max_gap must be 0 or more, got -1" and caught.value.settings == ("max_gap",)
    with pytest.raises(DataError) as caught:
        edgecast.train(tiny_csv, "PM2.5", valid_ranges=["PM2.5=5,1"], models_dir=tmp_path)
    assert str(caught.value).startswith("valid_ranges 'PM2.5=5,1'")
    said = run_cli("train", tiny_csv, "--target", "PM2.5", "--valid-range", "PM2.5=5,1", "--models-dir", tmp_path)
    assert said.returncode == 2
    assert said.stderr.strip() == "edgecast: error: --valid-range 'PM2.5=5,1': the minimum is above the maximum"
    said = run_cli("fleet", "train", tiny_csv, "--target", "PM2.5", "--workers", "0", "--models-dir", tmp_path)
    assert said.returncode == 2 and "edgecast: error: --workers must be at least 1, got 0" in said.stderr


def test_as_flags_translates_only_the_settings_named():
    from edgecast.options import as_flags

    message = "time_column 'x': the target column has a time_column_2; pass dayfirst or time_format"
    assert as_flags(message, ("time_column", "dayfirst", "time_format", "valid_ranges")) == (
        "--time-column 'x': the target column has a time_column_2; pass --dayfirst or --time-format")
    assert as_flags("valid_ranges 'a'", ("valid_ranges",)) == "--valid-range 'a'"  # the table's own flag
    assert as_flags("look_back must be at least 1", ()) == "look_back must be at least 1"


# Modules that are the command line: they may name flags.
CLI_MODULES = {"edgecast/cli.py", "edgecast/cli_options.py", "edgecast/fleet/cli.py", "edgecast/release/cli.py",
               "edgecast/release/console.py", "edgecast/release/retrain_cli.py"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _library_modules() -> list[Path]:
    found = [p for folder in ("edgecast", "trainer", "export") for p in (REPO_ROOT / folder).rglob("*.py")]
    return [p for p in found if str(p.relative_to(REPO_ROOT)) not in CLI_MODULES]


def _message_strings(function: ast.AST, raised: ast.expr) -> list[str]:
    """The literal text of an error message, with the strings assigned in the same function
    to the names it uses (a `hint` built beforehand); text in backticks (a command to run) left out."""
    names = {n.id for n in ast.walk(raised) if isinstance(n, ast.Name)}
    parts = [raised] + [node.value for node in ast.walk(function) if isinstance(node, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id in names for t in node.targets)]
    joined = [n for part in parts for n in ast.walk(part) if isinstance(n, ast.JoinedStr)]
    inside = {id(v) for n in joined for v in n.values}
    texts = ["".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values) for n in joined]
    texts += [n.value for part in parts for n in ast.walk(part)
              if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in inside]
    return [re.sub(r"`[^`]*`", "", text) for text in texts]


def test_no_library_error_message_names_a_flag():
    offenders = set()
    for path in _library_modules():
        tree = ast.parse(path.read_text())
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
        for scope in scopes:
            for node in ast.walk(scope):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    for text in _message_strings(scope, node.exc):
                        if FLAG.search(text):
                            offenders.add(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {text!r}")
    assert len(_library_modules()) > 50
    assert not offenders, "\n".join(sorted(offenders))
