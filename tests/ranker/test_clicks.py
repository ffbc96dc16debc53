"""Clicks as labels: the position-based model by hand, simulated sessions, EM's examination curve, and
the boosters' position-bias correction fed the shown positions."""

import numpy as np
import pytest

from features.matrix import RankingData
from ranker.clicks import click_probability, examination, pair_labels, pbm_em, simulate
from ranker.lambdamart import LambdaMART, LambdaMARTParams
from retrieval.errors import UsageError


def judged(queries: int = 40, docs: int = 12, seed: int = 0) -> RankingData:
    """Queries whose relevant documents (label 1 or 2) have a high feature 0; feature 1 is noise."""
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 0, 0, 1, 2], size=queries * docs)
    X = np.column_stack([y + rng.normal(0, 0.7, len(y)), rng.normal(size=len(y))])
    return RankingData.from_arrays(X, y, np.repeat([f"q{i:02d}" for i in range(queries)], docs),
                                   [f"d{i}" for i in range(len(y))], ["signal", "noise"])


def test_the_click_model_by_hand():
    assert examination([1, 2, 4], eta=1.0) == pytest.approx([1.0, 0.5, 0.25])
    assert examination([1, 2, 4], eta=2.0) == pytest.approx([1.0, 0.25, 0.0625])
    # label 0 -> 0.1, 1 -> 0.1 + 0.9 * 1/3, 2 -> 1.0
    assert click_probability([0, 1, 2], 2) == pytest.approx([0.1, 0.4, 1.0])


def test_simulated_sessions_show_the_top_k_in_order_and_click_by_the_model():
    data = judged()
    scores = data.X[:, 0]
    s = simulate(data, scores, 2000, top_k=5, non_relevant=0.0, seed=3)
    assert len(s.group) == 2000 and (s.group == 5).all()
    assert np.array_equal(s.position, np.tile(np.arange(1, 6), 2000))
    truth = dict(zip(data.docnos, data.y))
    assert all(truth[d] > 0 for d in s.docnos[s.y == 1])  # non_relevant = 0: no click on a label-0 document
    rows = [np.flatnonzero(data.qids == q) for q in data.unique_qids]
    top = {q: set(data.docnos[r[np.argsort(-scores[r])[:5]]]) for q, r in zip(data.unique_qids, rows)}
    for q, d in zip(s.qids[:50], s.docnos[:50]):
        assert d in top[q.split("#")[0]]
    # the first position's relevant documents are clicked at about their rate (label 2: 1.0, label 1: 1/3)
    first = (s.position == 1) & np.isin(s.docnos, [d for d, y in truth.items() if y == 2])
    assert s.y[first].mean() == 1.0
    fifth = (s.position == 5) & np.isin(s.docnos, [d for d, y in truth.items() if y == 2])
    assert s.y[fifth].mean() == pytest.approx(0.2, abs=0.05)  # examined with probability 1/5
    again = simulate(data, scores, 2000, top_k=5, non_relevant=0.0, seed=3)
    assert np.array_equal(again.y, s.y) and np.array_equal(again.docnos, s.docnos)  # seeded
    with pytest.raises(UsageError, match="sessions >= 1"):
        simulate(data, scores, 0)


def test_em_recovers_the_examination_curve_from_a_log_with_randomised_sessions():
    data = judged(queries=60)
    s = simulate(data, data.X[:, 0], 30000, top_k=6, eta=1.0, explore=1.0, seed=5)
    keys = [q.split("#")[0] + " " + d for q, d in zip(s.qids, s.docnos)]
    theta, gamma = pbm_em(s.position, s.y, keys, iterations=200)
    assert theta == pytest.approx(1 / np.arange(1, 7), abs=0.04)
    # relevance estimates order the labels: label 2 documents above label 0 ones
    truth = dict(zip(data.docnos, data.y))
    by_label = {y: np.mean([g for k, g in gamma.items() if truth[k.split(" ")[1]] == y]) for y in (0, 2)}
    assert by_label[2] > 0.8 > 0.2 > by_label[0]


def test_pair_labels_remove_the_position_bias_that_click_through_rates_keep():
    """Equally relevant documents (label 2) shown at different positions get click-through rates that differ
    with the position; the PBM's labels (examination estimated from the log, half of it randomised) much less."""
    data = judged(queries=30, docs=8)
    s = simulate(data, data.X[:, 0], 20000, top_k=5, explore=0.5, seed=2)
    ctr, _ = pair_labels(s, model="ctr", grades=100)
    pbm, theta = pair_labels(s, model="pbm", grades=100)
    assert theta[4] == pytest.approx(0.2, abs=0.05)
    truth = dict(zip(data.docnos, data.y))
    for labelled in (ctr, pbm):
        assert len(labelled.y) == len(set(zip([q.split("#")[0] for q in s.qids], s.docnos)))
    relevant = [d for d in pbm.docnos if truth[d] == 2]
    ctr_of = dict(zip(ctr.docnos, ctr.y))
    pbm_of = dict(zip(pbm.docnos, pbm.y))
    spread_ctr = np.std([ctr_of[d] for d in relevant]) / np.mean([ctr_of[d] for d in relevant])
    spread_pbm = np.std([pbm_of[d] for d in relevant]) / np.mean([pbm_of[d] for d in relevant])
    assert spread_pbm < spread_ctr / 2  # equally relevant documents get about one label once debiased
    with pytest.raises(UsageError, match="'ctr' or 'pbm'"):
        pair_labels(s, model="dbn")


def test_the_position_shown_travels_with_the_rows_and_reaches_the_booster():
    data = judged()
    s = simulate(data, data.X[:, 0], 500, top_k=5, seed=1)
    part = s.subset(s.unique_qids[:10])
    assert np.array_equal(part.position, s.position[np.isin(s.qids, s.unique_qids[:10])])
    assert np.array_equal(RankingData.concat([part, s.subset(s.unique_qids[10:20])]).position[:len(part.y)], part.position)
    assert np.array_equal(s.masked(["noise"]).position, s.position) and s.select(["signal"]).position is not None
    with pytest.raises(UsageError, match="shown positions"):
        RankingData.concat([part, RankingData(part.X, part.y, part.group, part.qids, part.docnos, part.feature_names)])
    params = LambdaMARTParams(n_estimators=20, early_stopping_rounds=0, min_data_in_leaf=5)
    plain = RankingData(s.X, s.y, s.group, s.qids, s.docnos, s.feature_names)
    with_pos, without = LambdaMART.from_params(params).fit(s), LambdaMART.from_params(params).fit(plain)
    assert not np.allclose(with_pos.predict(data), without.predict(data))  # the booster used the positions


def test_xgboost_reads_the_rows_in_the_order_shown():
    pytest.importorskip("xgboost")
    data = judged()
    s = simulate(data, data.X[:, 0], 300, top_k=5, seed=1)
    params = LambdaMARTParams(backend="xgboost", n_estimators=10, early_stopping_rounds=0)
    plain = RankingData(s.X, s.y, s.group, s.qids, s.docnos, s.feature_names)
    assert not np.allclose(LambdaMART.from_params(params).fit(s).predict(data),
                           LambdaMART.from_params(params).fit(plain).predict(data))  # lambdarank_unbiased
    swapped = s.position.copy()
    swapped[[5, 6]] = swapped[[6, 5]]  # the second session's first two rows: positions 2, 1
    bad = RankingData(s.X, s.y, s.group, s.qids, s.docnos, s.feature_names, position=swapped)
    with pytest.raises(UsageError, match=r"rows must come in the order shown .* found position 2 at row 1"):
        LambdaMART.from_params(params).fit(bad)
