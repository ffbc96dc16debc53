"""Length signals: document words, query words, and their ratio, in the analyzer's units (``\\w+`` runs
for ``segmenter = "words"``, Chinese words or character pairs for ``jieba``/``bigrams``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from retrieval.analysis import Analyzer
from retrieval.frames import QUERY, doc_text

from .base import BaseExtractor


def n_words(texts, segmenter: str = "words") -> np.ndarray:
    analyzer = Analyzer(segmenter=segmenter)
    return np.asarray([len(analyzer.segments(t)) for t in texts], dtype=np.float64)


@dataclass(frozen=True)
class LengthParams:
    segmenter: Literal["words", "jieba", "bigrams"] = "words"  # the units counted (retrieval.analysis)
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 4096  # pairs per batch of the feature build (stored as each batch completes)


class LengthExtractor(BaseExtractor):
    """``doc_len`` and ``query_len`` in the analyzer's units (over title + text), and ``len_ratio`` =
    doc_len / query_len (NaN for a query of no unit)."""

    name = "length"
    CODE_VERSION = "1"
    Params = LengthParams
    FEATURES = {
        "doc_len": "document length in words (title + text)",
        "query_len": "query length in words",
        "len_ratio": "doc_len / query_len",
    }

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        d = n_words(doc_text(pairs), self.params.segmenter)
        q = n_words(pairs[QUERY], self.params.segmenter)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(q > 0, d / q, np.nan)
        return {"doc_len": d, "query_len": q, "len_ratio": ratio}
