"""Choosing ``ranker.hide_ranks`` on held-out training queries (issue 35): each trained config's cascade on
every validation query, served stage by stage (the costly features computed for the documents that reach
their stage, in each view), in the first stage's order with its ranks and shuffled without them, beside the
first stage. Test queries are not read.

    .venv/bin/python benchmarks/hide_ranks.py CONFIG [CONFIG ...]   # each trained (`fusion-ltr train`)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ranker.config import load_config
from ranker.model import RankingModel
from ranker.run import Run
from ranker.steps.train import validate_cascade


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hide_ranks.json"))
    args = ap.parse_args()
    rows = {}
    for config in args.configs:
        run = Run(load_config(config), progress=False)
        path = run.layout.model()
        model = RankingModel.load(path)
        if not model.cascade:
            raise SystemExit(f"{config}: a plain model; its figures are in the train log (`evaluate`)")
        checked = validate_cascade(run, model, run.feature_set.raw_specs, run.matrices.valid.unique_qids)  # the model's own order
        rows[config] = {"hide_ranks": run.cfg.ranker.hide_ranks, **checked["figures"], "guard": checked["guard"]}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
