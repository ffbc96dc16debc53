"""Per-feature importance: gain, split, mean |SHAP|, per-query SHAP, drop-one ablation, cost vs benefit.

- **gain** (the default): total loss reduction of the splits on a feature. **split**: how many splits use
  it. Both come from the booster and say what the trees *used*, not what the ranking *needs*.
- **mean |SHAP|**: TreeSHAP contributions from the booster itself (``pred_contrib``), averaged in
  absolute value over the evaluated rows.
- **ablation**: retrain without the feature (or without all features of one extractor), same seed,
  same data; the change in nDCG@10 per test query, with a 95% t-interval over queries. This is the
  figure that says what a feature is worth, and the one to set beside its cost.
- **cost**: seconds per 1,000 pairs of the extractor that makes the feature (from the store's
  provenance; features of one extractor share its cost).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.store import RankingData

from . import evaluate as ev
from .data import ranking_from_scores
from .lambdamart import LambdaMART

MEASURE = "nDCG@10"


def mean_abs_shap(model: LambdaMART, data: RankingData) -> dict[str, float]:
    contrib = model.contributions(data)[:, :-1]
    return dict(zip(model.feature_names_, np.abs(contrib).mean(axis=0).astype(float)))


def explain_query(model: LambdaMART, data: RankingData, qid: str, top: int = 5) -> dict:
    """The top results of one query with each feature's value and SHAP contribution, and why the
    first ranked above the second (the features whose contributions differ most)."""
    sub = data.subset([qid])
    if len(sub.y) == 0:
        raise KeyError(f"query {qid!r} is not in the data")
    scores = model.predict(sub)
    contrib = model.contributions(sub)
    order = np.argsort(-scores, kind="stable")[:top]
    results = [{"docno": str(sub.docnos[i]), "score": float(scores[i]), "label": float(sub.y[i]),
                "bias": float(contrib[i, -1]),  # score = bias + sum of the features' SHAP values (+ base)
                "features": {n: {"value": float(sub.X[i, j]), "shap": float(contrib[i, j])}
                             for j, n in enumerate(sub.feature_names)}} for i in order]
    if sub.base is not None:  # a cascade stage: it added its trees to the previous stage's score
        for r, i in zip(results, order):
            r["base"] = float(sub.base[i])
    why = None
    if len(order) > 1:
        a, b = order[0], order[1]
        diff = contrib[a, :-1] - contrib[b, :-1]
        idx = np.argsort(-np.abs(diff))[:5]
        why = {"above": str(sub.docnos[a]), "below": str(sub.docnos[b]),
               "score_gap": float(scores[a] - scores[b]),
               "top_reasons": [{"feature": sub.feature_names[j], "shap_difference": float(diff[j]),
                                "value_above": float(sub.X[a, j]), "value_below": float(sub.X[b, j])} for j in idx]}
    return {"qid": qid, "results": results, "why_first_above_second": why}


def _t_interval(deltas: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    n = len(deltas)
    if n < 2 or np.allclose(deltas, deltas[0]):
        return float(deltas.mean()), float(deltas.mean())
    half = stats.t.ppf(0.975, n - 1) * deltas.std(ddof=1) / np.sqrt(n)
    return float(deltas.mean() - half), float(deltas.mean() + half)


def ablation(model: LambdaMART, train: RankingData, valid: RankingData | None, test: RankingData,
             qrels: pd.DataFrame, groups: dict[str, list[str]]) -> list[dict]:
    """Retrain without each group of features; per-query change of nDCG@10 on ``test`` with a 95% CI.

    ``groups`` maps a label to the features it removes (one feature, or one extractor's features).
    A negative delta means the ranking got worse without them: they were worth keeping.
    """
    params = model.get_params()
    base = ev.per_query(ranking_from_scores(test, model.predict(test), "full"), qrels, [MEASURE])[MEASURE]
    rows = []
    for label, drop in groups.items():
        keep = [n for n in model.feature_names_ if n not in set(drop)]
        if not keep or len(keep) == len(model.feature_names_):
            continue
        kept = {**params, "monotone": {k: v for k, v in (params.get("monotone") or {}).items() if k in keep}}
        m = LambdaMART(**kept).fit(train.select(keep), valid.select(keep) if valid is not None else None)
        per_q = ev.per_query(ranking_from_scores(test, m.predict(test.select(keep)), f"-{label}"), qrels, [MEASURE])[MEASURE]
        deltas = (per_q - base).to_numpy()
        lo, hi = _t_interval(deltas)
        rows.append({"dropped": label, "features": list(drop), "ndcg10_without": float(per_q.mean()),
                     "delta": float(deltas.mean()), "ci95": [lo, hi],
                     "wins": int((deltas > 0).sum()), "losses": int((deltas < 0).sum())})
    return rows


def ablation_cv(params, data: RankingData, qrels: pd.DataFrame, groups: dict[str, list[str]], k: int, *,
                valid_fraction: float, seed: int) -> list[dict]:
    """Drop-one ablation under query-level cross-validation (for configs without a held-out split):
    every query is scored by fold models that never saw it, with and without each group of features."""
    from .lambdamart import cross_val_predict

    def per_query(names):
        kept = dataclasses.replace(params, monotone={f: v for f, v in params.monotone.items() if f in names})
        scores = cross_val_predict(kept, data.select(names), k, valid_fraction=valid_fraction, seed=seed)
        return ev.per_query(ranking_from_scores(data, scores, "cv"), qrels, [MEASURE])[MEASURE]

    base = per_query(data.feature_names)
    rows = []
    for label, drop in groups.items():
        keep = [n for n in data.feature_names if n not in set(drop)]
        if not keep or len(keep) == len(data.feature_names):
            continue
        deltas = (per_query(keep) - base).to_numpy()
        lo, hi = _t_interval(deltas)
        rows.append({"dropped": label, "features": list(drop), "ndcg10_without": float(base.mean() + deltas.mean()),
                     "delta": float(deltas.mean()), "ci95": [lo, hi],
                     "wins": int((deltas > 0).sum()), "losses": int((deltas < 0).sum())})
    return rows


def ablation_groups(names: list[str], extractor_of: dict[str, str]) -> dict[str, list[str]]:
    """Each feature alone, and each extractor with several features as one group ``[name]``."""
    by_ext: dict[str, list[str]] = {}
    for n in names:
        by_ext.setdefault(extractor_of.get(n, n), []).append(n)
    return {**{n: [n] for n in names}, **{f"[{e}]": fs for e, fs in by_ext.items() if len(fs) > 1}}


def build_report(model: LambdaMART, train: RankingData, valid: RankingData | None, test: RankingData,
                 qrels: pd.DataFrame, *, extractor_of: dict[str, str] | None = None,
                 cost: dict[str, float] | None = None, query: str | None = None,
                 ablate: bool = True, ablation_rows: list[dict] | None = None, scope: str | None = None) -> dict:
    """Every importance figure as one JSON-able dict. ``ablation_rows`` (e.g. from :func:`ablation_cv`)
    replace the held-out ablation; ``scope`` says which rows the SHAP figures and the example cover."""
    names = model.feature_names_
    extractor_of = extractor_of or {}
    cost = cost or {}
    gain, split, shap = model.importance("gain"), model.importance("split"), mean_abs_shap(model, test)
    total_gain = sum(gain.values()) or 1.0
    by_ext: dict[str, list[str]] = {}
    for n in names:
        by_ext.setdefault(extractor_of.get(n, n), []).append(n)
    if ablation_rows is not None:
        abl = ablation_rows
    else:
        abl = ablation(model, train, valid, test, qrels, ablation_groups(names, extractor_of)) if ablate else []
    abl_by = {r["dropped"]: r for r in abl}
    features = []
    for n in names:
        ext = extractor_of.get(n, "")
        features.append({
            "feature": n, "extractor": ext, "gain": gain[n], "gain_share": gain[n] / total_gain, "split": split[n],
            "mean_abs_shap": shap[n], "ablation_delta": abl_by.get(n, {}).get("delta"),
            "ablation_ci95": abl_by.get(n, {}).get("ci95"), "s_per_1000_pairs": cost.get(n),
        })
    features.sort(key=lambda r: -r["gain"])
    extractors = [{"extractor": e, "features": fs, "s_per_1000_pairs": cost.get(fs[0]),
                   "ablation_delta": abl_by.get(f"[{e}]", abl_by.get(fs[0], {})).get("delta"),
                   "ablation_ci95": abl_by.get(f"[{e}]", abl_by.get(fs[0], {})).get("ci95")}
                  for e, fs in by_ext.items()]
    qid = query or str(test.unique_qids[0])
    model_info = {k: getattr(model, "manifest_", {}).get(k) for k in ("tuning", "guard", "unranked_guard")}
    return {"measure": MEASURE, "scope": scope or "test split (held out)", "model": model_info, "features": features, "extractors": extractors, "ablation": abl,
            "explain": explain_query(model, test, qid),
            "notes": {"gain": "total loss reduction of splits on the feature (default importance)",
                      "split": "number of splits on the feature",
                      "mean_abs_shap": "mean |TreeSHAP contribution| over the test rows (booster pred_contrib)",
                      "ablation_delta": f"change in mean {MEASURE} when retrained without it (negative: it helped)",
                      "s_per_1000_pairs": "extractor wall seconds per 1,000 pairs (shared by its features)"}}


def _fmt(v, spec=".4f"):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(v, spec)


def settings_markdown(manifest: dict) -> list[str]:
    """The ranker settings chosen by ``params = "auto"`` and the first-stage guard, when recorded."""
    lines = []
    tuning, check = manifest.get("tuning"), manifest.get("guard")
    if tuning:
        lines += [f"Ranker settings: `auto` chose **{tuning['chosen']}** by {tuning['folds']}-fold cross-validation "
                  f"on the training queries ({tuning['seconds']:.0f} s):", "", "| setting | mean CV score |", "|---|---:|"]
        mark = {(True, True): " (best, chosen)", (True, False): " (best)", (False, True): " (chosen: within one "
                "standard error of the best, simpler)"}
        lines += [f"| {r['setting']}{mark.get((r.get('best', False), r.get('chosen', False)), '')} | {r['mean']:.4f} |"
                  for r in tuning["grid"]] + [""]
    if check:
        verdict = (f"not better: it serves the {check['serves']} order" if check["serves"] != "model"
                   else "not better (ranker.guard = 'warn': served anyway)" if check["fired"] else "better")
        lines += [f"First-stage guard on {check['queries']} held-out training queries ({check['held_out']}): model "
                  f"{check['model']:.4f} vs first stage {check['first_stage']:.4f} {check['measure']} "
                  f"(delta {check['delta']:+.4f}, p = {check['p_value']:.3g}): {verdict}.", ""]
    unranked = manifest.get("unranked_guard")
    if unranked:
        verdict = ("not better: the content-only model serves lists without ranks" if unranked["serves"] != "model"
                   else "not better (ranker.guard = 'warn': served anyway)" if unranked["fired"] else "better")
        lines += [f"Unranked guard on {unranked['queries']} held-out training queries shuffled without ranks: model "
                  f"{unranked['model']:.4f} vs a content-only model {unranked['content_model']:.4f} "
                  f"{unranked['measure']} (delta {unranked['delta']:+.4f}, p = {unranked['p_value']:.3g}): {verdict}.", ""]
    return lines


def to_markdown(report: dict) -> str:
    lines = [f"# Feature importance ({report['measure']})", "", f"Rows: {report.get('scope', 'test split')}.", ""]
    lines += settings_markdown(report.get("model") or {})
    lines += [
             "| feature | extractor | gain share | split | mean abs SHAP | ablation delta [95% CI] | s / 1000 pairs |",
             "|---|---|---:|---:|---:|---|---:|"]
    for r in report["features"]:
        ci = r["ablation_ci95"]
        abl = f"{_fmt(r['ablation_delta'], '+.4f')} [{_fmt(ci[0], '+.4f')}, {_fmt(ci[1], '+.4f')}]" if ci else "-"
        lines.append(f"| {r['feature']} | {r['extractor']} | {r['gain_share']:.3f} | {r['split']:.0f} | "
                     f"{r['mean_abs_shap']:.4f} | {abl} | {_fmt(r['s_per_1000_pairs'], '.3g')} |")
    lines += ["", "## Cost vs benefit per extractor", "",
              "| extractor | features | s / 1000 pairs | ablation delta [95% CI] |", "|---|---|---:|---|"]
    for r in report["extractors"]:
        ci = r["ablation_ci95"]
        abl = f"{_fmt(r['ablation_delta'], '+.4f')} [{_fmt(ci[0], '+.4f')}, {_fmt(ci[1], '+.4f')}]" if ci else "-"
        lines.append(f"| {r['extractor']} | {', '.join(r['features'])} | {_fmt(r['s_per_1000_pairs'], '.3g')} | {abl} |")
    ex = report["explain"]
    lines += ["", f"## Query {ex['qid']}: top results", "", "| rank | docno | score | label |", "|---:|---|---:|---:|"]
    for i, r in enumerate(ex["results"], 1):
        lines.append(f"| {i} | {r['docno']} | {r['score']:.4f} | {r['label']:.0f} |")
    why = ex["why_first_above_second"]
    if why:
        lines += ["", f"Why {why['above']} ranks above {why['below']} (score gap {why['score_gap']:.4f}):", ""]
        for r in why["top_reasons"]:
            lines.append(f"- {r['feature']}: SHAP {r['shap_difference']:+.4f} "
                         f"(value {r['value_above']:.4g} vs {r['value_below']:.4g})")
    lines += ["", "Gain = total loss reduction of the splits on a feature (the default); split = number of splits."]
    return "\n".join(lines) + "\n"


def plot(report: dict, model: LambdaMART, test: RankingData, out: Path) -> list[Path]:
    """PNG plots: gain share and mean |SHAP| bars, a SHAP beeswarm, ablation with CIs, cost vs benefit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    feats = report["features"]
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(feats) + 1.5))
    names = [r["feature"] for r in feats][::-1]
    axes[0].barh(names, [r["gain_share"] for r in feats][::-1])
    axes[0].set_title("gain share")
    axes[1].barh(names, [r["mean_abs_shap"] for r in feats][::-1], color="tab:orange")
    axes[1].set_title("mean |SHAP|")
    fig.tight_layout()
    paths.append(out / "importance.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    contrib = model.contributions(test)[:, :-1]
    order = np.argsort(np.abs(contrib).mean(axis=0))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(order) + 1.5))
    rng = np.random.default_rng(0)
    for row, j in enumerate(order):
        x = test.X[:, j]
        finite = np.isfinite(x)
        colour = np.full(len(x), 0.5)
        if finite.any() and np.ptp(x[finite]) > 0:
            colour[finite] = (x[finite] - x[finite].min()) / np.ptp(x[finite])
        ax.scatter(contrib[:, j], row + rng.uniform(-0.3, 0.3, len(x)), c=colour, cmap="coolwarm", s=3, alpha=0.5)
    ax.set_yticks(range(len(order)), [model.feature_names_[j] for j in order])
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("SHAP value (colour: feature value, low blue to high red)")
    fig.tight_layout()
    paths.append(out / "shap_summary.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if report["ablation"]:
        abl = sorted(report["ablation"], key=lambda r: r["delta"])
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(abl) + 1.5))
        ax.errorbar([r["delta"] for r in abl], range(len(abl)),
                    xerr=[[r["delta"] - r["ci95"][0] for r in abl], [r["ci95"][1] - r["delta"] for r in abl]],
                    fmt="o", capsize=3)
        ax.set_yticks(range(len(abl)), [r["dropped"] for r in abl])
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel(f"change in {report['measure']} without the feature (95% CI)")
        fig.tight_layout()
        paths.append(out / "ablation.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

        pts = [r for r in report["extractors"] if r["s_per_1000_pairs"] is not None and r["ablation_delta"] is not None]
        if pts:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            ax.scatter([max(r["s_per_1000_pairs"], 1e-4) for r in pts], [-r["ablation_delta"] for r in pts])
            for r in pts:
                ax.annotate(r["extractor"], (max(r["s_per_1000_pairs"], 1e-4), -r["ablation_delta"]), fontsize=8)
            ax.set_xscale("log")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xlabel("seconds per 1,000 pairs (log)")
            ax.set_ylabel(f"{report['measure']} lost without it")
            fig.tight_layout()
            paths.append(out / "cost_vs_benefit.png")
            fig.savefig(paths[-1], dpi=110)
            plt.close(fig)
    return paths


def write(report: dict, model: LambdaMART, test: RankingData, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "importance.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "importance.md").write_text(to_markdown(report))
    plot(report, model, test, out)
    return out
