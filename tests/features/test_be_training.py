"""The in-domain bi-encoder's training examples, by hand."""

import pandas as pd

from features.be_training import BETrainingParams, training_examples
from retrieval.params import ConfigError

CORPUS = pd.DataFrame({"docno": ["d1", "d2", "d3", "d4", "d5"], "title": "",
                       "text": ["one", "two", "three", "four", "five"]})
QUERIES = pd.DataFrame({"qid": ["q1", "q2"], "query": ["first", "second"]})
QRELS = pd.DataFrame({"qid": ["q1", "q1", "q2", "q1"], "docno": ["d1", "d2", "d3", "d5"], "label": [1, 1, 2, 0]})
CANDIDATES = pd.DataFrame({"qid": ["q1"] * 4 + ["q2"], "docno": ["d1", "d5", "d4", "d3", "d3"],
                           "rank": [1, 2, 3, 4, 1], "score": 0.0})


def test_one_example_per_relevant_document_with_an_unjudged_hard_negative():
    got = training_examples(QUERIES, QRELS, CANDIDATES, CORPUS, negatives_from=30, seed=0)
    # q1: positives d1 and d2; its pool is d4 and d3 (d1 relevant, d5 judged irrelevant: left out);
    # q2: its only candidate is its own positive, so no negative: dropped (the trainer needs one column set)
    assert [(e["qid"], e["positive"]) for e in got] == [("q1", "one"), ("q1", "two")]
    assert all(e["negative"] in ("four", "three") for e in got)
    near = training_examples(QUERIES, QRELS, CANDIDATES, CORPUS, negatives_from=3, seed=0)
    assert {e["negative"] for e in near} == {"four"}  # within the top 3 only
    plain = training_examples(QUERIES, QRELS, None, CORPUS, negatives_from=30, seed=0)
    assert [(e["qid"], e["positive"]) for e in plain] == [("q1", "one"), ("q1", "two"), ("q2", "three")]
    assert not any("negative" in e for e in plain)


def test_params_are_checked():
    import pytest

    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        BETrainingParams(batch_size=1).check()
