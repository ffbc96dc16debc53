"""BM25 score of any (query, document) pair, with the statistics of the indexed corpus.

The score uses the corpus' document frequencies and average length (from :meth:`fit`) and the pair's
own text, so it is defined for every candidate: those the dense retriever found, documents changed
since indexing, and documents an app passes at serving time. For indexed documents it equals the
bm25s index score (a test checks it).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from retrieval.bm25 import BM25Params, BM25Retriever
from retrieval.frames import QUERY, doc_text
from retrieval.errors import MissingInputError
from retrieval.params import ConfigError

from .base import BaseExtractor, CorpusState, digest


@dataclass(frozen=True)
class BM25FeatureParams:
    k1: float = 0.9  # term-frequency saturation
    b: float = 0.4  # document-length normalisation (0: none, 1: full)
    method: str = "lucene"  # lucene or robertson (bm25s' variants of the same name)
    segmenter: Literal["words", "jieba", "bigrams"] = "words"  # how text splits into terms (retrieval.analysis)
    stemmer: str | None = "english"  # a PyStemmer language, or none
    stopwords: str | None = "en"  # a bm25s stopword list ("en", "zh", ...), or none
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 4096  # pairs per batch of the feature build (stored as each batch completes)


class BM25Extractor(CorpusState, BaseExtractor):
    """``bm25``: the BM25 score of the pair under the fitted corpus statistics."""

    name = "bm25"
    CODE_VERSION = "1"
    Params = BM25FeatureParams
    FEATURES = {"bm25": "BM25 score (title + text), corpus statistics from the indexed corpus"}

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        if self.params.method not in ("lucene", "robertson"):
            raise ConfigError(f"features.bm25.method: expected 'lucene' or 'robertson', found {self.params.method!r}")
        p = self.params
        self._tok = BM25Retriever(BM25Params(k1=p.k1, b=p.b, method=p.method, segmenter=p.segmenter, stemmer=p.stemmer,
                                          stopwords=p.stopwords))
        self.n_docs_: int | None = None
        self.avgdl_: float | None = None
        self.df_: dict[str, int] | None = None
        self._state: dict = {}

    def tokenize(self, texts) -> list[list[str]]:
        return self._tok.tokenize(list(texts))

    def fit(self, corpus: pd.DataFrame) -> "BM25Extractor":
        tokens = self.tokenize(doc_text(corpus))
        self.n_docs_ = len(tokens)
        self.avgdl_ = float(np.mean([len(t) for t in tokens])) if tokens else 0.0
        self.df_ = dict(Counter(term for toks in tokens for term in set(toks)))
        self._summarise()
        return self

    def _summarise(self) -> None:
        """The statistics' identity, hashed once per fit/load (the version and every batch's provenance
        read it)."""
        self._state = {"n_docs": self.n_docs_, "avgdl": round(self.avgdl_, 6),
                       "df": digest(sorted(self.df_.items()), 12)}

    def state(self) -> dict:
        return dict(self._state)

    def save_state(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.save(Path(folder) / f"{self.name}.json")

    def load_state(self, folder: Path) -> "BM25Extractor":
        path = Path(folder) / f"{self.name}.json"
        if not path.exists():
            raise MissingInputError(f"{path}: the BM25 corpus statistics the model was trained with are missing")
        return self.load(path)

    def save(self, path: str | Path) -> None:
        self._require_fit()
        Path(path).write_text(json.dumps({"n_docs": self.n_docs_, "avgdl": self.avgdl_, "df": self.df_}))

    def load(self, path: str | Path) -> "BM25Extractor":
        data = json.loads(Path(path).read_text())
        self.n_docs_, self.avgdl_, self.df_ = data["n_docs"], data["avgdl"], data["df"]
        self._summarise()
        return self

    def _require_fit(self):
        if self.df_ is None:
            raise RuntimeError("BM25Extractor: call fit(corpus) (or load(stats)) before computing")

    def idf(self, term: str) -> float:
        n, df = self.n_docs_, self.df_.get(term, 0)
        inner = (n - df + 0.5) / (df + 0.5)
        if self.params.method == "lucene":
            return math.log(1 + inner)
        return math.log(max(inner, 1.0))  # bm25s' robertson: idf floored at 0

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        self._require_fit()
        k1, b = self.params.k1, self.params.b
        queries = pairs[QUERY].tolist()
        uniq = list(dict.fromkeys(queries))
        q_tokens = dict(zip(uniq, self.tokenize(uniq)))
        out = np.zeros(len(pairs), dtype=np.float64)
        for i, (q, toks) in enumerate(zip(queries, self.tokenize(doc_text(pairs)))):
            tf = Counter(toks)
            norm = k1 * (1 - b + b * len(toks) / self.avgdl_) if self.avgdl_ else k1
            out[i] = sum(self.idf(t) * tf[t] / (tf[t] + norm) for t in q_tokens[q] if tf[t])
        return {"bm25": out}
