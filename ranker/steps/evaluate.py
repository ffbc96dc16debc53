"""``fusion-ltr evaluate``: the first-stage runs, then the ranker against baselines on the test split.

Every ranking the ranker evaluation scores is also written as a TREC run file
(``eval/<split>/runs/<name>.trec``), so any external evaluator can check every figure in the tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retrieval import read_trec_run, write_trec_run
from features.matrix import RankingData
from retrieval.frames import DOCNO, QID, RANK

from .. import evaluate as ev
from ..data import qrels_of, ranking_from_scores, strict_scores
from ..lambdamart import cross_val_predict, query_folds
from ..model import RankingModel, first_stage_scores, serve
from ..tuning import guard, settings

MAX_SINGLE_ROWS = 12  # single-feature baselines printed in the evaluation table (all are in the JSON)


def evaluate(run, split: str | None = None, model: str | None = None) -> dict:
    """First-stage evaluation (BEIR datasets), then the ranker's when one is trained; with ``model``,
    that model (trained on another run) against this run's first stage instead."""
    if model is not None:
        return {"transfer": evaluate_transfer(run, model)}
    result = {}
    if not run.letor:
        result["first_stage"] = evaluate_first_stage(run, split)
        run.log("")
    if has_ranker(run):
        result["ranker"] = evaluate_ranker(run)
    return result


def evaluate_first_stage(run, split: str | None = None) -> dict:
    """Every configured system's run on a split; paired tests of the last system vs the others."""
    run.needs_documents("evaluate")
    cfg, layout = run.cfg, run.layout
    split = split or cfg.dataset.test_split
    ds = run.dataset
    _, qrels = ds.split(split)
    per_q, means = {}, {}
    for system in cfg.retrieval.systems:
        path = layout.retrieval_trec(system, split)
        if not path.exists():
            raise run.missing(path, "retrieve")
        per_q[system] = ev.per_query(read_trec_run(path), qrels, cfg.evaluate.measures,
                                     ignore_identical_ids=cfg.dataset.ignore_identical_ids)
        means[system] = ev.mean(per_q[system])
    *others, last = cfg.retrieval.systems
    tests = [ev.compare(per_q[o], per_q[last], m, test=cfg.evaluate.test).as_dict() | {"a": o, "b": last}
             for o in others for m in cfg.evaluate.measures]
    out = layout.eval(split)
    out.mkdir(parents=True, exist_ok=True)
    result = {"dataset": ds.name, "split": split, "n_queries": int(qrels[QID].nunique()), "means": means,
              "tests": tests, "per_query": {s: v.to_dict(orient="index") for s, v in per_q.items()},
              "run_files": {s: str(layout.retrieval_trec(s, split)) for s in cfg.retrieval.systems}}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    lines = [f"{ds.name} {split} ({result['n_queries']} queries)", "",
             ev.markdown_table(means, cfg.evaluate.measures), ""]
    lines += [ev.comparison_line(t) for t in tests if t["measure"] == cfg.evaluate.measures[0]]
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    run.log(text)
    return result


def has_ranker(run) -> bool:
    """A feature set is built and a model is trained (or the config cross-validates)."""
    built = run.letor or run.layout.features_manifest.exists()
    return built and (run.cfg.ranker.cv_folds > 0 or (run.layout.model() / "manifest.json").exists())


FIRST_STAGE = "first stage"


def baseline_scores(names: list[str], ref, data) -> dict[str, np.ndarray]:
    """Scores of ``data``'s rows under the first-stage order and under every single feature used alone
    as a ranker, each feature's direction chosen on ``ref`` (training queries only)."""
    out = {}
    if "fs_rank" in names:
        out[FIRST_STAGE] = -data.X[:, names.index("fs_rank")]
    for j, name in enumerate(names):
        if name != "fs_rank":
            out[f"{name} alone"] = ev.direction(ref.X[:, j], ref.y) * data.X[:, j]
    return out


def best_baseline(names: list[str], ref, measure: str) -> str:
    """The baseline with the best mean ``measure`` on the training queries ``ref`` (judged by their
    candidates' labels); the first stage wins ties."""
    qrels = qrels_of(ref)
    means = {n: ev.mean(ev.per_query(ranking_from_scores(ref, s, n), qrels, [measure]))[measure]
             for n, s in baseline_scores(names, ref, ref).items()}
    return max(means, key=lambda n: (means[n], n == FIRST_STAGE))


def baselines(run, data, measure: str) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Every baseline's scores on the test rows, the scores of the best baseline, and which baseline
    that is. Directions and the best baseline are chosen on training queries only: the training split,
    or under cross-validation each fold's training queries (the same folds as the learned models')."""
    test, names = data.test, run.feature_set.names
    cfg = run.cfg
    if not cfg.ranker.cv_folds:
        best = best_baseline(names, data.train, measure)
        scores = baseline_scores(names, data.train, test)
        return scores, scores[best], {"chosen_on": "the training split", "best": best}
    scores = {n: np.full(len(test.y), np.nan) for n in baseline_scores(names, test, test)}
    best_scores, chosen = np.full(len(test.y), np.nan), []
    for fold in query_folds(test.qids, cfg.ranker.cv_folds, cfg.ranker.base_params.seed):
        ref = test.subset([q for q in test.unique_qids if q not in set(fold)])
        mask = np.isin(test.qids, fold)  # rows of the fold, in the data's order (subset keeps it)
        part = baseline_scores(names, ref, test.subset(fold))
        for n, values in part.items():
            scores[n][mask] = values
        best = best_baseline(names, ref, measure)
        best_scores[mask] = part[best]
        chosen.append(best)
    return scores, best_scores, {"chosen_on": "each fold's training queries", "best_per_fold": chosen}


def fold_guard(cfg, checks: list):
    """Under cross-validation, each fold's first-stage guard: decided on the fold's validation queries (the
    model against the first-stage order there, as training decides it), its policy applied to the fold's
    test queries; each decision appended to ``checks``. None without validation queries (valid_fraction = 0)."""
    if cfg.ranker.valid_fraction <= 0:
        return None

    def served(model, valid, part, scores):
        if valid is None:
            return scores
        check = guard(valid, model.predict(valid), measure=cfg.evaluate.measures[0], action=cfg.ranker.guard,
                      where="the fold's validation queries (also used for early stopping)")
        checks.append(check)
        return serve(check["serves"], scores, first_stage_scores(part), part.group)

    return served


def served_scores(run, model: RankingModel, test: RankingData, *, ranked: bool = True) -> tuple[RankingData, np.ndarray]:
    """The test rows and the trained ``model``'s served scores of them, in the first stage's order with its
    ranks or (``ranked = False``) as an app's list shuffled without them. A cascade is scored stage by
    stage as the Scorer serves it, its costly features computed for the documents that reach their stage
    in this view (:func:`ranker.cascade.score_stored`); a plain model on the matrix as it is."""
    seed = run.cfg.ranker.base_params.seed
    if not model.cascade:
        data = test if ranked else model.unranked(test, run.list_features, seed=seed)
        return data, model.predict(data, ordered=ranked or not model.hides_ranks)
    from ..cascade import score_stored

    scored, data = score_stored(model, run.feature_source(), run.feature_set.raw_specs, test.unique_qids,
                                ranked=ranked, list_features=run.list_features, seed=seed)
    return data, scored.scores


def evaluate_ranker(run) -> dict:
    """The fused ranking against baselines on the test split's candidates; Holm-corrected paired tests
    against the best baseline (chosen on training queries) and against the first stage."""
    cfg, layout = run.cfg, run.layout
    data = run.matrices
    test, qrels = data.test, data.qrels
    measures = cfg.evaluate.measures
    base_scores, best_scores, choice = baselines(run, data, measures[0])
    runs = {n: ranking_from_scores(test, s, n) for n, s in base_scores.items()}
    picked = set(choice.get("best_per_fold", [choice.get("best")]))
    if len(picked) == 1:  # one baseline chosen (every fold chose the same): it is its own row
        best = picked.pop()
    else:
        best = "best baseline (per fold)"
        runs[best] = ranking_from_scores(test, best_scores, best)
    learned, notes, shuffled, guards = [], [], {}, {}
    for name, feats in run.models().items():
        if cfg.ranker.cv_folds:
            guards[name] = []
            scores = cross_val_predict(run.model_params(name) or settings(cfg.ranker, measures[0]),
                                       test.select(feats), cfg.ranker.cv_folds,
                                       valid_fraction=cfg.ranker.valid_fraction, seed=cfg.ranker.base_params.seed,
                                       served=fold_guard(cfg, guards[name]))
            fired = [c for c in guards[name] if c["fired"]]
            if fired:
                notes.append(f"{name}: the first-stage guard served the {fired[0]['serves']} order in {len(fired)} "
                             f"of {cfg.ranker.cv_folds} folds (the model not better on the fold's validation queries)")
        else:  # as the Scorer serves it: stage by stage, the first-stage guard's policy applied
            model = RankingModel.load(layout.model(name))
            scored_on, scores = served_scores(run, model, test)
            if model.serves != "model":
                check = model.manifest["guard"]
                notes.append(f"{name}: the first-stage guard serves the {model.serves} order (on held-out "
                             f"training queries the model scored {check['delta']:+.4f} {check['measure']} against it)")
            if run.for_apps:  # as an app's list given in another order, without ranks (what the Scorer sees then)
                if model.unranked_stage is not None:
                    check = model.manifest["unranked_guard"]
                    notes.append(f"{name}: the unranked guard serves lists without ranks with its content-only model "
                                 f"(on held-out training queries shuffled without ranks the model scored "
                                 f"{check['delta']:+.4f} {check['measure']} against it)")
                shown = f"{name}, shuffled without ranks"
                shuffled[shown] = ranking_from_scores(*served_scores(run, model, test, ranked=False), shown)
            runs[name] = ranking_from_scores(scored_on, scores, name)
            learned.append(name)
            continue
        runs[name] = ranking_from_scores(test, scores, name)
        learned.append(name)
    runs |= shuffled
    learned += list(shuffled)
    ignore = cfg.dataset.ignore_identical_ids
    per_q = {n: ev.per_query(r, qrels, measures, ignore_identical_ids=ignore) for n, r in runs.items()}
    means = {n: ev.mean(p) for n, p in per_q.items()}
    references = [best] + ([FIRST_STAGE] if FIRST_STAGE in runs and best != FIRST_STAGE else [])
    tests = [ev.compare(per_q[ref], per_q[n], m, test=cfg.evaluate.test).as_dict() | {"a": ref, "b": n}
             for ref in references for n in learned for m in measures]
    for t, p in zip(tests, ev.holm([t["p_value"] for t in tests])):
        t["p_holm"] = p
    if "lambdamart" in learned and len(learned) > 1:
        for n in learned[1:]:
            extra = ev.compare(per_q[n], per_q["lambdamart"], measures[0], test=cfg.evaluate.test).as_dict()
            tests.append(extra | {"a": n, "b": "lambdamart", "p_holm": None})
    split = cfg.dataset.test_split
    out = layout.eval(split)
    out.mkdir(parents=True, exist_ok=True)
    run_files = {}
    for name, frame in runs.items():
        path = write_trec_run(strict_scores(frame), layout.eval_trec(split, name), tag=name.replace(" ", "_"))
        run_files[name] = str(path)
    rows, left_out = ev.ranked_rows(means, learned, measures[0], keep=(FIRST_STAGE, best), max_singles=MAX_SINGLE_ROWS)
    table = ev.markdown_table({n: means[n] for n in rows}, measures)
    if left_out:
        table += f"\n\n({left_out} weaker single-feature baselines not shown; all are in ranker.json)"
    what = (f"LETOR fold {cfg.dataset.fold}, test part" if run.letor
            else f"reranking the {cfg.features.candidates} top-{int(np.max(test.group))}")
    if cfg.ranker.cv_folds:
        picked = ", ".join(f"fold {i + 1}: {n}" for i, n in enumerate(choice["best_per_fold"]))
        best_line = f"best baseline, chosen on each fold's training queries ({picked})"
    else:
        best_line = f"best baseline, chosen on the training split: {best}"
    lines = [f"{cfg.dataset.name} {split}: {what} ({len(test.group)} queries"
             + (f", {cfg.ranker.cv_folds}-fold query-level cross-validation" if cfg.ranker.cv_folds else "") + ")",
             "", table, "", best_line]
    lines += [ev.comparison_line(t) for t in tests if t["measure"] == measures[0]]
    lines += notes
    text = "\n".join(lines)
    (out / "ranker.md").write_text(text + "\n")
    result = {"means": means, "best_baseline": best, "baseline_choice": choice, "tests": tests, "learned": learned,
              "run_files": run_files, **({"cv_guards": guards} if guards else {}), "per_query": {n: p.to_dict(orient="index") for n, p in per_q.items()}}
    (out / "ranker.json").write_text(json.dumps(result, indent=2, default=float))
    run.log(text)
    return result


def evaluate_transfer(run, model_path) -> dict:
    """A model trained on another run (``evaluate --model PATH``) applied as it is to this run's test
    candidates, against this run's first stage: does it carry over, before there are judgements to
    train on? Its extractors are rebuilt from its manifest with their saved corpus statistics, as the
    Scorer does; query ids are namespaced so that no extractor mistakes them for its training queries."""
    from features.store import FeatureStore

    from ..scorer import Scorer

    cfg, layout = run.cfg, run.layout
    run.needs_documents("evaluate --model")
    scorer = Scorer.load(model_path)
    split = cfg.dataset.test_split
    test_q, qrels = run.dataset.split(split)
    if not layout.store.exists():
        raise run.missing(layout.store, "features")
    with FeatureStore(layout.store, read_only=True) as store:
        pairs = store.pairs(test_q[QID], retriever=cfg.features.candidates)
    if pairs.empty:
        raise run.missing(layout.retrieval_trec(cfg.features.candidates, split), "features")
    frame = pairs.assign(**{QID: "transfer:" + pairs[QID].astype(str)})
    for ext in scorer.extractors:
        if not ext.has_corpus_state:  # e.g. the bi-encoder reads this corpus' cached embeddings (no values change)
            ext.fit(run.dataset.corpus)
    # pairs are sorted by qid, each query's rows together: the Scorer's path, stage by stage (a cascade's
    # costly features only for the documents that reach their stage)
    scores = scorer.score_frame(frame)[0].scores
    data = RankingData.from_arrays(np.empty((len(pairs), 0)), np.zeros(len(pairs)), pairs[QID], pairs[DOCNO], [])
    trained_on = Path(str(scorer.manifest.get("dataset", "?"))).name  # a dataset name, or a folder's
    name = f"transfer: {trained_on} model"
    runs = {FIRST_STAGE: ranking_from_scores(data, -pairs[RANK].to_numpy(np.float64), FIRST_STAGE),
            name: ranking_from_scores(data, scores, name)}
    measures = cfg.evaluate.measures
    per_q = {n: ev.per_query(r, qrels, measures, ignore_identical_ids=cfg.dataset.ignore_identical_ids)
             for n, r in runs.items()}
    means = {n: ev.mean(p) for n, p in per_q.items()}
    tests = [ev.compare(per_q[FIRST_STAGE], per_q[name], m, test=cfg.evaluate.test).as_dict()
             | {"a": FIRST_STAGE, "b": name} for m in measures]
    lines = [f"{cfg.dataset.name} {split}: the model {model_path} (trained on {trained_on}) "
             f"reranking the {cfg.features.candidates} top-{int(pairs.groupby(QID).size().max())} "
             f"({pairs[QID].nunique()} queries)", "", ev.markdown_table(means, measures), ""]
    lines += [ev.comparison_line(t) for t in tests if t["measure"] == measures[0]]
    text = "\n".join(lines)
    out = layout.eval(split)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.md").write_text(text + "\n")
    run_file = write_trec_run(strict_scores(runs[name]), layout.eval_trec(split, "transfer"), tag="transfer")
    result = {"model": str(model_path), "trained_on": trained_on, "means": means, "tests": tests,
              "run_file": str(run_file),
              "per_query": {n: p.to_dict(orient="index") for n, p in per_q.items()}}
    (out / "transfer.json").write_text(json.dumps(result, indent=2, default=float))
    run.log(text)
    return result
