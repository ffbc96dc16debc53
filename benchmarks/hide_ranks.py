"""Choosing ``ranker.hide_ranks`` on held-out training queries (issue 35): each trained config's model on
its validation queries (those its last stage learned from, with every feature stored), in the first
stage's order with its ranks and shuffled without them, beside the first stage. Test queries are not read.

    .venv/bin/python benchmarks/hide_ranks.py CONFIG [CONFIG ...]   # each trained (`fusion-ltr train`)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ranker.config import load_config
from ranker.model import RankingModel
from ranker.run import Run
from ranker.steps.train import learned_every_stage, validation_figures


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
        model.serves = "model"  # the model's own order (a guard decision, where one was recorded, set aside)
        valid = run.matrices.valid
        if model.cascade:
            valid = learned_every_stage(model, valid)
        rows[config] = {"hide_ranks": run.cfg.ranker.hide_ranks} | validation_figures(run, config, model, valid)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
