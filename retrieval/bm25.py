"""BM25 retrieval with bm25s (sparse-matrix BM25), index saved to and loaded from disk."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .analysis import INSTALL, Analyzer
from .base import run_from_topk
from .errors import MissingInputError, UnknownKeyError, UsageError
from .frames import DOCNO, QID, QUERY, doc_text, validate_corpus, validate_queries
from .models import require


@dataclass(frozen=True)
class BM25Params:
    """BM25 parameters. Defaults follow Pyserini/Anserini's flat BEIR baseline (k1=0.9, b=0.4)."""

    k1: float = 0.9  # term-frequency saturation
    b: float = 0.4  # document-length normalisation (0: none, 1: full)
    method: str = "lucene"  # bm25s variants: robertson, lucene, atire, bm25l, bm25+
    segmenter: Literal["words", "jieba", "bigrams"] = "words"  # how text splits into terms (retrieval.analysis)
    stemmer: str | None = "english"  # a PyStemmer language, or None
    stopwords: str | None = "en"  # bm25s stopword list name ("en", "zh", ...), or None


class BM25Retriever:
    """BM25 over ``title + text`` with bm25s; ``score_pairs`` scores arbitrary (query, doc) pairs."""

    name = "bm25"

    def __init__(self, params: BM25Params | None = None):
        self.params = params or BM25Params()
        self._bm25 = None
        self.docnos_: np.ndarray | None = None
        #: what the analyzer left empty: ``docs_without_terms`` (set by index) and ``queries_without_terms``
        #: (by the last retrieve); such a query retrieves nothing, such a document is never retrieved
        self.stats_: dict[str, int] = {}

    # ------------------------------------------------------------------ tokenisation
    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """Segment, lower-case, stop-word and stem ``texts`` exactly as the index does."""
        return Analyzer.of(self.params).tokenize(texts)

    # ------------------------------------------------------------------ index
    def index(self, corpus: pd.DataFrame) -> "BM25Retriever":
        bm25s = require("bm25s", INSTALL)
        validate_corpus(corpus)
        tokens = self.tokenize(doc_text(corpus))
        self.stats_["docs_without_terms"] = sum(not t for t in tokens)
        p = self.params
        self._bm25 = bm25s.BM25(k1=p.k1, b=p.b, method=p.method)
        self._bm25.index(tokens, show_progress=False)
        self.docnos_ = corpus[DOCNO].astype(str).to_numpy(dtype=object)
        return self

    def _check(self):
        if self._bm25 is None:
            raise RuntimeError("BM25Retriever: call index(corpus) or BM25Retriever.load(path) first")

    def save(self, path: str | Path) -> Path:
        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(path / "bm25s"), show_progress=False)
        (path / "docnos.json").write_text(json.dumps(self.docnos_.tolist()))
        (path / "params.json").write_text(json.dumps(asdict(self.params), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BM25Retriever":
        bm25s = require("bm25s", INSTALL)
        path = Path(path)
        if not (path / "params.json").exists():
            raise MissingInputError(f"{path}: not a BM25 index folder (expected params.json, bm25s/, docnos.json)")
        self = cls(BM25Params(**json.loads((path / "params.json").read_text())))
        self._bm25 = bm25s.BM25.load(str(path / "bm25s"), show_progress=False, verbosity=0)
        self.docnos_ = np.asarray(json.loads((path / "docnos.json").read_text()), dtype=object)
        return self

    # ------------------------------------------------------------------ search
    def _scores(self, tokens: list[str]) -> np.ndarray:
        """Scores of every document for one tokenised query (all zero when no token is left)."""
        if not tokens:  # e.g. a stop-word-only query; bm25s cannot score an empty list
            return np.zeros(len(self.docnos_), dtype=np.float64)
        return self._bm25.get_scores(tokens)

    def retrieve(self, queries: pd.DataFrame, k: int = 100) -> pd.DataFrame:
        """Top-``k`` documents per query; documents sharing no term with the query are left out."""
        self._check()
        validate_queries(queries)
        k = min(k, len(self.docnos_))
        tokens = self.tokenize(queries[QUERY].tolist())
        self.stats_["queries_without_terms"] = sum(not t for t in tokens)
        scores = np.zeros((len(tokens), k), dtype=np.float64)
        indices = np.zeros((len(tokens), k), dtype=np.int64)
        for i, toks in enumerate(tokens):
            s = self._scores(toks)
            top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            top = top[np.lexsort((top, -s[top]))]  # score desc, index asc: deterministic ties
            indices[i], scores[i] = top, s[top]
        return run_from_topk(queries[QID].astype(str).tolist(), self.docnos_, indices, scores,
                             self.name, keep=scores > 0)

    def score_pairs(self, queries: list[str], docnos: list[str]) -> np.ndarray:
        """BM25 score of each (query text, docno) pair against this index (0.0 for no shared term)."""
        self._check()
        if len(queries) != len(docnos):
            raise UsageError(f"score_pairs: {len(queries)} queries but {len(docnos)} docnos")
        pos = {d: i for i, d in enumerate(self.docnos_)}
        unknown = [d for d in docnos if d not in pos]
        if unknown:
            raise UnknownKeyError(f"score_pairs: {len(unknown)} docno(s) not in the index, e.g. {unknown[:3]}")
        out = np.empty(len(queries), dtype=np.float64)
        by_query: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_query.setdefault(q, []).append(i)
        texts = list(by_query)
        for text, toks in zip(texts, self.tokenize(texts)):
            s = self._scores(toks)
            rows = by_query[text]
            out[rows] = s[[pos[docnos[r]] for r in rows]]
        return out
