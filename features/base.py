"""The extractor protocol, its optional capabilities, feature identities and the registry.

An **extractor** computes one or more features for a batch of (query, document) pairs. Every
extractor subclasses :class:`BaseExtractor` and provides::

    name: str                           # registry name, e.g. "bm25"
    CODE_VERSION: str                   # bump when the computation changes: the store recomputes
    Params: type                        # frozen dataclass; its fields are the config keys
    FEATURES: dict[str, str]            # feature name -> description, in column order
    cacheable: bool = True              # False: recomputed on every build (cheap, list-dependent)
    def compute(self, pairs) -> dict[str, ndarray]   # one float array per feature, len(pairs) each

and may override ``check(pairs)``: raise :class:`UsageError` for input it cannot compute (e.g. an
embedding of another model), cheaply and before any model runs; the service calls it per request so
that a bad request fails alone instead of failing a shared batch.
and inherits ``specs`` (the columns with their versions), ``version``, ``top_n`` / ``batch_size``
(from the params), ``provenance()``, ``fit(corpus)`` (a no-op unless overridden) and ``root`` (where
relative model paths are also looked up; the Scorer sets it to the folder the run was made from).
An extractor whose cost differs for documents its fitted state does not know (an app's own) also
overrides ``compute_unseen(pairs)``, so that cost is measured apart (see its docstring).

``pairs`` is a candidate frame (:mod:`retrieval.frames`): ``qid, query, docno, text, title,
timestamp, rank, score`` plus, when known, ``rank_<retriever>`` / ``score_<retriever>`` columns of
each first-stage retriever. Extractors hold no state beyond their loaded model and corpus statistics,
so any batch can be computed anywhere, in any order.

**Capabilities** are small mixins an extractor declares by inheriting them; what each requires is
checked when the class is created, with an error naming what is missing:

- :class:`CorpusState`: ``fit(corpus)`` learns corpus statistics that change values (``state()``,
  part of the version) and that serving needs (``save_state(folder)`` / ``load_state(folder)``; a
  trained model keeps them beside its booster). Example: BM25's document frequencies.
- :class:`TrainedOnQueries`: the extractor's model learned from some queries' judgments;
  ``trained_qids()`` lists them, and the leakage exclusion keeps every such query away from the ranker
  (and refuses a test query). Example: the fine-tuned cross-encoder.
- :class:`ReadsLog`: values from the store's interaction log; ``read_log(store)`` takes a snapshot of it
  (with :class:`CorpusState`, the snapshot is what serving reads). Example: the feedback features.

A feature's **version** is derived from the extractor's code version, its parameters (except
``top_n``, ``batch_size`` and ``device``, which never change a value), its model id (and a local
model folder's content) and its corpus statistics: any change gives a new version, and the store
recomputes. It is computed once, and again only after ``fit`` or ``load_state``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from retrieval.errors import UsageError
from retrieval.models import model_fingerprint  # noqa: F401 (re-exported: extractors use it from here)
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


#: Parameters that decide which pairs are computed or how they are batched, never a value.
# new_head (cross-encoder) only allows loading a model with a random head; the weights decide the values
# an endpoint's timeout, retries, concurrency and key variable (llm_grade) decide how it is asked, not its answer
NON_VALUE_PARAMS = frozenset({"top_n", "batch_size", "device", "memory_cache", "disk_cache", "new_head",
                              "timeout_s", "retries", "max_concurrency", "api_key_env"})
COST_PARAMS = NON_VALUE_PARAMS - {"top_n"}  # top_n changes which values are computed, not what they are


class CorpusState:
    """Capability: corpus statistics learned by ``fit`` that change values and that serving needs."""

    REQUIRES = ("fit", "state", "save_state", "load_state")


class TrainedOnQueries:
    """Capability: a model trained on some queries' judgments; ``trained_qids()`` names them."""

    REQUIRES = ("trained_qids",)

    def trained_qids(self) -> set[str]:  # pragma: no cover - a capability's contract
        raise NotImplementedError


class ReadsLog:
    """Capability: values from the feature store's interaction log (:mod:`features.events`);
    ``read_log(store)`` takes its snapshot (``fusion-ltr features`` calls it before the build; the snapshot is
    the extractor's corpus state, saved beside the model). Example: the feedback features."""

    REQUIRES = ("read_log",)


CAPABILITIES = (CorpusState, TrainedOnQueries, ReadsLog)


def _resets_version(method):
    """Wrap ``fit`` / ``load_state`` so the cached version is recomputed after the state changes."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        out = method(self, *args, **kwargs)
        self._version = None
        return out

    wrapper._resets_version = True
    return wrapper


class BaseExtractor:
    """Shared plumbing: parameters as a frozen dataclass, versions, provenance (see the module doc).

    Subclasses set ``name``, ``CODE_VERSION``, ``Params`` and ``FEATURES``, implement :meth:`compute`,
    and inherit the capabilities they have (:class:`CorpusState`, :class:`TrainedOnQueries`).
    """

    name: ClassVar[str]
    CODE_VERSION: ClassVar[str] = "1"
    Params: ClassVar[type]
    FEATURES: ClassVar[dict[str, str]]
    cacheable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [a for a in ("name", "Params", "FEATURES") if not hasattr(cls, a)]
        if cls.compute is BaseExtractor.compute:
            missing.append("compute()")
        for cap in CAPABILITIES:
            if issubclass(cls, cap):
                missing += [f"{m}() (required by {cap.__name__})" for m in cap.REQUIRES
                            if getattr(cls, m) is getattr(BaseExtractor, m, None) or getattr(cls, m) is getattr(cap, m, None)]
        if missing:
            raise TypeError(f"extractor class {cls.__name__} lacks {', '.join(missing)}")
        for m in ("fit", "load_state"):
            if m in cls.__dict__ and not getattr(cls.__dict__[m], "_resets_version", False):
                setattr(cls, m, _resets_version(cls.__dict__[m]))

    def __init__(self, params=None, **kwargs):
        if params is None:
            params = from_dict(self.Params, kwargs, f"features.{self.name}")
        elif kwargs:
            raise TypeError("pass either a Params object or keyword parameters, not both")
        self.params = params
        self._version: str | None = None
        self._root: Path | None = None

    @property
    def root(self) -> Path | None:
        """Folder that relative local paths in the parameters (e.g. a fine-tuned model) are also looked
        up in when they do not exist from the working directory. Values never depend on it."""
        return self._root

    @root.setter
    def root(self, value) -> None:
        self._root = Path(value) if value else None
        self._version = None
        self.__dict__.pop("_fingerprint", None)

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

    def config(self) -> dict:
        """The parameters as a plain config table (what a model manifest stores to rebuild it)."""
        return json.loads(json.dumps(dataclasses.asdict(self.params), default=str))

    def param_changes(self, built: dict) -> dict[str, tuple]:
        """Parameters that differ from the extractor of config table ``built`` (a feature build's
        ``extractor_configs`` entry): name -> (built value, this value); those that change no value but
        cost (batch size, device, caches) left out. Raises :class:`ConfigError` when ``built`` is no
        longer a valid table."""
        mine, other = self.config(), create(self.name, built).config()
        return {k: (other.get(k), mine.get(k)) for k in sorted(mine.keys() | other.keys())
                if k not in COST_PARAMS and mine.get(k) != other.get(k)}

    def provenance(self) -> dict:
        return {"extractor": self.name, "code_version": self.CODE_VERSION, "params": dataclasses.asdict(self.params),
                "model_id": self.model_id(), "state": self.state()}

    @property
    def version(self) -> str:
        if self._version is None:
            params = {k: v for k, v in dataclasses.asdict(self.params).items() if k not in NON_VALUE_PARAMS}
            parts = [params, self.model_id(), self.state()]
            fingerprint = self._model_fingerprint()
            if fingerprint:  # a local model folder: its content, so retraining it in place recomputes
                parts.append(fingerprint)
            self._version = f"{self.CODE_VERSION}.{digest(parts)}"
        return self._version

    def _model_fingerprint(self) -> str | None:
        if "_fingerprint" not in self.__dict__:
            self.__dict__["_fingerprint"] = model_fingerprint(self.local_path(self.model_id()))
        return self.__dict__["_fingerprint"]

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        v = self.version
        return tuple(FeatureSpec(n, v, d) for n, d in self.FEATURES.items())

    @property
    def has_corpus_state(self) -> bool:
        return isinstance(self, CorpusState)

    # -- work -------------------------------------------------------------------------------
    def fit(self, corpus: pd.DataFrame) -> "BaseExtractor":
        """Learn what the extractor needs from the corpus (a no-op unless overridden); returns self."""
        return self

    def save_state(self, folder: Path) -> None:
        """Write the fitted corpus statistics into ``folder`` (:class:`CorpusState` extractors)."""

    def load_state(self, folder: Path) -> "BaseExtractor":
        """Read what :meth:`save_state` wrote; returns self."""
        return self

    def check(self, pairs: pd.DataFrame) -> None:
        """Raise :class:`UsageError` for pairs :meth:`compute` would refuse (the default: none); cheap, no model."""

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_unseen(self, pairs: pd.DataFrame) -> dict[str, np.ndarray] | None:
        """The values of :meth:`compute` as if no document of ``pairs`` were known to the fitted state (an
        app's own documents at serving time), for an extractor whose cost then differs: the bi-encoder
        encodes each document instead of reading the corpus embeddings. ``None`` (the default): the cost is
        the same. The feature build times it once per version on a sample (the store's ``"unseen"`` path
        cost), and a cascade planned for unseen documents (``ranker.documents``) uses that cost."""
        return None

    @property
    def costs_more_unseen(self) -> bool:
        """Whether :meth:`compute_unseen` is implemented (its cost is measured apart)."""
        return type(self).compute_unseen is not BaseExtractor.compute_unseen

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


def trained_qids(extractors) -> set[str]:
    """Every query some extractor's model learned from (the leakage exclusion's input)."""
    return {q for e in extractors if isinstance(e, TrainedOnQueries) for q in e.trained_qids()}


# ------------------------------------------------------------------------------------ registry

#: Config name -> "module:Class". Imported lazily, so a heavy extractor costs nothing until used.
REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register an extractor class under a config name; a second registration of a name is refused."""
    if name in REGISTRY and REGISTRY[name] != target:
        raise UsageError(f"extractor {name!r} is already registered as {REGISTRY[name]}; refusing {target}")
    REGISTRY[name] = target


for _name, _target in {
    "first_stage": "features.first_stage:FirstStageExtractor",
    "bm25": "features.bm25:BM25Extractor",
    "bm25_fields": "features.bm25_fields:BM25FieldsExtractor",
    "coverage": "features.coverage:CoverageExtractor",
    "biencoder": "features.biencoder:BiEncoderExtractor",
    "crossencoder": "features.crossencoder:CrossEncoderExtractor",
    "lm_likelihood": "features.lm_likelihood:LMLikelihoodExtractor",
    "llm_grade": "features.llm_grade:LLMGradeExtractor",
    "length": "features.length:LengthExtractor",
    "freshness": "features.freshness:FreshnessExtractor",
    "feedback": "features.feedback:FeedbackExtractor",
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
