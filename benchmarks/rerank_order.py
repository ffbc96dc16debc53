"""Does the app model rerank, or keep the order it is given? (issue 35)

For each SciFact test query, the run's hybrid top-100 handed to the app model's `Scorer.rerank` as
documents the run does not know (ids it has never seen; no embeddings, so the bi-encoder encodes them),
in two ways, side by side in one process:

- ``in_order``: in the hybrid's order, each document with its ``rank`` (an app that passes its retriever's list);
- ``shuffled``: in a seeded random order, without ``rank`` or ``score`` (an app that passes a set);

next to the order-free reference, a plain ``sentence_transformers.CrossEncoder.predict`` of the run's
cross-encoder over the same 100 pairs, and the first stage's own order. nDCG@10 of each on every test
query (``--queries`` to cut), with paired t-tests against the first stage and the plain cross-encoder.
Writes `benchmarks/results/rerank_order.json`. ``--plain-only``: the plain cross-encoder and the first stage
alone (the app model's own figures on all 300 queries come from `evaluate`, which scores the same two
views stage by stage from the store, computing what the Scorer would compute).

    .venv/bin/python benchmarks/rerank_order.py --app-run runs/demo-app --run runs/demo
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from features.store import FeatureStore
from ranker import Document, Scorer
from ranker import evaluate as ev
from retrieval.data import load_beir
from retrieval.frames import DOCNO, QID, RANK, doc_text

MEASURE = "nDCG@10"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app-run", default="runs/demo-app")
    ap.add_argument("--run", default="runs/demo", help="the run whose store holds the candidates")
    ap.add_argument("--queries", type=int, default=0, help="the first N test queries (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the shuffled order")
    ap.add_argument("--plain-only", action="store_true", help="only the plain cross-encoder and the first stage")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rerank_order.json"))
    args = ap.parse_args()
    from sentence_transformers import CrossEncoder

    warnings.simplefilter("ignore")
    scorer = Scorer.load(args.app_run, device="cpu")
    ce = next(e for e in scorer.extractors if e.name == "crossencoder")
    plain = CrossEncoder(ce.local_path(ce.params.model), device="cpu", max_length=ce.params.max_length)
    dataset = load_beir(scorer.manifest["dataset"])
    queries, qrels = dataset.split("test")
    queries = queries.sort_values(QID)
    if args.queries:
        queries = queries.iloc[:args.queries]
    with FeatureStore(Path(args.run) / "features.duckdb", read_only=True) as store:
        pairs = store.pairs(queries[QID], retriever=scorer.candidates)
    rng = np.random.default_rng(args.seed)
    ranked = {"first_stage": [], "plain_ce": []} | ({} if args.plain_only else {"in_order": [], "shuffled": []})
    seconds = {k: 0.0 for k in ranked}
    t0 = time.perf_counter()
    for i, (qid, query) in enumerate(zip(queries[QID], queries["query"])):
        cands = pairs[pairs[QID] == qid].sort_values(RANK)
        texts, docnos = doc_text(cands), cands[DOCNO].tolist()
        n = len(texts)
        ranked["first_stage"] += [(qid, d, n - k) for k, d in enumerate(docnos)]
        in_order = [Document(text=t, id=f"app-{k}", rank=k + 1) for k, t in enumerate(texts)]
        perm = rng.permutation(n)
        shuffled = [Document(text=texts[k], id=f"app-{k}") for k in perm]
        for name, docs in () if args.plain_only else (("in_order", in_order), ("shuffled", shuffled)):
            t = time.perf_counter()
            out = scorer.rerank(query, docs, top_k=10)
            seconds[name] += time.perf_counter() - t
            ranked[name] += [(qid, docnos[int(r.id[4:])], 10 - k) for k, r in enumerate(out)]
        t = time.perf_counter()
        scores = plain.predict(list(zip([query] * n, texts)), batch_size=32, show_progress_bar=False)
        seconds["plain_ce"] += time.perf_counter() - t
        ranked["plain_ce"] += [(qid, d, float(s)) for d, s in zip(docnos, scores)]
        if i % 25 == 0:
            print(f"{i + 1}/{len(queries)} queries ({time.perf_counter() - t0:.0f}s)", flush=True)
    qrels = qrels[qrels[QID].isin(set(queries[QID]))]  # the queries ranked here (a missing one would count 0)
    per_q = {name: ev.per_query(pd.DataFrame(r, columns=["qid", "docno", "score"]), qrels, [MEASURE])
             for name, r in ranked.items()}
    means = {k: ev.mean(v)[MEASURE] for k, v in per_q.items()}
    compared = [("first_stage", "plain_ce")] if args.plain_only else [
        (a, b) for a in ("first_stage", "plain_ce") for b in ("in_order", "shuffled")] + [("in_order", "shuffled")]
    tests = {f"{b} vs {a}": ev.compare(per_q[a], per_q[b], MEASURE).as_dict() for a, b in compared}
    print(f"{len(queries)} test queries, {MEASURE} (the app model: {args.app_run}):")
    for k, v in means.items():
        print(f"  {k}: {v:.4f}" + (f" ({seconds[k]:.0f}s)" if seconds.get(k) else ""))
    for k, c in tests.items():
        print(f"  {k}: {c['delta']:+.4f} (p={c['p_value']:.3g}, wins/losses {c['wins']}/{c['losses']})")
    result = {"app_run": args.app_run, "queries": len(queries), "seed": args.seed, MEASURE: means, "tests": tests,
              "seconds": seconds, "manifest_hidden_when_unranked": scorer.hidden_when_unranked}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
