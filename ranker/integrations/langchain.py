"""LangChain: a document compressor that reranks a retriever's documents (``pip install 'fusion-ltr[langchain]'``).

    from langchain_core.retrievers import ...  # any retriever
    from ranker.integrations.langchain import FusionLTRCompressor

    compressor = FusionLTRCompressor.from_run("runs/demo-app", top_n=5)
    docs = compressor.compress_documents(retriever.invoke(query), query)

Each returned document is the input one (page content and metadata kept) with ``relevance_score`` added
to its metadata, as LangChain's Cohere reranker does.
"""

from __future__ import annotations

from typing import Any, Sequence

from . import load_scorer, need, relevance, scorer_document

need("langchain_core", "langchain")

from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from pydantic import ConfigDict  # noqa: E402


class FusionLTRCompressor(BaseDocumentCompressor):
    """Rerank documents with a fusion-ltr model; keep the best ``top_n`` (all when None)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    scorer: Any
    top_n: int | None = 3
    min_score: float | None = None

    @classmethod
    def from_run(cls, run: str, *, model: str = "model", **kwargs) -> "FusionLTRCompressor":
        return cls(scorer=load_scorer(run, model), **kwargs)

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        if not documents:
            return []
        docs = [scorer_document(i, d.page_content, d.metadata, d.metadata.get("score"))
                for i, d in enumerate(documents)]
        ranking = self.scorer.rerank(query, docs, top_k=self.top_n, min_score=self.min_score)
        out = []
        for r in ranking:
            source = documents[int(r.id)]
            out.append(Document(page_content=source.page_content, id=source.id,
                                metadata={**source.metadata, "relevance_score": relevance(r)}))
        return out
