"""The DuckDB feature store and the build loop, with small extractors defined here."""

import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from features.base import BaseExtractor
from features.build import build, summary_table
from features.store import FeatureStore, RankingData, StoreCorruptError, StoreLockedError
from features.length import LengthExtractor

CORPUS = pd.DataFrame({"docno": ["a", "b", "c", "d"], "title": ["", "", "", ""],
                       "text": ["one two three", "four five", "six", ""],
                       "timestamp": pd.to_datetime(["2000-01-01", None, None, None], utc=True)})
QUERIES = pd.DataFrame({"qid": ["q1", "q2"], "query": ["alpha beta", "gamma"]})
RUN = pd.DataFrame({"qid": ["q1", "q1", "q1", "q2", "q2"], "docno": ["a", "b", "c", "c", "d"],
                    "rank": [1, 2, 3, 1, 2], "score": [0.9, 0.8, 0.7, 0.5, 0.4], "retriever": "hybrid"})
QRELS = pd.DataFrame({"qid": ["q1", "q2"], "docno": ["b", "d"], "label": [1, 2]})


@dataclass(frozen=True)
class CountingParams:
    scale: float = 1.0
    top_n: int | None = None
    batch_size: int = 2


class CountingExtractor(BaseExtractor):
    """value = scale * len(text); counts calls; can fail after a number of batches."""

    name = "counting"
    Params = CountingParams
    FEATURES = {"chars": "scaled character count", "nan_for_empty": "1/len(text), NaN for empty text"}

    def __init__(self, params=None, fail_after=None, **kw):
        super().__init__(params, **kw)
        self.calls, self.pairs_seen, self.fail_after = 0, 0, fail_after

    def compute(self, pairs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.pairs_seen += len(pairs)
        n = pairs["text"].str.len().to_numpy(float)
        with np.errstate(divide="ignore"):
            inv = np.where(n > 0, 1 / np.where(n > 0, n, 1), np.nan)
        return {"chars": self.params.scale * n, "nan_for_empty": inv}


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "f.duckdb")
    s.put_documents(CORPUS)
    s.put_queries(QUERIES)
    s.put_candidates(RUN)
    s.put_qrels(QRELS)
    yield s
    s.close()


def test_pairs_join_query_and_document_fields(store):
    pairs = store.pairs()
    assert pairs[["qid", "docno", "rank"]].values.tolist() == [["q1", "a", 1], ["q1", "b", 2], ["q1", "c", 3],
                                                              ["q2", "c", 1], ["q2", "d", 2]]
    assert pairs.loc[0, "query"] == "alpha beta" and pairs.loc[0, "text"] == "one two three"
    assert pairs.loc[0, "timestamp"] == pd.Timestamp("2000-01-01", tz="UTC") and pd.isna(pairs.loc[1, "timestamp"])
    assert len(store.pairs(["q2"])) == 2 and len(store.pairs(top_n=1)) == 2


def test_other_retrievers_become_rank_and_score_columns(store):
    store.put_candidates(pd.DataFrame({"qid": ["q1"], "docno": ["b"], "rank": [7], "score": [3.5], "retriever": "bm25"}))
    pairs = store.pairs().set_index("docno")
    assert pairs.loc["b", "rank_bm25"] == 7 and pairs.loc["b", "score_bm25"] == 3.5
    assert pairs["rank_bm25"].isna().sum() == 4


def test_build_computes_once_and_second_run_makes_no_call(store):
    ext = CountingExtractor()
    reports = build(store, store.pairs(), [ext], progress=False)
    assert (reports[0].computed, reports[0].cached, ext.pairs_seen) == (5, 0, 5)
    again = CountingExtractor()
    reports = build(store, store.pairs(), [again], progress=False)
    assert (reports[0].computed, reports[0].cached, again.calls) == (0, 5, 0)


def test_values_and_nan_stay_nan(store):
    build(store, store.pairs(), [CountingExtractor()], progress=False)
    ext = CountingExtractor()
    data = store.matrix(ext.specs)
    assert data.feature_names == ["chars", "nan_for_empty"]
    np.testing.assert_array_equal(data.X[:, 0], [13, 9, 3, 3, 0])
    assert np.isnan(data.X[4, 1]) and data.X[0, 1] == pytest.approx(1 / 13)
    assert store.nan_counts(ext.specs) == {"chars": 0, "nan_for_empty": 1}
    raw = store.sql("SELECT count(*) AS n FROM features WHERE isnan(value)")["n"][0]
    assert raw == 1  # stored as NaN, not NULL and not 0


def test_killed_build_resumes_and_loses_nothing(store):
    dying = CountingExtractor(fail_after=2)  # batch_size 2: 4 of the 5 pairs are committed
    with pytest.raises(KeyboardInterrupt):
        build(store, store.pairs(), [dying], progress=False)
    assert store.sql("SELECT count(*) AS n FROM features WHERE feature = 'chars'")["n"][0] == 4
    resumed = CountingExtractor()
    report = build(store, store.pairs(), [resumed], progress=False)[0]
    assert (report.computed, report.cached, resumed.pairs_seen) == (1, 4, 1)
    assert store.nan_counts(resumed.specs)["chars"] == 0


def test_changed_parameter_recomputes_only_that_feature(store):
    length = LengthExtractor()
    build(store, store.pairs(), [CountingExtractor(), length], progress=False)
    scaled, length2 = CountingExtractor(CountingParams(scale=2.0)), LengthExtractor()
    assert scaled.version != CountingExtractor().version
    assert CountingExtractor(CountingParams(batch_size=99)).version == CountingExtractor().version
    reports = build(store, store.pairs(), [scaled, length2], progress=False)
    assert [(r.extractor, r.computed) for r in reports] == [("counting", 5), ("length", 0)]
    assert store.matrix(scaled.specs).X[0, 0] == 26


def test_changed_document_text_recomputes_only_that_document(store):
    build(store, store.pairs(), [CountingExtractor()], progress=False)
    store.put_documents(CORPUS.assign(text=CORPUS["text"].where(CORPUS["docno"] != "c", "seven eight")))
    ext = CountingExtractor()
    report = build(store, store.pairs(), [ext], progress=False)[0]
    assert report.computed == 2 and ext.pairs_seen == 2  # doc c is a candidate of both queries
    x = store.matrix(ext.specs).X[:, 0]
    assert x.tolist() == [13, 9, 11, 11, 0]


def test_top_n_restricts_and_missing_is_nan(store):
    ext = CountingExtractor(CountingParams(top_n=1))
    report = build(store, store.pairs(), [ext], progress=False)[0]
    assert report.pairs == 2 and ext.pairs_seen == 2
    assert store.nan_counts(ext.specs)["chars"] == 3
    none = CountingExtractor(CountingParams(top_n=0))
    assert summary_table(store, [none], build(store, store.pairs(), [none], progress=False))["top_n"].tolist() == [0, 0]
    assert none.pairs_seen == 0


def test_values_from_a_larger_top_n_are_masked_to_the_current_one(store):
    wide = CountingExtractor(CountingParams(top_n=3))  # same version as top_n=2: the values are reused
    build(store, store.pairs(), [wide], progress=False)
    narrow = CountingExtractor(CountingParams(top_n=1))
    assert narrow.specs == wide.specs
    data = store.matrix(narrow.specs, top_n={"chars": 1})  # rows: q1 a b c, q2 c d
    np.testing.assert_array_equal(data.X[:, 0], [13, np.nan, np.nan, 3, np.nan])
    assert np.isfinite(data.X[:, 1]).sum() == 4  # nan_for_empty not masked; d has empty text


def test_matrix_groups_labels_and_order(store):
    build(store, store.pairs(), [LengthExtractor()], progress=False)
    data = store.matrix(LengthExtractor().specs)
    assert data.group.tolist() == [3, 2] and data.qids.tolist() == ["q1"] * 3 + ["q2"] * 2
    assert data.y.tolist() == [0, 1, 0, 0, 2] and data.docnos.tolist() == ["a", "b", "c", "c", "d"]
    assert data.feature_versions == [s.version for s in LengthExtractor().specs]


def test_provenance_cost_view_and_parquet(store, tmp_path):
    ext = CountingExtractor()
    build(store, store.pairs(), [ext], progress=False)
    prov = store.sql("SELECT * FROM provenance")
    assert set(prov["extractor"]) == {"counting"} and prov.groupby("feature")["pairs"].sum().tolist() == [5, 5]
    assert '"scale": 1.0' in prov["params"][0]
    cost = store.cost(ext.specs)
    assert cost["pairs"].tolist() == [5, 5] and (cost["seconds"] >= 0).all()
    view = store.create_view("demo", ext.specs)
    sql = store.sql(f"SELECT qid, docno, chars FROM {view} ORDER BY qid, rank")
    assert sql["chars"].tolist() == [13, 9, 3, 3, 0]
    path = store.to_parquet(tmp_path / "f.parquet", ext.specs)
    assert pd.read_parquet(path)["chars"].tolist() == [13, 9, 3, 3, 0]
    table = summary_table(store, [ext], build(store, store.pairs(), [ext], progress=False))
    assert table[["feature", "computed", "cached", "nan"]].values.tolist() == [["chars", 0, 5, 0], ["nan_for_empty", 0, 5, 1]]


class UnseenExtractor(CountingExtractor):
    """Counting, plus an "unseen" path that does extra work (as the bi-encoder encodes unseen documents)."""

    name = "counting_unseen"
    FEATURES = {"chars2": "scaled character count", "nan_for_empty2": "1/len(text), NaN for empty text"}

    def compute(self, pairs):
        out = super().compute(pairs)
        return {"chars2": out["chars"], "nan_for_empty2": out["nan_for_empty"]}

    def compute_unseen(self, pairs):
        self.unseen_pairs = getattr(self, "unseen_pairs", 0) + len(pairs)
        return self.compute(pairs)


def test_an_extractor_that_computes_more_for_unseen_documents_gets_that_cost_measured_once(store):
    plain, unseen = CountingExtractor(), UnseenExtractor()
    assert not plain.costs_more_unseen and unseen.costs_more_unseen
    build(store, store.pairs(), [plain, unseen], progress=False)
    assert unseen.unseen_pairs == 5 + 5  # a warm-up, then timed on a sample (here all 5 pairs); values not stored
    assert store.path_cost(plain.specs, "unseen") == {}
    cost = store.path_cost(unseen.specs, "unseen")
    assert set(cost) == {"chars2", "nan_for_empty2"} and all(v >= 0 for v in cost.values())
    build(store, store.pairs(), [unseen], progress=False)
    assert unseen.unseen_pairs == 10  # measured once per version
    table = summary_table(store, [plain, unseen], build(store, store.pairs(), [plain, unseen], progress=False))
    assert table["unseen_s_per_1000_pairs"].isna().tolist() == [True, True, False, False]


def _open_store(path, queue):
    try:
        FeatureStore(path)
        queue.put("opened")
    except StoreLockedError as exc:
        queue.put(f"locked: {exc}")


def test_second_writer_process_gets_a_clear_error(store):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_open_store, args=(str(store.path), queue))
    proc.start()
    proc.join(60)
    message = queue.get(timeout=5)
    assert message.startswith("locked: feature store") and f"open for writing in process {os.getpid()}" in message


def _hold_read_only(path, ready, done):
    with FeatureStore(path, read_only=True):
        ready.set()
        done.wait(60)


def test_a_reader_holding_the_store_is_named_as_a_reader(store):
    store.close()
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_read_only, args=(str(store.path), ready, done))
    proc.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreLockedError, match=rf"open read-only in process {proc.pid}; it cannot be written"):
            FeatureStore(store.path)
    finally:
        done.set()
        proc.join(60)


@pytest.mark.parametrize("content", [b"not a database\n", "truncated"])
def test_a_corrupt_store_says_it_can_be_rebuilt(store, tmp_path, content):
    store.close()
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(store.path.read_bytes()[:5000] if content == "truncated" else content)
    with pytest.raises(StoreCorruptError, match=r"cannot be read .*move it aside and rerun `fusion-ltr features"):
        FeatureStore(bad)


def test_ranking_data_sorts_by_query_once():
    data = RankingData.from_arrays(np.arange(10).reshape(5, 2), [0, 1, 0, 1, 0], ["b", "a", "b", "a", "c"])
    assert data.qids.tolist() == ["a", "a", "b", "b", "c"] and data.group.tolist() == [2, 2, 1]
    assert data.X[:, 0].tolist() == [2, 6, 0, 4, 8]  # stable within a query
    with pytest.raises(ValueError, match="groups sum to"):
        RankingData(np.zeros((2, 1)), np.zeros(2), np.array([3]), np.array(["a", "a"]), np.array(["x", "y"]), ["f"])
    assert data.subset(["c"]).X.tolist() == [[8, 9]] and data.select(["f2"]).X[:, 0].tolist() == [3, 7, 1, 5, 9]
