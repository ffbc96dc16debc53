"""Ranker settings chosen per dataset, and the first-stage guard: safe defaults on a user's own data.

``ranker.params = "auto"`` chooses the booster's capacity by query-level cross-validation on the
training queries only (:func:`tune`), from a small grid ordered from the most to the least regularised
(ties go to the simpler model): tree size and rows per leaf with matching L2, the number of trees, and
monotone constraints on the retrieval signals (more retrieval evidence never lowers a score). Which
settings are safe depends on the dataset: on few queries small monotone trees hold up, on more queries
larger trees gain.

The guard (:func:`guard`) then compares the trained model with the first-stage order on held-out
training queries (the tuning's out-of-fold scores, else the validation split, else a cross-validation
of the chosen settings) with a paired test. When the model is not better, training says so, and
``ranker.guard`` decides what is served: ``"fallback"`` (the first-stage order), ``"blend"`` (the
reciprocal rank fusion of the model's order and the first stage's) or ``"warn"`` (the model); the
policy itself is the ranking model's (:mod:`ranker.model`), which applies it wherever it scores. A list
an app sends without ranks has no first-stage order: a model for such lists is compared instead with a
content-only model on the same queries shuffled without ranks (:func:`unranked_guard`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from features.matrix import RankingData

from . import evaluate as ev
from .data import qrels_of, ranking_from_scores
from .lambdamart import LambdaMARTParams, cross_val_predict
from .model import CONTENT, SERVES, first_stage_scores

#: Capacity levels, most regularised first: (num_leaves, min_data_in_leaf, lambda_l2).
CAPACITY = ((4, 50, 10.0), (7, 30, 3.0), (15, 20, 1.0))
N_ESTIMATORS = (100, 300)
#: Retrieval signals and the direction in which more evidence should move the score.
MONOTONE_PREFIXES = {"fs_score": 1, "fs_rank": -1, "bm25": 1, "cosine": 1, "coverage": 1}


def monotone_for(names: list[str]) -> dict[str, int]:
    """Monotone constraints on the retrieval signals present among ``names``."""
    out = {}
    for n in names:
        if n in MONOTONE_PREFIXES:
            out[n] = MONOTONE_PREFIXES[n]
        elif n.startswith("rank_"):
            out[n] = -1
        elif n.startswith("score_"):
            out[n] = 1
    return out


def grid(base: LambdaMARTParams, names: list[str]) -> list[LambdaMARTParams]:
    """The candidate settings for features ``names``, simplest first (12, or 6 without retrieval signals)."""
    monotone = monotone_for(names)
    out = []
    for leaves, rows, l2 in CAPACITY:
        for trees in N_ESTIMATORS:
            for mono in ([monotone, {}] if monotone else [{}]):
                out.append(dataclasses.replace(base, num_leaves=leaves, min_data_in_leaf=rows, lambda_l2=l2,
                                               n_estimators=trees, monotone=dict(mono)))
    return out


def describe(p: LambdaMARTParams) -> str:
    return (f"{p.num_leaves} leaves, >= {p.min_data_in_leaf} rows/leaf, L2 {p.lambda_l2:g}, {p.n_estimators} trees"
            + (", monotone" if p.monotone else ""))


@dataclass
class Tuning:
    chosen: LambdaMARTParams
    table: list[dict]  # one row per setting: its description, params and mean CV score
    oof: np.ndarray  # the chosen setting's out-of-fold scores of the tuning data's rows
    folds: int
    seconds: float

    def as_dict(self) -> dict:
        return {"chosen": describe(self.chosen), "chosen_params": dataclasses.asdict(self.chosen),
                "folds": self.folds, "seconds": self.seconds, "grid": self.table}


def per_query(data: RankingData, scores: np.ndarray, measure: str):
    """Per-query ``measure`` of a ranking by ``scores``, judged by the data's own labels."""
    return ev.per_query(ranking_from_scores(data, scores, "s"), qrels_of(data), [measure])[measure]


def one_standard_error(scores: list) -> tuple[int, int]:
    """(best, chosen) among per-query score series of settings ordered simplest first: the best mean,
    and the first setting whose mean difference to the best is at most its standard error."""
    best = int(np.argmax([float(np.mean(v)) for v in scores]))
    for i, values in enumerate(scores[:best]):
        diff = np.asarray(scores[best], dtype=float) - np.asarray(values, dtype=float)
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if diff.mean() <= se + 1e-12:
            return best, i
    return best, best


def n_folds(folds: int, data: RankingData) -> int:
    """The number of cross-validation folds: as configured, at most one per query, at least 2."""
    return max(2, min(folds, len(data.unique_qids)))


def settings(ranker, measure: str):
    """The settings of a model trained on some queries: the fixed ``[ranker.params]``, or (``params =
    "auto"``) a function of the training data that tunes on those queries only (so, inside a
    cross-validation fold, the fold's own queries never choose)."""
    if not ranker.auto:
        return ranker.base_params
    return lambda train: tune(ranker.base_params, train, folds=ranker.tune_folds,
                              valid_fraction=ranker.valid_fraction, measure=measure).chosen


def tune(base: LambdaMARTParams, data: RankingData, *, folds: int = 3, valid_fraction: float = 0.0,
         measure: str = "nDCG@10") -> Tuning:
    """Choose a grid setting by out-of-fold ``measure`` on ``data`` (training queries only), with the
    one-standard-error rule: the simplest setting (earliest in the grid) whose mean is within one
    standard error of the best's, the error taken over the per-query differences to the best. With few
    queries that favours small, constrained trees; with many, a clearly better larger model wins."""
    t0 = time.perf_counter()
    k = n_folds(folds, data)
    settings = grid(base, data.feature_names)
    table, scores, oofs = [], [], []
    for params in settings:
        oof = cross_val_predict(params, data, k, valid_fraction=valid_fraction, seed=params.seed)
        values = per_query(data, oof, measure)
        scores.append(values)
        oofs.append(oof)
        table.append({"setting": describe(params), "mean": float(values.mean()),
                      "params": {f: getattr(params, f) for f in ("num_leaves", "min_data_in_leaf", "lambda_l2",
                                                                 "n_estimators", "monotone")}})
    best, chosen = one_standard_error(scores)
    for i, row in enumerate(table):
        row["best"], row["chosen"] = i == best, i == chosen
    return Tuning(settings[chosen], table, oofs[chosen], k, time.perf_counter() - t0)


def guard(data: RankingData, scores: np.ndarray, *, measure: str, action: str, where: str) -> dict:
    """Compare ``scores`` (held out from training) with the first-stage order on ``data``'s queries."""
    model_q = per_query(data, scores, measure)
    first_q = per_query(data, first_stage_scores(data), measure)
    comparison = ev.compare(first_q.to_frame(measure), model_q.to_frame(measure), measure)
    fired = comparison.delta <= 0
    return {"measure": measure, "held_out": where, "queries": comparison.n, "model": comparison.mean_b,
            "first_stage": comparison.mean_a, "delta": comparison.delta, "p_value": comparison.p_value,
            "wins": comparison.wins, "losses": comparison.losses, "fired": bool(fired),
            "serves": SERVES[action] if fired else "model", "action": action}


def unranked_guard(model_q, content_q, *, measure: str, action: str, where: str) -> dict:
    """Compare a model for apps' lists on lists shuffled without ranks (``model_q``: its per-query
    ``measure``) with a content-only model on the same held-out queries (``content_q``): where it is not
    better, ``ranker.guard`` "fallback" and "blend" serve the content-only model for a list without ranks
    (there is no first-stage order to fall back to), "warn" the model."""
    comparison = ev.compare(content_q.to_frame(measure), model_q.to_frame(measure), measure)
    fired = comparison.delta <= 0
    return {"measure": measure, "held_out": where, "queries": comparison.n, "model": comparison.mean_b,
            "content_model": comparison.mean_a, "delta": comparison.delta, "p_value": comparison.p_value,
            "wins": comparison.wins, "losses": comparison.losses, "fired": bool(fired),
            "serves": CONTENT if fired and action != "warn" else "model", "action": action}

