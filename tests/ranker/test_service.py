"""The HTTP service on a tiny run (FastAPI's TestClient): Cohere's shape, the Scorer's answers, every bad
input's 4xx, a bug's 500 that leaves the server serving, and micro-batching across requests."""

import logging
import threading

import numpy as np
import pandas as pd
import pytest

from ranker import Scorer
from ranker.cli import main
from tests.ranker.conftest import generated_dataset, run_steps, write_config

pytest.importorskip("fastapi")
pytest.importorskip("sentence_transformers")

QUERY = "coffee bean roast"
DOCS = ["coffee beans are roasted dark", {"text": "a knight opening in chess", "id": "chess", "title": "Chess"},
        {"text": "roast coffee bean roast coffee", "id": "roast", "timestamp": "2021-03-01"},
        "tea leaves ferment slowly", {"text": "coffee and milk culture", "id": 7}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service")
    folder = generated_dataset(tmp / "gen")
    config = tmp / "gen.toml"
    write_config(config, folder, tmp / "run", extractors=f"[features.extractors.bm25]\n[features.extractors.length]\n"
                 f"[features.extractors.coverage]\n[features.extractors.biencoder]\ncache = \"{tmp / 'emb'}\"",
                 ranker="[ranker]\nguard = \"warn\"\n[ranker.params]\nn_estimators = 30\nmin_data_in_leaf = 5\n"
                        "num_leaves = 5")
    run_steps(config)
    return tmp / "run"


@pytest.fixture(scope="module")
def client(run_dir):
    from fastapi.testclient import TestClient

    from ranker.service import ServeLimits, create_app

    app = create_app(Scorer.load(run_dir), limits=ServeLimits(max_documents=8, max_chars=2000), max_wait_ms=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.app_state = app.state
        yield c


def test_rerank_has_coheres_shape_and_equals_the_scorer(client, run_dir):
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"id", "model", "results", "meta"} and body["meta"]["calibrated"] is True
    expected = Scorer.load(run_dir).rerank(QUERY, DOCS)[:3]
    ids = ["0", "chess", "roast", "3", "7"]
    assert [res["index"] for res in body["results"]] == [ids.index(e.id) for e in expected]
    assert [res["relevance_score"] for res in body["results"]] == pytest.approx([e.probability for e in expected])
    assert all(0 <= res["relevance_score"] <= 1 for res in body["results"])
    assert body["results"][0]["document"]["text"] == expected[0].text
    bare = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    assert len(bare) == len(DOCS) and "document" not in bare[0]  # Cohere's default: no documents back
    cut = expected[1].probability
    kept = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "min_score": cut}).json()["results"]
    assert [res["relevance_score"] >= cut for res in kept] == [True] * len(kept) and len(kept) >= 2


@pytest.mark.parametrize("body, status, field", [
    ({"query": "", "documents": ["a"]}, 422, "query"),
    ({"query": "q", "documents": ["a", {"id": "x"}]}, 422, "documents[1].text"),
    ({"query": "q", "documents": [{"text": "a", "timestamp": "not a date"}]}, 422, "documents[0].timestamp"),
    ({"query": "q", "documents": [{"text": "a", "id": "d"}, {"text": "b", "id": "d"}]}, 422, "documents[1].id"),
    ({"query": "q", "documents": ["a"] * 9}, 413, "documents"),
    ({"query": "q", "documents": ["a" * 1500, "b" * 600]}, 413, "documents"),
    ({"query": "q", "documents": ["a"], "top_k": 3}, 422, "top_k"),
    ({"query": "q", "documents": ["a"], "top_n": -1}, 422, "top_n"),
    ({"query": "q", "documents": "a"}, 422, "documents"),
])
def test_every_bad_input_gets_its_4xx_naming_the_field(client, body, status, field):
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"]


def test_a_bug_in_one_request_is_a_500_with_its_id_and_the_next_request_is_served(client):
    scorer = client.app_state.scorer
    bm25 = next(e for e in scorer.extractors if e.name == "bm25")
    compute = bm25.compute

    def broken(pairs):  # a bug that only this query meets
        if (pairs["query"] == "trigger the bug").any():
            raise RuntimeError("boom")
        return compute(pairs)

    bm25.compute = broken
    try:
        r = client.post("/v1/rerank", json={"query": "trigger the bug", "documents": ["a", "b"]})
        assert r.status_code == 500
        assert r.json()["error"]["request_id"] in r.json()["error"]["message"]
        assert client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    finally:
        bm25.compute = compute
    metrics = client.get("/metrics").text
    assert 'fusion_ltr_errors_total{kind="internal_error"}' in metrics
    assert 'fusion_ltr_requests_total{endpoint="/v1/rerank",status="200"}' in metrics
    assert 'fusion_ltr_part_seconds_count{part="biencoder"}' in metrics


def test_search_health_and_model(client, run_dir):
    r = client.post("/v1/search", json={"query": QUERY, "top_n": 3})
    assert r.status_code == 200
    assert [x["id"] for x in r.json()["results"]] == [x.id for x in Scorer.load(run_dir).search(QUERY, top_k=3)]
    assert client.get("/healthz").json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert "cosine" in [f["name"] for f in model["features"]] and model["calibration"]["kind"] in ("platt", "isotonic")


def test_micro_batching_computes_requests_that_arrive_together_in_one_call():
    from features.length import LengthExtractor
    from ranker.service import BatchedExtractor

    calls = []

    class Counting(LengthExtractor):
        def compute(self, pairs):
            calls.append(len(pairs))
            return super().compute(pairs)

    shared = BatchedExtractor(Counting(), max_wait_ms=300)
    frames = [pd.DataFrame({"qid": f"q{i}", "query": "a b", "docno": [f"d{i}{j}" for j in range(i + 1)],
                            "title": "", "text": ["x " * (j + 1) for j in range(i + 1)]}) for i in range(4)]
    out = [None] * 4

    def request(i):
        out[i] = shared.compute(frames[i])

    threads = [threading.Thread(target=request, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1 + 2 + 3 + 4]  # one model call for the four requests
    for i in range(4):  # each request got its own rows back
        np.testing.assert_array_equal(out[i]["doc_len"], LengthExtractor().compute(frames[i])["doc_len"])


def test_the_report_gives_the_calibration_on_test_and_thresholds_chosen_on_validation(run_dir):
    import json

    assert main(["report", "--config", str(run_dir.parent / "gen.toml"), "--no-ablation"]) == 0
    cal = json.loads((run_dir / "report" / "calibration.json").read_text())
    assert set(cal["ece_test"]) == {"before", "after"} and all(0 <= v <= 1 for v in cal["ece_test"].values())
    assert [t["target_precision"] for t in cal["thresholds"]] == [0.5, 0.7, 0.9]
    assert sum(r["n"] for r in cal["reliability"]["test"]) == 10 * 20  # 10 test queries, 20 candidates each
    assert (run_dir / "report" / "reliability.png").exists() and "after" in (run_dir / "report" / "calibration.md").read_text()


def test_serve_refuses_a_folder_without_a_model_before_listening(tmp_path, capsys):
    assert main(["serve", "--run", str(tmp_path), "--port", "0"]) == 2
    assert "no trained model" in capsys.readouterr().err


# ------------------------------------------------------------------------------ isolation and strictness
@pytest.fixture(scope="module")
def batching_client(run_dir):
    """A service whose micro-batches wait long enough that requests sent together share a model call."""
    from fastapi.testclient import TestClient

    from ranker.service import create_app

    app = create_app(Scorer.load(run_dir), max_wait_ms=150)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _together(client, bodies):
    out = [None] * len(bodies)

    def send(i):
        out[i] = client.post("/v1/rerank", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("bad_doc", [
    {"text": "coffee", "id": "intruder", "embedding": [0.1] * 384, "embedding_model": "another/model"},  # check()
    {"text": "coffee", "id": "intruder", "embedding": [0.1] * 7, "embedding_model": "all-MiniLM-L6-v2"},  # compute()
])
def test_one_clients_bad_request_in_a_batch_fails_alone(batching_client, bad_doc):
    good = {"query": QUERY, "documents": DOCS}
    alone = batching_client.post("/v1/rerank", json=good).json()["results"]
    bodies = [good] * 12 + [{"query": QUERY, "documents": DOCS[:2] + [bad_doc]}] + [good] * 12
    answers = _together(batching_client, bodies)
    bad = answers[12]
    assert bad.status_code == 422 and "intruder" in bad.json()["error"]["message"]
    for r in answers[:12] + answers[13:]:
        assert r.status_code == 200, r.text
        assert r.json()["results"] == alone  # the same answer as sent alone: nothing of the other request
    metrics = batching_client.get("/metrics").text
    sizes = [line for line in metrics.splitlines() if line.startswith('fusion_ltr_batch_pairs_count{extractor="biencoder"}')]
    assert sizes  # the bi-encoder was batched


def _raw(client, content, content_type="application/json", **headers):
    return client.post("/v1/rerank", content=content, headers={"content-type": content_type, **headers})


@pytest.mark.parametrize("content, status, field, message", [
    ('{"query": "coffee \\ud800", "documents": ["a"]}', 422, "query", "not valid Unicode"),
    ('{"query": "q", "documents": [{"text": "caf\\udfff"}]}', 422, "documents[0].text", "not valid Unicode"),
    ('{"query": "q", "documents": [{"text": "a", "timestamp": 1e400}]}', 422, "documents[0].timestamp", ""),
    ('{"query": "q", "documents": ["a"], "min_score": NaN}', 422, "min_score", ""),
    ('{"query": "q", "documents": ["a"], "min_score": Infinity}', 422, "min_score", ""),
    ('{"query": "q", "documents": [{"text": "a", "score": NaN}]}', 422, "documents[0].score", ""),
    ('{"query": "q", "documents": ["a"], "top_n": true}', 422, "top_n", ""),
    ('{"query": "q", "documents": [{"text": "a", "timestmap": "2020-01-01"}]}', 422, "documents[0].timestmap",
     "unknown key"),
    ('{"query": "q", "documents": ["a"', 422, "body", "not valid JSON"),
    ("[" * 5000 + "]" * 5000, 400, "body", "not valid JSON"),
])
def test_bad_bodies_get_the_error_shape_never_a_500(client, content, status, field, message):
    r = _raw(client, content)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and message in err["message"]


def test_a_wrong_content_type_is_named(client):
    r = _raw(client, '{"query": "q", "documents": ["a"]}', "text/plain")
    assert r.status_code == 415 and "text/plain" in r.json()["error"]["message"]
    assert 'fusion_ltr_requests_total{endpoint="/v1/rerank",status="415"}' in client.get("/metrics").text


def test_body_limits_apply_while_reading(run_dir):
    from fastapi.testclient import TestClient

    from ranker.service import ServeLimits, create_app

    app = create_app(Scorer.load(run_dir), limits=ServeLimits(max_body_bytes=200))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _raw(c, '{"query": "q", "documents": ["' + "a" * 300 + '"]}')
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"

        def chunks():  # no Content-Length: refused as the bytes pass the limit
            yield b'{"query": "q", "documents": ["'
            for _ in range(50):
                yield b"a" * 10
            yield b'"]}'
        r = c.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert _raw(c, '{"query": "coffee", "documents": ["coffee beans"]}').status_code == 200


def test_a_stalled_body_times_out():
    import asyncio

    from ranker.service import BodyGuard, ServeLimits

    sent = []

    async def app(scope, receive, send):  # pragma: no cover - never reached
        raise AssertionError("the app must not see a stalled body")

    async def on_error(scope, send, status, kind, message, field):
        sent.append((status, kind, field))

    async def stalled():
        await asyncio.sleep(3600)

    guard = BodyGuard(app, limits=ServeLimits(body_timeout_s=0.2), api_key=None, on_error=on_error)
    scope = {"type": "http", "method": "POST", "path": "/v1/rerank", "headers": []}
    asyncio.run(asyncio.wait_for(guard(scope, stalled, None), 5))
    assert sent == [(408, "timeout", "body")]


def test_the_api_key_is_required_and_compared(run_dir):
    from fastapi.testclient import TestClient

    from ranker.service import create_app

    app = create_app(Scorer.load(run_dir), api_key="s3cret")
    body = {"query": QUERY, "documents": DOCS}
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/v1/rerank", json=body).status_code == 401
        wrong = c.post("/v1/rerank", json=body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
        assert c.get("/v1/model").status_code == 401
        assert c.post("/v1/rerank", json=body, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # health checks need no key


def test_the_model_endpoint_shows_no_server_path(client, run_dir):
    text = client.get("/v1/model").text + client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).text
    assert str(run_dir.parent) not in text and str(run_dir.resolve().parent) not in text


def test_serving_beyond_loopback_without_a_key_warns(run_dir, monkeypatch, caplog, tmp_path):
    import uvicorn

    from ranker import service

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw["host"]))  # do not listen
    monkeypatch.delenv("FUSION_LTR_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="fusion_ltr.service"):
        service.serve(str(run_dir), host="0.0.0.0", port=0)
    assert "without an API key" in caplog.text and started == ["0.0.0.0"]
    caplog.clear()
    key = tmp_path / "key"
    key.write_text("k3y\n")
    with caplog.at_level(logging.WARNING, logger="fusion_ltr.service"):
        service.serve(str(run_dir), host="0.0.0.0", port=0, api_key_file=str(key))
    assert "without an API key" not in caplog.text
    assert main(["serve", "--run", str(run_dir), "--api-key-file", str(tmp_path / "absent")]) == 2


# ------------------------------------------------------------------ other rerank APIs' request bodies
# The bodies are those of each API's documentation (Cohere v1 and v2, Jina, text-embeddings-inference),
# with this run's topics as the texts.
CAPITALS = ["Carson City is the capital city of the American state of Nevada.",
            "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean.",
            "coffee bean roast: roasting coffee beans brings out their flavour.",
            "Washington, D.C. is the capital of the United States."]


def order_of(run_dir, query, docs):
    return [int(r.id) for r in Scorer.load(run_dir).rerank(query, docs)]


def test_a_cohere_v1_body_with_its_own_fields_is_answered_with_warnings(client, run_dir):
    body = {"model": "rerank-english-v3.0", "query": QUERY, "top_n": 3, "documents": CAPITALS,
            "return_documents": True, "max_chunks_per_doc": 10}
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["index"] for x in out["results"]] == order_of(run_dir, QUERY, CAPITALS)[:3]
    assert out["results"][0]["document"]["text"] == CAPITALS[out["results"][0]["index"]]
    assert out["meta"]["api_version"] == {"version": "1"}
    warnings = " ".join(out["meta"]["warnings"])
    assert "'rerank-english-v3.0' was not used" in warnings and "max_chunks_per_doc" in warnings


def test_cohere_rank_fields_make_the_text_of_structured_documents(client, run_dir):
    docs = [{"Title": "Nevada", "Content": CAPITALS[0], "Author": "a"},
            {"Title": "Coffee", "Content": CAPITALS[2], "Author": "b", "year": 2021},
            {"Title": "Capital", "Content": CAPITALS[3], "Author": "c"}]
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "rank_fields": ["Title", "Content"],
                                         "return_documents": True})
    assert r.status_code == 200, r.text
    texts = [f"{d['Title']}\n{d['Content']}" for d in docs]
    assert [x["index"] for x in r.json()["results"]] == order_of(run_dir, QUERY, texts)
    assert r.json()["results"][0]["document"]["text"] == texts[r.json()["results"][0]["index"]]
    missing = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "rank_fields": ["Body"]})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "documents[0]"
    assert "rank_fields names ['Body']" in missing.json()["error"]["message"]


def test_a_cohere_v2_body_is_answered_on_v2(client, run_dir):
    body = {"model": "rerank-v3.5", "query": QUERY, "top_n": 3, "documents": CAPITALS, "max_tokens_per_doc": 4096}
    r = client.post("/v2/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["index"] for x in out["results"]] == order_of(run_dir, QUERY, CAPITALS)[:3]
    assert set(out["results"][0]) == {"index", "relevance_score"}
    assert out["meta"]["api_version"] == {"version": "2"}
    assert any("max_tokens_per_doc" in w for w in out["meta"]["warnings"])


def test_a_jina_body_is_answered_in_its_shape(client, run_dir):
    body = {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "top_n": 2,
            "documents": CAPITALS, "return_documents": False}
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] and [x["index"] for x in out["results"]] == order_of(run_dir, QUERY, CAPITALS)[:2]
    assert all(set(x) == {"index", "relevance_score"} for x in out["results"])


def test_a_tei_body_is_answered_in_teis_shape(client, run_dir):
    body = {"query": QUERY, "texts": CAPITALS, "raw_scores": False, "return_text": True, "truncate": True,
            "truncation_direction": "Right"}
    r = client.post("/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    expected = Scorer.load(run_dir).rerank(QUERY, CAPITALS)
    assert [x["index"] for x in out] == [int(e.id) for e in expected]
    assert [x["score"] for x in out] == pytest.approx([e.probability for e in expected])
    assert out[0]["text"] == CAPITALS[out[0]["index"]]
    raw = client.post("/rerank", json={"query": QUERY, "texts": CAPITALS, "raw_scores": True}).json()
    assert [x["score"] for x in raw] == pytest.approx([e.score for e in expected]) and "text" not in raw[0]


def test_a_bad_rank_fields_request_sent_with_others_fails_alone(batching_client):
    good = {"query": QUERY, "documents": DOCS}
    alone = batching_client.post("/v1/rerank", json=good).json()["results"]
    structured = {"query": QUERY, "documents": [{"Title": "Coffee", "Content": CAPITALS[2]}], "rank_fields": ["Body"]}
    answers = _together(batching_client, [good] * 6 + [structured] + [good] * 6)
    assert answers[6].status_code == 422 and "rank_fields names ['Body']" in answers[6].json()["error"]["message"]
    assert all(r.status_code == 200 and r.json()["results"] == alone for r in answers[:6] + answers[7:])


@pytest.mark.parametrize("path, body, field", [
    ("/v1/rerank", {"query": "q", "documents": ["a"], "max_tokens": 5}, "max_tokens"),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "rerank_fields": ["text"]}, "rerank_fields"),
    ("/rerank", {"query": "q", "texts": ["a"], "documents": ["a"]}, "documents"),
    ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "Up"}, "truncation_direction"),
])
def test_keys_no_rerank_api_defines_are_still_refused(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_tracing_continues_the_callers_trace_with_a_span_per_stage_and_extractor(run_dir):
    pytest.importorskip("opentelemetry.sdk")
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ranker import tracing
    from ranker.service import create_app

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(Scorer.load(run_dir), batching=False)  # off by default: no span
    with TestClient(app) as c:
        assert c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    assert not tracing.enabled()
    try:
        app = create_app(Scorer.load(run_dir), batching=False, tracing=True)
        tracing.enable(provider)  # the test's provider in place of the global one
        trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        with TestClient(app) as c:
            r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS},
                       headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert r.status_code == 200
    finally:
        tracing.disable()
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.name == "POST /v1/rerank")
    assert f"{server.context.trace_id:032x}" == trace_id and f"{server.parent.span_id:016x}" == parent
    extractors = {s.attributes["extractor"] for s in spans if s.name == "fusion_ltr.extractor"}
    assert extractors == {e.name for e in Scorer.load(run_dir).extractors}
    assert all(s.context.trace_id == server.context.trace_id for s in spans)
    stage = next(s for s in spans if s.name == "fusion_ltr.stage")
    assert stage.parent.span_id == server.context.span_id and stage.attributes["documents"] == len(DOCS)
