"""Query-level normalisation: a score feature relative to the other documents of its query.

A raw score (BM25, a cosine, a cross-encoder logit) is not comparable across queries: a BM25 of 15 is
high for one query and low for another, so trees that split on the raw value learn thresholds that hold
for no query in particular (on SciFact a LambdaMART on BM25 alone ranks below BM25 itself, BENCHMARKS.md).
Three derived features per source feature ``f`` make it relative:

- ``f_qrank``: its rank among the query's documents (1 = the highest; ties share the best rank);
- ``f_qz``: its z-score among them (0 when they are all equal);
- ``f_qgap``: the query's best value minus its own (0 for the best).

"The query's documents" are the rows scored together: every candidate of the query for a one-model
ranker, the documents that reach the stage in a cascade. A NaN (a value not computed) is left out and
stays NaN. Training, evaluation and the Scorer all call :func:`add`, so the values match. A derived
feature's version is its source's plus ``+q<VERSION>``, so a changed source or rule is a new version.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval.errors import UsageError

from .base import FeatureSpec
from .matrix import RankingData

KINDS = {"qrank": "rank among the query's documents (1 = highest)",
         "qz": "z-score among the query's documents",
         "qgap": "the query's best value minus this one"}
VERSION = "1"


def split(name: str) -> tuple[str, str] | None:
    """``(source, kind)`` of a derived feature name, else None."""
    source, _, kind = name.rpartition("_")
    return (source, kind) if source and kind in KINDS else None


def derived_names(sources) -> list[str]:
    """Every derived feature of each source, in source order."""
    return [f"{s}_{k}" for s in sources for k in KINDS]


def raw_names(names) -> list[str]:
    """The stored features ``names`` need: each raw name, and each derived one's source (order kept)."""
    return list(dict.fromkeys(split(n)[0] if split(n) else n for n in names))


def spec(name: str, source: FeatureSpec) -> FeatureSpec:
    """The spec of derived feature ``name`` of ``source``."""
    kind = split(name)[1]
    return FeatureSpec(name, f"{source.version}+q{VERSION}", f"{source.name}: {KINDS[kind]}")


def _derive(values: np.ndarray, qids: np.ndarray, kind: str) -> np.ndarray:
    s = pd.Series(values)
    by = s.groupby(qids, sort=False)
    if kind == "qrank":
        out = by.rank(method="min", ascending=False)
    elif kind == "qgap":
        out = by.transform("max") - s
    else:
        dev = s - by.transform("mean")
        std = np.sqrt((dev ** 2).groupby(qids, sort=False).transform("mean"))
        out = (dev / std.where(std > 0)).where(std > 0, 0.0).where(s.notna())
    return out.to_numpy(np.float64)


def add(data: RankingData, names) -> RankingData:
    """``data`` with exactly the columns ``names``, in that order: raw ones as they are, derived ones
    computed from their source column over the rows of ``data`` of each query."""
    names = list(names)
    have = {n: i for i, n in enumerate(data.feature_names)}
    lacking = [n for n in raw_names(names) if n not in have]
    if lacking:
        raise UsageError(f"query normalisation: the data lacks {lacking} (has {data.feature_names})")
    derived = [n for n in names if split(n)]
    if not derived:
        return data.select(names)
    versions = data.feature_versions
    cols, vers = [], []
    for n in names:
        if not split(n):
            cols.append(data.X[:, have[n]])
            vers.append(versions[have[n]] if versions else None)
            continue
        source, kind = split(n)
        cols.append(_derive(data.X[:, have[source]], data.qids, kind))
        vers.append(f"{versions[have[source]]}+q{VERSION}" if versions else None)
    return RankingData(np.column_stack(cols), data.y, data.group, data.qids, data.docnos, names,
                       vers if versions else None, data.base)
