"""The first-stage retrieval protocol.

A :class:`Retriever` is built over a corpus frame once (:meth:`index`) and then answers query
frames with a *run frame*: one row per (query, document) candidate with columns
``qid, docno, rank, score, retriever`` (see :mod:`retrieval.frames`), ``rank`` starting at 1 and
``score`` higher-is-better, at most ``k`` rows per query. Retrievers that can persist their index
implement ``save(path)`` and a ``load(path)`` classmethod.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from .frames import DOCNO, QID, RANK, RETRIEVER, SCORE


@runtime_checkable
class Retriever(Protocol):
    #: Short name written into the ``retriever`` column and used in file names.
    name: str

    def index(self, corpus: pd.DataFrame) -> "Retriever":
        """Build the index over a corpus frame (``docno``, ``text``, optional ``title``); return self."""
        ...

    def retrieve(self, queries: pd.DataFrame, k: int = 100) -> pd.DataFrame:
        """Return the top-``k`` candidates per query of a query frame (``qid``, ``query``)."""
        ...


def run_from_topk(qids: list[str], docnos: np.ndarray, indices: np.ndarray, scores: np.ndarray,
                  name: str, keep: np.ndarray | None = None) -> pd.DataFrame:
    """Turn per-query top-k (indices, scores) matrices, best first, into a run frame.

    ``keep`` optionally masks entries out (e.g. documents sharing no term with the query).
    """
    n_q, k = indices.shape
    ranks = np.tile(np.arange(1, k + 1), n_q)
    frame = pd.DataFrame(
        {
            QID: np.repeat(np.asarray(qids, dtype=object), k),
            DOCNO: docnos[indices.ravel()],
            RANK: ranks,
            SCORE: scores.ravel().astype(np.float64),
            RETRIEVER: name,
        }
    )
    if keep is not None:
        frame = frame[keep.ravel()].reset_index(drop=True)
    return frame
