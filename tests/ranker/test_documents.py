"""The Scorer's inputs: every bad argument or document is named, and anything else reranks.

Hand-picked cases first, then property-based ones (hypothesis): arbitrary documents, ids, scores and
timestamps either rerank (a permutation of the input) or raise the project's error, never anything else.
"""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranker import Document, Scorer
from ranker.cli import main
from ranker.documents import candidate_frame, parse_timestamp
from retrieval.errors import FusionLTRError, UsageError
from tests.ranker.conftest import generated_dataset, write_config


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """A run over the generated dataset with cheap extractors, freshness included (seconds to build)."""
    tmp = tmp_path_factory.mktemp("docs")
    folder = generated_dataset(tmp / "gen")
    config = tmp / "gen.toml"
    write_config(config, folder, tmp / "run",
                 extractors="[features.extractors.bm25]\n[features.extractors.length]\n"
                            "[features.extractors.freshness]\nreference_time = \"2030-01-01\"",
                 ranker="[ranker.params]\nn_estimators = 20\nmin_data_in_leaf = 5\nnum_leaves = 5")
    for step in ("retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    return Scorer.load(tmp / "run")


DOCS = [{"id": "a", "text": "coffee bean roast"}, {"id": "b", "text": "owl night hunting"}]


@pytest.mark.parametrize("docs, message", [
    ("coffee bean roast", r"docs: expected a list of documents .* found str 'coffee bean roast'; wrap one"),
    (None, r"docs: expected a list of documents .* found NoneType"),
    ({"id": "a", "text": "x"}, r"docs: expected a list .* found dict"),
    ([{"id": "a", "text": "x", "score": float("inf")}], r"doc 'a': score must be finite"),
    ([{"id": "a", "text": "x", "score": "high"}], r"doc 'a': score must be a number, found str 'high'"),
    ([{"id": "a", "text": "x", "rank_bm25": "3"}], r"doc 'a': rank_bm25 must be a number, found str '3'"),
    ([{"id": "a", "text": "x", "score_dense": -math.inf}], r"doc 'a': score_dense must be finite"),
    ([{"id": "a", "text": "x", "timestamp": 1.7e12}], r"doc 'a': timestamp 1700000000000.0 is not a Unix time in "
                                                        r"seconds .* looks like milliseconds: pass it as 'timestamp_ms'"),
    ([{"id": "a", "text": "x", "timestamp": -1e11}], r"doc 'a': timestamp -100000000000.0 is not a Unix time"),
    ([{"id": "a", "text": "x", "timestamp": 1, "timestamp_ms": 1000}], r"give either timestamp or timestamp_ms"),
    ([{"id": ["a"], "text": "x"}], r"doc 0: id must be a string or an integer, found list"),
    ([{"id": "a", "text": "x", "embedding": [0.1, 0.2]}], r"doc 'a': an embedding needs 'embedding_model'"),
    ([{"id": "a", "text": "x", "embedding": [0.1, math.nan], "embedding_model": "m"}],
     r"doc 'a': embedding must be a non-empty sequence of finite numbers"),
    ([{"id": "a", "text": "x", "embedding": "0.1 0.2", "embedding_model": "m"}],
     r"doc 'a': embedding must be a non-empty sequence of finite numbers"),
])
def test_bad_documents_are_named(scorer, docs, message):
    with pytest.raises(UsageError, match=message):
        scorer.rerank("coffee", docs)


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": -1}, r"top_k: expected None or an integer >= 0, found int -1"),
    ({"top_k": 2.7}, r"top_k: expected None or an integer >= 0, found float 2.7"),
    ({"top_k": True}, r"top_k: .* found bool True"),
    ({"min_score": float("nan")}, r"min_score: expected None or a finite number, found float nan"),
    ({"min_score": "0.5"}, r"min_score: expected None or a finite number, found str '0.5'"),
])
def test_bad_arguments_are_named(scorer, kwargs, message):
    with pytest.raises(UsageError, match=message):
        scorer.rerank("coffee", DOCS, **kwargs)
    with pytest.raises(UsageError, match=message):
        scorer.search("coffee", **kwargs)


def test_timestamps_in_seconds_and_milliseconds_agree(scorer):
    seconds = parse_timestamp(1_700_000_000, "a")
    assert seconds == parse_timestamp(1_700_000_000_000, "a", unit="ms") == pd.Timestamp("2023-11-14 22:13:20Z")
    out = scorer.features("q", [Document("x", id="s", timestamp=1_700_000_000),
                                Document("x", id="ms", timestamp_ms=1_700_000_000_000),
                                Document("x", id="future", timestamp="2031-01-01")])
    assert out.loc["s", "age_days"] == out.loc["ms", "age_days"] > 0
    assert out.loc["future", "age_days"] == 0 and out.loc["future", "freshness"] == 1.0  # newer than reference


def test_top_k_zero_and_a_min_score_above_all_give_nothing(scorer):
    assert scorer.rerank("coffee", DOCS, top_k=0) == []
    assert scorer.rerank("coffee", DOCS, min_score=1e9) == []


# ------------------------------------------------------------------------------ properties

numbers = st.one_of(st.none(), st.integers(-10**13, 10**13), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=5), st.booleans())
timestamps = st.one_of(numbers, st.datetimes().map(lambda d: d.isoformat()), st.just("2020-02-30"))
documents = st.one_of(
    st.text(max_size=30),
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=30), st.none(), st.integers())},
                          optional={"id": st.one_of(st.text(max_size=4), st.integers(0, 5), st.none()),
                                    "title": st.one_of(st.text(max_size=10), st.none(), st.integers()),
                                    "timestamp": timestamps, "score": numbers,
                                    "rank": st.one_of(st.integers(-2, 50), st.floats(), st.none()),
                                    "rank_bm25": numbers}),
    st.builds(Document, st.text(max_size=30), id=st.one_of(st.none(), st.text(max_size=4)),
              timestamp_ms=st.one_of(st.none(), st.integers(-10**14, 10**14))),
    st.integers(), st.none(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(documents, max_size=6), top_k=st.one_of(st.none(), st.integers(0, 8)))
def test_any_documents_rerank_to_a_permutation_or_raise_the_project_error(scorer, docs, top_k):
    try:
        results = scorer.rerank("coffee bean roast", docs, top_k=top_k, explain=True)
    except FusionLTRError:
        return
    frame = candidate_frame("q", docs, "bm25")  # what was accepted
    ids = frame["docno"].tolist()
    assert len(results) == (len(ids) if top_k is None else min(top_k, len(ids)))
    assert len({r.id for r in results}) == len(results) and {r.id for r in results} <= set(ids)
    if top_k is None:
        assert sorted(r.id for r in results) == sorted(ids)
    assert all(np.isfinite(r.score) for r in results)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


@pytest.mark.parametrize("docs, message", [
    ([{"id": "a", "text": "x", "score": math.nan}], r"doc 'a': score must be finite, found nan; leave it out"),
    ([{"id": "a", "text": "x", "rank_bm25": math.nan}], r"doc 'a': rank_bm25 must be finite, found nan"),
    ([{"id": "a", "text": "x", "timestmap": "2020-01-01"}], r"doc 'a' \(position 0\): unknown key\(s\) \['timestmap'\]"),
    ([{"id": "a", "text": "x", "timestamp": "0001-01-01"}], r"doc 'a': timestamp '0001-01-01' is outside 1900-2200"),
    ([{"id": "a", "text": "x", "timestamp": "9999-12-31"}], r"doc 'a': timestamp '9999-12-31' is outside 1900-2200"),
    ([{"id": "a", "text": "x", "timestamp": 10**400}], r"doc 'a': timestamp 1000.* is not a Unix time in seconds"),
    ([{"id": "a", "text": "x", "timestamp_ms": 10**400}], r"doc 'a': timestamp_ms 1000.* is not a Unix time"),
    ([{"id": "a", "text": "caf\ud800"}], r"doc 'a' text: not valid Unicode text \(a lone surrogate"),
    ([{"id": "a", "text": "x", "title": "\udfff"}], r"doc 'a' title: not valid Unicode text"),
    ([{"id": "\ud800", "text": "x"}], r"doc 0 id: not valid Unicode text"),
])
def test_bad_values_that_used_to_pass_or_crash_are_named(scorer, docs, message):
    with pytest.raises(UsageError, match=message):
        scorer.rerank("coffee", docs)


def test_a_query_with_a_lone_surrogate_is_named(scorer):
    with pytest.raises(UsageError, match=r"query: not valid Unicode text"):
        scorer.rerank("coffee \ud800", DOCS)


def test_min_score_compares_the_probability_when_the_model_is_calibrated(scorer):
    """One meaning in Python and over HTTP: P(relevant) (Result.probability), not the raw score."""
    assert scorer.calibrator is not None
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(["coffee bean roast", "roast coffee", "owl night",
                                                              "bean soup", "coffee"])]
    full = scorer.rerank("coffee bean roast", docs)
    for cut in sorted({r.probability for r in full}):
        kept = scorer.rerank("coffee bean roast", docs, min_score=cut)
        assert [r.id for r in kept] == [r.id for r in full if r.probability >= cut]
    # the raw score lives on another scale: at least one cut keeps another set than the raw score would
    assert any([r.id for r in full if r.probability >= cut] != [r.id for r in full if r.score >= cut]
               for cut in {r.probability for r in full})
