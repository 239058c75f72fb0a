"""Typed, validated configuration objects.

Every config in seqlab is a frozen dataclass deriving from :class:`Config`.
On construction each field is checked against its annotation (``int``,
``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]``
and nested configs), then the class's own ``validate()`` runs. A bad value
fails with a :class:`ConfigError` that names the field, the value and what is
allowed. ``from_dict`` builds a config from plain data (JSON, YAML, TOML) and
rejects unknown keys.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Opt(Config):
    ...     lr: float = 1e-3
    ...     def validate(self):
    ...         require(self.lr > 0, self, "lr", "a positive number")
    >>> Opt(lr=-1)
    ConfigError: Opt.lr = -1 is not allowed: expected a positive number
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range."""


def require(ok: bool, cfg: Any, field: str, allowed: str) -> None:
    """Raise a ConfigError naming ``cfg.field``, its value and ``allowed`` unless ``ok``."""
    if not ok:
        value = getattr(cfg, field)
        raise ConfigError(
            f"{type(cfg).__name__}.{field} = {value!r} is not allowed: expected {allowed}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"a tuple of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "None"
    if tp is float:
        return "a finite number"
    return getattr(tp, "__name__", str(tp))


_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    """Check ``value`` against annotation ``tp``; return (ok, value converted)."""
    origin = get_origin(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            ok, v = _coerce(arg, value)
            if ok:
                return True, v
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = get_args(tp)
        elem_types = [args[0]] * len(value) if (len(args) == 2 and args[1] is Ellipsis) else list(args)
        if len(elem_types) != len(value):
            return False, value
        out = []
        for et, v in zip(elem_types, value):
            ok, v = _coerce(et, v)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            value = float(value)  # PyYAML reads 1e-3 (no dot) as a string; it is a number
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return True, float(value)
        return False, value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return True, value
        if isinstance(value, dict):
            return True, tp.from_dict(value)
        return False, value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base for typed configs: checks field types, then calls ``validate``."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ok, converted = _coerce(hints[f.name], value)
            if not ok:
                raise ConfigError(
                    f"{type(self).__name__}.{f.name} = {value!r} is not allowed: "
                    f"expected {_type_name(hints[f.name])}")
            if converted is not value:
                object.__setattr__(self, f.name, converted)
        self.validate()

    def validate(self) -> None:
        """Range checks beyond types; subclasses override and call ``require``."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from plain data; unknown keys are an error that lists the known ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be given a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no option {', '.join(map(repr, unknown))}; "
                f"known options: {', '.join(cls.field_names()) or '(none)'}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [x.to_dict() if isinstance(x, Config) else x for x in v]
            out[f.name] = v
        return out


def option(default: Any, help: str) -> Any:
    """A config field with a default and a one-line help (command lines show it).

    Example:
        >>> gamma: int = option(4, "speculative: draft tokens per target call")
    """
    return dataclasses.field(default=default, metadata={"help": help})
