"""Cascade ranking: cheap features on every candidate, costly ones only where they can change the top.

``[[ranker.cascade]]`` lists stages; each adds features to the previous stages' and keeps ``keep``
documents per query for the next. Stage k is a LambdaMART trained on the documents that reach it.
Which training documents reach a stage is decided by the previous stage's model applied out of fold
(query-level cross-fitting: a query's own labels never decide its membership), so training sees what
serving will see; test and served documents reach a stage by the previous stage's final model.
Extractors whose features all enter at a later stage are *deferred*: the feature build skips them, and
the cascade computes them (into the store, cached as always) only for the documents that reach their
stage, so a later change of ``keep`` computes only what is new.

A document's final position: documents that reached a deeper stage rank above those dropped earlier;
within a stage, by that stage's score. As one number (for TREC files and ``Result.score``-free
sorting): ``depth + sigmoid(score)``. A trained cascade is a model folder ``model/`` whose manifest has
``kind = "fusion-ltr cascade"``, a ``stageN/`` LambdaMART folder per stage and ``training_depth.tsv.gz``
(the deepest stage each training document reached: what each stage learned from, for the report).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features import query_norm
from features.build import build
from features.matrix import RankingData
from features.store import FeatureStore
from retrieval.data import hash_sample
from retrieval.errors import UsageError

from .lambdamart import LambdaMART, cross_val_predict
from .layout import replaced_atomically
from .model import CASCADE, FORMAT, RankingModel, Scored, Stage, entry_stage, first_stage_scores, narrow, rows

TRAINING_DEPTH = "training_depth.tsv.gz"


@dataclass
class FeatureSource:
    """Where a cascade's features come from (what training reads besides the matrices): the feature
    ``store``, the ``candidates`` list, the fitted ``extractors`` (those named in ``deferred`` run only for
    the documents that reach their stage, computed here into the store), ``top_n`` masks of stored values
    (feature -> its extractor's ``top_n``), and whether to show progress."""

    store: Path
    candidates: str
    extractors: list
    deferred: list[str]
    top_n: dict[str, int] = field(default_factory=dict)
    progress: bool = True
    # list features hidden while the stages learn, for the training queries ``hidden_queries(qids)`` returns
    # (``ranker.hide_ranks``); never for the queries only passed through
    hidden_features: list[str] = field(default_factory=list)
    hidden_queries: object = None


def plan(ranker, feature_set, n_docs: float, log=print) -> tuple[list[list[str]], list[int], dict]:
    """The features each stage adds and the keep values of ``ranker.cascade`` (a :class:`RankerConfig`):
    as configured, or, with ``ranker.budget_ms``, planned to fit it by ``feature_set``'s costs for
    ``ranker.documents`` (:func:`place`, then :func:`choose_keeps`), for ``n_docs`` candidates a query.
    Also what was planned, for the manifest: the costs per document and the predicted ms per query (without
    a budget: of the plan as configured; empty while an extractor has no stored cost)."""
    added = [list(s.features) for s in ranker.cascade]
    keeps = [s.keep for s in ranker.cascade]
    cost = feature_set.cost_for(ranker.documents)  # feature -> its extractor's s per 1,000 pairs = ms per pair
    ext_of = feature_set.extractor_of
    entry = {}  # extractor -> the stage it runs in (where its first feature enters)
    for k, names in enumerate(added):
        for f in names:
            entry.setdefault(ext_of[f], k)
    stage_exts = [[e for e, k0 in entry.items() if k0 == k] for k in range(len(added))]
    ms = {ext_of[f]: cost.get(f) for names in added for f in names}
    n = float(n_docs)
    missing = [e for e, c in ms.items() if not c]
    if missing:
        if ranker.budget_ms > 0:
            log("ranker.budget_ms: no stored cost yet for " + ", ".join(missing) + "; using the configured stages "
                "and keeps")
        return added, keeps, {}
    if ranker.budget_ms <= 0:  # the plan as configured; its cost by the stored costs, reported beside it
        per_doc = [sum(ms[e] for e in exts) for exts in stage_exts]
        predicted = predicted_ms(keeps[:-1], per_doc[1:], per_doc[0] * n)
        log(f"cascade as configured ({ranker.documents} documents): keeps {keeps[:-1]}, predicted "
            f"{predicted:.1f} ms per query by the stored costs (" + ", ".join(
                f"{e} {c:.3g} ms" for e, c in ms.items()) + " a document)")
        return added, keeps, {"budget_ms": 0, "documents": ranker.documents, "moved": {}, "ms_per_doc": ms,
                              "predicted_ms": predicted}
    placed = place(stage_exts, ms, [n] + keeps[:-1], ranker.budget_ms)
    per_doc = [sum(ms[e] for e in exts) for exts in placed]
    keeps = choose_keeps(keeps[:-1], per_doc[1:], per_doc[0] * n, ranker.budget_ms) + [0]
    placed_at = {e: k for k, exts in enumerate(placed) for e in exts}
    moved = {e: k + 1 for e, k in placed_at.items() if k != entry[e]}
    moved_added = [[] for _ in added]
    for k, names in enumerate(added):  # a moved extractor's features enter where it now runs
        for f in names:
            moved_added[max(k, placed_at[ext_of[f]])].append(f)
    added = moved_added
    predicted = predicted_ms(keeps[:-1], per_doc[1:], per_doc[0] * n)
    log(f"ranker.budget_ms = {ranker.budget_ms:g} ({ranker.documents} documents): "
        + (", ".join(f"{e} moved to stage {k}" for e, k in moved.items()) + "; " if moved else "")
        + f"keeps {keeps[:-1]} (predicted {predicted:.1f} ms per query by the stored costs)")
    return added, keeps, {"budget_ms": ranker.budget_ms, "documents": ranker.documents, "moved": moved,
                          "ms_per_doc": ms, "predicted_ms": predicted}


#: A move must save at least this share of the budget: moving an extractor that costs little strips the
#: earlier stage of a feature for nothing (the keep values are the knob for small savings).
MOVE_MIN_SHARE = 0.1


def place(stage_extractors: list[list[str]], ms_per_doc: dict[str, float], docs: list[float],
          budget_ms: float) -> list[list[str]]:
    """Cost-aware placement: while the cascade's predicted cost (each stage's extractors' ms per document
    times the documents reaching it, ``docs[k]``) exceeds ``budget_ms``, the extractor whose move to the
    next stage saves the most moves there, if that saves at least :data:`MOVE_MIN_SHARE` of the budget;
    never a stage's last extractor, never out of the last stage. E.g. the bi-encoder, which must encode
    each of an app's documents, leaves the stage that sees every candidate for one that sees few."""
    stages = [list(s) for s in stage_extractors]

    def cost() -> float:
        return sum(d * sum(ms_per_doc[e] for e in exts) for d, exts in zip(docs, stages))

    while cost() > budget_ms:
        moves = [(ms_per_doc[e] * (docs[k] - docs[k + 1]), k, e) for k in range(len(stages) - 1)
                 if len(stages[k]) > 1 for e in stages[k]]
        moves = [m for m in moves if m[0] >= MOVE_MIN_SHARE * budget_ms]
        if not moves:
            break
        _, k, e = max(moves, key=lambda m: (m[0], -m[1]))  # the largest saving; on a tie, the earliest stage
        stages[k].remove(e)
        stages[k + 1].append(e)
    return stages


def training_depth(path: str | Path, data: RankingData) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``data`` (training queries), the deepest stage (0-based) it reached when the
    cascade at ``path`` was trained (-1 for rows it did not train on) and the score that stage started
    from (NaN for the first stage)."""
    saved = pd.read_csv(Path(path) / TRAINING_DEPTH, sep="\t", dtype={"qid": str, "docno": str})
    found = dict(zip(zip(saved["qid"], saved["docno"]), zip(saved["depth"], saved["base"])))
    pairs = [found.get((str(q), str(d)), (-1, np.nan)) for q, d in zip(data.qids, data.docnos)]
    return np.array([p[0] for p in pairs], dtype=int), np.array([p[1] for p in pairs], dtype=float)


@dataclass
class StagePlan:
    """What each stage adds (``added``), keeps and sees (``cumulative``), as configured or planned to a
    budget (``planned``: what was planned), with the features' specs and the stored ones to read."""
    added: list[list[str]]
    keeps: list[int]
    planned: dict
    cumulative: list[list[str]]
    specs: list
    raw_specs: list


def stage_plan(ranker, feature_set, n_docs: float, log=print) -> StagePlan:
    """The cascade plan (see :func:`plan`) over ``feature_set``; a stage naming an unbuilt feature is refused."""
    spec = {s.name: s for s in feature_set.specs}
    unknown = [n for s in ranker.cascade for n in s.features if n not in spec]
    if unknown:
        raise UsageError(f"ranker.cascade names {unknown}, not in the built feature set {feature_set.names}")
    added, keeps, planned = plan(ranker, feature_set, n_docs, log)
    cumulative, names = [], []
    for features in added:
        names += features
        cumulative.append(list(names))
    raw = {s.name: s for s in feature_set.raw_specs}
    return StagePlan(added, keeps, planned, cumulative, [spec[n] for n in names],
                     [raw[n] for n in query_norm.raw_names(names)])  # derived features: computed per stage


def fit(ranker, source: FeatureSource, staged: StagePlan, train_q, valid_q, test_q, params, log=print):
    """Train the stages of ``ranker.cascade`` (a :class:`RankerConfig`) on ``train_q`` (``valid_q`` among
    them: early stopping only) and pass ``test_q`` through them as they are trained, computing the deferred
    extractors' values (into ``source.store``) for the documents of either that reach their stage. Returns
    the stages, the per-stage report, the training matrix, each training row's depth and the score its
    deepest stage started from. ``params``: a :class:`LambdaMARTParams`, or a function of a stage's training
    rows that returns them (as :func:`ranker.tuning.settings` gives). The train step calls it on the run's
    split; ``benchmarks/cascade_cv.py`` on folds of training queries."""
    with FeatureStore(source.store) as store:
        return _fit(ranker, source, store, staged, list(train_q), set(valid_q), list(test_q), params, log)


def _fit(ranker, source, store, staged, train_q, valid_q, test_q, params, log):
    stages_cfg, added, keeps, cumulative = ranker.cascade, staged.added, staged.keeps, staged.cumulative
    folds = max(2, min(ranker.tune_folds, len(train_q)))
    extractors = {e.name: e for e in source.extractors}
    stages, report = [], []

    hidden = source.hidden_queries(train_q) if source.hidden_features else set()

    def read(qids, learn: bool = False):
        data = store.matrix(staged.raw_specs, qids, retriever=source.candidates, top_n=source.top_n)
        return data.masked(source.hidden_features, hidden) if learn and hidden else data

    train, test = read(train_q, learn=True), read(test_q)
    reach_tr, reach_te = np.ones(len(train.y), bool), np.ones(len(test.y), bool)
    depth_tr = np.zeros(len(train.y), dtype=int)  # deepest stage each training row reached (0-based)
    # the previous stage's cross-fitted score of each training row, and its final model's score of
    # each test row: a stage after the first boosts from it (LightGBM's init_score), so with few
    # queries it learns a correction and early stopping keeps the previous order where it has none
    base_tr, score_te = np.full(len(train.y), np.nan), np.full(len(test.y), np.nan)
    learners = list(train_q)  # the training queries this stage and the later ones learn from
    for k, stage_cfg in enumerate(stages_cfg):
        t = time.perf_counter()
        if stage_cfg.max_train_queries and len(learners) > stage_cfg.max_train_queries:
            learners = hash_sample(learners, stage_cfg.max_train_queries, ranker.base_params.seed)
            reach_tr &= np.isin(train.qids.astype(str), learners)
        depth_tr[reach_tr] = k
        new = [extractors[name] for name in source.deferred
               if entry_stage(list(extractors[name].FEATURES), added) == k]
        if new:  # compute the deferred extractors for the documents that reach this stage only
            reached = {(q, d) for data_, m in ((train, reach_tr), (test, reach_te))
                       for q, d in zip(data_.qids[m], data_.docnos[m])}
            pairs = store.pairs(train_q + test_q, retriever=source.candidates)
            pairs = pairs[[(q, d) in reached for q, d in zip(pairs["qid"], pairs["docno"])]]
            build(store, pairs, new, progress=source.progress)
            train, test = read(train_q, learn=True), read(test_q)
        part = rows(train, reach_tr, base_tr if k else None, cumulative[k])
        fit_q = [q for q in part.unique_qids if q not in valid_q]
        stage_params = ranker.stage_params(k) or (params(part) if callable(params) else params)
        model = LambdaMART.from_params(stage_params).fit(
            part.subset(fit_q), part.subset(sorted(valid_q & set(part.unique_qids))) if valid_q else None)
        stages.append(Stage(model, cumulative[k], keeps[k]))
        info = {"stage": k + 1, "features": added[k], "keep": keeps[k],
                "train_queries": len(part.unique_qids), "train_rows": len(part.y), "test_rows": int(reach_te.sum()),
                "computed_here": [e.name for e in new]}
        keep = keeps[k]
        if keep and k < len(stages_cfg) - 1:
            oof = cross_val_predict(stage_params, part, folds, valid_fraction=ranker.valid_fraction,
                                    seed=stage_params.seed)
            base_tr[reach_tr] = oof
            reach_tr = narrow(reach_tr, part.group, oof, keep)  # cross-fitted membership
            test_part = rows(test, reach_te, score_te if k else None, cumulative[k])
            score_te[reach_te] = model.predict(test_part)
            reach_te = narrow(reach_te, test_part.group, score_te[reach_te], keep)
        info["seconds"] = time.perf_counter() - t
        report.append(info)
        log(f"cascade stage {k + 1}: {len(cumulative[k])} features on {info['train_rows']} training rows of "
            f"{info['train_queries']} queries"
            + (f", computed {info['computed_here']} here" if new else "")
            + (f", keeps {keeps[k]} per query" if keeps[k] else "") + f" ({info['seconds']:.1f}s)")
    return stages, report, train, depth_tr, base_tr


def score_stored(model: RankingModel, source: FeatureSource, specs, qids, *, ranked: bool = True,
                 list_features=(), seed: int = 0) -> tuple[Scored, RankingData]:
    """Score the candidates of ``qids`` with the trained ``model`` as the Scorer serves them, stage by stage,
    reading their features (of ``specs``, the feature set's raw ones) from the store and computing there the
    deferred extractors' missing values for the documents that reach their stage, as training does: a
    document that reaches a stage only in this view (e.g. of a validation query, or of a list without
    ranks) gets its costly features, never a NaN. ``ranked = False``: each query's candidates as an app's
    list sent in a seeded random order without ranks (:meth:`RankingModel.unranked`, over
    ``list_features``). Returns the scores and the data as the model saw it (every value computed, NaN where
    a document did not reach the feature's stage)."""
    qids = list(qids)
    used = set(query_norm.raw_names(model.feature_names))
    specs = [s for s in specs if s.name in used]  # of the feature set's stored specs, those the model reads
    extractors = {e.name: e for e in source.extractors}
    stage_features = [s.features for s in model.stages]
    with FeatureStore(source.store) as store:
        def read() -> RankingData:
            data = store.matrix(specs, qids, retriever=source.candidates, top_n=source.top_n)
            return data if ranked else model.unranked(data, list_features, seed=seed)

        data = read()
        pairs = store.pairs(qids, retriever=source.candidates)

        def stage_data(k, mask, base):
            nonlocal data
            new = [extractors[n] for n in source.deferred
                   if n in extractors and entry_stage(list(extractors[n].FEATURES), stage_features) == k]
            if new:
                reached = set(zip(data.qids[mask], data.docnos[mask]))
                todo = pairs[[(q, d) in reached for q, d in zip(pairs["qid"], pairs["docno"])]]
                build(store, todo, new, progress=source.progress)  # only what the store lacks
                data = read()  # the same rows in the same order (the store sorts by qid, then rank)
            full = None if base is None else np.full(len(data.y), np.nan)
            if full is not None:
                full[mask] = base
            return rows(data, mask, full, model.stages[k].features)

        first = first_stage_scores(data) if ranked or not model.hides_ranks else None
        return model.run(stage_data, len(data.y), first), data


def train(ranker, source: FeatureSource, staged: StagePlan, train_q, valid_q, test_q, params, path: Path,
          extra: dict, save_state, log=print) -> dict:
    """Train the configured cascade (see :func:`fit`) and save it as the model folder ``path``; ``extra``
    goes into its manifest and ``save_state(folder)`` adds the extractors' corpus statistics."""
    stages, report, train_data, depth_tr, base_tr = fit(ranker, source, staged, train_q, valid_q, test_q, params, log)
    with replaced_atomically(path) as tmp:
        for k, stage in enumerate(stages):
            stage.model.save(tmp / f"stage{k + 1}")
        manifest = {"kind": CASCADE, "format": FORMAT,
                    "features": [{"name": s.name, "version": s.version} for s in staged.specs],
                    "stages": [{"folder": f"stage{k + 1}", "features": s.features, "keep": s.keep}
                               for k, s in enumerate(stages)], "report": report, "planned": staged.planned, **extra}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        # which training rows each stage learned from, and the score the deepest one started from
        pd.DataFrame({"qid": train_data.qids, "docno": train_data.docnos, "depth": depth_tr,
                      "base": np.where(depth_tr > 0, base_tr, np.nan)}).to_csv(
            tmp / TRAINING_DEPTH, sep="\t", index=False)
        save_state(tmp)
    return {"path": str(path), "stages": report}


KEEP_CHOICES = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


def predicted_ms(keeps, stage_ms_per_doc, first_ms: float) -> float:
    """Milliseconds per query by stored costs: the first stage's (every candidate), then each later
    stage's per-document cost times the documents the stage before it keeps."""
    return first_ms + sum(k * c for k, c in zip(keeps, stage_ms_per_doc))


def choose_keeps(configured: list[int], stage_ms_per_doc: list[float], first_ms: float,
                 budget_ms: float) -> list[int]:
    """The budget knob: ``keep`` values (one per stage but the last), each at most the configured one
    and not rising from stage to stage, whose predicted cost (:func:`predicted_ms`) stays within
    ``budget_ms``; among those, the ones that pass the most documents on (earlier stages first)."""
    if first_ms > budget_ms:
        raise UsageError(f"ranker.budget_ms = {budget_ms:g}: the first stage alone costs {first_ms:.1f} ms per query "
                         "by the stored costs")
    best = None
    options = [sorted({c for c in KEEP_CHOICES if c <= cap} | {cap}, reverse=True) for cap in configured]

    def search(prefix: list[int], i: int) -> None:
        nonlocal best
        if i == len(options):
            if predicted_ms(prefix, stage_ms_per_doc, first_ms) <= budget_ms and (best is None or prefix > best):
                best = list(prefix)
            return
        for keep in options[i]:
            if prefix and keep > prefix[-1]:
                continue
            search(prefix + [keep], i + 1)

    search([], 0)
    if best is None:
        raise UsageError(f"ranker.budget_ms = {budget_ms:g}: no keep values fit (even keeping 1 document per stage "
                         f"costs {predicted_ms([1] * len(configured), stage_ms_per_doc, first_ms):.1f} ms)")
    return best
