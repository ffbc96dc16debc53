"""The extractor protocol, feature identities and the registry.

An **extractor** computes one or more features for a batch of (query, document) pairs::

    class Extractor(Protocol):
        name: str                          # registry name, e.g. "bm25"
        specs: tuple[FeatureSpec, ...]      # the columns it produces, with versions
        top_n: int | None                  # only pairs with first-stage rank <= top_n (None: all)
        cacheable: bool                    # False: recomputed on every build (cheap, list-dependent)
        def fit(self, corpus) -> Extractor            # corpus statistics, if any; returns self
        def compute(self, pairs) -> dict[str, ndarray] # one float array per spec, len(pairs) each
        def provenance(self) -> dict                   # params and model id, stored beside the values

``pairs`` is a candidate frame (:mod:`retrieval.frames`): ``qid, query, docno, text, title,
timestamp, rank, score`` plus, when known, ``rank_<retriever>`` / ``score_<retriever>`` columns of
each first-stage retriever. Extractors hold no state beyond their loaded model and corpus statistics,
so any batch can be computed anywhere, in any order (the store and a future Dask build rely on it).

A feature's **version** is derived from the extractor's code version, its parameters (except
``top_n`` and ``batch_size``, which never change a value), its model id and its corpus statistics:
any change gives a new version, and the store recomputes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from retrieval.params import ConfigError, from_dict


@dataclass(frozen=True)
class FeatureSpec:
    """The identity of a stored feature column."""

    name: str
    version: str
    description: str = ""


def digest(obj, length: int = 10) -> str:
    """A short, stable hash of a JSON-able object (versions, step stamps)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def model_fingerprint(model: str | None) -> str | None:
    """A content hash of a local model folder's config and weight files (None for hub names)."""
    if not model or not Path(model).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(Path(model).rglob("*")):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt") or f.name == "config.json"):
            h.update(f.relative_to(model).as_posix().encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]


#: Parameters that decide which pairs are computed or how they are batched, never a value.
NON_VALUE_PARAMS = frozenset({"top_n", "batch_size", "device"})


class BaseExtractor:
    """Shared plumbing: parameters as a frozen dataclass, versions, provenance.

    Subclasses set ``name``, ``CODE_VERSION`` (bump it when the computation changes), ``Params`` (a
    frozen dataclass with defaults) and ``FEATURES`` (feature name -> description), and implement
    :meth:`compute`. Those that need corpus statistics override :meth:`fit` and :meth:`state`.
    """

    name: ClassVar[str]
    CODE_VERSION: ClassVar[str] = "1"
    Params: ClassVar[type]
    FEATURES: ClassVar[dict[str, str]]
    cacheable: ClassVar[bool] = True

    #: Folder that relative local paths in the parameters (e.g. a fine-tuned model) are also looked up
    #: in when they do not exist from the working directory: the Scorer sets it to the directory the
    #: run was made from, so an app can load a run from anywhere. Values and versions never depend on it.
    root: Path | None = None

    def __init__(self, params=None, **kwargs):
        if params is None:
            params = from_dict(self.Params, kwargs, f"features.{self.name}")
        elif kwargs:
            raise TypeError("pass either a Params object or keyword parameters, not both")
        self.params = params

    def local_path(self, value: str | None) -> str | None:
        """``value`` as given, or under :attr:`root` when it is a relative path that exists only there."""
        if not value or Path(value).is_absolute() or Path(value).exists() or self.root is None:
            return value
        candidate = Path(self.root) / value
        return str(candidate) if candidate.exists() else value

    # -- identity ---------------------------------------------------------------------------
    @property
    def top_n(self) -> int | None:
        return getattr(self.params, "top_n", None)

    @property
    def batch_size(self) -> int:
        return getattr(self.params, "batch_size", 512)

    def model_id(self) -> str | None:
        """The model the values come from (a name or path), if any."""
        return getattr(self.params, "model", None)

    def state(self) -> dict:
        """Fitted corpus statistics that change values (included in the version). Empty by default."""
        return {}

    def provenance(self) -> dict:
        params = dataclasses.asdict(self.params)
        return {"extractor": self.name, "code_version": self.CODE_VERSION, "params": params,
                "model_id": self.model_id(), "state": self.state()}

    @property
    def version(self) -> str:
        params = {k: v for k, v in dataclasses.asdict(self.params).items() if k not in NON_VALUE_PARAMS}
        parts = [params, self.model_id(), self.state()]
        fingerprint = self._model_fingerprint()
        if fingerprint:  # a local model folder: its content, so retraining it in place recomputes
            parts.append(fingerprint)
        return f"{self.CODE_VERSION}.{digest(parts)}"

    def _model_fingerprint(self) -> str | None:
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = model_fingerprint(self.local_path(self.model_id()))
        return self._fingerprint

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        v = self.version
        return tuple(FeatureSpec(n, v, d) for n, d in self.FEATURES.items())

    # -- work -------------------------------------------------------------------------------
    def fit(self, corpus: pd.DataFrame) -> "BaseExtractor":
        return self

    #: True when :meth:`fit` learns corpus statistics that serving needs (saved beside a trained model).
    has_corpus_state: ClassVar[bool] = False

    def save_state(self, folder: Path) -> None:
        """Write the fitted corpus statistics into ``folder`` (extractors with ``has_corpus_state``)."""

    def load_state(self, folder: Path) -> "BaseExtractor":
        """Read what :meth:`save_state` wrote; returns self."""
        return self

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


# ------------------------------------------------------------------------------------ registry

#: Config name -> "module:Class". Imported lazily, so a heavy extractor costs nothing until used.
REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register an extractor class under a config name; a second registration of a name is refused."""
    if name in REGISTRY and REGISTRY[name] != target:
        raise ValueError(f"extractor {name!r} is already registered as {REGISTRY[name]}; refusing {target}")
    REGISTRY[name] = target


for _name, _target in {
    "first_stage": "features.first_stage:FirstStageExtractor",
    "bm25": "features.bm25:BM25Extractor",
    "coverage": "features.coverage:CoverageExtractor",
    "biencoder": "features.biencoder:BiEncoderExtractor",
    "crossencoder": "features.crossencoder:CrossEncoderExtractor",
    "lm_likelihood": "features.lm_likelihood:LMLikelihoodExtractor",
    "length": "features.length:LengthExtractor",
    "freshness": "features.freshness:FreshnessExtractor",
}.items():
    register(_name, _target)


def extractor_class(name: str) -> type:
    if name not in REGISTRY:
        raise ConfigError(f"unknown extractor {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, params: dict | None = None) -> BaseExtractor:
    """Build a registered extractor from a config table (unknown keys are an error listing the allowed)."""
    return extractor_class(name)(**(params or {}))


def check_values(extractor, pairs: pd.DataFrame, values: dict) -> dict[str, np.ndarray]:
    """Validate what ``compute`` returned: one float array of len(pairs) per spec."""
    expected = [s.name for s in extractor.specs]
    if set(values) != set(expected):
        raise ValueError(f"{extractor.name}: compute returned {sorted(values)}, expected {sorted(expected)}")
    out = {}
    for name in expected:
        arr = np.asarray(values[name], dtype=np.float64)
        if arr.shape != (len(pairs),):
            raise ValueError(f"{extractor.name}.{name}: expected {len(pairs)} values, found shape {arr.shape}")
        out[name] = arr
    return out
