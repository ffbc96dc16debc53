"""Length signals: document words, query words, and their ratio."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.frames import QUERY, doc_text

from .base import BaseExtractor

WORD = re.compile(r"\w+")


def n_words(texts) -> np.ndarray:
    return np.asarray([len(WORD.findall(t or "")) for t in texts], dtype=np.float64)


@dataclass(frozen=True)
class LengthParams:
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 4096  # pairs per batch of the feature build (stored as each batch completes)


class LengthExtractor(BaseExtractor):
    """``doc_len`` and ``query_len`` in words (``\\w+`` runs over title + text), and ``len_ratio`` =
    doc_len / query_len."""

    name = "length"
    CODE_VERSION = "1"
    Params = LengthParams
    FEATURES = {
        "doc_len": "document length in words (title + text)",
        "query_len": "query length in words",
        "len_ratio": "doc_len / query_len",
    }

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        d = n_words(doc_text(pairs))
        q = n_words(pairs[QUERY])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(q > 0, d / q, np.nan)
        return {"doc_len": d, "query_len": q, "len_ratio": ratio}
