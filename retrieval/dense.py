"""Dense retrieval with a sentence-transformers bi-encoder and exact inner-product search.

Corpus embeddings are computed once, in batches with a progress bar, and cached on disk under a key
made of the model name, the encoding settings and a hash of the corpus content: a second index of the
same corpus with the same model encodes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .base import run_from_topk
from .data import cache_dir
from .frames import DOCNO, QID, QUERY, doc_text, validate_corpus, validate_queries
from .models import DEFAULT_BIENCODER, model_fingerprint, require, resolve_device, resolve_model

INSTALL = "pip install 'fusion-ltr[neural]'"


@dataclass(frozen=True)
class DenseParams:
    model: str = DEFAULT_BIENCODER  # packaged alias, local path, or hub name
    batch_size: int = 32  # texts per encoder call
    max_length: int | None = None  # None: the model's own max_seq_length
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "mps"
    normalize: bool = True  # cosine similarity as inner product


def corpus_hash(docnos: list[str], texts: list[str]) -> str:
    """A content hash of a corpus (ids and the exact text encoded)."""
    h = hashlib.sha256()
    for d, t in zip(docnos, texts):
        h.update(d.encode())
        h.update(b"\0")
        h.update(t.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


class DenseRetriever:
    """Bi-encoder retrieval; exact search by a matrix product over normalised embeddings."""

    name = "dense"

    def __init__(self, params: DenseParams | None = None, *, cache: str | Path | None = None):
        self.params = params or DenseParams()
        self.cache = Path(cache) if cache else cache_dir() / "embeddings"
        self._model = None
        self.docnos_: np.ndarray | None = None
        self.embeddings_: np.ndarray | None = None
        #: How many texts the last ``index`` call encoded and how many it read from the cache.
        self.stats_ = {"encoded": 0, "cached": 0}

    @property
    def model(self):
        """The loaded SentenceTransformer (loaded on first use, then kept)."""
        if self._model is None:
            st = require("sentence_transformers", INSTALL)
            self._model = st.SentenceTransformer(
                resolve_model(self.params.model), device=resolve_device(self.params.device)
            )
            if self.params.max_length:
                self._model.max_seq_length = self.params.max_length
        return self._model

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` (float32, L2-normalised when ``normalize``)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray(
            self.model.encode(
                list(texts), batch_size=self.params.batch_size, show_progress_bar=progress,
                normalize_embeddings=self.params.normalize, convert_to_numpy=True,
            ),
            dtype=np.float32,
        )

    def cache_key(self, docnos: list[str], texts: list[str]) -> str:
        p = self.params
        # a local model folder's content too, so a model retrained in place is not served stale embeddings
        fingerprint = model_fingerprint(p.model)
        setting = f"{p.model}|{p.max_length}|{p.normalize}" + (f"|{fingerprint}" if fingerprint else "")
        model_tag = hashlib.sha256(setting.encode()).hexdigest()[:12]
        return f"{Path(p.model).name}-{model_tag}-{corpus_hash(docnos, texts)}"

    def index(self, corpus: pd.DataFrame) -> "DenseRetriever":
        validate_corpus(corpus)
        docnos = corpus[DOCNO].astype(str).tolist()
        texts = doc_text(corpus)
        key = self.cache_key(docnos, texts)
        path = self.cache / f"{key}.npy"
        if path.exists():
            self.embeddings_ = np.load(path)
            self.stats_ = {"encoded": 0, "cached": len(texts)}
        else:
            self.embeddings_ = self.encode(texts, progress=True)
            self.stats_ = {"encoded": len(texts), "cached": 0}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, self.embeddings_)
            tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache
            (self.cache / f"{key}.json").write_text(
                json.dumps({"params": asdict(self.params), "n_docs": len(texts)}, indent=2)
            )
        self.docnos_ = np.asarray(docnos, dtype=object)
        return self

    def retrieve(self, queries: pd.DataFrame, k: int = 100) -> pd.DataFrame:
        if self.embeddings_ is None:
            raise RuntimeError("DenseRetriever: call index(corpus) first")
        validate_queries(queries)
        k = min(k, len(self.docnos_))
        q = self.encode(queries[QUERY].tolist())
        scores = q @ self.embeddings_.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
            np.arange(scores.shape[1]), (len(q), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        return run_from_topk(queries[QID].astype(str).tolist(), self.docnos_, top, top_scores, self.name)
