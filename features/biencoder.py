"""Bi-encoder cosine of query and document embeddings, reusing the dense retriever's corpus cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.dense import DenseParams, DenseRetriever
from retrieval.frames import DOCNO, QUERY, doc_text
from retrieval.models import DEFAULT_BIENCODER

from .base import BaseExtractor


@dataclass(frozen=True)
class BiEncoderParams:
    model: str = DEFAULT_BIENCODER
    max_length: int | None = None
    device: str = "auto"
    encode_batch_size: int = 32
    cache: str = ""  # embedding cache folder ("" = the user cache), shared with dense retrieval
    top_n: int | None = None
    batch_size: int = 1024


class BiEncoderExtractor(BaseExtractor):
    """``cosine``: cosine similarity of the query and title + text embeddings.

    :meth:`fit` loads the corpus embeddings that dense retrieval cached (encoding them only if absent);
    a document not in the fitted corpus, or whose text changed, is encoded on the fly.
    """

    name = "biencoder"
    CODE_VERSION = "1"
    Params = BiEncoderParams
    FEATURES = {"cosine": "cosine of bi-encoder query and document embeddings"}

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        p = self.params
        self.dense = DenseRetriever(
            DenseParams(model=p.model, batch_size=p.encode_batch_size, max_length=p.max_length, device=p.device,
                        normalize=True),
            cache=p.cache or None)
        self._doc_row: dict[str, tuple[str, int]] = {}
        self._queries: dict[str, np.ndarray] = {}

    def fit(self, corpus: pd.DataFrame) -> "BiEncoderExtractor":
        self.dense.index(corpus)
        self._doc_row = {d: (t, i) for i, (d, t) in enumerate(zip(corpus[DOCNO].astype(str), doc_text(corpus)))}
        return self

    def _embed_queries(self, queries: list[str]) -> np.ndarray:
        new = [q for q in dict.fromkeys(queries) if q not in self._queries]
        if new:
            self._queries.update(zip(new, self.dense.encode(new)))
        return np.stack([self._queries[q] for q in queries])

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        if len(pairs) == 0:
            return {"cosine": np.zeros(0)}
        texts = doc_text(pairs)
        rows = [self._doc_row.get(d) for d in pairs[DOCNO].astype(str)]
        fresh = np.array([r is None or r[0] != t for r, t in zip(rows, texts)])
        docs = None
        if fresh.any():
            encoded = self.dense.encode([t for t, f in zip(texts, fresh) if f])
            docs = np.zeros((len(pairs), encoded.shape[1]), dtype=np.float32)
            docs[fresh] = encoded
        if not fresh.all():
            stored = self.dense.embeddings_[[r[1] for r, f in zip(rows, fresh) if not f]]
            docs = np.zeros((len(pairs), stored.shape[1]), dtype=np.float32) if docs is None else docs
            docs[~fresh] = stored
        q = self._embed_queries(pairs[QUERY].tolist())
        return {"cosine": np.einsum("ij,ij->i", q, docs).astype(np.float64)}
