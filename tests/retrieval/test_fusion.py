import pandas as pd
import pytest

from retrieval.fusion import rrf


def run(qid, docnos, name):
    return pd.DataFrame({"qid": qid, "docno": docnos, "rank": range(1, len(docnos) + 1),
                         "score": [1.0] * len(docnos), "retriever": name})


def test_rrf_on_a_hand_computed_example():
    a = run("q", ["d1", "d2", "d3"], "a")
    b = run("q", ["d3", "d1", "d4"], "b")
    fused = rrf([a, b], k=60)
    expected = {"d1": 1 / 61 + 1 / 62, "d3": 1 / 63 + 1 / 61, "d2": 1 / 62, "d4": 1 / 63}
    assert fused["docno"].tolist() == ["d1", "d3", "d2", "d4"]
    assert fused["score"].tolist() == pytest.approx([expected[d] for d in fused["docno"]])
    assert fused["rank"].tolist() == [1, 2, 3, 4] and set(fused["retriever"]) == {"hybrid"}


def test_rrf_is_per_query_breaks_ties_by_docno_and_cuts_depth():
    a = pd.concat([run("q1", ["x", "y"], "a"), run("q2", ["m"], "a")])
    b = pd.concat([run("q1", ["y", "x"], "b"), run("q2", ["n"], "b")])
    fused = rrf([a, b], k=0, depth=1)
    # q1: x and y both score 1/1 + 1/2 -> tie broken by docno; q2: m and n tie at 1/1.
    assert fused[["qid", "docno"]].values.tolist() == [["q1", "x"], ["q2", "m"]]
    assert fused["score"].tolist() == pytest.approx([1.5, 1.0])


def test_rrf_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one run"):
        rrf([])
    with pytest.raises(ValueError, match="missing column"):
        rrf([pd.DataFrame({"qid": ["q"], "docno": ["d"]})])
