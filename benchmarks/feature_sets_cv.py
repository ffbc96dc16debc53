"""Choose a feature set on training queries: K-fold cross-validation of one LambdaMART per feature set.

For a run config (its built features, its ranker settings and ``ranker.normalize``), each named feature
set is trained and scored out of fold on the run's training queries (the training split minus the
leakage exclusion's queries; the test split is never read), over every candidate of each query. Prints
nDCG@10 per set and a paired t-test of each against the first; writes
``benchmarks/results/feature_sets_cv.json`` (or ``--out``).

    .venv/bin/python benchmarks/feature_sets_cv.py --config configs/demo.toml --normalize bm25 coverage cosine \\
        --set content=bm25,coverage,cosine,doc_len,query_len,len_ratio \\
        --set content+q=bm25,coverage,cosine,doc_len,query_len,len_ratio,bm25_qrank,bm25_qz,bm25_qgap
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from features.matrix import RankingData
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.data import ranking_from_scores
from ranker.lambdamart import cross_val_predict
from ranker.run import Run

MEASURE = "nDCG@10"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--normalize", nargs="*", default=None, help="override ranker.normalize")
    ap.add_argument("--set", action="append", required=True, help="NAME=feature,feature,...")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "feature_sets_cv.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.normalize is not None:
        cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, normalize=tuple(args.normalize)))
    cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, features=(), cascade=(), variants={}))
    run = Run(cfg, log=lambda *a: None, progress=False)
    data = run.matrices
    train = RankingData.concat([data.train, data.valid])
    qrels = run.dataset.qrels[cfg.dataset.splits[0]]
    qrels = qrels[qrels["qid"].isin(set(train.unique_qids))]  # per_query counts every judged query it is given
    sets = dict(s.split("=", 1) for s in args.set)
    params = cfg.ranker.base_params
    per_q = {}
    for name, features in sets.items():
        scores = cross_val_predict(params, train.select(features.split(",")), args.folds,
                                   valid_fraction=cfg.ranker.valid_fraction, seed=params.seed)
        per_q[name] = ev.per_query(ranking_from_scores(train, scores, name), qrels, [MEASURE])
    first = next(iter(sets))
    out = {"config": args.config, "normalize": list(cfg.ranker.normalize), "folds": args.folds,
           "queries": len(train.unique_qids), "sets": {}}
    print(f"{len(train.unique_qids)} training queries, {args.folds}-fold CV, {MEASURE}:")
    for name in sets:
        row = {"features": sets[name].split(","), MEASURE: ev.mean(per_q[name])[MEASURE]}
        if name != first:
            c = ev.compare(per_q[first], per_q[name], MEASURE).as_dict()
            row |= {"delta_vs_" + first: c["delta"], "p": c["p_value"]}
        out["sets"][name] = row
        print(f"  {name}: {row[MEASURE]:.4f}" + (f" ({row['delta_vs_' + first]:+.4f} vs {first}, p={row['p']:.3g})"
                                               if name != first else ""))
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
