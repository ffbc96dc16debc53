"""One run of a config: its layout, and what the steps share, each loaded once and handed down.

A :class:`Run` is made per command (``fusion-ltr train`` makes one, ``fusion-ltr run`` makes one for
all its steps). The dataset, the extractors, the feature set and the ranking matrices are loaded on
first use and kept, so a cold ``run`` parses the corpus once and builds the train/valid/test matrices
once, whichever steps use them.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from features import base as fbase
from features import query_norm
from features.matrix import RankingData
from features.build import UNSEEN
from features.store import FeatureStore
from retrieval.data import hash_split, load_beir
from retrieval.errors import MissingInputError, UsageError
from retrieval.frames import QID

from .config import Config
from .layout import RunLayout, variant_of


def looks_local(model: str) -> bool:
    """A model name that can only be a local path (hub names are ``name`` or ``org/name``)."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


@dataclass
class FeatureSet:
    """The built feature set the ranker learns from."""

    specs: list[fbase.FeatureSpec]  # the features models learn from (stored ones and derived ones)
    extractor_of: dict[str, str]  # feature -> extractor name (a derived feature: its source's)
    cost: dict[str, float]  # feature -> its extractor's seconds per 1,000 pairs
    # the same for documents the extractors were not fitted on (an app's own): the "unseen" path cost where
    # an extractor computes more for them (the bi-encoder encodes each), else its cost above
    unseen_cost: dict[str, float] = field(default_factory=dict)

    def cost_for(self, documents: str) -> dict[str, float]:
        """The costs that apply to serving ``documents`` ("corpus" or "unseen", see ``ranker.documents``)."""
        return (self.unseen_cost or self.cost) if documents == "unseen" else self.cost

    # the stored features behind ``specs``: each stored one, and each derived one's source (read from the store)
    raw_specs: list[fbase.FeatureSpec] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]


@dataclass
class Matrices:
    """The ranker's data: train (minus the queries excluded for leakage), valid (early stopping), test."""

    train: RankingData | None
    valid: RankingData | None
    test: RankingData
    qrels: pd.DataFrame  # the test split's judgments
    leaked: list[str]  # training queries kept from the ranker (an extractor's model learned from them)
    shown_depth: int = 0  # labels from clicks: the deepest position shown in the training impressions


class Run:
    """A config's run folder and everything its steps share (see the module docstring)."""

    def __init__(self, cfg: Config, *, log=print, progress: bool = True):
        self.cfg = cfg
        self.layout = RunLayout.of(cfg)
        self._log = log
        self._muted = 0
        self.progress = progress

    def log(self, *args) -> None:
        """Say something (to the ``log`` the Run was made with), unless inside :meth:`muted`."""
        if not self._muted:
            self._log(*args)

    @contextmanager
    def muted(self):
        """Nothing is said inside (``run`` prints a step's result itself)."""
        self._muted += 1
        try:
            yield self
        finally:
            self._muted -= 1

    @property
    def letor(self) -> bool:
        return self.cfg.dataset.format == "letor"

    def folder(self) -> Path:
        """The run folder, created with a copy of the config the first time a step writes into it."""
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        if self.cfg.source and Path(self.cfg.source).exists():
            shutil.copyfile(self.cfg.source, self.layout.config)
        return root

    @property
    def reuses_features(self) -> bool:
        """The config trains on another run's candidates and features (``features.from_run``)."""
        return bool(self.cfg.features.from_run)

    def builds_features(self, step: str) -> None:
        """Refuse a step that would rebuild what this config reuses from another run."""
        self.needs_documents(step)
        if self.reuses_features:
            raise UsageError(f"{step}: {self.cfg.source} reuses the candidates and features of "
                             f"{self.cfg.features.from_run} (features.from_run); run {step} with that run's config")

    def needs_documents(self, step: str) -> None:
        if self.letor:
            raise UsageError(f"{step}: {self.cfg.dataset.name} is a LETOR dataset (precomputed features, no "
                             "documents); only train, evaluate, report and run apply")

    def preflight(self) -> "Run":
        """Find what can be found before any work starts: the dataset and its splits, and local model
        paths that neither exist nor are made by a step of this run. Returns self."""
        from retrieval.data import find_dataset

        cfg = self.cfg
        folder = find_dataset(cfg.dataset.name)
        if self.letor:
            missing = [f"S{i}.txt" for i in range(1, 6) if not any((folder / f"S{i}.txt{z}").exists() for z in ("", ".gz"))]
            if missing:
                raise MissingInputError(f"{folder}: LETOR folds need S1..S5.txt, missing {missing}")
            return self
        found = sorted(f.name.split(".")[0] for f in (folder / "qrels").glob("*") if f.is_file()) \
            if (folder / "qrels").is_dir() else []
        unknown = [s for s in cfg.dataset.splits if s not in found]
        if unknown:
            raise UsageError(f"{cfg.source}: dataset.splits names {unknown}, but {folder / 'qrels'} has qrels for "
                             f"{found}")
        if self.reuses_features and not self.layout.features_manifest.exists():
            raise MissingInputError(f"{cfg.source}: features.from_run = {cfg.features.from_run!r} holds no feature set "
                                    f"({self.layout.features_manifest} not found); build it with that run's config")
        made_here = {self.layout.crossencoder_model.resolve(), self.layout.biencoder_model.resolve()}
        models = [(f"features.extractors.{ext.name}.model", ext.model_id(), ext) for ext in self.extractors]
        if not self.letor:
            models.append(("retrieval.dense.model", cfg.retrieval.dense.model, None))
        for key, model, ext in models:
            local = ext.local_path(model) if ext is not None else model
            if model and looks_local(model) and not Path(local).expanduser().exists() \
                    and Path(model).resolve() not in made_here:
                raise MissingInputError(
                    f"{cfg.source}: {key} = {model!r} is a local path that does not exist (and no step of this run "
                    f"makes it: `finetune-ce` writes {self.layout.crossencoder_model}, `finetune-be` "
                    f"{self.layout.biencoder_model})")
        return self

    def missing(self, path: Path, command: str) -> MissingInputError:
        return MissingInputError(f"{path} not found: run `fusion-ltr {command} --config {self.cfg.source}` first")

    # ------------------------------------------------------------------ data
    @cached_property
    def dataset(self):
        """The BEIR dataset (corpus, queries, qrels), parsed once per run."""
        self.needs_documents("loading the documents")
        return load_beir(self.cfg.dataset.name)

    @cached_property
    def letor_fold(self):
        from retrieval.data import load_letor_fold

        return load_letor_fold(self.cfg.dataset.name, self.cfg.dataset.fold)

    @property
    def train_splits(self) -> list[str]:
        return [s for s in self.cfg.dataset.splits if s != self.cfg.dataset.test_split]

    def qids(self, splits) -> list[str]:
        return sorted({q for s in splits for q in self.dataset.split(s)[0][QID]})

    @property
    def test_qids(self) -> set[str]:
        test = self.cfg.dataset.test_split
        return set(self.dataset.split(test)[0][QID]) if test in self.dataset.qrels else set()

    # ------------------------------------------------------------------ extractors
    @cached_property
    def extractors(self) -> list:
        """The configured extractors, in config order, unfitted; for a config that reuses another run's
        features, the extractors that built them (from that run's features manifest)."""
        tables = self.cfg.features.extractors
        if self.reuses_features and self.layout.features_manifest.exists():
            tables = json.loads(self.layout.features_manifest.read_text()).get("extractor_configs") or tables
        return [fbase.create(name, params) for name, params in tables.items()]

    @cached_property
    def fitted_extractors(self) -> list:
        """The extractors fitted on the corpus (once per run); those that read the interaction log with
        their snapshot (:attr:`log_readers`)."""
        for ext in self.extractors:
            ext.fit(self.dataset.corpus)
        self.log_readers
        return self.extractors

    @cached_property
    def log_readers(self) -> list:
        """The extractors that read the interaction log (:class:`features.base.ReadsLog`), with the snapshot
        `fusion-ltr features` took (none yet: `features` takes it)."""
        readers = [e for e in self.extractors if isinstance(e, fbase.ReadsLog)]
        for ext in readers:
            try:
                ext.load_state(self.layout.extractor_state)
            except MissingInputError:
                pass
        return readers

    def leaked_queries(self, test_qids) -> set[str]:
        """Queries the ranker must not learn from: those any extractor's model was trained on (a
        :class:`features.base.TrainedOnQueries` extractor). A test query among them is an error."""
        trained = fbase.trained_qids(self.extractors)
        if not self.letor:  # an in-domain dense retriever's queries: its lists feed the first-stage features
            from features.model_folders import trained_qids

            dense = Path(self.cfg.retrieval.dense.model)
            trained |= trained_qids(dense) if dense.exists() else set()
        overlap = trained & {str(q) for q in test_qids}
        if overlap:
            owners = [e.name for e in self.extractors if isinstance(e, fbase.TrainedOnQueries)
                      and overlap & e.trained_qids()]
            models = [e.model_id() for e in self.extractors if e.name in owners]
            raise UsageError(f"the {', '.join(owners)} model {', '.join(map(str, models))} was trained on "
                             f"{len(overlap)} test query(ies) (e.g. {sorted(overlap)[:3]}): its scores on the test "
                             "split would be leaked")
        return trained

    def stage_of(self, ext) -> int:
        """The cascade stage (0-based) an extractor runs in; 0 without a cascade."""
        from .model import entry_stage

        return entry_stage(list(ext.FEATURES), [s.features for s in self.cfg.ranker.cascade])

    @property
    def deferred(self) -> list:
        """Extractors the cascade computes only for the documents that reach their stage (not in the
        plain feature build)."""
        return [e for e in self.extractors if self.stage_of(e) > 0]

    @property
    def top_n(self) -> dict[str, int]:
        """Feature -> its extractor's current ``top_n`` (stored values below it are masked)."""
        return {name: e.top_n for e in self.extractors for name in e.FEATURES if e.top_n is not None}

    def check_built(self, manifest: dict) -> None:
        """Refuse a feature set built with other extractors than the config names (added, removed, other
        parameters, other code, a model retrained in place): the steps after ``features`` read the built
        values, so a config edited since would otherwise be ignored without a word."""
        built = manifest.get("extractor_configs")
        if self.reuses_features or built is None:  # another run's extractors, or a manifest from before
            return
        code = {n: p.get("code_version") for n, p in manifest.get("extractors", {}).items()}
        versions = {f["name"]: f["version"] for f in manifest["features"]}
        configured = {e.name: e for e in self.extractors}
        changes = [f"{n}: configured, not built" for n in configured if n not in built]
        changes += [f"{n}: built, no longer configured" for n in built if n not in configured]
        for name, ext in configured.items():
            if name not in built:
                continue
            try:
                params = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in ext.param_changes(built[name]).items())
            except fbase.ConfigError as err:
                params = f"built with {built[name]}, no longer a valid table ({err})"
            if params:
                changes.append(f"{name}: {params}")
            elif code.get(name, ext.CODE_VERSION) != ext.CODE_VERSION:
                changes.append(f"{name}: built by code version {code[name]}, this code is {ext.CODE_VERSION}")
            elif ext.model_id() is not None:  # the model's content is in the version: retrained in place
                changes += [f"{s.name} ({name}): built {versions[s.name]}, configured {s.version} (its model "
                            "changed)" for s in ext.specs if versions.get(s.name, s.version) != s.version]
        if changes:
            raise UsageError(f"{self.cfg.source}: the feature set in {self.layout.features} was built otherwise than "
                             f"configured ({'; '.join(changes)}); run `fusion-ltr features --config "
                             f"{self.cfg.source}` (values already stored are reused)")

    def features_changed(self) -> None:
        """Values or costs were written to the store since the feature set and matrices were read (a
        feature build, a cascade computing its deferred extractors): read them again on next use."""
        for name in ("feature_set", "matrices"):
            self.__dict__.pop(name, None)

    # ------------------------------------------------------------------ the cascade's inputs
    def feature_source(self):
        """Where a cascade of this run reads and computes its features (:class:`ranker.cascade.FeatureSource`)."""
        from .cascade import FeatureSource

        hidden = self.list_features if self.cfg.ranker.hide_ranks > 0 else []
        return FeatureSource(self.layout.store, self.cfg.features.candidates, self.fitted_extractors,
                             [e.name for e in self.deferred], self.top_n, self.progress,
                             hidden_features=hidden, hidden_queries=self.hidden_rank_queries)

    def stage_plan(self):
        """The cascade plan of this config (:func:`ranker.cascade.stage_plan`) over the built feature set, for
        the test split's median number of candidates. With a budget, the costs it needs are measured first
        where the store has none: a deferred extractor's on a sample of pairs, and with ``ranker.documents =
        "unseen"`` the unseen path's."""
        import numpy as np

        from .cascade import stage_plan

        rcfg = self.cfg.ranker
        if rcfg.budget_ms > 0:
            self._measure_deferred_costs()
        if rcfg.budget_ms > 0 and rcfg.documents == "unseen":
            self._measure_unseen_costs({f for s in rcfg.cascade for f in s.features})
        n_docs = float(np.median(self.matrices.test.group))
        return stage_plan(rcfg, self.feature_set, n_docs, self.log)

    def _measure_deferred_costs(self) -> None:
        """Compute each deferred extractor without a stored cost (a first run: the feature build skipped it)
        for a sample of the test queries' best-ranked pairs, the documents a later stage reaches, so the
        budget is planned with its cost (the values are stored, as the cascade would store them)."""
        from features.build import UNSEEN_SAMPLE, build

        deferred = {e.name for e in self.deferred}
        if not deferred:
            return
        with FeatureStore(self.layout.store) as store:
            todo = [e for e in self.fitted_extractors if e.name in deferred and store.cost(e.specs)["pairs"].sum() == 0]
            if not todo:
                return
            pairs = store.pairs(sorted(self.test_qids), retriever=self.cfg.features.candidates)
            sample = pairs.sort_values(["rank", "qid"], kind="stable").iloc[:UNSEEN_SAMPLE]
            for ext in todo:
                self.log(f"ranker.budget_ms: measuring {ext.name}'s cost on {len(sample)} pairs (none stored yet)")
                ext.compute(sample.iloc[:8])  # untimed: a model loaded on first use, first-call overheads
                build(store, sample, [ext], progress=False)
        self.__dict__.pop("feature_set", None)  # read the costs again

    def _measure_unseen_costs(self, features: set[str]) -> None:
        """Measure the "unseen" path cost of the extractors of ``features`` that compute more for unseen
        documents and have none stored yet (a store built before path costs existed)."""
        from features.build import UNSEEN_SAMPLE, measure_unseen

        exts = [e for e in self.extractors if e.costs_more_unseen and features & set(e.FEATURES)]
        if not exts:
            return
        with FeatureStore(self.layout.store) as store:
            todo = [e for e in exts if len(store.path_cost(e.specs, UNSEEN)) < len(e.specs)]
            if todo:
                pairs = store.pairs(sorted(self.test_qids), retriever=self.cfg.features.candidates)
                for ext in [e for e in self.fitted_extractors if e in todo]:
                    self.log(f"measuring {ext.name}'s cost for unseen documents on "
                             f"{min(len(pairs), UNSEEN_SAMPLE)} pairs")
                    measure_unseen(store, pairs, ext)
                self.__dict__.pop("feature_set", None)  # read the costs again

    # ------------------------------------------------------------------ ranker data
    @cached_property
    def feature_set(self) -> FeatureSet:
        """The built feature set (from the features manifest), restricted to ``ranker.features``."""
        wanted = list(self.cfg.ranker.features)
        if self.letor:
            if self.cfg.ranker.normalize:
                raise UsageError(f"{self.cfg.source}: ranker.normalize applies to a run's stored features; LETOR "
                                 "sets come with their own (MQ2008's QueryLevelNorm is normalised per query)")
            names = wanted or self.letor_fold[0].feature_names
            return FeatureSet([fbase.FeatureSpec(n, "letor") for n in names], {n: n for n in names}, {})
        path = self.layout.features_manifest
        if not path.exists():
            raise self.missing(path, "features")
        manifest = json.loads(path.read_text())
        self.check_built(manifest)
        specs = [fbase.FeatureSpec(f["name"], f["version"], f.get("description", "")) for f in manifest["features"]]
        known = {s.name: s for s in specs}
        unknown = [n for n in self.cfg.ranker.normalize if n not in known]
        if unknown:
            raise UsageError(f"ranker.normalize names {unknown}, not in the built feature set {list(known)}")
        derived = {n: query_norm.spec(n, known[query_norm.split(n)[0]])
                   for n in query_norm.derived_names(self.cfg.ranker.normalize)}
        if wanted:
            unknown = [n for n in wanted if n not in known and n not in derived]
            if unknown:
                hint = ("; a derived feature needs its source in ranker.normalize" if any(query_norm.split(n) for n in
                                                                                      unknown) else "")
                raise UsageError(f"ranker.features names {unknown}, not in the built feature set "
                                 f"{list(known) + list(derived)}{hint}")
            specs = [known.get(n) or derived[n] for n in wanted]
        else:
            specs = specs + list(derived.values())
        raw_specs = [known[n] for n in query_norm.raw_names([s.name for s in specs])]
        extractor_of = {f["name"]: f["extractor"] for f in manifest["features"]}
        extractor_of |= {n: extractor_of[query_norm.split(n)[0]] for n in derived}
        with FeatureStore(self.layout.store, read_only=True) as store:
            share = store.cost(raw_specs).groupby("feature")["s_per_1000_pairs"].sum().to_dict()
            unseen = {**share, **store.path_cost(raw_specs, UNSEEN)}

        def per_extractor(share):  # an extractor's features share its cost: its total, per feature
            return {n: sum(share.get(m, 0.0) for m, e2 in extractor_of.items() if e2 == e)
                    for n, e in extractor_of.items()}

        return FeatureSet(specs, extractor_of, per_extractor(share), per_extractor(unseen), raw_specs)

    @cached_property
    def matrices(self) -> Matrices:
        """train / valid / test matrices of the feature set, built once per run."""
        specs = self.feature_set.specs
        names = [s.name for s in specs]
        if self.letor:
            from .data import from_letor, qrels_of

            train, valid, test = (from_letor(d).select(names) for d in self.letor_fold)
            return Matrices(train, valid, test, qrels_of(test), [])
        cfg = self.cfg
        test_q, test_qrels = self.dataset.split(cfg.dataset.test_split)
        leaked = self.leaked_queries(test_q[QID])
        train = valid = None
        raw = self.feature_set.raw_specs
        columns = query_norm.raw_names(names) + [n for n in names if query_norm.split(n)]
        with FeatureStore(self.layout.store, read_only=True) as store:
            def matrix(qids):  # the stored features, then the derived ones over each query's candidates
                data = store.matrix(raw, qids, retriever=cfg.features.candidates, top_n=self.top_n)
                return query_norm.add(data, columns)

            test = matrix(test_q[QID])
            if self.train_splits and not cfg.ranker.cv_folds:
                train_q = sorted(set(self.qids(self.train_splits)) - leaked)
                fit_q, valid_q = hash_split(train_q, cfg.ranker.valid_fraction, cfg.ranker.base_params.seed, salt="valid:")
                train = matrix(fit_q)
                valid = matrix(valid_q) if valid_q else None
                clicks = cfg.labels.source == "clicks"
                at_time, new = None, set()
                if self.log_readers and (clicks or cfg.ranker.hide_history > 0):  # feedback features: values
                    # at each impression's time, and some queries learn as new ones (ranker.hide_history)
                    from .labels import point_in_time

                    at_time = point_in_time(store, self.log_readers, [s.name for s in raw], current=clicks)
                    new = self.new_history_queries(train_q) if at_time else set()
                if clicks:  # the training queries' labels from the interaction log
                    from .labels import click_matrix

                    train, depth = click_matrix(store, train, cfg.labels, log=self.log, at_time=at_time,
                                                new_queries=new)
                    if valid is not None:
                        valid, _ = click_matrix(store, valid, cfg.labels, log=self.log, required=False,
                                                at_time=at_time, new_queries=new)
                    return Matrices(train, valid, test, test_qrels, sorted(leaked), depth)
                if new:
                    from .labels import as_new_queries

                    known = store.sql("SELECT qid, query FROM queries")
                    texts = dict(zip(known["qid"].astype(str), known["query"]))
                    train, valid = (as_new_queries(d, at_time, new, texts) for d in (train, valid))
        return Matrices(train, valid, test, test_qrels, sorted(leaked))

    @property
    def list_features(self) -> list[str]:
        """The feature set's first-stage list features (ranks and scores in the candidate lists): what an app
        may or may not give with its documents."""
        fs = self.feature_set
        return [n for n in fs.names if fs.extractor_of.get(n) == "first_stage"]

    @property
    def for_apps(self) -> bool:
        """The model reranks apps' own lists (``ranker.documents = "unseen"`` or ``ranker.hide_ranks``): it
        is validated and evaluated also on lists given in another order without ranks."""
        return not self.letor and (self.cfg.ranker.documents == "unseen" or self.cfg.ranker.hide_ranks > 0)

    def hidden_rank_queries(self, qids, share: float | None = None) -> set[str]:
        """The training queries (of ``qids``) whose list features are hidden while the models learn
        (``ranker.hide_ranks``, or ``share``: a seeded hash sample of that share)."""
        return self._query_share(qids, self.cfg.ranker.hide_ranks if share is None else share, "hide-ranks:")

    def _query_share(self, qids, share: float, salt: str) -> set[str]:
        """A seeded hash sample of ``share`` of ``qids`` (the same queries whatever their order)."""
        qids = sorted({str(q) for q in qids})
        if share <= 0 or not qids:
            return set()
        return set(qids) if share >= 1 else set(hash_split(qids, share, self.cfg.ranker.base_params.seed, salt=salt)[1])

    def new_history_queries(self, qids) -> set[str]:
        """The training queries (of ``qids``) whose feedback features are those of a query never seen while the
        models learn (``ranker.hide_history``: a seeded hash sample of that share)."""
        return self._query_share(qids, self.cfg.ranker.hide_history, "hide-history:")

    def hide_ranks(self, data):
        """``data`` (training rows) with the list features hidden for :meth:`hidden_rank_queries`."""
        if data is None or self.cfg.ranker.hide_ranks <= 0:
            return data
        return data.masked(self.list_features, self.hidden_rank_queries(data.unique_qids))

    def model_params(self, name: str):
        """A model's own fixed settings: a variant's ``params`` (``lambdamart[<v>]``), else None (the
        ranker's settings, ``[ranker.params]`` or ``auto``)."""
        variant = variant_of(name)
        return self.cfg.ranker.variant_params(variant) if variant is not None else None

    def models(self) -> dict[str, list[str]]:
        """Model name -> its features: ``lambdamart`` on the whole set, ``lambdamart[<v>]`` per variant."""
        names = self.feature_set.names
        models = {"lambdamart": names}
        for variant in self.cfg.ranker.variants:
            feats = self.cfg.ranker.variant_features(variant)
            unknown = [f for f in feats if f not in names]
            if unknown:
                raise UsageError(f"ranker.variants.{variant} names {unknown}, not in the feature set {names}")
            models[f"lambdamart[{variant}]"] = list(feats)
        return models
