"""Clicks as labels: the position-based click model (PBM), sessions simulated with it on a judged
collection, and its examination probabilities estimated from a log by EM.

The PBM (Richardson et al. 2007; Joachims et al. 2017): a document shown at position k is examined with
probability ``theta_k`` and, once examined, clicked with a probability that depends on its relevance
only. Clicks alone confound the two (a document shown first is clicked more because it is seen more);
training on clicks with the positions they were shown at lets the booster remove that bias
(:class:`features.matrix.RankingData` ``position``: LightGBM's unbiased lambdarank, XGBoost's
``lambdarank_unbiased``), and :func:`pbm_em` estimates ``theta`` from the log itself.
"""

from __future__ import annotations

import numpy as np

from features.matrix import RankingData
from retrieval.errors import UsageError


def examination(positions, eta: float = 1.0) -> np.ndarray:
    """P(examined) at each 1-based position: ``(1 / position) ** eta`` (Joachims et al. 2017)."""
    return (1.0 / np.asarray(positions, dtype=np.float64)) ** eta


def click_probability(labels, max_label: int, *, relevant: float = 1.0, non_relevant: float = 0.1) -> np.ndarray:
    """P(click | examined) of graded labels: ``non_relevant`` for 0 rising to ``relevant`` for
    ``max_label`` as ``2**label - 1`` (Oosterhuis and de Rijke's graded form)."""
    y = np.clip(np.asarray(labels, dtype=np.float64), 0, max_label)
    return non_relevant + (relevant - non_relevant) * (2.0 ** y - 1) / (2.0 ** max_label - 1)


def simulate(data: RankingData, scores: np.ndarray, sessions: int, *, top_k: int = 10, eta: float = 1.0,
             relevant: float = 1.0, non_relevant: float = 0.1, explore: float = 0.0, seed: int = 0) -> RankingData:
    """``sessions`` searches, each of a query drawn uniformly from ``data``'s (its labels: the truth), showing
    its ``top_k`` documents by ``scores`` (the production ranker) and clicking by the PBM; ``explore``: the
    share of sessions whose top ``top_k`` are shown in a random order instead (result randomisation, from
    which examination can be estimated). Returns the shown rows: one group per session (qid
    ``"<qid>#<n>"``), ``y`` the clicks (0/1), ``position`` 1..top_k."""
    if sessions < 1 or top_k < 1:
        raise UsageError(f"simulate: expected sessions >= 1 and top_k >= 1, found {sessions} and {top_k}")
    rng = np.random.default_rng(seed)
    max_label = int(max(1, np.max(data.y)))
    starts = np.cumsum(np.r_[0, data.group[:-1]]).astype(int)
    shown = []  # per query: its rows in the order shown
    for s, g in zip(starts, data.group):
        shown.append(s + np.argsort(-scores[s:s + g], kind="stable")[:top_k])
    picks = rng.integers(0, len(shown), size=sessions)
    explored = rng.random(sessions) < explore
    rows = np.concatenate([rng.permutation(shown[q]) if x else shown[q] for q, x in zip(picks, explored)])
    position = np.concatenate([np.arange(1, len(shown[q]) + 1) for q in picks])
    p = examination(position, eta) * click_probability(data.y[rows], max_label, relevant=relevant,
                                                       non_relevant=non_relevant)
    clicks = (rng.random(len(rows)) < p).astype(np.int32)
    width = len(str(sessions))
    session = np.repeat([f"{data.qids[shown[q][0]]}#{n:0{width}d}" for n, q in enumerate(picks)],
                        [len(shown[q]) for q in picks])
    return RankingData.from_arrays(data.X[rows], clicks, session, data.docnos[rows], data.feature_names,
                                   data.feature_versions, position=position)


def pbm_em(positions, clicks, pairs, *, iterations: int = 100) -> tuple[np.ndarray, dict]:
    """The PBM fitted to a log by expectation-maximisation (Wang et al., WSDM 2018, without the regression):
    ``positions`` (1-based) and ``clicks`` (0/1) of each shown row, ``pairs`` its (query, document) key.
    Returns ``theta`` (P(examined) per position, index 0 = position 1, scaled so that position 1 is 1:
    only ratios are identified) and ``gamma`` (P(click | examined) per pair)."""
    positions = np.asarray(positions, dtype=int)
    clicks = np.asarray(clicks, dtype=np.float64)
    keys, pair_idx = np.unique(np.asarray([str(p) for p in pairs]), return_inverse=True)
    k = positions.max()
    theta, gamma = np.full(k, 0.5), np.full(len(keys), 0.5)
    pos = positions - 1
    for _ in range(iterations):
        t, g = theta[pos], gamma[pair_idx]
        # P(examined | no click) and P(relevant | no click); a click means both
        unclicked = 1 - t * g
        e = np.where(clicks > 0, 1.0, t * (1 - g) / unclicked)
        r = np.where(clicks > 0, 1.0, (1 - t) * g / unclicked)
        theta = np.bincount(pos, e, minlength=k) / np.maximum(np.bincount(pos, minlength=k), 1)
        gamma = np.bincount(pair_idx, r, minlength=len(keys)) / np.bincount(pair_idx, minlength=len(keys))
        theta, gamma = np.clip(theta, 1e-6, 1.0), np.clip(gamma, 1e-6, 1 - 1e-6)
    return theta / theta[0], dict(zip(keys.tolist(), gamma.tolist()))


def pair_labels(sessions: RankingData, *, model: str = "pbm", grades: int = 4, iterations: int = 100):
    """One row per (query, document) shown in ``sessions`` (a group per impression, qid ``"<qid>#..."``,
    ``y`` clicks, ``position`` shown) with a graded label from the clicks: ``model = "ctr"`` the click-through
    rate, ``"pbm"`` the PBM's P(click | examined) (:func:`pbm_em`, position bias removed); each mapped to
    0..``grades`` (rounded). Returns the rows (groups per query) and the PBM's examination curve (None for
    "ctr")."""
    if model not in ("ctr", "pbm"):
        raise UsageError(f"pair_labels: model must be 'ctr' or 'pbm', found {model!r}")
    queries = np.array([str(q).rsplit("#", 1)[0] for q in sessions.qids])
    keys = np.char.add(np.char.add(queries, "\t"), sessions.docnos.astype(str))
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    theta = None
    if model == "ctr":
        rel = np.bincount(inverse, sessions.y.astype(float)) / np.bincount(inverse)
    else:
        theta, gamma = pbm_em(sessions.position, sessions.y, keys, iterations=iterations)
        rel = np.array([gamma[k] for k in uniq.tolist()])
    labels = np.clip(np.round(rel * grades), 0, grades).astype(np.int32)
    data = RankingData.from_arrays(sessions.X[first], labels, queries[first], sessions.docnos[first],
                                   sessions.feature_names, sessions.feature_versions)
    return data, theta
