"""The rerank service: `fusion-ltr serve --run DIR`, a FastAPI app over one :class:`ranker.Scorer`.

``POST /v1/rerank`` speaks the Cohere / Jina shape that LangChain, LlamaIndex and Haystack clients send::

    {"query": "...", "documents": ["text", {"text": "...", "id": "d1", "title": "...", "timestamp": "..."}],
     "top_n": 3, "return_documents": true, "min_score": 0.2}
    -> {"id": "<request id>", "model": "...", "results": [{"index": 1, "relevance_score": 0.93,
        "document": {"text": "..."}}], "meta": {"calibrated": true, ...}}

``relevance_score`` is P(relevant) from the model's calibrator (``meta.calibrated``; a model trained
without one gives its raw score); ``min_score`` drops results below it, then ``top_n`` keeps the best.
The results are exactly :meth:`Scorer.rerank`'s (the tests check it). ``POST /v1/search`` (``query``,
``top_n``) retrieves from the run's index first. ``GET /healthz``, ``GET /metrics`` (Prometheus text:
requests, latency per endpoint, per stage and per extractor, errors by kind, micro-batch sizes) and
``GET /v1/model`` (features, versions, training data, metrics, calibration).

Bad input is a 4xx JSON error, ``{"error": {"type", "field", "message"}}``: 422 for a body of the wrong
shape or a bad value (the field as a path, e.g. ``documents[3].timestamp``), 413 past the configured
limits (documents, characters). Anything else is a bug: a 500 with the request id, logged with its
traceback; the server goes on serving.

**Micro-batching.** The model extractors (those with a ``device``: bi-encoder, cross-encoder, LM) are
shared by every request. With ``batching`` on (the default), a request's pairs for one of them join a
queue, and one worker thread per extractor computes, in one call, the pairs of every request that arrived
within ``max_wait_ms`` (at most ``max_batch_pairs``); each request gets its own rows back. Off, each
request computes its own pairs, one request at a time per extractor (models and tokenizers are not
safe to call from two threads at once).
"""

import logging
import queue
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from retrieval.errors import FusionLTRError, InputError, MissingInputError

log = logging.getLogger("fusion_ltr.service")
INSTALL = "pip install 'fusion-ltr[serve]'  (fastapi, uvicorn, prometheus-client)"


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits (a request past one gets a 413)."""

    max_documents: int = 1000
    max_chars: int = 2_000_000  # query + every document's text and title


# ------------------------------------------------------------------------------ shared extractors
class _Shared:
    """An extractor shared by concurrent requests: everything is the extractor's but :meth:`compute`."""

    def __init__(self, ext, metrics=None):
        self._ext, self._metrics = ext, metrics

    def __getattr__(self, name):
        return getattr(self._ext, name)


class LockedExtractor(_Shared):
    """One request at a time computes its own pairs (no batching)."""

    def __init__(self, ext, metrics=None):
        super().__init__(ext, metrics)
        self._lock = threading.Lock()

    def compute(self, pairs):
        with self._lock:
            if self._metrics:
                self._metrics.batch_pairs.labels(self._ext.name).observe(len(pairs))
            return self._ext.compute(pairs)


class BatchedExtractor(_Shared):
    """Pairs of requests that arrive together are computed in one call by one worker thread."""

    def __init__(self, ext, metrics=None, *, max_wait_ms: float = 5.0, max_batch_pairs: int = 256):
        super().__init__(ext, metrics)
        self._queue: queue.Queue = queue.Queue()
        self._wait, self._max = max_wait_ms / 1000.0, max_batch_pairs
        threading.Thread(target=self._loop, name=f"batch-{ext.name}", daemon=True).start()

    def compute(self, pairs):
        done: Future = Future()
        self._queue.put((pairs, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.perf_counter() + self._wait
            size = len(batch[0][0])
            while size < self._max:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item[0])
            self._run(batch, size)

    def _run(self, batch, size: int) -> None:
        if self._metrics:
            self._metrics.batch_pairs.labels(self._ext.name).observe(size)
        try:
            frame = pd.concat([p for p, _ in batch], ignore_index=True) if len(batch) > 1 else batch[0][0]
            values = self._ext.compute(frame)
        except BaseException as exc:  # every waiting request gets the error; the worker lives on
            for _, done in batch:
                done.set_exception(exc)
            return
        start = 0
        for pairs, done in batch:
            done.set_result({k: np.asarray(v)[start:start + len(pairs)] for k, v in values.items()})
            start += len(pairs)


def share_extractors(scorer, *, batching: bool, metrics=None, max_wait_ms: float = 5.0,
                     max_batch_pairs: int = 256) -> None:
    """Wrap the Scorer's model extractors (those with a ``device`` parameter) for concurrent requests."""
    wrapped = {}
    for ext in scorer.extractors:
        if "device" in {f.name for f in fields(ext.params)}:
            wrapped[id(ext)] = (BatchedExtractor(ext, metrics, max_wait_ms=max_wait_ms, max_batch_pairs=max_batch_pairs)
                                if batching else LockedExtractor(ext, metrics))
    scorer.extractors = [wrapped.get(id(e), e) for e in scorer.extractors]
    if scorer.stages:
        scorer.stage_extractors = [[wrapped.get(id(e), e) for e in exts] for exts in scorer.stage_extractors]


# ------------------------------------------------------------------------------ metrics
class Metrics:
    """Prometheus metrics of one app (its own registry)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("fusion_ltr_requests", "requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("fusion_ltr_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.parts = Histogram("fusion_ltr_part_seconds", "time per stage and per extractor within a request",
                               ["part"], registry=self.registry, buckets=(.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5))
        self.errors = Counter("fusion_ltr_errors", "errors by kind", ["kind"], registry=self.registry)
        self.batch_pairs = Histogram("fusion_ltr_batch_pairs", "pairs per model call", ["extractor"],
                                     registry=self.registry, buckets=(1, 5, 10, 20, 50, 100, 200, 500))

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ------------------------------------------------------------------------------ the app
def create_app(scorer, *, limits: ServeLimits = ServeLimits(), batching: bool = True, max_wait_ms: float = 5.0,
               max_batch_pairs: int = 256, model_name: str = ""):
    """The FastAPI app serving ``scorer`` (see the module docstring)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from pydantic import BaseModel, ConfigDict
    except ImportError as exc:
        raise ImportError(f"the service needs FastAPI: run `{INSTALL}`") from exc

    from .documents import check_top_k

    metrics = Metrics()
    share_extractors(scorer, batching=batching, metrics=metrics, max_wait_ms=max_wait_ms,
                     max_batch_pairs=max_batch_pairs)
    name = model_name or str(scorer.run_dir or "fusion-ltr")

    class DocumentIn(BaseModel):
        model_config = ConfigDict(extra="allow")  # other keys (metadata) are kept out of the features
        text: str
        id: str | int | None = None
        title: str | None = None
        timestamp: str | float | int | None = None
        timestamp_ms: float | int | None = None
        score: float | None = None
        rank: int | None = None
        embedding: list[float] | None = None
        embedding_model: str | None = None

    class RerankIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str
        documents: list[str | DocumentIn]
        top_n: int | None = None
        return_documents: bool = False
        min_score: float | None = None
        model: str | None = None  # accepted for client compatibility; this server serves one model
        max_chunks_per_doc: int | None = None  # Cohere v1 clients send it; documents are not chunked here

    class SearchIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str
        top_n: int = 10
        return_documents: bool = True
        min_score: float | None = None
        model: str | None = None

    app = FastAPI(title="fusion-ltr rerank", version="1")

    def error(status: int, kind: str, message: str, field: str = "", request_id: str | None = None):
        metrics.errors.labels(kind).inc()
        body = {"type": kind, "field": field, "message": message}
        if request_id:
            body["request_id"] = request_id
        return JSONResponse({"error": body}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_shape(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        # a document object fails both members of "string or object": report the object's own error
        first = next((e for e in errs if [str(p) for p in e.get("loc", ())][-1:] != ["str"]), errs[0])
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")
        # a document given as an object fails both union members; say what the object lacked
        path = path.replace(".str", "").replace(".DocumentIn", "")
        found = first.get("input")
        message = f"{path or 'body'}: {first.get('msg', 'invalid')}" + (
            f", found {str(found)[:80]!r}" if found is not None and not isinstance(found, dict) else "")
        metrics.requests.labels(request.url.path, "422").inc()
        return error(422, "invalid_request", message, path)

    def documents_of(body) -> list:
        docs = []
        for d in body.documents:
            if isinstance(d, str):
                docs.append(d)
            else:
                doc = {k: v for k, v in d.model_dump().items() if v is not None and k in DocumentIn.model_fields}
                docs.append(doc)
        return docs

    def check_limits(body) -> None:
        if len(body.documents) > limits.max_documents:
            raise LimitError(f"documents: {len(body.documents)} documents, at most {limits.max_documents} per "
                             "request (ServeLimits.max_documents)", "documents")
        chars = len(body.query) + sum(len(d) if isinstance(d, str) else len(d.text) + len(d.title or "")
                                      for d in body.documents)
        if chars > limits.max_chars:
            raise LimitError(f"request: {chars} characters of query and documents, at most {limits.max_chars} "
                             "(ServeLimits.max_chars)", "documents")

    def results_of(ranking, body, index: dict | None = None) -> list[dict]:
        """Cohere's result items (``index`` into the request's documents; ``id`` for search)."""
        out = []
        for r in ranking:
            score = r.probability if r.probability is not None else r.score
            if body.min_score is not None and score < body.min_score:
                continue
            item = ({"index": index[r.id]} if index is not None else {"id": r.id}) | {"relevance_score": score}
            if body.return_documents:
                item["document"] = {"text": r.text} | ({"title": r.title} if r.title else {})
            out.append(item)
        return out[:body.top_n] if body.top_n is not None else out

    def observe(ranking) -> dict:
        for part, seconds in ranking.timing.items():
            if part != "total":
                metrics.parts.labels(part).observe(seconds)
        return {k: round(v * 1000, 2) for k, v in ranking.timing.items()}

    def handle(endpoint: str, request_id: str, work):
        t = time.perf_counter()
        try:
            response = work()
            status = 200
        except LimitError as exc:
            response, status = error(413, "too_large", str(exc), exc.field, request_id), 413
        except InputError as exc:
            response, status = error(422, "invalid_request", str(exc), exc.field, request_id), 422
        except MissingInputError as exc:
            response, status = error(404, "not_available", str(exc), "", request_id), 404
        except FusionLTRError as exc:
            response, status = error(422, "invalid_request", str(exc), "", request_id), 422
        except Exception as exc:  # a bug: logged with its traceback, answered with the request id
            log.error("request %s failed: %s\n%s", request_id, exc, traceback.format_exc())
            response, status = error(500, "internal_error", f"internal error ({type(exc).__name__}); request id "
                                     f"{request_id}", "", request_id), 500
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t)
        return response

    @app.post("/v1/rerank")
    def rerank(body: RerankIn):
        request_id = uuid.uuid4().hex

        def work():
            check_limits(body)
            check_top_k(body.top_n, "top_n")
            ranking = scorer.rerank(body.query, documents_of(body))
            index = {str(i if isinstance(d, str) or d.id is None else d.id): i for i, d in enumerate(body.documents)}
            return {"id": request_id, "model": name, "results": results_of(ranking, body, index),
                    "meta": {"calibrated": scorer.calibrator is not None, "documents": len(body.documents),
                             "timing_ms": observe(ranking)}}
        return handle("/v1/rerank", request_id, work)

    @app.post("/v1/search")
    def search(body: SearchIn):
        request_id = uuid.uuid4().hex

        def work():
            check_top_k(body.top_n, "top_n")
            ranking = scorer.search(body.query, top_k=None)
            return {"id": request_id, "model": name, "results": results_of(ranking, body),
                    "meta": {"calibrated": scorer.calibrator is not None, "timing_ms": observe(ranking)}}
        return handle("/v1/search", request_id, work)

    @app.get("/healthz")
    def healthz():
        metrics.requests.labels("/healthz", "200").inc()
        return {"status": "ok", "model": name}

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/model")
    def model_info():
        m = scorer.manifest
        metrics.requests.labels("/v1/model", "200").inc()
        return {"model": name, "kind": "cascade" if scorer.stages else "lambdamart",
                "features": [{"name": n, "version": v} for n, v in zip(scorer.feature_names, scorer.feature_versions)],
                "stages": [{"features": s.features, "keep": s.keep} for s in scorer.stages] if scorer.stages else None,
                "extractors": {e.name: [s.name for s in e.specs] for e in scorer.extractors},
                "dataset": m.get("dataset"), "train_queries": m.get("train_queries"), "guard": m.get("guard"),
                "calibration": ({"kind": scorer.calibrator.kind, **scorer.calibrator.info}
                                if scorer.calibrator else None),
                "batching": batching, "limits": {f.name: getattr(limits, f.name) for f in fields(limits)}}

    app.state.metrics, app.state.scorer = metrics, scorer
    return app


class LimitError(InputError):
    """A request past one of :class:`ServeLimits` (answered 413)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message, field=field)


def serve(run_dir: str, *, model: str = "model", host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          batching: bool = True, max_wait_ms: float = 5.0, limits: ServeLimits = ServeLimits()) -> None:
    """Load the Scorer once and serve it with uvicorn (``workers`` processes, each with its own models)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f"the service needs uvicorn: run `{INSTALL}`") from exc
    import os

    os.environ.update({"FUSION_LTR_SERVE_RUN": str(run_dir), "FUSION_LTR_SERVE_MODEL": model,
                       "FUSION_LTR_SERVE_BATCHING": "1" if batching else "0",
                       "FUSION_LTR_SERVE_WAIT_MS": str(max_wait_ms),
                       "FUSION_LTR_SERVE_MAX_DOCUMENTS": str(limits.max_documents),
                       "FUSION_LTR_SERVE_MAX_CHARS": str(limits.max_chars)})
    if workers > 1:
        uvicorn.run("ranker.service:app_from_env", factory=True, host=host, port=port, workers=workers)
    else:
        uvicorn.run(app_from_env(), host=host, port=port)


def app_from_env():
    """The app of the run named by ``FUSION_LTR_SERVE_*`` (what each uvicorn worker process builds)."""
    import os

    from .scorer import Scorer

    env = os.environ
    scorer = Scorer.load(env["FUSION_LTR_SERVE_RUN"], model=env.get("FUSION_LTR_SERVE_MODEL", "model"))
    limits = ServeLimits(int(env.get("FUSION_LTR_SERVE_MAX_DOCUMENTS", ServeLimits.max_documents)),
                         int(env.get("FUSION_LTR_SERVE_MAX_CHARS", ServeLimits.max_chars)))
    return create_app(scorer, limits=limits, batching=env.get("FUSION_LTR_SERVE_BATCHING", "1") == "1",
                      max_wait_ms=float(env.get("FUSION_LTR_SERVE_WAIT_MS", 5.0)))
