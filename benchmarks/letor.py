"""LETOR 4.0 MQ2008: 5-fold NDCG@1/3/5/10 of our LambdaMART (both backends) next to LightGBM's
`lambdarank` with its default parameters, all run here side by side.

NDCG uses LETOR's exponential gains (2^label - 1) through ir-measures. About a third of MQ2008's
queries have no relevant document; their NDCG is undefined (ideal DCG = 0). We report three
conventions: excluded (the main figure), counted as 0, and counted as 1 (LightGBM's own metric).

    .venv/bin/python benchmarks/letor.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ir_measures
import numpy as np

from ranker.data import from_letor, qrels_of, ranking_from_scores
from ranker.lambdamart import LambdaMART
from retrieval.data import load_letor_fold

MEASURES = [ir_measures.nDCG(gains={0: 0, 1: 1, 2: 3}) @ k for k in (1, 3, 5, 10)]
NAMES = ["NDCG@1", "NDCG@3", "NDCG@5", "NDCG@10"]


def lightgbm_default(train, valid):
    import lightgbm as lgb

    class Wrapped:
        def fit(self):
            self.booster = lgb.train({"objective": "lambdarank", "verbosity": -1, "seed": 42, "deterministic": True,
                                      "force_row_wise": True},
                                     lgb.Dataset(train.X, train.y, group=train.group))
            return self

        def predict(self, data):
            return self.booster.predict(data.X)

    return Wrapped().fit()


def per_query(data, scores):
    run = ranking_from_scores(data, scores, "m")
    qrels = qrels_of(data)
    rows = {}
    for m in ir_measures.iter_calc(MEASURES, qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"}),
                                   run.rename(columns={"qid": "query_id", "docno": "doc_id"})):
        rows.setdefault(m.query_id, {})[NAMES[MEASURES.index(m.measure)]] = m.value
    return rows


def main() -> None:
    systems = {
        "ours: LightGBM": lambda tr, va: LambdaMART(backend="lightgbm").fit(tr, va),
        "ours: XGBoost": lambda tr, va: LambdaMART(backend="xgboost").fit(tr, va),
        "LightGBM lambdarank, default parameters (no early stopping)": lightgbm_default,
    }
    results = {name: {"excluded": [], "as_0": [], "as_1": [], "seconds": 0.0} for name in systems}
    for fold in range(1, 6):
        tr, va, te = (from_letor(d) for d in load_letor_fold("letor_mq2008", fold))
        has_rel = {q for q, y in zip(te.qids, te.y) if y > 0}
        for name, make in systems.items():
            t = time.perf_counter()
            model = make(tr, va)
            results[name]["seconds"] += time.perf_counter() - t
            pq = per_query(te, model.predict(te))
            qids = sorted(set(te.qids))
            rel = [q for q in qids if q in has_rel]
            for conv, fill, keep in (("excluded", None, rel), ("as_0", 0.0, qids), ("as_1", 1.0, qids)):
                vals = [[pq[q][n] if q in has_rel else fill for n in NAMES] for q in keep]
                results[name][conv].append(np.mean(vals, axis=0).tolist())
        print(f"fold {fold}: {len(set(te.qids))} test queries, {len(has_rel)} with a relevant document", flush=True)
    summary = {}
    for name, r in results.items():
        summary[name] = {conv: dict(zip(NAMES, np.mean(r[conv], axis=0).round(4).tolist()))
                         for conv in ("excluded", "as_0", "as_1")} | {"fit_seconds_total": round(r["seconds"], 2)}
    print("| system | " + " | ".join(NAMES) + " | NDCG@10 (no-relevant as 0) | as 1 |")
    print("|---|" + "---:|" * (len(NAMES) + 2))
    for name, s in summary.items():
        print(f"| {name} | " + " | ".join(f"{s['excluded'][n]:.4f}" for n in NAMES)
              + f" | {s['as_0']['NDCG@10']:.4f} | {s['as_1']['NDCG@10']:.4f} |")
    out = Path(__file__).parent / "results" / "letor_mq2008.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
