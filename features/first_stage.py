"""First-stage signals: the fused list's rank and score, and each retriever's rank and score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.frames import RANK, SCORE

from .base import BaseExtractor


@dataclass(frozen=True)
class FirstStageParams:
    retrievers: tuple[str, ...] = ("bm25", "dense")  # members whose own rank/score become features
    missing_rank: float | None = None  # rank given to a document absent from a member's list (None: NaN)
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 100_000  # pairs per batch of the feature build (stored as each batch completes)


class FirstStageExtractor(BaseExtractor):
    """``fs_rank`` / ``fs_score``: rank and score in the list being reranked (for the hybrid: the RRF
    score); ``rank_<r>`` / ``score_<r>`` for each member retriever (NaN when the document is not in
    that retriever's list). These depend on the candidate lists, not on content, so they are
    recomputed (a copy, at no cost) on every build instead of cached."""

    name = "first_stage"
    CODE_VERSION = "1"
    Params = FirstStageParams
    cacheable = False

    @property
    def FEATURES(self) -> dict[str, str]:  # noqa: N802 - the protocol's name
        feats = {"fs_rank": "rank in the reranked first-stage list", "fs_score": "score in that list"}
        for r in self.params.retrievers:
            feats[f"rank_{r}"] = f"rank in the {r} list (NaN if absent)"
            feats[f"score_{r}"] = f"score in the {r} list (NaN if absent)"
        return feats

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        n = len(pairs)
        out = {"fs_rank": pairs[RANK].to_numpy(np.float64), "fs_score": pairs[SCORE].to_numpy(np.float64)}
        for r in self.params.retrievers:
            rank = pairs[f"rank_{r}"].to_numpy(np.float64) if f"rank_{r}" in pairs else np.full(n, np.nan)
            if self.params.missing_rank is not None:
                rank = np.where(np.isnan(rank), self.params.missing_rank, rank)
            out[f"rank_{r}"] = rank
            out[f"score_{r}"] = pairs[f"score_{r}"].to_numpy(np.float64) if f"score_{r}" in pairs else np.full(n, np.nan)
        return out
