"""How many sessions team-draft interleaving needs to pick the better of two rankers (issue 31), simulated on
LETOR MQ2008's test queries: each session draws a test query, interleaves the two rankers' top 10
(:func:`ranker.interleaving.team_draft`), clicks by the position-based model (examination (1/rank)^eta; a
click on an examined document with probability 0.1 for label 0 rising to 1.0 for label 2) and credits the
team of each click. Pairs of rankers with a known nDCG@10 difference on those queries: the judgement-trained
LambdaMART against a weak one (10 training queries), and against one trained on 30. For each pair and seed:
the first session count (checked every 50) after which the two-sided sign test picks the better ranker at
p < 0.05 and keeps picking it at every later check. Writes `benchmarks/results/interleaving.json`.

    .venv/bin/python benchmarks/interleaving_sim.py [--fold 1] [--sessions 5000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path

import numpy as np

from ranker.clicks import click_probability, examination
from ranker.data import from_letor
from ranker.interleaving import Outcome, credit, team_draft
from ranker.lambdamart import LambdaMART, LambdaMARTParams
from ranker.tuning import per_query
from retrieval.data import load_letor_fold

PARAMS = LambdaMARTParams(n_estimators=100, num_leaves=15, min_data_in_leaf=20, early_stopping_rounds=0, seed=42)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "interleaving.json"))
    args = ap.parse_args()
    train, _, test = (from_letor(d) for d in load_letor_fold("letor_mq2008", args.fold))
    rng = np.random.default_rng(0)
    models = {"judgements": LambdaMART.from_params(PARAMS).fit(train)}
    for n in (10, 30):
        q = rng.choice(train.unique_qids, n, replace=False)
        models[f"{n} queries"] = LambdaMART.from_params(dataclasses.replace(PARAMS, n_estimators=50)).fit(train.subset(q))
    scores = {k: m.predict(test) for k, m in models.items()}
    ndcg = {k: float(per_query(test, s, "nDCG@10").mean()) for k, s in scores.items()}
    starts = np.cumsum(np.r_[0, test.group[:-1]]).astype(int)
    # queries with a relevant document (a click on one is what tells the rankers apart)
    queries = [(s, g) for s, g in zip(starts, test.group) if test.y[s:s + g].max() > 0]
    max_label = int(test.y.max())
    rows = []
    for weak in ("10 queries", "30 queries"):
        for seed in range(args.seeds):
            r = random.Random(seed)
            out, first, history = Outcome(), None, []
            for n in range(1, args.sessions + 1):
                s, g = queries[r.randrange(len(queries))]
                ids = list(range(s, s + g))
                top = {k: [ids[i] for i in np.argsort(-scores[k][s:s + g], kind="stable")][:10] for k in ("judgements", weak)}
                shown, teams = team_draft(top["judgements"], top[weak], r, k=10)
                p = examination(np.arange(1, len(shown) + 1), args.eta) * click_probability(test.y[shown], max_label)
                out.add(credit(teams, [r.random() < x for x in p]))
                if n % 50 == 0:
                    history.append((n, out.wins > out.losses and out.p_value < 0.05))
            picked = [n for i, (n, ok) in enumerate(history) if all(v for _, v in history[i:])]
            first = picked[0] if picked else None
            rows.append({"pair": f"judgements vs {weak}", "seed": seed, "sessions_to_pick": first, **out.as_dict()})
            print(f"judgements ({ndcg['judgements']:.4f}) vs {weak} ({ndcg[weak]:.4f}), seed {seed}: picked after "
                  f"{first} sessions; at {args.sessions}: {out.wins}/{out.losses}/{out.ties}, p={out.p_value:.2g}", flush=True)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"fold": args.fold, "eta": args.eta, "ndcg@10": ndcg, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
