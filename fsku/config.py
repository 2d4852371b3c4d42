"""Typed, validated stage configs loaded from ``params.yaml``.

Each stage reads only its own section. A section is a tree of dataclasses; loading checks every
key, type and range, and an error names the offending key by its full dotted path
(``chunk.size``), so a typo in ``params.yaml`` fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params.yaml problem, always naming the key."""


def field(default: Any = dataclasses.MISSING, *, ge: float | None = None, le: float | None = None,
          gt: float | None = None, lt: float | None = None, doc: str = "", default_factory: Any = None):
    """A dataclass field with optional numeric bounds checked at load time."""
    meta = {"ge": ge, "le": le, "gt": gt, "lt": lt, "doc": doc}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} does not match {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")  # pragma: no cover


def _check_bounds(value: Any, meta: typing.Mapping, key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    checks = (("ge", lambda v, b: v >= b, ">="), ("le", lambda v, b: v <= b, "<="),
              ("gt", lambda v, b: v > b, ">"), ("lt", lambda v, b: v < b, "<"))
    for name, ok, sym in checks:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: {value!r} is out of range (must be {sym} {bound})")


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and ranges raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!s} (known keys of {prefix or 'this section'}: "
            f"{', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            continue
        value = _convert(data[name], hints[name], key)
        _check_bounds(value, f.metadata, key)
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as e:
            raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None
    return obj


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2 floats: ``5e-05`` is a number, as DVC writes it (``dvc exp run -S train.learning_rate=5e-5``)
    and reads it; PyYAML's YAML 1.1 rules alone would read a string there."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def load_yaml(text: str):
    """``params.yaml``-like text, with YAML 1.2 floats."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml",
                 keys: typing.Sequence[str] | None = None) -> T:
    """Load one ``params.yaml`` section into ``cls`` (the stage reads only its own keys). With ``keys``
    (dotted, under the section: ``"hybrid"``, ``"dense.nprobe"``) the stage reads only those: every
    other field keeps its default, so a key that DVC does not track for the stage cannot change what
    it does. The whole section is checked either way (unknown keys, types, ranges)."""
    params = load_params(path)
    if section not in params:
        raise ConfigError(f"{path}: missing section '{section}'")
    full = from_dict(cls, params[section], prefix=section)
    if keys is None:
        return full
    out = cls()
    for key in keys:
        *parents, last = key.split(".")
        src, dst = full, out
        for name in [*parents, last]:
            if not dataclasses.is_dataclass(dst) or name not in {f.name for f in dataclasses.fields(dst)}:
                raise ConfigError(f"{section}.{key}: not a key of {cls.__name__}")
            if name != last:
                src, dst = getattr(src, name), getattr(dst, name)
        setattr(dst, last, getattr(src, last))
    return out


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for manifests and metrics)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
