"""TOML configs parsed into frozen dataclasses.

Every section is a frozen dataclass whose fields are the allowed keys; an unknown key, or a value of
the wrong type, is an error that names the file, the key and the allowed keys. Component parameters
are the components' own dataclasses (e.g. :class:`retrieval.bm25.BM25Params`), so a parameter is
declared once, next to the code that uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from retrieval.analysis import LANGUAGES
from retrieval.bm25 import BM25Params
from retrieval.first_stage import FirstStageConfig
from features.base import extractor_class
from .training.biencoder import BETrainingParams
from .training.crossencoder import CETrainingParams
from .distributed import ComputeConfig
from .lambdamart import LambdaMARTParams
from retrieval.params import ConfigError, from_dict

from .evaluate import DEFAULT_MEASURES


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "scifact"  # a dataset name on the data search path, or a folder
    format: Literal["beir", "letor"] = "beir"  # "beir" (documents and queries) or "letor" (precomputed features, S1..S5 folds)
    splits: tuple[str, ...] = ("train", "test")  # splits to retrieve candidates for
    test_split: str = "test"  # the split `evaluate` reports
    fold: int = 1  # letor: the fold (1-5) trained, early-stopped and evaluated
    # the text's language: the analysis (segmenter, stemmer, stop words) of BM25 and the lexical features,
    # and the LM's prompts, wherever their own tables do not set them ("zh": jieba words, Chinese stop words)
    language: Literal["en", "zh"] = "en"
    # BEIR's protocol for collections whose queries are documents (ArguAna, Quora): a query's own
    # document (docno == qid) is removed from every ranking before evaluation
    ignore_identical_ids: bool = False


DEFAULT_EXTRACTORS = {"first_stage": {}, "bm25": {}, "coverage": {}, "biencoder": {}, "length": {}}


@dataclass(frozen=True)
class FeaturesConfig:
    store: str = ""  # DuckDB file; empty: <run.dir>/features.duckdb
    candidates: str = "hybrid"  # the first-stage list that is reranked
    # another run folder whose candidates, feature store and feature set this run reuses: only train,
    # evaluate and report run here (e.g. other ranker parameters without repeating retrieval and features)
    from_run: str = ""
    # extractor name -> its parameters ([features.extractors.<name>] tables, in file order)
    extractors: dict[str, dict] = field(default_factory=lambda: dict(DEFAULT_EXTRACTORS))


@dataclass(frozen=True)
class FinetuneConfig:
    """[finetune]: `fusion-ltr finetune-ce` (see ranker.training.crossencoder.CETrainingParams)."""

    output: str = ""  # model folder parent; empty: <run.dir>/crossencoder
    params: CETrainingParams = field(default_factory=CETrainingParams)


@dataclass(frozen=True)
class FinetuneBiencoderConfig:
    """[finetune_biencoder]: `fusion-ltr finetune-be`, the in-domain bi-encoder (ranker.training.biencoder)."""

    output: str = ""  # model folder parent; empty: <run.dir>/biencoder
    params: BETrainingParams = field(default_factory=BETrainingParams)


@dataclass(frozen=True)
class CascadeStage:
    """One ``[[ranker.cascade]]`` stage: the features it adds to the previous stages' and how many
    documents per query it passes on (see :mod:`ranker.cascade`)."""

    features: tuple[str, ...] = ()  # the features this stage adds to the previous stages' (a derived <f>_qz etc. too)
    keep: int = 0  # documents passed to the next stage; 0 on the last stage
    # > 0: this stage and the later ones learn from a seeded sample of at most this many training queries,
    # so the costly features they add are computed for those training queries only (a CPU budget: the
    # cheap stage before still learns from every query); 0: every training query that reaches it
    max_train_queries: int = 0
    # this stage's own settings: keys of [ranker.params] replaced for its model (fixed settings, also under
    # params = "auto"), e.g. small trees without early stopping for a stage that learns from few queries
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RankerConfig:
    """[ranker]: LambdaMART training (`fusion-ltr train`)."""

    # "auto": settings chosen per dataset by cross-validation on the training queries (ranker.tuning);
    # a [ranker.params] table: fixed settings, used as they are
    params: LambdaMARTParams | Literal["auto"] = "auto"
    tune_folds: int = 3  # folds of the tuning's cross-validation (params = "auto")
    # a model not better than the first stage on held-out training queries serves: "fallback" (the first
    # stage), "blend" (RRF of the model's and the first stage's orders) or "warn" (the model, with a warning)
    guard: Literal["fallback", "blend", "warn"] = "fallback"
    valid_fraction: float = 0.2  # training queries held out for early stopping
    features: tuple[str, ...] = ()  # features to learn from; empty: the whole feature set
    # score features to normalise per query (features.query_norm): each adds <f>_qrank, <f>_qz and <f>_qgap to
    # the feature set (the whole set, when ranker.features is empty), which stages and variants may also name
    normalize: tuple[str, ...] = ()
    # extra models on a subset of features, evaluated side by side: name = [features] (trained with the
    # ranker's settings), or a table {features = [...], params = {...}} whose params replace those keys of
    # [ranker.params] for that model (fixed settings, also under params = "auto")
    variants: dict[str, list | dict] = field(default_factory=dict)
    cv_folds: int = 0  # > 0: query-level K-fold cross-validation on the test split (no training split)
    # [[ranker.cascade]] stages: the main model becomes a cascade (each stage a LambdaMART on the documents
    # that reach it; costly extractors computed only for those); empty: one model over every candidate
    cascade: tuple[CascadeStage, ...] = ()
    # > 0: a latency budget per query (ms), planned by the costs per 1,000 pairs stored in the feature store:
    # while the cascade does not fit, the extractor whose move to the next stage saves the most moves there
    # (never a stage's last); then the keep values are chosen to fit (each at most the configured keep)
    budget_ms: float = 0.0
    # the documents the cascade is planned (budget_ms) to serve: "corpus" (this run's, as search() serves
    # them: the costs the build measured) or "unseen" (an app's own documents: an extractor that computes
    # more for them, such as the bi-encoder encoding each one, costs what it then costs)
    documents: Literal["corpus", "unseen"] = "corpus"
    # share of the training queries whose first-stage list features (fs_rank, fs_score, rank_<r>, score_<r>)
    # are hidden (NaN) while the models learn, so that they also learn to rank a list given without ranks:
    # the Scorer then hides them, rather than taking the input position, when no document carries a rank
    # or score (0: never hidden; the position stands in for a missing rank)
    hide_ranks: float = 0.0
    # share of the training (and validation) queries whose feedback features are those of a query never seen
    # before (its own events left out; the documents' history from other queries kept), so that the models
    # also learn to rank a new query: without it, a model trained on queries that all have a history ranks
    # new ones poorly
    hide_history: float = 0.25

    @property
    def auto(self) -> bool:
        return self.params == "auto"

    @property
    def base_params(self) -> LambdaMARTParams:
        """The fixed settings, or the defaults that ``auto`` tunes from."""
        return LambdaMARTParams() if self.auto else self.params

    def variant_features(self, name: str) -> list[str]:
        v = self.variants[name]
        return list(v["features"] if isinstance(v, dict) else v)

    def variant_params(self, name: str) -> LambdaMARTParams | None:
        """A variant's own settings (``[ranker.params]`` with its ``params`` replaced), or None when it
        has none (it is trained as the main model is)."""
        v = self.variants[name]
        if not isinstance(v, dict) or not v.get("params"):
            return None
        return from_dict(LambdaMARTParams, {**dataclasses.asdict(self.base_params), **v["params"]},
                         f"ranker.variants.{name}.params")

    def stage_params(self, k: int) -> LambdaMARTParams | None:
        """Cascade stage ``k``'s (0-based) own settings (``[ranker.params]`` with its ``params`` replaced), or
        None when it has none (it is trained with the ranker's settings)."""
        own = self.cascade[k].params
        if not own:
            return None
        return from_dict(LambdaMARTParams, {**dataclasses.asdict(self.base_params), **own},
                         f"ranker.cascade[{k}].params")


@dataclass(frozen=True)
class EvaluateConfig:
    measures: tuple[str, ...] = DEFAULT_MEASURES  # ir-measures names; the first is the one the guard, tuning and tests use
    test: Literal["t", "wilcoxon"] = "t"  # the paired test of the evaluation tables


@dataclass(frozen=True)
class LabelsConfig:
    # what the training queries' labels come from: "qrels" (relevance judgements) or "clicks" (the run
    # store's interaction log, `fusion-ltr events ingest`); the test split is evaluated on its judgements
    source: Literal["qrels", "clicks"] = "qrels"
    # clicks: "position" (each impression a query group, its clicks the labels, the positions shown fed
    # to the booster's position-bias correction), "raw" (the same without the positions), "pbm" (one row per
    # query and document shown, labelled by the position-based model's P(click | examined), examination
    # estimated from the log by EM) or "ctr" (the same rows labelled by the click-through rate)
    click_model: Literal["position", "raw", "pbm", "ctr"] = "position"
    kinds: tuple[str, ...] = ("click",)  # interaction kinds that count as a click
    since: str = ""  # only impressions at or after this ISO 8601 time (empty: from the start of the log)
    until: str = ""  # only impressions before this ISO 8601 time (empty: to its end)
    # the model reorders the first stage's top N and keeps the rest below, in its order: it learned from no
    # document shown deeper (0: the deepest position of the training impressions; -1: every candidate)
    rerank_depth: int = 0


@dataclass(frozen=True)
class RunConfig:
    dir: str = "runs/default"  # the run folder (relative paths are relative to the working directory)
    cache: str = ""  # embedding cache folder; empty: the user cache (~/.cache/fusion-ltr)


@dataclass(frozen=True)
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    retrieval: FirstStageConfig = field(default_factory=FirstStageConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_biencoder: FinetuneBiencoderConfig = field(default_factory=FinetuneBiencoderConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    source: str = ""  # the file it was read from (set by load_config)

    def _check(self, make) -> None:
        """Build and check a section's settings (``make()``: checked settings, or None when there are none to
        check, or it checks them itself); an error names this config file."""
        try:
            params = make()
            if params is not None:
                params.check()
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    def validate(self) -> "Config":
        if self.dataset.format == "letor" and not 1 <= self.dataset.fold <= 5:
            raise ConfigError(f"{self.source}: dataset.fold must be 1..5 for LETOR, found {self.dataset.fold}")
        r = self.retrieval
        try:
            r.check()
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        if self.features.candidates not in r.systems:
            raise ConfigError(f"{self.source}: features.candidates = {self.features.candidates!r} is not one of "
                              f"retrieval.systems {list(r.systems)}")
        for name, params in self.features.extractors.items():
            cls = extractor_class(name)
            if not isinstance(params, dict):
                raise ConfigError(f"{self.source}: [features.extractors.{name}] must be a table, found {params!r}")
            from_dict(cls.Params, params, f"features.extractors.{name}")
        self.finetune.params.check()
        self.finetune_biencoder.params.check()
        self.ranker.base_params.check()
        for name, v in self.ranker.variants.items():
            where = f"{self.source}: ranker.variants.{name}"
            if isinstance(v, dict):
                unknown = sorted(set(v) - {"features", "params"})
                if unknown or not isinstance(v.get("features"), list) or not isinstance(v.get("params", {}), dict):
                    raise ConfigError(f"{where}: a table needs features = [...] and may have params = {{...}} (settings "
                                      f"that replace [ranker.params]'s); found keys {sorted(v)}")
                self._check(lambda: self.ranker.variant_params(name))
            elif not isinstance(v, list):
                raise ConfigError(f"{where}: expected a list of features or a table, found {v!r}")
        self._check(self.compute.check)
        stages = self.ranker.cascade
        if stages:
            keeps = [s.keep for s in stages[:-1]]
            names = [n for s in stages for n in s.features]
            if len(stages) < 2 or any(k < 1 for k in keeps) or keeps != sorted(keeps, reverse=True) \
                    or stages[-1].keep or len(set(names)) != len(names) or not all(s.features for s in stages):
                raise ConfigError(f"{self.source}: ranker.cascade: expected 2 or more stages, each adding features "
                                  "no other stage names, every keep >= 1 and falling but the last stage's 0; found "
                                  f"{[(list(s.features), s.keep) for s in stages]}")
            if self.ranker.cv_folds:
                raise ConfigError(f"{self.source}: ranker.cascade needs a training split (not ranker.cv_folds)")
            if any(s.max_train_queries < 0 for s in stages):
                raise ConfigError(f"{self.source}: ranker.cascade: max_train_queries must be >= 0 (0: no cap), found "
                                  f"{[s.max_train_queries for s in stages]}")
            for k in range(len(stages)):
                self._check(lambda: self.ranker.stage_params(k))
        if self.labels.source == "clicks":
            if self.dataset.format == "letor" or stages or self.ranker.cv_folds:
                raise ConfigError(f"{self.source}: labels.source = \"clicks\" trains a plain model on a run's training "
                                  "split (not LETOR, ranker.cascade or ranker.cv_folds)")
            import pandas as pd

            for key in ("since", "until"):
                value = getattr(self.labels, key)
                try:
                    if value:
                        pd.Timestamp(value)
                except ValueError:
                    raise ConfigError(f"{self.source}: labels.{key}: expected an ISO 8601 time, found {value!r}") from None
        if not 0 <= self.ranker.hide_history <= 1:
            raise ConfigError(f"{self.source}: ranker.hide_history must be in [0, 1], found {self.ranker.hide_history}")
        if not 0 <= self.ranker.hide_ranks <= 1:
            raise ConfigError(f"{self.source}: ranker.hide_ranks must be in [0, 1], found {self.ranker.hide_ranks}")
        if self.ranker.tune_folds < 2:
            raise ConfigError(f"{self.source}: ranker.tune_folds must be >= 2, found {self.ranker.tune_folds}")
        if not 0 <= self.ranker.valid_fraction < 1:
            raise ConfigError(f"{self.source}: ranker.valid_fraction must be in [0, 1), found {self.ranker.valid_fraction}")
        return self


def with_language(data: dict) -> dict:
    """``data`` (a parsed config) with ``[dataset] language``'s analysis (:data:`retrieval.analysis.LANGUAGES`)
    filled into ``[retrieval.bm25]`` and every extractor table that analyses text, and the language into
    every extractor with a ``language`` parameter, where the table does not set them itself."""
    language = data.get("dataset", {}).get("language") if isinstance(data.get("dataset"), dict) else None
    if language not in LANGUAGES:  # none given (the defaults are English's), or a bad value from_dict refuses
        return data
    data = copy.deepcopy(data)
    defaults = {**LANGUAGES[language], "language": language}
    tables, retrieval, features = [], data.setdefault("retrieval", {}), data.setdefault("features", {})
    if isinstance(retrieval, dict):  # what is not a table where one belongs, from_dict refuses
        tables.append((retrieval.setdefault("bm25", {}), {f.name for f in dataclasses.fields(BM25Params)}))
    extractors = features.setdefault("extractors", copy.deepcopy(DEFAULT_EXTRACTORS)) if isinstance(features, dict) else {}
    for name, table in extractors.items() if isinstance(extractors, dict) else ():
        try:
            tables.append((table, {f.name for f in dataclasses.fields(extractor_class(name).Params)}))
        except ConfigError:  # an unknown extractor: validate() names it
            continue
    for table, fields in tables:
        if isinstance(table, dict):
            for key in fields & defaults.keys():
                table.setdefault(key, defaults[key])
    return data


def load_config(path: str | Path) -> Config:
    """Read a TOML config file into a validated :class:`Config`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if not data:
        raise ConfigError(f"{path}: the config is empty; expected at least a [dataset] table with the data's name "
                          "(e.g. configs/demo.toml)")
    try:
        cfg = from_dict(Config, with_language(data))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dataclasses.replace(cfg, source=str(path)).validate()
