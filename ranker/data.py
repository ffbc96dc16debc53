"""Ranking data for the ranker: the store's matrix, LETOR files, and the query splits.

:class:`RankingData` itself lives in :mod:`features.store` (the layer that builds it); this module
re-exports it and adds the conversions the ranker needs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.store import RankingData
from retrieval.data import LetorData
from retrieval.frames import DOCNO, LABEL, QID, RANK, RETRIEVER, SCORE

__all__ = ["RankingData", "from_letor", "ranking_from_scores", "qrels_of"]


def from_letor(data: LetorData) -> RankingData:
    """LETOR/SVMlight rows as RankingData (features ``f1..fN``)."""
    return RankingData.from_arrays(data.X, data.y, data.qids, data.docids, data.feature_names)


def ranking_from_scores(data: RankingData, scores: np.ndarray, name: str) -> pd.DataFrame:
    """A run frame ranking each query's rows by score (descending); NaN scores go last, and ties keep
    the data's order (the first-stage order, for store data)."""
    scores = np.asarray(scores, dtype=np.float64)
    key = np.where(np.isnan(scores), -np.inf, scores)
    frame = pd.DataFrame({QID: data.qids, DOCNO: data.docnos, "_key": key, "_pos": np.arange(len(scores)),
                          SCORE: scores})
    frame = frame.sort_values([QID, "_key", "_pos"], ascending=[True, False, True], kind="stable")
    frame[RANK] = frame.groupby(QID, sort=False).cumcount() + 1
    frame[RETRIEVER] = name
    frame[SCORE] = frame["_key"]
    return frame[[QID, DOCNO, RANK, SCORE, RETRIEVER]].reset_index(drop=True)


def strict_scores(frame):
    """The run with scores that fall strictly with rank within each query, at the 6 decimals a TREC
    file keeps: a tie or a NaN (ranked here by first-stage order) gets the previous score minus 1e-6.
    An external evaluator that sorts by score (trec_eval, ir-measures) then sees exactly the order
    scored here."""
    frame = frame.sort_values([QID, "rank"], kind="stable").copy()
    micro = np.round(frame["score"].to_numpy(np.float64) * 1e6)
    qids = frame[QID].to_numpy()
    for i in range(len(micro)):
        if i and qids[i] == qids[i - 1]:
            if not np.isfinite(micro[i]) or micro[i] >= micro[i - 1]:
                micro[i] = micro[i - 1] - 1
        elif not np.isfinite(micro[i]):
            micro[i] = 0.0
    frame["score"] = micro / 1e6
    return frame


def qrels_of(data: RankingData) -> pd.DataFrame:
    """Judgments implied by the data's labels (every row, label 0 included)."""
    return pd.DataFrame({QID: data.qids, DOCNO: data.docnos, LABEL: data.y.astype(int)})
