"""Reranking an app's own documents (issue 17): `rerank` of unseen candidates with and without the app's
embeddings, next to `search` and a plain cross-encoder pass, side by side in one process.

For each SciFact test query: the run's hybrid top-100 (from `Scorer._retrieve`) handed to `Scorer.rerank`
as documents whose ids the run's corpus does not know (so nothing is looked up by id: the bi-encoder must
encode them, or use the embedding each document carries), in the hybrid order (each with its `rank`), as
an app passes its retriever's list. Timed on the first ``--queries`` queries (the first, which loads
everything, left out), each variant with its own Scorer so none profits from another's memory cache:

- ``search``: `Scorer.search(query, top_k=10)` of the main model (``--run``);
- ``rerank_main_app_embeddings``: the main model's `rerank` with the corpus embeddings passed as the app's
  vector database would hold them (the same features on the same documents as ``search``);
- ``rerank_main``: the main model's `rerank` without embeddings (every document encoded);
- ``rerank_app``: the app model's `rerank` (``--app-run``: a cascade planned for unseen documents, see
  configs/demo-app.toml) without embeddings, and ``rerank_app_embeddings`` with them;
- ``plain_ce``: `sentence_transformers.CrossEncoder.predict` of the run's cross-encoder over the same 100
  pairs.

Quality (``--quality``): nDCG@10 of ``rerank_app`` (without embeddings) and of ``search`` on every test
query, through the Scorer, with a paired t-test. Writes `benchmarks/results/rerank_unseen.json`.

    .venv/bin/python benchmarks/rerank_unseen.py --run runs/demo --app-run runs/demo-app --queries 31 --quality
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ranker import Document, Scorer
from ranker import evaluate as ev
from retrieval.data import load_beir
from retrieval.frames import DOCNO, doc_text

MEASURE = "nDCG@10"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--app-run", default="runs/demo-app")
    ap.add_argument("--queries", type=int, default=31, help="queries timed (the first one left out)")
    ap.add_argument("--quality", action="store_true", help="nDCG@10 of rerank_app and search on every test query")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rerank_unseen.json"))
    args = ap.parse_args()
    from sentence_transformers import CrossEncoder

    warnings.simplefilter("ignore")  # the main model's warning about first-stage features docs do not carry
    main_variants = ("search", "rerank_main_app_embeddings", "rerank_main")
    scorers = {v: Scorer.load(args.run, device="cpu") for v in main_variants}
    scorers |= {v: Scorer.load(args.app_run, device="cpu") for v in ("rerank_app", "rerank_app_embeddings")}
    bi = next(e for e in scorers["search"].extractors if e.name == "biencoder")  # fit on the corpus by search
    ce = next(e for e in scorers["search"].extractors if e.name == "crossencoder")
    plain = CrossEncoder(ce.local_path(ce.params.model), device="cpu", max_length=ce.params.max_length)
    dataset = load_beir(scorers["search"].manifest["dataset"])
    queries, qrels = dataset.split("test")
    queries = queries.sort_values("qid")
    rows, ranked = [], {"rerank_app": [], "search": []}
    n = len(queries) if args.quality else args.queries
    for i, (qid, query) in enumerate(zip(queries["qid"][:n], queries["query"][:n])):
        frame = scorers["search"]._retrieve(query)
        texts, docnos = doc_text(frame), frame[DOCNO].tolist()
        docs = [Document(text=t, title="", id=f"app-{k}", rank=k + 1) for k, t in enumerate(texts)]
        vectors = bi.dense.embeddings_[[bi._doc_row[str(d)][1] for d in docnos]]  # the app's vector DB
        with_emb = [Document(text=t, title="", id=f"app-{k}", rank=k + 1, embedding=v, embedding_model=bi.params.model)
                    for k, (t, v) in enumerate(zip(texts, vectors))]
        timing = {}
        out, timing["rerank_app_ms"] = timed(lambda: scorers["rerank_app"].rerank(query, docs, top_k=10))
        timing["rerank_app_biencoder_ms"] = out.timing.get("biencoder", 0.0) * 1000
        ranked["rerank_app"] += [(qid, docnos[int(r.id[4:])], 10 - k) for k, r in enumerate(out)]
        out, timing["search_ms"] = timed(lambda: scorers["search"].search(query, top_k=10))
        ranked["search"] += [(qid, r.id, 10 - k) for k, r in enumerate(out)]
        if i < args.queries:
            out, timing["rerank_app_embeddings_ms"] = timed(
                lambda: scorers["rerank_app_embeddings"].rerank(query, with_emb, top_k=10))
            out, timing["rerank_main_app_embeddings_ms"] = timed(
                lambda: scorers["rerank_main_app_embeddings"].rerank(query, with_emb, top_k=10))
            out, timing["rerank_main_ms"] = timed(lambda: scorers["rerank_main"].rerank(query, docs, top_k=10))
            timing["rerank_main_biencoder_ms"] = out.timing.get("biencoder", 0.0) * 1000
            _, timing["plain_ce_ms"] = timed(lambda: plain.predict(list(zip([query] * len(texts), texts)),
                                                                   batch_size=32, show_progress_bar=False))
            if i:
                rows.append(timing)
        if i % 25 == 0:
            print(f"{i + 1}/{n} queries", flush=True)
    keys = [k for k in rows[0]]
    med = {k: float(np.median([r[k] for r in rows])) for k in keys}
    p90 = {k: float(np.percentile([r[k] for r in rows], 90)) for k in keys}
    ratio = {"rerank_main_app_embeddings / search": ("rerank_main_app_embeddings_ms", "search_ms"),
             "rerank_app / plain_ce": ("rerank_app_ms", "plain_ce_ms"),
             "rerank_main / plain_ce": ("rerank_main_ms", "plain_ce_ms"),
             "rerank_app_embeddings / search": ("rerank_app_embeddings_ms", "search_ms")}
    ratios = {k: float(np.median([r[a] / r[b] for r in rows])) for k, (a, b) in ratio.items()}
    print(f"{len(rows)} queries timed (after the first), 100 candidates each: median ms (p90)")
    for k in keys:
        print(f"  {k}: {med[k]:.0f} ({p90[k]:.0f})")
    print("  median per-query ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    result = {"run": args.run, "app_run": args.app_run, "queries_timed": len(rows), "median_ms": med, "p90_ms": p90,
              "median_ratios": ratios, "rows": rows}
    if args.quality:
        per_q = {name: ev.per_query(pd.DataFrame(r, columns=["qid", "docno", "score"]), qrels, [MEASURE])
                 for name, r in ranked.items()}
        c = ev.compare(per_q["search"], per_q["rerank_app"], MEASURE).as_dict()
        result["quality"] = {"queries": n, MEASURE: {k: ev.mean(v)[MEASURE] for k, v in per_q.items()},
                             "rerank_app_vs_search": c}
        print(f"{n} test queries, {MEASURE}: rerank_app {c['mean_b']:.4f}, search {c['mean_a']:.4f}, "
              f"delta {c['delta']:+.4f} (p={c['p_value']:.3g}; wins/losses {c['wins']}/{c['losses']})")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
