"""Query-term coverage: the share of distinct query terms found in the document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from retrieval.analysis import Analyzer
from retrieval.frames import QUERY, doc_text

from .base import BaseExtractor


@dataclass(frozen=True)
class CoverageParams:
    segmenter: Literal["words", "jieba", "bigrams"] = "words"  # the same analysis as BM25 (retrieval.analysis)
    stemmer: str | None = "english"  # a PyStemmer language, or none
    stopwords: str | None = "en"  # a bm25s stopword list, or none
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 4096  # pairs per batch of the feature build (stored as each batch completes)


class CoverageExtractor(BaseExtractor):
    """``coverage``: distinct query terms present in title + text / distinct query terms (NaN for a
    query with no term left after stop-wording)."""

    name = "coverage"
    CODE_VERSION = "1"
    Params = CoverageParams
    FEATURES = {"coverage": "fraction of distinct (stemmed, non-stop) query terms found in the document"}

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._tok = Analyzer.of(self.params)

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        q_tokens = self._tok.tokenize(pairs[QUERY].tolist())
        d_tokens = self._tok.tokenize(doc_text(pairs))
        out = np.array([len(set(q) & set(d)) / len(set(q)) if q else np.nan for q, d in zip(q_tokens, d_tokens)])
        return {"coverage": out.astype(np.float64)}
