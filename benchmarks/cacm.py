"""CACM (52 judged queries): learned fusion under 5-fold query-level cross-validation against
reciprocal rank fusion of the same retrievers, for several learner settings, side by side.

Needs the CACM run folder: `fusion-ltr retrieve --config configs/cacm.toml` and
`fusion-ltr features --config configs/cacm.toml` first. Each setting is cross-validated with
several fold seeds; per-query nDCG@10 is averaged over seeds before the paired test against RRF.

    .venv/bin/python benchmarks/cacm.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from features import query_norm
from features.store import FeatureStore
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.data import ranking_from_scores
from ranker.lambdamart import LambdaMARTParams, cross_val_predict
from ranker.run import Run
from retrieval import load_beir

MONOTONE = {"fs_score": 1, "fs_rank": -1, "rank_bm25": -1, "score_bm25": 1, "rank_dense": -1, "score_dense": 1,
            "bm25": 1, "cosine": 1, "coverage": 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/cacm.toml")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    cfg = load_config(args.config)
    ds = load_beir(cfg.dataset.name)
    queries, qrels = ds.split(cfg.dataset.test_split)
    run = Run(cfg)
    specs = run.feature_set.specs
    with FeatureStore(run.layout.store, read_only=True) as store:
        data = store.matrix(specs, queries["qid"], retriever=cfg.features.candidates)
    names = data.feature_names
    plain = LambdaMARTParams(n_estimators=100, learning_rate=0.1, num_leaves=31, min_data_in_leaf=20,
                             lambda_l2=0.0, early_stopping_rounds=0)
    robust = dataclasses.replace(cfg.ranker.base_params, monotone={})  # small trees (the config adds monotone)
    mono = dataclasses.replace(robust, monotone={k: v for k, v in MONOTONE.items() if k in names})
    no_rrf = [n for n in names if n not in ("fs_score", "fs_rank")]
    settings = {
        "plain LambdaMART (31 leaves, lr 0.1, 100 trees)": (plain, names),
        "plain, without the RRF score and rank": (plain, no_rrf),
        "small trees (4 leaves, min 50 per leaf, L2 10)": (robust, names),
        "small trees + monotone constraints = configs/cacm.toml": (mono, names),
        "small trees, without the RRF score and rank": (robust, no_rrf),
        "small trees, without freshness": (robust, [n for n in names if n not in ("age_days", "freshness", "has_timestamp")]),
        "small trees + query-level normalisation of bm25, coverage, cosine (issue 13)":
            (mono, names + query_norm.derived_names([n for n in ("bm25", "coverage", "cosine") if n in names])),
    }
    rrf = ev.per_query(ranking_from_scores(data, -data.X[:, names.index("fs_rank")], "rrf"), qrels)
    results = {"RRF (hybrid first stage)": {"nDCG@10": float(rrf["nDCG@10"].mean())}}
    print(f"CACM: {len(data.group)} queries, {len(data.y)} candidate pairs, features {names}")
    print(f"RRF: nDCG@10 {results['RRF (hybrid first stage)']['nDCG@10']:.4f}")
    for label, (params, feats) in settings.items():
        sub = query_norm.add(data, feats)
        per_seed = []
        for seed in range(args.seeds):
            fold_params = dataclasses.replace(params, seed=seed,
                                              monotone={k: v for k, v in params.monotone.items() if k in feats})
            scores = cross_val_predict(fold_params, sub, 5, seed=seed)
            per_seed.append(ev.per_query(ranking_from_scores(sub, scores, "ltr"), qrels))
        mean_pq = sum(per_seed) / len(per_seed)
        cmp = ev.compare(rrf, mean_pq, "nDCG@10")
        results[label] = {"nDCG@10": float(mean_pq["nDCG@10"].mean()),
                          "per_seed": [float(p["nDCG@10"].mean()) for p in per_seed],
                          "vs_rrf": cmp.as_dict()}
        print(f"{label}: nDCG@10 {results[label]['nDCG@10']:.4f} (seeds {np.round(results[label]['per_seed'], 3).tolist()}), "
              f"vs RRF {cmp.delta:+.4f} p={cmp.p_value:.3g} W/L/T {cmp.wins}/{cmp.losses}/{cmp.ties}", flush=True)
    out = Path(__file__).parent / "results" / "cacm.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
