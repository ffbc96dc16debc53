"""Parameters declared as data: build frozen dataclasses from plain dicts (TOML tables), strictly.

Used by the config loader and by the feature-extractor registry: an unknown key is an error that
lists the allowed keys, and a value of the wrong type names the key and both types. A field typed
``Literal[...]`` takes only those values (the error lists them; so does ``docs/configuration.md``).
"""

from __future__ import annotations

import dataclasses
import types
import typing

from .errors import UsageError


class ConfigError(UsageError):
    """A config has an unknown key, a wrong type or a bad value."""


def _check_type(value, tp, where: str):
    """Verify (and lightly coerce: int -> float, list -> tuple) a value against a field type."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:  # a closed set of values: the config reference lists them
        allowed = typing.get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, allowed))}, found {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = {}
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors[arg] = exc
        table = [e for a, e in errors.items() if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and table:  # a table with a wrong key or value inside: say which
            raise table[0]
        raise ConfigError(f"{where}: expected {' or '.join(_describe(a) for a in args)}, found "
                          f"{type(value).__name__} {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {type(value).__name__} {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, found {type(value).__name__} {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, found {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table [{where}], found {type(value).__name__}")
        return from_dict(tp, value, where)
    return value


def _describe(tp) -> str:
    """A field type in words, for errors and the config reference."""
    if tp is type(None):
        return "nothing"
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with the list of allowed ones."""
    hints = typing.get_type_hints(cls)
    # the top level's ``source`` is the file the config was read from, not a key
    fields = {f.name for f in dataclasses.fields(cls) if f.init and not (f.name == "source" and not where)}
    allowed = sorted(fields)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            section = f"[{where}]" if where else "the top level"
            raise ConfigError(f"unknown key {path!r} in {section}; allowed keys: {', '.join(allowed)}")
        kwargs[key] = _check_type(value, hints[key], path)
    return cls(**kwargs)
