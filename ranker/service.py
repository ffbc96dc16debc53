"""The rerank service: `fusion-ltr serve --run DIR`, a FastAPI app over one :class:`ranker.Scorer`.

``POST /v1/rerank`` speaks the Cohere / Jina shape that LangChain, LlamaIndex and Haystack clients send::

    {"query": "...", "documents": ["text", {"text": "...", "id": "d1", "title": "...", "timestamp": "..."}],
     "top_n": 3, "return_documents": true, "min_score": 0.2}
    -> {"id": "<request id>", "model": "...", "results": [{"index": 1, "relevance_score": 0.93,
        "document": {"text": "..."}}], "meta": {"calibrated": true, ...}}

``relevance_score`` is P(relevant) from the model's calibrator (``meta.calibrated``; a model trained
without one gives its raw score); ``min_score`` drops results below it, then ``top_n`` keeps the best.
The results are exactly :meth:`Scorer.rerank`'s (the tests check it).

Fields other rerank APIs define are accepted, so their clients work unchanged: Cohere's ``model`` (this
server serves one model), ``max_chunks_per_doc`` and ``max_tokens_per_doc`` (documents are scored whole;
each model truncates to its own length) are reported in ``meta.warnings``; ``rank_fields`` (Cohere v1: the
keys of object documents to rank on) is honoured: the named keys' values become the text (``title`` the
title), the document's other keys are ignored. ``POST /v2/rerank`` (Cohere v2) is the same endpoint with
``meta.api_version``. ``POST /rerank`` speaks text-embeddings-inference's shape: ``{"query", "texts",
"raw_scores", "return_text", "truncate", "truncation_direction"}`` -> ``[{"index", "score", "text"}]``
(``score`` the calibrated probability unless ``raw_scores``). A key no such API defines is refused.

``POST /v1/search`` (``query``,
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
safe to call from two threads at once). A request's pairs are checked by the extractor
(``BaseExtractor.check``) before they join a batch, and a shared call that fails is computed again
request by request: only the request at fault gets the error, never another client.
"""

import logging
import queue
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from retrieval.errors import FusionLTRError, InputError, MissingInputError, UsageError

from . import tracing as otel

log = logging.getLogger("fusion_ltr.service")
INSTALL = "pip install 'fusion-ltr[serve]'  (fastapi, uvicorn, prometheus-client)"


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits (a request past one gets a 413)."""

    max_documents: int = 1000
    max_chars: int = 2_000_000  # query + every document's text and title
    max_body_bytes: int = 16_000_000  # the request body as sent, enforced while it is read
    body_timeout_s: float = 30.0  # the whole body must arrive within this (a stalled upload gets a 408)


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
        self._ext.check(pairs)  # a request the extractor would refuse fails here, alone, before joining a batch
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
        except BaseException as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            # one request's pairs broke the shared call: each request again on its own, so that only the
            # one at fault fails and no request sees another's error (the worker lives on either way)
            for pairs, done in batch:
                try:
                    done.set_result(self._ext.compute(pairs))
                except BaseException as own:
                    done.set_exception(own)
            return
        start = 0
        for pairs, done in batch:
            done.set_result({k: np.asarray(v)[start:start + len(pairs)] for k, v in values.items()})
            start += len(pairs)


def share_extractors(scorer, *, batching: bool, metrics=None, max_wait_ms: float = 5.0,
                     max_batch_pairs: int = 256) -> None:
    """Wrap the Scorer's model extractors (those with a ``device`` parameter) for concurrent requests."""
    def share(ext):
        if "device" not in {f.name for f in fields(ext.params)}:
            return ext
        return (BatchedExtractor(ext, metrics, max_wait_ms=max_wait_ms, max_batch_pairs=max_batch_pairs)
                if batching else LockedExtractor(ext, metrics))

    scorer.map_extractors(share)


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


# ------------------------------------------------------------------------------ before the framework
class BodyGuard:
    """ASGI middleware in front of the app: the API key (when set) before anything is read, then the body
    read here with its size limit enforced while it arrives (a ``Content-Length`` past it is refused
    before a byte is read) and a deadline for the whole of it; the app gets the body as read."""

    def __init__(self, app, *, limits: ServeLimits, api_key: str | None, on_error):
        self.app, self.limits, self.api_key, self.on_error = app, limits, api_key, on_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import asyncio
        import hmac

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.api_key and path != "/healthz":
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode("utf-8", "replace"), self.api_key.encode("utf-8")):
                return await self.on_error(scope, send, 401, "unauthorized", "Authorization: expected 'Bearer <API "
                                           "key>' with the server's key" + (", found another key" if token else ""),
                                           "authorization")
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await self.on_error(scope, send, 413, "too_large", f"body: {int(declared)} bytes, at most {limit} "
                                       "(ServeLimits.max_body_bytes)", "body")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                return await self.on_error(scope, send, 408, "timeout", f"body: not received within "
                                           f"{self.limits.body_timeout_s:g} s (ServeLimits.body_timeout_s)", "body")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self.on_error(scope, send, 413, "too_large", f"body: more than {limit} bytes "
                                           "(ServeLimits.max_body_bytes)", "body")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_from(env: dict, file: str | None = None) -> str | None:
    """The API key: the first line of ``file``, else ``FUSION_LTR_API_KEY``; None when neither is set."""
    if file:
        try:
            key = Path(file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise MissingInputError(f"{file}: cannot read the API key file ({exc.strerror})") from None
        if not key or not key[0].strip():
            raise UsageError(f"{file}: the API key file is empty")
        return key[0].strip()
    return (env.get("FUSION_LTR_API_KEY") or "").strip() or None


# ------------------------------------------------------------------------------ the app
def create_app(scorer, *, limits: ServeLimits = ServeLimits(), batching: bool = True, max_wait_ms: float = 5.0,
               max_batch_pairs: int = 256, model_name: str = "", api_key: str | None = None, tracing: bool = False,
               log_impressions: str | None = None, explore: float = 0.0, seed: int | None = None,
               interleave: tuple | None = None):
    """The FastAPI app serving ``scorer`` (see the module docstring); with ``api_key``, every endpoint but
    ``/healthz`` needs ``Authorization: Bearer <api_key>`` (compared in constant time); with ``tracing``, an
    OpenTelemetry span per request, continuing the caller's trace, and per stage and extractor
    (:mod:`ranker.tracing`); with ``log_impressions`` (a folder), every rerank and search answer is logged
    as an impression (its ``id``) and ``POST /v1/feedback`` takes interactions with it, both durable before
    the answer (:class:`features.events.EventWriter`); ``explore``: the share of those answers in which two
    adjacent results, chosen at random, are swapped (logged as ``explored``); ``interleave``: ``(name_a,
    name_b, scorer_b)``: each rerank and search answer is the team-draft interleaving of ``scorer``'s ranking
    (team "a") and ``scorer_b``'s (:mod:`ranker.interleaving`), logged with each result's team for
    `fusion-ltr events interleaving`."""
    if interleave is not None and not log_impressions:
        raise UsageError("interleave: comparing two models needs --log-impressions (the teams and clicks are logged)")
    if not 0 <= explore <= 1:
        raise UsageError(f"explore: expected a share in [0, 1], found {explore}")
    if explore and not log_impressions:
        raise UsageError("explore: swapping results is only useful with --log-impressions (the swaps are logged)")
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from pydantic import BaseModel, ConfigDict
    except ImportError as exc:
        raise ImportError(f"the service needs FastAPI: run `{INSTALL}`") from exc

    from typing import Annotated

    from pydantic import Field, StrictBool, StrictInt
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .documents import check_top_k

    Finite = Annotated[float, Field(allow_inf_nan=False)]

    metrics = Metrics()
    for each in [scorer] + ([interleave[2]] if interleave is not None else []):
        share_extractors(each, batching=batching, metrics=metrics, max_wait_ms=max_wait_ms,
                         max_batch_pairs=max_batch_pairs)
    name = model_name or (scorer.run_dir.name if scorer.run_dir else "fusion-ltr")  # never a server path

    class DocumentIn(BaseModel):
        # other keys pass on to the Scorer, which takes a retriever's rank_<r> / score_<r> and refuses the rest
        model_config = ConfigDict(extra="allow")
        text: str | None = None  # required, unless rank_fields names the keys the text is made of
        id: str | StrictInt | None = None
        title: str | None = None
        timestamp: str | StrictInt | Finite | None = None
        timestamp_ms: StrictInt | Finite | None = None
        score: Finite | None = None
        rank: StrictInt | None = None
        embedding: list[Finite] | None = None
        embedding_model: str | None = None

    class RerankIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str
        documents: list[str | DocumentIn]
        top_n: StrictInt | None = None
        return_documents: StrictBool = False
        min_score: Finite | None = None
        model: str | None = None  # accepted for client compatibility; this server serves one model
        max_chunks_per_doc: StrictInt | None = None  # Cohere v1; documents are not chunked here
        max_tokens_per_doc: StrictInt | None = None  # Cohere v2; each model truncates to its own length
        rank_fields: list[str] | None = None  # Cohere v1: the object documents' keys to rank on

    class TEIRerankIn(BaseModel):  # text-embeddings-inference's POST /rerank
        model_config = ConfigDict(extra="forbid")
        query: str
        texts: list[str]
        raw_scores: StrictBool = False
        return_text: StrictBool = False
        truncate: StrictBool = False  # the models always truncate to their own length
        truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"

    class SearchIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str
        top_n: StrictInt = 10
        return_documents: StrictBool = True
        min_score: Finite | None = None
        model: str | None = None

    class InteractionIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        impression: str  # the answer's ``id``
        doc: str | StrictInt  # the document's ``id`` as sent (its index in the request when it had none), or search's
        kind: str = "click"
        time: str | None = None  # ISO 8601; default: when the service receives it
        value: Finite | None = None
        position: StrictInt | None = None
        id: str | None = None  # the event's id (ingest skips an id it has); default: a new one

    class FeedbackIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        interactions: list[InteractionIn]

    import random
    from datetime import datetime, timezone

    from features.events import EventWriter

    writer = EventWriter(log_impressions) if log_impressions else None
    chance = random.Random(seed)

    def shown(ranking) -> tuple[list, bool]:
        """The results as shown, two adjacent ones swapped in a share ``explore`` of the answers, and whether
        they were; the impression logged (durably) when the service logs them."""
        results, explored = list(ranking), False
        if writer is not None and explore and len(results) > 1 and chance.random() < explore:
            k = chance.randrange(len(results) - 1)
            results[k], results[k + 1] = results[k + 1], results[k]
            explored = True
        return results, explored

    def log_impression(request_id: str, query: str, results, explored: bool, teams=None) -> None:
        if writer is not None:
            event = {"type": "impression", "id": request_id, "time": datetime.now(timezone.utc).isoformat(),
                     "query": query, "docs": [r.id for r in results], "model": name, "explored": explored}
            if teams is not None:
                event |= {"teams": teams, "models": {"a": interleave[0], "b": interleave[1]}}
            writer.write(event)

    def present(request_id: str, query: str, ranking, teams, meta: dict) -> list:
        """The results as shown (two swapped by exploration, or the interleaving of ``teams``), logged as the
        answer's impression; ``meta`` says which."""
        results, explored = shown(ranking) if teams is None else (list(ranking), False)
        log_impression(request_id, query, results, explored, teams)
        if explored:
            meta["explored"] = True
        if teams is not None:
            meta["interleaved"] = True
        return results

    def ranked(rank, query: str, top_k, **kw) -> tuple[list, list | None]:
        """``rank(scorer, query, top_k=..., **kw)``'s results, or with ``interleave`` the team-draft of the two
        models' rankings (each result from its team's model) and the teams."""
        if interleave is None:
            return rank(scorer, query, top_k=top_k, **kw), None
        from .interleaving import team_draft

        a, b = rank(scorer, query, top_k=None, **kw), rank(interleave[2], query, top_k=None, **kw)
        ids, teams = team_draft([r.id for r in a], [r.id for r in b], chance, k=top_k)
        by = {"a": {r.id: r for r in a}, "b": {r.id: r for r in b}}
        ranking = type(a)([by[t][i] for i, t in zip(ids, teams)], {k: v + b.timing.get(k, 0.0) for k, v in a.timing.items()})
        return ranking, teams

    app = FastAPI(title="fusion-ltr rerank", version="1")

    async def early_error(scope, send, status: int, kind: str, message: str, field: str):
        metrics.requests.labels(scope.get("path", ""), str(status)).inc()
        await error(status, kind, message, field)(scope, None, send)

    app.add_middleware(BodyGuard, limits=limits, api_key=api_key, on_error=early_error)

    def error(status: int, kind: str, message: str, field: str = "", request_id: str | None = None):
        metrics.errors.labels(kind).inc()
        body = {"type": kind, "field": field, "message": message}
        if request_id:
            body["request_id"] = request_id
        return JSONResponse({"error": body}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException):
        # the framework's own answers (a body it cannot parse, e.g. nested too deep; an unknown path or method)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        metrics.requests.labels(request.url.path, str(exc.status_code)).inc()
        message = {400: "body: not valid JSON (it could not be parsed, e.g. nested too deep)"}.get(
            exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        return error(exc.status_code, kind, message, "body" if exc.status_code == 400 else "")

    @app.exception_handler(RequestValidationError)
    async def bad_shape(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        ctype = request.headers.get("content-type", "")
        main = ctype.split(";")[0].strip().lower()
        if main and main != "application/json" and not main.endswith("+json"):
            metrics.requests.labels(request.url.path, "415").inc()
            return error(415, "unsupported_media_type", f"Content-Type: expected application/json, found "
                         f"{ctype or 'none'!r}", "content-type")
        bad_json = next((e for e in errs if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            metrics.requests.labels(request.url.path, "422").inc()
            at = bad_json.get("loc", ("body", "?"))[-1]
            return error(422, "invalid_request", f"body: not valid JSON ({bad_json.get('ctx', {}).get('error', 'invalid')}"
                         f" at character {at})", "body")
        # a document object fails both members of "string or object": report the object's own error
        first = next((e for e in errs if [str(p) for p in e.get("loc", ())][-1:] != ["str"]), errs[0])
        # the path without pydantic's union-member tags ("str", "DocumentIn", "int", "constrained-float", ...)
        union_tags = {"str", "int", "float", "bool", "DocumentIn"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body" and str(p) not in union_tags
               and not any(c in str(p) for c in "[-")]
        path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")
        found = first.get("input")
        message = f"{path or 'body'}: {first.get('msg', 'invalid')}" + (
            f", found {str(found)[:80]!r}" if found is not None and not isinstance(found, dict) else "")
        metrics.requests.labels(request.url.path, "422").inc()
        return error(422, "invalid_request", message, path)

    def documents_of(body) -> list:
        """The Scorer's documents: strings as they are, objects as mappings (with ``rank_fields``, the text
        made of the named keys' values and the other keys left out)."""
        docs = []
        fields_ = body.rank_fields
        for i, d in enumerate(body.documents):
            if isinstance(d, str):
                docs.append(d)
                continue
            doc = {k: v for k, v in d.model_dump().items() if v is not None}
            if fields_:
                missing = [f for f in fields_ if f not in doc]
                if missing:
                    raise InputError(f"documents[{i}]: rank_fields names {missing}, which this document lacks; "
                                     f"its keys: {sorted(doc)}", field=f"documents[{i}]")
                text = "\n".join(str(doc[f]) for f in fields_ if f != "title")
                doc = {k: doc[k] for k in ("id", "timestamp", "timestamp_ms", "score", "rank") if k in doc} | \
                    {"text": text} | ({"title": str(doc["title"])} if "title" in fields_ else {})
            elif "text" not in doc:
                raise InputError(f"documents[{i}].text: a document object needs a text (or the request names the "
                                 f"keys to rank on in rank_fields); its keys: {sorted(doc)}", field=f"documents[{i}].text")
            docs.append(doc)
        return docs

    def warnings_of(body) -> list[str]:
        """What the request asked that this server does not do, said in ``meta.warnings``."""
        out = []
        if body.model is not None and body.model != name:
            out.append(f"model: this server serves one model ({name!r}); {body.model!r} was not used")
        if body.max_chunks_per_doc is not None:
            out.append("max_chunks_per_doc: documents are not chunked; each is scored whole (each model truncates "
                       "it to its own length)")
        if body.max_tokens_per_doc is not None:
            out.append("max_tokens_per_doc: not applied; each model truncates a document to its own length")
        return out

    def check_limits(body) -> None:
        if len(body.documents) > limits.max_documents:
            raise LimitError(f"documents: {len(body.documents)} documents, at most {limits.max_documents} per "
                             "request (ServeLimits.max_documents)", "documents")
        chars = len(body.query) + sum(len(d) if isinstance(d, str) else
                                      sum(len(str(v)) for v in d.model_dump().values() if isinstance(v, str))
                                      for d in body.documents)
        if chars > limits.max_chars:
            raise LimitError(f"request: {chars} characters of query and documents, at most {limits.max_chars} "
                             "(ServeLimits.max_chars)", "documents")

    def results_of(ranking, body, index: dict | None = None) -> list[dict]:
        """Cohere's result items (``index`` into the request's documents; ``id`` for search)."""
        out = []
        for r in ranking:
            score = r.probability if r.probability is not None else r.score  # what min_score compared
            item = ({"index": index[r.id]} if index is not None else {"id": r.id}) | {"relevance_score": score}
            if body.return_documents:
                item["document"] = {"text": r.text} | ({"title": r.title} if r.title else {})
            out.append(item)
        return out

    def observe(ranking) -> dict:
        for part, seconds in ranking.timing.items():
            if part != "total":
                metrics.parts.labels(part).observe(seconds)
        return {k: round(v * 1000, 2) for k, v in ranking.timing.items()}

    if tracing:
        otel.enable()

    def handle(endpoint: str, request_id: str, work, request: Request | None = None):
        t = time.perf_counter()
        with otel.server_span(f"POST {endpoint}", request.headers if request is not None else {},
                              **{"fusion_ltr.request_id": request_id}):
            response, status = respond(request_id, work)
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t)
        return response

    def respond(request_id: str, work):
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
        return response, status

    def cohere_rerank(body, endpoint: str, version: str, request: Request):
        request_id = uuid.uuid4().hex

        def work():
            check_limits(body)
            check_top_k(body.top_n, "top_n")
            docs = documents_of(body)
            ranking, teams = ranked(lambda sc, q, **kw: sc.rerank(q, docs, **kw), body.query, body.top_n,
                                    min_score=body.min_score)
            index = {str(i if isinstance(d, str) or d.id is None else d.id): i for i, d in enumerate(body.documents)}
            meta = {"api_version": {"version": version}, "calibrated": scorer.calibrator is not None,
                    "documents": len(body.documents), "timing_ms": observe(ranking)}
            warnings = warnings_of(body)
            if warnings:
                meta["warnings"] = warnings
            results = present(request_id, body.query, ranking, teams, meta)
            return {"id": request_id, "model": name, "results": results_of(results, body, index), "meta": meta}
        return handle(endpoint, request_id, work, request)

    @app.post("/v1/rerank")
    def rerank(body: RerankIn, request: Request):
        return cohere_rerank(body, "/v1/rerank", "1", request)

    @app.post("/v2/rerank")
    def rerank_v2(body: RerankIn, request: Request):
        return cohere_rerank(body, "/v2/rerank", "2", request)

    @app.post("/rerank")
    def rerank_tei(body: TEIRerankIn, request: Request):
        request_id = uuid.uuid4().hex

        def work():
            check_limits(RerankIn(query=body.query, documents=body.texts))
            ranking = scorer.rerank(body.query, list(body.texts))
            out = []
            for r in ranking:
                score = r.score if body.raw_scores or r.probability is None else r.probability
                out.append({"index": int(r.id), "score": score} | ({"text": r.text} if body.return_text else {}))
            return out
        return handle("/rerank", request_id, work, request)

    @app.post("/v1/search")
    def search(body: SearchIn, request: Request):
        request_id = uuid.uuid4().hex

        def work():
            check_top_k(body.top_n, "top_n")
            ranking, teams = ranked(lambda sc, q, **kw: sc.search(q, **kw), body.query, body.top_n,
                                    min_score=body.min_score)
            meta = {"calibrated": scorer.calibrator is not None, "timing_ms": observe(ranking)}
            results = present(request_id, body.query, ranking, teams, meta)
            return {"id": request_id, "model": name, "results": results_of(results, body), "meta": meta}
        return handle("/v1/search", request_id, work, request)

    @app.post("/v1/feedback")
    def feedback(body: FeedbackIn, request: Request):
        request_id = uuid.uuid4().hex

        def work():
            if writer is None:
                raise MissingInputError("this service does not log impressions (start it with --log-impressions DIR)")
            now = datetime.now(timezone.utc).isoformat()
            events = [{"type": "interaction", "id": x.id or uuid.uuid4().hex, "impression": x.impression,
                       "doc": str(x.doc), "kind": x.kind, "time": x.time or now}
                      | ({"value": x.value} if x.value is not None else {})
                      | ({"position": x.position} if x.position is not None else {}) for x in body.interactions]
            writer.write(*events)  # durable before the answer; checked against the impressions at ingest
            return {"id": request_id, "accepted": len(events), "ids": [e["id"] for e in events]}
        return handle("/v1/feedback", request_id, work, request)

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
        return {"model": name, "kind": scorer.model.kind,
                "features": [{"name": n, "version": v} for n, v in zip(scorer.feature_names, scorer.feature_versions)],
                "stages": [{"features": s.features, "keep": s.keep} for s in scorer.stages] if scorer.stages else None,
                "extractors": {e.name: [s.name for s in e.specs] for e in scorer.extractors},
                "dataset": Path(str(m["dataset"])).name if m.get("dataset") else None, "train_queries": m.get("train_queries"), "guard": m.get("guard"),
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
          batching: bool = True, max_wait_ms: float = 5.0, limits: ServeLimits = ServeLimits(),
          api_key_file: str | None = None, tracing: bool = False, log_impressions: str | None = None,
          explore: float = 0.0, interleave: str | None = None) -> None:
    """Load the Scorer once and serve it with uvicorn (``workers`` processes, each with its own models).

    The API key is the first line of ``api_key_file``, else the ``FUSION_LTR_API_KEY`` environment
    variable; binding beyond loopback without one is allowed, with a warning."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f"the service needs uvicorn: run `{INSTALL}`") from exc
    import os

    key = api_key_from(os.environ, api_key_file)  # a bad key file is refused before the model loads
    if key is None and not is_loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach this port can use the model; set "
                    "FUSION_LTR_API_KEY or --api-key-file", host)
    os.environ.update({"FUSION_LTR_SERVE_RUN": str(run_dir), "FUSION_LTR_SERVE_MODEL": model,
                       "FUSION_LTR_SERVE_BATCHING": "1" if batching else "0",
                       "FUSION_LTR_SERVE_WAIT_MS": str(max_wait_ms),
                       "FUSION_LTR_SERVE_API_KEY_FILE": api_key_file or "",
                       "FUSION_LTR_SERVE_TRACING": "1" if tracing else "0",
                       "FUSION_LTR_SERVE_LOG_IMPRESSIONS": log_impressions or "",
                       "FUSION_LTR_SERVE_EXPLORE": str(explore),
                       "FUSION_LTR_SERVE_INTERLEAVE": interleave or "",
                       **{f"FUSION_LTR_SERVE_{f.name.upper()}": str(getattr(limits, f.name)) for f in fields(limits)}})
    if workers > 1:
        uvicorn.run("ranker.service:app_from_env", factory=True, host=host, port=port, workers=workers)
    else:
        uvicorn.run(app_from_env(), host=host, port=port)


def app_from_env():
    """The app of the run named by ``FUSION_LTR_SERVE_*`` (what each uvicorn worker process builds)."""
    import os

    from .scorer import Scorer

    env = os.environ
    pair = [m.strip() for m in (env.get("FUSION_LTR_SERVE_INTERLEAVE") or "").split(",") if m.strip()]
    if pair and len(pair) != 2:
        raise UsageError(f"--interleave: expected two model folders of the run, MODEL_A,MODEL_B, found {pair}")
    scorer = Scorer.load(env["FUSION_LTR_SERVE_RUN"], model=pair[0] if pair else env.get("FUSION_LTR_SERVE_MODEL", "model"))
    interleave = (pair[0], pair[1], Scorer.load(env["FUSION_LTR_SERVE_RUN"], model=pair[1])) if pair else None
    default = ServeLimits()
    limits = ServeLimits(**{f.name: type(getattr(default, f.name))(env[k]) for f in fields(ServeLimits)
                            if (k := f"FUSION_LTR_SERVE_{f.name.upper()}") in env})
    return create_app(scorer, limits=limits, batching=env.get("FUSION_LTR_SERVE_BATCHING", "1") == "1",
                      max_wait_ms=float(env.get("FUSION_LTR_SERVE_WAIT_MS", 5.0)),
                      api_key=api_key_from(env, env.get("FUSION_LTR_SERVE_API_KEY_FILE") or None),
                      tracing=env.get("FUSION_LTR_SERVE_TRACING", "0") == "1",
                      log_impressions=env.get("FUSION_LTR_SERVE_LOG_IMPRESSIONS") or None,
                      explore=float(env.get("FUSION_LTR_SERVE_EXPLORE") or 0.0), interleave=interleave)
