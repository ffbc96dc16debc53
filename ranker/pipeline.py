"""The steps behind the CLI: each reads a config, does one job, writes into the run folder.

Run folder layout (all plain files)::

    <run.dir>/
      config.toml                     copy of the config used
      index/bm25/                     bm25s index
      retrieval/<system>.<split>.trec TREC runs of bm25, dense, hybrid
      retrieval/manifest.json         parameters, corpus size, wall times
      eval/<split>/metrics.json       means, per-query values, paired tests
      eval/<split>/table.md           the Markdown table printed by `evaluate`
      features.duckdb                 the feature store (unless features.store says otherwise)
      features/manifest.json          the feature set: names, versions, extractor configs
      features/summary.md             rows, computed vs cached, NaN counts, cost per feature
      crossencoder/                   `finetune-ce`: model/, checkpoints/, manifest.json, split.json
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features import base as fbase
from features import ce_training
from features.build import build, feature_specs, summary_table
from features.store import FeatureStore
from retrieval.data import hash_split
from retrieval import BM25Retriever, DenseRetriever, load_beir, read_trec_run, rrf, write_trec_run
from retrieval.fusion import first_stage_runs
from retrieval.frames import QID

from . import evaluate as ev
from .config import Config


def run_dir(cfg: Config) -> Path:
    path = Path(cfg.run.dir)
    path.mkdir(parents=True, exist_ok=True)
    if cfg.source and Path(cfg.source).exists():
        shutil.copyfile(cfg.source, path / "config.toml")
    return path


def _needs_documents(cfg: Config, step: str) -> None:
    if cfg.dataset.format == "letor":
        raise ValueError(f"{step}: {cfg.dataset.name} is a LETOR dataset (precomputed features, no documents); "
                         "only train, evaluate, report and run apply")


def run_path(folder: Path, system: str, split: str) -> Path:
    return folder / "retrieval" / f"{system}.{split}.trec"


def retrieve(cfg: Config, splits: list[str] | None = None, log=print) -> dict:
    """Index the corpus and write a TREC run per configured system and split."""
    _needs_documents(cfg, "retrieve")
    r = cfg.retrieval
    folder = run_dir(cfg)
    ds = load_beir(cfg.dataset.name)
    splits = list(splits or cfg.dataset.splits)
    queries = pd.concat([ds.split(s)[0] for s in splits]).drop_duplicates(QID)
    need = set(r.systems) | ({"bm25", "dense"} if "hybrid" in r.systems else set())
    depth = max(r.k, r.depth)
    timing, runs = {}, {}
    if "bm25" in need:
        t = time.perf_counter()
        bm25 = BM25Retriever(r.bm25).index(ds.corpus)
        bm25.save(folder / "index" / "bm25")
        timing["bm25_index_s"] = time.perf_counter() - t
        t = time.perf_counter()
        runs["bm25"] = bm25.retrieve(queries, depth)
        timing["bm25_retrieve_s"] = time.perf_counter() - t
    if "dense" in need:
        t = time.perf_counter()
        dense = DenseRetriever(r.dense, cache=cfg.run.cache or None).index(ds.corpus)
        timing["dense_index_s"] = time.perf_counter() - t
        timing["dense_docs_encoded"] = dense.stats_["encoded"]
        t = time.perf_counter()
        runs["dense"] = dense.retrieve(queries, depth)
        timing["dense_retrieve_s"] = time.perf_counter() - t
    runs = first_stage_runs(runs, r.systems, k=r.k, rrf_k=r.rrf_k)
    (folder / "index").mkdir(parents=True, exist_ok=True)
    ds.corpus.to_parquet(folder / "index" / "corpus.parquet", index=False)  # the Scorer's `search` reads it
    for system in r.systems:
        run = runs[system]
        for split in splits:
            split_q = set(ds.split(split)[0][QID])
            write_trec_run(run[run[QID].isin(split_q)], run_path(folder, system, split))
    manifest = {
        "dataset": ds.name, "n_docs": len(ds.corpus), "splits": splits, "n_queries": len(queries),
        "systems": list(r.systems), "k": r.k, "depth": r.depth, "rrf_k": r.rrf_k,
        "bm25": vars(r.bm25), "dense": vars(r.dense), "timing": timing,
    }
    (folder / "retrieval" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for key, value in timing.items():
        log(f"  {key}: {value:.1f}" if isinstance(value, float) else f"  {key}: {value}")
    log(f"wrote {len(r.systems)} run(s) x {len(splits)} split(s) to {folder / 'retrieval'}")
    return manifest


def evaluate(cfg: Config, split: str | None = None, log=print) -> dict:
    """Evaluate every configured system's run on a split; paired tests of the last system vs the others."""
    _needs_documents(cfg, "evaluate")
    folder = run_dir(cfg)
    split = split or cfg.dataset.test_split
    ds = load_beir(cfg.dataset.name)
    _, qrels = ds.split(split)
    per_q, means = {}, {}
    for system in cfg.retrieval.systems:
        path = run_path(folder, system, split)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `fusion-ltr retrieve --config {cfg.source}` first")
        per_q[system] = ev.per_query(read_trec_run(path), qrels, cfg.evaluate.measures)
        means[system] = ev.mean(per_q[system])
    *others, last = cfg.retrieval.systems
    tests = [
        ev.compare(per_q[o], per_q[last], m, test=cfg.evaluate.test).as_dict() | {"a": o, "b": last}
        for o in others for m in cfg.evaluate.measures
    ]
    out = folder / "eval" / split
    out.mkdir(parents=True, exist_ok=True)
    table = ev.markdown_table(means, cfg.evaluate.measures)
    result = {
        "dataset": ds.name, "split": split, "n_queries": int(qrels[QID].nunique()), "means": means,
        "tests": tests, "per_query": {s: v.to_dict(orient="index") for s, v in per_q.items()},
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    lines = [f"{ds.name} {split} ({result['n_queries']} queries)", "", table, ""]
    for t in tests:
        if t["measure"] == cfg.evaluate.measures[0]:
            lines.append(
                f"{t['b']} vs {t['a']}: {t['measure']} {t['delta']:+.4f} (p={t['p_value']:.3g}, {t['test']}-test), "
                f"wins/losses/ties {t['wins']}/{t['losses']}/{t['ties']}"
            )
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    log(text)
    return result


def store_path(cfg: Config) -> Path:
    return Path(cfg.features.store) if cfg.features.store else Path(cfg.run.dir) / "features.duckdb"


def make_extractors(cfg: Config) -> list:
    """The configured extractors, in config order (each built from its config table)."""
    return [fbase.create(name, params) for name, params in cfg.features.extractors.items()]


def load_candidates(store: FeatureStore, cfg: Config, folder: Path, splits: list[str]) -> None:
    """Copy each retriever's TREC runs of ``splits`` into the store's candidates table."""
    for system in cfg.retrieval.systems:
        for split in splits:
            path = run_path(folder, system, split)
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: run `fusion-ltr retrieve --config {cfg.source}` first")
            store.put_candidates(read_trec_run(path).assign(retriever=system))


def features(cfg: Config, splits: list[str] | None = None, log=print, progress: bool = True) -> dict:
    """Build the configured feature set for the candidates of ``splits``; print the summary table."""
    _needs_documents(cfg, "features")
    t0 = time.perf_counter()
    folder = run_dir(cfg)
    splits = list(splits or cfg.dataset.splits)
    ds = load_beir(cfg.dataset.name)
    extractors = make_extractors(cfg)
    with FeatureStore(store_path(cfg)) as store:
        store.put_documents(ds.corpus)
        store.put_queries(ds.queries)
        for split in splits:
            store.put_qrels(ds.split(split)[1])
        load_candidates(store, cfg, folder, splits)
        all_qids = {q for s in splits for q in ds.split(s)[0][QID]}
        test_qids = set(ds.split(cfg.dataset.test_split)[0][QID]) if cfg.dataset.test_split in ds.qrels else set()
        leaked = leakage_guard(cfg, test_qids) & all_qids  # the ranker never learns from these: no features
        qids = sorted(all_qids - leaked)
        if leaked:
            log(f"skipping {len(leaked)} queries the cross-encoder was trained on (the ranker never uses them)")
        pairs = store.pairs(qids, retriever=cfg.features.candidates)
        for ext in extractors:
            ext.fit(ds.corpus)
        specs = feature_specs(extractors)  # versions include the fitted corpus statistics
        reports = build(store, pairs, extractors, progress=progress)
        table = summary_table(store, extractors, reports, qids, retriever=cfg.features.candidates)
        view = store.create_view(ds.name.replace("-", "_"), specs, retriever=cfg.features.candidates)
    seconds = time.perf_counter() - t0
    out = folder / "features"
    out.mkdir(exist_ok=True)
    manifest = {
        "dataset": ds.name, "splits": splits, "candidates": cfg.features.candidates, "store": str(store_path(cfg)),
        "features": [{"name": s.name, "version": s.version, "description": s.description, "extractor": e.name}
                     for e in extractors for s in e.specs],
        "extractors": {e.name: e.provenance() for e in extractors}, "sql_view": view, "seconds": seconds,
        "reports": [vars(r) for r in reports],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    text = table.to_markdown(index=False, floatfmt=".4g")
    (out / "summary.md").write_text(text + "\n")
    log(text)
    log(f"{len(pairs)} candidate pairs, {sum(r.computed for r in reports)} values computed, "
        f"{seconds:.1f}s; SQL view {view} in {store_path(cfg)}")
    return manifest


def ce_output(cfg: Config) -> Path:
    return Path(cfg.finetune.output) if cfg.finetune.output else Path(cfg.run.dir) / "crossencoder"


def _synthetic_groups(cfg: Config, ds, ce_queries: pd.DataFrame, qrels: pd.DataFrame, progress: bool):
    """Generate (cached), filter and turn synthetic queries into training groups with hard negatives."""
    from features import synthetic as syn

    p = cfg.finetune.params
    sp = syn.SyntheticParams(n_docs=p.synthetic, label=p.synthetic_label, filter_k=p.synthetic_filter_k, seed=p.seed)
    examples = syn.few_shot_examples(ce_queries, qrels, ds.corpus, sp.examples, sp.seed)
    with FeatureStore(store_path(cfg)) as store:
        generated = syn.synthetic_queries(store, ds.corpus, examples, sp, progress=progress)
    bm25 = BM25Retriever.load(Path(cfg.run.dir) / "index" / "bm25")
    dense = DenseRetriever(cfg.retrieval.dense, cache=cfg.run.cache or None).index(ds.corpus)
    runs = [bm25.retrieve(generated, p.negatives_from), dense.retrieve(generated, p.negatives_from)]
    kept = syn.filter_by_retrieval(generated, runs, sp.filter_k)
    kept = kept[kept["kept"]]
    syn_qrels = pd.DataFrame({QID: kept[QID], "docno": kept["docno"], "label": 1})
    cands = rrf(runs, k=cfg.retrieval.rrf_k, depth=p.negatives_from)
    groups = ce_training.training_groups(kept[[QID, "query"]], syn_qrels, cands, ds.corpus, negatives=p.negatives,
                                         negatives_from=p.negatives_from, seed=p.seed)
    info = {"documents": sp.n_docs, "generated": len(generated), "kept": len(kept), "filter_k": sp.filter_k,
            "generator": sp.version(), "examples": [q for _, q in examples]}
    return groups, info


def finetune_ce(cfg: Config, log=print, progress: bool = True) -> dict:
    """Fine-tune the cross-encoder on the CE side of the training queries (see features.ce_training)."""
    _needs_documents(cfg, "finetune-ce")
    p = cfg.finetune.params.check()
    folder = run_dir(cfg)
    ds = load_beir(cfg.dataset.name)
    train = [s for s in cfg.dataset.splits if s != cfg.dataset.test_split]
    if not train:
        raise ValueError(f"finetune-ce: dataset.splits {list(cfg.dataset.splits)} has no training split besides "
                         f"the test split {cfg.dataset.test_split!r}")
    queries = pd.concat([ds.split(s)[0] for s in train]).drop_duplicates(QID)
    qrels = pd.concat([ds.split(s)[1] for s in train])
    ce_qids, ranker_qids = ce_training.split_queries(queries[QID], p.ranker_fraction, p.seed)
    if p.max_queries:
        ce_qids = sorted(pd.Series(ce_qids).sample(n=min(p.max_queries, len(ce_qids)), random_state=p.seed))
    groups = []
    if p.use_real:
        cands = pd.concat([read_trec_run(run_path(folder, cfg.features.candidates, s)) for s in train])
        groups = ce_training.training_groups(
            queries[queries[QID].isin(set(ce_qids))], qrels, cands, ds.corpus,
            negatives=p.negatives, negatives_from=p.negatives_from, seed=p.seed)
    meta = {"dataset": ds.name, "ranker_qids": ranker_qids}
    if p.synthetic:
        syn_groups, meta["synthetic"] = _synthetic_groups(cfg, ds, queries[queries[QID].isin(set(ce_qids))], qrels,
                                                          progress)
        groups += syn_groups
    out = ce_output(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps({"ce_qids": ce_qids, "ranker_qids": ranker_qids}, indent=1))
    log(f"finetune-ce: {len(groups)} groups from {len(ce_qids)} CE queries ({len(ranker_qids)} kept for the ranker), "
        f"loss {p.loss}, base {p.base_model}")
    manifest = ce_training.finetune(groups, p, out, meta=meta, progress=progress)
    log(f"model: {out / 'model'} ({manifest['steps']} steps, {manifest['train_seconds']:.0f}s on {manifest['hardware']})")
    return manifest


# ---------------------------------------------------------------------------------------- ranker


def feature_set(cfg: Config) -> tuple[list, dict, dict]:
    """(specs, feature -> extractor, feature -> extractor s/1000 pairs) of the built feature set,
    restricted to ``ranker.features`` when given."""
    if cfg.dataset.format == "letor":
        from retrieval.data import load_letor_fold

        names = load_letor_fold(cfg.dataset.name, cfg.dataset.fold)[0].feature_names
        names = list(cfg.ranker.features) or names
        return [fbase.FeatureSpec(n, "letor") for n in names], {n: n for n in names}, {}
    path = Path(cfg.run.dir) / "features" / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `fusion-ltr features --config {cfg.source}` first")
    manifest = json.loads(path.read_text())
    specs = [fbase.FeatureSpec(f["name"], f["version"], f.get("description", "")) for f in manifest["features"]]
    if cfg.ranker.features:
        known = {s.name: s for s in specs}
        missing = [n for n in cfg.ranker.features if n not in known]
        if missing:
            raise ValueError(f"ranker.features names {missing}, not in the built feature set {list(known)}")
        specs = [known[n] for n in cfg.ranker.features]
    extractor_of = {f["name"]: f["extractor"] for f in manifest["features"]}
    with FeatureStore(store_path(cfg), read_only=True) as store:
        cost_df = store.cost(specs)
    share = cost_df.groupby("feature")["s_per_1000_pairs"].sum().to_dict()
    # an extractor's features share its cost: report the extractor's total per feature
    cost = {n: sum(share.get(m, 0.0) for m, e2 in extractor_of.items() if e2 == e) for n, e in extractor_of.items()}
    return specs, extractor_of, cost


def leakage_guard(cfg: Config, test_qids) -> set[str]:
    """Query ids the ranker must not learn from: those the configured cross-encoder was trained on."""
    ce = cfg.features.extractors.get("crossencoder")
    if ce is None:
        return set()
    trained = ce_training.trained_qids(ce.get("model", "")) if Path(ce.get("model", "")).exists() else set()
    overlap = trained & {str(q) for q in test_qids}
    if overlap:
        raise ValueError(f"the cross-encoder {ce['model']} was trained on {len(overlap)} test query(ies) "
                         f"(e.g. {sorted(overlap)[:3]}): its scores on the test split would be leaked")
    return trained


def ranker_data(cfg: Config, specs) -> dict:
    """train / valid / test RankingData (train minus leaked queries) and the test qrels."""
    if cfg.dataset.format == "letor":
        from retrieval.data import load_letor_fold

        from .data import from_letor, qrels_of

        names = [s.name for s in specs]
        train, valid, test = (from_letor(d).select(names) for d in load_letor_fold(cfg.dataset.name, cfg.dataset.fold))
        return {"train": train, "valid": valid, "test": test, "qrels": qrels_of(test), "leaked": []}
    ds = load_beir(cfg.dataset.name)
    test_q, test_qrels = ds.split(cfg.dataset.test_split)
    leaked = leakage_guard(cfg, test_q[QID])
    train_splits = [s for s in cfg.dataset.splits if s != cfg.dataset.test_split]
    top_n = {name: e.top_n for e in make_extractors(cfg) for name in e.FEATURES if e.top_n is not None}
    with FeatureStore(store_path(cfg), read_only=True) as store:
        test = store.matrix(specs, test_q[QID], retriever=cfg.features.candidates, top_n=top_n)
        out = {"test": test, "qrels": test_qrels, "leaked": sorted(leaked), "train": None, "valid": None}
        if train_splits and not cfg.ranker.cv_folds:
            train_q = sorted({q for s in train_splits for q in ds.split(s)[0][QID]} - leaked)
            fit_q, valid_q = hash_split(train_q, cfg.ranker.valid_fraction, cfg.ranker.params.seed, salt="valid:")
            out["train"] = store.matrix(specs, fit_q, retriever=cfg.features.candidates, top_n=top_n)
            out["valid"] = (store.matrix(specs, valid_q, retriever=cfg.features.candidates, top_n=top_n)
                            if valid_q else None)
    return out


def _models(cfg: Config, specs) -> dict[str, list]:
    names = [s.name for s in specs]
    models = {"lambdamart": names}
    for variant, feats in cfg.ranker.variants.items():
        unknown = [f for f in feats if f not in names]
        if unknown:
            raise ValueError(f"ranker.variants.{variant} names {unknown}, not in the feature set {names}")
        models[f"lambdamart[{variant}]"] = list(feats)
    return models


def model_dir(cfg: Config, name: str) -> Path:
    return Path(cfg.run.dir) / ("model" if name == "lambdamart" else f"model-{name[len('lambdamart['):-1]}")


def _serving_info(cfg: Config) -> tuple[dict, list]:
    """What the Scorer needs beside the booster: the first-stage recipe (for ``search``), where the run
    was made from (to find relative model paths) and the extractors whose corpus statistics it saves."""
    if cfg.dataset.format == "letor":
        return {"letor_fold": cfg.dataset.fold}, []
    r = cfg.retrieval
    serving = {"retrieval": {"systems": list(r.systems), "k": r.k, "depth": r.depth, "rrf_k": r.rrf_k,
                             "bm25": vars(r.bm25), "dense": vars(r.dense)},
               "run_dir": cfg.run.dir, "workdir": str(Path.cwd()), "embedding_cache": cfg.run.cache}
    stateful = [e for e in make_extractors(cfg) if e.has_corpus_state]
    serving |= {"candidates": cfg.features.candidates, "extractors": cfg.features.extractors}
    if stateful:
        corpus = load_beir(cfg.dataset.name).corpus
        for ext in stateful:
            ext.fit(corpus)
    return serving, stateful


def train(cfg: Config, log=print) -> dict:
    """Train the LambdaMART (and its variants) on the training split's candidates; save the models."""
    from .lambdamart import LambdaMART

    specs, _, _ = feature_set(cfg)
    data = ranker_data(cfg, specs)
    if data["train"] is None and not cfg.ranker.cv_folds:
        raise ValueError(f"{cfg.source}: no training split (dataset.splits {list(cfg.dataset.splits)}); "
                         "set ranker.cv_folds to cross-validate on the test split instead")
    if data["train"] is None:  # cross-validated config: evaluation is by folds; the saved model is for serving
        log(f"ranker.cv_folds = {cfg.ranker.cv_folds}: `evaluate` cross-validates; the saved model learns from "
            f"all {len(data['test'].group)} queries, for the Scorer")
        data["train"] = data["test"]
    serving, stateful = _serving_info(cfg)
    info = {}
    for name, feats in _models(cfg, specs).items():
        t = time.perf_counter()
        valid = data["valid"].select(feats) if data["valid"] is not None else None
        model = LambdaMART.from_params(cfg.ranker.params).fit(data["train"].select(feats), valid)
        seconds = time.perf_counter() - t
        extra = {"dataset": cfg.dataset.name, "config": cfg.source, **serving,
                 "train_queries": len(data["train"].group), "excluded_queries_leakage_guard": len(data["leaked"]),
                 "fit_seconds": seconds}
        path = model.save(model_dir(cfg, name), extra=extra)
        for ext in stateful:
            ext.save_state(path / "extractors")
        info[name] = {"path": str(path), "best_iteration": model.best_iteration_, "seconds": seconds, "evals": model.evals_}
        log(f"{name}: {len(feats)} features, {len(data['train'].group)} train / "
            f"{len(data['valid'].group) if data['valid'] is not None else 0} valid queries "
            + (f"({len(data['leaked'])} excluded: the cross-encoder learned on them), " if data["leaked"] else "")
            + f"best iteration {model.best_iteration_}, {seconds:.1f}s -> {path}")
    return info


MAX_SINGLE_ROWS = 12  # single-feature baselines printed in the evaluation table (all are in the JSON)


def _direction(data, j) -> float:
    """+1 if a higher value of feature j should rank higher (by Spearman correlation with the label)."""
    from scipy import stats

    x = data.X[:, j]
    ok = np.isfinite(x)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(data.y[ok]) == 0:
        return 1.0
    rho = stats.spearmanr(x[ok], data.y[ok]).statistic
    return -1.0 if rho < 0 else 1.0


def has_ranker(cfg: Config) -> bool:
    """A feature set is built and a model is trained (or the config cross-validates)."""
    built = cfg.dataset.format == "letor" or (Path(cfg.run.dir) / "features" / "manifest.json").exists()
    return built and (cfg.ranker.cv_folds > 0 or (model_dir(cfg, "lambdamart") / "manifest.json").exists())


def evaluate_ranker(cfg: Config, log=print) -> dict:
    """The fused ranking against baselines on the test split's candidates; Holm-corrected paired tests."""
    from . import evaluate as ev
    from .data import run_from_scores
    from .lambdamart import LambdaMART, cross_val_predict

    specs, _, _ = feature_set(cfg)
    data = ranker_data(cfg, specs)
    test, qrels = data["test"], data["qrels"]
    ref = data["train"] if data["train"] is not None else test
    measures = cfg.evaluate.measures
    names = [s.name for s in specs]
    runs = {}
    if "fs_rank" in names:
        runs["first stage"] = run_from_scores(test, -test.X[:, names.index("fs_rank")], "fs")
    for j, s in enumerate(specs):
        if s.name == "fs_rank":
            continue
        runs[f"{s.name} alone"] = run_from_scores(test, _direction(ref, j) * test.X[:, j], s.name)
    learned = []
    for name, feats in _models(cfg, specs).items():
        if cfg.ranker.cv_folds:
            scores = cross_val_predict(cfg.ranker.params, test.select(feats), cfg.ranker.cv_folds,
                                       valid_fraction=cfg.ranker.valid_fraction, seed=cfg.ranker.params.seed)
        else:
            scores = LambdaMART.load(model_dir(cfg, name)).predict(test.select(feats))
        runs[name] = run_from_scores(test, scores, name)
        learned.append(name)
    per_q = {n: ev.per_query(r, qrels, measures) for n, r in runs.items()}
    means = {n: ev.mean(p) for n, p in per_q.items()}
    baselines = [n for n in runs if n not in learned]
    best = max(baselines, key=lambda n: means[n][measures[0]])
    tests = [ev.compare(per_q[best], per_q[n], m, test=cfg.evaluate.test).as_dict() | {"a": best, "b": n}
             for n in learned for m in measures]
    for t, p in zip(tests, ev.holm([t["p_value"] for t in tests])):
        t["p_holm"] = p
    if "lambdamart" in learned and len(learned) > 1:
        for n in learned[1:]:
            extra = ev.compare(per_q[n], per_q["lambdamart"], measures[0], test=cfg.evaluate.test).as_dict()
            tests.append(extra | {"a": n, "b": "lambdamart", "p_holm": None})
    out = Path(cfg.run.dir) / "eval" / cfg.dataset.test_split
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(runs, key=lambda n: (n not in learned, -means[n][measures[0]]))
    shown = [n for n in order if n in learned or n == "first stage"]
    singles = [n for n in order if n not in shown]
    shown += singles[:MAX_SINGLE_ROWS]
    table = ev.markdown_table({n: means[n] for n in shown}, measures)
    if len(singles) > MAX_SINGLE_ROWS:
        table += (f"\n\n({len(singles) - MAX_SINGLE_ROWS} weaker single-feature baselines not shown; all are in "
                  f"ranker.json)")
    what = (f"LETOR fold {cfg.dataset.fold}, test part" if cfg.dataset.format == "letor"
            else f"reranking the {cfg.features.candidates} top-{int(test.group.max())}")
    lines = [f"{cfg.dataset.name} {cfg.dataset.test_split}: {what} ({len(test.group)} queries"
             + (f", {cfg.ranker.cv_folds}-fold query-level cross-validation" if cfg.ranker.cv_folds else "") + ")",
             "", table, "", f"best baseline: {best}"]
    for t in tests:
        if t["measure"] == measures[0]:
            holm_txt = f", Holm p={t['p_holm']:.3g}" if t["p_holm"] is not None else ""
            lines.append(f"{t['b']} vs {t['a']}: {t['measure']} {t['delta']:+.4f} (p={t['p_value']:.3g}{holm_txt}), "
                         f"wins/losses/ties {t['wins']}/{t['losses']}/{t['ties']}")
    text = "\n".join(lines)
    (out / "ranker.md").write_text(text + "\n")
    result = {"means": means, "best_baseline": best, "tests": tests, "learned": learned,
              "per_query": {n: p.to_dict(orient="index") for n, p in per_q.items()}}
    (out / "ranker.json").write_text(json.dumps(result, indent=2, default=float))
    log(text)
    return result


def report(cfg: Config, query: str | None = None, ablate: bool = True, log=print) -> Path:
    """Importance report of the trained model (Markdown, JSON, PNG) into <run.dir>/report."""
    from . import importance
    from .lambdamart import LambdaMART

    specs, extractor_of, cost = feature_set(cfg)
    data = ranker_data(cfg, specs)
    if data["train"] is None:
        raise ValueError("report needs a training split (cross-validated runs have no single model to explain)")
    model = LambdaMART.load(model_dir(cfg, "lambdamart"))
    rep = importance.build_report(model, data["train"], data["valid"], data["test"], data["qrels"],
                                  extractor_of=extractor_of, cost=cost, query=query, ablate=ablate)
    out = importance.write(rep, model, data["test"], Path(cfg.run.dir) / "report")
    log((out / "importance.md").read_text())
    log(f"report written to {out}")
    return out


# ------------------------------------------------------------------------------------ one command


def _step(folder: Path, name: str, key, outputs: list[Path], fn, log):
    """Run ``fn`` unless the step's inputs (``key``) are unchanged since it last completed and its
    ``outputs`` exist; the stamps live in ``<run>/steps.json``."""
    stamps_path = folder / "steps.json"
    stamps = json.loads(stamps_path.read_text()) if stamps_path.exists() else {}
    digest = fbase.digest(key, 16)
    if stamps.get(name) == digest and all(p.exists() for p in outputs):
        log(f"== {name}: cached (inputs unchanged since the last run; delete {stamps_path} to force)")
        return None
    log(f"== {name}")
    t = time.perf_counter()
    result = fn()
    stamps = json.loads(stamps_path.read_text()) if stamps_path.exists() else {}
    stamps[name] = digest
    stamps_path.write_text(json.dumps(stamps, indent=2))
    log(f"== {name}: done in {time.perf_counter() - t:.1f}s")
    return result


def needs_finetune(cfg: Config) -> bool:
    """The configured cross-encoder is the one `finetune-ce` writes (so `run` must train it first)."""
    ce = cfg.features.extractors.get("crossencoder")
    if ce is None or "model" not in ce:
        return False
    return Path(ce["model"]).resolve() == (ce_output(cfg) / "model").resolve()


def ce_is_trained(cfg: Config) -> bool:
    """The fine-tuned cross-encoder exists and its manifest records the configured parameters."""
    out = ce_output(cfg)
    if not (out / "model" / "config.json").exists() or not (out / "manifest.json").exists():
        return False
    params = json.loads((out / "manifest.json").read_text()).get("params")
    return params == json.loads(json.dumps(dataclasses.asdict(cfg.finetune.params)))


def run(cfg: Config, log=print, progress: bool = True, ablate: bool = True) -> dict:
    """retrieve -> (finetune-ce) -> features -> train -> evaluate -> report, each step cached."""
    folder = run_dir(cfg)
    log(f"run folder: {folder.resolve()}")
    t0 = time.perf_counter()
    letor = cfg.dataset.format == "letor"
    retrieval_key = [cfg.dataset.name, list(cfg.dataset.splits), dataclasses.asdict(cfg.retrieval)]
    if not letor:
        _step(folder, "retrieve", retrieval_key, [folder / "retrieval" / "manifest.json"],
              lambda: retrieve(cfg, log=log), log)
        if needs_finetune(cfg):
            if ce_is_trained(cfg):
                log(f"== finetune-ce: cached ({ce_output(cfg) / 'model'} was trained with these parameters)")
            else:
                log("== finetune-ce")
                t = time.perf_counter()
                finetune_ce(cfg, log=log, progress=progress)
                log(f"== finetune-ce: done in {time.perf_counter() - t:.1f}s")
        log("== features (the store computes only what it lacks)")
        features(cfg, log=log, progress=progress)
    specs, _, _ = feature_set(cfg)
    train_key = [cfg.dataset.name, cfg.dataset.fold, [(s.name, s.version) for s in specs],
                 dataclasses.asdict(cfg.ranker), cfg.features.extractors]  # extractor configs go into the model
    _step(folder, "train", train_key, [model_dir(cfg, "lambdamart") / "manifest.json"], lambda: train(cfg, log=log), log)
    log("== evaluate")
    if not letor:
        evaluate(cfg, log=lambda *_: None)  # first-stage table into eval/<split>/ (the ranker table lists them)
    result = evaluate_ranker(cfg, log=lambda *_: None)
    if cfg.ranker.cv_folds:
        log("== report: skipped (a cross-validated config has no held-out split to ablate on)")
    else:
        _step(folder, "report", [train_key, ablate], [folder / "report" / "importance.json"],
              lambda: report(cfg, ablate=ablate, log=lambda *_: None), log)
    log("")
    log((folder / "eval" / cfg.dataset.test_split / "ranker.md").read_text().rstrip())
    log("")
    log(f"run folder: {folder.resolve()} ({time.perf_counter() - t0:.0f}s)")
    log(f"  model: {model_dir(cfg, 'lambdamart')}   importance: {folder / 'report' / 'importance.md'}")
    return result
