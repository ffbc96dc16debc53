"""The in-domain bi-encoder's training examples, by hand."""

import pandas as pd

from ranker.training.biencoder import BETrainingParams, training_examples
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


def test_title_examples_pair_a_title_with_its_body_and_another_body_as_the_negative():
    from ranker.training.biencoder import title_examples
    from retrieval import BM25Retriever

    corpus = pd.DataFrame({"docno": ["a", "b", "c", "d"],
                           "title": ["Aspirin lowers fever in adults", "Aspirin and fever in children", "Two words",
                                     "Statins cause muscle pain"],
                           "text": ["Aspirin reduced fever.", "Children given aspirin.", "Body C.", "Statin pain."]})
    bm25 = BM25Retriever().index(corpus)
    got = title_examples(corpus, n_docs=10, retriever=bm25, negatives_from=30, seed=0)
    by_qid = {e["qid"]: e for e in got}
    # c's title has two words: no query; a and b retrieve each other, so each has the other's body as negative
    assert set(by_qid) <= {"title:a", "title:b", "title:d"} and {"title:a", "title:b"} <= set(by_qid)
    assert by_qid["title:a"]["anchor"] == "Aspirin lowers fever in adults"
    assert by_qid["title:a"]["positive"] == "Aspirin reduced fever."  # the body, without its title
    assert by_qid["title:a"]["negative"] == "Children given aspirin."
    assert by_qid["title:b"]["negative"] == "Aspirin reduced fever."
    assert all(e["negative"] != e["positive"] for e in got)
    assert title_examples(corpus.assign(title=""), n_docs=10, retriever=bm25, negatives_from=30, seed=0) == []


def test_a_title_queries_count_below_zero_is_refused():
    import pytest

    with pytest.raises(ConfigError, match="title_queries must be >= 0"):
        BETrainingParams(title_queries=-1).check()
