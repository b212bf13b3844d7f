"""Typer options built from the option table (edgecast/options.py).

A command declares a parameter `settings: Settings` where the table's options go;
`with_options(*options)` replaces it with one typer option per record (flag, type,
default, help and --help panel from the table) and calls the command with `settings`,
a dict of the values as the Python API takes them: comma-separated lists split, text
such as `--split 0.7,0.15,0.15` parsed.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import typer

from edgecast.options import REQUIRED, Option, split_list

Settings = dict[str, Any]  # the annotation of the parameter the options replace
SETTINGS = "settings"
F = TypeVar("F", bound=Callable[..., Any])


def with_options(*options: Option) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        if SETTINGS not in signature.parameters:
            raise TypeError(f"{command.__name__} has no `{SETTINGS}` parameter for the table's options")
        params = []
        for param in signature.parameters.values():  # click calls with keywords: all keyword-only
            generated = [_parameter(option) for option in options] if param.name == SETTINGS else [param]
            params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in generated]

        def run(**given: Any) -> Any:
            settings = {option.name: _value(option, given.pop(option.name)) for option in options}
            return command(**given, **{SETTINGS: settings})

        for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(run, attribute, getattr(command, attribute))
        run.__signature__ = signature.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run  # type: ignore[return-value]

    return decorate


def _parameter(option: Option) -> inspect.Parameter:
    kind: Any = str if option.text else option.type
    if option.many:
        kind = list[kind]
    elif option.optional:
        kind = Optional[kind]
    info = typer.Option(*([option.flag] if option.flag else []), help=option.help, rich_help_panel=option.panel)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info],
                             default=_cli_default(option))


def _cli_default(option: Option) -> Any:
    if option.default is REQUIRED:
        return inspect.Parameter.empty
    if option.text:
        return option.text[1](option.default)
    return list(option.default) if option.many else option.default


def _value(option: Option, value: Any) -> Any:
    """The command line's value as the Python API takes it."""
    if option.text:
        try:
            return option.text[0](value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"'{option.cli_flag}'") from None
    if option.many:
        return split_list(value) if option.commas else list(value)
    return value


# The time range of an archive (`edgecast collect`), for `train` and `fleet train` alike.
SinceOption = Annotated[Optional[str], typer.Option(
    "--since", help="Of an archive (edgecast collect): readings from this time on (2016-01-01 or ISO 8601; UTC "
                    "without an offset).")]
UntilOption = Annotated[Optional[str], typer.Option(
    "--until", help="Of an archive: readings before this time (same forms as --since).")]
