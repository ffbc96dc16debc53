"""TOML configs parsed into frozen dataclasses.

Every section is a frozen dataclass whose fields are the allowed keys; an unknown key, or a value of
the wrong type, is an error that names the file, the key and the allowed keys. Component parameters
are the components' own dataclasses (e.g. :class:`retrieval.bm25.BM25Params`), so a parameter is
declared once, next to the code that uses it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.bm25 import BM25Params
from retrieval.dense import DenseParams

from .evaluate import DEFAULT_MEASURES


class ConfigError(ValueError):
    """A config file has an unknown key, a wrong type or a bad value."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "scifact"  # a dataset name on the data search path, or a folder
    splits: tuple[str, ...] = ("train", "test")  # splits to retrieve candidates for
    test_split: str = "test"  # the split `evaluate` reports


@dataclass(frozen=True)
class RetrievalConfig:
    systems: tuple[str, ...] = ("bm25", "dense", "hybrid")  # `hybrid` fuses the others with RRF
    k: int = 100  # candidates kept per query
    depth: int = 100  # depth of each retriever's list before fusion
    rrf_k: int = 60
    bm25: BM25Params = field(default_factory=BM25Params)
    dense: DenseParams = field(default_factory=DenseParams)


@dataclass(frozen=True)
class EvaluateConfig:
    measures: tuple[str, ...] = DEFAULT_MEASURES
    test: str = "t"  # paired test: "t" or "wilcoxon"


@dataclass(frozen=True)
class RunConfig:
    dir: str = "runs/default"  # the run folder (relative paths are relative to the working directory)
    cache: str = ""  # embedding cache folder; empty: the user cache (~/.cache/fusion-ltr)


@dataclass(frozen=True)
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    run: RunConfig = field(default_factory=RunConfig)
    source: str = ""  # the file it was read from (set by load_config)

    def validate(self) -> "Config":
        r = self.retrieval
        known = {"bm25", "dense", "hybrid"}
        bad = [s for s in r.systems if s not in known]
        if bad:
            raise ConfigError(f"{self.source}: retrieval.systems has unknown {bad}; allowed: {sorted(known)}")
        if r.k < 1 or r.depth < 1:
            raise ConfigError(f"{self.source}: retrieval.k and retrieval.depth must be >= 1, found {r.k}, {r.depth}")
        if self.evaluate.test not in ("t", "wilcoxon"):
            raise ConfigError(f"{self.source}: evaluate.test must be 't' or 'wilcoxon', found {self.evaluate.test!r}")
        return self


def _check_type(value, tp, where: str):
    """Coerce/verify a TOML value against a field type; return the value to store."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {type(value).__name__} {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, found {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table [{where}], found {type(value).__name__}")
        return from_dict(tp, value, where)
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with the list of allowed ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    allowed = sorted(k for k in fields if k != "source")
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in allowed:
            section = f"[{where}]" if where else "the top level"
            raise ConfigError(f"unknown key {path!r} in {section}; allowed keys: {', '.join(allowed)}")
        kwargs[key] = _check_type(value, hints[key], path)
    return cls(**kwargs)


def load_config(path: str | Path) -> Config:
    """Read a TOML config file into a validated :class:`Config`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        cfg = from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dataclasses.replace(cfg, source=str(path)).validate()
