"""Click options generated from the settings models (config/settings.py), so a flag's type, default, help and
environment variable are never written a second time."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import annotated_types
import click
from pydantic import BaseModel

from sandbox_operator.config.settings import OptionSpec, options_of

F = TypeVar("F", bound=Callable[..., Any])


class CommaList(click.ParamType[tuple[str, ...], Any]):
    """A set or list option: `a,b,c` (spaces and empty items dropped)."""

    name = "list"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple | list | frozenset | set):
            return tuple(value)
        return tuple(item.strip() for item in str(value).split(",") if item.strip())

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "A,B,..."


def _base(annotation: Any) -> Any:
    """The type under `X | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (base,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return base
    return annotation


def _bounds(spec: OptionSpec) -> dict[str, Any]:
    """FloatRange/IntRange arguments from the field's constraints (ge, gt, le, lt)."""
    bounds: dict[str, Any] = {}
    for mark in spec.field.metadata:
        if isinstance(mark, annotated_types.Ge):
            bounds["min"] = mark.ge
        elif isinstance(mark, annotated_types.Gt):
            bounds.update(min=mark.gt, min_open=True)
        elif isinstance(mark, annotated_types.Le):
            bounds["max"] = mark.le
        elif isinstance(mark, annotated_types.Lt):
            bounds.update(max=mark.lt, max_open=True)
    return bounds


def _click_type(spec: OptionSpec) -> click.ParamType[Any, Any]:
    base = _base(spec.field.annotation)
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        return click.Choice([str(choice) for choice in typing.get_args(base)])
    if origin in (frozenset, set, tuple, list):
        return CommaList()
    if base is int:
        return click.IntRange(**_bounds(spec)) if _bounds(spec) else click.INT
    if base is float:
        return click.FloatRange(**_bounds(spec)) if _bounds(spec) else click.FLOAT
    if base is str:
        return click.STRING
    raise TypeError(f"option {spec.name}: no command-line form for {spec.field.annotation}")


def click_option(spec: OptionSpec, flags: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """The click option for one field: flags, type, default, help and environment variable."""
    default = spec.field.default
    common: dict[str, Any] = {
        "envvar": spec.env,
        "show_envvar": spec.env is not None,
        "help": spec.field.description,
    }
    names = (*(flags or spec.flags), spec.name)
    if spec.field.annotation is bool:
        return click.option(*names, is_flag=True, default=default, **common)
    if isinstance(default, frozenset | set | tuple | list):
        default = ",".join(sorted(default))
    # An empty default means "unset" or "found at start", which the help says in words.
    shown = default not in ("", None)
    return click.option(*names, type=_click_type(spec), default=default, show_default=shown, **common)


def model_options(
    model: type[BaseModel],
    *,
    only: Collection[str] | None = None,
    flags: Mapping[str, tuple[str, ...]] | None = None,
) -> Callable[[F], F]:
    """Decorate a command with the options of `model` (or those named in `only`), in definition order;
    `flags` renames some flags for that command (the environment variable stays)."""
    specs = [spec for spec in options_of(model) if only is None or spec.name in only]
    renamed = flags or {}

    def decorate(fn: F) -> F:
        for spec in reversed(specs):
            fn = click_option(spec, renamed.get(spec.name))(fn)
        return fn

    return decorate


def option_values(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Take the values of `model`'s options out of `values` (a command's parsed parameters)."""
    return {spec.name: values.pop(spec.name) for spec in options_of(model) if spec.name in values}
