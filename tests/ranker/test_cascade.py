"""Cascade ranking: cross-fitted stage membership, deferred extractors computed only where a stage
reaches, and the Scorer serving exactly the offline cascade."""

import json

import numpy as np
import pytest

from features.store import FeatureStore
from ranker import Scorer
from ranker.model import RankingModel, keep_top
from ranker.cli import main
from ranker.lambdamart import LambdaMARTParams, cross_val_predict, query_folds
from retrieval.data import load_beir, read_trec_run
from tests.ranker.conftest import generated_dataset, write_config
from tests.ranker.test_tuning import ranking

CASCADE = """[ranker]
guard = "warn"
normalize = ["bm25", "coverage"]
[ranker.params]
n_estimators = 30
min_data_in_leaf = 5
num_leaves = 5
[[ranker.cascade]]
features = ["fs_rank", "fs_score", "bm25", "bm25_qrank", "bm25_qgap", "doc_len", "query_len", "len_ratio"]
keep = 5
[[ranker.cascade]]
features = ["coverage", "coverage_qz", "bm25_qz"]  # normalised over the 5 documents that reach the stage
max_train_queries = 10
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cascade")
    folder = generated_dataset(tmp / "gen")
    config = tmp / "gen.toml"
    write_config(config, folder, tmp / "run", ranker=CASCADE, extractors="[features.extractors.bm25]\n"
                 "[features.extractors.length]\n[features.extractors.coverage]")
    for step in ("retrieve", "features"):
        assert main([step, "--config", str(config), "--quiet"] if step == "features" else [step, "--config", str(config)]) == 0
    with FeatureStore(tmp / "run" / "features.duckdb", read_only=True) as store:
        before = store.sql("SELECT count(*) AS n FROM features WHERE feature = 'coverage'")["n"][0]
    for step in ("train", "evaluate"):
        assert main([step, "--config", str(config)]) == 0
    return tmp / "run", folder, before


def copied_run(run, tmp_path, **extractors):
    """A :class:`Run` of a copy of the fixture's run folder (``extractors``: config tables replaced)."""
    import dataclasses
    import shutil

    from ranker.config import load_config
    from ranker.run import Run

    run_dir, _, _ = run
    shutil.copytree(run_dir, tmp_path / "run")
    cfg = load_config(run_dir.parent / "gen.toml")
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(tmp_path / "run")),
                              features=dataclasses.replace(cfg.features,
                                                           extractors={**cfg.features.extractors, **extractors}))
    return Run(cfg, log=lambda *a: None, progress=False)


def test_keep_top_is_per_query_and_breaks_ties_by_row_order():
    mask = keep_top([3, 2], np.array([0.1, 0.5, 0.5, 2.0, 1.0]), 1)
    assert mask.tolist() == [False, True, False, True, False]
    assert keep_top([3], np.array([1.0, 1.0, 1.0]), 2).tolist() == [True, True, False]


def test_cross_fitting_never_lets_a_query_decide_its_own_membership():
    data = ranking(12)
    seen = []

    def params_for(train):  # the hook cross_val_predict calls with each fold model's training data
        seen.append(set(train.unique_qids))
        return LambdaMARTParams(n_estimators=10, min_data_in_leaf=5)

    cross_val_predict(params_for, data, 3, seed=7)
    for fold, trained_on in zip(query_folds(data.qids, 3, 7), seen):
        assert trained_on and not trained_on & set(fold)


def test_deferred_extractors_are_computed_only_for_documents_that_reach_their_stage(run):
    run_dir, _, before = run
    assert before == 0  # the feature build left coverage to the cascade
    manifest = json.loads((run_dir / "model" / "manifest.json").read_text())
    assert manifest["kind"] == "fusion-ltr cascade" and [s["keep"] for s in manifest["stages"]] == [5, 0]
    with FeatureStore(run_dir / "features.duckdb", read_only=True) as store:
        per_query = store.sql("SELECT qid, count(*) AS n FROM features WHERE feature = 'coverage' GROUP BY qid")
        cheap = store.sql("SELECT DISTINCT qid FROM features WHERE feature = 'bm25'")
    from ranker.config import load_config
    from ranker.run import Run

    valid = set(Run(load_config(run_dir.parent / "gen.toml"), progress=False).matrices.valid.unique_qids)
    test = {f"q{i}" for i in range(22, 32)}
    n = per_query.set_index("qid")["n"]
    learners = set(n.index) - test - valid
    # its 5 survivors only, of every test query and of the training queries stage 2 learns from (10 sampled,
    # max_train_queries; stage 1 learned from all 22); every validation query's served survivors (the guard
    # and calibration score them stage by stage), and for one sampled too, the cross-fitted 5
    assert set(n.index) >= test | valid and len(learners) <= 10 and valid and len(valid) < 22
    assert (n[sorted(test | learners)] == 5).all() and (n[sorted(valid)] >= 5).all()
    assert len(cheap) == 32
    assert [s["train_queries"] for s in manifest["report"]] == [22, 10]


def test_scoring_from_the_store_computes_the_costly_features_a_stage_reaches(run, tmp_path):
    """score_stored (evaluate's and validation's path): the deferred values missing from the store are
    computed for the documents that reach their stage, and the order is the offline evaluation's."""
    from ranker.cascade import score_stored

    r = copied_run(run, tmp_path)
    qids = ["q22", "q23"]
    with FeatureStore(r.layout.store) as store:
        store.con.execute("DELETE FROM features WHERE feature = 'coverage' AND qid IN ('q22', 'q23')")
    model = RankingModel.load(r.layout.model())
    scored, data = score_stored(model, r.feature_source(), r.feature_set.raw_specs, qids)
    with FeatureStore(r.layout.store, read_only=True) as store:
        stored = store.sql("SELECT qid, docno FROM features WHERE feature = 'coverage' AND qid IN ('q22', 'q23')")
    reached = set(zip(data.qids[scored.masks[1]], data.docnos[scored.masks[1]]))
    assert set(zip(stored["qid"], stored["docno"])) == reached and len(reached) == 10
    assert not np.isnan(scored.parts[1].X).any()  # every value the last stage read was computed
    offline = read_trec_run(run[0] / "eval" / "test" / "runs" / "lambdamart.trec")
    for q in qids:
        rows = data.qids == q
        mine = data.docnos[rows][np.argsort(-scored.scores[rows], kind="stable")].tolist()
        assert mine == offline[offline["qid"] == q].sort_values("rank")["docno"].tolist()


def test_the_scorer_serves_the_offline_cascade(run):
    run_dir, folder, _ = run
    queries = load_beir(str(folder)).queries.set_index("qid")["query"]
    offline = read_trec_run(run_dir / "eval" / "test" / "runs" / "lambdamart.trec")
    scorer = Scorer.load(run_dir)
    with FeatureStore(run_dir / "features.duckdb", read_only=True) as store:
        stored = store.sql("SELECT qid, docno, value FROM features WHERE feature = 'coverage'")
    for qid in ("q22", "q26", "q31"):
        results = scorer.search(queries[qid], top_k=None, explain=True)
        assert [r.id for r in results] == offline[offline["qid"] == qid].sort_values("rank")["docno"].tolist()
        reached = {r.id for r in results if r.stage == 2}
        assert reached == set(stored.loc[stored["qid"] == qid, "docno"]) and len(reached) == 5
        mine = {r.id: r.features["coverage"] for r in results if r.stage == 2}
        theirs = stored[stored["qid"] == qid].set_index("docno")["value"].to_dict()
        assert mine == pytest.approx(theirs)
        cov = np.array([theirs[d] for d in mine])  # z-scores over the 5 that reached stage 2, by hand
        z = (cov - cov.mean()) / cov.std() if cov.std() > 0 else np.zeros(5)
        assert [r.features["coverage_qz"] for r in results if r.stage == 2] == pytest.approx(z.tolist())
        top = results[0]
        assert sum(top.contributions.values()) == pytest.approx(top.score, abs=1e-6)  # adds up in its stage
        assert {"stage1", "stage2", "coverage"} <= set(results.timing)


def test_the_budget_knob_never_exceeds_the_budget_by_the_stored_costs():
    from ranker.cascade import choose_keeps, predicted_ms
    from retrieval.errors import UsageError

    per_doc = [20.0, 80.0]  # ms per document: a cross-encoder stage, then an LM stage
    for budget in (140, 250, 700, 1000, 5000):
        keeps = choose_keeps([30, 10], per_doc, first_ms=40.0, budget_ms=budget)
        assert keeps[0] >= keeps[1] and keeps[0] <= 30 and keeps[1] <= 10
        assert predicted_ms(keeps, per_doc, 40.0) <= budget
    # by hand: 40 + 20 * 30 + 80 * 3 = 880 <= 1000; keeping 5 at the LM would be 1040
    assert choose_keeps([30, 10], per_doc, first_ms=40.0, budget_ms=1000) == [30, 3]
    assert choose_keeps([30, 10], per_doc, first_ms=40.0, budget_ms=5000) == [30, 10]  # the configured ones fit
    with pytest.raises(UsageError, match="the first stage alone costs 40.0 ms"):
        choose_keeps([30, 10], per_doc, first_ms=40.0, budget_ms=30)
    with pytest.raises(UsageError, match="no keep values fit"):
        choose_keeps([30, 10], per_doc, first_ms=40.0, budget_ms=100)


def test_placement_moves_a_dear_extractor_to_a_later_stage_only_when_that_pays():
    from ranker.cascade import place

    stages = [["bm25", "biencoder"], ["crossencoder"], ["lm"]]
    docs = [100, 20, 5]  # documents reaching each stage
    cached = {"bm25": 0.7, "biencoder": 0.01, "crossencoder": 18.5, "lm": 172.0}  # ms per document
    # by hand: 100 * 0.71 + 20 * 18.5 + 5 * 172 = 1301 ms: fits 2000, nothing moves
    assert place(stages, cached, docs, 2000) == stages
    encoded = cached | {"biencoder": 20.6}  # an app's documents must be encoded: 100 * 20.6 = 2060 ms alone
    # 3361 ms; moving the bi-encoder saves 80 * 20.6 = 1648 (bm25 would save 56): 1713 ms fits
    assert place(stages, encoded, docs, 2000) == [["bm25"], ["crossencoder", "biencoder"], ["lm"]]
    # 1500: after that move, 1713 is still over, but the next best move (the bi-encoder or the cross-encoder
    # to the LM stage, 15 * 20.6 = 309 or 277) saves more than 10% of the budget: the bi-encoder goes on
    assert place(stages, encoded, docs, 1500) == [["bm25"], ["crossencoder"], ["lm", "biencoder"]]
    # a budget nothing can reach: the moves stop where no move saves 10% of it (bm25 never moves: 5.6 ms)
    assert place(stages, encoded, docs, 500) == [["bm25"], ["crossencoder"], ["lm", "biencoder"]]
    # never a stage's last extractor: the cross-encoder alone in its stage stays
    assert place([["bm25"], ["crossencoder"], ["lm"]], encoded, docs, 100) == [["bm25"], ["crossencoder"], ["lm"]]


def test_the_plan_uses_the_cost_of_the_documents_served_and_moves_derived_features_with_their_source():

    from features.base import FeatureSpec
    from ranker.cascade import plan
    from ranker.config import CascadeStage, RankerConfig
    from ranker.run import FeatureSet

    names = {"bm25": "bm25", "cosine": "biencoder", "cosine_qrank": "biencoder", "ce_score": "crossencoder",
             "lm": "lm"}
    per_doc = {"bm25": 0.7, "biencoder": 0.05, "crossencoder": 18.5, "lm": 172.0}  # ms per document
    fs = FeatureSet([FeatureSpec(n, "1") for n in names], names, {n: per_doc[e] for n, e in names.items()},
                    {n: per_doc[e] if e != "biencoder" else 20.6 for n, e in names.items()})  # unseen: encoded
    stages = (CascadeStage(("bm25", "cosine", "cosine_qrank"), 20), CascadeStage(("ce_score",), 5),
              CascadeStage(("lm",)))
    logged = []

    def planned(documents):  # 100 candidates a query
        return plan(RankerConfig(budget_ms=2000, documents=documents, cascade=stages), fs, 100, logged.append)

    added, keeps, info = planned("corpus")
    assert added == [["bm25", "cosine", "cosine_qrank"], ["ce_score"], ["lm"]] and keeps == [20, 5, 0]
    added, keeps, info = planned("unseen")  # 100 * 20.6 ms does not fit: the bi-encoder goes where 20 docs are
    assert added == [["bm25"], ["cosine", "cosine_qrank", "ce_score"], ["lm"]] and keeps == [20, 5, 0]
    assert info["moved"] == {"biencoder": 2} and "biencoder moved to stage 2" in logged[-1]
    assert info["predicted_ms"] == pytest.approx(100 * 0.7 + 20 * (18.5 + 20.6) + 5 * 172.0)


def test_the_report_explains_the_last_stage_on_the_documents_that_reach_it(run):
    import pandas as pd

    run_dir, folder, _ = run
    depth = pd.read_csv(run_dir / "model" / "training_depth.tsv.gz", sep="\t", dtype={"qid": str})
    assert set(depth["depth"]) == {0, 1} and (depth[depth["depth"] == 1].groupby("qid").size() == 5).all()
    assert depth["qid"].nunique() == 22 and depth.loc[depth["depth"] == 1, "qid"].nunique() == 10
    assert not set(depth["qid"]) & set(load_beir(str(folder)).split("test")[0]["qid"])  # training queries only
    config = run_dir.parent / "gen.toml"
    assert main(["report", "--config", str(config)]) == 0
    report = json.loads((run_dir / "report" / "importance.json").read_text())
    assert "last stage (stage 2 of 2" in report["scope"]
    assert {f["feature"] for f in report["features"]} == {"fs_rank", "fs_score", "bm25", "bm25_qrank", "bm25_qgap",
                                                          "doc_len", "query_len", "len_ratio", "coverage",
                                                          "coverage_qz", "bm25_qz"}
    assert "coverage" in {r["dropped"] for r in report["ablation"]}  # the last stage retrained without it
    # a derived feature belongs to its source's extractor (its cost, its ablation)
    assert {f["feature"]: f["extractor"] for f in report["features"]}["coverage_qz"] == "coverage"


def test_a_cascade_of_another_format_is_refused(run, tmp_path):
    import shutil

    from retrieval.errors import UsageError

    run_dir, _, _ = run
    old = tmp_path / "model"
    shutil.copytree(run_dir / "model", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["format"]  # as written before stages boosted from the previous stage's score
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="format 1, this version reads format 2"):
        Scorer.load(old)
    assert len(RankingModel.load(run_dir / "model").stages) == 2


def test_after_training_the_run_knows_the_cost_of_what_the_cascade_computed(tmp_path):
    from ranker.config import load_config
    from ranker.run import Run
    from ranker.steps.train import train

    config = tmp_path / "gen.toml"
    write_config(config, generated_dataset(tmp_path / "gen"), tmp_path / "run", ranker=CASCADE,
                 extractors="[features.extractors.bm25]\n[features.extractors.length]\n[features.extractors.coverage]")
    for argv in (["retrieve", "--config", str(config)], ["features", "--config", str(config), "--quiet"]):
        assert main(argv) == 0
    run = Run(load_config(config), log=lambda *a: None, progress=False)
    assert run.feature_set.cost["coverage"] == 0  # deferred to stage 2: nothing computed yet
    train(run)  # computes coverage for the documents that reach stage 2
    assert run.feature_set.cost["coverage"] > 0  # `run` reports with this cost, in the same process


def test_fit_learns_from_its_training_queries_alone_and_computes_what_the_held_out_ones_reach(run, tmp_path):
    from ranker import cascade

    r = copied_run(run, tmp_path)  # fit writes the held-out queries' values into the store
    cfg = r.cfg
    staged = r.stage_plan()
    params = LambdaMARTParams(n_estimators=30, min_data_in_leaf=5, num_leaves=5)
    train_q, held = [f"q{i}" for i in range(16)], {"a": ["q16", "q17", "q18"], "b": ["q19", "q20", "q21"]}
    fitted = {}
    for name, qids in held.items():
        fitted[name] = cascade.fit(cfg.ranker, r.feature_source(), staged, train_q, set(), qids, lambda part: params,
                                   log=lambda *a: None)
    with FeatureStore(tmp_path / "run" / "features.duckdb") as store:
        ranked = store.matrix(staged.raw_specs, held["a"] + held["b"], retriever=cfg.features.candidates, top_n=r.top_n)
        coverage = store.sql("SELECT qid, count(*) AS n FROM features WHERE feature = 'coverage' GROUP BY qid")
    stages_a, report_a, train_a, *_ = fitted["a"]
    assert sorted(train_a.unique_qids) == sorted(train_q)
    assert [s["train_queries"] for s in report_a] == [16, 10]  # stage 2's cap: max_train_queries = 10
    # which queries are held out changes nothing the stages learn
    scored_a = RankingModel(stages_a, cascade=True).score(ranked)
    scored_b = RankingModel(fitted["b"][0], cascade=True).score(ranked)
    depth_a = scored_a.depth
    assert depth_a.tolist() == scored_b.depth.tolist()
    assert scored_a.stage_scores == pytest.approx(scored_b.stage_scores)
    # each held-out query's 5 documents that reach stage 2 got their deferred values, and apply finds them
    n = coverage.set_index("qid")["n"]
    assert all(n[q] == 5 for q in held["a"] + held["b"])
    assert not np.isnan(ranked.X[depth_a == 1, ranked.feature_names.index("coverage")]).any()


def test_a_deferred_extractor_configured_otherwise_since_the_feature_build_is_refused(run, tmp_path):
    from retrieval.errors import UsageError

    r = copied_run(run, tmp_path, coverage={"stopwords": "english"})  # another version of coverage
    with pytest.raises(UsageError, match=r"coverage: stopwords 'en' -> 'english'\).*fusion-ltr features"):
        r.stage_plan()  # before any value of the new version is computed that no stage would read



# Small trees with no early stopping, which also order the documents the first stage ranks alike: the
# last stage alone, without the first stage's membership and starting scores, orders them otherwise.
VARIED = CASCADE.replace("n_estimators = 30\nmin_data_in_leaf = 5\nnum_leaves = 5",
                         "n_estimators = 40\nmin_data_in_leaf = 1\nnum_leaves = 6\nearly_stopping_rounds = 0")


def test_evaluate_with_a_cascade_model_ranks_as_the_scorer_serves(tmp_path):
    """`evaluate --model` scores a cascade stage by stage, as the Scorer does (not with its last stage alone)."""
    folder = generated_dataset(tmp_path / "gen", graded=True)
    config = tmp_path / "gen.toml"
    write_config(config, folder, tmp_path / "run", ranker=VARIED, extractors="[features.extractors.bm25]\n"
                 "[features.extractors.length]\n[features.extractors.coverage]")
    for argv in (["retrieve"], ["features", "--quiet"], ["train"]):
        assert main([argv[0], "--config", str(config), *argv[1:]]) == 0
    assert main(["evaluate", "--config", str(config), "--model", str(tmp_path / "run" / "model")]) == 0
    transfer = read_trec_run(tmp_path / "run" / "eval" / "test" / "runs" / "transfer.trec")
    queries = load_beir(str(folder)).queries.set_index("qid")["query"]
    scorer = Scorer.load(tmp_path / "run")
    last = RankingModel(scorer.model.stages[-1:])  # the last stage alone, on every candidate
    assert transfer["qid"].nunique() == 10
    differs = 0
    for qid, ranked in transfer.groupby("qid"):
        served = scorer.search(queries[qid], top_k=None)
        assert ranked.sort_values("rank")["docno"].tolist() == [r.id for r in served]
        docs = [{"id": r.id, "text": r.text, "title": r.title, "rank": r.original_rank} for r in served]
        alone = scorer.features(queries[qid], docs)  # NaN where the search gave list features: not used here
        alone = alone.index[np.argsort(-last.last.predict(alone.to_numpy()), kind="stable")].tolist()
        differs += alone != [r.id for r in served]
    assert differs  # the test can tell the two apart


def test_a_model_that_learned_without_ranks_scores_a_list_given_without_them_in_any_order(tmp_path, run):
    """ranker.hide_ranks: the list features hidden for half the training queries; a request without ranks
    then has them hidden (not its positions), so its scores do not depend on the order it is sent in."""
    folder = generated_dataset(tmp_path / "gen", graded=True)
    config = tmp_path / "gen.toml"
    write_config(config, folder, tmp_path / "run", ranker=VARIED.replace("[ranker]\n", "[ranker]\nhide_ranks = 0.5\n"),
                 extractors="[features.extractors.bm25]\n[features.extractors.length]\n[features.extractors.coverage]")
    for argv in (["retrieve"], ["features", "--quiet"], ["train"], ["evaluate"]):
        assert main([argv[0], "--config", str(config), *argv[1:]]) == 0
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["hidden_when_unranked"] == ["fs_rank", "fs_score"]
    result = json.loads((tmp_path / "run" / "eval" / "test" / "ranker.json").read_text())
    assert "lambdamart, shuffled without ranks" in result["means"]  # evaluated as an app would send a set
    queries = load_beir(str(folder)).queries.set_index("qid")["query"]
    hidden, plain = Scorer.load(tmp_path / "run"), Scorer.load(run[0])  # plain: trained with every rank given
    docs = [{"id": r.id, "text": r.text, "title": r.title} for r in plain.search(queries["q25"], top_k=None)]
    for scorer, depends in ((hidden, False), (plain, True)):
        given, reversed_ = (scorer.rerank(queries["q25"], d, explain=True) for d in (docs, docs[::-1]))
        scores = [{r.id: round(r.score, 9) for r in out} for out in (given, reversed_)]
        assert (scores[0] != scores[1]) == depends  # the position is a signal only for the plain model
        fs_rank = {r.id: r.features["fs_rank"] for r in given}
        assert all(np.isnan(v) for v in fs_rank.values()) != depends
    ranked = hidden.rerank(queries["q25"], [d | {"rank": k + 1} for k, d in enumerate(docs)], explain=True)
    assert sorted(r.features["fs_rank"] for r in ranked) == list(range(1, len(docs) + 1))  # given ranks are used
    # evaluate's "shuffled without ranks" is the Scorer's order of each test query's candidates sent so
    from ranker.config import load_config
    from ranker.layout import RunLayout
    from ranker.run import Run

    r = Run(load_config(config), progress=False)
    sent = hidden.model.unranked(r.matrices.test, r.list_features, seed=r.cfg.ranker.base_params.seed)
    offline = read_trec_run(RunLayout(tmp_path / "run").eval_trec("test", "lambdamart, shuffled without ranks"))
    texts = load_beir(str(folder)).corpus.set_index("docno")
    for qid in sent.unique_qids:
        order = sent.docnos[sent.qids == qid]
        served = hidden.rerank(queries[qid], [{"id": d, "text": texts.loc[d, "text"], "title": texts.loc[d, "title"]}
                                             for d in order])
        assert [x.id for x in served] == offline[offline["qid"] == qid].sort_values("rank")["docno"].tolist()


def test_masked_and_without_ranks_hide_the_list_features_as_the_scorer_does():
    from ranker.model import without_ranks

    data = ranking(4)
    names = data.feature_names
    masked = data.masked([names[0], "absent"], qids=[data.unique_qids[0]])
    rows = data.qids == data.unique_qids[0]
    assert np.isnan(masked.X[rows, 0]).all() and not np.isnan(masked.X[~rows, 0]).any()
    assert np.array_equal(masked.X[:, 1:], data.X[:, 1:]) and not np.isnan(data.X).any()  # a copy
    row_of = {(q, d): i for i, (q, d) in enumerate(zip(data.qids, data.docnos))}
    for hides in (False, True):
        shuffled = without_ranks(data, ["fs_rank", "signal"], hides=hides, seed=1)
        assert np.array_equal(shuffled.group, data.group)
        same = [row_of[(q, d)] for q, d in zip(shuffled.qids, shuffled.docnos)]  # each row's original
        assert sorted(same) == list(range(len(data.y))) and same != sorted(same)  # the rows, in another order
        assert np.array_equal(shuffled.y, data.y[same]) and np.array_equal(shuffled.X[:, 2:], data.X[same, 2:])
        assert np.isnan(shuffled.X[:, 1]).all()  # other list features: not given
        for q in data.unique_qids:  # fs_rank: hidden, or each query's positions 1..n in the new order
            rows = shuffled.qids == q
            assert (shuffled.docnos[rows].tolist() != data.docnos[data.qids == q].tolist())
            pos = shuffled.X[rows, 0]
            assert np.isnan(pos).all() if hides else pos.tolist() == list(range(1, rows.sum() + 1))



def test_the_rerank_depth_orders_the_first_stages_top_by_the_model_and_keeps_the_rest():
    from ranker.model import within_depth

    scores = np.array([0.1, 0.9, -3.0, 5.0, 4.0])  # the model's: it likes the 4th and 5th best of the first stage
    first = -np.arange(1.0, 6.0)  # first-stage ranks 1..5
    served = within_depth(scores, first, 3)
    assert np.argsort(-served, kind="stable").tolist() == [1, 0, 2, 3, 4]


def test_the_unranked_guard_serves_lists_without_ranks_by_a_content_only_model_where_the_cascade_is_not_better(tmp_path):
    """A cascade for apps' lists (ranker.hide_ranks) compared with a content-only model on the validation
    queries shuffled without ranks: here (a few validation queries, each ranked perfectly by both) the
    cascade is not better, so with ranker.guard = "fallback" a list without ranks is served by the
    content-only model, in training's evaluation as in the Scorer, and a list with ranks by the cascade."""
    from ranker.model import CONTENT
    from ranker.lambdamart import LambdaMART

    folder = generated_dataset(tmp_path / "gen", graded=True)
    config = tmp_path / "gen.toml"
    ranker = VARIED.replace('guard = "warn"', 'guard = "fallback"\nhide_ranks = 0.5')
    write_config(config, folder, tmp_path / "run", ranker=ranker,
                 extractors="[features.extractors.bm25]\n[features.extractors.length]\n[features.extractors.coverage]")
    for argv in (["retrieve"], ["features", "--quiet"], ["train"], ["evaluate"]):
        assert main([argv[0], "--config", str(config), *argv[1:]]) == 0
    model_dir = tmp_path / "run" / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    check = manifest["unranked_guard"]
    assert check["model"] == pytest.approx(manifest["validation"]["shuffled, without ranks"])
    assert check["features"] == [f for f in manifest["stages"][0]["features"] if f not in ("fs_rank", "fs_score")]
    assert check["fired"] and check["serves"] == CONTENT and check["delta"] <= 0
    content = LambdaMART.load(model_dir / "unranked")
    assert content.feature_names_ == check["features"]
    queries = load_beir(str(folder)).queries.set_index("qid")["query"]
    scorer = Scorer.load(tmp_path / "run")
    assert scorer.model.unranked_stage is not None
    docs = [{"id": r.id, "text": r.text, "title": r.title} for r in scorer.search(queries["q25"], top_k=None)]
    unranked = scorer.rerank(queries["q25"], docs[::-1], explain=True)
    X = np.array([[r.features[f] for f in content.feature_names_] for r in unranked])
    assert [r.score for r in unranked] == pytest.approx(content.predict(X).tolist())  # the content-only model's
    assert all(r.stage is None and r.contributions for r in unranked)
    assert all(sum(r.contributions.values()) == pytest.approx(r.score, abs=1e-6) for r in unranked)
    ranked = scorer.rerank(queries["q25"], [d | {"rank": k + 1} for k, d in enumerate(docs)])
    assert {r.stage for r in ranked} == {1, 2}  # with ranks: the cascade
    # evaluate's shuffled view is the same content-only order
    from ranker.config import load_config
    from ranker.layout import RunLayout
    from ranker.run import Run

    r = Run(load_config(config), progress=False)
    sent = scorer.model.unranked(r.matrices.test, r.list_features, seed=r.cfg.ranker.base_params.seed)
    offline = read_trec_run(RunLayout(tmp_path / "run").eval_trec("test", "lambdamart, shuffled without ranks"))
    texts = load_beir(str(folder)).corpus.set_index("docno")
    for qid in sent.unique_qids[:4]:
        order = sent.docnos[sent.qids == qid]
        served = scorer.rerank(queries[qid], [{"id": d, "text": texts.loc[d, "text"], "title": texts.loc[d, "title"]}
                                             for d in order])
        assert [x.id for x in served] == offline[offline["qid"] == qid].sort_values("rank")["docno"].tolist()
    assert "the unranked guard serves lists without ranks" in (tmp_path / "run" / "eval" / "test" / "ranker.md").read_text()
    # a folder whose manifest says so but lacks the model is refused by name
    import shutil

    from retrieval.errors import MissingInputError

    shutil.rmtree(model_dir / "unranked")
    with pytest.raises(MissingInputError, match="unranked"):
        RankingModel.load(model_dir, verify=False)
