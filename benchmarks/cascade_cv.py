"""Choose a cascade's settings on training queries: K-fold cross-validation of the whole cascade.

For a built run config (its feature store, its cross-fitted cross-encoder scores), each setting is the
config's cascade with other ``keep`` values or another cap on the training queries of the costly stages
(``max_train_queries``). Each fold of the run's training queries (the training split minus the leakage
guard's; the test split is never read) is ranked by a cascade trained on the other folds exactly as
`fusion-ltr train` trains one (:func:`ranker.cascade.fit`: cross-fitted membership, early stopping on the
same share of its queries); the deferred extractors compute, into the run's store, the values of the
documents that reach their stage (cached: later settings and `train` reuse them). Prints nDCG@10 per
setting and a paired t-test of each against the first, and where the relevant documents go (the share
reaching each stage, and each stage's ceiling: nDCG@10 with a perfect order of the documents that reach
it); writes ``benchmarks/results/cascade_cv.json``.

A setting: ``K1/K2@N`` (stage 1 keeps K1, stage 2 keeps K2, stages 2 and 3 learn from N training
queries); a part left out keeps the config's value, ``@0`` lifts the cap; ``stage1``: the first stage alone;
``variant:NAME``: the config's variant NAME (its features and settings) as one model over every candidate,
the cheap reference a cascade has to beat.
Each ``+S:f,g`` after it adds features ``f`` and ``g`` to stage S, e.g. a costly score's query-level
normalisations (``ce_score_qz``: over the documents that reach the stage; their source joins
``ranker.normalize``). A setting may end in ``~auto`` (ranker settings chosen by CV inside each stage) or
``~k=v,...`` (keys of ``[ranker.params]`` replaced for every stage; ``valid_fraction`` replaces the ranker's
share of queries held out for early stopping).

    .venv/bin/python benchmarks/cascade_cv.py --config configs/demo-xfit.toml --settings 20/5@150 20/5@0 stage1

``--exclude-trained-by MODEL_DIR`` leaves out the queries a fine-tuned model learned from: a baseline on
the same queries as a config whose extractor uses that model (its leakage exclusion leaves them out).

Each row keeps its per-query values; ``--baseline RESULTS:SETTING`` compares every setting with one of an
earlier results file, paired by query: another config on the same training queries (the folds are drawn
from the query ids and the seed, so they are the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features import query_norm
from features.model_folders import trained_qids
from features.store import FeatureStore
from ranker import cascade
from ranker.model import RankingModel
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.data import ranking_from_scores
from ranker.lambdamart import LambdaMARTParams, query_folds
from ranker.run import Run
from ranker.tuning import settings as ranker_settings
from retrieval.data import hash_split
from retrieval.frames import LABEL
from retrieval.params import from_dict

MEASURE = "nDCG@10"


def with_setting(cfg, name: str):
    """``cfg`` with its cascade changed as ``name`` says (see the module docstring)."""
    name, tilde, after = name.partition("~")
    if tilde == "~" and after == "auto":
        cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, params="auto"))
    elif tilde:
        cfg = with_params(cfg, after)
    stages = cfg.ranker.cascade
    if len(stages) < 2:
        raise SystemExit(f"{cfg.source}: needs a cascade of two stages or more")
    if name == "stage1":
        cascade_ = (dataclasses.replace(stages[0], keep=0),)
    elif name.startswith("variant:"):  # a plain variant of the config, as one stage over every candidate
        variant = name.partition(":")[2]
        if variant not in cfg.ranker.variants:
            raise SystemExit(f"{cfg.source}: no variant {variant!r} (found {sorted(cfg.ranker.variants)})")
        own = cfg.ranker.variant_params(variant)  # the variant's settings, or None: the ranker's
        cascade_ = (dataclasses.replace(stages[0], features=tuple(cfg.ranker.variant_features(variant)),
                                        params=dataclasses.asdict(own) if own else {}, keep=0),)
    else:
        name, *extra = name.split("+")
        spec, at, cap = name.partition("@")
        keeps = [int(x) for x in spec.split("/")] if spec else []
        new = [dataclasses.replace(s, keep=keeps[k]) if k < len(keeps) else s for k, s in enumerate(stages)]
        if at:
            new[1] = dataclasses.replace(new[1], max_train_queries=int(cap))
        normalize = list(cfg.ranker.normalize)
        for part in extra:
            stage, _, names = part.partition(":")
            names = names.split(",")
            k = int(stage) - 1
            new[k] = dataclasses.replace(new[k], features=tuple(new[k].features) + tuple(names))
            normalize += [n for n in query_norm.raw_names(names) if n not in names and n not in normalize]
        cascade_ = tuple(new)
        cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, normalize=tuple(normalize)))
    return dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, cascade=cascade_, variants={}))


def with_params(cfg, overrides: str):
    """``cfg`` with ``k=v,...`` replacing keys of ``[ranker.params]`` (``valid_fraction``: the ranker's)."""
    def value(v: str):
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v

    if not all("=" in part for part in overrides.split(",")):
        raise SystemExit(f"a setting ends in ~auto, ~k=v,... or nothing, found ~{overrides}")
    pairs = dict(part.split("=", 1) for part in overrides.split(","))
    ranker = cfg.ranker
    if "valid_fraction" in pairs:
        ranker = dataclasses.replace(ranker, valid_fraction=float(pairs.pop("valid_fraction")))
    if pairs:
        params = {**dataclasses.asdict(ranker.base_params), **{k: value(v) for k, v in pairs.items()}}
        ranker = dataclasses.replace(ranker, params=from_dict(LambdaMARTParams, params, "--settings ~"))
    return dataclasses.replace(cfg, ranker=ranker)


def where_relevant_goes(data, scores: np.ndarray, depth: np.ndarray, qrels: pd.DataFrame) -> dict:
    """Where the cascade loses its relevant documents: of the judged relevant documents of the queries, the
    share among the candidates and the share reaching each later stage; and the nDCG@10 a perfect order of
    the documents that reach each stage would give (the rest after them, in the cascade's order), so the
    gap between a stage's ceiling and the cascade is what better ordering there could win."""
    relevant = max(int((qrels[LABEL] > 0).sum()), 1)
    y = np.asarray(data.y)
    reach, ceiling = [], []
    for k in range(int(depth.max()) + 1):
        at = depth >= k
        reach.append(float(((y > 0) & at).sum() / relevant))
        key = np.where(at, 100.0 + y, scores)  # cascade scores are below the number of stages + 1
        ceiling.append(ev.mean(ev.per_query(ranking_from_scores(data, key, "ceiling"), qrels, [MEASURE]))[MEASURE])
    return {"relevant_reaching_stage": reach, "ceiling_by_stage": ceiling}


def cross_validate(run, folds: int, exclude: set[str] = frozenset()) -> tuple[np.ndarray, object, list[dict], np.ndarray]:
    """Out-of-fold cascade scores (``depth + sigmoid(score)``) of the run's training queries (less
    ``exclude``), their matrix, each fold's stage report and each row's depth (the 0-based stage it last
    reached)."""
    cfg = run.cfg
    staged = run.stage_plan()
    params = ranker_settings(cfg.ranker, cfg.evaluate.measures[0])  # fixed, or chosen per stage (auto)
    data = run.matrices
    train_q = sorted((set(data.train.unique_qids) | set(data.valid.unique_qids if data.valid is not None else ()))
                     - set(exclude))
    seed = cfg.ranker.base_params.seed
    source = run.feature_source()
    out, reports = {}, []
    for fold in query_folds(train_q, folds, seed):
        held_out = set(fold)
        rest = [q for q in train_q if q not in held_out]
        _, valid_q = hash_split(rest, cfg.ranker.valid_fraction, seed, salt="valid:")
        stages, report, *_ = cascade.fit(cfg.ranker, source, staged, rest, set(valid_q), fold, params, log=run.log)
        with FeatureStore(run.layout.store, read_only=True) as store:
            held = store.matrix(staged.raw_specs, fold, retriever=cfg.features.candidates, top_n=run.top_n)
        scored = RankingModel(stages, cascade=True).score(held)
        out.update({(q, d): (s, k) for q, d, s, k in zip(held.qids, held.docnos, scored.scores, scored.depth)})
        reports.append(report)
    with FeatureStore(run.layout.store, read_only=True) as store:
        every = store.matrix(staged.raw_specs, train_q, retriever=cfg.features.candidates, top_n=run.top_n)
    scores, depth = np.array([out[(q, d)] for q, d in zip(every.qids, every.docnos)]).T
    return scores, every, reports, depth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="a run config whose features are built (`fusion-ltr features`)")
    ap.add_argument("--settings", nargs="+", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cascade_cv.json"))
    ap.add_argument("--baseline", metavar="RESULTS:SETTING",
                    help="also compare each setting with a setting of an earlier results file (another config "
                         "with the same training queries and folds), paired by query")
    ap.add_argument("--exclude-trained-by", metavar="MODEL_DIR", action="append", default=[],
                    help="leave out the training queries this fine-tuned model's manifest lists (the same queries "
                         "as a config whose extractor uses that model, for a paired comparison)")
    args = ap.parse_args()
    base = load_config(args.config)
    exclude = set().union(*(trained_qids(Path(m)) for m in args.exclude_trained_by))
    if args.exclude_trained_by and not exclude:
        raise SystemExit(f"--exclude-trained-by: no trained queries listed for {args.exclude_trained_by}")
    per_q, rows = {}, []
    against = None
    if args.baseline:
        path, _, setting = args.baseline.rpartition(":")
        stored = {r["setting"]: r for r in json.loads(Path(path).read_text())["rows"]}
        if setting not in stored or "per_query" not in stored[setting]:
            raise SystemExit(f"--baseline: {path} has no per-query values for setting {setting!r} "
                             f"(found settings {sorted(stored)}; per-query values are written since 2026-11-23)")
        against = pd.DataFrame({MEASURE: stored[setting]["per_query"]}).rename_axis("qid")
    for name in args.settings:
        t = time.perf_counter()
        run = Run(with_setting(base, name), log=lambda *a: None, progress=False)
        scores, data, reports, depth = cross_validate(run, args.folds, exclude)
        qrels = run.dataset.qrels[base.dataset.splits[0]]
        qrels = qrels[qrels["qid"].isin(set(data.unique_qids))]  # per_query counts every judged query it is given
        per_q[name] = ev.per_query(ranking_from_scores(data, scores, name), qrels, [MEASURE])
        row = {"setting": name, "queries": len(data.unique_qids), MEASURE: ev.mean(per_q[name])[MEASURE],
               "stage_train_queries": [int(np.median([r[k]["train_queries"] for r in reports]))
                                       for k in range(len(reports[0]))],
               **where_relevant_goes(data, scores, depth, qrels), "seconds": time.perf_counter() - t}
        if rows:
            c = ev.compare(per_q[args.settings[0]], per_q[name], MEASURE)
            row |= {"delta_vs_first": c.delta, "p": c.p_value, "wins": c.wins, "losses": c.losses}
        if against is not None:
            if set(against.index) != set(per_q[name].index):
                raise SystemExit(f"--baseline {args.baseline}: other training queries than {name}'s")
            c = ev.compare(against, per_q[name], MEASURE)
            row |= {"baseline": args.baseline, "delta_vs_baseline": c.delta, "p_vs_baseline": c.p_value,
                    "wins_vs_baseline": c.wins, "losses_vs_baseline": c.losses}
        print(json.dumps(row), flush=True)
        rows.append(row | {"per_query": per_q[name][MEASURE].to_dict()})
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": args.config, "folds": args.folds, "rows": rows}, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
