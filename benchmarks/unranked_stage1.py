"""Which features the first stage of an app model needs when a list comes without ranks (issue 35): the
first cascade stage of ``configs/demo-app.toml`` trained on its training split with and without the
bi-encoder's ``cosine`` (and its per-query forms), for several ``ranker.hide_ranks`` shares, scored on the
validation queries (held out from the fit) in the first stage's order with its ranks and with the list
features hidden: nDCG@10 and the recall of the documents it keeps (what the costly stages can reorder).
Cheap features only (read from the store); test queries are not read.

    .venv/bin/python benchmarks/unranked_stage1.py [--config configs/demo-app.toml]   # after `make demo`
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ranker.config import load_config
from ranker.lambdamart import LambdaMART
from ranker.model import rows
from ranker.run import Run
from ranker.tuning import per_query

COSINE = ["cosine", "cosine_qrank", "cosine_qz", "cosine_qgap"]


def recall(data, scores, k: int) -> float:
    """Mean over queries with a relevant candidate: the share of them among the ``k`` best by ``scores``."""
    out, start = [], 0
    for g in data.group:
        y, s = data.y[start:start + g], scores[start:start + g]
        if (y > 0).any():
            out.append(float((y[np.argsort(-s, kind="stable")[:k]] > 0).sum() / (y > 0).sum()))
        start += g
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo-app.toml")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "unranked_stage1.json"))
    args = ap.parse_args()
    run = Run(load_config(args.config), progress=False)
    train, valid = run.matrices.train, run.matrices.valid
    cfg = run.cfg.ranker
    first = [f for f in cfg.cascade[0].features if f not in COSINE]
    keep = cfg.cascade[0].keep
    measure = run.cfg.evaluate.measures[0]
    fs = -valid.X[:, valid.feature_names.index("fs_rank")]
    table = {"config": args.config, "validation queries": len(valid.group), "train queries": len(train.group),
             "keep": keep, "first stage": {measure: float(per_query(valid, fs, measure).mean()),
                                           f"R@{keep}": recall(valid, fs, keep)}, "rows": []}
    print(f"{len(train.group)} training, {len(valid.group)} validation queries; first stage {measure} "
          f"{table['first stage'][measure]:.4f}, R@{keep} {table['first stage'][f'R@{keep}']:.4f}")
    for label, feats in (("without cosine", first), ("with cosine", first + COSINE)):
        tr, va = (rows(d, np.ones(len(d.y), bool), None, feats) for d in (train, valid))
        for share in args.shares:
            hidden = lambda d: d.masked(run.list_features, run.hidden_rank_queries(d.unique_qids, share))  # noqa: E731
            model = LambdaMART.from_params(cfg.base_params).fit(hidden(tr), hidden(va))
            for view, data in (("in order, with ranks", va), ("without ranks", va.masked(run.list_features))):
                s = model.predict(data)
                row = {"stage 1": label, "hide_ranks": share, "view": view,
                       measure: float(per_query(data, s, measure).mean()), f"R@{keep}": recall(data, s, keep)}
                table["rows"].append(row)
                print(f"{label:15s} hide_ranks {share:<4g} {view:21s} {measure} {row[measure]:.4f}  "
                      f"R@{keep} {row[f'R@{keep}']:.4f}")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
