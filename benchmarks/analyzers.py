"""BM25 under each text analysis on a dataset (default: RGB zh, whole corpus, every query).

The project's own BM25 (bm25s, Lucene variant, k1=0.9, b=0.4) with each segmenter of
``retrieval.analysis`` and with or without the stop-word list; a query that retrieves nothing counts 0.
Prints a table and writes benchmarks/results/analyzers_<dataset>.json.

    .venv/bin/python benchmarks/analyzers.py [--dataset rgb_zh] [--split test] [--stopwords zh]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ranker import evaluate as ev
from retrieval import BM25Retriever, load_beir
from retrieval.bm25 import BM25Params

MEASURES = ["nDCG@10", "R@100"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="rgb_zh")
    ap.add_argument("--split", default="test")
    ap.add_argument("--stopwords", default="zh")
    ap.add_argument("--segmenters", nargs="+", default=["words", "jieba", "bigrams"])
    args = ap.parse_args()

    ds = load_beir(args.dataset)
    queries, qrels = ds.split(args.split)
    rows = {}
    for segmenter in args.segmenters:
        for stopwords in (args.stopwords, None):
            params = BM25Params(segmenter=segmenter, stemmer=None if segmenter != "words" else "english",
                                stopwords=stopwords)
            t = time.perf_counter()
            bm25 = BM25Retriever(params).index(ds.corpus)
            index_s = time.perf_counter() - t
            run = bm25.retrieve(queries, k=100)
            per_q = ev.per_query(run, qrels, MEASURES).reindex(queries["qid"].astype(str)).fillna(0.0)
            name = f"{segmenter}, stop words {stopwords or 'none'}"
            rows[name] = {**{m: float(per_q[m].mean()) for m in MEASURES}, "index_s": index_s,
                          "queries_with_candidates": int(run["qid"].nunique()), "queries": len(queries),
                          **bm25.stats_}
            print(f"{name:28s} nDCG@10 {rows[name]['nDCG@10']:.4f}  R@100 {rows[name]['R@100']:.4f}  "
                  f"queries with candidates {rows[name]['queries_with_candidates']}/{len(queries)}  "
                  f"index {index_s:.1f}s", flush=True)
    out = Path(__file__).parent / "results" / f"analyzers_{args.dataset}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"dataset": args.dataset, "split": args.split, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
