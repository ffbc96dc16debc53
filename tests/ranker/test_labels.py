"""Training labels from the interaction log (``[labels] source = "clicks"``): the impressions' shown
documents with their stored features, clicked or not, by click model; through the CLI."""

import dataclasses
import json

import numpy as np
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
    trec = read_trec_run(run_dir / "retrieval" / "bm25.train.trec")
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
