"""What an app hands the Scorer: documents as strings, mappings or :class:`Document`, checked at the
boundary and turned into a candidate frame (the contract of :mod:`retrieval.frames`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from retrieval.errors import InputError, UsageError
from retrieval.frames import (DOCNO, EMBEDDING, EMBEDDING_MODEL, QID, QUERY, RANK, RETRIEVER, SCORE, TEXT,
                              TIMESTAMP, TITLE)

QUERY_ID = "_query"  # the qid of an app's query: never one an extractor's model was trained on
DOC_KEYS = ("id", "text", "title", "timestamp", "timestamp_ms", "score", "rank", "embedding", "embedding_model")


@dataclass(frozen=True)
class Document:
    """One candidate document of an app (strings and mappings with the same keys work too).

    ``timestamp``: an ISO 8601 string, a datetime or Unix seconds (``timestamp_ms``: Unix
    milliseconds; a number is never guessed to be one or the other). ``score`` / ``rank``: the app's
    first-stage score and 1-based rank (rank defaults to the position in the list). ``first_stage``:
    ``rank_<r>`` / ``score_<r>`` of the run's member retrievers, when the app has them. ``embedding``
    with ``embedding_model`` (the model id it came from, e.g. from the app's vector database): used for
    ``cosine`` instead of encoding the text, when the model and dimension are the run's bi-encoder's.
    """

    text: str
    id: str | None = None
    title: str = ""
    timestamp: str | dt.datetime | float | int | None = None
    timestamp_ms: float | int | None = None
    score: float | None = None
    rank: int | None = None
    first_stage: Mapping[str, float] = field(default_factory=dict)
    embedding: object = None  # a sequence of floats (list, numpy array)
    embedding_model: str | None = None

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in DOC_KEYS if getattr(self, k) is not None}
        return out | dict(self.first_stage)


#: Plausible Unix times in seconds: 1900-01-01 to 2200-01-01. A number outside is refused, never
#: guessed (1.7e12 is milliseconds: pass it as ``timestamp_ms``).
SECONDS_RANGE = (-2_208_988_800, 7_258_118_400)


def check_text(value: str, what: str, field: str) -> str:
    """``value`` if it is valid Unicode text (no lone surrogate, which no encoder or file can hold)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what}: not valid Unicode text (a lone surrogate {value[exc.start:exc.end]!r} at "
                         f"character {exc.start}); send UTF-8 text", field=field) from None
    return value


def check_query(query) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"query: expected a non-empty string, found {query!r}", field="query")
    return check_text(query, "query", "query")


def check_docs(docs) -> list:
    """``docs`` as a list: a list, tuple or other iterable of documents (not one string or mapping)."""
    if isinstance(docs, (str, bytes, Mapping, Document)) or docs is None or not hasattr(docs, "__iter__"):
        raise InputError(f"docs: expected a list of documents (strings, Documents or mappings), found "
                         f"{type(docs).__name__} {str(docs)[:40]!r}" + ("; wrap one document in a list"
                                                                      if docs is not None else ""), field="documents")
    return list(docs)


def check_top_k(top_k, name: str = "top_k") -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise InputError(f"{name}: expected None or an integer >= 0, found {type(top_k).__name__} {top_k!r}",
                         field=name)
    return int(top_k)


def _as_float(value) -> float:
    """``float(value)``, an integer beyond any float as infinity (which the callers refuse as not finite)."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def check_min_score(min_score) -> float | None:
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float, np.integer, np.floating)) \
            or not np.isfinite(_as_float(min_score)):
        raise InputError(f"min_score: expected None or a finite number, found {type(min_score).__name__} "
                         f"{min_score!r}", field="min_score")
    return float(min_score)


def _number(value, doc_id: str, key: str, *, missing_ok: bool) -> float:
    """A finite float (NaN for None when ``missing_ok``), or an error naming the doc and key. NaN is
    refused: "not given" is None (or leaving the key out); a NaN is usually a bug upstream."""
    if value is None and missing_ok:
        return np.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UsageError(f"doc {doc_id!r}: {key} must be a number, found {type(value).__name__} {value!r}")
    value = _as_float(value)
    if not np.isfinite(value):
        raise UsageError(f"doc {doc_id!r}: {key} must be finite, found {value!r}"
                         + ("; leave it out (or None) when unknown" if missing_ok else ""))
    return value


def parse_timestamp(value, doc_id: str, *, unit: str = "s") -> pd.Timestamp:
    """A UTC timestamp from an ISO 8601 string, a datetime, or a Unix time in ``unit`` (s or ms)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)) or \
            (isinstance(value, str) and not value.strip()):
        return pd.NaT
    key = "timestamp_ms" if unit == "ms" else "timestamp"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        seconds = _as_float(value) / (1000.0 if unit == "ms" else 1.0)
        if not np.isfinite(seconds) or not SECONDS_RANGE[0] <= seconds <= SECONDS_RANGE[1]:
            hint = ("; it looks like milliseconds: pass it as 'timestamp_ms'"
                    if unit == "s" and np.isfinite(seconds) and SECONDS_RANGE[0] <= seconds / 1000 <= SECONDS_RANGE[1]
                    else "")
            raise UsageError(f"doc {doc_id!r}: {key} {value!r} is not a Unix time in {'milli' if unit == 'ms' else ''}"
                             f"seconds between 1900 and 2200{hint}")
        return pd.Timestamp(seconds, unit="s", tz="UTC")
    if unit == "ms":
        raise UsageError(f"doc {doc_id!r}: timestamp_ms must be a number of milliseconds, found {value!r}")
    try:
        if not isinstance(value, (str, dt.date, dt.datetime, pd.Timestamp, np.datetime64)):
            raise TypeError
        ts = pd.Timestamp(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"doc {doc_id!r}: timestamp {value!r} is not a date: expected an ISO 8601 string, a "
                         "datetime, Unix seconds, or milliseconds as 'timestamp_ms'") from None
    if pd.isna(ts):
        raise UsageError(f"doc {doc_id!r}: timestamp {value!r} is not a date")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if not SECONDS_RANGE[0] <= ts.timestamp() <= SECONDS_RANGE[1]:  # the same range as numbers
        raise UsageError(f"doc {doc_id!r}: timestamp {value!r} is outside 1900-2200")
    return ts


def _embedding(doc: Mapping, doc_id: str):
    """A document's own embedding (float32 vector) and model id, or (None, None) when it has none."""
    value = doc.get("embedding")
    if value is None:
        return None, None
    model = doc.get("embedding_model")
    if not isinstance(model, str) or not model.strip():
        raise UsageError(f"doc {doc_id!r}: an embedding needs 'embedding_model', the id of the model it came from "
                         f"(e.g. 'sentence-transformers/all-MiniLM-L6-v2'), found {model!r}")
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.ndim != 1 or not len(vector) or not np.isfinite(vector).all() or not vector.any():
        raise UsageError(f"doc {doc_id!r}: embedding must be a non-empty sequence of finite numbers, not all zero; "
                         f"found {type(value).__name__} {str(value)[:60]}")
    return vector, model


def _at(field: str, check, *args, **kwargs):
    """``check(*args, **kwargs)``, its error located at ``field`` (a request path)."""
    try:
        return check(*args, **kwargs)
    except InputError:
        raise
    except UsageError as exc:
        raise InputError(str(exc), field=field) from None


def candidate_frame(query: str, docs: list, retriever: str) -> pd.DataFrame:
    """An app's docs as a candidate frame (the contract of :mod:`retrieval.frames`); every field is
    checked for type and range, and an error names the document, the key, what was expected and found."""
    rows, extra = [], {}
    for pos, doc in enumerate(docs):
        if isinstance(doc, str):
            doc = {"text": doc}
        elif isinstance(doc, Document):
            doc = doc.as_dict()
        if not isinstance(doc, Mapping):
            raise InputError(f"doc {pos}: expected a string, a Document or a mapping with {list(DOC_KEYS)}, "
                             f"found {type(doc).__name__}", field=f"documents[{pos}]")
        raw_id = doc.get("id")
        if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int, np.integer))):
            raise InputError(f"doc {pos}: id must be a string or an integer, found {type(raw_id).__name__} {raw_id!r}",
                             field=f"documents[{pos}].id")
        doc_id = str(pos if raw_id is None else raw_id)
        text = doc.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"doc {doc_id!r} (position {pos}): expected a non-empty 'text' string, found "
                             f"{text!r}; its keys: {sorted(map(str, doc))}", field=f"documents[{pos}].text")
        check_text(text, f"doc {doc_id!r} text", f"documents[{pos}].text")
        unknown = sorted(str(k) for k in doc if k not in DOC_KEYS and not (isinstance(k, str) and
                                                                            k.startswith(("rank_", "score_"))))
        if unknown:
            raise InputError(f"doc {doc_id!r} (position {pos}): unknown key(s) {unknown[:5]}; expected "
                             f"{list(DOC_KEYS)} or a retriever's rank_<r> / score_<r>",
                             field=f"documents[{pos}].{unknown[0]}")
        title = doc.get("title") or ""
        if not isinstance(title, str):
            raise InputError(f"doc {doc_id!r}: title must be a string, found {type(title).__name__}",
                             field=f"documents[{pos}].title")
        check_text(title, f"doc {doc_id!r} title", f"documents[{pos}].title")
        if isinstance(raw_id, str):
            check_text(raw_id, f"doc {pos} id", f"documents[{pos}].id")
        rank = doc.get("rank", pos + 1)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise InputError(f"doc {doc_id!r}: rank must be a positive integer, found {rank!r}",
                             field=f"documents[{pos}].rank")
        at = f"documents[{pos}]"
        score = _at(f"{at}.score", _number, doc.get("score"), doc_id, "score", missing_ok=True)
        if doc.get("timestamp") is not None and doc.get("timestamp_ms") is not None:
            raise InputError(f"doc {doc_id!r}: give either timestamp or timestamp_ms, found both", field=f"{at}.timestamp")
        stamp = (_at(f"{at}.timestamp_ms", parse_timestamp, doc["timestamp_ms"], doc_id, unit="ms")
                 if doc.get("timestamp_ms") is not None else _at(f"{at}.timestamp", parse_timestamp, doc.get("timestamp"), doc_id))
        rows.append({QID: QUERY_ID, QUERY: query, DOCNO: doc_id, TEXT: text, TITLE: title, TIMESTAMP: stamp,
                     RANK: int(rank), SCORE: score, RETRIEVER: retriever})
        for key, value in doc.items():
            if isinstance(key, str) and key.startswith(("rank_", "score_")):
                extra.setdefault(key, {})[pos] = _at(f"{at}.{key}", _number, value, doc_id, key, missing_ok=True)
        vector, model = _at(f"{at}.embedding", _embedding, doc, doc_id)
        if vector is not None:
            extra.setdefault(EMBEDDING, {})[pos], extra.setdefault(EMBEDDING_MODEL, {})[pos] = vector, model
    frame = pd.DataFrame(rows, columns=[QID, QUERY, DOCNO, TEXT, TITLE, TIMESTAMP, RANK, SCORE, RETRIEVER])
    # whether the app gave its first stage's order: a rank or a score on any document (else RANK is the position)
    ranked = any(isinstance(d, Mapping) and (d.get("rank") is not None or d.get("score") is not None)
                 or isinstance(d, Document) and (d.rank is not None or d.score is not None) for d in docs)
    dupes = frame[DOCNO][frame[DOCNO].duplicated()].unique().tolist()
    if dupes:
        raise InputError(f"docs: duplicate id(s) {dupes[:5]}; expected one entry per document",
                         field=f"documents[{int(frame.index[frame[DOCNO].duplicated()][0])}].id")
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    for key, by_pos in extra.items():
        if key in (EMBEDDING, EMBEDDING_MODEL):  # one vector / model id per document, None where absent
            frame[key] = pd.Series([by_pos.get(i) for i in range(len(frame))], index=frame.index, dtype=object)
        else:
            frame[key] = [by_pos.get(i, np.nan) for i in range(len(frame))]
    frame.attrs["ranked"] = ranked
    return frame
