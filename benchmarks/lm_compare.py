"""The two packaged causal LMs on the same pairs: SmolLM2-135M-Instruct against Gemma 3 270M (issue 13).

Pairs: the first-stage top ``--top`` of a seeded sample of the ranker's side of the training split (queries
no fine-tuned model learns from; choices are made there, never on test). Both models score the very same
pairs with the same prompt and document budget, in alternating chunks so that the machine's load falls on
both alike; the cost is pairs/s per model. Quality: each LM feature alone reranks the top ``--top`` (the
rest keeps its first-stage order); nDCG@10 against the first stage, BM25 and the other model (paired t).

    .venv/bin/python benchmarks/lm_compare.py --config configs/demo.toml --queries 100 --top 10 --threads 1

Writes `benchmarks/results/lm_compare.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from costly_signals import ranker_side_head  # benchmarks/ (this script's folder) is on sys.path
from features.lm_likelihood import DEFAULT_LM, GEMMA_LM, LMLikelihoodExtractor, LMParams
from ranker import evaluate as ev
from ranker.config import load_config
from retrieval import read_trec_run
from retrieval.frames import QID


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.toml")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--doc-tokens", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=100, help="pairs per alternating chunk")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--models", nargs="+", default=[DEFAULT_LM, GEMMA_LM])
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    queries, qrels, run, head, layout = ranker_side_head(cfg, args.queries, args.top)
    bm25_run = read_trec_run(layout.retrieval_trec("bm25", "train"))
    first = ev.per_query(run, qrels)
    bm25 = ev.per_query(bm25_run[bm25_run[QID].isin(set(queries[QID]))], qrels)
    print(f"{len(queries)} validation queries, {len(head)} pairs; first stage {first['nDCG@10'].mean():.4f}, "
          f"BM25 {bm25['nDCG@10'].mean():.4f}", flush=True)

    exts = {m: LMLikelihoodExtractor(LMParams(model=m, doc_tokens=args.doc_tokens)) for m in args.models}
    values = {m: {f: np.full(len(head), np.nan) for f in LMLikelihoodExtractor.FEATURES} for m in args.models}
    seconds = dict.fromkeys(args.models, 0.0)
    for m, ext in exts.items():  # load (and warm up) outside the timed chunks
        ext.compute(head.iloc[:2])
    for start in range(0, len(head), args.chunk):
        chunk = head.iloc[start:start + args.chunk]
        for m, ext in exts.items():
            t = time.perf_counter()
            got = ext.compute(chunk)
            seconds[m] += time.perf_counter() - t
            for f, v in got.items():
                values[m][f][start:start + len(chunk)] = v
        print(f"  {start + len(chunk)}/{len(head)} pairs: " + ", ".join(
            f"{m.split('/')[-1]} {(start + len(chunk)) / s:.2f} pairs/s" for m, s in seconds.items()), flush=True)

    results = {"queries": len(queries), "pairs": len(head), "top": args.top, "doc_tokens": args.doc_tokens,
               "threads": args.threads or None, "first_stage": float(first["nDCG@10"].mean()),
               "bm25": float(bm25["nDCG@10"].mean()), "models": {}}
    per_q = {}
    for m in args.models:
        row = {"pairs_per_s": len(head) / seconds[m], "features": {}}
        for f in LMLikelihoodExtractor.FEATURES:
            pq = ev.per_query(ev.reorder_head(run, head, values[m][f]), qrels)
            per_q[m, f] = pq
            row["features"][f] = {"nDCG@10": float(pq["nDCG@10"].mean()),
                                  "vs_first_stage": ev.compare(first, pq, "nDCG@10").as_dict(),
                                  "vs_bm25": ev.compare(bm25, pq, "nDCG@10").as_dict()}
            print(f"{m}: {f} alone on the top-{args.top}: nDCG@10 {pq['nDCG@10'].mean():.4f}", flush=True)
        results["models"][m] = row
    if len(args.models) == 2:
        a, b = args.models
        results["b_vs_a"] = {f: ev.compare(per_q[a, f], per_q[b, f], "nDCG@10").as_dict()
                             for f in LMLikelihoodExtractor.FEATURES}
        results["correlation"] = {f: float(pd.Series(values[a][f]).corr(pd.Series(values[b][f]), method="spearman"))
                                  for f in LMLikelihoodExtractor.FEATURES}
    out = Path(__file__).parent / "results" / "lm_compare.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps({m: round(r["pairs_per_s"], 2) for m, r in results["models"].items()}), f"wrote {out}")


if __name__ == "__main__":
    main()
