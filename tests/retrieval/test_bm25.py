import math

import numpy as np
import pandas as pd
import pytest
from rank_bm25 import BM25Okapi

from retrieval.bm25 import BM25Params, BM25Retriever
from retrieval.frames import FrameError

DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "a fox in the forest",
    "dogs bark at night",
    "quantum computing with qubits",
    "the brown bear sleeps",
    "night owls hunt mice",
    "lazy sunday afternoon",
    "bread and butter",
]


def corpus(docs=DOCS):
    return pd.DataFrame({"docno": [f"d{i}" for i in range(len(docs))], "title": "", "text": docs})


@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (0.9, 0.4), (1.2, 0.0)])
def test_scores_match_rank_bm25(k1, b):
    """bm25s' Robertson variant is rank_bm25's BM25Okapi without the constant (k1 + 1) factor.

    Every query term occurs in fewer than half the documents, so neither library floors an idf.
    """
    ours = BM25Retriever(BM25Params(k1=k1, b=b, method="robertson")).index(corpus())
    reference = BM25Okapi(ours.tokenize(DOCS), k1=k1, b=b)
    for query in ["brown fox at night", "lazy dog", "quantum bread"]:
        tokens = ours.tokenize([query])[0]
        expected = np.asarray(reference.get_scores(tokens))
        got = ours.score_pairs([query] * len(DOCS), [f"d{i}" for i in range(len(DOCS))])
        np.testing.assert_allclose(got * (k1 + 1), expected, rtol=1e-5)
        run = ours.retrieve(pd.DataFrame({"qid": ["q"], "query": [query]}), k=len(DOCS))
        assert run["docno"].tolist()[: (expected > 0).sum()] == [
            f"d{i}" for i in sorted(np.flatnonzero(expected > 0), key=lambda i: (-expected[i], i))
        ]


def test_lucene_score_by_hand():
    """Default (Lucene) BM25: idf = ln(1 + (N - n + .5)/(n + .5)), tf part = tf / (tf + k1 (1 - b + b dl/avgdl))."""
    docs = ["apple banana", "apple apple cherry", "durian"]
    r = BM25Retriever(BM25Params(k1=0.9, b=0.4, stemmer=None, stopwords=None)).index(corpus(docs))
    n_docs, avgdl = 3, (2 + 3 + 1) / 3
    idf = math.log(1 + (n_docs - 2 + 0.5) / (2 + 0.5))
    expected = [idf * tf / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / avgdl)) for tf, dl in [(1, 2), (2, 3)]]
    got = r.score_pairs(["apple"] * 3, ["d0", "d1", "d2"])
    np.testing.assert_allclose(got, expected + [0.0], rtol=1e-6)


def test_save_load_roundtrip(tmp_path):
    r = BM25Retriever().index(corpus())
    queries = pd.DataFrame({"qid": ["a", "b"], "query": ["brown fox", "night owls"]})
    r.save(tmp_path / "idx")
    loaded = BM25Retriever.load(tmp_path / "idx")
    pd.testing.assert_frame_equal(loaded.retrieve(queries, 5), r.retrieve(queries, 5))
    with pytest.raises(FileNotFoundError, match="not a BM25 index folder"):
        BM25Retriever.load(tmp_path)


def test_ranks_are_one_based_and_only_matching_docs_are_returned():
    run = BM25Retriever().index(corpus()).retrieve(pd.DataFrame({"qid": ["q"], "query": ["brown fox"]}), k=5)
    assert set(run["docno"]) == {"d0", "d1", "d4"}  # the only documents with 'brown' or 'fox'
    assert run["rank"].tolist() == [1, 2, 3] and run["score"].is_monotonic_decreasing


def test_empty_documents_are_indexed_and_never_crash():
    docs = ["", "fox", "   ", "brown fox"]
    r = BM25Retriever().index(corpus(docs))
    run = r.retrieve(pd.DataFrame({"qid": ["q", "s"], "query": ["fox", "the of and"]}), k=10)
    assert run["docno"].tolist() == ["d1", "d3"]  # stop-word-only query: no candidate
    assert r.score_pairs(["fox", "fox"], ["d0", "d2"]).tolist() == [0.0, 0.0]


def test_empty_query_is_a_clear_error():
    r = BM25Retriever().index(corpus())
    with pytest.raises(FrameError, match="empty or whitespace-only"):
        r.retrieve(pd.DataFrame({"qid": ["q"], "query": ["  "]}))


def test_unindexed_use_and_unknown_docno_are_errors():
    with pytest.raises(RuntimeError, match="call index"):
        BM25Retriever().retrieve(pd.DataFrame({"qid": ["q"], "query": ["x"]}))
    with pytest.raises(KeyError, match="not in the index"):
        BM25Retriever().index(corpus()).score_pairs(["fox"], ["nope"])


def test_first_stage_counts_what_the_analyzer_left_empty_and_queries_without_candidates():
    from retrieval.first_stage import FirstStage, FirstStageConfig

    docs = corpus(DOCS + ["the and of", "中文的新闻"])  # a stop-word-only document, and Chinese text
    stage = FirstStage(FirstStageConfig(systems=("bm25",), k=5, depth=5)).index(docs)
    queries = pd.DataFrame({"qid": ["q1", "q2", "q3"], "query": ["brown fox", "the of", "zebra"]})
    runs = stage.retrieve(queries)
    assert stage.timing_["bm25_docs_without_terms"] == 1  # the Chinese clause is one "word" here
    assert stage.timing_["bm25_queries_without_terms"] == 1  # "the of"
    assert stage.timing_["bm25_queries_without_candidates"] == 2  # and "zebra", in no document
    assert set(runs["bm25"]["qid"]) == {"q1"}


def test_chinese_analysis_indexes_words_and_scores_pairs_the_same_way():
    pytest.importorskip("jieba")
    docs = corpus(["北京今天天气晴朗", "上海明天有大雨", "北京的交通很拥堵", "天气预报说明天降温"])
    bm25 = BM25Retriever(BM25Params(segmenter="jieba", stemmer=None, stopwords="zh")).index(docs)
    run = bm25.retrieve(pd.DataFrame({"qid": ["q"], "query": ["北京天气"]}), k=4)
    assert run["docno"].tolist()[0] == "d0"  # both words
    assert set(run["docno"]) == {"d0", "d2", "d3"}  # one word each; d1 shares none
    pairs = bm25.score_pairs(["北京天气"] * 3, run["docno"].tolist())
    np.testing.assert_allclose(pairs, run["score"].to_numpy())
