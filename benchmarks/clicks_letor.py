"""Learning from clicks alone on LETOR MQ2008 (issue 31): the field's simulation protocol (Joachims et al.,
WSDM 2017; Oosterhuis and de Rijke): a weak production ranker (LambdaMART on 10 seeded training queries'
judgements) shows each session's top 10 of a training query drawn at random; clicks come from a
position-based model (examination (1/rank)^eta; a click on an examined document with probability 0.1 for
label 0 rising to 1.0 for label 2, ``--non-relevant``); ``--explore``: the share of sessions shown in a
random order. LambdaMART then learns from the clicks alone:

- ``raw``: each session a query group, its clicks the labels;
- ``position``: the same with the positions shown: LightGBM's unbiased lambdarank (Hu et al., WWW 2019), or
  XGBoost's ``lambdarank_unbiased`` with ``--backend xgboost``;
- ``pbm``: one row per (query, document) shown, labelled by the PBM's P(click | examined), with the
  examination curve estimated from the log by EM (``ranker.clicks.pair_labels``);
- ``ctr``: the same rows labelled by the raw click-through rate;

beside the model trained on the judgements themselves. All models: 100 trees, 15 leaves, no early
stopping (a click-based validation metric is itself biased). nDCG@10 on the fold's test queries judged by
their true labels, with paired t-tests. Writes `benchmarks/results/clicks_letor.json`.

    .venv/bin/python benchmarks/clicks_letor.py [--folds 1 2 3 4 5] [--sessions 1000 10000 100000] [--eta 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.matrix import RankingData
from ranker import evaluate as ev
from ranker.clicks import examination, pair_labels, simulate
from ranker.data import from_letor
from ranker.lambdamart import LambdaMART, LambdaMARTParams
from ranker.tuning import per_query
from retrieval.data import load_letor_fold

MEASURE = "nDCG@10"
PARAMS = LambdaMARTParams(n_estimators=100, learning_rate=0.05, num_leaves=15, min_data_in_leaf=20,
                          early_stopping_rounds=0, seed=42)


def without_positions(d: RankingData) -> RankingData:
    return RankingData(d.X, d.y, d.group, d.qids, d.docnos, d.feature_names, d.feature_versions)


def fold_run(fold: int, args) -> tuple[dict, dict]:
    train, _, test = (from_letor(d) for d in load_letor_fold("letor_mq2008", fold))
    rng = np.random.default_rng(args.seed + fold)
    weak = rng.choice(train.unique_qids, 10, replace=False)
    production = LambdaMART.from_params(dataclasses.replace(PARAMS, n_estimators=50)).fit(train.subset(weak))

    def score(model):
        return per_query(test, model.predict(test), MEASURE).rename(lambda q: f"{fold}:{q}")

    per_q = {"production ranker": score(production), "judgements": score(LambdaMART.from_params(PARAMS).fit(train))}
    info = {}
    for n in args.sessions:
        t = time.perf_counter()
        clicks = simulate(train, production.predict(train), n, eta=args.eta, non_relevant=args.non_relevant,
                          explore=args.explore, seed=args.seed + 1000 * fold + n)
        per_q[f"raw, {n}"] = score(LambdaMART.from_params(PARAMS).fit(without_positions(clicks)))
        per_q[f"position, {n}"] = score(LambdaMART.from_params(PARAMS).fit(clicks))
        pbm, theta = pair_labels(clicks, model="pbm")
        per_q[f"pbm, {n}"] = score(LambdaMART.from_params(PARAMS).fit(pbm))
        per_q[f"ctr, {n}"] = score(LambdaMART.from_params(PARAMS).fit(pair_labels(clicks, model="ctr")[0]))
        info[n] = {"clicks": int(clicks.y.sum()), "rows": len(clicks.y), "seconds": time.perf_counter() - t,
                   "em_examination": theta.round(4).tolist()}
        print(f"fold {fold}, {n} sessions: {int(clicks.y.sum())} clicks, {time.perf_counter() - t:.0f}s", flush=True)
    return per_q, info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, nargs="+", default=[1])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--non-relevant", type=float, default=0.1)
    ap.add_argument("--explore", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="lightgbm", help="lightgbm (unbiased lambdarank) or xgboost (lambdarank_unbiased)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "clicks_letor.json"))
    args = ap.parse_args()
    global PARAMS
    PARAMS = dataclasses.replace(PARAMS, backend=args.backend)
    per_q, info = {}, {}
    for fold in args.folds:
        part, info[fold] = fold_run(fold, args)
        for k, v in part.items():
            per_q[k] = pd.concat([per_q[k], v]) if k in per_q else v
    means = {k: float(v.mean()) for k, v in per_q.items()}
    tests = {}
    for n in args.sessions:
        for b in ("position", "pbm"):
            for a in (f"raw, {n}", "judgements"):
                tests[f"{b}, {n} vs {a}"] = ev.compare(per_q[a].to_frame(MEASURE), per_q[f"{b}, {n}"].to_frame(MEASURE),
                                                       MEASURE).as_dict()
    print(f"MQ2008 folds {args.folds}, {sum(len(v) for v in [per_q['judgements']])} test queries, eta {args.eta}, "
          f"explore {args.explore}; {MEASURE}:")
    for k, v in means.items():
        print(f"  {k}: {v:.4f}")
    for k, c in tests.items():
        print(f"  {k}: {c['delta']:+.4f} (p={c['p_value']:.3g}, wins/losses {c['wins']}/{c['losses']})")
    true = examination(np.arange(1, 11), args.eta)
    table = {"backend": args.backend, "folds": args.folds, "eta": args.eta, "non_relevant": args.non_relevant, "explore": args.explore,
             "true_examination": (true / true[0]).round(4).tolist(), "means": means, "tests": tests, "runs": info}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=2, default=float))


if __name__ == "__main__":
    main()
