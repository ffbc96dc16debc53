"""Serving: rerank an app's candidates with a trained run, computing features with the training code.

    from ranker import Scorer

    scorer = Scorer.load("runs/scifact")
    for r in scorer.rerank("do statins lower LDL?", ["doc text one", "doc text two"]):
        print(r.rank, round(r.score, 3), r.text[:60])

:meth:`Scorer.load` rebuilds the extractors from the model's manifest (the configs it was trained
with), loads the corpus statistics saved beside the booster, and refuses to serve when any feature's
version differs from the one the model learned from (a changed model, parameter or code). Models
load on first use and stay resident. Features go through :func:`features.build.compute`, the code
path the offline feature build uses, so a (query, document) pair gets the same values in both.

First-stage signals: ``fs_rank`` / ``fs_score`` come from each doc's ``rank`` / ``score`` (its
position and NaN when not given; for a model trained with ``ranker.hide_ranks``, both NaN when no doc
carries a rank or a score: the order of the list is then not taken as a first-stage signal); a member retriever's ``rank_<r>`` / ``score_<r>`` are NaN unless
the doc carries those keys, or :meth:`Scorer.search` retrieved it (it reproduces the run's
first stage exactly). LightGBM and XGBoost route NaN as "missing", as for a document outside a
retriever's list in training.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features import base as fbase
from features import query_norm
from features.build import compute, feature_specs
from features.store import RankingData
from retrieval.errors import MissingInputError, UsageError
from retrieval.frames import DOCNO, QID, QUERY, RANK, SCORE, TEXT, TITLE

from .documents import QUERY_ID, candidate_frame, check_docs, check_min_score, check_query, check_top_k

from . import tracing
from .model import CONTENT, RankingModel, Scored

log = logging.getLogger("fusion_ltr.scorer")



@dataclass
class Result:
    """One reranked document."""

    id: str
    score: float  # the ranker's score (higher is better)
    rank: int  # 1-based rank after reranking
    original_rank: int  # the doc's first-stage rank (its ``rank``, else its position in the input)
    text: str
    title: str = ""
    features: dict[str, float] | None = None  # explain=True: each feature's value (NaN = not computed)
    contributions: dict[str, float] | None = None  # explain=True: SHAP per feature, plus "bias"
    stage: int | None = None  # a cascade: the (1-based) stage the doc last reached; ``score`` is that stage's
    # P(relevant) from the model's calibrator (fitted on validation queries at training, ranker.calibration);
    # None for a model trained without one
    probability: float | None = None


class Ranking(list):
    """A list of :class:`Result`, best first, with ``timing``: seconds per extractor (each computes
    the features listed in :attr:`Scorer.features_by_extractor`), ``ranker`` (the models), ``explain``,
    ``total``, and for a cascade ``stageN`` (computing stage N's features for the documents that reach it)."""

    def __init__(self, results: Iterable[Result] = (), timing: dict[str, float] | None = None):
        super().__init__(results)
        self.timing = timing or {}


class Scorer:
    """A trained ranking model (:class:`ranker.model.RankingModel`) and the extractors of its features,
    ready to rerank."""

    def __init__(self, model: RankingModel, extractors: list, *, run_dir: Path | None = None):
        #: The ranking model: its stages, the first-stage guard's decision and its calibrator.
        self.model = model
        self.extractors = extractors
        self.run_dir = Path(run_dir) if run_dir else None
        self.manifest = model.manifest
        self.candidates = self.manifest.get("candidates", "hybrid")
        specs = {s.name: s for s in feature_specs(extractors)}
        self._raw_version = {n: s.version for n, s in specs.items()}
        names = model.feature_names
        specs |= {n: query_norm.spec(n, specs[query_norm.split(n)[0]]) for n in names
                  if query_norm.split(n) and query_norm.split(n)[0] in specs}  # derived from a computed one
        missing = [n for n in names if n not in specs]
        if missing:
            raise fbase.ConfigError(f"the model uses feature(s) {missing} that none of its extractors "
                                    f"({[e.name for e in extractors]}) produces")
        self.feature_names = list(names)
        self.feature_versions = [specs[n].version for n in self.feature_names]
        model.last.check_features(self.feature_names, self.feature_versions)  # refuses a changed feature
        self.features_by_extractor = {e.name: [s.name for s in e.specs] for e in extractors}
        #: Per stage, the extractors that run there (each where its features first enter; one stage for a
        #: plain model).
        self.stage_extractors = model.stage_extractors(extractors)
        #: The list features this model learned to do without (``ranker.hide_ranks``): hidden (NaN) for a
        #: request whose documents carry no rank or score, instead of taking their positions as the ranks.
        self.hidden_when_unranked = [n for n in self.manifest.get("hidden_when_unranked") or []
                                     if n in query_norm.raw_names(self.feature_names)]
        if model.serves != "model":
            log.warning("this model was not better than the first stage on held-out training queries; it serves "
                        "the %s order (ranker.guard)", model.serves)
        self._search = None
        self._warned = False  # the missing first-stage features warning is given once per Scorer

    @property
    def calibrator(self):
        """The map from the served score to P(relevant) (:class:`ranker.calibration.Calibrator`), or None."""
        return self.model.calibrator

    @property
    def stages(self):
        """A cascade's stages (:class:`ranker.model.Stage`), else None."""
        return self.model.stages if self.model.cascade else None

    def map_extractors(self, wrap) -> None:
        """Replace each extractor ``e`` by ``wrap(e)`` (e.g. the service's shared, micro-batched ones),
        in every stage; ``wrap`` returns an object that computes the same features."""
        wrapped = {id(e): wrap(e) for e in self.extractors}
        self.extractors = [wrapped[id(e)] for e in self.extractors]
        self.stage_extractors = [[wrapped[id(e)] for e in exts] for exts in self.stage_extractors]

    # ------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, run_dir: str | Path, *, model: str = "model", device: str | None = None) -> "Scorer":
        """The Scorer of a run folder (``<run_dir>/<model>``) or of a model folder itself.

        ``device`` overrides the extractors' device ("cpu", "cuda", ...); it never changes a value.
        """
        run_dir = Path(run_dir)
        model_dir = run_dir if (run_dir / "manifest.json").exists() else run_dir / model
        ranking = RankingModel.load(model_dir)  # its files checked first, before a native library reads one
        manifest = ranking.manifest
        if "extractors" not in manifest:
            raise UsageError(f"{model_dir}: the manifest names no extractors, so its features cannot be "
                             "computed at serving time (a model trained on precomputed features, e.g. LETOR)")
        root = _root(model_dir.parent, manifest)
        extractors = []
        for name, params in manifest["extractors"].items():
            params = dict(params)
            if device is not None and "device" in {f.name for f in dataclasses.fields(fbase.extractor_class(name).Params)}:
                params["device"] = device
            ext = fbase.create(name, params)
            ext.root = root
            if ext.has_corpus_state:
                ext.load_state(model_dir / "extractors")
            extractors.append(ext)
        used = set(ranking.feature_names)
        extractors = [e for e in extractors if used & {s.name for s in e.specs}]
        return cls(ranking, extractors, run_dir=model_dir.parent)

    # ------------------------------------------------------------------------------- serving
    def rerank(self, query: str, docs, *, top_k: int | None = None, explain: bool = False,
               min_score: float | None = None) -> Ranking:
        """Rerank ``docs`` (strings, :class:`Document`, or mappings with ``id``, ``text`` and optional
        ``title``, ``timestamp``, ``score``, ``rank``, ``rank_<r>``/``score_<r>``) for ``query``; best first.

        ``top_k`` keeps the best k; ``min_score`` drops results below it, compared with P(relevant) when the
        model is calibrated (``Result.probability``, as the service's ``relevance_score``), else with the
        raw ``score``; ``explain`` adds each
        feature's value and SHAP contribution. An empty ``docs`` gives an empty :class:`Ranking`.
        """
        t0 = time.perf_counter()
        query = check_query(query)
        docs = check_docs(docs)
        top_k, min_score = check_top_k(top_k), check_min_score(min_score)
        if not docs:
            return Ranking([], {"total": time.perf_counter() - t0})
        frame = candidate_frame(query, docs, self.candidates)
        hide = self.hidden_when_unranked if not frame.attrs.get("ranked", True) else []
        if not hide:
            self._warn_missing_first_stage(frame)
        return self._score(frame, t0, top_k, explain, min_score, hide=hide)

    def _warn_missing_first_stage(self, frame: pd.DataFrame) -> None:
        """Say once when the model learned from first-stage list features that the docs do not carry."""
        list_features = [n for n in self.feature_names if n.startswith(("rank_", "score_"))]
        missing = [n for n in list_features if n not in frame or frame[n].isna().all()]
        if SCORE in frame and frame[SCORE].isna().all() and "fs_score" in self.feature_names:
            missing.insert(0, "fs_score")
        if missing and not self._warned:
            self._warned = True
            warnings.warn(
                f"this model learned from first-stage features {missing} that these docs do not carry: they are "
                "NaN, which in training meant 'not retrieved by that retriever', so the order can suffer. Use "
                "search(), pass them with each doc, or load a model without them (e.g. Scorer.load(run, "
                "model='model-content') when the config trains that variant)", stacklevel=3)

    def search(self, query: str, top_k: int | None = 10, *, explain: bool = False, min_score: float | None = None,
               k: int | None = None) -> Ranking:
        """Retrieve the run's first-stage candidates for ``query`` from its index, then rerank them and
        keep the best ``top_k`` (``k`` is the old name of ``top_k``)."""
        if k is not None:
            warnings.warn("Scorer.search(k=...) is now top_k=..., as in rerank()", DeprecationWarning, stacklevel=2)
            top_k = k
        t0 = time.perf_counter()
        query = check_query(query)
        top_k, min_score = check_top_k(top_k), check_min_score(min_score)
        frame = self._retrieve(query)
        t1 = time.perf_counter()
        out = self._score(frame, t0, top_k, explain, min_score)
        out.timing = {"retrieve": t1 - t0, **out.timing}
        return out

    def features(self, query: str, docs) -> pd.DataFrame:
        """The model's feature matrix for ``docs`` (rows in input order, columns in model order). For a
        cascade: every feature on every document, as if each reached the last stage (a feature normalised
        per query, over all of ``docs``)."""
        frame = candidate_frame(check_query(query), check_docs(docs), self.candidates)
        values, _ = compute(frame, self.extractors)
        if not frame.attrs.get("ranked", True):  # as rerank() computes them
            values |= {n: np.full(len(frame), np.nan) for n in self.hidden_when_unranked}
        data = self._matrix(frame, values, np.arange(len(frame)), self.feature_names)
        return pd.DataFrame(data.X, index=frame[DOCNO].tolist(), columns=self.feature_names)

    def _matrix(self, frame: pd.DataFrame, values: dict, rows: np.ndarray, names: list[str],
                base: np.ndarray | None = None) -> RankingData:
        """The model matrix of ``frame``'s ``rows`` (one query, order kept) for ``names``: the computed
        features, and those normalised per query over these rows (:mod:`features.query_norm`), as offline."""
        raw = query_norm.raw_names(names)
        X = np.column_stack([values[n][rows] for n in raw])
        data = RankingData.from_arrays(X, np.zeros(len(X)), frame[QID].iloc[rows], frame[DOCNO].iloc[rows], raw,
                                       [self._raw_version[n] for n in raw], base)
        return query_norm.add(data, names)  # the model checks the names and versions again

    # ------------------------------------------------------------------------------- internals
    def score_frame(self, frame: pd.DataFrame, hide=()) -> tuple[Scored, dict, dict]:
        """Score candidate rows (one query or several, each query's rows together and queries in id order,
        as :func:`features.store.FeatureStore.pairs` gives them) the way the model serves them: each stage's
        extractors on the documents that reach it (:meth:`RankingModel.run`). Returns the scores, every
        feature's values (NaN where not computed; a derived one as its stage saw it) and the seconds per
        extractor and stage. ``hide``: features set to NaN (not given), as for a list without ranks."""
        n = len(frame)
        names = self.feature_names + query_norm.raw_names(self.feature_names)
        values = {name: np.full(n, np.nan) for name in names}
        timing = {}
        cascade = self.model.cascade
        spent = [0.0]  # seconds in stage_data: computing features, not the models

        def stage_data(k: int, mask: np.ndarray, base: np.ndarray | None) -> RankingData:
            with tracing.span("fusion_ltr.stage", stage=k + 1, documents=int(mask.sum())):
                t = time.perf_counter()
                rows = np.flatnonzero(mask)
                computed, seconds = {}, {}
                for ext in self.stage_extractors[k]:  # one at a time: a span each
                    with tracing.span("fusion_ltr.extractor", extractor=ext.name, pairs=len(rows)):
                        part, sec = compute(frame.iloc[rows], [ext])
                    computed |= part
                    seconds |= sec
                computed = {name: np.full(len(rows), np.nan) if name in hide else arr for name, arr in computed.items()}
                for name, arr in computed.items():
                    if name in values:
                        values[name][rows] = arr
                for name, sec in seconds.items():
                    timing[name] = timing.get(name, 0.0) + sec
                data = self._matrix(frame, values, rows, self.model.stages[k].features, base)
                for j, name in enumerate(data.feature_names):  # derived ones as this stage saw them (explain)
                    values[name][rows] = data.X[:, j]
                spent[0] += time.perf_counter() - t
                if cascade:
                    timing[f"stage{k + 1}"] = time.perf_counter() - t
                return data

        t = time.perf_counter()
        # a list without ranks has no first-stage order for the guard to fall back to: the model serves it
        first = None if hide else -frame[RANK].to_numpy(np.float64)
        scored = self.model.run(stage_data, n, first)
        timing["ranker"] = time.perf_counter() - t - spent[0]
        return scored, values, timing

    def _contributions(self, scored: Scored) -> dict[int, dict[str, float]]:
        """SHAP per feature of each row's deepest stage, plus "bias" (and "previous stages": the score a
        later stage started from)."""
        out = {}
        stages = [self.model.unranked_stage] if scored.serves == CONTENT else self.model.stages
        for k, (stage, mask, part) in enumerate(zip(stages, scored.masks, scored.parts)):
            c = stage.model.contributions(part)
            for j, i in enumerate(np.flatnonzero(mask)):
                out[int(i)] = {f: float(c[j, m]) for m, f in enumerate(stage.features)} | {"bias": float(c[j, -1])}
                if k:
                    out[int(i)]["previous stages"] = float(part.base[j])
        return out

    def _score(self, frame: pd.DataFrame, t0: float, top_k, explain: bool, min_score, hide=()) -> Ranking:
        scored, values, timing = self.score_frame(frame, hide)
        key, shown = scored.scores, scored.shown
        prob = self.model.probability(key, scored.serves)
        order = np.lexsort((np.arange(len(frame)), frame[RANK].to_numpy(), -key))
        if min_score is not None:
            order = order[self._thresholded(shown, prob)[order] >= min_score]
        if top_k is not None:
            order = order[:top_k]
        contrib = None
        if explain and scored.serves in ("model", CONTENT):
            t = time.perf_counter()
            contrib = self._contributions(scored)
            timing["explain"] = time.perf_counter() - t
        stage = scored.depth + 1 if self.model.cascade and scored.serves != CONTENT else None
        results = []
        for new_rank, i in enumerate(order, start=1):
            row = frame.iloc[i]
            results.append(Result(
                id=row[DOCNO], score=float(shown[i]), rank=new_rank, original_rank=int(row[RANK]), text=row[TEXT],
                title=row[TITLE], features={n: float(values[n][i]) for n in self.feature_names} if explain else None,
                contributions=contrib.get(int(i)) if contrib is not None else None,
                stage=int(stage[i]) if stage is not None else None,
                probability=float(prob[i]) if prob is not None else None))
        timing["total"] = time.perf_counter() - t0
        log.debug("reranked %d docs in %.3fs: %s", len(frame), timing["total"],
                  ", ".join(f"{k} {v * 1000:.1f}ms" for k, v in timing.items()))
        return Ranking(results, timing)

    @staticmethod
    def _thresholded(scores: np.ndarray, prob: np.ndarray | None) -> np.ndarray:
        """What ``min_score`` is compared with, in Python and over HTTP alike: P(relevant) when the model
        is calibrated (``Result.probability``, the service's ``relevance_score``), else the raw score."""
        return prob if prob is not None else scores

    def _retrieve(self, query: str) -> pd.DataFrame:
        """The run's first stage for one query, through the same :class:`retrieval.FirstStage` that
        `fusion-ltr retrieve` used (its recipe is in the model manifest)."""
        from retrieval import FirstStage, FirstStageConfig, load_beir

        recipe = self.manifest.get("retrieval")
        index = self.run_dir / "index" if self.run_dir else None
        source = self.manifest.get("features_from")
        if index is not None and not index.exists() and source:  # trained on another run's candidates
            index = (Path(source) if Path(source).is_absolute() else _root(self.run_dir, self.manifest) / source) / "index"
        if not recipe or index is None or not index.exists():
            raise MissingInputError(f"{index}: this run folder holds no retrieval index (expected index/ from "
                                    "`fusion-ltr retrieve`); use rerank() with your own candidates")
        if self._search is None:
            corpus_file = index / "corpus.parquet"
            corpus = pd.read_parquet(corpus_file) if corpus_file.exists() else load_beir(self.manifest["dataset"]).corpus
            first_stage = FirstStage.load(index, corpus, FirstStageConfig.from_dict(recipe),
                                          cache=self.manifest.get("embedding_cache") or None)
            for ext in self.extractors:
                if not ext.has_corpus_state:  # e.g. the bi-encoder reuses the corpus embeddings
                    ext.fit(corpus)
            self._search = (corpus, first_stage)
        corpus, first_stage = self._search
        queries = pd.DataFrame({QID: [QUERY_ID], QUERY: [query]})
        return first_stage.candidates(queries, corpus, self.candidates)


# ----------------------------------------------------------------------------------- helpers
def _root(run_dir: Path, manifest: dict) -> Path:
    """The directory the run was made from: the run folder minus its configured relative path when it
    ends with it (the project moved or is used from elsewhere), else the recorded working directory."""
    configured = Path(manifest.get("run_dir") or "")
    resolved = run_dir.resolve()
    n = len(configured.parts)
    if configured.parts and not configured.is_absolute() and resolved.parts[-n:] == configured.parts:
        return resolved.parents[n - 1]
    return Path(manifest.get("workdir") or Path.cwd())
