"""The ranking matrix: features of (query, document) pairs with their query groups, sorted once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.errors import UnknownKeyError, UsageError


@dataclass
class RankingData:
    """A feature matrix for learning to rank, sorted by query once, here.

    Rows of one query are contiguous (queries in ``qid`` order, documents in first-stage rank order);
    ``group`` holds the number of rows of each query in that order, as LightGBM and XGBoost expect.
    ``base`` (optional): a score each row starts from, which a model fits on top of and adds to its own
    prediction (a cascade stage boosting from the previous stage's score; LightGBM's ``init_score``).
    ``position`` (optional): the 1-based position each row was shown at, for labels that are clicks (a
    query group is then one impression): the boosters correct the position bias with it (LightGBM's
    ``position``, XGBoost's ``lambdarank_unbiased``).
    """

    X: np.ndarray
    y: np.ndarray
    group: np.ndarray
    qids: np.ndarray
    docnos: np.ndarray
    feature_names: list[str]
    feature_versions: list[str] | None = None
    base: np.ndarray | None = None
    position: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.X)
        if self.base is not None and len(self.base) != n:
            raise UsageError(f"RankingData: base has {len(self.base)} values for {n} rows")
        if self.position is not None and len(self.position) != n:
            raise UsageError(f"RankingData: position has {len(self.position)} values for {n} rows")
        if not (len(self.y) == len(self.qids) == len(self.docnos) == n):
            raise UsageError(f"RankingData: X has {n} rows but y/qids/docnos have "
                             f"{len(self.y)}/{len(self.qids)}/{len(self.docnos)}")
        if self.X.ndim != 2 or self.X.shape[1] != len(self.feature_names):
            raise UsageError(f"RankingData: X has shape {self.X.shape} for {len(self.feature_names)} feature names")
        if int(np.sum(self.group)) != n:
            raise UsageError(f"RankingData: groups sum to {int(np.sum(self.group))}, expected {n} rows")

    @classmethod
    def from_arrays(cls, X, y, qids, docnos=None, feature_names=None, feature_versions=None,
                    base=None, position=None) -> "RankingData":
        """Sort rows by query (stable: keeps the order within a query) and derive the groups."""
        X = np.asarray(X, dtype=np.float64)
        qids = np.asarray(qids).astype(str)
        order = np.argsort(qids, kind="stable")
        qids = qids[order]
        _, first, counts = np.unique(qids, return_index=True, return_counts=True)
        group = counts[np.argsort(first)]
        docnos = np.arange(len(X)).astype(str) if docnos is None else np.asarray(docnos).astype(str)
        names = feature_names or [f"f{i + 1}" for i in range(X.shape[1])]
        return cls(X[order], np.asarray(y)[order], group, qids, docnos[order], list(names),
                   list(feature_versions) if feature_versions is not None else None,
                   None if base is None else np.asarray(base, dtype=np.float64)[order],
                   None if position is None else np.asarray(position, dtype=np.int32)[order])

    @classmethod
    def concat(cls, parts: list["RankingData | None"]) -> "RankingData":
        """The rows of several RankingData with the same features (None parts are skipped)."""
        parts = [p for p in parts if p is not None]
        names = parts[0].feature_names
        if any(p.feature_names != names for p in parts):
            raise UsageError(f"RankingData.concat: feature names differ: {[p.feature_names for p in parts]}")
        if len({p.base is None for p in parts}) > 1:
            raise UsageError("RankingData.concat: some parts have a base score and some do not")
        base = None if parts[0].base is None else np.concatenate([p.base for p in parts])
        if len({p.position is None for p in parts}) > 1:
            raise UsageError("RankingData.concat: some parts have shown positions and some do not")
        position = None if parts[0].position is None else np.concatenate([p.position for p in parts])
        return cls.from_arrays(np.vstack([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                               np.concatenate([p.qids for p in parts]), np.concatenate([p.docnos for p in parts]),
                               names, parts[0].feature_versions, base, position)

    def subset(self, qids) -> "RankingData":
        """The rows of the given queries (order of the data kept)."""
        mask = np.isin(self.qids, np.asarray(list(qids)).astype(str))
        return RankingData.from_arrays(self.X[mask], self.y[mask], self.qids[mask], self.docnos[mask],
                                       self.feature_names, self.feature_versions,
                                       None if self.base is None else self.base[mask],
                                       None if self.position is None else self.position[mask])

    def masked(self, names, qids=None) -> "RankingData":
        """The same rows with the columns ``names`` (those of them it has) set to NaN ("not given") for
        the rows of ``qids`` (default: every row)."""
        cols = [j for j, n in enumerate(self.feature_names) if n in set(names)]
        if not cols:
            return self
        rows = np.ones(len(self.y), bool) if qids is None else np.isin(self.qids, np.asarray(list(qids)).astype(str))
        X = self.X.copy()
        X[np.ix_(rows, cols)] = np.nan
        return RankingData(X, self.y, self.group, self.qids, self.docnos, list(self.feature_names),
                           self.feature_versions, self.base, self.position)

    def select(self, names: list[str]) -> "RankingData":
        """The same rows with only the named feature columns, in that order."""
        missing = [n for n in names if n not in self.feature_names]
        if missing:
            raise UnknownKeyError(f"RankingData.select: unknown feature(s) {missing}; have {self.feature_names}")
        idx = [self.feature_names.index(n) for n in names]
        versions = [self.feature_versions[i] for i in idx] if self.feature_versions else None
        return RankingData(self.X[:, idx], self.y, self.group, self.qids, self.docnos, list(names), versions, self.base,
                           self.position)

    @property
    def unique_qids(self) -> np.ndarray:
        return pd.unique(self.qids)
