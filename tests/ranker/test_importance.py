import numpy as np
import pandas as pd
import pytest

from features.store import RankingData
from ranker import importance
from ranker.lambdamart import LambdaMART


def synthetic(n_queries, seed):
    rng = np.random.default_rng(seed)
    qids = np.repeat([f"s{seed}q{i:03d}" for i in range(n_queries)], 12)
    signal, noise, weak = rng.normal(size=(3, len(qids)))
    y = (signal > 1.0).astype(int)
    return RankingData.from_arrays(np.c_[noise, signal, weak], y, qids, [f"d{i}" for i in range(len(qids))],
                                   ["noise", "signal", "weak"])


def qrels(data):
    return pd.DataFrame({"qid": data.qids, "docno": data.docnos, "label": data.y})


@pytest.fixture(scope="module")
def fitted():
    train, valid, test = synthetic(80, 0), synthetic(20, 1), synthetic(40, 2)
    model = LambdaMART(n_estimators=60, min_data_in_leaf=10).fit(train, valid)
    return model, train, valid, test


def test_ablation_ranks_the_signal_first_and_noise_near_zero(fitted):
    model, train, valid, test = fitted
    rows = importance.ablation(model, train, valid, test, qrels(test), {n: [n] for n in model.feature_names_})
    by = {r["dropped"]: r for r in rows}
    assert min(rows, key=lambda r: r["delta"])["dropped"] == "signal"
    assert by["signal"]["delta"] < -0.3 and by["signal"]["ci95"][1] < 0  # significantly worse without it
    assert abs(by["noise"]["delta"]) < 0.05 and by["noise"]["ci95"][0] <= 0 <= by["noise"]["ci95"][1] + 1e-9


def test_report_figures_agree(fitted, tmp_path):
    model, train, valid, test = fitted
    rep = importance.build_report(model, train, valid, test, qrels(test), cost={"signal": 2.0, "noise": 0.1},
                                  extractor_of={"signal": "a", "noise": "b", "weak": "b"}, query=str(test.qids[0]))
    first = rep["features"][0]
    assert first["feature"] == "signal" and first["gain_share"] > 0.5
    shap = {r["feature"]: r["mean_abs_shap"] for r in rep["features"]}
    assert shap["signal"] == max(shap.values())
    assert any(r["dropped"] == "[b]" for r in rep["ablation"])  # the two features of extractor b, dropped together
    ex = rep["explain"]
    assert ex["qid"] == str(test.qids[0]) and len(ex["results"]) == 5
    scores = [r["score"] for r in ex["results"]]
    assert scores == sorted(scores, reverse=True)
    r0 = ex["results"][0]
    assert r0["bias"] + sum(v["shap"] for v in r0["features"].values()) == pytest.approx(r0["score"], abs=1e-6)
    out = importance.write(rep, model, test, tmp_path / "report")
    for name in ("importance.md", "importance.json", "importance.png", "shap_summary.png", "ablation.png",
                 "cost_vs_benefit.png"):
        assert (out / name).stat().st_size > 0
    assert "| signal | a |" in (out / "importance.md").read_text()
