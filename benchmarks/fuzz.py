"""Fuzzing the service and the Scorer (issue 30): generated requests and document lists, asserting that
every answer is a 2xx or a 4xx in the service's error shape (never a 5xx, never a process abort), and that
no request's answer depends on another's input (each generated request is sent together with a fixed
reference request, whose answer must stay the one it got alone).

The generators are hypothesis strategies: near-valid bodies (the API's fields with values of every JSON
type, NaN and Infinity, lone surrogates, out-of-range numbers, unknown keys), arbitrary JSON, and raw
bytes. ``tests/ranker/test_fuzz.py`` runs a few hundred in the suite; this script runs many against a
tiny model trained here (the generated 32-topic dataset of the tests; BM25, length, coverage, freshness)
and writes ``benchmarks/results/fuzz.json``.

    .venv/bin/python benchmarks/fuzz.py --requests 10000 --documents 10000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE = {"query": "coffee bean roast", "documents": ["roast coffee beans", {"text": "a chess opening", "id": "c"},
                                                         {"text": "owl night", "timestamp": "2001-02-03"}]}

texts = st.one_of(st.text(max_size=20), st.sampled_from(["coffee bean", "\ud800", "a\udfffb", " ", ""]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.just(10**400),
                    st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)
doc_fields = {"id": st.one_of(st.text(max_size=4), st.integers(-3, 5), json_values),
              "title": st.one_of(texts, json_values), "timestamp": st.one_of(
                  scalars, st.sampled_from(["2020-01-01", "0001-01-01", "9999-12-31", "2020-02-30"])),
              "timestamp_ms": scalars, "score": scalars, "rank": st.one_of(st.integers(-2, 50), scalars),
              "rank_bm25": scalars, "score_bm25": scalars, "embedding": st.one_of(st.lists(scalars, max_size=4), scalars),
              "embedding_model": scalars, "timestmap": scalars}
documents = st.one_of(texts, st.fixed_dictionaries({"text": st.one_of(texts, scalars)}, optional=doc_fields),
                      json_values)
words = st.lists(st.sampled_from(["coffee", "bean", "roast", "owl", "night", "chess", "tea", "ice"]), min_size=1,
                 max_size=5).map(" ".join)
plausible = st.fixed_dictionaries(  # mostly valid: the answers whose content the cross-request check compares
    {"query": words, "documents": st.lists(st.one_of(words, st.fixed_dictionaries(
        {"text": words}, optional={"id": st.text(min_size=1, max_size=3), "title": words,
                                   "timestamp": st.sampled_from(["2001-02-03", "2019-12-31T23:00:00Z", 1.5e9]),
                                   "score": st.floats(-10, 10), "rank": st.integers(1, 20)})), max_size=8)},
    optional={"top_n": st.integers(0, 10), "min_score": st.floats(0, 1), "return_documents": st.booleans()})
bodies = st.one_of(
    plausible,
    st.fixed_dictionaries({"query": st.one_of(texts, scalars), "documents": st.one_of(st.lists(documents, max_size=6),
                                                                                        json_values)},
                          optional={"top_n": scalars, "min_score": scalars, "return_documents": scalars,
                                    "model": scalars, "max_chunks_per_doc": scalars, "unknown": scalars}),
    json_values,
)
#: what is sent: a body as JSON (NaN and Infinity as the tokens Python writes), or raw bytes
payloads = st.one_of(bodies.map(lambda b: json.dumps(b, allow_nan=True).encode()), st.binary(max_size=60))


class Findings:
    """What the fuzzing saw: answers by status, and every violation (5xx, wrong shape, cross-request)."""

    def __init__(self):
        self.status: dict[int, int] = {}
        self.violations: list[str] = []
        self.n = 0

    def add(self, status: int) -> None:
        self.n += 1
        self.status[status] = self.status.get(status, 0) + 1


def check_answer(r, n_docs: int | None) -> str | None:
    """None when ``r`` is a 2xx with results or a 4xx in the error shape; else what is wrong."""
    if r.status_code >= 500:
        return f"{r.status_code}: {r.text[:200]}"
    try:
        body = r.json()
    except ValueError:
        return f"{r.status_code}: not JSON: {r.text[:200]}"
    if r.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict) or not {"type", "field", "message"} <= set(err) or not err["message"]:
            return f"{r.status_code}: not the error shape: {r.text[:200]}"
        return None
    results = body.get("results")
    if not isinstance(results, list):
        return f"200 without results: {r.text[:200]}"
    for item in results:
        if not math.isfinite(item["relevance_score"]) or (n_docs is not None and not 0 <= item["index"] < n_docs):
            return f"200 with a bad result {item}"
    return None


def n_documents(payload: bytes) -> int | None:
    try:
        body = json.loads(payload)
        return len(body["documents"])
    except Exception:
        return None


def send_together(client, payload: bytes, reference_answer) -> tuple:
    """``payload`` and the reference request at once; (the payload's response, whether the reference's
    answer was the one it gets alone)."""
    out = {}

    def fuzz():
        out["r"] = client.post("/v1/rerank", content=payload, headers={"content-type": "application/json"})

    def reference():
        out["ref"] = client.post("/v1/rerank", json=REFERENCE)

    threads = [threading.Thread(target=fuzz), threading.Thread(target=reference)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ref = out["ref"]
    return out["r"], ref.status_code == 200 and ref.json()["results"] == reference_answer


def fuzz_service(client, n: int, findings: Findings, *, together_every: int = 1) -> None:
    reference_answer = client.post("/v1/rerank", json=REFERENCE).json()["results"]
    counter = {"i": 0}

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(payload=payloads)
    def one(payload):
        counter["i"] += 1
        if counter["i"] % together_every == 0:
            r, same = send_together(client, payload, reference_answer)
            if not same:
                findings.violations.append(f"the reference answer changed beside {payload[:120]!r}")
        else:
            r = client.post("/v1/rerank", content=payload, headers={"content-type": "application/json"})
        findings.add(r.status_code)
        problem = check_answer(r, n_documents(payload))
        if problem:
            findings.violations.append(f"{problem} for {payload[:120]!r}")

    one()


def fuzz_scorer(scorer, n: int, findings: Findings) -> None:
    """Generated document lists straight to Scorer.rerank: a Ranking (a permutation of what was accepted)
    or the project's error, nothing else."""
    from retrieval.errors import FusionLTRError

    reference = [(r.id, r.score) for r in scorer.rerank(REFERENCE["query"], REFERENCE["documents"])]

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(docs=st.one_of(plausible.map(lambda b: b["documents"]), st.lists(documents, max_size=6), json_values),
           top_k=st.one_of(st.none(), st.integers(0, 10), scalars), min_score=st.one_of(st.none(), scalars))
    def one(docs, top_k, min_score):
        try:
            out = scorer.rerank("coffee bean roast", docs, top_k=top_k, min_score=min_score)
            findings.add(200)
            if not all(math.isfinite(r.score) for r in out) or len({r.id for r in out}) != len(out):
                findings.violations.append(f"a bad ranking for {str(docs)[:120]}")
        except FusionLTRError:
            findings.add(422)
        except Exception as exc:  # anything else is a bug
            findings.add(500)
            findings.violations.append(f"{type(exc).__name__}: {exc} for {str(docs)[:120]}")
        if [(r.id, r.score) for r in scorer.rerank(REFERENCE["query"], REFERENCE["documents"])] != reference:
            findings.violations.append(f"the reference ranking changed after {str(docs)[:120]}")

    one()


def tiny_run(folder: Path) -> Path:
    from ranker.cli import main
    from tests.ranker.conftest import generated_dataset, write_config

    config = folder / "gen.toml"
    write_config(config, generated_dataset(folder / "gen"), folder / "run",
                 extractors="[features.extractors.bm25]\n[features.extractors.length]\n[features.extractors.coverage]\n"
                            "[features.extractors.freshness]\nreference_time = \"2030-01-01\"",
                 ranker="[ranker]\nguard = \"warn\"\n[ranker.params]\nn_estimators = 20\nmin_data_in_leaf = 5\n"
                        "num_leaves = 5")
    for step in ("retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    return folder / "run"


def main() -> None:
    import logging
    import warnings

    from fastapi.testclient import TestClient

    from ranker import Scorer
    from ranker.service import create_app

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--documents", type=int, default=10000)
    ap.add_argument("--together-every", type=int, default=1, help="send every k-th request beside the reference")
    ap.add_argument("--out", default="benchmarks/results/fuzz.json")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        run = tiny_run(Path(tmp))
        result = {"command": " ".join(sys.argv)}
        t = time.perf_counter()
        service = Findings()
        with TestClient(create_app(Scorer.load(run)), raise_server_exceptions=False) as client:
            fuzz_service(client, args.requests, service, together_every=args.together_every)
        result["service"] = {"requests": service.n, "by_status": service.status, "violations": service.violations[:20],
                             "n_violations": len(service.violations), "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps(result["service"], indent=1))
        t = time.perf_counter()
        scorer = Findings()
        fuzz_scorer(Scorer.load(run), args.documents, scorer)
        result["scorer"] = {"document_lists": scorer.n, "by_outcome": {"ranked" if k == 200 else "refused" if k == 422
                                                                       else "bug": v for k, v in scorer.status.items()},
                            "violations": scorer.violations[:20], "n_violations": len(scorer.violations),
                            "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps(result["scorer"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
