"""`ranker.params = "auto"` against a config's hand-set settings, on the same candidates and features.

For each base config (its run must exist: `fusion-ltr run --config ...`), a twin config differs only
in `ranker.params = "auto"` (settings chosen by cross-validation on the training queries; nested inside
each fold under CV), its own run folder `<run.dir>-auto`, and `features.from_run` pointing at the base
run (so retrieval and features are reused, not rebuilt). Only the main model is compared (no variants).
Prints the chosen settings, the tuning time and a paired t-test of per-query nDCG@10 on the test
queries; writes `benchmarks/results/auto_settings.json`.

    .venv/bin/python benchmarks/auto_settings.py configs/demo.toml configs/cacm.toml configs/mq2008.toml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

from ranker import evaluate as ev
from ranker.config import load_config
from ranker.run import Run
from ranker.steps import run_all


def per_query(run_dir: Path, split: str, measure: str) -> pd.DataFrame:
    result = json.loads((run_dir / "eval" / split / "ranker.json").read_text())
    return pd.DataFrame.from_dict(result["per_query"]["lambdamart"], orient="index")[[measure]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args()
    rows = []
    for path in args.configs:
        cfg = load_config(path)
        base_dir = Path(cfg.run.dir)
        auto = dataclasses.replace(
            cfg, ranker=dataclasses.replace(cfg.ranker, params="auto", variants={}),
            run=dataclasses.replace(cfg.run, dir=f"{cfg.run.dir}-auto"), source="")
        if cfg.dataset.format != "letor":
            auto = dataclasses.replace(auto, features=dataclasses.replace(cfg.features, from_run=str(base_dir)))
        t = time.perf_counter()
        run_all(Run(auto.validate(), log=lambda *_: None, progress=False).preflight(), ablate=False)
        seconds = time.perf_counter() - t
        manifest = json.loads((Path(auto.run.dir) / "model" / "manifest.json").read_text())
        measure, split = cfg.evaluate.measures[0], cfg.dataset.test_split
        fixed, tuned = per_query(base_dir, split, measure), per_query(Path(auto.run.dir), split, measure)
        cmp = ev.compare(fixed, tuned, measure)
        row = {"config": path, "hand_set": cmp.mean_a, "auto": cmp.mean_b, "delta": cmp.delta, "p": cmp.p_value,
               "wins": cmp.wins, "losses": cmp.losses, "ties": cmp.ties, "queries": cmp.n,
               "chosen_for_serving": manifest["tuning"]["chosen"], "tuning_s_serving_model": manifest["tuning"]["seconds"],
               "guard": manifest.get("guard"), "run_s": seconds, "cv_folds": cfg.ranker.cv_folds}
        rows.append(row)
        print(f"{path}: hand-set {cmp.mean_a:.4f} vs auto {cmp.mean_b:.4f} {measure} (delta {cmp.delta:+.4f}, "
              f"p={cmp.p_value:.3g}, W/L/T {cmp.wins}/{cmp.losses}/{cmp.ties}); auto chose {row['chosen_for_serving']} "
              f"in {row['tuning_s_serving_model']:.0f}s; whole run {seconds:.0f}s")
    out = Path(__file__).parent / "results" / "auto_settings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
