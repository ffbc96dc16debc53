import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ranker import evaluate as ev


def frame(rows, cols):
    return pd.DataFrame(rows, columns=cols)


QRELS = frame([("q1", "d1", 1), ("q2", "d5", 1), ("q2", "d6", 1), ("q3", "d9", 1)], ["qid", "docno", "label"])


def test_per_query_values_by_hand_and_missing_query_counts_as_zero():
    run = frame([("q1", "d2", 1, 2.0), ("q1", "d1", 2, 1.0), ("q2", "d5", 1, 9.0)], ["qid", "docno", "rank", "score"])
    pq = ev.per_query(run, QRELS)
    assert list(pq.index) == ["q1", "q2", "q3"]  # q3 is judged but absent from the run
    assert pq.loc["q1", "RR@10"] == pytest.approx(0.5)
    assert pq.loc["q1", "nDCG@10"] == pytest.approx(1 / math.log2(3))
    idcg = 1 + 1 / math.log2(3)
    assert pq.loc["q2", "nDCG@10"] == pytest.approx(1 / idcg)
    assert pq.loc["q2", "R@100"] == pytest.approx(0.5) and pq.loc["q2", "AP"] == pytest.approx(0.5)
    assert pq.loc["q3"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert ev.evaluate(run, QRELS)["RR@10"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_rank_order_wins_over_scores_when_present():
    # Equal scores: trec_eval would order by docno; our rank column says d1 first.
    run = frame([("q1", "d1", 1, 1.0), ("q1", "d0", 2, 1.0)], ["qid", "docno", "rank", "score"])
    assert ev.per_query(run, QRELS.iloc[:1]).loc["q1", "RR@10"] == 1.0


def test_reorder_head_reorders_only_the_head_and_keeps_the_rest_after_it():
    run = frame([("q1", "a", 1), ("q1", "b", 2), ("q1", "c", 3), ("q1", "d", 4), ("q2", "x", 1), ("q2", "y", 2)],
                ["qid", "docno", "rank"])
    head = run[run["rank"] <= 2]  # a, b of q1; x, y of q2
    out = ev.reorder_head(run, head, [0.1, 0.9, 0.5, 0.5])  # b above a; x, y tied: run order kept
    order = {q: list(g.sort_values("rank")["docno"]) for q, g in out.groupby("qid")}
    assert order == {"q1": ["b", "a", "c", "d"], "q2": ["x", "y"]}
    assert out.groupby("qid")["rank"].apply(list).to_dict() == {"q1": [1, 2, 3, 4], "q2": [1, 2]}
    assert (out.sort_values(["qid", "rank"]).groupby("qid")["score"].diff().dropna() < 0).all()


def test_compare_counts_wins_and_matches_scipy():
    a = pd.DataFrame({"nDCG@10": [0.1, 0.5, 0.3, 0.9]}, index=["q1", "q2", "q3", "q4"])
    b = pd.DataFrame({"nDCG@10": [0.4, 0.5, 0.2, 1.0]}, index=["q1", "q2", "q3", "q4"])
    c = ev.compare(a, b)
    assert (c.wins, c.losses, c.ties, c.n) == (2, 1, 1, 4)
    assert c.delta == pytest.approx(np.mean([0.3, 0.0, -0.1, 0.1]))
    assert c.p_value == pytest.approx(stats.ttest_rel(b["nDCG@10"], a["nDCG@10"]).pvalue)
    assert ev.compare(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="'t' or 'wilcoxon'"):
        ev.compare(a, b, test="z")


def test_markdown_table():
    text = ev.markdown_table({"bm25": {"nDCG@10": 0.5, "R@100": 0.25}})
    assert text.splitlines() == ["| system | nDCG@10 | R@100 |", "|---|---:|---:|", "| bm25 | 0.5000 | 0.2500 |"]
