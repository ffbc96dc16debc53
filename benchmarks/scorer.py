"""The app-facing Scorer on a real run: per-call latency by extractor, and parity with the offline store.

For N test queries of the run's dataset, ``Scorer.search`` retrieves the run's candidates and reranks
them; every feature is compared with the value the offline build stored for the same pair, and the
Scorer's order with the order `fusion-ltr evaluate` gives. Prints medians and writes JSON.

    .venv/bin/python benchmarks/scorer.py --run runs/demo --queries 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from features.base import FeatureSpec
from features.store import FeatureStore
from ranker import Scorer
from ranker.data import ranking_from_scores
from retrieval.data import load_beir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args()
    run = Path(args.run)
    t = time.perf_counter()
    scorer = Scorer.load(run)
    load_s = time.perf_counter() - t
    manifest = scorer.manifest
    specs = [FeatureSpec(n, v) for n, v in zip(scorer.feature_names, scorer.feature_versions)]
    top_n = {s.name: e.top_n for e in scorer.extractors for s in e.specs if e.top_n is not None}
    queries, _ = load_beir(manifest["dataset"]).split("test")
    queries = queries.sort_values("qid").head(args.queries)
    timings, max_diff, same_order, n_pairs = [], 0.0, 0, 0
    first_call = None
    with FeatureStore(run / "features.duckdb", read_only=True) as store:
        for i, (qid, query) in enumerate(zip(queries["qid"], queries["query"])):
            res = scorer.search(query, top_k=1000, explain=True)
            if i == 0:
                first_call = res.timing  # loads the models and the index
                continue
            timings.append(res.timing)
            data = store.matrix(specs, [qid], retriever=manifest["candidates"], top_n=top_n)
            row = {d: j for j, d in enumerate(data.docnos)}
            got = np.array([[r.features[n] for n in scorer.feature_names] for r in res])
            want = data.X[[row[r.id] for r in res]]
            both = np.isfinite(got) & np.isfinite(want)
            assert (np.isnan(got) == np.isnan(want)).all(), f"{qid}: NaN pattern differs"
            max_diff = max(max_diff, float(np.abs(got[both] - want[both]).max()))
            offline = ranking_from_scores(data, scorer.model.predict(data), "m")["docno"].tolist()
            same_order += offline == [r.id for r in res]
            n_pairs += len(res)
    keys = list(timings[0])
    med = {k: float(np.median([t[k] for t in timings])) * 1000 for k in keys}
    print(f"Scorer.load: {load_s:.2f}s; first search (loads models, index, embeddings): "
          f"{first_call['total']:.2f}s")
    print(f"{len(timings)} queries after the first, {n_pairs} pairs: median ms per call")
    for k, v in med.items():
        print(f"  {k:>14}: {v:9.1f}")
    print(f"parity: max |feature difference| {max_diff:.2e}; identical order for {same_order}/{len(timings)} queries")
    out = Path(__file__).parent / "results" / "scorer.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"run": str(run), "queries": len(timings), "pairs": n_pairs, "load_s": load_s,
                               "first_call_s": first_call["total"], "median_ms": med,
                               "max_abs_feature_diff": max_diff, "same_order": same_order}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
