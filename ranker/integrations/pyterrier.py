"""PyTerrier: a transformer over a ranked frame (``pip install 'fusion-ltr[pyterrier]'``).

    import pyterrier as pt
    from ranker.integrations.pyterrier import FusionLTRTransformer

    fusion = FusionLTRTransformer("runs/demo")
    pt.Experiment([bm25, bm25 >> pt.text.get_text(dataset, "text") >> fusion], topics, qrels, ["ndcg_cut_10"])

The input needs ``qid``, ``query``, ``docno`` and ``text`` (``title`` and ``timestamp`` are used when
present; ``rank`` and ``score`` are the first stage's). The output has the same rows with ``score`` the
model's (``probability`` beside it when the model is calibrated) and ``rank`` recomputed.
"""

from __future__ import annotations

import pandas as pd

from . import load_scorer, need

pt = need("pyterrier", "pyterrier")

from retrieval.errors import InputError  # noqa: E402

NEEDED = ("qid", "query", "docno", "text")


class FusionLTRTransformer(pt.Transformer):
    """Rerank each query's documents with a fusion-ltr model."""

    def __init__(self, run, *, model: str = "model", use_ranks: bool = True):
        self.scorer = load_scorer(run, model)
        self.use_ranks = use_ranks  # pass the input's rank and score on as the first stage's

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in NEEDED if c not in inp.columns]
        if missing:
            raise InputError(f"FusionLTRTransformer: the input lacks columns {missing} (found {list(inp.columns)}); "
                             "add the text with pt.text.get_text(dataset, 'text') before it")
        parts = []
        for qid, group in inp.groupby("qid", sort=False):
            if "rank" in group:
                group = group.sort_values("rank", kind="stable")
            docs = []
            for i, row in enumerate(group.itertuples(index=False)):
                doc = {"id": str(i), "text": row.text}
                for key in ("title", "timestamp"):
                    value = getattr(row, key, None)
                    if value is not None and value == value:
                        doc[key] = value
                if self.use_ranks and "score" in group:  # the first stage's: its order (from 1) and score
                    doc["rank"], doc["score"] = i + 1, float(row.score)
                docs.append(doc)
            ranking = self.scorer.rerank(group["query"].iloc[0], docs)
            order = [int(r.id) for r in ranking]
            out = group.iloc[order].copy()
            out["score"] = [r.score for r in ranking]
            if any(r.probability is not None for r in ranking):
                out["probability"] = [r.probability for r in ranking]
            out["rank"] = range(len(out))  # PyTerrier ranks from 0
            parts.append(out)
        if not parts:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        return pd.concat(parts, ignore_index=True)
