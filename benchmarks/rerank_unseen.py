"""Reranking an app's own documents (issue 17): `rerank` of unseen candidates with and without the app's
embeddings, next to `search` and a plain cross-encoder pass, side by side in one process.

For each of N SciFact test queries: the run's hybrid top-100 (from `Scorer._retrieve`) handed to
`Scorer.rerank` as plain documents whose ids the run's corpus does not know (so nothing is looked up by
id: the bi-encoder must encode them, or use the embedding each document carries), (a) without
embeddings, (b) with the corpus embeddings as the app's vector database would hold them; (c)
`Scorer.search(query, top_k=10)`; (d) `sentence_transformers.CrossEncoder.predict` over the same 100
pairs. A fresh Scorer per variant, so no variant profits from another's memory cache. Medians and p90 of
the wall time per query (the first query, which loads everything, left out) and of the bi-encoder's share.
Writes `benchmarks/results/rerank_unseen.json`.

    .venv/bin/python benchmarks/rerank_unseen.py --run runs/demo --queries 31
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ranker import Document, Scorer
from retrieval.data import load_beir
from retrieval.frames import DOCNO, doc_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--queries", type=int, default=31)
    args = ap.parse_args()
    from sentence_transformers import CrossEncoder

    scorers = {v: Scorer.load(args.run, device="cpu") for v in ("rerank", "rerank_app_embeddings", "search")}
    bi = next(e for e in scorers["search"].extractors if e.name == "biencoder")  # fit on the corpus by search
    ce = next(e for e in scorers["search"].extractors if e.name == "crossencoder")
    plain = CrossEncoder(ce.local_path(ce.params.model), device="cpu", max_length=ce.params.max_length)
    queries = load_beir(scorers["search"].manifest["dataset"]).split("test")[0].sort_values("qid").head(args.queries)
    rows = []
    for i, query in enumerate(queries["query"]):
        frame = scorers["search"]._retrieve(query)
        texts = doc_text(frame)
        docs = [Document(text=t, title="", id=f"app-{k}", rank=k + 1) for k, t in enumerate(texts)]
        vectors = bi.dense.embeddings_[[bi._doc_row[str(d)][1] for d in frame[DOCNO]]]  # the app's vector DB
        with_emb = [Document(text=t, title="", id=f"app-{k}", rank=k + 1, embedding=v, embedding_model=bi.params.model)
                    for k, (t, v) in enumerate(zip(texts, vectors))]
        timing = {}
        t = time.perf_counter()
        plain_out = scorers["rerank"].rerank(query, docs, top_k=10)
        timing["rerank_ms"] = (time.perf_counter() - t) * 1000
        timing["rerank_biencoder_ms"] = plain_out.timing.get("biencoder", 0.0) * 1000
        t = time.perf_counter()
        emb_out = scorers["rerank_app_embeddings"].rerank(query, with_emb, top_k=10)
        timing["rerank_app_embeddings_ms"] = (time.perf_counter() - t) * 1000
        timing["rerank_app_embeddings_biencoder_ms"] = emb_out.timing.get("biencoder", 0.0) * 1000
        t = time.perf_counter()
        scorers["search"].search(query, top_k=10)
        timing["search_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        plain.predict(list(zip([query] * len(texts), texts)), batch_size=32, show_progress_bar=False)
        timing["plain_ce_ms"] = (time.perf_counter() - t) * 1000
        if i:
            rows.append(timing)
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    p90 = {k: float(np.percentile([r[k] for r in rows], 90)) for k in rows[0]}
    ratios = {"rerank_app_embeddings / search": float(np.median([r["rerank_app_embeddings_ms"] / r["search_ms"] for r in rows])),
              "rerank / plain_ce": float(np.median([r["rerank_ms"] / r["plain_ce_ms"] for r in rows]))}
    print(f"{len(rows)} queries (after the first), 100 candidates each: median ms (p90)")
    for k in med:
        print(f"  {k}: {med[k]:.0f} ({p90[k]:.0f})")
    print("  median per-query ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    out = Path(__file__).parent / "results" / "rerank_unseen.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"run": args.run, "queries": len(rows), "median_ms": med, "p90_ms": p90,
                               "median_ratios": ratios, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
