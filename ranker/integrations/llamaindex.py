"""LlamaIndex: a node postprocessor that reranks retrieved nodes (``pip install 'fusion-ltr[llamaindex]'``).

    from ranker.integrations.llamaindex import FusionLTRRerank

    query_engine = index.as_query_engine(similarity_top_k=50,
                                         node_postprocessors=[FusionLTRRerank.from_run("runs/demo-app", top_n=5)])

Each returned ``NodeWithScore`` holds the input node (metadata kept) with ``score`` the calibrated
probability; the retriever's score goes in as the first stage's.
"""

from __future__ import annotations

from typing import Any, List, Optional

from . import load_scorer, need, relevance, scorer_document

need("llama_index.core", "llamaindex")

from llama_index.core.bridge.pydantic import Field  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402


class FusionLTRRerank(BaseNodePostprocessor):
    """Rerank nodes with a fusion-ltr model; keep the best ``top_n`` (all when None)."""

    scorer: Any = Field(description="a ranker.Scorer")
    top_n: Optional[int] = Field(default=3)
    min_score: Optional[float] = Field(default=None)

    @classmethod
    def from_run(cls, run: str, *, model: str = "model", **kwargs) -> "FusionLTRRerank":
        return cls(scorer=load_scorer(run, model), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "FusionLTRRerank"

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("FusionLTRRerank needs the query (a QueryBundle)")
        if not nodes:
            return []
        docs = [scorer_document(i, n.node.get_content(metadata_mode=MetadataMode.NONE), n.node.metadata, n.score)
                for i, n in enumerate(nodes)]
        ranking = self.scorer.rerank(query_bundle.query_str, docs, top_k=self.top_n, min_score=self.min_score)
        return [NodeWithScore(node=nodes[int(r.id)].node, score=relevance(r)) for r in ranking]
