"""Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009) of any retrievers' runs."""

from __future__ import annotations

import pandas as pd

from .errors import UsageError
from .frames import DOCNO, QID, RANK, RETRIEVER, RUN_COLUMNS, SCORE, validate


def rrf(runs: list[pd.DataFrame], *, k: int = 60, depth: int | None = None, name: str = "hybrid") -> pd.DataFrame:
    """Fuse run frames: ``score(d) = sum over runs of 1 / (k + rank_run(d))``.

    A document absent from a run gets nothing from it. Ties are broken by docno, so the output is
    deterministic. ``depth`` keeps the top ``depth`` fused documents per query.
    """
    if not runs:
        raise UsageError("rrf: expected at least one run, found none")
    if k < 0:
        raise UsageError(f"rrf: k must be >= 0, found {k}")
    parts = []
    for i, run in enumerate(runs):
        validate(run, (QID, DOCNO, RANK), what=f"rrf run {i}")
        parts.append(run[[QID, DOCNO]].assign(**{SCORE: 1.0 / (k + run[RANK].astype(float))}))
    fused = pd.concat(parts).groupby([QID, DOCNO], as_index=False, sort=False)[SCORE].sum()
    fused = fused.sort_values([QID, SCORE, DOCNO], ascending=[True, False, True], kind="stable")
    fused[RANK] = fused.groupby(QID, sort=False).cumcount() + 1
    if depth is not None:
        fused = fused[fused[RANK] <= depth]
    fused[RETRIEVER] = name
    return fused[list(RUN_COLUMNS)].reset_index(drop=True)
