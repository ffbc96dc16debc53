"""What a fine-tuned model folder says about its training, for the extractors that load it.

``finetune-ce`` and ``finetune-be`` (:mod:`ranker.training`) write ``<output>/model/`` beside
``<output>/manifest.json``, whose ``data.train_qids`` lists the real queries the model learned from;
a cross-fitted cross-encoder folder holds :data:`CROSS_FIT_FILE` naming its fold models instead. The
extractors read these to keep the ranker from learning on queries a model has seen (the leakage
exclusion, :func:`features.base.trained_qids`).
"""

from __future__ import annotations

import json
from pathlib import Path

#: In a cross-fitted model folder: ``{"folds": [<fold model folder, relative to this folder>, ...]}``.
CROSS_FIT_FILE = "cross_fit.json"


def cross_fit_folds(model_path: str | Path) -> list[Path] | None:
    """The fold models of a cross-fitted model folder (written by ``finetune-ce`` with ``cross_fit``), or
    None for a plain model folder or a hub name."""
    index = Path(model_path) / CROSS_FIT_FILE
    if not index.is_file():
        return None
    folds = [(Path(model_path) / f).resolve() for f in json.loads(index.read_text())["folds"]]
    missing = [str(f) for f in folds if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"{index} names fold models that do not exist: {missing}")
    return folds


def trained_qids(model_path: str | Path) -> set[str]:
    """The real query ids a fine-tuned model folder was trained on (from its manifest; empty if none). For
    a cross-fitted folder: the queries every fold learned from (the ones no fold can score unseen)."""
    folds = cross_fit_folds(model_path) if Path(model_path).is_dir() else None
    if folds:
        return set.intersection(*(trained_qids(f) for f in folds))
    manifest = Path(model_path).parent / "manifest.json"
    if not manifest.exists():
        return set()
    return set(json.loads(manifest.read_text())["data"]["train_qids"])
