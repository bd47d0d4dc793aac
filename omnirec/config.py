"""Configs: frozen dataclasses, filled from TOML or dicts; unknown keys raise with their name.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class C:
...     k: int = 10
>>> from_dict(C, {"k": 5})
C(k=5)
>>> from_dict(C, {"kk": 5})
Traceback (most recent call last):
...
omnirec.config.ConfigError: unknown key 'kk' in C; known keys: k
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type."""


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", base: T | None = None) -> T:
    """Build the dataclass `cls` from `data`; nested dataclasses are filled recursively.

    Keys not in `data` keep their values in `base` (default: the class defaults). A nested table starts
    from the field's own default, so a model's defaults for its training loop survive a table that
    sets only some of their keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    label = where or cls.__name__
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {label}; known keys: {', '.join(fields) or '(none)'}")
    values = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{label}.{key}", _field_default(fields[key], base))
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif hint in (int, float, str, bool) and not isinstance(value, hint):
            raise ConfigError(f"{label}.{key}: expected {hint.__name__}, got {value!r}")
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def _field_default(field: dataclasses.Field, base: object | None) -> Any:
    """The value a nested config field starts from: the base's, else the field's default, else None."""
    if base is not None:
        return getattr(base, field.name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, naming the file in any syntax error."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def to_dict(config: object) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def config_hash(config: object) -> str:
    """A short stable hash of a config's values (recorded in every saved artefact)."""
    return recorded_hash(type(config).__name__, to_dict(config))


def recorded_hash(type_name: str, values: dict[str, Any]) -> str:
    """`config_hash` of a config saved as `values` (its `to_dict`): checks a saved record against its own
    hash, also where the class has gained options since (they take their defaults at load).

    >>> @dataclasses.dataclass(frozen=True)
    ... class C:
    ...     k: int = 10
    >>> recorded_hash("C", to_dict(C())) == config_hash(C())
    True
    """
    blob = json.dumps({"type": type_name, **values}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
