"""Training labels from the interaction log (``[labels] source = "clicks"``): the training queries'
impressions, their shown documents' stored features and whether each was clicked, as the matrix the
ranker learns from, by the configured click model (:mod:`ranker.clicks`).

An impression names its query by ``qid`` or by its text (matched to the store's queries); a shown
document that is not among the query's stored candidates has no features and is left out (counted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.base import ReadsLog
from features.events import fingerprint, impressions_frame
from features.matrix import RankingData
from features import query_norm
from retrieval.errors import UsageError
from retrieval.frames import DOCNO, QUERY

from .clicks import pair_labels


def click_matrix(store, data: RankingData, labels, *, log=print, required: bool = True,
                 at_time=None, new_queries=frozenset()) -> tuple[RankingData | None, int]:
    """The click-labelled training rows of ``data``'s queries (``data``: their candidates' stored features,
    one row per query and document) from ``store``'s interaction log, by ``labels`` (a
    :class:`ranker.config.LabelsConfig`): ``position`` and ``raw``: a query group per impression, the clicks
    the labels (``position``: with the positions shown); ``pbm`` and ``ctr``: a row per query and document
    shown, graded by the click model. Also the deepest position shown (how deep a model learned from them
    may reorder). No impression of these queries: an error, or ``(None, 0)`` when not ``required`` (the
    validation queries). ``at_time`` (:func:`point_in_time`): the log-derived features' values at each
    impression's own time, in place of the stored ones; ``new_queries``: those queries' values as for a query
    never seen (``ranker.hide_history``)."""
    shown = impressions_frame(store, labels.kinds)
    times = pd.to_datetime(shown["time"], utc=True)
    keep = np.ones(len(shown), dtype=bool)
    if labels.since:
        keep &= (times >= utc(labels.since)).to_numpy()
    if labels.until:
        keep &= (times < utc(labels.until)).to_numpy()
    shown = shown[keep]
    known = store.sql("SELECT query, qid FROM queries")
    by_text = dict(zip(known["query"], known["qid"]))
    qid = shown["qid"].where(shown["qid"].notna(), shown["query"].map(by_text))
    shown = shown.assign(qid=qid.astype("string"))
    wanted = set(map(str, data.unique_qids))
    shown = shown[shown["qid"].isin(wanted)]
    row_of = {(q, d): i for i, (q, d) in enumerate(zip(data.qids, data.docnos))}
    rows = np.array([row_of.get((q, d), -1) for q, d in zip(shown["qid"], shown["docno"])], dtype=int)
    missing = int((rows < 0).sum())
    shown, rows = shown[rows >= 0], rows[rows >= 0]
    if shown.empty and not required:
        log(f"labels from clicks: no impression of the {len(wanted)} validation queries; no validation split")
        return None, 0
    if shown.empty:
        raise UsageError(f"{store.path}: labels.source = \"clicks\": the interaction log has no impression of these "
                         f"{len(wanted)} training queries" + (f" from {labels.since}" if labels.since else "")
                         + (f" before {labels.until}" if labels.until else "") + " that shows one of their candidates"
                         + "; ingest the app's events with `fusion-ltr events ingest FILE... --config ...`")
    number = {iid: n for n, iid in enumerate(pd.unique(shown["impression_id"]))}
    depth = int(shown["position"].max())
    X = data.X[rows]
    if at_time is not None:  # the feedback features as they were when each list was shown
        texts = dict(zip(known["qid"].astype(str), known["query"]))
        frame = pd.DataFrame({QUERY: [texts.get(q, t) for q, t in zip(shown["qid"], shown["query"])],
                              DOCNO: shown["docno"].astype(str).to_numpy()})
        unseen = shown["qid"].isin(set(new_queries)).to_numpy()
        for name, values in at_time(frame, shown["time"], unseen).items():
            X[:, data.feature_names.index(name)] = values
    sessions = RankingData.from_arrays(
        X, shown["clicked"].to_numpy().astype(np.int32),
        [f"{q}#{number[i]:09d}" for q, i in zip(shown["qid"], shown["impression_id"])], data.docnos[rows],
        data.feature_names, data.feature_versions,
        position=shown["position"].to_numpy())
    log(f"labels from clicks ({labels.click_model}): {len(number)} impressions of {shown['qid'].nunique()} training "
        f"queries, {int(sessions.y.sum())} clicks on {len(sessions.y)} shown documents"
        + (f"; {missing} shown documents not among the candidates left out" if missing else ""))
    if labels.click_model in ("pbm", "ctr"):
        pairs, theta = pair_labels(sessions, model=labels.click_model)
        if theta is not None:
            log("  examination by position (EM, position 1 = 1): " + " ".join(f"{t:.3f}" for t in theta[:10]))
        return pairs, depth
    if labels.click_model == "raw":  # the clicks as they are: no position for the booster to correct
        return RankingData(sessions.X, sessions.y, sessions.group, sessions.qids, sessions.docnos,
                           sessions.feature_names, sessions.feature_versions), depth
    return sessions, depth


def utc(value: str) -> pd.Timestamp:
    """An ISO 8601 time as a UTC timestamp (a time without a zone is UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def point_in_time(store, extractors, names: list[str], *, current: bool = True):
    """For the features among ``names`` that an extractor computes from the interaction log (a
    :class:`features.base.ReadsLog`), a function ``(frame, times, unseen) -> {feature: values}`` giving their
    values at each row's own time (``frame``: ``query``, ``docno``; ``times`` None: the reference time;
    ``unseen``: rows whose query counts as never seen); ``None`` when there are none. Refuses a per-query
    derivative of such a feature (its stored value would disagree) and, when ``current``, a snapshot older
    than ``store``'s log (the stored values and the served ones come from the snapshot)."""
    wanted = set(names)
    readers = [e for e in extractors if isinstance(e, ReadsLog) and wanted & set(e.FEATURES)]
    if not readers:
        return None
    for ext in readers:
        derived = [n for n in names if query_norm.split(n) and query_norm.split(n)[0] in ext.FEATURES]
        if derived:
            raise UsageError(f"{derived} normalise {ext.name} features per query, but their values recomputed for "
                             "training (at each impression's time, labels.source = \"clicks\"; or as for new queries, "
                             "ranker.hide_history) are not normalised: leave them out of ranker.normalize, or set "
                             "ranker.hide_history = 0 with judgements")
        if not current:
            continue
        now = fingerprint(store)  # counts and latest times: cheap, where reading the log again is not
        if now != ext.log_:
            raise UsageError(f"{store.path}: the interaction log changed since `fusion-ltr features` took the {ext.name} "
                             f"features' snapshot (impressions and interactions, with their latest times: {ext.log_} "
                             f"then, {now} now): run `fusion-ltr features` (or `fusion-ltr run`) again")

    def at_time(frame, times=None, unseen=None):
        out = {}
        for ext in readers:
            values = ext.compute_at(frame, times, unseen=unseen)
            out |= {n: v for n, v in values.items() if n in wanted}
        return out

    return at_time


def as_new_queries(data: RankingData | None, at_time, queries: set[str], texts: dict) -> RankingData | None:
    """``data`` with the feedback features of ``queries``' rows computed as for queries never seen before
    (at the reference time: the stored values' moment), by ``at_time`` (:func:`point_in_time`)."""
    if data is None or at_time is None or not queries:
        return data
    rows = np.flatnonzero(np.isin(data.qids, np.asarray(sorted(queries), dtype=str)))
    if not len(rows):
        return data
    frame = pd.DataFrame({QUERY: [texts.get(q, "") for q in data.qids[rows]], DOCNO: data.docnos[rows]})
    X = data.X.copy()
    for name, values in at_time(frame, None, np.ones(len(rows), dtype=bool)).items():
        X[rows, data.feature_names.index(name)] = values
    return RankingData(X, data.y, data.group, data.qids, data.docnos, list(data.feature_names),
                       data.feature_versions, data.base, data.position)
