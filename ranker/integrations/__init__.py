"""Adapters for the frameworks apps and researchers already use, each a small module behind an extra:

- :mod:`ranker.integrations.langchain`: ``FusionLTRCompressor``, a LangChain document compressor
  (``ContextualCompressionRetriever(base_compressor=..., base_retriever=...)``);
- :mod:`ranker.integrations.llamaindex`: ``FusionLTRRerank``, a LlamaIndex node postprocessor;
- :mod:`ranker.integrations.haystack`: ``FusionLTRRanker``, a Haystack ranker component;
- :mod:`ranker.integrations.pyterrier`: ``FusionLTRTransformer``, a PyTerrier transformer
  (``pt.Experiment([bm25, bm25 >> fusion], ...)``).

Each turns the framework's documents into the Scorer's (text; ``title`` and ``timestamp`` from the
metadata; the framework's retrieval score as the first stage's ``score`` when it has one), calls
:meth:`Scorer.rerank` once per query, and returns the framework's own objects, metadata untouched, best
first, with the calibrated probability of relevance (the raw score for an uncalibrated model) where the
framework has a field for a score. The order is ``Scorer.rerank``'s (each integration's test checks it).
"""

from __future__ import annotations

import math

from retrieval.models import require


def load_scorer(scorer, model: str = "model"):
    """A :class:`Scorer` as given, or loaded from a run folder."""
    from ..scorer import Scorer

    return scorer if isinstance(scorer, Scorer) else Scorer.load(scorer, model=model)


def scorer_document(index: int, text: str, meta: dict | None = None, score=None) -> dict:
    """The Scorer's document for the ``index``-th item of a framework's list: its id is the index (the
    framework's own ids may be absent or repeated); ``title`` and ``timestamp`` (or ``date``) from ``meta``."""
    meta = meta or {}
    doc = {"id": str(index), "text": text}
    if meta.get("title"):
        doc["title"] = str(meta["title"])
    stamp = meta.get("timestamp", meta.get("date"))
    if stamp is not None:
        doc["timestamp"] = stamp
    if score is not None and isinstance(score, (int, float)) and math.isfinite(score):
        doc["score"] = float(score)
    return doc


def relevance(result) -> float:
    """The score an integration reports: P(relevant) when the model is calibrated, else its raw score."""
    return result.probability if result.probability is not None else result.score


def need(module: str, extra: str):
    return require(module, f"pip install 'fusion-ltr[{extra}]'")
