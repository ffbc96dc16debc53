"""The app-facing Scorer against a run built here (BM25 + packaged MiniLM, hybrid candidates).

The parity tests compare the Scorer with the offline path: features read back from the feature store
that `fusion-ltr features` built, and the order `fusion-ltr evaluate` gives with the same model.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from features import query_norm
from features.base import FeatureSpec
from features.store import FeatureStore
from ranker import Ranking, Scorer
from ranker.data import ranking_from_scores
from ranker.lambdamart import FeatureMismatchError, LambdaMART
from ranker.scorer import _root
from retrieval.data import load_beir
from tests.ranker.conftest import generated_dataset, generated_dataset_zh, run_steps

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scorer")
    folder = generated_dataset(tmp / "gen")
    config = tmp / "gen.toml"
    config.write_text(f"""
[dataset]
name = "{folder}"
[retrieval]
systems = ["bm25", "dense", "hybrid"]
k = 20
depth = 30
[features]
candidates = "hybrid"
[features.extractors.first_stage]
retrievers = ["bm25", "dense"]
[features.extractors.bm25]
[features.extractors.coverage]
[features.extractors.biencoder]
cache = "{tmp / 'emb'}"
[features.extractors.length]
[features.extractors.freshness]
reference_time = "2030-01-01"
[ranker]
guard = "warn"  # the parity tests compare the model's own order (the generated data is easy for the first stage)
normalize = ["bm25", "cosine"]  # per-query rank, z-score and gap: computed the same way offline and served
[ranker.params]
n_estimators = 40
min_data_in_leaf = 5
num_leaves = 7
[run]
dir = "{tmp / 'run'}"
cache = "{tmp / 'emb'}"
""")
    run_steps(config)
    return tmp / "run", folder


def offline(run_dir, qid, retriever="hybrid"):
    """Features from the store and the model's order, the way `fusion-ltr evaluate` computes them."""
    model = LambdaMART.load(run_dir / "model")
    versions = {f["name"]: f["version"] for f in model.manifest_["features"]}
    stored = [FeatureSpec(n, versions[n]) for n in query_norm.raw_names(versions)]  # the sources are features too
    with FeatureStore(run_dir / "features.duckdb", read_only=True) as store:
        data = query_norm.add(store.matrix(stored, [qid], retriever=retriever), list(versions))
        pairs = store.pairs([qid], retriever=retriever)
    order = ranking_from_scores(data, model.predict(data), "m")["docno"].tolist()
    return data, pairs, order


def assert_same_features(results, data):
    row = {d: i for i, d in enumerate(data.docnos)}
    assert sorted(r.id for r in results) == sorted(data.docnos)
    for r in results:
        expected = data.X[row[r.id]]
        got = np.array([r.features[n] for n in data.feature_names])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=f"doc {r.id}")


@pytest.mark.parametrize("qid", ["q22", "q27", "q31"])
def test_search_reproduces_offline_candidates_features_and_order(run, qid):
    run_dir, folder = run
    query = load_beir(str(folder)).queries.set_index("qid").loc[qid, "query"]
    data, _, order = offline(run_dir, qid)
    results = Scorer.load(run_dir).search(query, k=100, explain=True)
    assert_same_features(results, data)
    assert [r.id for r in results] == order
    assert [r.rank for r in results] == list(range(1, len(results) + 1))


def test_rerank_of_app_docs_matches_the_offline_path(run):
    run_dir, folder = run
    query = load_beir(str(folder)).queries.set_index("qid").loc["q25", "query"]
    data, pairs, order = offline(run_dir, "q25")
    def given(value):  # a retriever that did not return the doc: None ("not given"; a NaN is refused)
        return None if value != value else value

    docs = [{"id": p.docno, "text": p.text, "title": p.title, "rank": int(p.rank), "score": given(p.score),
             "timestamp": None if p.timestamp is None or p.timestamp != p.timestamp else p.timestamp.isoformat(),
             "rank_bm25": given(p.rank_bm25), "score_bm25": given(p.score_bm25), "rank_dense": given(p.rank_dense),
             "score_dense": given(p.score_dense)}
            for p in pairs.itertuples()]
    results = Scorer.load(run_dir).rerank(query, docs, explain=True)
    assert_same_features(results, data)
    assert [r.id for r in results] == order
    first = results[0]
    assert set(first.contributions) == set(data.feature_names) | {"bias"}
    assert math.isclose(sum(first.contributions.values()), first.score, rel_tol=1e-6, abs_tol=1e-6)


@pytest.fixture(scope="module")
def run_zh(tmp_path_factory):
    """A Chinese run: language = "zh" (jieba words for BM25, coverage and lengths), BM25 candidates."""
    pytest.importorskip("jieba")
    tmp = tmp_path_factory.mktemp("scorer_zh")
    folder = generated_dataset_zh(tmp / "gen")
    config = tmp / "gen.toml"
    config.write_text(f"""
[dataset]
name = "{folder}"
language = "zh"
[retrieval]
systems = ["bm25"]
k = 20
depth = 20
[features]
candidates = "bm25"
[features.extractors.first_stage]
retrievers = []
[features.extractors.bm25]
[features.extractors.coverage]
[features.extractors.length]
[ranker]
guard = "warn"
valid_fraction = 0.0
[ranker.params]
n_estimators = 30
min_data_in_leaf = 5
num_leaves = 7
early_stopping_rounds = 0
[run]
dir = "{tmp / 'run'}"
""")
    run_steps(config)
    return tmp / "run", folder


@pytest.mark.parametrize("qid", ["q18", "q21", "q25"])
def test_search_of_a_chinese_run_reproduces_the_offline_features_and_order(run_zh, qid):
    run_dir, folder = run_zh
    query = load_beir(str(folder)).queries.set_index("qid").loc[qid, "query"]
    data, _, order = offline(run_dir, qid, retriever="bm25")
    scorer = Scorer.load(run_dir)
    results = scorer.search(query, k=100, explain=True)
    assert_same_features(results, data)
    assert [r.id for r in results] == order
    assert results[0].id == f"rel{qid[1:]}"  # the topic's own passage: jieba's words matched it
    by_id = {r.id: r for r in results}
    assert by_id[f"rel{qid[1:]}"].features["coverage"] > 0.5  # most of the query's words are in it
    # passages given as strings: the same analysis, so the same BM25 and coverage as the stored rows
    texts = load_beir(str(folder)).corpus.set_index("docno")["text"]
    given = scorer.features(query, [texts[d] for d in data.docnos])
    for name in ("bm25", "coverage", "doc_len", "query_len"):
        np.testing.assert_allclose(given[name].to_numpy(), data.X[:, data.feature_names.index(name)], rtol=1e-9)


def test_rerank_strings_orders_them_and_times_each_extractor(run):
    run_dir, _ = run
    scorer = Scorer.load(run_dir)
    docs = [f"{w} filler words here" for w in ("kite", "violin", "coffee", "bean", "roast", "owl", "pasta",
                                               "coffee bean roast", "tea", "jazz")]
    results = scorer.rerank("coffee bean roast", docs)
    assert isinstance(results, Ranking) and len(results) == 10
    feats = scorer.features("coffee bean roast", docs)  # rows in input order
    expected = dict(zip(feats.index, scorer.model.last.predict(feats.to_numpy())))
    assert {r.id: r.score for r in results} == pytest.approx(expected)
    assert {r.id: r.text for r in results} == {str(i): d for i, d in enumerate(docs)}
    assert sorted(r.original_rank for r in results) == list(range(1, 11))
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert results[0].features is None  # explain=False
    assert set(scorer.features_by_extractor) <= set(results.timing)
    assert {"ranker", "total"} <= set(results.timing) and results.timing["total"] > 0

    top = scorer.rerank("coffee bean roast", docs, top_k=3)
    assert [r.id for r in top] == [r.id for r in results[:3]]
    cut = results[4].score
    kept = scorer.rerank("coffee bean roast", docs, min_score=cut)
    assert [r.id for r in kept] == [r.id for r in results if r.score >= cut]
    assert scorer.rerank("coffee bean roast", []) == []


def test_bad_docs_are_refused_with_the_doc_named(run):
    scorer = Scorer.load(run[0])
    with pytest.raises(ValueError, match=r"doc 'b' .*non-empty 'text'.*keys: \['id', 'txt'\]"):
        scorer.rerank("q", [{"id": "a", "text": "fine"}, {"id": "b", "txt": "typo"}])
    with pytest.raises(ValueError, match=r"doc 'a': timestamp 'yesterday' is not a date"):
        scorer.rerank("q", [{"id": "a", "text": "x", "timestamp": "yesterday"}])
    with pytest.raises(ValueError, match=r"duplicate id\(s\) \['a'\]"):
        scorer.rerank("q", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(ValueError, match="query: expected a non-empty string"):
        scorer.rerank("  ", ["x"])


def test_timestamps_feed_the_freshness_features(run):
    scorer = Scorer.load(run[0])
    out = scorer.features("q", [{"id": "old", "text": "a", "timestamp": "2020-01-01"},
                                {"id": "new", "text": "a", "timestamp": "2029-01-01T00:00:00Z"},
                                {"id": "unix", "text": "a", "timestamp": 1861920000},  # 2029-01-01 UTC
                                {"id": "none", "text": "a"}])
    assert out.loc["old", "age_days"] == (np.datetime64("2030-01-01") - np.datetime64("2020-01-01")).astype(int)
    assert out.loc["new", "age_days"] == 365 and out.loc["unix", "age_days"] == 365
    assert np.isnan(out.loc["none", "age_days"]) and out.loc["none", "has_timestamp"] == 0


def test_a_changed_feature_definition_refuses_to_load(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run[0] / "model", copy / "model")
    manifest = json.loads((copy / "model" / "manifest.json").read_text())
    manifest["extractors"]["bm25"] = {"k1": 1.5}
    (copy / "model" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureMismatchError, match=r"version changed \(bm25: trained on"):
        Scorer.load(copy)


def test_search_needs_a_retrieval_index(run, tmp_path):
    shutil.copytree(run[0] / "model", tmp_path / "run" / "model")
    with pytest.raises(FileNotFoundError, match="no retrieval index"):
        Scorer.load(tmp_path / "run").search("coffee")


def test_root_is_the_run_folder_minus_its_configured_path(tmp_path):
    run_dir = tmp_path / "project" / "runs" / "x"
    run_dir.mkdir(parents=True)
    assert _root(run_dir, {"run_dir": "runs/x", "workdir": "/elsewhere"}) == (tmp_path / "project").resolve()
    assert _root(run_dir, {"run_dir": "other/y", "workdir": "/elsewhere"}) == Path("/elsewhere")


def test_plain_strings_warn_when_the_model_needs_first_stage_lists(run):
    scorer = Scorer.load(run[0])  # learned from rank_bm25, score_dense, ... of its own lists
    with pytest.warns(UserWarning, match=r"first-stage features \['fs_score', 'rank_bm25'"):
        scorer.rerank("coffee", ["a", "b"])


def test_a_model_trained_with_reference_time_now_serves_the_next_day(generated, monkeypatch):
    import pandas as pd

    import features.freshness as freshness

    config, run_dir = generated
    config.write_text(config.read_text().replace("[features.extractors.length]\n",
                                                 "[features.extractors.length]\n[features.extractors.freshness]\n"))
    day = pd.Timestamp("2031-03-01", tz="UTC")
    monkeypatch.setattr(freshness, "today", lambda: day)
    run_steps(config)
    saved = json.loads((run_dir / "model" / "manifest.json").read_text())["extractors"]["freshness"]
    assert saved["reference_time"] == day.isoformat()  # "now" resolved at training time and kept

    monkeypatch.setattr(freshness, "today", lambda: day + pd.Timedelta(days=1))
    scorer = Scorer.load(run_dir)  # refused before: the version held the day it was loaded
    out = scorer.features("q", [{"id": "a", "text": "x", "timestamp": "2031-02-01"}])
    assert out.loc["a", "age_days"] == 28  # ages at the training day, as the model learned them
    assert freshness.FreshnessExtractor().reference == day + pd.Timedelta(days=1)  # a new config: today


def test_documents_search_and_rerank_take_the_same_keywords(run):
    from ranker import Document

    run_dir, _ = run
    scorer = Scorer.load(run_dir)
    plain = scorer.rerank("coffee bean roast", [{"id": "a", "text": "coffee bean roast", "timestamp": "2020-01-01"},
                                                {"id": "b", "text": "owl night"}], top_k=1)
    typed = scorer.rerank("coffee bean roast", [Document("coffee bean roast", id="a", timestamp="2020-01-01"),
                                                Document("owl night", id="b")], top_k=1)
    assert [(r.id, r.score) for r in typed] == [(r.id, r.score) for r in plain] and len(typed) == 1
    assert len(scorer.search("coffee bean roast", top_k=3)) == 3
    with pytest.warns(DeprecationWarning, match="top_k"):
        assert len(scorer.search("coffee bean roast", k=2)) == 2


def test_normalised_features_need_their_source_in_ranker_normalize(run):
    import dataclasses

    from ranker.config import load_config
    from ranker.run import Run
    from retrieval.errors import UsageError

    cfg = load_config(run[0].parent / "gen.toml")
    fs = Run(cfg, log=lambda *a: None).feature_set
    assert {"bm25_qrank", "bm25_qz", "bm25_qgap", "cosine_qgap"} <= set(fs.names)
    assert fs.extractor_of["cosine_qgap"] == "biencoder" and fs.cost["cosine_qgap"] == fs.cost["cosine"]

    def feature_set(**ranker):
        return Run(dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, **ranker)), log=lambda *a: None).feature_set

    with pytest.raises(UsageError, match=r"ranker.features names \['coverage_qrank'\].*needs its source in ranker.normalize"):
        feature_set(features=("bm25", "coverage_qrank"))
    with pytest.raises(UsageError, match=r"ranker.normalize names \['nope'\]"):
        feature_set(normalize=("nope",))
    chosen = feature_set(features=("bm25_qrank",))
    assert chosen.names == ["bm25_qrank"] and [s.name for s in chosen.raw_specs] == ["bm25"]


def test_a_chinese_model_ranks_text_its_analyzer_does_not_expect(run_zh):
    scorer = Scorer.load(run_zh[0])
    docs = ["😀😀😀", "Hello world, plain English.", "，。！", "火山岩浆喷发", "Вулкан извергается"]
    results = scorer.rerank("火山岩浆喷发的情况", docs, explain=True)
    assert sorted(r.text for r in results) == sorted(docs)
    for r in results:
        assert np.isfinite(r.score)
        assert r.features["bm25"] >= 0 and (r.features["bm25"] > 0) == (r.text == "火山岩浆喷发")
    emoji = next(r for r in results if r.text == "😀😀😀")
    assert emoji.features["doc_len"] == 0 and emoji.features["coverage"] == 0
    # a query with no term left: every document gets BM25 0 and coverage NaN, and the list is still ranked
    empty = scorer.rerank("的", docs, explain=True)
    assert len(empty) == 5 and all(r.features["bm25"] == 0 and math.isnan(r.features["coverage"]) for r in empty)
