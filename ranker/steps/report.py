"""``fusion-ltr report``: importance of the trained model (Markdown, JSON, PNG) into <run>/report."""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import UsageError

from .. import importance
from ..lambdamart import LambdaMARTParams
from ..layout import replaced_atomically
from ..model import RankingModel


def report(run, query: str | None = None, no_ablation: bool = False) -> Path:
    """Gain, split, SHAP, one query explained, drop-one ablation and cost vs benefit. A cross-validated
    config reports its serving model (fit on all queries; SHAP and the example are then in-sample) with
    an ablation under the same cross-validation as its evaluation."""
    cfg = run.cfg
    if cfg.ranker.cascade:
        return cascade_report(run, query, no_ablation)
    data = run.matrices
    fs = run.feature_set
    model = RankingModel.load(run.layout.model()).last  # a plain model: its one booster
    if data.train is None and not cfg.ranker.cv_folds:
        raise UsageError("report needs a training split or ranker.cv_folds")
    if cfg.ranker.cv_folds:
        rows = None if no_ablation else importance.ablation_cv(
            LambdaMARTParams(**model.get_params()), data.test, data.qrels, importance.ablation_groups(fs.names, fs.extractor_of),
            cfg.ranker.cv_folds, valid_fraction=cfg.ranker.valid_fraction, seed=cfg.ranker.base_params.seed)
        rep = importance.build_report(model, data.test, None, data.test, data.qrels, extractor_of=fs.extractor_of,
                                      cost=fs.cost, query=query, ablate=False, ablation_rows=rows,
                                      scope=f"all {len(data.test.group)} queries (in-sample: the serving model of a "
                                            f"{cfg.ranker.cv_folds}-fold cross-validated config); ablation "
                                            "cross-validated")
    else:
        rep = importance.build_report(model, data.train, data.valid, data.test, data.qrels,
                                      extractor_of=fs.extractor_of, cost=fs.cost, query=query,
                                      ablate=not no_ablation)
    return write(run, rep, model, data.test)


def cascade_report(run, query: str | None, no_ablation: bool) -> Path:
    """A cascade's report explains its last stage, the model that sees every feature, on the documents
    that reach it: training rows by the cross-fitted membership saved at training, test rows by the
    cascade itself. Its measure and ablation (the last stage retrained without each extractor, membership
    fixed) rank those documents only."""
    from .. import cascade
    from ..model import rows

    data, fs = run.matrices, run.feature_set
    model = RankingModel.load(run.layout.model())
    stages = model.stages
    last, n = stages[-1], len(stages)

    def reached(part):
        if part is None:
            return None
        depth, base = cascade.training_depth(run.layout.model(), part)
        return rows(part, depth == n - 1, base, last.features)

    test = model.score(data.test).parts[-1]  # the test rows that reach the last stage, as served
    keep = stages[-2].keep
    rep = importance.build_report(
        last.model, reached(data.train), reached(data.valid), test, data.qrels, extractor_of=fs.extractor_of,
        cost=fs.cost, query=query, ablate=not no_ablation,
        scope=f"the cascade's last stage (stage {n} of {n}, every feature) on the {keep} documents per query "
              f"that reach it ({len(test.group)} test queries); its {importance.MEASURE} and ablation rank "
              "those documents only")
    return write(run, rep, last.model, test)


def write(run, rep: dict, model, test) -> Path:
    with replaced_atomically(run.layout.report) as tmp:
        importance.write(rep, model, test, tmp)
        calibration_report(run, tmp)
    out = run.layout.report
    run.log((out / "importance.md").read_text())
    if (out / "calibration.md").exists():
        run.log((out / "calibration.md").read_text())
    run.log(f"report written to {out}")
    return out


def calibration_report(run, folder: Path) -> None:
    """The main model's calibration on validation and test queries (:func:`ranker.calibration.write_report`),
    when it has a calibrator and the run a validation split."""
    from ..calibration import write_report

    model = RankingModel.load(run.layout.model())
    data = run.matrices
    if model.calibrator is None or data.valid is None:
        return
    valid, test = model.score(data.valid), model.score(data.test)
    # served scores; before calibration, what a result shows (a cascade: the deepest stage's own score)
    write_report(model.calibrator, (valid.scores, data.valid.y, data.valid.qids),
                 (test.scores, data.test.y, data.test.qids), test.shown, folder)
