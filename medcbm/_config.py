"""Load YAML files into pydantic models with errors that name the file and the bad key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medcbm.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``key.path: message``."""
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_yaml_mapping(path: str | os.PathLike, *, what: str = "config") -> dict:
    """Parse ``path`` as a YAML mapping.

    Raises:
        ConfigError: missing file, invalid YAML, or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {p} must be a YAML mapping")
    return raw


def validate_model(model: type[M], raw: dict, what: str) -> M:
    """``model.model_validate(raw)`` with a :class:`ConfigError` naming each bad key (for options and YAML)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, what)) from None


def load_yaml_model(path: str | os.PathLike, model: type[M], *, what: str = "config") -> M:
    """Parse ``path`` as a YAML mapping and validate it as ``model``.

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, or a validation error naming the key.
    """
    return validate_model(model, load_yaml_mapping(path, what=what), f"{what} {path}")
