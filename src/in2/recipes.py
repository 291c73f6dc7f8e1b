"""Recipes: a YAML file read into a tree of config dataclasses, command-line overrides on top (`--section.field
value` or `section.field=value`, both arrive here as `section.field=value`),
then the config's own checks. Shared by every stage; each stage owns its dataclasses (SynthConfig,
EvalConfig). Errors name the file and the field, with a close match for a misspelt key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from in2.errors import ConfigError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A recipe field with its help in the field's metadata, as TRL's configs keep theirs (`in2 <command> --help`
    shows it): `option(4096, "Tokens per context.")`, `option(factory=list, doc="...")`."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": doc})
    return dataclasses.field(default=default, metadata={"help": doc})


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`key (did you mean match?)` when a known name is close to `key`, else `key`."""
    match = difflib.get_close_matches(key, list(known), 1)
    return f"{key} (did you mean {match[0]}?)" if match else key


def _convert(value: Any, tp: Any, name: str) -> Any:
    """Check/convert one YAML value against a field's type annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], name)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{name}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types name the field."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown field {did_you_mean(prefix + unknown[0], [prefix + k for k in known])} "
            f"(known in {prefix or 'top level'}: {', '.join(sorted(known))})"
        )
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def recipe_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any, type]]:
    """(dotted path, field, type, the dataclass holding it) for every field of recipe `cls` that is not a
    section itself, sections in order; lists of sections (e.g. `models`) are one field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from recipe_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name], cls


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    """`["generator.model=gpt-4o", "seed=3"]` -> nested dict; values parsed as YAML scalars."""
    data: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r} must look like section.field=value (or --section.field value)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"{key.strip()}: {raw!r} is not a YAML value") from None
        _set_dotted(data, key.strip(), value)
    return data


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read a recipe YAML into `cls` (e.g. SynthConfig, EvalConfig), apply overrides, run its `validate()`.
    Errors name the file and field."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    try:  # a bad field or value on the command line is blamed there, not on the recipe file
        extra = parse_overrides(overrides or [])
        from_dict(cls, extra)
    except ConfigError as e:
        raise ConfigError(f"command line: {e}") from None
    data = _merge(data, extra)
    try:
        cfg = from_dict(cls, data)
        cfg.validate()
    except ConfigError as e:  # the values together break a rule: name where they came from
        where = " + ".join([str(path)] * (path is not None) + ["command line"] * bool(extra))
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def raise_first(checks: Iterable[tuple[bool, str, str]]) -> None:
    """Raise ConfigError for the first `(bad, field, why)` check that is bad."""
    for bad, name, why in checks:
        if bad:
            raise ConfigError(f"{name} {why}")
