"""How much a model's quality moves with the training queries it is given, per setting (issue 13,
reproducibility), on training queries only.

The demo's `content` variant moved by 0.010 nDCG@10 on test across three cross-encoder seeds, because the
seed also draws which training queries the ranker learns from. This measures that sensitivity without the
test split: a fixed held-out share of the run's training queries (seeded hash) is scored by models trained
on ``--draws`` different seeded samples of the rest, for each (feature set, settings) pair. A stable
setting has a small spread (max - min over the draws) at a good mean.

    .venv/bin/python benchmarks/variant_stability.py --config configs/demo.toml --draws 5

Writes `benchmarks/results/variant_stability.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from features import query_norm
from features.matrix import RankingData
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.data import ranking_from_scores
from ranker.lambdamart import LambdaMART
from ranker.run import Run
from retrieval.data import hash_split

CONTENT = ["bm25", "coverage", "cosine", "doc_len", "query_len", "len_ratio"]
NORM = query_norm.derived_names(["bm25", "coverage", "cosine"])
FIRST = ["fs_rank", "fs_score", "rank_bm25", "score_bm25", "rank_dense", "score_dense", "bm25", "cosine", "doc_len",
         "query_len", "len_ratio"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.toml")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--heldout", type=float, default=0.3, help="share of the training queries held out")
    ap.add_argument("--train-queries", type=int, default=400, help="training queries per draw")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, normalize=("bm25", "coverage", "cosine"),
                                                              features=(), cascade=(), variants={}))
    run = Run(cfg, log=lambda *a: None, progress=False)
    data = RankingData.concat([run.matrices.train, run.matrices.valid])
    qrels = run.dataset.qrels[cfg.dataset.splits[0]]
    rest, heldout = hash_split(list(data.unique_qids), args.heldout, 7, salt="stability:")
    base = cfg.ranker.base_params
    small = dataclasses.replace(base, num_leaves=4, min_data_in_leaf=50, lambda_l2=10.0, n_estimators=300,
                                early_stopping_rounds=0)
    settings = {"config (15 leaves, early stopping on 20%)": base, "small trees, 300, no early stopping": small}
    sets = {"content": CONTENT, "content + normalised": CONTENT + NORM, "first_stage_only": FIRST}
    test = data.subset(heldout)
    qrels = qrels[qrels["qid"].isin(set(heldout))]  # per_query counts every judged query it is given
    results = {"config": args.config, "heldout_queries": len(heldout), "train_queries": args.train_queries,
               "draws": args.draws, "rows": {}}
    print(f"{len(heldout)} held-out training queries; {args.draws} draws of {args.train_queries} of the other {len(rest)}")
    for set_name, feats in sets.items():
        for label, params in settings.items():
            scores = []
            for draw in range(args.draws):
                rng = np.random.default_rng(draw)
                qids = sorted(rng.choice(sorted(rest), size=min(args.train_queries, len(rest)), replace=False))
                sub = query_norm.add(data.subset(qids), feats)
                if params.early_stopping_rounds:
                    fit_q, valid_q = hash_split(qids, cfg.ranker.valid_fraction, base.seed, salt="valid:")
                    model = LambdaMART.from_params(params).fit(sub.subset(fit_q), sub.subset(valid_q))
                else:
                    model = LambdaMART.from_params(params).fit(sub)
                held = query_norm.add(test, feats)
                per_q = ev.per_query(ranking_from_scores(held, model.predict(held), "m"), qrels, ["nDCG@10"])
                scores.append(float(per_q["nDCG@10"].mean()))
            key = f"{set_name} | {label}"
            results["rows"][key] = {"mean": float(np.mean(scores)), "spread": float(np.ptp(scores)),
                                    "std": float(np.std(scores, ddof=1)), "per_draw": scores}
            print(f"{key}: mean {np.mean(scores):.4f}, spread {np.ptp(scores):.4f}, sd {np.std(scores, ddof=1):.4f} "
                  f"({' '.join(f'{s:.4f}' for s in scores)})", flush=True)
    out = Path(__file__).parent / "results" / "variant_stability.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
