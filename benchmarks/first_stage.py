"""First-stage retrieval quality and cost on a BEIR dataset (default: SciFact test).

Prints a table and writes benchmarks/results/first_stage_<dataset>.json. The dense index is built with an
empty embedding cache so that its wall time is the real encoding time.

    .venv/bin/python benchmarks/first_stage.py [--dataset scifact] [--split test] [--depths 100 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from ranker import evaluate as ev
from retrieval import BM25Retriever, DenseRetriever, load_beir, rrf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--depths", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()

    ds = load_beir(args.dataset)
    queries, qrels = ds.split(args.split)
    timing = {}
    t = time.perf_counter()
    bm25 = BM25Retriever().index(ds.corpus)
    timing["bm25_index_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        dense = DenseRetriever(cache=cache).index(ds.corpus)
        timing["dense_encode_corpus_s"] = time.perf_counter() - t
    timing["docs_per_s"] = len(ds.corpus) / timing["dense_encode_corpus_s"]

    results, per_q = {}, {}
    for depth in args.depths:
        t = time.perf_counter()
        rb = bm25.retrieve(queries, depth)
        timing[f"bm25_retrieve_depth{depth}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        rd = dense.retrieve(queries, depth)
        timing[f"dense_retrieve_depth{depth}_s"] = time.perf_counter() - t
        for name, run in (("bm25", rb[rb["rank"] <= args.k]), ("dense", rd[rd["rank"] <= args.k]),
                          (f"hybrid (RRF k=60, depth {depth})", rrf([rb, rd], k=60, depth=args.k))):
            if name in results:
                continue
            per_q[name] = ev.per_query(run, qrels)
            results[name] = ev.mean(per_q[name])
    hybrid = [n for n in results if n.startswith("hybrid")][-1]
    tests = [ev.compare(per_q[o], per_q[hybrid], m).as_dict() | {"a": o, "b": hybrid}
             for o in ("bm25", "dense") for m in ("nDCG@10", "R@100")]

    print(f"{ds.name} {args.split}: {len(queries)} queries, {len(ds.corpus)} documents")
    print(ev.markdown_table(results))
    for t_ in tests:
        print(f"{t_['b']} vs {t_['a']}: {t_['measure']} {t_['delta']:+.4f} p={t_['p_value']:.2g} "
              f"W/L/T {t_['wins']}/{t_['losses']}/{t_['ties']}")
    for key, value in timing.items():
        print(f"{key}: {value:.2f}")
    out = Path(__file__).parent / "results" / f"first_stage_{ds.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "dataset": ds.name, "split": args.split, "means": results, "tests": tests, "timing": timing,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
