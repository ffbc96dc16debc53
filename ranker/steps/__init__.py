"""The step table: every CLI step and what ``fusion-ltr run`` does, declared once.

A :class:`Step` names its function (``func(run, **options)``, one module each in this package), its
CLI arguments, and for ``run``: whether it applies to a config, and what keys its cache (``key``:
the inputs, of the run and the step's options; ``outputs``: the files it leaves). A step with no ``key`` always runs in ``run`` and
caches inside (the feature store computes only what it lacks; ``finetune-ce`` skips a model trained
with the same parameters). The CLI parser and ``run`` both read :data:`STEPS`.

Adding a step: one module here with its function, and one :class:`Step` entry in :data:`STEPS`
(in pipeline order).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from features.base import digest
from retrieval.models import model_fingerprint

from . import evaluate, features, finetune, report, retrieve, train


@dataclass(frozen=True)
class Arg:
    """One CLI argument of a step: argparse's flags and keyword arguments."""

    flags: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")

    @property
    def default(self):
        return self.kwargs.get("default", False if self.kwargs.get("action") == "store_true" else None)


QUIET = Arg(("--quiet",), {"action": "store_true", "help": "no progress bars"})
NO_ABLATION = Arg(("--no-ablation",), {"action": "store_true", "help": "skip the drop-one retraining"})


@dataclass(frozen=True)
class Step:
    name: str
    func: Callable  # func(run, **options)
    help: str
    args: tuple[Arg, ...] = ()
    applies: Callable = lambda run: True  # does `run` do this step for this config?
    key: Callable | None = None  # (run, options) -> the JSON-able inputs that key the step's cache in `run`
    outputs: Callable = lambda run: []  # run -> files that must exist for a cached step to count as done
    silent_in_run: bool = False  # `run` prints the step's result itself


def _train_key(run):
    cfg = run.cfg
    from ..cascade import FORMAT

    from ..calibration import VERSION as CALIBRATION

    key = [cfg.dataset.name, cfg.dataset.fold, [(s.name, s.version) for s in run.feature_set.specs],
           dataclasses.asdict(cfg.ranker), cfg.features.extractors,  # extractor configs go into the model
           FORMAT if cfg.ranker.cascade else None, CALIBRATION]
    if cfg.labels.source == "clicks":  # labels from the interaction log: a grown log trains again
        from features.events import fingerprint
        from features.store import FeatureStore

        with FeatureStore(run.layout.store, read_only=True) as store:
            key += [dataclasses.asdict(cfg.labels), fingerprint(store)]
    return key


STEPS: list[Step] = [
    Step("finetune-be", finetune.finetune_be, "fine-tune the bi-encoder in domain (resumes from its last checkpoint)",
         args=(QUIET, Arg(("--force",), {"action": "store_true",
                                         "help": "train even if a model with these parameters exists"})),
         applies=lambda run: not run.letor and not run.reuses_features and finetune.needs_finetune_be(run)),
    Step("retrieve", retrieve.retrieve, "first-stage retrieval (BM25, dense, hybrid) into TREC runs",
         args=(Arg(("--split",), {"action": "append", "help": "split(s) to retrieve for (default: the config's)"}),),
         applies=lambda run: not run.letor and not run.reuses_features,
         # a local dense model's content too: a retrained bi-encoder retrieves again
         key=lambda run, options: [run.cfg.dataset.name, list(run.cfg.dataset.splits), dataclasses.asdict(run.cfg.retrieval),
                          model_fingerprint(run.cfg.retrieval.dense.model)],
         outputs=lambda run: [run.layout.retrieval_manifest]),
    Step("finetune-ce", finetune.finetune_ce, "fine-tune the cross-encoder (resumes from its last checkpoint)",
         args=(QUIET, Arg(("--force",), {"action": "store_true",
                                         "help": "train even if a model with these parameters exists"})),
         applies=lambda run: not run.letor and not run.reuses_features and finetune.needs_finetune(run)),
    Step("features", features.features, "build the configured feature set into the feature store",
         args=(Arg(("--split",), {"action": "append", "help": "split(s) to build for (default: the config's)"}), QUIET),
         applies=lambda run: not run.letor and not run.reuses_features),
    Step("train", train.train, "train the LambdaMART ranker (and its variants) on the feature store",
         key=lambda run, options: _train_key(run), outputs=lambda run: [run.layout.model() / "manifest.json"]),
    Step("evaluate", evaluate.evaluate,
         "evaluate first-stage runs, and the ranker against baselines when one is trained",
         args=(Arg(("--split",), {"help": "split to evaluate (default: dataset.test_split)"}),
               Arg(("--model",), {"help": "a model folder (or run folder) trained on another dataset: score it "
                                          "on this run's test candidates against the first stage"})),
         silent_in_run=True),
    Step("report", report.report, "feature importance: gain, split, SHAP, ablation, cost vs benefit",
         args=(Arg(("--query",), {"help": "query id to explain (default: the first test query)"}), NO_ABLATION),
         # `run --no-ablation` turns the report's drop-one retraining off: another report
         key=lambda run, options: [_train_key(run), not options["no_ablation"]],
         outputs=lambda run: [run.layout.report / "importance.json"], silent_in_run=True),
]
BY_NAME = {s.name: s for s in STEPS}


def _stamps(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run_all(run, *, ablate: bool = True) -> dict:
    """Every applicable step in order; a step whose inputs are unchanged since it last completed
    (``<run>/steps.json``) and whose outputs exist is skipped."""
    log = run.log
    folder = run.folder()
    log(f"run folder: {folder.resolve()}")
    t0 = time.perf_counter()
    results = {}
    for step in STEPS:
        if not step.applies(run):
            continue
        options = {a.dest: a.default for a in step.args}
        if "no_ablation" in options:
            options["no_ablation"] = not ablate
        digest_ = digest(step.key(run, options), 16) if step.key else None
        if digest_ and _stamps(run.layout.steps).get(step.name) == digest_ and all(p.exists() for p in step.outputs(run)):
            log(f"== {step.name}: cached (inputs unchanged since the last run; delete {run.layout.steps} to force)")
            continue
        log(f"== {step.name}")
        t = time.perf_counter()
        if step.silent_in_run:
            with run.muted():
                results[step.name] = step.func(run, **options)
        else:
            results[step.name] = step.func(run, **options)
        if digest_:
            stamps = _stamps(run.layout.steps)
            stamps[step.name] = digest_
            run.layout.steps.write_text(json.dumps(stamps, indent=2))
        log(f"== {step.name}: done in {time.perf_counter() - t:.1f}s")
    split = run.cfg.dataset.test_split
    log("")
    log((run.layout.eval(split) / "ranker.md").read_text().rstrip())
    log("")
    log(f"run folder: {folder.resolve()} ({time.perf_counter() - t0:.0f}s)")
    importance = run.layout.report / "importance.md"
    log(f"  model: {run.layout.model()}" + (f"   importance: {importance}" if importance.exists() else ""))
    return results
