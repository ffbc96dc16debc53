"""Build a feature set: compute only the missing values, batch by batch, each batch committed.

A build killed half-way keeps every committed batch; running it again computes only the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from retrieval.frames import RANK

from .base import BaseExtractor, FeatureSpec, check_values
from .store import FeatureStore


@dataclass
class ExtractorReport:
    extractor: str
    features: list[str]
    pairs: int  # eligible pairs (within top_n)
    computed: int
    cached: int
    seconds: float  # wall time of this build for this extractor


def feature_specs(extractors: list[BaseExtractor]) -> tuple[FeatureSpec, ...]:
    """All specs of a feature set, in extractor order; duplicate names are an error."""
    specs = tuple(s for e in extractors for s in e.specs)
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"feature name(s) {dupes} produced by more than one extractor")
    return specs


def eligible(ext: BaseExtractor, pairs: pd.DataFrame) -> np.ndarray:
    """Positions of the pairs an extractor computes: all, or those within its ``top_n`` first-stage ranks."""
    return np.arange(len(pairs)) if ext.top_n is None else np.flatnonzero(pairs[RANK].to_numpy() <= ext.top_n)


def compute_batch(ext: BaseExtractor, batch: pd.DataFrame) -> dict:
    """One extractor's checked values for one batch: the single code path of training and serving."""
    return check_values(ext, batch, ext.compute(batch))


def compute(pairs: pd.DataFrame, extractors: list[BaseExtractor]) -> tuple[dict, dict[str, float]]:
    """Every feature of ``extractors`` for ``pairs`` in memory, without a store (serving): a float
    array per feature (NaN outside an extractor's ``top_n``, as in the store) and the seconds each
    extractor took."""
    feature_specs(extractors)
    values, seconds = {}, {}
    for ext in extractors:
        t = time.perf_counter()
        positions = eligible(ext, pairs)
        todo = pairs.iloc[positions]
        cols = {s.name: np.full(len(pairs), np.nan) for s in ext.specs}
        for start in range(0, len(todo), ext.batch_size):
            batch = todo.iloc[start:start + ext.batch_size]
            for name, arr in compute_batch(ext, batch).items():
                cols[name][positions[start:start + len(batch)]] = arr
        values.update(cols)
        seconds[ext.name] = time.perf_counter() - t
    return values, seconds


def build(store: FeatureStore, pairs: pd.DataFrame, extractors: list[BaseExtractor], *,
          progress: bool = True) -> list[ExtractorReport]:
    """Compute the missing values of every extractor for ``pairs`` (a frame from ``store.pairs``)."""
    feature_specs(extractors)
    reports = []
    for ext in extractors:
        todo_all = pairs.iloc[eligible(ext, pairs)]
        todo = store.missing(todo_all, ext.specs) if ext.cacheable else todo_all
        t_ext = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"{ext.name:>14}", unit="pair", disable=not progress or not len(todo))
        for start in range(0, len(todo), ext.batch_size):
            batch = todo.iloc[start:start + ext.batch_size]
            t = time.perf_counter()
            values = compute_batch(ext, batch)
            store.write(batch, values, ext.specs, ext.provenance(), time.perf_counter() - t)
            bar.update(len(batch))
        bar.close()
        if ext.costs_more_unseen and len(todo_all):
            measure_unseen(store, todo_all, ext)
        reports.append(ExtractorReport(ext.name, [s.name for s in ext.specs], len(todo_all), len(todo),
                                       len(todo_all) - len(todo), time.perf_counter() - t_ext))
    return reports


#: The cost path of documents an extractor's fitted state does not know (an app's own, at serving time).
UNSEEN = "unseen"
UNSEEN_SAMPLE = 128  # pairs timed once per feature version


def measure_unseen(store: FeatureStore, pairs: pd.DataFrame, ext: BaseExtractor, *, force: bool = False) -> None:
    """Time ``ext.compute_unseen`` on the first :data:`UNSEEN_SAMPLE` of ``pairs`` and store it as the
    ``"unseen"`` path cost of its features (once per version unless ``force``)."""
    if not ext.costs_more_unseen or (not force and len(store.path_cost(ext.specs, UNSEEN)) == len(ext.specs)):
        return
    sample = pairs.iloc[:UNSEEN_SAMPLE]
    ext.compute_unseen(sample.iloc[:8])  # untimed: a model loaded on first use, first-call overheads
    t = time.perf_counter()
    ext.compute_unseen(sample)
    store.record_path_cost(ext.specs, UNSEEN, time.perf_counter() - t, len(sample))


def summary_table(store: FeatureStore, extractors: list[BaseExtractor], reports: list[ExtractorReport],
                  qids=None, *, retriever: str = "hybrid") -> pd.DataFrame:
    """Per feature: rows, computed vs cached in this build, NaN count, stored cost per 1,000 pairs (and,
    for an extractor that computes more for unseen documents, that cost too)."""
    specs = feature_specs(extractors)
    frame = store.frame(specs, qids, retriever=retriever)  # one read gives the rows and the NaN counts
    nans = {s.name: int(frame[s.name].isna().sum()) for s in specs}
    cost = store.cost(specs).set_index("feature")
    unseen = store.path_cost(specs, UNSEEN)
    n_rows = len(frame)
    by_ext = {r.extractor: r for r in reports}
    rows = []
    for ext in extractors:
        r = by_ext[ext.name]
        for s in ext.specs:
            rows.append({
                "feature": s.name, "extractor": ext.name, "version": s.version, "rows": n_rows,
                "top_n": "all" if ext.top_n is None else ext.top_n, "computed": r.computed, "cached": r.cached, "nan": nans[s.name],
                "s_per_1000_pairs": float(cost.loc[s.name, "s_per_1000_pairs"]) * len(ext.specs)
                if s.name in cost.index else float("nan"),
                # where the extractor computes more for documents it was not fitted on (an app's own)
                "unseen_s_per_1000_pairs": unseen[s.name] * len(ext.specs) if s.name in unseen else float("nan"),
            })
    return pd.DataFrame(rows)
