"""Ranker settings chosen per dataset (params = "auto"), the first-stage guard, transfer evaluation and
BEIR's ignore_identical_ids."""

import json

import numpy as np
import pytest

from features.matrix import RankingData
from ranker import tuning
from ranker.model import blended
from ranker.cli import main
from ranker.lambdamart import LambdaMARTParams
from tests.conftest import write_beir


def ranking(n_queries, docs=10, seed=0, informative=True):
    """A first stage that puts a relevant doc near the top, plus 'signal' (or noise) and two noise columns."""
    rng = np.random.default_rng(seed)
    X, y, qids = [], [], []
    for q in range(n_queries):
        labels = np.zeros(docs, int)
        labels[rng.integers(0, 4)] = 1  # the relevant doc is in the first-stage top-4
        for d in range(docs):
            signal = labels[d] + 0.3 * rng.normal() if informative else rng.normal()
            X.append([d + 1, signal, rng.normal(), rng.normal()])
            y.append(labels[d])
            qids.append(f"q{q:03d}")
    return RankingData.from_arrays(np.array(X), np.array(y), np.array(qids),
                                   feature_names=["fs_rank", "signal", "noise1", "noise2"])


def test_the_grid_is_ordered_simplest_first_and_constrains_retrieval_signals():
    grid = tuning.grid(LambdaMARTParams(seed=3), ["fs_rank", "score_bm25", "cosine", "doc_len"])
    assert len(grid) == 12 and grid[0].num_leaves == 4 and grid[-1].num_leaves == 15
    assert grid[0].monotone == {"fs_rank": -1, "score_bm25": 1, "cosine": 1} and all(p.seed == 3 for p in grid)
    assert len(tuning.grid(LambdaMARTParams(), ["doc_len", "ce_score"])) == 6  # nothing to constrain


def test_the_one_standard_error_rule_by_hand():
    simplest = [0.5, 0.6, 0.7, 0.8]  # 0.05 below the best, standard error 0.029: too far
    middle = [0.6, 0.6, 0.8, 0.7]  # 0.025 below, standard error 0.025: within one
    best = [0.6, 0.6, 0.8, 0.8]
    assert tuning.one_standard_error([simplest, middle, best]) == (2, 1)
    assert tuning.one_standard_error([best, middle]) == (0, 0)
    assert tuning.one_standard_error([simplest, best]) == (1, 1)


def test_tune_picks_the_simplest_setting_within_one_standard_error_of_the_best():
    data = ranking(40)
    result = tuning.tune(LambdaMARTParams(early_stopping_rounds=0), data, folds=3)
    means = [row["mean"] for row in result.table]
    best = int(np.argmax(means))
    chosen = [row["chosen"] for row in result.table].index(True)
    assert result.table[best]["best"] and chosen <= best and means[chosen] <= means[best]
    assert result.table[chosen]["setting"] == tuning.describe(result.chosen)
    assert result.oof.shape == (len(data.y),) and np.isfinite(result.oof).all()
    assert all(means[i] <= means[best] for i in range(len(means)))


@pytest.mark.parametrize("seed", range(4))
def test_with_noise_features_auto_and_the_guard_never_serve_worse_than_the_first_stage(seed):
    data = ranking(30, seed=seed, informative=False)
    result = tuning.tune(LambdaMARTParams(early_stopping_rounds=0), data, folds=3)
    check = tuning.guard(data, result.oof, measure="nDCG@10", action="fallback", where="tuning")
    served = check["first_stage"] if check["serves"] == "first stage" else check["model"]
    assert served >= check["first_stage"]
    assert check["fired"] == (check["model"] <= check["first_stage"])


def test_an_auto_config_records_its_choice_and_guard(generated, capsys):
    config, run = generated
    text = config.read_text()
    start = text.index("[ranker.params]")
    end = text.index("[ranker.variants]")
    config.write_text(text[:start] + text[end:].replace("[ranker]\n", "[ranker]\nparams = \"auto\"\n"))
    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    out = capsys.readouterr().out
    assert "lambdamart: ranker.params = auto chose" in out
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert len(manifest["tuning"]["grid"]) == 12  # fs_rank and fs_score are retrieval signals: monotone or not
    assert manifest["params"]["num_leaves"] == manifest["tuning"]["chosen_params"]["num_leaves"]
    assert manifest["guard"]["queries"] == 22 and manifest["guard"]["action"] == "fallback"
    report = (run / "report" / "importance.md").read_text()
    assert "Ranker settings: `auto` chose" in report and "First-stage guard on 22 held-out" in report


def test_a_model_is_evaluated_on_another_runs_dataset(generated, tiny_beir, tmp_path, capsys):
    config, run = generated
    for step in ("retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    target = tmp_path / "target.toml"
    target.write_text(f'[dataset]\nname = "{tiny_beir}"\n[retrieval]\nsystems = ["bm25"]\nk = 5\ndepth = 5\n'
                      f'[features]\ncandidates = "bm25"\n[features.extractors.first_stage]\nretrievers = []\n'
                      f'[features.extractors.bm25]\n[run]\ndir = "{tmp_path / "target"}"\n')
    for step in ("retrieve", "features"):
        assert main([step, "--config", str(target)] + (["--quiet"] if step == "features" else [])) == 0
    capsys.readouterr()
    assert main(["evaluate", "--config", str(target), "--model", str(run / "model")]) == 0
    out = capsys.readouterr().out
    assert "| transfer: gen model |" in out and "| first stage |" in out
    result = json.loads((tmp_path / "target" / "eval" / "test" / "transfer.json").read_text())
    assert result["trained_on"] == "gen" and set(result["per_query"]["first stage"]) == {"q3", "q4"}


def test_ignore_identical_ids_drops_a_querys_own_document(tmp_path, capsys):
    docs = [{"_id": "a", "text": "apples are red fruit"}, {"_id": "b", "text": "apples grow on trees"},
            {"_id": "c", "text": "pears are green fruit"}]
    queries = [{"_id": "a", "text": "apples are red fruit"}, {"_id": "c", "text": "pears are green fruit"}]
    folder = write_beir(tmp_path / "argue", docs=docs, queries=queries, qrels={"test": [("a", "b", 1), ("c", "a", 1)]})

    def ndcg(flag):
        config = tmp_path / f"c{flag}.toml"
        config.write_text(f'[dataset]\nname = "{folder}"\nsplits = ["test"]\nignore_identical_ids = {str(flag).lower()}\n'
                          f'[retrieval]\nsystems = ["bm25"]\nk = 3\ndepth = 3\n[features]\ncandidates = "bm25"\n'
                          f'[run]\ndir = "{tmp_path / f"run{flag}"}"\n')
        assert main(["retrieve", "--config", str(config)]) == 0
        assert main(["evaluate", "--config", str(config)]) == 0
        metrics = json.loads((tmp_path / f"run{flag}" / "eval" / "test" / "metrics.json").read_text())
        return metrics["per_query"]["bm25"]

    kept, dropped = ndcg(False), ndcg(True)
    # query a: its own document ranks first; b (relevant) second. Dropping a lifts b to the top.
    assert kept["a"]["RR@10"] == 0.5 and dropped["a"]["RR@10"] == 1.0


def test_blend_is_the_reciprocal_rank_fusion_of_the_two_orders():
    model = np.array([0.9, 0.1, 0.5, 2.0, 1.0])  # query 1: three docs; query 2: two
    first = np.array([-1.0, -2.0, -3.0, -1.0, -2.0])  # first-stage order: row order
    fused = blended(model, first, [3, 2], k=60)
    expected = [1 / 61 + 1 / 61, 1 / 63 + 1 / 62, 1 / 62 + 1 / 63, 1 / 61 + 1 / 61, 1 / 62 + 1 / 62]
    np.testing.assert_allclose(fused, expected)
    data = ranking(20, seed=1, informative=False)
    check = tuning.guard(data, -data.X[:, 2], measure="nDCG@10", action="blend", where="test")
    assert check["fired"] and check["serves"] == "blend"  # noise as the model: not better, so blended
