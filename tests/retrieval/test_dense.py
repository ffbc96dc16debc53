"""Dense retrieval with the packaged all-MiniLM-L6-v2 (real model, tiny corpus)."""

import numpy as np
import pandas as pd
import pytest

from retrieval.dense import DenseParams, DenseRetriever
from retrieval.frames import FrameError

CORPUS = pd.DataFrame({
    "docno": ["cat", "dog", "quantum", "empty", "bread"],
    "title": ["", "", "", "", ""],
    "text": ["A cat is a small domesticated feline.", "Dogs bark at the postman.",
             "Qubits are the units of quantum computers.", "", "Sourdough bread needs a starter."],
})


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("emb")


def test_retrieves_the_semantically_matching_document(model_cache):
    r = DenseRetriever(cache=model_cache).index(CORPUS)
    run = r.retrieve(pd.DataFrame({"qid": ["q1", "q2"], "query": ["kitten", "superposition of qbits"]}), k=3)
    top = run[run["rank"] == 1].set_index("qid")["docno"].to_dict()
    assert top == {"q1": "cat", "q2": "quantum"}
    assert run.groupby("qid").size().tolist() == [3, 3]
    scores = run[run["qid"] == "q1"]["score"].to_numpy()
    assert np.all(np.diff(scores) <= 0) and scores[0] <= 1.0 + 1e-6  # cosine, best first


def test_embedding_cache_second_run_encodes_nothing(model_cache, tmp_path):
    first = DenseRetriever(cache=tmp_path).index(CORPUS)
    assert first.stats_ == {"encoded": 5, "cached": 0}
    second = DenseRetriever(cache=tmp_path).index(CORPUS)
    assert second.stats_ == {"encoded": 0, "cached": 5}
    np.testing.assert_array_equal(first.embeddings_, second.embeddings_)
    changed = CORPUS.assign(text=CORPUS["text"].where(CORPUS["docno"] != "dog", "Wolves howl."))
    third = DenseRetriever(cache=tmp_path).index(changed)  # content changed: new key
    assert third.stats_["encoded"] == 5
    other_model_setting = DenseRetriever(DenseParams(max_length=16), cache=tmp_path).index(CORPUS)
    assert other_model_setting.stats_["encoded"] == 5


def test_empty_query_is_a_clear_error(model_cache):
    r = DenseRetriever(cache=model_cache).index(CORPUS)
    with pytest.raises(FrameError, match="empty or whitespace-only"):
        r.retrieve(pd.DataFrame({"qid": ["q"], "query": [""]}))
