"""Settings files (recipes, export profiles): strict pydantic models read from YAML.

Unknown keys and wrong types are rejected with the key named
(``stages.0.distill.temprature: Extra inputs are not permitted``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgemm.errors import ConfigError


class Strict(BaseModel):
    """Base of every settings model: a misspelt key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def error_text(err: Exception) -> str:
    """An exception's message; pydantic's validation errors as one line per offending key."""
    return format_validation_error(err) if isinstance(err, ValidationError) else str(err)


def format_validation_error(err: ValidationError) -> str:
    """Name each offending key: 'validation.atol: Input should be a valid number'."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}{_given(e)}" for e in err.errors())


UNKNOWN_NAME = "unknown:"  # error type of a registry-chosen key: "unknown:stage" names the key that chose


def _given(error: dict[str, Any]) -> str:
    """For a registry-chosen entry (``stage:``, ``backend:``), the value that matched no registered name."""
    kind, value = str(error.get("type", "")), error.get("input")
    if not kind.startswith(UNKNOWN_NAME) or not isinstance(value, dict):
        return ""
    return f" (got {value.get(kind[len(UNKNOWN_NAME):])!r})"


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})",
                          "save the file as UTF-8 YAML") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err})", "fix the file's syntax") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path} ({err.strerror})", "check the path and its permissions") from None


def validate_as(model: type[M], data: Any, where: str, hint: str) -> M:
    """``model.model_validate(data)``, with a validation error turned into a ConfigError naming the keys."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{where}: {format_validation_error(err)}", hint) from None


def load_yaml_model(model: type[M], path: Path, hint: str) -> M:
    return validate_as(model, read_yaml(path), str(path), hint)
