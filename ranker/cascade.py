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

from features.build import build
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


def rows(data: RankingData, mask: np.ndarray, base: np.ndarray | None = None) -> RankingData:
    """The rows of ``data`` where ``mask`` holds (order kept); ``base``: their starting scores (one per
    row of ``data``; default: the data's own)."""
    base = data.base if base is None else base
    return RankingData.from_arrays(data.X[mask], data.y[mask], data.qids[mask], data.docnos[mask],
                                   data.feature_names, data.feature_versions, None if base is None else base[mask])


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
    """The (0-based) stage an extractor runs in: the first stage naming one of its ``features``; 0 when
    any of them is in no stage (it is built with the cheap ones)."""
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
    """Run ``data`` (all features of the cascade) through the stages: each row's depth (0-based stage
    it last reached), its score there, and the mask of rows reaching each stage. A stage after the first
    starts from the previous stage's score and adds its own model's (it was trained on top of it)."""
    reach = np.ones(len(data.y), dtype=bool)
    depth, score, masks = np.zeros(len(data.y)), np.full(len(data.y), np.nan), []
    for k, stage in enumerate(stages):
        masks.append(reach.copy())
        part = rows(data.select(stage.features), reach, score if k else None)
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


def budget_keeps(run, stages_cfg, budget_ms: float) -> list[int] | None:
    """The keep values that fit ``budget_ms`` by the store's costs (None, said in the log, while a stage's
    extractors have no stored cost yet: a first build measures them)."""
    fs = run.feature_set
    by_stage = [[e for e in run.extractors if run.stage_of(e) == k] for k in range(len(stages_cfg))]

    def ms_per_doc(exts):
        costs = [fs.cost.get(next(iter(e.FEATURES))) for e in exts]
        return None if any(c is None or c == 0 for c in costs) else sum(costs)  # s / 1,000 pairs = ms / pair

    per_doc = [ms_per_doc(exts) for exts in by_stage]
    if any(c is None for c in per_doc):
        run.log("ranker.budget_ms: no stored cost yet for some stage's extractors; using the configured keeps")
        return None
    candidates = run.matrices.test.group
    first_ms = per_doc[0] * float(np.median(candidates))
    keeps = choose_keeps([s.keep for s in stages_cfg[:-1]], per_doc[1:], first_ms, budget_ms) + [0]
    run.log(f"ranker.budget_ms = {budget_ms:g}: keeps {keeps[:-1]} (predicted "
            f"{predicted_ms(keeps[:-1], per_doc[1:], first_ms):.1f} ms per query by the stored costs)")
    return keeps


def training_depth(path: str | Path, data: RankingData) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``data`` (training queries), the deepest stage (0-based) it reached when the
    cascade at ``path`` was trained (-1 for rows it did not train on) and the score that stage started
    from (NaN for the first stage)."""
    saved = pd.read_csv(Path(path) / TRAINING_DEPTH, sep="\t", dtype={"qid": str, "docno": str})
    found = dict(zip(zip(saved["qid"], saved["docno"]), zip(saved["depth"], saved["base"])))
    pairs = [found.get((str(q), str(d)), (-1, np.nan)) for q, d in zip(data.qids, data.docnos)]
    return np.array([p[0] for p in pairs], dtype=int), np.array([p[1] for p in pairs], dtype=float)


def train(run, params_for, extra: dict, save_state) -> dict:
    """Train the configured cascade on the run's training queries (see the module docstring); builds the
    deferred extractors' values for the documents that reach their stage; saves ``model/``."""
    cfg, log = run.cfg, run.log
    fs = run.feature_set
    spec = {s.name: s for s in fs.specs}
    stages_cfg = cfg.ranker.cascade
    unknown = [n for s in stages_cfg for n in s.features if n not in spec]
    if unknown:
        raise UsageError(f"ranker.cascade names {unknown}, not in the built feature set {fs.names}")
    cumulative, names = [], []
    for s in stages_cfg:
        names += list(s.features)
        cumulative.append(list(names))
    keeps = [s.keep for s in stages_cfg]
    if cfg.ranker.budget_ms > 0:
        keeps = budget_keeps(run, stages_cfg, cfg.ranker.budget_ms) or keeps
    specs = [spec[n] for n in names]
    data = run.matrices
    if data.train is None:
        raise UsageError(f"{cfg.source}: ranker.cascade needs a training split")
    train_q = list(data.train.unique_qids) + (list(data.valid.unique_qids) if data.valid is not None else [])
    valid_q = set(data.valid.unique_qids) if data.valid is not None else set()
    test_q = list(data.test.unique_qids)
    folds = max(2, min(cfg.ranker.tune_folds, len(train_q)))
    extractors = {e.name: e for e in run.fitted_extractors}
    stages, report = [], []
    with FeatureStore(run.layout.store) as store:
        def read(qids):
            return store.matrix(specs, qids, retriever=cfg.features.candidates, top_n=run.top_n)

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
            new = [extractors[e.name] for e in run.deferred if run.stage_of(e) == k]
            if new:  # compute the deferred extractors for the documents that reach this stage only
                reached = {(q, d) for data_, m in ((train, reach_tr), (test, reach_te))
                           for q, d in zip(data_.qids[m], data_.docnos[m])}
                pairs = store.pairs(train_q + test_q, retriever=cfg.features.candidates)
                pairs = pairs[[(q, d) in reached for q, d in zip(pairs["qid"], pairs["docno"])]]
                build(store, pairs, new, progress=run.progress)
                train, test = read(train_q), read(test_q)
            part = rows(train.select(cumulative[k]), reach_tr, base_tr if k else None)
            fit_q = [q for q in part.unique_qids if q not in valid_q]
            params = params_for(part)
            model = LambdaMART.from_params(params).fit(
                part.subset(fit_q), part.subset(sorted(valid_q & set(part.unique_qids))) if valid_q else None)
            stages.append(Stage(model, cumulative[k], keeps[k]))
            info = {"stage": k + 1, "features": list(stage_cfg.features), "keep": keeps[k],
                    "train_queries": len(part.unique_qids), "train_rows": len(part.y), "test_rows": int(reach_te.sum()),
                    "computed_here": [e.name for e in new]}
            keep = keeps[k]
            if keep and k < len(stages_cfg) - 1:
                oof = cross_val_predict(params, part, folds, valid_fraction=cfg.ranker.valid_fraction, seed=params.seed)
                base_tr[reach_tr] = oof
                reach_tr = narrow(reach_tr, part.group, oof, keep)  # cross-fitted membership
                test_part = rows(test.select(cumulative[k]), reach_te, score_te if k else None)
                score_te[reach_te] = model.predict(test_part)
                reach_te = narrow(reach_te, test_part.group, score_te[reach_te], keep)
            info["seconds"] = time.perf_counter() - t
            report.append(info)
            log(f"cascade stage {k + 1}: {len(cumulative[k])} features on {info['train_rows']} training rows of "
                f"{info['train_queries']} queries"
                + (f", computed {info['computed_here']} here" if new else "")
                + (f", keeps {keeps[k]} per query" if keeps[k] else "") + f" ({info['seconds']:.1f}s)")
    path = run.layout.model()
    with replaced_atomically(path) as tmp:
        for k, stage in enumerate(stages):
            stage.model.save(tmp / f"stage{k + 1}")
        manifest = {"kind": KIND, "format": FORMAT, "features": [{"name": s.name, "version": s.version} for s in specs],
                    "stages": [{"folder": f"stage{k + 1}", "features": s.features, "keep": s.keep}
                               for k, s in enumerate(stages)], "report": report, **extra}
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
