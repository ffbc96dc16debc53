"""The LLM grade feature and its OpenAI-compatible endpoint client, against a small local server."""

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from features.base import create
from features.llm_client import ChatEndpoint, EndpointError, parse_choice
from features.llm_grade import expected_grade
from features.store import FeatureStore
from features.build import build
from retrieval.errors import UsageError


class Server:
    """An OpenAI-compatible /v1/chat/completions on loopback. Its answer to a grading prompt: the grade
    digits' log-probabilities from the number of query words the document contains (``logprobs`` maps a
    count to the four digits' probabilities); ``fail`` answers the first N requests with ``status``;
    ``delay`` sleeps that long before answering; ``requests`` keeps each request's body and headers."""

    def __init__(self):
        self.fail, self.status, self.delay, self.with_logprobs = 0, 503, 0.0, True
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if server.delay:
                    import time

                    time.sleep(server.delay)
                if server.fail > 0:
                    server.fail -= 1
                    return self.answer(server.status, {"error": {"message": "busy"}})
                if self.path != "/v1/chat/completions":
                    return self.answer(404, {"error": {"message": f"no route {self.path}"}})
                if body.get("model") != "judge-1":
                    return self.answer(400, {"error": {"message": f"model {body.get('model')!r} not served"}})
                user = body["messages"][-1]["content"]
                query = re.findall(r"\w+", user.split("Query: ")[1].split("\n")[0].lower())
                document = re.findall(r"\w+", user.split("Document: ")[1].split("\n\nGrade")[0].lower())
                probs = server.probabilities(sum(w in document for w in query))
                top = [{"token": str(g), "logprob": math.log(p)} for g, p in enumerate(probs) if p > 0]
                top.append({"token": " the", "logprob": math.log(0.01)})  # not a digit: ignored
                best = str(int(np.argmax(probs)))
                choice = {"index": 0, "message": {"role": "assistant", "content": best}, "finish_reason": "length"}
                if server.with_logprobs:
                    choice["logprobs"] = {"content": [{"token": best, "logprob": math.log(max(probs)),
                                                       "top_logprobs": top}]}
                self.answer(200, {"id": "x", "object": "chat.completion", "choices": [choice],
                                  "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 1}})

            def answer(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def probabilities(overlap: int) -> list[float]:
        return {0: [0.7, 0.2, 0.1, 0.0], 1: [0.1, 0.5, 0.3, 0.1], 2: [0.0, 0.1, 0.3, 0.6]}[min(overlap, 2)]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


PAIRS = pd.DataFrame({"qid": ["q1", "q1", "q2"], "query": ["statin cholesterol", "statin cholesterol", "coffee sleep"],
                      "docno": ["d1", "d2", "d3"], "title": ["", "", ""], "rank": [1, 2, 1], "score": [1.0, 0.5, 1.0],
                      "text": ["Statin therapy lowers cholesterol.", "Statin use in the elderly.", "Exercise and insulin."]})


def test_expected_grade_is_the_mean_grade_under_the_digits_probabilities_renormalised():
    assert expected_grade({"0": math.log(0.7), "1": math.log(0.2), "2": math.log(0.1)}) == pytest.approx(0.4)
    # renormalised over the digits present; other tokens, spaces and -inf ignored
    assert expected_grade({" 3": math.log(0.3), "2": math.log(0.1), "the": 0.0, "1": -math.inf}) == pytest.approx(2.75)
    assert math.isnan(expected_grade({"yes": 0.0}))


def test_endpoint_grades_are_the_expected_grades_of_the_servers_probabilities(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret")
    ext = create("llm_grade", {"backend": "endpoint", "base_url": server.url, "model": "judge-1",
                               "api_key_env": "JUDGE_KEY", "max_concurrency": 2})
    values = ext.compute(PAIRS)["llm_grade"]
    # d1 holds both query words: 0.1*1 + 0.3*2 + 0.6*3; d2 one: 0.5 + 0.6 + 0.3; d3 none: 0.2 + 0.2
    assert values.tolist() == pytest.approx([2.5, 1.4, 0.4])
    assert len(server.requests) == 3 and {r["auth"] for r in server.requests} == {"Bearer secret"}
    body = server.requests[0]["body"]
    assert body["max_tokens"] == 1 and body["temperature"] == 0.0 and body["logprobs"] and body["top_logprobs"] == 20
    assert ext.client.usage.requests == 3 and ext.client.usage.completion_tokens == 3 and ext.client.usage.retries == 0
    assert "3 requests (0 retries, 0 failed)" in ext.client.usage.line()


def test_an_answer_without_logprobs_gives_the_digit_it_answered(server):
    server.with_logprobs = False
    ext = create("llm_grade", {"backend": "endpoint", "base_url": server.url, "model": "judge-1"})
    assert ext.compute(PAIRS)["llm_grade"].tolist() == [3.0, 1.0, 0.0]


def test_busy_answers_are_retried_with_backoff_and_counted(server):
    server.fail = 2  # two 503s, then answers
    client = ChatEndpoint(server.url, "judge-1", retries=3, backoff_s=0.01, max_concurrency=1)
    ext = create("llm_grade", {"backend": "endpoint", "base_url": server.url, "model": "judge-1"})
    ext._client = client
    assert ext.compute(PAIRS.iloc[:1])["llm_grade"].tolist() == pytest.approx([2.5])
    assert client.usage.retries == 2 and client.usage.requests == 1 and len(server.requests) == 3


def test_an_endpoint_that_keeps_failing_is_an_error_naming_it_after_its_retries(server):
    server.fail, server.status = 100, 500
    client = ChatEndpoint(server.url, "judge-1", retries=2, backoff_s=0.01)
    with pytest.raises(EndpointError, match=r"chat/completions did not answer after 3 tries.*HTTP 500"):
        client.complete([{"role": "user", "content": "Query: a\n\nDocument: a\n\nGrade (0-3):"}])
    assert len(server.requests) == 3 and client.usage.failures == 1


def test_a_timeout_is_retried_then_named(server):
    server.delay = 0.5
    client = ChatEndpoint(server.url, "judge-1", timeout_s=0.1, retries=1, backoff_s=0.01)
    with pytest.raises(EndpointError, match=r"after 2 tries \(timeout 0.1 s\).*Timeout"):
        client.complete([{"role": "user", "content": "Query: a\n\nDocument: a\n\nGrade (0-3):"}])


def test_a_refused_request_is_not_retried_and_the_servers_message_is_raised(server):
    client = ChatEndpoint(server.url, "other-model", retries=3, backoff_s=0.01)
    with pytest.raises(EndpointError, match=r"HTTP 400.*'other-model' not served"):
        client.complete([{"role": "user", "content": "Query: a\n\nDocument: a\n\nGrade (0-3):"}])
    assert len(server.requests) == 1


def test_bad_endpoint_settings_are_refused_by_name():
    with pytest.raises(UsageError, match="needs base_url"):
        create("llm_grade", {"backend": "endpoint"})
    with pytest.raises(UsageError, match="expected an http"):
        ChatEndpoint("localhost:8000", "m")
    with pytest.raises(IndexError):
        parse_choice({"choices": []})


def test_an_answer_that_is_no_chat_completion_is_named(server):
    client = ChatEndpoint(server.url.removesuffix("/v1"), "judge-1", retries=0)  # POST /chat/completions: a 404
    with pytest.raises(EndpointError, match="HTTP 404.*no route /chat/completions"):
        client.complete([{"role": "user", "content": "x"}])


def test_the_feature_is_stored_once_and_its_version_ignores_how_it_is_asked(server, tmp_path):
    ext = create("llm_grade", {"backend": "endpoint", "base_url": server.url, "model": "judge-1"})
    patient = create("llm_grade", {"backend": "endpoint", "base_url": server.url, "model": "judge-1",
                                   "timeout_s": 300.0, "retries": 9, "max_concurrency": 1})
    other = create("llm_grade", {"backend": "endpoint", "base_url": server.url, "model": "judge-2"})
    assert ext.version == patient.version != other.version
    with FeatureStore(tmp_path / "f.duckdb") as store:
        store.put_documents(PAIRS[["docno", "title", "text"]])
        store.put_queries(PAIRS[["qid", "query"]].drop_duplicates())
        store.put_candidates(PAIRS[["qid", "docno", "rank", "score"]].assign(retriever="bm25"))
        pairs = store.pairs(retriever="bm25")
        build(store, pairs, [ext], progress=False)
        build(store, pairs, [patient], progress=False)  # the same version: nothing asked again
        stored = store.matrix(list(ext.specs), retriever="bm25")
    assert len(server.requests) == 3
    assert dict(zip(stored.docnos, stored.X[:, 0])) == pytest.approx({"d1": 2.5, "d2": 1.4, "d3": 0.4})


def test_the_local_backend_batched_equals_one_by_one_with_the_packaged_lm():
    """The packaged SmolLM2 (the suite's LM) as a local grader: the expected grade of the digits' logits at
    the answer position, the same batched (padded) as one pair at a time, and a chat prompt."""
    from features.lm_likelihood import DEFAULT_LM

    batched = create("llm_grade", {"model": DEFAULT_LM, "model_batch_size": 3, "doc_tokens": 32})
    single = create("llm_grade", {"model": DEFAULT_LM, "model_batch_size": 1, "doc_tokens": 32})
    a, b = batched.compute(PAIRS)["llm_grade"], single.compute(PAIRS)["llm_grade"]
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert np.all((a >= 0) & (a <= 3)) and len(set(np.round(a, 6))) == 3  # graded, not tied
    ids = batched._encode("statin cholesterol", "Statin therapy lowers cholesterol.")
    text = batched._tok.decode(ids)
    assert "Query: statin cholesterol" in text and text.rstrip().endswith(("assistant", "Grade (0-3):"))
