"""Bi-encoder cosine of query and document embeddings, reusing the dense retriever's corpus cache."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.dense import DenseParams, DenseRetriever
from retrieval.errors import UsageError
from retrieval.frames import DOCNO, EMBEDDING, EMBEDDING_MODEL, QUERY, doc_text
from retrieval.models import DEFAULT_BIENCODER

from .base import BaseExtractor, TrainedOnQueries


@dataclass(frozen=True)
class BiEncoderParams:
    model: str = DEFAULT_BIENCODER  # the sentence-transformers encoder: packaged alias, local folder or hub name
    max_length: int | None = None  # tokens per text; None: the model's own max_seq_length
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "mps": never changes a value
    encode_batch_size: int = 32  # texts per encoder call
    cache: str = ""  # embedding cache folder ("" = the user cache), shared with dense retrieval
    # documents outside the fitted corpus, once encoded, are kept in memory by text hash (the most
    # recently used this many; 0: none), so a document an app sends again is never encoded again
    memory_cache: int = 50_000
    # a SQLite file where those embeddings are also kept (keyed by the encoder setting and the text hash),
    # so another process or a restart never encodes them again either; "": memory only
    disk_cache: str = ""
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 1024  # pairs per batch of the feature build (stored as each batch completes)


class BiEncoderExtractor(TrainedOnQueries, BaseExtractor):
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
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()  # query -> embedding, least recent first
        self._fresh: OrderedDict[str, np.ndarray] = OrderedDict()  # text hash -> embedding, least recent first

    def trained_qids(self) -> set[str]:
        """Queries an in-domain model learned from (``finetune-be``'s manifest; none for a packaged or hub
        model): the leakage exclusion keeps them from the ranker."""
        from .model_folders import trained_qids

        model = self.local_path(self.params.model)
        return trained_qids(model) if model and Path(model).exists() else set()

    def fit(self, corpus: pd.DataFrame) -> "BiEncoderExtractor":
        self.dense.index(corpus)
        self._doc_row = {d: (t, i) for i, (d, t) in enumerate(zip(corpus[DOCNO].astype(str), doc_text(corpus)))}
        return self

    def _embed_documents(self, texts: list[str]) -> np.ndarray:
        """Embeddings of documents outside the fitted corpus: from the memory cache, else the disk cache,
        else encoded (once per distinct text) and remembered in both."""
        size, disk = self.params.memory_cache, self.params.disk_cache
        if size <= 0 and not disk:
            return self.dense.encode(texts)
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        if disk:
            self._fresh.update(self._disk_get([k for k in dict.fromkeys(keys) if k not in self._fresh]))
        new = {k: t for k, t in zip(keys, texts) if k not in self._fresh}
        if new:
            encoded = self.dense.encode(list(new.values()))
            self._fresh.update(zip(new, encoded))
            if disk:
                self._disk_put(list(new), encoded)
        out = np.stack([self._fresh[k] for k in keys])
        for k in keys:
            self._fresh.move_to_end(k)
        while len(self._fresh) > size:
            self._fresh.popitem(last=False)
        return out

    @property
    def _setting(self) -> str:
        """What an embedding depends on besides the text (the disk cache's model key)."""
        p = self.params
        return f"{p.model}|{p.max_length}|normalize"

    def _disk(self):
        import sqlite3

        Path(self.params.disk_cache).parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.params.disk_cache, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS embeddings (setting TEXT, text_sha256 TEXT, vector BLOB, "
                    "PRIMARY KEY (setting, text_sha256))")
        return con

    def _disk_get(self, keys: list[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        found = {}
        with closing(self._disk()) as con:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                rows = con.execute(f"SELECT text_sha256, vector FROM embeddings WHERE setting = ? AND text_sha256 IN "
                                   f"({','.join('?' * len(part))})", [self._setting, *part]).fetchall()
                found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return found

    def _disk_put(self, keys: list[str], vectors: np.ndarray) -> None:
        with closing(self._disk()) as con, con:
            con.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?)",
                            [(self._setting, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in zip(keys, vectors)])

    def _embed_queries(self, queries: list[str]) -> np.ndarray:
        """Query embeddings, each distinct query encoded once; the most recent ``memory_cache`` kept (a
        server sees ever new queries: the cache must not grow without bound)."""
        new = [q for q in dict.fromkeys(queries) if q not in self._queries]
        if new:
            self._queries.update(zip(new, self.dense.encode(new)))
        out = np.stack([self._queries[q] for q in queries])
        for q in dict.fromkeys(queries):
            self._queries.move_to_end(q)
        while len(self._queries) > max(self.params.memory_cache, 0):
            self._queries.popitem(last=False)
        return out

    def compute_unseen(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        """``cosine`` with every document encoded anew (no corpus embedding, no memory cache): what an app's
        unseen documents without embeddings cost."""
        docs = self.dense.encode(doc_text(pairs))
        q = self._embed_queries(pairs[QUERY].tolist())
        return {"cosine": np.einsum("ij,ij->i", q, docs).astype(np.float64)}

    def accepts(self, model_id: str) -> bool:
        """Whether an app's embedding from ``model_id`` is this bi-encoder's (its configured name, or that
        name without the organisation, e.g. ``all-MiniLM-L6-v2``)."""
        name = str(self.params.model)
        return model_id.strip() in (name, name.rsplit("/", 1)[-1])

    def check(self, pairs: pd.DataFrame) -> None:
        """Refuse an app's embedding of another model (before any model is loaded)."""
        if EMBEDDING not in pairs:
            return
        given = pairs[EMBEDDING].notna().to_numpy()
        for docno, source in zip(pairs[DOCNO][given], pairs[EMBEDDING_MODEL][given]):
            if not self.accepts(str(source)):
                raise UsageError(f"doc {docno!r}: its embedding comes from {source!r}, but this run's bi-encoder is "
                                 f"{self.params.model!r}; send embeddings of that model, or none (it encodes the text)")

    def _given(self, pairs: pd.DataFrame) -> tuple[np.ndarray, list]:
        """Which rows carry the app's own embedding (checked: model id and dimension), and those vectors,
        L2-normalised as the encoder's are."""
        if EMBEDDING not in pairs:
            return np.zeros(len(pairs), dtype=bool), []
        given = pairs[EMBEDDING].notna().to_numpy()
        if not given.any():
            return given, []
        encoder = self.dense.model
        # sentence-transformers renamed the method in 5.x; older versions only have the first name
        dim = (getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension)()
        self.check(pairs)
        vectors = []
        for docno, vec in zip(pairs[DOCNO][given], pairs[EMBEDDING][given]):
            if len(vec) != dim:
                raise UsageError(f"doc {docno!r}: its embedding has {len(vec)} dimensions, {self.params.model!r} "
                                 f"gives {dim}")
            vectors.append(np.asarray(vec, dtype=np.float32) / np.linalg.norm(vec))
        return given, vectors

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        if len(pairs) == 0:
            return {"cosine": np.zeros(0)}
        texts = doc_text(pairs)
        given, vectors = self._given(pairs)
        rows = [self._doc_row.get(d) for d in pairs[DOCNO].astype(str)]
        fresh = np.array([not g and (r is None or r[0] != t) for r, t, g in zip(rows, texts, given)])
        stored_rows = ~fresh & ~given
        docs = None
        if fresh.any():
            encoded = self._embed_documents([t for t, f in zip(texts, fresh) if f])
            docs = np.zeros((len(pairs), encoded.shape[1]), dtype=np.float32)
            docs[fresh] = encoded
        if stored_rows.any():
            stored = self.dense.embeddings_[[r[1] for r, s in zip(rows, stored_rows) if s]]
            docs = np.zeros((len(pairs), stored.shape[1]), dtype=np.float32) if docs is None else docs
            docs[stored_rows] = stored
        if given.any():
            docs = np.zeros((len(pairs), len(vectors[0])), dtype=np.float32) if docs is None else docs
            docs[given] = np.stack(vectors)
        q = self._embed_queries(pairs[QUERY].tolist())
        return {"cosine": np.einsum("ij,ij->i", q, docs).astype(np.float64)}
