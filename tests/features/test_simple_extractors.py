"""length, freshness, first_stage, coverage, bm25: hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from features.bm25 import BM25Extractor
from features.coverage import CoverageExtractor
from features.first_stage import FirstStageExtractor
from features.freshness import FreshnessExtractor
from retrieval.errors import UsageError
from features.length import LengthExtractor
from retrieval.bm25 import BM25Params, BM25Retriever
from retrieval.data import load_beir
from retrieval.params import ConfigError
from tests.conftest import shared_dataset


def pairs(query, texts, **cols):
    n = len(texts)
    return pd.DataFrame({"qid": "q", "query": query, "docno": [f"d{i}" for i in range(n)], "title": "",
                         "text": texts, "timestamp": pd.NaT, "rank": range(1, n + 1), "score": 1.0, **cols})


def test_length_by_hand():
    out = LengthExtractor().compute(pairs("two words", ["a b c d", "", "x-y z"]))
    assert out["doc_len"].tolist() == [4, 0, 3] and out["query_len"].tolist() == [2, 2, 2]
    assert out["len_ratio"].tolist() == [2.0, 0.0, 1.5]


def test_freshness_on_cacm_dates_with_a_fixed_reference():
    cacm = load_beir(shared_dataset("cacm"))
    docs = cacm.corpus.set_index("docno").loc[["1", "3204"]].reset_index()
    frame = pairs("q", docs["text"].tolist()).assign(docno=docs["docno"], timestamp=docs["timestamp"])
    ext = FreshnessExtractor(reference_time="1980-01-01", half_life_days=3650)
    out = ext.compute(frame)
    # doc 1 is dated 1958-12-01: 31 days to 1959-01-01, then 21 years with 5 leap days (1960..1976).
    assert str(docs.loc[0, "timestamp"].date()) == "1958-12-01"
    assert out["age_days"][0] == 31 + 21 * 365 + 5
    assert out["freshness"][0] == pytest.approx(0.5 ** (7701 / 3650))
    expected = (pd.Timestamp("1980-01-01", tz="UTC") - docs.loc[1, "timestamp"]).days
    assert out["age_days"][1] == expected and out["has_timestamp"].tolist() == [1.0, 1.0]


def test_freshness_without_timestamp_is_nan_plus_flag():
    out = FreshnessExtractor(reference_time="2020-01-11").compute(
        pairs("q", ["a", "b"]).assign(timestamp=pd.to_datetime(["2020-01-01", None], utc=True)))
    assert out["age_days"][0] == 10 and np.isnan(out["age_days"][1]) and np.isnan(out["freshness"][1])
    assert out["has_timestamp"].tolist() == [1.0, 0.0]
    with pytest.raises(ConfigError, match="expected an ISO date or 'now'"):
        FreshnessExtractor(reference_time="yesterday")
    assert FreshnessExtractor(reference_time="2020-01-01").version != FreshnessExtractor(reference_time="2021-01-01").version


def test_a_configured_now_matches_the_date_a_feature_set_was_built_on_and_nothing_else_does():
    built = FreshnessExtractor(reference_time="2020-01-11").config()  # a build's extractor_configs entry
    assert FreshnessExtractor().param_changes(built) == {}  # "now" then stood for 2020-01-11
    assert FreshnessExtractor(half_life_days=30, batch_size=8).param_changes(built) == {"half_life_days": (365.0, 30)}
    assert FreshnessExtractor(reference_time="2020-01-12").param_changes(built) == {
        "reference_time": ("2020-01-11", "2020-01-12")}


def test_freshness_of_a_document_newer_than_the_reference_is_clamped_or_refused():
    frame = pairs("q", ["old", "new"]).assign(timestamp=pd.to_datetime(["2020-01-01", "2020-03-01"], utc=True))
    out = FreshnessExtractor(reference_time="2020-01-11").compute(frame)
    assert out["age_days"].tolist() == [10, 0] and out["freshness"][1] == 1.0  # was -50 days, freshness 1.1
    with pytest.raises(UsageError, match=r"doc 'd1': dated 2020-03-01.*after the reference time 2020-01-11"):
        FreshnessExtractor(reference_time="2020-01-11", newer="refuse").compute(frame)
    with pytest.raises(ConfigError, match="newer: expected 'clamp' or 'refuse'"):
        FreshnessExtractor(newer="keep")


def test_first_stage_copies_ranks_and_scores():
    frame = pairs("q", ["a", "b"], rank_bm25=[3.0, np.nan], score_bm25=[7.5, np.nan])
    out = FirstStageExtractor(retrievers=["bm25", "dense"]).compute(frame)
    assert out["fs_rank"].tolist() == [1, 2] and out["rank_bm25"][0] == 3 and np.isnan(out["rank_bm25"][1])
    assert np.isnan(out["rank_dense"]).all()
    filled = FirstStageExtractor(retrievers=["bm25"], missing_rank=1001).compute(frame)
    assert filled["rank_bm25"].tolist() == [3, 1001]


def test_coverage_by_hand():
    out = CoverageExtractor().compute(pairs("running cats and dogs", ["a cat ran", "cats run with dogs", "", ]))
    # query terms after stemming / stop-wording: run, cat, dog
    assert out["coverage"].tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert np.isnan(CoverageExtractor().compute(pairs("the and of", ["x"]))["coverage"][0])


CORPUS = pd.DataFrame({"docno": [f"d{i}" for i in range(6)], "title": ["Fox", "", "", "", "", ""],
                       "text": ["the quick brown fox", "a fox in the forest", "dogs bark at night",
                                "quantum computing", "", "brown bears and brown foxes"]})


@pytest.mark.parametrize("method", ["lucene", "robertson"])
def test_bm25_feature_equals_the_bm25s_index(method):
    index = BM25Retriever(BM25Params(method=method)).index(CORPUS)
    ext = BM25Extractor(method=method).fit(CORPUS)
    for query in ["brown fox", "night dogs fox", "nothing matches"]:
        frame = pairs(query, CORPUS["text"].tolist()).assign(docno=CORPUS["docno"], title=CORPUS["title"])
        expected = index.score_pairs([query] * len(CORPUS), CORPUS["docno"].tolist())
        np.testing.assert_allclose(ext.compute(frame)["bm25"], expected, rtol=1e-5, atol=1e-7)


def test_bm25_feature_scores_unindexed_text_and_versions_follow_the_corpus():
    ext = BM25Extractor(stemmer=None, stopwords=None).fit(CORPUS)
    out = ext.compute(pairs("zebra", ["zebra zebra"]))["bm25"][0]
    n, avgdl = 6, ext.avgdl_
    idf = math.log(1 + (n - 0 + 0.5) / 0.5)
    assert out == pytest.approx(idf * 2 / (2 + 0.9 * (1 - 0.4 + 0.4 * 2 / avgdl)))
    other = BM25Extractor(stemmer=None, stopwords=None).fit(CORPUS.iloc[:3])
    assert other.version != ext.version
    with pytest.raises(RuntimeError, match="call fit"):
        BM25Extractor().compute(pairs("x", ["y"]))
