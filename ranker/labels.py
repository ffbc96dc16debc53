"""Training labels from the interaction log (``[labels] source = "clicks"``): the training queries'
impressions, their shown documents' stored features and whether each was clicked, as the matrix the
ranker learns from, by the configured click model (:mod:`ranker.clicks`).

An impression names its query by ``qid`` or by its text (matched to the store's queries); a shown
document that is not among the query's stored candidates has no features and is left out (counted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.events import impressions_frame
from features.matrix import RankingData
from retrieval.errors import UsageError

from .clicks import pair_labels


def click_matrix(store, data: RankingData, labels, *, log=print,
                 required: bool = True) -> tuple[RankingData | None, int]:
    """The click-labelled training rows of ``data``'s queries (``data``: their candidates' stored features,
    one row per query and document) from ``store``'s interaction log, by ``labels`` (a
    :class:`ranker.config.LabelsConfig`): ``position`` and ``raw``: a query group per impression, the clicks
    the labels (``position``: with the positions shown); ``pbm`` and ``ctr``: a row per query and document
    shown, graded by the click model. Also the deepest position shown (how deep a model learned from them
    may reorder). No impression of these queries: an error, or ``(None, 0)`` when not ``required`` (the
    validation queries)."""
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
    sessions = RankingData.from_arrays(
        data.X[rows], shown["clicked"].to_numpy().astype(np.int32),
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
