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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features import query_norm
from features.build import UNSEEN, UNSEEN_SAMPLE, build, measure_unseen
from features.matrix import RankingData
from features.store import FeatureStore
from retrieval.data import hash_sample
from retrieval.errors import UsageError

from .lambdamart import LambdaMART, cross_val_predict
from .layout import replaced_atomically

KIND = "fusion-ltr cascade"
# 2: each stage after the first boosts from the previous stage's score. A cascade of another format is
# refused (its stage scores combine differently); `run` retrains it (the format is in the train step's key).
FORMAT = 2
TRAINING_DEPTH = "training_depth.tsv.gz"


def rows(data: RankingData, mask: np.ndarray, base: np.ndarray | None = None, names=None) -> RankingData:
    """The rows of ``data`` where ``mask`` holds (order kept); ``base``: their starting scores (one per
    row of ``data``; default: the data's own); ``names``: the columns to keep, a derived feature
    (:mod:`features.query_norm`) computed over these rows: the documents that reach the stage."""
    base = data.base if base is None else base
    part = RankingData.from_arrays(data.X[mask], data.y[mask], data.qids[mask], data.docnos[mask],
                                   data.feature_names, data.feature_versions, None if base is None else base[mask])
    return part if names is None else query_norm.add(part, names)


def keep_top(group, scores: np.ndarray, keep: int) -> np.ndarray:
    """Per query (``group``: rows per query, in order), the ``keep`` best rows by score; ties go to the
    earlier row (the better first-stage rank)."""
    mask = np.zeros(len(scores), dtype=bool)
    start = 0
    for g in np.asarray(group, dtype=int):
        order = np.argsort(-scores[start:start + g], kind="stable")[:keep]
        mask[start + order] = True
        start += g
    return mask


def narrow(reach: np.ndarray, group, scores: np.ndarray, keep: int) -> np.ndarray:
    """The rows that reach the next stage: of the rows in ``reach`` (scored by ``scores`` in their order,
    ``group`` their rows per query), the ``keep`` best per query."""
    idx = np.flatnonzero(reach)
    out = np.zeros_like(reach)
    out[idx[keep_top(group, scores, keep)]] = True
    return out


def entry_stage(features, stage_features) -> int:
    """The (0-based) stage an extractor runs in: the first stage naming one of its ``features`` (or a
    feature derived from one); 0 when any of them is in no stage (it is built with the cheap ones)."""
    stage_features = [query_norm.raw_names(names) for names in stage_features]
    stages = [next((k for k, names in enumerate(stage_features) if f in names), None) for f in features]
    return 0 if not stages or None in stages else min(stages)


def final_scores(depth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """One sortable number per document: deeper stages first, then the stage's score."""
    return depth + 1.0 / (1.0 + np.exp(-np.clip(score, -50, 50)))


@dataclass
class Stage:
    model: LambdaMART
    features: list[str]  # cumulative: every feature of this stage and the ones before
    keep: int  # documents passed on (0: the last stage)


def apply(stages: list[Stage], data: RankingData) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Run ``data`` (the stored features of the cascade's, see :func:`rows`) through the stages: each row's depth (0-based stage
    it last reached), its score there, and the mask of rows reaching each stage. A stage after the first
    starts from the previous stage's score and adds its own model's (it was trained on top of it)."""
    reach = np.ones(len(data.y), dtype=bool)
    depth, score, masks = np.zeros(len(data.y)), np.full(len(data.y), np.nan), []
    for k, stage in enumerate(stages):
        masks.append(reach.copy())
        part = rows(data, reach, score if k else None, stage.features)
        s = stage.model.predict(part)
        depth[reach], score[reach] = k, s
        if stage.keep and k < len(stages) - 1:
            reach = narrow(reach, part.group, s, stage.keep)
    return depth, score, masks


def load(path: str | Path, manifest: dict | None = None) -> list[Stage]:
    """The stages of the cascade folder ``path`` (``manifest``: its manifest.json, when already read)."""
    manifest = manifest or json.loads((Path(path) / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{path}: a cascade of format {manifest.get('format', 1)}, this version reads format "
                         f"{FORMAT} (later stages boost from the earlier stage's score); retrain it with "
                         "`fusion-ltr train --config ...`")
    return [Stage(LambdaMART.load(Path(path) / s["folder"]), s["features"], s["keep"]) for s in manifest["stages"]]


def plan(run, stages_cfg) -> tuple[list[list[str]], list[int], dict]:
    """The features each stage adds and the keep values: as configured, or, with ``ranker.budget_ms``,
    planned to fit it by the store's costs for ``ranker.documents`` (:func:`place`, then
    :func:`choose_keeps`). Also what was planned, for the manifest (empty without a budget)."""
    rcfg = run.cfg.ranker
    added = [list(s.features) for s in stages_cfg]
    keeps = [s.keep for s in stages_cfg]
    if rcfg.budget_ms <= 0:
        return added, keeps, {}
    if rcfg.documents == "unseen":
        measure_unseen_costs(run, {f for names in added for f in names})
    fs = run.feature_set
    cost = fs.cost_for(rcfg.documents)  # feature -> its extractor's s per 1,000 pairs = ms per pair
    ext_of = fs.extractor_of
    entry = {}  # extractor -> the stage it runs in (where its first feature enters)
    for k, names in enumerate(added):
        for f in names:
            entry.setdefault(ext_of[f], k)
    stage_exts = [[e for e, k0 in entry.items() if k0 == k] for k in range(len(added))]
    ms = {ext_of[f]: cost.get(f) for names in added for f in names}
    if any(not c for c in ms.values()):
        run.log("ranker.budget_ms: no stored cost yet for " + ", ".join(e for e, c in ms.items() if not c)
                + "; using the configured stages and keeps")
        return added, keeps, {}
    n = float(np.median(run.matrices.test.group))
    placed = place(stage_exts, ms, [n] + keeps[:-1], rcfg.budget_ms)
    per_doc = [sum(ms[e] for e in exts) for exts in placed]
    keeps = choose_keeps(keeps[:-1], per_doc[1:], per_doc[0] * n, rcfg.budget_ms) + [0]
    placed_at = {e: k for k, exts in enumerate(placed) for e in exts}
    moved = {e: k + 1 for e, k in placed_at.items() if k != entry[e]}
    moved_added = [[] for _ in added]
    for k, names in enumerate(added):  # a moved extractor's features enter where it now runs
        for f in names:
            moved_added[max(k, placed_at[ext_of[f]])].append(f)
    added = moved_added
    predicted = predicted_ms(keeps[:-1], per_doc[1:], per_doc[0] * n)
    run.log(f"ranker.budget_ms = {rcfg.budget_ms:g} ({rcfg.documents} documents): "
            + (", ".join(f"{e} moved to stage {k}" for e, k in moved.items()) + "; " if moved else "")
            + f"keeps {keeps[:-1]} (predicted {predicted:.1f} ms per query by the stored costs)")
    return added, keeps, {"budget_ms": rcfg.budget_ms, "documents": rcfg.documents, "moved": moved,
                          "ms_per_doc": ms, "predicted_ms": predicted}


def measure_unseen_costs(run, features: set[str]) -> None:
    """Measure the "unseen" path cost of the extractors of ``features`` that compute more for unseen
    documents and have none stored yet (a store built before path costs existed)."""
    exts = [e for e in run.extractors if e.costs_more_unseen and features & set(e.FEATURES)]
    if not exts:
        return
    with FeatureStore(run.layout.store) as store:
        todo = [e for e in exts if len(store.path_cost(e.specs, UNSEEN)) < len(e.specs)]
        if todo:
            pairs = store.pairs(sorted(run.test_qids), retriever=run.cfg.features.candidates)
            for ext in [e for e in run.fitted_extractors if e in todo]:
                run.log(f"measuring {ext.name}'s cost for unseen documents on {min(len(pairs), UNSEEN_SAMPLE)} pairs")
                measure_unseen(store, pairs, ext)
            run.__dict__.pop("feature_set", None)  # read the costs again


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


def stage_plan(run) -> StagePlan:
    """The run's cascade plan (see :func:`plan`); a stage naming an unbuilt feature is refused."""
    fs = run.feature_set
    spec = {s.name: s for s in fs.specs}
    unknown = [n for s in run.cfg.ranker.cascade for n in s.features if n not in spec]
    if unknown:
        raise UsageError(f"ranker.cascade names {unknown}, not in the built feature set {fs.names}")
    added, keeps, planned = plan(run, run.cfg.ranker.cascade)
    cumulative, names = [], []
    for features in added:
        names += features
        cumulative.append(list(names))
    raw = {s.name: s for s in fs.raw_specs}
    return StagePlan(added, keeps, planned, cumulative, [spec[n] for n in names],
                     [raw[n] for n in query_norm.raw_names(names)])  # derived features: computed per stage


def fit(run, store: FeatureStore, staged: StagePlan, train_q, valid_q, test_q, params):
    """Train the stages on ``train_q`` (``valid_q`` among them: early stopping only) and pass ``test_q``
    through them as they are trained, computing the deferred extractors' values (into ``store``) for the
    documents of either that reach their stage. Returns the stages, the per-stage report, the training
    matrix, each training row's depth and the score its deepest stage started from. ``params``: a
    :class:`LambdaMARTParams`, or a function of a stage's training rows that returns them (as
    :func:`ranker.tuning.settings` gives). :func:`train` calls it on the run's split;
    ``benchmarks/cascade_cv.py`` on folds of training queries."""
    cfg, log = run.cfg, run.log
    stages_cfg, added, keeps, cumulative = cfg.ranker.cascade, staged.added, staged.keeps, staged.cumulative
    folds = max(2, min(cfg.ranker.tune_folds, len(train_q)))
    extractors = {e.name: e for e in run.fitted_extractors}
    stages, report = [], []

    def read(qids):
        return store.matrix(staged.raw_specs, qids, retriever=cfg.features.candidates, top_n=run.top_n)

    train, test = read(train_q), read(test_q)
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
            learners = hash_sample(learners, stage_cfg.max_train_queries, cfg.ranker.base_params.seed)
            reach_tr &= np.isin(train.qids.astype(str), learners)
        depth_tr[reach_tr] = k
        new = [extractors[e.name] for e in run.deferred if entry_stage(list(e.FEATURES), added) == k]
        if new:  # compute the deferred extractors for the documents that reach this stage only
            reached = {(q, d) for data_, m in ((train, reach_tr), (test, reach_te))
                       for q, d in zip(data_.qids[m], data_.docnos[m])}
            pairs = store.pairs(train_q + test_q, retriever=cfg.features.candidates)
            pairs = pairs[[(q, d) in reached for q, d in zip(pairs["qid"], pairs["docno"])]]
            build(store, pairs, new, progress=run.progress)
            train, test = read(train_q), read(test_q)
        part = rows(train, reach_tr, base_tr if k else None, cumulative[k])
        fit_q = [q for q in part.unique_qids if q not in valid_q]
        stage_params = params(part) if callable(params) else params
        model = LambdaMART.from_params(stage_params).fit(
            part.subset(fit_q), part.subset(sorted(valid_q & set(part.unique_qids))) if valid_q else None)
        stages.append(Stage(model, cumulative[k], keeps[k]))
        info = {"stage": k + 1, "features": added[k], "keep": keeps[k],
                "train_queries": len(part.unique_qids), "train_rows": len(part.y), "test_rows": int(reach_te.sum()),
                "computed_here": [e.name for e in new]}
        keep = keeps[k]
        if keep and k < len(stages_cfg) - 1:
            oof = cross_val_predict(stage_params, part, folds, valid_fraction=cfg.ranker.valid_fraction,
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


def train(run, params, extra: dict, save_state) -> dict:
    """Train the configured cascade on the run's training queries (see the module docstring); builds the
    deferred extractors' values for the documents that reach their stage; saves ``model/``. ``params``:
    as :func:`fit` takes them."""
    cfg = run.cfg
    staged = stage_plan(run)
    data = run.matrices
    if data.train is None:
        raise UsageError(f"{cfg.source}: ranker.cascade needs a training split")
    train_q = list(data.train.unique_qids) + (list(data.valid.unique_qids) if data.valid is not None else [])
    valid_q = set(data.valid.unique_qids) if data.valid is not None else set()
    with FeatureStore(run.layout.store) as store:
        stages, report, train, depth_tr, base_tr = fit(run, store, staged, train_q, valid_q,
                                                       list(data.test.unique_qids), params)
    path = run.layout.model()
    with replaced_atomically(path) as tmp:
        for k, stage in enumerate(stages):
            stage.model.save(tmp / f"stage{k + 1}")
        manifest = {"kind": KIND, "format": FORMAT,
                    "features": [{"name": s.name, "version": s.version} for s in staged.specs],
                    "stages": [{"folder": f"stage{k + 1}", "features": s.features, "keep": s.keep}
                               for k, s in enumerate(stages)], "report": report, "planned": staged.planned, **extra}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        # which training rows each stage learned from, and the score the deepest one started from
        pd.DataFrame({"qid": train.qids, "docno": train.docnos, "depth": depth_tr,
                      "base": np.where(depth_tr > 0, base_tr, np.nan)}).to_csv(
            tmp / TRAINING_DEPTH, sep="\t", index=False)
        save_state(run, tmp)
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
