"""Calibration: the ranker's score turned into P(relevant), so an app can threshold it.

A LambdaMART score only orders documents within a query; it is not a probability, and its scale shifts
from model to model. ``fusion-ltr train`` fits a calibrator on the validation queries (held out from the
booster's fit, used only for early stopping) from the score the Scorer serves (a cascade's: deeper stages
first, then the stage's score, :func:`ranker.model.final_scores`) to "label > 0":

- ``platt``: a logistic regression on the score (two numbers; smooth, extrapolates);
- ``isotonic``: a monotone step function (scikit-learn's ``IsotonicRegression``; no shape assumed).

Which one is chosen on the validation queries themselves: two-fold by query, each fitted on one half
and scored by log loss on the other; the winner is refitted on all of them. Saved as
``calibration.json`` (plain numbers) in the model folder. :func:`expected_calibration_error` and
:func:`reliability` measure it; :func:`threshold_for_precision` gives the score an app would cut at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.errors import MissingInputError, UsageError

FILE = "calibration.json"
VERSION = 1  # part of the train step's key: a model trained before calibration existed is retrained by `run`
KINDS = ("platt", "isotonic")
EPS = 1e-6


@dataclass
class Calibrator:
    """A fitted map from the served score to P(relevant)."""

    kind: str
    params: dict = field(default_factory=dict)  # platt: a, b; isotonic: x, y (the step function's knots)
    info: dict = field(default_factory=dict)  # how it was chosen: queries, rows, log loss per kind

    @classmethod
    def fit(cls, kind: str, scores, labels) -> "Calibrator":
        x, y = np.asarray(scores, dtype=np.float64), (np.asarray(labels) > 0).astype(np.float64)
        if kind == "platt":
            from sklearn.linear_model import LogisticRegression

            if len(np.unique(y)) < 2:  # one class only: a constant
                return cls(kind, {"a": 0.0, "b": float(np.log((y.mean() + EPS) / (1 - y.mean() + EPS)))})
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(x[:, None], y)
            return cls(kind, {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
        if kind == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
            return cls(kind, {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
        raise ValueError(f"calibration kind must be one of {KINDS}, found {kind!r}")

    def predict(self, scores) -> np.ndarray:
        x = np.asarray(scores, dtype=np.float64)
        if self.kind == "platt":
            return 1.0 / (1.0 + np.exp(-np.clip(self.params["a"] * x + self.params["b"], -50, 50)))
        return np.interp(x, self.params["x"], self.params["y"])

    def save(self, folder: str | Path) -> None:
        (Path(folder) / FILE).write_text(json.dumps({"kind": self.kind, "params": self.params, "info": self.info},
                                                    indent=2))

    @classmethod
    def load(cls, folder: str | Path, *, required: bool = False) -> "Calibrator | None":
        """``folder``'s calibration.json, validated; None when there is none and it is not ``required``
        (the model's manifest says it was calibrated: then a missing file is an error, since
        ``probability`` and the service's ``relevance_score`` would silently change meaning)."""
        path = Path(folder) / FILE
        if not path.exists():
            if required:
                raise MissingInputError(f"{path}: missing, though the model's manifest says it was calibrated; "
                                        "restore the model folder or retrain it (`fusion-ltr train`)")
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or not isinstance(d.get("params"), dict):
            raise UsageError(f"{path}: expected an object with 'kind' and 'params', found {str(d)[:80]}")
        cal = cls(d.get("kind"), d["params"], d.get("info", {}))
        cal.validate(path)
        return cal

    def validate(self, where: str | Path = "calibration") -> None:
        """Refuse a map that is not a monotone one into [0, 1]: an unknown kind, a non-finite number,
        unsorted or out-of-range knots."""
        def bad(what: str):
            raise UsageError(f"{where}: {what}")

        if self.kind not in KINDS:
            bad(f"kind must be one of {list(KINDS)}, found {self.kind!r}")
        keys = ("a", "b") if self.kind == "platt" else ("x", "y")
        missing = [k for k in keys if k not in self.params]
        if missing:
            bad(f"a {self.kind} calibration needs params {list(keys)}, missing {missing}")
        try:
            values = {k: np.asarray(self.params[k], dtype=np.float64) for k in keys}
        except (TypeError, ValueError):
            bad(f"params {list(keys)} must be numbers, found {str(self.params)[:80]}")
        for k, v in values.items():
            if not np.isfinite(v).all():
                bad(f"params.{k} must be finite, found {self.params[k]!r}"[:200])
        if self.kind == "platt":
            if values["a"].ndim or values["b"].ndim:
                bad("platt params a and b must be single numbers")
            if values["a"] < 0:
                bad(f"platt slope a must be >= 0 (a higher score is never less likely relevant), found {float(values['a'])}")
            return
        x, y = values["x"], values["y"]
        if x.ndim != 1 or y.ndim != 1 or len(x) != len(y) or not len(x):
            bad(f"isotonic params x and y must be lists of one length >= 1, found {x.shape} and {y.shape}")
        if (np.diff(x) < 0).any() or (np.diff(y) < 0).any():
            bad("isotonic knots must be sorted: x and y non-decreasing")
        if (y < 0).any() or (y > 1).any():
            bad(f"isotonic y must lie in [0, 1], found min {y.min()} and max {y.max()}")


def log_loss(p, labels) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = (np.asarray(labels) > 0).astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose(scores, labels, qids, *, seed: int = 42) -> Calibrator:
    """The calibrator of lower held-out log loss (two folds by query), refitted on every row."""
    from .lambdamart import query_folds

    scores, labels, qids = np.asarray(scores, float), np.asarray(labels), np.asarray(qids).astype(str)
    folds = query_folds(qids, 2, seed)
    losses = {}
    for kind in KINDS:
        total = 0.0
        for k, fold in enumerate(folds):
            test = np.isin(qids, fold)
            cal = Calibrator.fit(kind, scores[~test], labels[~test])
            total += log_loss(cal.predict(scores[test]), labels[test]) * test.sum()
        losses[kind] = total / len(scores)
    best = min(KINDS, key=lambda k: losses[k])
    cal = Calibrator.fit(best, scores, labels)
    cal.info = {"queries": int(len(np.unique(qids))), "rows": int(len(scores)), "positives": int((labels > 0).sum()),
                "heldout_log_loss": losses, "chosen_on": "validation queries, two folds by query"}
    return cal


def reliability(p, labels, bins: int = 10) -> list[dict]:
    """Per equal-width probability bin: documents, mean predicted probability, fraction relevant."""
    p, y = np.asarray(p, float), (np.asarray(labels) > 0).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [{"bin": [float(edges[b]), float(edges[b + 1])], "n": int((idx == b).sum()),
             "mean_p": float(p[idx == b].mean()) if (idx == b).any() else None,
             "fraction_relevant": float(y[idx == b].mean()) if (idx == b).any() else None} for b in range(bins)]


def expected_calibration_error(p, labels, bins: int = 10) -> float:
    """ECE: the documents-weighted mean |mean predicted - fraction relevant| over equal-width bins."""
    n = len(p)
    return float(sum(r["n"] / n * abs(r["mean_p"] - r["fraction_relevant"]) for r in reliability(p, labels, bins)
                     if r["n"]))


def threshold_for_precision(p, labels, target: float) -> float | None:
    """The lowest probability cut whose kept documents (p >= cut) reach ``target`` precision; None if none."""
    p, y = np.asarray(p, float), (np.asarray(labels) > 0).astype(float)
    order = np.argsort(-p, kind="stable")
    precision = np.cumsum(y[order]) / np.arange(1, len(p) + 1)
    ok = np.flatnonzero(precision >= target)
    if not len(ok):
        return None
    # the deepest cut that still reaches the target, at a value boundary (ties kept together)
    for i in ok[::-1]:
        if i == len(p) - 1 or p[order[i + 1]] < p[order[i]]:
            return float(p[order[i]])
    return None


def at_threshold(p, labels, qids, cut: float) -> dict:
    """Precision, recall and documents kept per query when keeping p >= ``cut``."""
    p, y, qids = np.asarray(p, float), (np.asarray(labels) > 0), np.asarray(qids).astype(str)
    keep = p >= cut
    queries = len(np.unique(qids))
    return {"threshold": cut, "precision": float(y[keep].mean()) if keep.any() else None,
            "recall": float(y[keep].sum() / max(y.sum(), 1)), "kept_per_query": float(keep.sum() / max(queries, 1))}


TARGETS = (0.5, 0.7, 0.9)


def write_report(cal: Calibrator, valid: tuple, test: tuple, before_test, folder: str | Path) -> dict:
    """``calibration.{md,json,png}`` in ``folder``: ECE on test before (``before_test``: the raw score read
    as a logit) and after, reliability on validation and test queries, and for each target precision the
    threshold chosen on validation queries with what it gives on test. ``valid`` / ``test``: (served
    scores, labels, qids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    (vs, vy, vq), (ts, ty, tq) = valid, test
    pv, pt = cal.predict(vs), cal.predict(ts)
    before = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(before_test, float), -50, 50)))
    out = {"kind": cal.kind, "info": cal.info,
           "ece_test": {"before": expected_calibration_error(before, ty), "after": expected_calibration_error(pt, ty)},
           "ece_valid_after": expected_calibration_error(pv, vy),
           "reliability": {"valid": reliability(pv, vy), "test": reliability(pt, ty), "test_before": reliability(before, ty)},
           "thresholds": []}
    for target in TARGETS:
        cut = threshold_for_precision(pv, vy, target)
        row = {"target_precision": target, "threshold": cut}
        if cut is not None:
            row |= {"valid": at_threshold(pv, vy, vq, cut), "test": at_threshold(pt, ty, tq, cut)}
        out["thresholds"].append(row)
    (folder / "calibration.json").write_text(json.dumps(out, indent=2))
    lines = [f"# Calibration: relevance_score = P(relevant), {cal.kind} (chosen on {cal.info.get('queries')} validation "
             f"queries by held-out log loss: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                         cal.info.get("heldout_log_loss", {}).items()) + ")", "",
             f"Expected calibration error on the test split (10 bins): before {out['ece_test']['before']:.4f} (the raw "
             f"score read as a logit), after {out['ece_test']['after']:.4f}.", "",
             "| target precision | threshold (validation) | precision valid / test | recall valid / test "
             "| kept per query valid / test |", "|---:|---:|---:|---:|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for row in out["thresholds"]:
        if row["threshold"] is None:
            lines.append(f"| {row['target_precision']} | not reached | | | |")
            continue
        v, t = row["valid"], row["test"]
        lines.append(f"| {row['target_precision']} | {row['threshold']:.3f} | {fmt(v['precision'])} / {fmt(t['precision'])}"
                     f" | {fmt(v['recall'])} / {fmt(t['recall'])} | {v['kept_per_query']:.2f} / {t['kept_per_query']:.2f} |")
    lines += ["", "Recall is over the judged relevant documents among the candidates. reliability.png: mean predicted "
              "probability against the fraction relevant per bin, on the test split."]
    (folder / "calibration.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, rows in (("before", out["reliability"]["test_before"]), ("after", out["reliability"]["test"])):
        pts = [(r["mean_p"], r["fraction_relevant"]) for r in rows if r["n"]]
        ax.plot(*zip(*pts), marker="o", label=f"{name} (ECE {out['ece_test'][name]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set_xlabel("mean predicted P(relevant)")
    ax.set_ylabel("fraction relevant")
    ax.set_title("reliability on the test split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "reliability.png", dpi=120)
    plt.close(fig)
    return out
