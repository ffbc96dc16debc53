"""``fusion-ltr report``: importance of the trained model (Markdown, JSON, PNG) into <run>/report."""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import UsageError

from .. import importance
from ..lambdamart import LambdaMART
from ..layout import replaced_atomically


def report(run, query: str | None = None, no_ablation: bool = False) -> Path:
    """Gain, split, SHAP, one query explained, drop-one ablation and cost vs benefit."""
    data = run.matrices
    if data.train is None:
        raise UsageError("report needs a training split (cross-validated runs have no single model to explain)")
    fs = run.feature_set
    model = LambdaMART.load(run.layout.model())
    rep = importance.build_report(model, data.train, data.valid, data.test, data.qrels,
                                  extractor_of=fs.extractor_of, cost=fs.cost, query=query, ablate=not no_ablation)
    with replaced_atomically(run.layout.report) as tmp:
        importance.write(rep, model, data.test, tmp)
    out = run.layout.report
    run.log((out / "importance.md").read_text())
    run.log(f"report written to {out}")
    return out
