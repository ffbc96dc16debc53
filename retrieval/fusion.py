"""Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009) of any retrievers' runs."""

from __future__ import annotations

import pandas as pd

from .frames import DOCNO, QID, RANK, RETRIEVER, RUN_COLUMNS, SCORE, validate


def rrf(runs: list[pd.DataFrame], *, k: int = 60, depth: int | None = None, name: str = "hybrid") -> pd.DataFrame:
    """Fuse run frames: ``score(d) = sum over runs of 1 / (k + rank_run(d))``.

    A document absent from a run gets nothing from it. Ties are broken by docno, so the output is
    deterministic. ``depth`` keeps the top ``depth`` fused documents per query.
    """
    if not runs:
        raise ValueError("rrf: expected at least one run, found none")
    if k < 0:
        raise ValueError(f"rrf: k must be >= 0, found {k}")
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


class HybridRetriever:
    """Retrieve with every member retriever to ``depth`` and fuse their runs with RRF."""

    name = "hybrid"

    def __init__(self, retrievers: list, *, k: int = 60, depth: int | None = None):
        self.retrievers = list(retrievers)
        self.k = k
        self.depth = depth

    def index(self, corpus: pd.DataFrame) -> "HybridRetriever":
        for r in self.retrievers:
            r.index(corpus)
        return self

    def retrieve(self, queries: pd.DataFrame, k: int = 100) -> pd.DataFrame:
        runs = [r.retrieve(queries, self.depth or k) for r in self.retrievers]
        return rrf(runs, k=self.k, depth=k, name=self.name)


def first_stage_runs(member_runs: dict[str, pd.DataFrame], systems, *, k: int, rrf_k: int = 60) -> dict[str, pd.DataFrame]:
    """Each system's run cut to its top ``k``, from the members' deeper runs (``bm25``, ``dense``);
    ``hybrid`` fuses the members' full-depth runs with RRF first. The one recipe of offline
    retrieval and of the Scorer's ``search``, so both rerank the same lists."""
    runs = dict(member_runs)
    if "hybrid" in systems:
        missing = [m for m in ("bm25", "dense") if m not in runs]
        if missing:
            raise ValueError(f"hybrid needs the {missing} run(s); found {sorted(runs)}")
        runs["hybrid"] = rrf([runs["bm25"], runs["dense"]], k=rrf_k, depth=k)
    return {s: runs[s][runs[s][RANK] <= k].reset_index(drop=True) for s in systems}
