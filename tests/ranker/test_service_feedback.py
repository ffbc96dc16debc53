"""The service's interaction log: every rerank and search answer logged as an impression (its id),
``POST /v1/feedback`` for interactions, exploration swaps logged as such, and nothing answered 200 lost
when a worker is killed."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from features.events import ingest
from features.store import FeatureStore
from ranker import Scorer
from tests.ranker import test_service
from tests.ranker.test_service import DOCS, QUERY

run_dir = test_service.run_dir  # the service tests' tiny run (a fixture)

pytest.importorskip("fastapi")


def events_in(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines() if line]


def client_for(run_dir, folder, **kw):
    from fastapi.testclient import TestClient

    from ranker.service import create_app

    return TestClient(create_app(Scorer.load(run_dir), log_impressions=str(folder) if folder else None, **kw),
                      raise_server_exceptions=False)


def test_answers_are_impressions_and_feedback_is_ingested_with_them(run_dir, tmp_path):
    folder = tmp_path / "log"
    with client_for(run_dir, folder) as c:
        answer = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3}).json()
        search = c.post("/v1/search", json={"query": QUERY, "top_n": 2}).json()
        ids = ["0", "chess", "roast", "3", "7"]
        first = ids[answer["results"][0]["index"]]
        fb = c.post("/v1/feedback", json={"interactions": [
            {"impression": answer["id"], "doc": first, "kind": "click", "position": 1},
            {"impression": answer["id"], "doc": first, "kind": "dwell", "value": 12.5},
            {"impression": search["id"], "doc": search["results"][1]["id"], "id": "mine"},
            {"impression": answer["id"], "doc": "not-shown"}]})
        assert fb.status_code == 200 and fb.json()["accepted"] == 4 and fb.json()["ids"][2] == "mine"
        bad = c.post("/v1/feedback", json={"interactions": [{"impression": answer["id"]}]})
        assert bad.status_code == 422 and bad.json()["error"]["field"].endswith("doc")
    logged = events_in(folder)
    impressions = {e["id"]: e for e in logged if e["type"] == "impression"}
    assert impressions[answer["id"]]["docs"] == [ids[r["index"]] for r in answer["results"]]  # as shown, top 3
    assert impressions[answer["id"]]["query"] == QUERY and impressions[answer["id"]]["explored"] is False
    assert impressions[search["id"]]["docs"] == [r["id"] for r in search["results"]]
    store = tmp_path / "features.duckdb"
    report = ingest(store, sorted(folder.glob("*.jsonl")), log=lambda *_: None)
    assert (report.impressions, report.interactions) == (2, 3)
    assert len(report.refused) == 1 and "doc: document 'not-shown' was not shown" in report.refused[0]
    with FeatureStore(store, read_only=True) as s:
        shown = s.sql(f"SELECT docno FROM impression_docs WHERE impression_id = '{answer['id']}' ORDER BY position")
    assert shown["docno"].tolist() == impressions[answer["id"]]["docs"]


def test_feedback_needs_the_log_and_exploration_swaps_two_adjacent_results(run_dir, tmp_path):
    with client_for(run_dir, None) as c:
        r = c.post("/v1/feedback", json={"interactions": [{"impression": "x", "doc": "0"}]})
        assert r.status_code == 404 and "--log-impressions" in r.json()["error"]["message"]
    from ranker.service import create_app
    from retrieval.errors import UsageError

    with pytest.raises(UsageError, match="only useful with --log-impressions"):
        create_app(Scorer.load(run_dir), explore=0.5)
    plain = [r.id for r in Scorer.load(run_dir).rerank(QUERY, DOCS)]
    ids = ["0", "chess", "roast", "3", "7"]
    with client_for(run_dir, tmp_path / "log", explore=1.0, seed=3) as c:
        for _ in range(3):
            answer = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()
            served = [ids[r["index"]] for r in answer["results"]]
            moved = [k for k, (a, b) in enumerate(zip(served, plain)) if a != b]
            assert answer["meta"]["explored"] is True and len(moved) == 2 and moved[1] == moved[0] + 1
            assert served[moved[0]] == plain[moved[1]] and served[moved[1]] == plain[moved[0]]
    assert all(e["explored"] for e in events_in(tmp_path / "log") if e["type"] == "impression")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_worker_loses_nothing_that_was_answered(run_dir, tmp_path):
    """Two worker processes under load; one is killed with SIGKILL half-way. Every impression and
    interaction answered 200 is in the event files (each written and fsynced before its answer)."""
    import httpx
    import psutil

    port, folder = free_port(), tmp_path / "log"
    exe = Path(sys.executable).parent / "fusion-ltr"
    server = subprocess.Popen([str(exe), "serve", "--run", str(run_dir), "--port", str(port), "--workers", "2",
                               "--log-impressions", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200 and \
                        len(psutil.Process(server.pid).children()) >= 2:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        answered, lock, done = [], threading.Lock(), threading.Event()

        def load():
            with httpx.Client(timeout=30) as http:
                while not done.is_set():
                    try:
                        r = http.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS[:3]})
                        if r.status_code == 200:
                            iid = r.json()["id"]
                            f = http.post(f"{url}/v1/feedback", json={"interactions": [{"impression": iid, "doc": "0"}]})
                            with lock:
                                answered.append(("impression", iid))
                                if f.status_code == 200:
                                    answered.append(("interaction", f.json()["ids"][0]))
                    except httpx.HTTPError:
                        time.sleep(0.05)  # the killed worker's connection

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        while len(answered) < 20:
            time.sleep(0.1)
        victim = psutil.Process(server.pid).children()[0]
        os.kill(victim.pid, signal.SIGKILL)
        count = len(answered)
        while len(answered) < count + 20 and time.time() < deadline + 60:
            time.sleep(0.1)
        done.set()
        for t in threads:
            t.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert len(answered) >= 40
    logged = {(e["type"], e["id"]) for e in events_in(folder)}
    assert set(answered) <= logged
    assert len(list(folder.glob("*.jsonl"))) >= 2  # one file per worker process


def test_interleaved_answers_log_teams_and_the_report_credits_the_clicks(run_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from ranker.cli import main
    from ranker.service import create_app

    a, b = Scorer.load(run_dir), Scorer.load(run_dir)
    app = create_app(a, log_impressions=str(tmp_path / "log"), interleave=("model", "model-copy", b), seed=1)
    plain = [r.id for r in Scorer.load(run_dir).rerank(QUERY, DOCS)]
    ids = ["0", "chess", "roast", "3", "7"]
    with TestClient(app, raise_server_exceptions=False) as c:
        answers = [c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 4}).json() for _ in range(6)]
        logged = {e["id"]: e for e in events_in(tmp_path / "log")}
        for n, ans in enumerate(answers):
            assert ans["meta"]["interleaved"] is True
            assert [ids[r["index"]] for r in ans["results"]] == plain[:4]  # one ranking interleaved with itself
            teams = logged[ans["id"]]["teams"]
            assert sorted(teams) == ["a", "a", "b", "b"] and logged[ans["id"]]["models"] == {"a": "model", "b": "model-copy"}
            # the first four answers: a click on each of team a's documents; the last two: on one of b's
            clicks = [d for d, t in zip(logged[ans["id"]]["docs"], teams) if t == ("a" if n < 4 else "b")][:2 if n < 4 else 1]
            c.post("/v1/feedback", json={"interactions": [{"impression": ans["id"], "doc": d} for d in clicks]})
    with pytest.raises(Exception, match="needs --log-impressions"):
        create_app(a, interleave=("model", "model-copy", b))
    store = tmp_path / "features.duckdb"
    assert main(["events", "ingest", *map(str, sorted((tmp_path / "log").glob("*.jsonl"))), "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["events", "interleaving", "--store", str(store)]) == 0
    result = json.loads(capsys.readouterr().out)["model vs model-copy"]
    assert (result["wins"], result["losses"], result["ties"]) == (4, 2, 0)
    assert result["p_value"] == pytest.approx(0.6875)  # 2 * P(X >= 4), X ~ Binomial(6, 0.5)
