"""Evaluation with ir-measures, and paired significance tests between runs (scipy).

Every query judged in the qrels counts: a query the run has no candidates for scores 0 on every
measure (ir-measures and trec_eval leave such a query out of the mean). Runs are evaluated in their
``rank`` order when they carry one, so ties are broken exactly as the run broke them (ir-measures
and trec_eval sort by score and break ties by docno); the TREC files of an evaluation carry scores
that fall strictly with rank, so an external evaluator scores the same order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from retrieval.frames import DOCNO, LABEL, QID, RANK, SCORE, validate

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "AP")


def _measures(names):
    import ir_measures

    return [ir_measures.parse_measure(m) if isinstance(m, str) else m for m in names]


def per_query(run: pd.DataFrame, qrels: pd.DataFrame, measures=DEFAULT_MEASURES, *,
              ignore_identical_ids: bool = False) -> pd.DataFrame:
    """Per-query values: one row per judged query (index ``qid``), one column per measure.

    ``ignore_identical_ids`` drops a query's own document (docno == qid) from the run first, as BEIR
    does for collections whose queries are documents; the documents below it move up."""
    import ir_measures

    validate(run, (QID, DOCNO), what="run")
    validate(qrels, (QID, DOCNO, LABEL), what="qrels")
    if ignore_identical_ids:
        run = run[run[QID].astype(str) != run[DOCNO].astype(str)]
    ms = _measures(measures)
    score = -run[RANK].astype(float) if RANK in run else run[SCORE].astype(float)
    run_df = pd.DataFrame({"query_id": run[QID].astype(str), "doc_id": run[DOCNO].astype(str), "score": score})
    qrels_df = pd.DataFrame(
        {"query_id": qrels[QID].astype(str), "doc_id": qrels[DOCNO].astype(str), "relevance": qrels[LABEL].astype(int)}
    )
    rows = [(m.query_id, str(m.measure), m.value) for m in ir_measures.iter_calc(ms, qrels_df, run_df)]
    table = pd.DataFrame(rows, columns=[QID, "measure", "value"])
    wide = table.pivot(index=QID, columns="measure", values="value") if rows else pd.DataFrame()
    judged = sorted(qrels_df["query_id"].unique())
    wide = wide.reindex(index=judged, columns=[str(m) for m in ms]).fillna(0.0)
    wide.index.name = QID
    return wide


def reorder_head(run: pd.DataFrame, head: pd.DataFrame, values) -> pd.DataFrame:
    """``run`` with its ``head`` rows (a subset of its (qid, docno) pairs) reordered within each query by
    ``values``, highest first (ties keep the run's order), and every other row after them in the run's
    order: how a reranker that sees only the top of a first stage is scored."""
    head = head[[QID, DOCNO, RANK]].assign(**{SCORE: np.asarray(values, dtype=float)})
    head = head.sort_values([QID, SCORE, RANK], ascending=[True, False, True], kind="stable")
    head[RANK] = head.groupby(QID).cumcount() + 1
    key = pd.MultiIndex.from_frame(run[[QID, DOCNO]])
    tail = run[~key.isin(pd.MultiIndex.from_frame(head[[QID, DOCNO]]))][[QID, DOCNO, RANK]]
    tail = tail.sort_values([QID, RANK], kind="stable")
    tail[RANK] = tail.groupby(QID).cumcount() + 1 + tail[QID].map(head.groupby(QID).size()).fillna(0).astype(int)
    out = pd.concat([head, tail], ignore_index=True).sort_values([QID, RANK], kind="stable")
    return out.assign(**{SCORE: -out[RANK].astype(float)}).reset_index(drop=True)


def mean(per_q: pd.DataFrame) -> dict[str, float]:
    return {m: float(per_q[m].mean()) for m in per_q.columns}


def evaluate(run: pd.DataFrame, qrels: pd.DataFrame, measures=DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over every judged query."""
    return mean(per_query(run, qrels, measures))


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of system B against system A on one measure."""

    measure: str
    mean_a: float
    mean_b: float
    delta: float  # mean_b - mean_a
    p_value: float
    test: str
    wins: int  # queries where B > A
    losses: int  # queries where B < A
    ties: int
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def compare(a: pd.DataFrame, b: pd.DataFrame, measure: str = "nDCG@10", *, test: str = "t") -> Comparison:
    """Paired test of per-query values of B against A over the queries both were judged on.

    ``test`` is ``"t"`` (paired t-test, the IR default) or ``"wilcoxon"`` (signed-rank).
    """
    from scipy import stats

    if measure not in a.columns or measure not in b.columns:
        raise KeyError(f"compare: measure {measure!r} not in both tables (found {list(a.columns)} and {list(b.columns)})")
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ValueError("compare: the two runs share no judged query")
    x = a.loc[common, measure].to_numpy(float)
    y = b.loc[common, measure].to_numpy(float)
    diff = y - x
    if np.allclose(diff, 0):
        p = 1.0
    elif test == "t":
        p = float(stats.ttest_rel(y, x).pvalue)
    elif test == "wilcoxon":
        p = float(stats.wilcoxon(y, x).pvalue)
    else:
        raise ValueError(f"compare: test must be 't' or 'wilcoxon', found {test!r}")
    return Comparison(
        measure=measure, mean_a=float(x.mean()), mean_b=float(y.mean()), delta=float(diff.mean()),
        p_value=p if not math.isnan(p) else 1.0, test=test,
        wins=int((diff > 0).sum()), losses=int((diff < 0).sum()), ties=int((diff == 0).sum()), n=len(common),
    )


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def markdown_table(results: dict[str, dict[str, float]], measures=None) -> str:
    """A Markdown table, one row per system, one column per measure (4 decimals)."""
    if not results:
        return ""
    measures = list(measures or next(iter(results.values())).keys())
    lines = ["| system | " + " | ".join(measures) + " |", "|---|" + "---:|" * len(measures)]
    for name, values in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in measures) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------ tables of an evaluation


def direction(x: np.ndarray, y: np.ndarray) -> float:
    """+1 if a higher feature value ``x`` should rank higher (Spearman correlation with the labels
    ``y``), else -1; +1 when undecidable (constant or fewer than 3 values)."""
    from scipy import stats

    ok = np.isfinite(x)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return 1.0
    rho = stats.spearmanr(x[ok], y[ok]).statistic
    return -1.0 if rho < 0 else 1.0


def comparison_line(t: dict) -> str:
    """One paired test as a line: ``b vs a: measure delta (p, Holm p), wins/losses/ties``."""
    holm_txt = f", Holm p={t['p_holm']:.3g}" if t.get("p_holm") is not None else ""
    test_txt = "" if "p_holm" in t else f", {t['test']}-test"
    return (f"{t['b']} vs {t['a']}: {t['measure']} {t['delta']:+.4f} (p={t['p_value']:.3g}{holm_txt}{test_txt}), "
            f"wins/losses/ties {t['wins']}/{t['losses']}/{t['ties']}")


def ranked_rows(means: dict[str, dict], learned: list[str], measure: str, *, keep: tuple[str, ...] = (),
                max_singles: int = 12) -> tuple[list[str], int]:
    """Row order of a results table: learned models first, then baselines, each by ``measure``
    descending; every learned model and ``keep`` shown, at most ``max_singles`` other baselines.
    Returns the rows and how many baselines were left out."""
    order = sorted(means, key=lambda n: (n not in learned, -means[n][measure]))
    shown = [n for n in order if n in learned or n in keep]
    others = [n for n in order if n not in shown]
    return shown + others[:max_singles], max(0, len(others) - max_singles)
