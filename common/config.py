"""Strict construction of frozen config dataclasses from YAML mappings.

Unknown keys, wrong types (a mapping's keys must be strings, a float finite) and invalid values
raise :class:`ConfigError` whose message starts with the dotted path of the offending field
(``zo.nu: must be >= 1; got nu=0``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _field_error(path: str, exc: Exception) -> ConfigError:
    return ConfigError(f"{path}: {exc}" if path else str(exc))


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    """Check ``value`` against a (simple) annotation, building nested dataclasses."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return from_mapping(annotation, value, path)
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {list(allowed)}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping; got {value!r}")
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(f"{path}: keys must be names (strings); got {key!r}")
        return dict(value)
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list; got {value!r}")
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number; got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a float's range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number; got {value!r}")
        return number
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer; got {value!r}")
        return value
    if annotation in (str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{path}: expected {annotation.__name__}; got {value!r}")
    return value


def from_mapping(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and naming bad fields."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping; got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {
        key: _coerce(value, hints[key], f"{path}.{key}" if path else key)
        for key, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise _field_error(path, exc) from exc


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error becomes a ConfigError naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def name_options(name: str, what: str, known: Collection[str]) -> tuple[str, dict[str, str]]:
    """Split a registry name ``base?key=value&key=value`` into its base and its options.

    ValueError naming ``what`` (``model``, ``dataset``) and the bad part for an option without
    ``=``, a repeated one, or one not in ``known``.
    """
    base, _, query = name.partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key in options:
            raise ValueError(f"{what} {name!r}: bad or repeated option {item!r} (want key=value)")
        options[key] = value
    unknown = set(options) - set(known)
    if unknown:
        listed = ", ".join(sorted(known))
        raise ValueError(f"{what} {name!r}: unknown option(s) {sorted(unknown)}; known: {listed}")
    return base, options


def int_options(name: str, what: str, options: Mapping[str, str]) -> dict[str, int]:
    """``options`` (from :func:`name_options`) as integers >= 0; ValueError naming ``what``,
    ``name`` and the option otherwise."""
    for key, raw in options.items():
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError(f"{what} {name!r}: {key} must be an integer >= 0; got {raw!r}")
    return {key: int(raw) for key, raw in options.items()}


@typing.overload
def for_identity(template: str, client_id: str) -> str: ...
@typing.overload
def for_identity(template: None, client_id: str) -> None: ...
@typing.overload
def for_identity(template: str | None, client_id: str) -> str | None: ...
def for_identity(template: str | None, client_id: str) -> str | None:
    """``template`` with every ``{id}`` replaced by ``client_id`` (a per-identity file name:
    certificate, token, data); None stays None."""
    return None if template is None else template.replace("{id}", client_id)
