"""Config: frozen dataclasses as the schema, YAML files as values, ``key=value`` overrides on top.

Unknown keys are errors (a typo must not silently fall back to a default), and the resolved config
is written next to the outputs so a run says exactly what it ran with.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from curation import storage

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit the config dataclasses."""


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        choices = _literal_choices(annotation)
        if choices is not None:
            accepted = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{where}: expected one of {accepted}; got {value!r}")
        raise ConfigError(f"{where}: {value!r} fits none of {annotation}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: expected a mapping for {annotation.__name__}, got {value!r}"
            )
        return from_dict(annotation, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))
            )
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if annotation is Path:
        if isinstance(value, str | Path):
            # A URI stays one (``Path("s3://b/k")`` would collapse it to ``s3:/b/k``).
            return storage.as_path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        accepted = ", ".join(repr(c) for c in args)
        raise ConfigError(f"{where}: expected one of {accepted}; got {value!r}")
    return value


def _literal_choices(annotation: Any) -> tuple | None:
    """The accepted values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            choices = _literal_choices(arg)
            if choices is not None:
                allows_none = type(None) in typing.get_args(annotation)
                return (*choices, None) if allows_none else choices
    return None


def check_choices(config: Any) -> None:
    """Raise ``ValueError`` naming the accepted values if a ``Literal`` field of the dataclass
    ``config`` holds anything else; call it from ``__post_init__`` so a config built in code is
    checked as early as one read from YAML."""
    for name, annotation in _field_types(type(config)).items():
        choices = _literal_choices(annotation)
        value = getattr(config, name)
        if choices is not None and value not in choices:
            accepted = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{name} must be one of {accepted}; got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    types_by_name = _field_types(cls)
    unknown = sorted(set(data) - set(types_by_name))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; "
            f"{cls.__name__} accepts {sorted(types_by_name)}"
        )
    kwargs = {
        name: _coerce(value, types_by_name[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a dataclass's own __post_init__ checks
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe mapping of a config dataclass (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path | storage.ObjectPath):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars) to a nested mapping."""
    result = _deep_copy(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {override!r}: the value is not valid YAML") from exc
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = _deep_copy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    cls: type[T],
    files: list[Path] | tuple[Path, ...] = (),
    overrides: list[str] | tuple = (),
    *,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults from ``cls``, then ``base`` (e.g. a named preset), then each YAML file as an
    overlay, then ``key=value`` overrides."""
    data = to_dict(cls())
    if base:
        data = _merge(data, base)
    for path in files:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"config file {path} is not a file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "cannot be parsed"
            raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = _merge(data, loaded)
    data = apply_overrides(data, list(overrides))
    return from_dict(cls, data)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
