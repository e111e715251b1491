"""Configs are frozen dataclasses with defaults in code; a recipe YAML only sets fields.

`load_config(MyConfig, "recipe.yaml", ["train.lr=2e-5"])` reads the YAML, applies `key=value`
overrides (values parsed as YAML, dotted keys for nesting), and builds the dataclass. An unknown
key is an error naming the key and the file; so is a value of the wrong type. `config_to_dict`
gives the resolved config back for saving into the run directory.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe that does not fit its config dataclass; the message names key and file."""


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """["a.b=1", "c=x", "s[1].lr=2"] -> {"a": {"b": 1}, "c": "x", "s": {"[1]": {"lr": 2}}} (values
    parsed as YAML scalars; `[i]` indexes a list the recipe sets, applied by `merge`)."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not key=value")
        pairs.append((key, yaml.safe_load(raw) if raw.strip() else ""))
    return override_tree(pairs)


def override_tree(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Dotted names with values ("train.stages[1].lr", 1e-3) as the tree `merge` applies."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        parts = [p for part in key.strip().split(".") for p in _INDEXED.findall(part)]
        if not parts:
            raise ConfigError(f"override '{key}': empty name")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


_INDEXED = re.compile(r"\[\d+\]|[^\[\]]+")  # "stages[1]" -> "stages", "[1]"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and value and all(k.startswith("[") for k in value):
            out[key] = _merge_items(out.get(key), value, key)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_items(base: Any, extra: dict[str, Any], key: str) -> list[Any]:
    if not isinstance(base, list):
        raise ConfigError(f"override '{key}[...]': '{key}' is not a list the recipe sets")
    items = list(base)
    for index, value in extra.items():
        i = int(index[1:-1])
        if i >= len(items):
            raise ConfigError(f"override '{key}{index}': '{key}' has {len(items)} items")
        items[i] = merge(items[i], value) if isinstance(value, dict) and isinstance(items[i], dict) else value
    return items


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build `cls` from a YAML recipe (optional) plus `key=value` overrides."""
    data: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path:
        data = _read_recipe(Path(path))
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a recipe must be a mapping of config fields")
    data = merge(data, parse_overrides(list(overrides)))
    return build(cls, data, where)


def _read_recipe(path: Path) -> Any:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such recipe file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the recipe ({e})") from e
    if not text.strip():  # a truncated file, not a wish for every default
        raise ConfigError(f"{path}: empty recipe")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from e


def build(cls: type[T], data: dict[str, Any], where: str, prefix: str = "") -> T:
    """Recursively build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or cls.__name__}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' (known keys: {known})")
    kwargs = {key: _coerce(hints[key], value, where, f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a config's own checks (__post_init__) name the field
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {e}") from e


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: '{key}' cannot be {value!r}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return {k: _coerce(args[1], v, where, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    return _scalar(tp, value, where, key)


def _scalar(tp: Any, value: Any, where: str, key: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads "2e-5" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: '{key}' must be {getattr(tp, '__name__', tp)}, got {value!r}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (tuples become lists), for YAML/JSON."""
    return _plain(dataclasses.asdict(cfg))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
