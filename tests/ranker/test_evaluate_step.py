"""The ranker evaluation's baselines: chosen on training queries only, never on the queries scored."""

import json
from types import SimpleNamespace

import numpy as np

from features.matrix import RankingData
from ranker import evaluate as ev
from ranker.cli import main
from ranker.lambdamart import query_folds
from ranker.steps.evaluate import baselines


def flipped_data(n_queries=12, docs=6, flipped=("q00", "q01", "q02", "q03")):
    """'signal' ranks the relevant doc first in every query, except in ``flipped`` where it ranks it last."""
    X, y, qids = [], [], []
    for i in range(n_queries):
        q = f"q{i:02d}"
        for d in range(docs):
            rel = d == 0
            s = (-1.0 if q in flipped else 1.0) * (10 - d)
            X.append([(3, 1, 2, 4, 5, 6)[d], s])  # the first stage ranks the relevant doc third
            y.append(int(rel))
            qids.append(q)
    return RankingData.from_arrays(np.array(X, float), np.array(y), np.array(qids), feature_names=["fs_rank", "signal"])


def fake_run(folds):
    cfg = SimpleNamespace(ranker=SimpleNamespace(cv_folds=folds, base_params=SimpleNamespace(seed=1)))
    return SimpleNamespace(cfg=cfg, feature_set=SimpleNamespace(names=["fs_rank", "signal"]))


def test_under_cv_a_fold_never_chooses_its_own_direction_or_best_baseline():
    qids = [f"q{i:02d}" for i in range(12)]
    folds = query_folds(qids, 3, 1)
    data = flipped_data(flipped=folds[0])  # signal is reversed exactly on fold 1's queries
    scores, best, choice = baselines(fake_run(3), SimpleNamespace(test=data, train=None), "nDCG@10")
    for i, (fold, chosen) in enumerate(zip(folds, choice["best_per_fold"])):
        rows = np.isin(data.qids, fold)
        others = ~rows
        expected = ev.direction(data.X[others, 1], data.y[others]) * data.X[rows, 1]
        np.testing.assert_array_equal(scores["signal alone"][rows], expected)
        np.testing.assert_array_equal(best[rows], scores[chosen][rows])
    # fold 1 alone says "lower is better"; its direction came from the other folds, which say the opposite
    rows = np.isin(data.qids, folds[0])
    assert ev.direction(data.X[rows, 1], data.y[rows]) == -1
    np.testing.assert_array_equal(scores["signal alone"][rows], data.X[rows, 1])
    assert choice["best_per_fold"][0] == "signal alone"  # best on the other folds, worst on this one


def test_without_cv_directions_and_the_best_baseline_come_from_the_training_split():
    train = flipped_data(flipped=[f"q{i:02d}" for i in range(12)])  # on training queries signal is reversed
    test = flipped_data(flipped=())
    scores, best, choice = baselines(fake_run(0), SimpleNamespace(test=test, train=train), "nDCG@10")
    np.testing.assert_array_equal(scores["signal alone"], -test.X[:, 1])  # chosen on train, wrong on test
    assert choice["best"] == "signal alone"  # best on train (reversed: relevant first), whatever test says


def test_a_cross_validated_run_reports_and_early_stops_its_serving_model(generated, capsys):
    config, run = generated
    text = config.read_text().replace("[ranker]\n", "[ranker]\ncv_folds = 3\n")
    config.write_text(text.replace('[dataset]\n', '[dataset]\nsplits = ["test"]\n'))
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best baseline, chosen on each fold's training queries (fold 1:" in out
    assert "lambdamart vs " in out
    assert f"importance: {run / 'report' / 'importance.md'}" in out
    report = json.loads((run / "report" / "importance.json").read_text())
    assert report["scope"].startswith("all 10 queries (in-sample") and report["ablation"]
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["train"]["valid_queries"] > 0  # early stopping on held-out queries, like the fold models
    result = json.loads((run / "eval" / "test" / "ranker.json").read_text())
    per_fold = result["baseline_choice"]["best_per_fold"]
    expected = per_fold[0] if len(set(per_fold)) == 1 else "best baseline (per fold)"
    assert result["best_baseline"] == expected and expected in result["means"]
    assert {t["a"] for t in result["tests"] if t["b"] == "lambdamart"} >= {expected, "first stage"}


def test_under_cross_validation_each_folds_guard_decides_on_its_validation_queries():
    import numpy as np

    from ranker.config import Config, RankerConfig
    from ranker.lambdamart import LambdaMARTParams, cross_val_predict, query_folds
    from ranker.model import first_stage_scores
    from ranker.steps.evaluate import fold_guard
    from tests.ranker.test_tuning import ranking

    params = LambdaMARTParams(n_estimators=20, num_leaves=4, min_data_in_leaf=5, early_stopping_rounds=0)
    cfg = Config(ranker=RankerConfig(valid_fraction=0.3, guard="fallback"))
    assert fold_guard(Config(ranker=RankerConfig(valid_fraction=0.0)), []) is None  # nothing to decide on
    for informative in (False, True):
        # without fs_rank: the rows' order is the first stage's (which puts the relevant doc in its top 4)
        data, checks = ranking(60, seed=1, informative=informative).select(["signal", "noise1", "noise2"]), []
        scores = cross_val_predict(params, data, 3, valid_fraction=0.3, seed=0, served=fold_guard(cfg, checks))
        plain = cross_val_predict(params, data, 3, valid_fraction=0.3, seed=0)
        assert len(checks) == 3 and all(c["held_out"].startswith("the fold's validation queries") for c in checks)
        for fold, check in zip(query_folds(data.qids, 3, 0), checks):
            mask = np.isin(data.qids, fold)
            expected = first_stage_scores(data.subset(fold)) if check["fired"] else plain[mask]
            np.testing.assert_array_equal(scores[mask], expected)
        # noise: the model is not better than the first stage somewhere; a real signal: never fired
        assert any(c["fired"] for c in checks) != informative
