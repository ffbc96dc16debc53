"""BM25 of each field apart: the title alone and the body alone, each with its own corpus statistics.

The classic LETOR field features (LETOR 4.0 has BM25 of the title, the body and the whole document): a
query term in a paper's title says more than the same term once in its abstract, which ``bm25`` over
title + text cannot tell. Each field is scored by :class:`features.bm25.BM25Extractor` (the same
analysis and parameters) fitted on that field alone, so every value is defined for any pair, as
``bm25``'s is. A collection without titles gives ``bm25_title`` = 0 everywhere and ``bm25_body`` =
``bm25``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.errors import MissingInputError
from retrieval.frames import TEXT, TITLE

from .base import BaseExtractor, CorpusState
from .bm25 import BM25Extractor, BM25FeatureParams

#: field -> (feature, the frame with only that field's text left)
FIELDS = {
    "title": ("bm25_title", lambda frame: frame.assign(**{TEXT: ""})),
    "body": ("bm25_body", lambda frame: frame.assign(**{TITLE: ""})),
}


class BM25FieldsExtractor(CorpusState, BaseExtractor):
    """``bm25_fields``: BM25 of the title and of the body, each under its own field's statistics."""

    name = "bm25_fields"
    CODE_VERSION = "1"
    Params = BM25FeatureParams
    FEATURES = {"bm25_title": "BM25 score of the title alone (title statistics from the indexed corpus)",
                "bm25_body": "BM25 score of the body alone (body statistics from the indexed corpus)"}

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._fields = {f: BM25Extractor(self.params) for f in FIELDS}

    def fit(self, corpus: pd.DataFrame) -> "BM25FieldsExtractor":
        for field, (_, only) in FIELDS.items():
            self._fields[field].fit(only(corpus))
        return self

    def state(self) -> dict:
        return {field: ext.state() for field, ext in self._fields.items()}

    def save_state(self, folder: Path) -> None:
        for ext in self._fields.values():
            ext._require_fit()
        Path(folder).mkdir(parents=True, exist_ok=True)
        stats = {f: {"n_docs": e.n_docs_, "avgdl": e.avgdl_, "df": e.df_} for f, e in self._fields.items()}
        (Path(folder) / f"{self.name}.json").write_text(json.dumps(stats))

    def load_state(self, folder: Path) -> "BM25FieldsExtractor":
        path = Path(folder) / f"{self.name}.json"
        if not path.exists():
            raise MissingInputError(f"{path}: the per-field BM25 statistics the model was trained with are missing")
        stats = json.loads(path.read_text())
        for field, ext in self._fields.items():
            ext.n_docs_, ext.avgdl_, ext.df_ = stats[field]["n_docs"], stats[field]["avgdl"], stats[field]["df"]
            ext._summarise()
        return self

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        return {feature: self._fields[field].compute(only(pairs))["bm25"]
                for field, (feature, only) in FIELDS.items()}
