"""``fusion-ltr train``: LambdaMART (and its variants) on the feature store; each saved as a model
folder with what the Scorer needs to serve it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from features.matrix import RankingData
from retrieval.data import hash_split
from retrieval.errors import UsageError

from ..lambdamart import LambdaMART, cross_val_predict
from ..integrity import seal
from ..layout import replaced_atomically
from ..model import RankingModel
from ..tuning import describe, guard, n_folds, settings, tune


def extractor_configs(run) -> dict[str, dict]:
    """The extractor configs the feature set was built with, resolved (e.g. freshness' "now" as the
    date it stood for), so the Scorer rebuilds exactly the extractors whose values the model learned."""
    path = run.layout.features_manifest
    built = json.loads(path.read_text()).get("extractor_configs") if path.exists() else None
    return built or {e.name: e.config() for e in run.extractors}


def serving_info(run) -> dict:
    """What the Scorer needs beside the booster: the first-stage recipe (for ``search``), where the run
    was made from (to find relative model paths) and the extractors to rebuild."""
    cfg = run.cfg
    if run.letor:
        return {"letor_fold": cfg.dataset.fold}
    return {"retrieval": cfg.retrieval.to_dict(), "run_dir": cfg.run.dir, "workdir": str(Path.cwd()),
            "embedding_cache": cfg.run.cache, "candidates": cfg.features.candidates,
            "features_from": cfg.features.from_run,
            "extractors": extractor_configs(run)}


def save_extractor_state(run, model_dir: Path) -> None:
    """Copy the corpus statistics the features step fitted into the model folder (fits them here only
    for a run folder from before they were kept)."""
    stateful = [e for e in run.extractors if e.has_corpus_state]
    if not stateful:
        return
    target = model_dir / "extractors"
    source = run.layout.extractor_state
    if all((source / f"{e.name}.json").exists() for e in stateful):
        shutil.copytree(source, target, dirs_exist_ok=True)
        return
    for ext in run.fitted_extractors:
        if ext.has_corpus_state:
            ext.save_state(target)


def serving_split(cfg, data):
    """(train, valid) of a cross-validated config's serving model: every query, less the same share
    held out for early stopping as each fold model holds out (``ranker.valid_fraction``)."""
    if cfg.ranker.valid_fraction <= 0:
        return data, None
    fit_q, valid_q = hash_split(list(data.unique_qids), cfg.ranker.valid_fraction, cfg.ranker.base_params.seed,
                                salt="valid:")
    return data.subset(fit_q), (data.subset(valid_q) if valid_q else None)


def first_stage_guard(run, model, params, train, valid, tuning) -> dict | None:
    """The trained model against the first-stage order on held-out training queries (see
    :mod:`ranker.tuning`): the tuning's out-of-fold scores, else the validation split, else a
    cross-validation of the settings on the training queries. None for LETOR (no first-stage order)."""
    cfg = run.cfg
    if run.letor:
        return None
    kw = {"measure": cfg.evaluate.measures[0], "action": cfg.ranker.guard}
    if tuning is not None:
        data = RankingData.concat([train, valid])
        return guard(data, tuning.oof, where=f"out-of-fold scores of the {tuning.folds}-fold tuning", **kw)
    if valid is not None:
        return guard(valid, model.predict(valid), where="the validation split (also used for early stopping)", **kw)
    k = n_folds(cfg.ranker.tune_folds, train)
    oof = cross_val_predict(params, train, k, valid_fraction=0.0, seed=params.seed)
    return guard(train, oof, where=f"{k}-fold cross-validation on the training queries", **kw)


def fit(run, params, train, valid) -> LambdaMART:
    """Fit one model here, or on the Dask cluster of ``[compute]`` (the same model folder either way)."""
    compute = run.cfg.compute
    if compute.engine != "dask":
        return LambdaMART.from_params(params).fit(train, valid)
    from ..distributed import dask_client, fit_dask

    with dask_client(compute) as client:
        return fit_dask(LambdaMART.from_params(params), train, valid, client, partitions=compute.n_partitions)


def calibrate(run, name: str, scores, valid: RankingData | None, folder: Path) -> dict | None:
    """Fit P(relevant) on the validation queries' served scores (:mod:`ranker.calibration`) and save it in
    ``folder``; None (said in the log) without validation queries or judged relevant documents there."""
    from ..calibration import choose

    if valid is None or not (valid.y > 0).any():
        run.log(f"{name}: no calibration (no validation queries with a relevant document): relevance_score is the "
                "raw score")
        return None
    cal = choose(scores, valid.y, valid.qids, seed=run.cfg.ranker.base_params.seed)
    cal.save(folder)
    run.log(f"{name}: calibrated ({cal.kind}, held-out log loss " + ", ".join(
        f"{k} {v:.4f}" for k, v in cal.info["heldout_log_loss"].items()) + f" on {cal.info['queries']} validation queries)")
    return {"kind": cal.kind, **cal.info}


def warn_guard(run, name: str, check: dict | None) -> None:
    if check and check["fired"]:
        run.log(f"WARNING: {name} is not better than the first stage on {check['queries']} held-out training "
                f"queries ({check['held_out']}): {check['measure']} {check['model']:.4f} vs {check['first_stage']:.4f} "
                f"(delta {check['delta']:+.4f}, p={check['p_value']:.3g}); "
                + (f"it serves the {check['serves']} order (ranker.guard = {check['action']!r})"
                   if check["serves"] != "model" else "it is served anyway (ranker.guard = 'warn')"))


def validate_cascade(run, model: RankingModel, specs, valid_q) -> dict:
    """The trained cascade ``model`` on every validation query (held out from the fit, used for early
    stopping), scored as the Scorer serves it (:func:`ranker.cascade.score_stored`: the costly features
    computed for the documents that reach their stage) in the first stage's order with its ranks, and
    shuffled without them (as a request that gives none), beside the first stage. The first-stage guard is
    decided on the first (a request without ranks has no first-stage order to fall back to); a model for
    apps (:attr:`Run.for_apps`) is also scored on the second. Returns the
    figures, the guard's decision, the served scores and their matrix (for calibration)."""
    from ..cascade import score_stored
    from ..model import first_stage_scores, serve
    from ..tuning import per_query

    cfg = run.cfg
    measure = cfg.evaluate.measures[0]
    source = run.feature_source()
    model.serves = "model"
    ranked, data = score_stored(model, source, specs, valid_q)
    check = guard(data, ranked.scores, measure=measure, action=cfg.ranker.guard,
                  where="every validation query (also used for early stopping), served stage by stage")
    figures = {"queries": len(data.group), "measure": measure,
               "first stage": float(per_query(data, first_stage_scores(data), measure).mean()),
               "in order": float(per_query(data, ranked.scores, measure).mean())}
    line = f"{figures['in order']:.4f} in the first stage's order with its ranks"
    shuffled_q = None
    if run.for_apps:  # and as an app's list shuffled without ranks
        unranked, shuffled = score_stored(model, source, specs, valid_q, ranked=False,
                                          list_features=run.list_features, seed=cfg.ranker.base_params.seed)
        shuffled_q = per_query(shuffled, unranked.scores, measure)
        figures["shuffled, without ranks"] = float(shuffled_q.mean())
        line += f", {figures['shuffled, without ranks']:.4f} shuffled without them"
    run.log(f"lambdamart: {measure} on {figures['queries']} validation queries: {line} (first stage "
            f"{figures['first stage']:.4f})")
    served = serve(check["serves"], ranked.scores, first_stage_scores(data), data.group)
    return {"figures": figures, "guard": check, "served": served, "data": data, "shuffled": shuffled_q}


def train_unranked_guard(run, model: RankingModel, shuffled_q, folder: Path) -> dict | None:
    """The unranked guard of a cascade for apps' lists (see :mod:`ranker.model`): a content-only model
    (stage 1's features less the list features, with stage 1's settings) trained on the same training
    queries, against the cascade on the validation queries shuffled without ranks (``shuffled_q``: the
    cascade's per-query values there). Where the cascade is not better, the content-only model is saved in
    ``folder``/unranked (calibrated on the validation queries) and serves lists without ranks. None for a
    model that does not hide its list features for such lists (it takes the positions as ranks)."""
    from ..model import CONTENT, UNRANKED
    from ..tuning import per_query, unranked_guard

    cfg, data = run.cfg, run.matrices
    hidden = set(hidden_when_unranked(run, model.stages[0].features))
    if shuffled_q is None or not hidden or data.valid is None:
        return None
    features = [f for f in model.stages[0].features if f not in set(run.list_features)]
    params = cfg.ranker.stage_params(0) or cfg.ranker.base_params
    train_data, valid = data.train.select(features), data.valid.select(features)
    content = fit(run, params, train_data, valid)
    scores = content.predict(valid)
    measure = cfg.evaluate.measures[0]
    check = unranked_guard(shuffled_q, per_query(valid, scores, measure), measure=measure, action=cfg.ranker.guard,
                           where="every validation query, shuffled without ranks")
    check["features"] = features
    run.log(f"lambdamart: unranked guard: on the {check['queries']} validation queries shuffled without ranks the "
            f"cascade scored {check['model']:.4f} {measure}, a content-only model {check['content_model']:.4f} "
            f"(delta {check['delta']:+.4f}, p={check['p_value']:.3g}): a list without ranks is served by the "
            + ("content-only model" if check["serves"] == CONTENT else "cascade")
            + (" (ranker.guard = 'warn')" if check["fired"] and check["serves"] != CONTENT else ""))
    if check["serves"] == CONTENT:
        sub = folder / UNRANKED
        content.save(sub, extra={"dataset": cfg.dataset.name, "config": cfg.source, "unranked_guard_of": "cascade",
                                 "train_queries": len(data.train.group)})
        calibrate(run, "lambdamart (content-only, for lists without ranks)", scores, valid, sub)
    return check


def hidden_when_unranked(run, features) -> list[str]:
    """The list features a model learned to do without (``ranker.hide_ranks``): the Scorer hides them for
    a request whose documents carry no rank or score, instead of taking their positions."""
    if run.letor or run.cfg.ranker.hide_ranks <= 0:
        return []
    return [f for f in features if f in set(run.list_features)]


def train_cascade(run, serving: dict) -> dict:
    """Train the configured cascade on the run's training queries (:func:`ranker.cascade.train`), then
    calibrate it as it is served, on the validation queries, and seal the folder."""
    from .. import cascade

    cfg, layout = run.cfg, run.layout
    data = run.matrices
    if data.train is None:
        raise UsageError(f"{cfg.source}: ranker.cascade needs a training split")
    staged = run.stage_plan()
    train_q = list(data.train.unique_qids) + (list(data.valid.unique_qids) if data.valid is not None else [])
    valid_q = set(data.valid.unique_qids) if data.valid is not None else set()
    extra = {"dataset": cfg.dataset.name, "config": cfg.source, **serving,
             "hidden_when_unranked": hidden_when_unranked(run, [s.name for s in staged.specs]),
             "leaked_queries_excluded": len(data.leaked)}
    info = cascade.train(cfg.ranker, run.feature_source(), staged, train_q, valid_q, list(data.test.unique_qids),
                         settings(cfg.ranker, cfg.evaluate.measures[0]), layout.model(), extra,
                         lambda folder: save_extractor_state(run, folder), log=run.log)
    if data.valid is not None:  # the cascade as served: deeper stages first, then the stage's score
        model = RankingModel.load(layout.model(), verify=False)  # sealed below, once calibrated
        checked = validate_cascade(run, model, staged.raw_specs, data.valid.unique_qids)
        info["validation"], info["guard"] = checked["figures"], checked["guard"]
        info["unranked_guard"] = train_unranked_guard(run, model, checked["shuffled"], layout.model())
        manifest_file = layout.model() / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        manifest |= {"guard": checked["guard"], "validation": checked["figures"],
                     "unranked_guard": info["unranked_guard"]}
        manifest_file.write_text(json.dumps(manifest, indent=2, default=str))
        warn_guard(run, "lambdamart", checked["guard"])
        info["calibration"] = calibrate(run, "lambdamart", checked["served"], checked["data"], layout.model())
    run.features_changed()  # the deferred features now have values, and costs (the report reads both)
    seal(layout.model())  # checksums last: Scorer.load verifies them before a booster is read
    return info


def rerank_depth(run, data) -> int:
    """How deep a model learned from clicks reorders the first stage (``labels.rerank_depth``; 0 there: the
    deepest position its training impressions showed); 0 (every candidate) for a model of judgements."""
    labels = run.cfg.labels
    if labels.source != "clicks" or labels.rerank_depth < 0:
        return 0
    depth = labels.rerank_depth or data.shown_depth
    if depth:
        run.log(f"labels from clicks: the model reorders the first stage's top {depth} (labels.rerank_depth), the "
                "rest keeps its order below them")
    return depth


def train(run) -> dict:
    """Train the LambdaMART (and its variants) on the training split's candidates; save the models."""
    cfg, layout, log = run.cfg, run.layout, run.log
    data = run.matrices
    train_data, valid = data.train, data.valid
    if train_data is None and not cfg.ranker.cv_folds:
        raise UsageError(f"{cfg.source}: no training split (dataset.splits {list(cfg.dataset.splits)}); "
                         "set ranker.cv_folds to cross-validate on the test split instead")
    if train_data is None:  # cross-validated config: evaluation is by folds; the saved model is for serving
        train_data, valid = serving_split(cfg, data.test)
        log(f"ranker.cv_folds = {cfg.ranker.cv_folds}: `evaluate` cross-validates; the saved model, for the "
            f"Scorer, learns from all {len(data.test.group)} queries"
            + (", early-stopped on the same share of them as each fold model" if valid is not None else ""))
    serving = serving_info(run)
    info = {}
    if cfg.ranker.cascade:  # the main model is a cascade of stage models (ranker.cascade)
        info["lambdamart"] = train_cascade(run, serving)
        data = run.matrices  # read again: the deferred features now have values, and costs
    depth = rerank_depth(run, data)
    for name, feats in run.models().items():
        if name == "lambdamart" and cfg.ranker.cascade:
            continue
        t = time.perf_counter()
        fit_data, fit_valid = train_data.select(feats), valid.select(feats) if valid is not None else None
        own = run.model_params(name)  # a variant's own settings, used as they are
        params, tuning = own or cfg.ranker.base_params, None
        if cfg.ranker.auto and own is None:  # settings chosen by CV on the training queries only
            tuning = tune(cfg.ranker.base_params, RankingData.concat([run.hide_ranks(fit_data), run.hide_ranks(fit_valid)]),
                          folds=cfg.ranker.tune_folds, valid_fraction=cfg.ranker.valid_fraction,
                          measure=cfg.evaluate.measures[0])
            params = tuning.chosen
            log(f"{name}: ranker.params = auto chose {describe(params)} ({tuning.folds}-fold CV on "
                f"{len(fit_data.group) + (len(fit_valid.group) if fit_valid is not None else 0)} training queries, "
                f"{len(tuning.table)} settings, {tuning.seconds:.0f}s)")
        model = fit(run, params, run.hide_ranks(fit_data), run.hide_ranks(fit_valid))  # ranker.hide_ranks
        check = first_stage_guard(run, model, params, fit_data, fit_valid, tuning)
        seconds = time.perf_counter() - t
        extra = {"dataset": cfg.dataset.name, "config": cfg.source, **serving, "rerank_depth": depth,
                 "hidden_when_unranked": hidden_when_unranked(run, feats),
                 "train_queries": len(train_data.group), "leaked_queries_excluded": len(data.leaked),
                 "fit_seconds": seconds, "tuning": tuning.as_dict() if tuning else None, "guard": check}
        path = layout.model(name)
        with replaced_atomically(path) as tmp:  # a failure keeps the previous model whole
            model.save(tmp, extra=extra)
            if not run.letor:
                save_extractor_state(run, tmp)
            served = RankingModel.plain(model, guard=check, depth=depth).predict(fit_valid) if fit_valid is not None else None
            calibration = calibrate(run, name, served, fit_valid, tmp)
            seal(tmp)
        info[name] = {"path": str(path), "best_iteration": model.best_iteration_, "seconds": seconds,
                      "evals": model.evals_, "guard": check, "calibration": calibration}
        log(f"{name}: {len(feats)} features, {len(train_data.group)} train / "
            f"{len(valid.group) if valid is not None else 0} valid queries "
            + (f"({len(data.leaked)} excluded: the cross-encoder learned on them), " if data.leaked else "")
            + f"best iteration {model.best_iteration_}, {seconds:.1f}s -> {path}")
        warn_guard(run, name, check)
    return info

