"""Training labels from the interaction log (``[labels] source = "clicks"``): the impressions' shown
documents with their stored features, clicked or not, by click model; through the CLI."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from ranker.cli import main
from ranker.config import load_config
from ranker.run import Run
from retrieval.data import read_trec_run
from retrieval.errors import UsageError
from tests.ranker.conftest import RANKER, generated_dataset, run_steps, write_config

LABELS = """
[labels]
source = "clicks"
click_model = "{model}"
"""


def log_for(run_dir, queries):
    """One impression per training query: its BM25 top 4 shown with the relevant document moved to position
    3 (and an unknown document "ghost" last), the relevant document clicked; a second impression of q0 in
    which nothing is clicked. Times one minute apart."""
    trec = pd.concat([read_trec_run(run_dir / "retrieval" / f"bm25.{split}.trec") for split in ("train", "test")])
    events = []
    for n, q in enumerate(queries):
        top = trec[trec["qid"] == q].sort_values("rank")["docno"].tolist()
        others = [d for d in top if d != f"rel{q[1:]}"][:3]
        docs = others[:2] + [f"rel{q[1:]}"] + others[2:] + ["ghost"]
        at = f"2026-01-01T00:{n:02d}:00Z"
        events.append({"type": "impression", "id": f"i{n}", "time": at, "qid": q, "docs": docs})
        events.append({"type": "interaction", "id": f"e{n}", "impression": f"i{n}", "doc": f"rel{q[1:]}",
                       "kind": "click", "time": at.replace(":00Z", ":05Z"), "position": 3})
    events.append({"type": "impression", "id": "again", "time": "2026-01-02T00:00:00Z", "query": "unused",
                   "qid": queries[0], "docs": [f"rel{queries[0][1:]}"]})
    return events


@pytest.fixture(scope="module")
def clicks_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clicks")
    folder = generated_dataset(tmp / "gen")
    config = tmp / "gen.toml"
    write_config(config, folder, tmp / "run", extractors="[features.extractors.bm25]\n[features.extractors.coverage]\n"
                 "[features.extractors.length]", ranker=RANKER + LABELS.format(model="position"))
    run_steps(config, ("retrieve", "features"))
    queries = [f"q{i}" for i in range(22)]
    events = tmp / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in log_for(tmp / "run", queries)) + "\n")
    return config, events, queries


def test_the_click_matrix_holds_each_impressions_shown_documents_by_position(clicks_run, capsys):
    config, events, queries = clicks_run
    assert main(["events", "ingest", str(events), "--config", str(config)]) == 0
    run = Run(load_config(config), progress=False)
    m = run.matrices
    data = type(m.train).concat([m.train, m.valid])
    # 22 impressions of 5 shown documents less the unknown one, and one of 1 document; clicks on rel only
    assert len(data.group) == 23 and sorted(data.group.tolist()) == [1] + [4] * 22
    assert set(data.docnos[data.y == 1]) == {f"rel{i}" for i in range(22)} and data.y.sum() == 22
    assert (data.position[data.y == 1] == 3).all() and set(data.position.tolist()) == {1, 2, 3, 4}
    assert "ghost" not in set(data.docnos)
    # the features are the stored ones of the same (query, document)
    stored = Run(dataclasses.replace(load_config(config), labels=dataclasses.replace(
        load_config(config).labels, source="qrels")), progress=False).matrices
    ref = type(stored.train).concat([stored.train, stored.valid])
    row = {(q, d): i for i, (q, d) in enumerate(zip(ref.qids, ref.docnos))}
    for q, d, x in zip(data.qids[:8], data.docnos[:8], data.X[:8]):
        assert np.array_equal(x, ref.X[row[(q.rsplit("#", 1)[0], d)]], equal_nan=True)


def test_click_models_give_the_configured_rows_and_training_runs_through_the_cli(clicks_run):
    config, events, _ = clicks_run
    main(["events", "ingest", str(events), "--config", str(config)])  # idempotent: stored once whatever ran before
    pbm = dataclasses.replace(load_config(config), labels=dataclasses.replace(load_config(config).labels,
                                                                              click_model="pbm"))
    m = Run(pbm, progress=False).matrices
    data = type(m.train).concat([m.train, m.valid])
    assert data.position is None and len(data.y) == len(set(zip(data.qids, data.docnos))) == 22 * 4
    label = dict(zip(data.docnos, data.y))  # a document clicked each time shown: the highest grade
    assert {int(label[f"rel{i}"]) for i in range(1, 22)} == {4}
    assert max(v for d, v in label.items() if not d.startswith("rel")) == 0
    until = dataclasses.replace(load_config(config), labels=dataclasses.replace(load_config(config).labels,
                                                                                until="2026-01-01T00:10:00Z"))
    m = Run(until, progress=False).matrices
    assert len(m.train.group) + (len(m.valid.group) if m.valid is not None else 0) == 10  # impressions before 00:10
    window = dataclasses.replace(until, labels=dataclasses.replace(until.labels, since="2026-01-01T00:04:00"))
    m = Run(window, progress=False).matrices  # 00:04 (a time without a zone: UTC) up to 00:10
    assert len(m.train.group) + (len(m.valid.group) if m.valid is not None else 0) == 6
    before = dataclasses.replace(until, labels=dataclasses.replace(until.labels, until="2025-01-01T00:00:00Z"))
    with pytest.raises(UsageError, match="no impression of these .* training queries before 2025"):
        Run(before, progress=False).matrices
    run_steps(config, ("train", "evaluate"))
    result = json.loads((config.parent / "run" / "eval" / "test" / "ranker.json").read_text())
    assert "lambdamart" in result["means"]  # evaluated on the test split's judgements
    # the log showed 4 candidates (and "ghost"): the model reorders the first stage's top 4, the rest below
    manifest = json.loads((config.parent / "run" / "model" / "manifest.json").read_text())
    assert manifest["rerank_depth"] == 4
    first = read_trec_run(config.parent / "run" / "retrieval" / "bm25.test.trec")
    served = read_trec_run(config.parent / "run" / "eval" / "test" / "runs" / "lambdamart.trec")
    for q, part in served.groupby("qid"):
        order = part.sort_values("rank")["docno"].tolist()
        fs = first[first["qid"] == q].sort_values("rank")["docno"].tolist()
        assert set(order[:4]) == set(fs[:4]) and order[4:] == fs[4:]


def test_a_grown_log_changes_the_train_steps_key(clicks_run, tmp_path):
    from ranker.steps import BY_NAME

    config, events, _ = clicks_run
    main(["events", "ingest", str(events), "--config", str(config)])
    run = Run(load_config(config), progress=False)
    before = BY_NAME["train"].key(run, {})
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"type": "impression", "id": "late", "time": "2026-02-01T00:00:00Z", "qid": "q3",
                                "docs": ["rel3"]}) + "\n")
    assert main(["events", "ingest", str(more), "--config", str(config)]) == 0
    assert BY_NAME["train"].key(run, {}) != before


def test_clicks_are_refused_where_they_cannot_train(tmp_path):
    folder = generated_dataset(tmp_path / "gen")
    config = tmp_path / "c.toml"
    write_config(config, folder, tmp_path / "run", extractors="[features.extractors.bm25]",
                 ranker="[ranker]\ncv_folds = 3\n" + LABELS.format(model="raw"))
    with pytest.raises(Exception, match="labels.source = \"clicks\" trains a plain model"):
        load_config(config)
    write_config(config, folder, tmp_path / "run", extractors="[features.extractors.bm25]",
                 ranker=LABELS.format(model="raw") + 'until = "yesterday"')
    with pytest.raises(Exception, match="labels.until: expected an ISO 8601 time"):
        load_config(config)


# ------------------------------------------------------------------------------- feedback features
@pytest.fixture(scope="module")
def feedback_run(tmp_path_factory):
    """The clicks run with the feedback features, its log (also impressions of the test queries, as an app
    logs every query) ingested before the features are built."""
    tmp = tmp_path_factory.mktemp("feedback")
    folder = generated_dataset(tmp / "gen")
    config = tmp / "gen.toml"
    write_config(config, folder, tmp / "run", extractors="[features.extractors.bm25]\n[features.extractors.length]\n"
                 "[features.extractors.feedback]\nprior_strength = 2.0", ranker=RANKER.replace("[ranker]\n", "[ranker]\nguard = \"warn\"\nhide_history = 0.0\n")
                 + LABELS.format(model="position"))
    run_steps(config, ("retrieve",))
    queries = [f"q{i}" for i in range(32)]
    events = tmp / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in log_for(tmp / "run", queries)) + "\n")
    assert main(["events", "ingest", str(events), "--config", str(config)]) == 0
    run_steps(config, ("features",))
    return config, tmp


def test_training_from_clicks_reads_the_feedback_features_at_each_impressions_time(feedback_run):
    from features.feedback import FeedbackExtractor
    from features.store import FeatureStore

    config, tmp = feedback_run
    run = Run(load_config(config), progress=False)
    m = run.matrices
    data = type(m.train).concat([m.train, m.valid])
    ext = FeedbackExtractor(prior_strength=2.0).load_state(run.layout.extractor_state)
    col = data.feature_names.index("shown_doc")
    # q0's first impression (00:00) comes before any: nothing shown before it; its second (next day) comes
    # after the first impression showed rel0
    first = [i for i, (q, d) in enumerate(zip(data.qids, data.docnos)) if q == "q0#000000000" and d == "rel0"]
    again = [i for i, q in enumerate(data.qids) if q.startswith("q0#") and q != "q0#000000000"]
    assert data.X[first, col].tolist() == [0.0] and data.X[again, col].tolist() == [pytest.approx(np.log(2))]
    doc_rate = data.X[again, data.feature_names.index("ctr_doc")]  # rel0 was shown for q0 only so far
    assert data.X[again, data.feature_names.index("ctr_query_doc")] == pytest.approx(doc_rate)
    # clicked in i0; the prior: 32 clicks on the 32 x 5 documents shown before (the log counts "ghost" too)
    assert doc_rate == pytest.approx((1 + 2.0 * (32 + 1) / (32 * 5 + 2)) / (1 + 2.0))
    # the stored values (what evaluation and serving read) are those at the snapshot's reference time
    with FeatureStore(run.layout.store, read_only=True) as store:
        pairs = store.pairs(["q0"], retriever="bm25")
        stored = store.matrix(run.feature_set.raw_specs, ["q0"], retriever="bm25")
    at_ref = ext.compute(pairs)["shown_doc"]
    assert at_ref[list(pairs["docno"]).index("rel0")] == pytest.approx(np.log(3))  # its two impressions
    assert stored.X[list(stored.docnos).index("rel0"), stored.feature_names.index("shown_doc")] == \
        pytest.approx(np.log(3))


@pytest.mark.parametrize("source", ["clicks", "qrels"])
def test_hide_history_trains_on_some_queries_as_if_never_seen(feedback_run, source):
    config, tmp = feedback_run
    base = load_config(config)
    cfg = dataclasses.replace(base, labels=dataclasses.replace(base.labels, source=source))
    def rows(share):
        m = Run(dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, hide_history=share)),
                progress=False).matrices
        return type(m.train).concat([m.train, m.valid])

    kept, new = rows(0.0), rows(1.0)
    names = kept.feature_names
    assert np.array_equal(kept.y, new.y) and list(kept.qids) == list(new.qids)
    assert np.array_equal(kept.X[:, names.index("bm25")], new.X[:, names.index("bm25")])
    # the documents' history less the query's own events (here each document is shown for its query only)
    shown = names.index("shown_doc")
    assert (new.X[:, shown] <= kept.X[:, shown]).all() and (new.X[:, shown] < kept.X[:, shown]).any()
    assert (kept.X[:, names.index("shown_query_doc")] > 0).any()
    assert (new.X[:, names.index("shown_query_doc")] == 0).all()  # no query has a history
    # a new query's pair rate is the log's own, the same for every document of the moment
    rate = new.X[:, names.index("ctr_query_doc")]
    assert np.allclose(rate[new.qids == new.qids[0]], rate[0])
    some = Run(dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, hide_history=0.5)), progress=False)
    chosen = some.new_history_queries([f"q{i}" for i in range(22)])
    assert 0 < len(chosen) < 22 and chosen == some.new_history_queries([f"q{i}" for i in reversed(range(22))])


def test_a_log_grown_after_the_features_were_built_is_refused_for_training(feedback_run, tmp_path):
    import shutil

    config, tmp = feedback_run
    copy = tmp_path / "run"
    shutil.copytree(tmp / "run", copy)
    cfg = load_config(config)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(copy)))
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"type": "impression", "id": "late", "time": "2026-02-01T00:00:00Z", "qid": "q3",
                                "docs": ["rel3"]}) + "\n")
    from features.events import ingest

    ingest(Run(cfg, progress=False).layout.store, [more], log=lambda *a: None)
    with pytest.raises(UsageError, match="interaction log changed since `fusion-ltr features`"):
        Run(cfg, progress=False).matrices


def test_the_scorer_and_the_service_read_the_feedback_values_training_stored(feedback_run):
    from features.store import FeatureStore
    from ranker import Scorer

    config, tmp = feedback_run
    run_steps(config, ("train",))
    run = Run(load_config(config), progress=False)
    names = ["ctr_doc", "ctr_doc_recent", "ctr_query_doc", "shown_doc", "shown_query_doc", "last_click_days"]
    scorer = Scorer.load(tmp / "run")
    with FeatureStore(run.layout.store, read_only=True) as store:
        test = store.sql("SELECT qid, query FROM queries WHERE qid IN ('q22', 'q23', 'q24')")
        varied = 0
        for qid, text in zip(test["qid"], test["query"]):
            pairs = store.pairs([qid], retriever="bm25")
            stored = store.matrix(run.feature_set.raw_specs, [qid], retriever="bm25")
            docs = [{"id": d, "text": t, "rank": int(r), "score": float(sc)}
                    for d, t, r, sc in zip(pairs["docno"], pairs["text"], pairs["rank"], pairs["score"])]
            served = {r.id: r.features for r in scorer.rerank(text, docs, explain=True)}
            for i, d in enumerate(stored.docnos):
                for n in names:
                    want = stored.X[i, stored.feature_names.index(n)]
                    assert served[d][n] == pytest.approx(want, nan_ok=True), (qid, d, n)
            varied += len({round(float(served[d]["shown_doc"]), 6) for d in served}) > 1
        assert varied  # the values differ across documents: the log is read, not only the priors
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ranker.service import create_app

    with TestClient(create_app(Scorer.load(tmp / "run"), max_wait_ms=2)) as client:
        body = client.post("/v1/rerank", json={"query": text, "documents": [d["text"] for d in docs]}).json()
    expected = scorer.rerank(text, [d["text"] for d in docs])
    assert [r["index"] for r in body["results"]] == [int(e.id) for e in expected]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(
        [e.probability if e.probability is not None else e.score for e in expected])
