"""Haystack 2: a ranker component (``pip install 'fusion-ltr[haystack]'``).

    from haystack import Pipeline
    from ranker.integrations.haystack import FusionLTRRanker

    pipe = Pipeline()
    pipe.add_component("retriever", retriever)
    pipe.add_component("ranker", FusionLTRRanker("runs/demo-app", top_k=5))
    pipe.connect("retriever.documents", "ranker.documents")
    pipe.run({"retriever": {"query": q}, "ranker": {"query": q}})

Each returned ``Document`` is a copy of the input one (id, content and meta kept) with ``score`` the
calibrated probability; the input's score goes in as the first stage's.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from . import load_scorer, need, relevance, scorer_document

need("haystack", "haystack")

from haystack import Document, component  # noqa: E402


@component
class FusionLTRRanker:
    """Rerank documents with a fusion-ltr model; keep the best ``top_k`` (all when None)."""

    def __init__(self, run, *, model: str = "model", top_k: Optional[int] = 10, min_score: Optional[float] = None):
        self.scorer = load_scorer(run, model)
        self.top_k, self.min_score = top_k, min_score

    @component.output_types(documents=List[Document])
    def run(self, query: str, documents: List[Document], top_k: Optional[int] = None):
        if not documents:
            return {"documents": []}
        docs = [scorer_document(i, d.content or "", d.meta, d.score) for i, d in enumerate(documents)]
        ranking = self.scorer.rerank(query, docs, top_k=top_k if top_k is not None else self.top_k,
                                     min_score=self.min_score)
        return {"documents": [dataclasses.replace(documents[int(r.id)], score=relevance(r)) for r in ranking]}
