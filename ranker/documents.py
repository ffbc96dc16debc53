"""What an app hands the Scorer: documents as strings, mappings or :class:`Document`, checked at the
boundary and turned into a candidate frame (the contract of :mod:`retrieval.frames`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from retrieval.errors import UsageError
from retrieval.frames import DOCNO, QID, QUERY, RANK, RETRIEVER, SCORE, TEXT, TIMESTAMP, TITLE

QUERY_ID = "_query"  # the qid of an app's query: never one an extractor's model was trained on
DOC_KEYS = ("id", "text", "title", "timestamp", "score", "rank")


@dataclass(frozen=True)
class Document:
    """One candidate document of an app (strings and mappings with the same keys work too).

    ``timestamp``: an ISO 8601 string, a datetime or Unix seconds. ``score`` / ``rank``: the app's
    first-stage score and 1-based rank (rank defaults to the position in the list). ``first_stage``:
    ``rank_<r>`` / ``score_<r>`` of the run's member retrievers, when the app has them.
    """

    text: str
    id: str | None = None
    title: str = ""
    timestamp: str | dt.datetime | float | int | None = None
    score: float | None = None
    rank: int | None = None
    first_stage: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in DOC_KEYS if getattr(self, k) is not None}
        return out | dict(self.first_stage)


def check_query(query) -> str:
    if not isinstance(query, str) or not query.strip():
        raise UsageError(f"query: expected a non-empty string, found {query!r}")
    return query


def parse_timestamp(value, doc_id: str) -> pd.Timestamp:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT or value == "":
        return pd.NaT
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float, np.integer, np.floating)):
            ts = pd.Timestamp(float(value), unit="s")  # a number is a Unix time in seconds
        elif isinstance(value, (str, dt.date, dt.datetime, pd.Timestamp, np.datetime64)):
            ts = pd.Timestamp(value)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"doc {doc_id!r}: timestamp {value!r} is not a date: expected an ISO 8601 string, a "
                         "datetime or Unix seconds") from None
    if pd.isna(ts):
        raise UsageError(f"doc {doc_id!r}: timestamp {value!r} is not a date")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def candidate_frame(query: str, docs: list, retriever: str) -> pd.DataFrame:
    """An app's docs as a candidate frame (the contract of :mod:`retrieval.frames`)."""
    rows, extra = [], {}
    for pos, doc in enumerate(docs):
        if isinstance(doc, str):
            doc = {"text": doc}
        elif isinstance(doc, Document):
            doc = doc.as_dict()
        if not isinstance(doc, Mapping):
            raise UsageError(f"doc {pos}: expected a string, a Document or a mapping with {list(DOC_KEYS)}, "
                            f"found {type(doc).__name__}")
        doc_id = str(doc.get("id", pos))
        text = doc.get("text")
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"doc {doc_id!r} (position {pos}): expected a non-empty 'text' string, found "
                             f"{text!r}; its keys: {sorted(doc)}")
        title = doc.get("title") or ""
        if not isinstance(title, str):
            raise UsageError(f"doc {doc_id!r}: title must be a string, found {type(title).__name__}")
        rank = doc.get("rank", pos + 1)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise UsageError(f"doc {doc_id!r}: rank must be a positive integer, found {rank!r}")
        score = doc.get("score")
        try:
            score = np.nan if score is None else float(score)
        except (TypeError, ValueError):
            raise UsageError(f"doc {doc_id!r}: score must be a number, found {score!r}") from None
        rows.append({QID: QUERY_ID, QUERY: query, DOCNO: doc_id, TEXT: text, TITLE: title,
                     TIMESTAMP: parse_timestamp(doc.get("timestamp"), doc_id), RANK: int(rank), SCORE: score,
                     RETRIEVER: retriever})
        for key, value in doc.items():
            if key.startswith(("rank_", "score_")):
                extra.setdefault(key, {})[pos] = float(value) if value is not None else np.nan
    frame = pd.DataFrame(rows)
    dupes = frame[DOCNO][frame[DOCNO].duplicated()].unique().tolist()
    if dupes:
        raise UsageError(f"docs: duplicate id(s) {dupes[:5]}; expected one entry per document")
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    for key, by_pos in extra.items():
        frame[key] = [by_pos.get(i, np.nan) for i in range(len(frame))]
    return frame
