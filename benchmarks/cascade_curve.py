"""Quality vs cost of cascades on SciFact test, next to the fixed top-N model (issue 12).

Each setting is the base config (default: configs/demo.toml) with its main model replaced, trained and
evaluated in its own run folder under ``--out``, all sharing one feature store (``--store``), so a value
computed for one setting is never computed again for another:

- ``topn``: no cascade; the cross-encoder on the first-stage top-5 and the LM on the top-2, every
  candidate through one LambdaMART (the demo's model before the cascade: reference (a));
- ``K1/K2``: the demo's three stages, stage 1 keeping K1 documents (the cross-encoder scores those),
  stage 2 keeping K2 (the LM scores those);
- a suffix ``@N``: stages 2 and 3 learn from N training queries (the stage's ``max_train_queries``);
  without it, from every training query the cross-encoder did not learn from, as stage 1 always does.

For each: nDCG@10 on the 300 test queries, the costly documents per query, and milliseconds per query
predicted from the store's measured costs per 1,000 pairs (every candidate through the cheap
extractors, K1 through the cross-encoder, K2 through the LM); a paired t-test of each against ``topn``,
or against the main model of ``--reference`` (an evaluated run folder, e.g. the demo before the cascade).
Writes `benchmarks/results/cascade_curve.json`.

    .venv/bin/python benchmarks/cascade_curve.py --base configs/demo.toml --store runs/demo/features.duckdb \\
        --settings topn 10/3 20/3 20/5 30/5 20/5@150
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from compare_runs import per_query as runs_per_query  # benchmarks/ is on the path of a script run from it
from ranker.config import load_config
from ranker.evaluate import compare
from ranker.run import Run
from ranker.steps import run_all

MEASURE = "nDCG@10"


def setting(cfg, name: str, out: Path, store: str):
    """The base config with ``name``'s main model, its own run folder and the shared store."""
    spec, _, queries = name.partition("@")
    ranker = dataclasses.replace(cfg.ranker, variants={})
    extractors = {k: dict(v) for k, v in cfg.features.extractors.items()}
    if spec == "topn":
        ranker = dataclasses.replace(ranker, cascade=())
        extractors["crossencoder"]["top_n"], extractors["lm_likelihood"]["top_n"] = 5, 2
        costly = (5, 2)
    else:
        k1, k2 = (int(x) for x in spec.split("/"))
        stages = cfg.ranker.cascade
        if len(stages) != 3:
            raise SystemExit("the base config needs the demo's three cascade stages")
        ranker = dataclasses.replace(ranker, cascade=(
            dataclasses.replace(stages[0], keep=k1),
            dataclasses.replace(stages[1], keep=k2, max_train_queries=int(queries) if queries else 0), stages[2]))
        costly = (k1, k2)
    folder = out / name.replace("/", "-").replace("@", "-q")
    features = dataclasses.replace(cfg.features, store=store, extractors=extractors)
    return dataclasses.replace(cfg, source="", ranker=ranker, features=features,
                               run=dataclasses.replace(cfg.run, dir=str(folder))), costly


def predicted_ms(run, costly: tuple[int, int]) -> float:
    """Milliseconds per query by the store's costs: every candidate through the cheap extractors, the
    costly ones on their documents."""
    cost, ext_of = run.feature_set.cost, run.feature_set.extractor_of
    per_ext = {ext_of[n]: cost.get(n, 0.0) for n in cost}  # s / 1,000 pairs = ms / pair
    candidates = float(np.median(run.matrices.test.group))
    cheap = sum(v for e, v in per_ext.items() if e not in ("crossencoder", "lm_likelihood"))
    return cheap * candidates + costly[0] * per_ext.get("crossencoder", 0.0) + costly[1] * per_ext.get("lm_likelihood", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="configs/demo.toml")
    ap.add_argument("--store", default="runs/demo/features.duckdb", help="one store shared by every setting")
    ap.add_argument("--out", default="runs/curve")
    ap.add_argument("--settings", nargs="+", default=["topn", "10/3", "20/3", "20/5", "30/5", "20/5@150"])
    ap.add_argument("--reference", type=Path, help="an evaluated run folder (or its eval/ folder) whose main model "
                                                   "the paired tests compare against, instead of the topn setting")
    args = ap.parse_args()
    base = load_config(args.base)
    rows, per_query = [], {}
    for name in args.settings:
        cfg, costly = setting(base, name, Path(args.out), args.store)
        run = Run(cfg, progress=False, log=lambda *_: None)
        Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.run.dir) / "setting.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        run_all(run, ablate=False)
        per_query[name] = runs_per_query(run.layout.root, "lambdamart", cfg.dataset.test_split)
        stages = json.loads((run.layout.model() / "manifest.json").read_text()).get("report") or []
        rows.append({"setting": name, "train_queries": [s["train_queries"] for s in stages] or None, "ce_docs": costly[0],
                     "lm_docs": costly[1], MEASURE: float(per_query[name][MEASURE].mean()),
                     "predicted_ms_per_query": predicted_ms(run, costly)})
        print(json.dumps(rows[-1]), flush=True)
    if args.reference:
        per_query["reference"] = runs_per_query(args.reference, "lambdamart", "test")
        rows.append({"setting": f"reference: {args.reference}", MEASURE: float(per_query["reference"][MEASURE].mean())})
    ref = "reference" if args.reference else "topn" if "topn" in per_query else None
    for row in rows:
        if ref and row["setting"] in per_query and row["setting"] != ref:
            c = compare(per_query[ref], per_query[row["setting"]], MEASURE)
            row.update(delta_vs_ref=c.delta, p_vs_ref=c.p_value, wins=c.wins, losses=c.losses)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".4g"))
    path = Path(__file__).parent / "results" / "cascade_curve.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"base": args.base, "store": args.store, "reference": str(args.reference or ""),
                                "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
