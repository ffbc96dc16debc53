"""Feedback features: what people did with a document before, read from the interaction log
(:mod:`features.events`), **point in time**: the value for a moment ``t`` counts only the events before ``t``.

Per document, and per (query, document) with the query's text normalised (case and spaces)::

    ctr_doc, ctr_doc_recent                 clicks / impressions of the document over the last window_days /
    ctr_query_doc, ctr_query_doc_recent     recent_days (and of the pair), Bayes-smoothed toward the log's own
                                            click-through rate over the window (prior_strength pseudo-impressions)
    shown_doc, shown_query_doc              log(1 + impressions) over window_days
    last_click_days                         days since the document's last click (NaN: none before t)

An impression counts at its time, a click (an interaction of one of ``kinds``, once per impression and
document) at the time of its first such interaction. The log's global rate that the smoothing shrinks toward
is itself counted before ``t``, so adding later events never changes an earlier moment's value.

Which moment: an impression's own time when training from clicks (``ranker.labels`` computes the values at
each impression's time with :meth:`FeedbackExtractor.compute_at`), otherwise ``reference_time``: ``"log"``
is just after the snapshot's last event, resolved when the log is read. The snapshot is this extractor's
corpus state: read from the run's feature store by ``fusion-ltr features`` (:meth:`read_log`), saved beside
a trained model, and what the Scorer and the service read: they serve the values as of the snapshot (a
grown log is served after ``fusion-ltr run`` builds and trains again), the same values training and
evaluation stored for the same pairs. Not corrected for position: a document shown first is clicked more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.errors import MissingInputError
from retrieval.frames import DOCNO, QUERY
from retrieval.params import ConfigError

from .base import BaseExtractor, CorpusState, ReadsLog, digest

DAY_NS = 86_400 * 10**9
LOG_END = "log"


@dataclass(frozen=True)
class FeedbackParams:
    kinds: tuple[str, ...] = ("click",)  # interaction kinds that count as a click
    window_days: float = 30.0  # the long window of ctr_* and shown_*
    recent_days: float = 7.0  # the short window of *_recent
    prior_strength: float = 10.0  # pseudo-impressions of the smoothing prior (its mean: the log's CTR before t)
    reference_time: str = LOG_END  # the moment of stored and served values: "log" (just after the last event) or ISO
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 4096  # pairs per batch of the feature build (stored as each batch completes)


def query_key(text) -> str:
    """A query's identity in the log: its text, lower case, runs of white space as one space."""
    return "" if text is None or (isinstance(text, float) and np.isnan(text)) else " ".join(str(text).lower().split())


class _Times:
    """Event times by integer key, sorted once: for rows (key, moment), the number of the key's events
    before the moment, and the latest such time; vectorised and exact (times in nanoseconds)."""

    def __init__(self, codes: np.ndarray, times: np.ndarray, tags: np.ndarray | None = None):
        codes, times = np.asarray(codes, dtype=np.int64), np.asarray(times, dtype=np.int64)
        order = np.lexsort((times, codes))
        codes, self.times = codes[order], times[order]
        self.tags = None if tags is None else np.asarray(tags, dtype=np.int64)[order]  # e.g. each event's pair
        self.distinct = np.unique(self.times)  # an event's rank among the distinct times keeps the order exact
        self.span = len(self.distinct) + 1
        self.sorted_keys = codes * self.span + np.searchsorted(self.distinct, self.times)

    def _before(self, codes: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the index just past its key's last event before ``at``, and its key's first index."""
        rank = np.searchsorted(self.distinct, at, side="left")  # distinct event times < at
        safe = np.maximum(codes, 0)
        end = np.searchsorted(self.sorted_keys, safe * self.span + rank, side="left")
        first = np.searchsorted(self.sorted_keys, safe * self.span, side="left")
        return end, first

    def count(self, codes: np.ndarray, at: np.ndarray, width_ns: int) -> np.ndarray:
        """Events of each row's key in [at - width, at); 0 for a key with none (code -1)."""
        end, _ = self._before(codes, at)
        begin, _ = self._before(codes, at - width_ns)
        return np.where(codes >= 0, end - begin, 0).astype(np.float64)

    def last(self, codes: np.ndarray, at: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        """The latest event time of each row's key before its moment (NaN: none); ``skip`` (a tag per row,
        -1: none): passing over the events with that tag."""
        end, first = self._before(codes, at)
        if skip is not None and self.tags is not None:
            todo = np.flatnonzero((skip >= 0) & (codes >= 0))
            while len(todo):  # step back past the skipped tag's events, row by row where it is the latest
                i = end[todo] - 1
                same = (i >= first[todo]) & (self.tags[np.maximum(i, 0)] == skip[todo])
                todo = todo[same]
                end[todo] -= 1
        has = (codes >= 0) & (end > first)
        return np.where(has, self.times[np.maximum(end - 1, 0)].astype(np.float64) if len(self.times) else 0.0,
                        np.nan)


class _Keys:
    """Documents, and (query, document) pairs with the query's text normalised, as integer codes (-1: not in
    the log). Built from the log's rows in one pass (``log_docs`` / ``log_pairs``: their codes)."""

    def __init__(self, queries, docnos):
        self.log_docs, docs = pd.factorize(_ids(docnos))
        self.docs = pd.Index(docs)
        codes, normal = _normalised(queries)
        self.queries = pd.Index(normal)
        raw = codes.astype(np.int64) * max(len(self.docs), 1) + self.log_docs
        self.log_pairs, pairs = pd.factorize(raw)
        self.pairs = pd.Index(pairs)

    def doc_codes(self, docnos) -> np.ndarray:
        return self.docs.get_indexer(_ids(docnos)) if len(self.docs) else np.full(len(docnos), -1)

    def pair_codes(self, queries, docnos) -> np.ndarray:
        codes, normal = _normalised(queries)
        q = (self.queries.get_indexer(normal) if len(self.queries) else np.full(len(normal), -1))[codes] \
            if len(codes) else np.zeros(0, dtype=np.int64)
        d = self.doc_codes(docnos)
        raw = np.where((q >= 0) & (d >= 0), q.astype(np.int64) * max(len(self.docs), 1) + d, -1)
        return np.where(raw >= 0, self.pairs.get_indexer(raw) if len(self.pairs) else -1, -1)


def _ids(docnos) -> pd.Series:
    return pd.Series(docnos).reset_index(drop=True).astype(str)


def _normalised(queries) -> tuple[np.ndarray, pd.Index]:
    """Each row's code into the distinct :func:`query_key` texts, and those texts (normalised once per
    distinct text)."""
    codes, uniques = pd.factorize(pd.Series(queries, dtype=object).reset_index(drop=True), use_na_sentinel=False)
    normal_codes, normal = pd.factorize(pd.Series([query_key(u) for u in uniques], dtype=object))
    return (normal_codes[codes] if len(codes) else np.zeros(0, dtype=np.int64)), pd.Index(normal, dtype=object)


class FeedbackExtractor(BaseExtractor, CorpusState, ReadsLog):
    """Click-through rates (smoothed), impression counts and last-click age of each document and (query,
    document) pair, from the interaction log; a value counts only the events before its moment: each
    impression's own time when training from clicks, else ``reference_time``."""

    name = "feedback"
    CODE_VERSION = "1"
    Params = FeedbackParams
    FEATURES = {
        "ctr_doc": "the document's smoothed click-through rate over window_days before t",
        "ctr_doc_recent": "the document's smoothed click-through rate over recent_days before t",
        "ctr_query_doc": "the (query, document) pair's smoothed click-through rate over window_days before t",
        "ctr_query_doc_recent": "the pair's smoothed click-through rate over recent_days before t",
        "shown_doc": "log(1 + the document's impressions over window_days before t)",
        "shown_query_doc": "log(1 + the pair's impressions over window_days before t)",
        "last_click_days": "days since the document's last click before t (NaN: none)",
    }

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        p = self.params
        if not p.kinds:
            raise ConfigError("features.feedback.kinds: expected at least one interaction kind, found none")
        if not 0 < p.recent_days <= p.window_days:
            raise ConfigError(f"features.feedback: expected 0 < recent_days <= window_days, found recent_days = "
                              f"{p.recent_days}, window_days = {p.window_days}")
        if p.prior_strength < 0:
            raise ConfigError(f"features.feedback.prior_strength must be >= 0, found {p.prior_strength}")
        if p.reference_time != LOG_END and pd.isna(pd.to_datetime(p.reference_time, utc=True, errors="coerce")):
            raise ConfigError(f"features.feedback.reference_time: expected an ISO time or 'log', found "
                              f"{p.reference_time!r}")
        self._use(_empty(), _empty())

    # -- the snapshot ------------------------------------------------------------------------
    def _use(self, shown: pd.DataFrame, clicks: pd.DataFrame, log=None) -> None:
        self.shown_, self.clicks_ = shown.reset_index(drop=True), clicks.reset_index(drop=True)
        self.log_ = log  # the whole log's fingerprint when read (features.events.fingerprint): is it still current?
        self._keys = keys = _Keys(pd.concat([shown["query"], clicks["query"]], ignore_index=True),
                                  pd.concat([shown[DOCNO], clicks[DOCNO]], ignore_index=True))
        self._times = {}
        for name, frame, rows in (("shown", shown, slice(0, len(shown))), ("clicks", clicks, slice(len(shown), None))):
            t = frame["time"].to_numpy(np.int64)
            self._times[name] = {"doc": _Times(keys.log_docs[rows], t, tags=keys.log_pairs[rows]),
                                 "pair": _Times(keys.log_pairs[rows], t),
                                 "all": _Times(np.zeros(len(frame), dtype=np.int64), t)}
        last = max([int(f["time"].max()) for f in (shown, clicks) if len(f)], default=None)
        if self.params.reference_time != LOG_END:
            self.reference_ns = int(epoch_ns([self.params.reference_time])[0])
        else:  # just after the last event, so that it counts; an empty log: its values are the priors
            self.reference_ns = (last + 1000) if last is not None else 0
        self._version = None

    def read_log(self, store) -> "FeedbackExtractor":
        """Take the snapshot of ``store``'s interaction log (none there: an empty one)."""
        from .events import fingerprint, has_log

        if not has_log(store):
            self._use(_empty(), _empty(), log=fingerprint(store))
            return self
        store.con.register("_feedback_kinds", pd.DataFrame({"kind": [str(k) for k in self.params.kinds]}))
        query = "coalesce(q.query, i.query)"  # the store's text for a known qid: the pairs' text
        shown = store.sql(f"SELECT epoch_ns(i.time) AS time, d.docno, {query} AS query FROM impressions i "
                          "JOIN impression_docs d USING (impression_id) LEFT JOIN queries q ON q.qid = i.qid")
        clicks = store.sql(f"SELECT epoch_ns(min(x.time)) AS time, x.docno, any_value({query}) AS query "
                           "FROM interactions x JOIN impressions i USING (impression_id) LEFT JOIN queries q "
                           "ON q.qid = i.qid WHERE x.kind IN (SELECT kind FROM _feedback_kinds) "
                           "GROUP BY x.impression_id, x.docno")
        self._use(_plain(shown), _plain(clicks), log=fingerprint(store))
        return self

    def fit(self, corpus: pd.DataFrame) -> "FeedbackExtractor":
        """The corpus plays no part (the snapshot is :meth:`read_log`'s)."""
        return self

    def state(self) -> dict:
        frames = [self.shown_, self.clicks_]
        content = [int(pd.util.hash_pandas_object(f, index=False).sum()) if len(f) else 0 for f in frames]
        return {"shown": len(self.shown_), "clicks": len(self.clicks_), "content": digest(content),
                "reference": pd.Timestamp(self.reference_ns, tz="UTC").isoformat()}

    def save_state(self, folder: Path) -> None:
        out = Path(folder) / self.name
        out.mkdir(parents=True, exist_ok=True)
        self.shown_.to_parquet(out / "shown.parquet", index=False)
        self.clicks_.to_parquet(out / "clicks.parquet", index=False)
        (out / "state.json").write_text(json.dumps(self.state() | {"log": self.log_}, indent=2))

    def load_state(self, folder: Path) -> "FeedbackExtractor":
        out = Path(folder) / self.name
        if not (out / "shown.parquet").exists() or not (out / "clicks.parquet").exists():
            raise MissingInputError(f"{out}: the interaction log snapshot the feedback features were built from is "
                                    "missing (expected shown.parquet and clicks.parquet)")
        saved = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
        self._use(pd.read_parquet(out / "shown.parquet"), pd.read_parquet(out / "clicks.parquet"), log=saved.get("log"))
        return self

    # -- values ------------------------------------------------------------------------------
    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.compute_at(pairs)

    def compute_at(self, pairs: pd.DataFrame, at=None, *, unseen=None) -> dict[str, np.ndarray]:
        """The features of ``pairs`` (``query``, ``docno``) at moments ``at`` (one per row: UTC times, or
        nanoseconds since the epoch; none: the reference time), from the events before each. ``unseen``
        (a boolean per row): those rows as if their query had never been seen, the case of a new query that
        training learns to rank: its own events left out of everything, the documents' history from the
        other queries kept (the pair's features from no history)."""
        at = np.full(len(pairs), self.reference_ns, dtype=np.int64) if at is None else epoch_ns(at)
        docs, pair = self._keys.doc_codes(pairs[DOCNO]), self._keys.pair_codes(pairs[QUERY], pairs[DOCNO])
        hide = np.zeros(len(at), dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool) & (pair >= 0)
        s, c = self._times["shown"], self._times["clicks"]
        k, out = self.params.prior_strength, {}

        def rate(clicked, shown, prior):
            return (clicked + k * prior) / (shown + k) if k > 0 else np.where(shown > 0, clicked / np.maximum(shown, 1),
                                                                             prior)

        for window, suffix in ((self.params.window_days, ""), (self.params.recent_days, "_recent")):
            width = int(window * DAY_NS)
            all_ = np.zeros(len(at), dtype=np.int64)
            prior = (c["all"].count(all_, at, width) + 1.0) / (s["all"].count(all_, at, width) + 2.0)
            pair_shown, pair_clicked = s["pair"].count(pair, at, width), c["pair"].count(pair, at, width)
            doc_shown = s["doc"].count(docs, at, width) - np.where(hide, pair_shown, 0)  # a new query's own: out
            doc_clicked = c["doc"].count(docs, at, width) - np.where(hide, pair_clicked, 0)
            pair_shown, pair_clicked = np.where(hide, 0, pair_shown), np.where(hide, 0, pair_clicked)
            out["ctr_doc" + suffix] = rate(doc_clicked, doc_shown, prior)
            out["ctr_query_doc" + suffix] = rate(pair_clicked, pair_shown, prior)
            if not suffix:
                out["shown_doc"], out["shown_query_doc"] = np.log1p(doc_shown), np.log1p(pair_shown)
        last = c["doc"].last(docs, at, skip=np.where(hide, pair, -1))
        out["last_click_days"] = (at - last) / DAY_NS
        return {n: out[n] for n in self.FEATURES}


def epoch_ns(times) -> np.ndarray:
    """Times (UTC datetimes, ISO strings, or already nanoseconds since the epoch) as int64 nanoseconds."""
    values = np.asarray(times)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    return pd.to_datetime(pd.Series(times), utc=True).dt.as_unit("ns").array.asi8.astype(np.int64)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"time": pd.Series([], dtype=np.int64), DOCNO: pd.Series([], dtype=object),
                         "query": pd.Series([], dtype=object)})


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"time": frame["time"].astype(np.int64), DOCNO: frame[DOCNO].astype(str),
                         "query": frame["query"]})

