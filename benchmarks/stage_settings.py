"""Per-stage ranker settings for a cascade, chosen on held-out training queries (issues 35 and 34).

Each setting replaces keys of ``[ranker.params]`` for some stages (``ranker.cascade[k].params``). For a base
config that trains on a run's store (``features.from_run``; a config with its own store is given one:
``--from-run``), each setting is written as a config beside it (its own ``run.dir`` under
``runs/stage-settings/``), trained with ``fusion-ltr train``, and its cascade scored as the Scorer serves it
on every validation query (held out from the fit; the costly features computed for the documents that
reach their stage), in the first stage's order with ranks and, for a model for apps, shuffled without
them; with the plain variants' figures on the same validation queries (``content``), and paired t-tests
against the first setting. Test queries are not read.

    .venv/bin/python benchmarks/stage_settings.py configs/demo-app.toml
    .venv/bin/python benchmarks/stage_settings.py configs/demo.toml --from-run runs/demo
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path

import numpy as np
from scipy import stats

from ranker.cli import main as cli
from ranker.config import load_config
from ranker.lambdamart import LambdaMART
from ranker.model import RankingModel
from ranker.run import Run
from ranker.steps.train import validate_cascade
from ranker.tuning import per_query

ROBUST = {"num_leaves": 4, "min_data_in_leaf": 50, "lambda_l2": 10.0, "n_estimators": 300, "early_stopping_rounds": 0}
SMALL = {"num_leaves": 4, "min_data_in_leaf": 20, "lambda_l2": 10.0, "n_estimators": 100, "early_stopping_rounds": 0}
#: name -> the params of each stage (None: the ranker's settings)
SETTINGS = {
    "ranker settings": [None, None, None],
    "stage 1 small trees": [ROBUST, None, None],
    "every stage small trees": [ROBUST, SMALL, SMALL],
}


def toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_config(base: dict, stage_params, run_dir: str, from_run: str, path: Path) -> None:
    """``base`` (a parsed config) with each stage's params and its own run folder, training on ``from_run``'s
    store (its retrieval, fine-tuning and extractors dropped: they are that run's)."""
    data = json.loads(json.dumps(base))
    data["run"] = {**data.get("run", {}), "dir": run_dir}
    if from_run:
        data.pop("retrieval", None), data.pop("finetune", None), data.pop("finetune_biencoder", None)
        data["features"] = {"candidates": data.get("features", {}).get("candidates", "hybrid"), "from_run": from_run}
    for stage, params in zip(data["ranker"]["cascade"], stage_params):
        stage.pop("params", None)
        if params:
            stage["params"] = params
    lines = []

    def emit(table: dict, prefix: str) -> None:
        def inline(k, v) -> bool:  # a variant's params stay an inline table
            return not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict)) \
                or k == "params" and prefix.startswith("ranker.variants.")

        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items() if inline(k, v))
        for k, v in table.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and not inline(k, v):
                emit(v, name)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in item.items())

    emit(data, "")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--from-run", default="", help="train on this run's store (for a config with its own)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    base = tomllib.loads(Path(args.config).read_text())
    from_run = args.from_run or base.get("features", {}).get("from_run", "")
    stem = Path(args.config).stem
    folder = Path("runs/stage-settings")
    folder.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or Path(__file__).parent / "results" / f"stage_settings_{stem}.json")
    rows, per_q = {}, {}
    for name in args.settings:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        config = folder / f"{stem}-{slug}.toml"
        write_config(base, SETTINGS[name], str(folder / f"{stem}-{slug}"), from_run, config)
        assert cli(["train", "--config", str(config)]) == 0
        run = Run(load_config(config), progress=False)
        model = RankingModel.load(run.layout.model())
        checked = validate_cascade(run, model, run.feature_set.raw_specs, run.matrices.valid.unique_qids)
        measure = run.cfg.evaluate.measures[0]
        views = {"in order": per_query(checked["data"], checked["served"], measure)}
        if checked["shuffled"] is not None:
            views["shuffled, without ranks"] = checked["shuffled"]
        for variant in run.cfg.ranker.variants:  # plain models: their order on the validation queries
            m = LambdaMART.load(run.layout.model(f"lambdamart[{variant}]"))
            valid = run.matrices.valid.select(m.feature_names_)
            views[variant] = per_query(valid, m.predict(valid), measure)
        rows[name] = {"stage params": SETTINGS[name], "queries": len(checked["data"].group),
                      "first stage": checked["figures"]["first stage"],
                      **{k: float(v.mean()) for k, v in views.items()},
                      "unranked guard": (json.loads((run.layout.model() / "manifest.json").read_text())
                                         .get("unranked_guard"))}
        per_q[name] = views
        print(name, json.dumps({k: v for k, v in rows[name].items() if k not in ("stage params", "unranked guard")}))
    first = args.settings[0]
    for name in args.settings[1:]:  # paired t-tests against the first setting, per view
        rows[name]["vs " + first] = {}
        for view, values in per_q[name].items():
            a, b = per_q[first][view].sort_index(), values.sort_index()
            rows[name]["vs " + first][view] = {"delta": float((b - a).mean()),
                                              "p": float(stats.ttest_rel(b, a).pvalue) if not np.allclose(a, b) else 1.0}
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "from_run": from_run, "rows": rows}, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
