"""Options shared by several commands, defined once (Polygraphy's argument groups).

:func:`option_group` turns the fields of a settings model (e.g. ``TimingSettings``) into
command-line options — names, types, bounds, help and defaults all read from the model —
and hands the command one validated settings object. Choices (backends, targets) are read
from the registries.
"""
from __future__ import annotations

import functools
import inspect
import typing
from enum import Enum
from typing import Annotated, Any, Callable, Optional, TypeVar

import annotated_types
import typer
from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])

ThreadsOpt = Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch and ONNX Runtime (default: all cores)")]


def choices(name: str, values: list[str]) -> type[Enum]:
    """An Enum typer shows as ``[a|b|c]`` and checks, built from a registry's names."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


def _option(field_name: str, field: Any) -> Any:
    bounds = {}
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            bounds["min"] = meta.ge
        elif isinstance(meta, annotated_types.Le):
            bounds["max"] = meta.le
    return typer.Option(f"--{field_name.replace('_', '-')}", help=field.description, **bounds)


def option_group(model: type[BaseModel], param: str, defaults: BaseModel | None = None) -> Callable[[F], F]:
    """Add one option per field of ``model`` to a command; the command receives ``param=model(...)``."""
    base = defaults or model()

    def deco(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)
        kept = [p.replace(annotation=hints.get(p.name, p.annotation))
                for p in inspect.signature(fn).parameters.values() if p.name != param]
        added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=getattr(base, name),
                                   annotation=Annotated[field.annotation, _option(name, field)])
                 for name, field in model.model_fields.items()]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[param] = model(**{name: kwargs.pop(name) for name in model.model_fields})
            return fn(*args, **kwargs)

        parameters = kept + added
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper  # type: ignore[return-value]
    return deco
