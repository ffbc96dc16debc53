"""LambdaMART in scikit-learn style over registered booster backends (:mod:`ranker.backends`):
LightGBM ``lambdarank`` and XGBoost ``rank:ndcg``.

``__init__`` only stores keyword parameters (the fields of :class:`LambdaMARTParams`, declared once
there); :meth:`LambdaMART.fit` takes :class:`RankingData` (which carries the query groups, so data
without groups cannot reach the booster) and returns self; learned state ends in ``_``. A saved
model is a folder: the booster file plus ``manifest.json`` with the feature names and versions in
order, parameters, metrics and library versions. Scoring data whose feature names or versions differ
from the manifest raises :class:`FeatureMismatchError` listing the difference.
"""

from __future__ import annotations

import dataclasses
import math
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from features.matrix import RankingData
from retrieval.errors import MissingInputError, UsageError
from retrieval.params import ConfigError

from .backends import REGISTRY as BACKENDS, backend_class


class FeatureMismatchError(UsageError):
    """The features given to a model are not the ones it was trained on."""


@dataclass(frozen=True)
class LambdaMARTParams:
    """Booster parameters shared by every backend (each maps them to its library's names)."""

    backend: str = "lightgbm"  # the booster library
    n_estimators: int = 300  # boosting rounds (trees), at most: early stopping may keep fewer
    learning_rate: float = 0.05  # shrinkage of each tree
    num_leaves: int = 15  # leaves per tree
    max_depth: int = -1  # -1: no limit (LightGBM); XGBoost gets 0 (no limit) with lossguide
    min_data_in_leaf: int = 20  # rows a leaf needs at least
    feature_fraction: float = 1.0  # share of the features each tree may split on
    bagging_fraction: float = 1.0  # share of the rows each tree learns from
    lambda_l2: float = 1.0  # L2 regularisation of leaf values
    early_stopping_rounds: int = 50  # on the validation queries, when given
    eval_at: int = 10  # the cut-off of the nDCG that early stopping watches
    seed: int = 42  # seeds the booster (and the fold and validation splits that use it)
    num_threads: int = 0  # 0: the library's default
    monotone: dict[str, int] = field(default_factory=dict)  # feature name -> +1 / -1

    def check(self) -> "LambdaMARTParams":
        if self.backend not in BACKENDS:
            raise ConfigError(f"ranker.backend: expected one of {sorted(BACKENDS)}, found {self.backend!r}")
        bad = {k: v for k, v in self.monotone.items() if v not in (-1, 0, 1)}
        if bad:
            raise ConfigError(f"ranker.monotone: values must be -1, 0 or 1, found {bad}")
        ranges = {"n_estimators": (1, None), "learning_rate": (0, None), "num_leaves": (2, None),
                  "min_data_in_leaf": (0, None), "feature_fraction": (0, 1), "bagging_fraction": (0, 1),
                  "lambda_l2": (0, None), "early_stopping_rounds": (0, None), "eval_at": (1, None),
                  "num_threads": (0, None)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            open_low = name in ("learning_rate", "feature_fraction", "bagging_fraction")  # must be > low
            if not math.isfinite(value) or (value <= low if open_low else value < low) or (high is not None and value > high):
                want = (f"{'>' if open_low else '>='} {low}" + (f" and <= {high}" if high is not None else ""))
                raise ConfigError(f"ranker.params.{name}: expected a finite number {want}, found {value!r}")
        if self.max_depth < -1 or self.max_depth == 0:
            raise ConfigError(f"ranker.params.max_depth: expected -1 (no limit) or a depth >= 1, found {self.max_depth}")
        return self


PARAMS = {f.name: f for f in dataclasses.fields(LambdaMARTParams)}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


class LambdaMART:
    """Learning to rank with gradient-boosted trees and a LambdaRank/NDCG objective.

    ``LambdaMART(backend="xgboost", num_leaves=7, ...)``: keyword-only, the fields of
    :class:`LambdaMARTParams`; an unknown keyword is a ``TypeError`` listing the allowed ones.
    """

    def __init__(self, **params):
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise TypeError(f"LambdaMART: unknown parameter(s) {unknown}; allowed: {sorted(PARAMS)}")
        for name, f in PARAMS.items():
            setattr(self, name, params[name] if name in params else _default(f))

    @classmethod
    def from_params(cls, params: LambdaMARTParams) -> "LambdaMART":
        return cls(**asdict(params.check()))

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in PARAMS}

    def _params(self) -> LambdaMARTParams:
        return LambdaMARTParams(**{**self.get_params(), "monotone": dict(self.monotone or {})}).check()

    # ------------------------------------------------------------------ training
    def fit(self, train: RankingData, valid: RankingData | None = None) -> "LambdaMART":
        """Fit on ``train`` (early stopping on ``valid`` when given); returns self."""
        params = self._params()
        for name, data in (("train", train), ("valid", valid)):
            if data is not None and not isinstance(data, RankingData):
                raise TypeError(f"LambdaMART.fit: {name} must be RankingData (features with query groups), "
                                f"found {type(data).__name__}; plain X, y without groups cannot be ranked")
        if train.group is None or len(train.group) == 0:
            raise UsageError("LambdaMART.fit: training data has no query groups")
        if valid is not None and valid.feature_names != train.feature_names:
            raise FeatureMismatchError(f"valid features {valid.feature_names} differ from train {train.feature_names}")
        unknown = sorted(set(params.monotone) - set(train.feature_names))
        if unknown:
            raise ConfigError(f"ranker.monotone names unknown feature(s) {unknown}; features: {train.feature_names}")
        self.backend_, self.evals_ = backend_class(params.backend).fit(params, train, valid)
        self.best_iteration_ = self.backend_.best_iteration
        self.feature_names_ = list(train.feature_names)
        self.feature_versions_ = list(train.feature_versions) if train.feature_versions else None
        self.n_features_in_ = len(self.feature_names_)
        self.train_info_ = {"queries": len(train.group), "rows": len(train.y),
                            "valid_queries": len(valid.group) if valid is not None else 0}
        return self

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self):
        if not hasattr(self, "backend_"):
            raise RuntimeError("LambdaMART: not fitted; call fit() or LambdaMART.load()")

    def check_features(self, names: list[str], versions: list[str] | None = None) -> None:
        """Raise :class:`FeatureMismatchError` unless ``names`` (and ``versions``) match the model's."""
        self._check_fitted()
        problems = []
        missing = [n for n in self.feature_names_ if n not in names]
        extra = [n for n in names if n not in self.feature_names_]
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"unexpected {extra}")
        if not missing and not extra and list(names) != self.feature_names_:
            problems.append(f"order differs: expected {self.feature_names_}, found {list(names)}")
        if versions is not None and self.feature_versions_ is not None:
            changed = [f"{n}: trained on {a}, found {b}" for n, a, b in zip(names, self.feature_versions_, versions)
                       if n in self.feature_names_ and a != b]
            if changed:
                problems.append("version changed (" + "; ".join(changed) + ")")
        if problems:
            raise FeatureMismatchError(
                f"was trained using {self.n_features_in_} features {self.feature_names_}, but found "
                f"{len(names)} features for inference: " + ", ".join(problems))

    def predict(self, data) -> np.ndarray:
        """Scores for RankingData (names and versions checked; its ``base``, when it has one, added: the
        model was fit on top of it) or a matrix (shape checked)."""
        self._check_fitted()
        if isinstance(data, RankingData):
            self.check_features(data.feature_names, data.feature_versions)
            if data.base is not None:
                return np.asarray(self.backend_.predict(data.X)) + data.base
            X = data.X
        else:
            X = np.asarray(data, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise FeatureMismatchError(f"was trained using {self.n_features_in_} features, but found "
                                           f"{X.shape[1] if X.ndim == 2 else X.shape} for inference")
        return np.asarray(self.backend_.predict(X))

    def contributions(self, data: RankingData) -> np.ndarray:
        """TreeSHAP values from the booster itself: (rows, features + 1), the last column the bias (a
        ``base`` score, when the data has one, is not among them: the prediction is base + their sum)."""
        self.check_features(data.feature_names, data.feature_versions)
        return np.asarray(self.backend_.predict(data.X, contrib=True))

    def importance(self, kind: str = "gain") -> dict[str, float]:
        """Total ``gain`` (default) or ``split`` count per feature, from the booster."""
        self._check_fitted()
        if kind not in ("gain", "split"):
            raise UsageError(f"importance kind must be 'gain' or 'split', found {kind!r}")
        return dict(zip(self.feature_names_, self.backend_.importance(kind)))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, extra: dict | None = None) -> Path:
        """Write the booster file and ``manifest.json`` into folder ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backend_.save(path)
        manifest = {
            "kind": "fusion-ltr LambdaMART", "backend": self.backend, "booster_file": self.backend_.booster_file,
            "features": [{"name": n, "version": v} for n, v in
                         zip(self.feature_names_, self.feature_versions_ or [None] * self.n_features_in_)],
            "params": self.get_params(), "best_iteration": self.best_iteration_, "train": self.train_info_,
            "evals": self.evals_, "library_versions": _versions(type(self.backend_)), **(extra or {}),
        }
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LambdaMART":
        """A saved model folder, checked as a whole before anything is loaded: the manifest parses and
        has its keys, the booster file is there and whole, and the booster's own feature names equal the
        manifest's, in order (a manifest that lists them in another order would silently swap values)."""
        path = Path(path)
        manifest = read_manifest(path)
        self = cls(**manifest["params"])
        backend = backend_class(self.backend)
        booster_file = path / manifest["booster_file"]
        if not booster_file.is_file():
            raise MissingInputError(f"{booster_file}: the booster file the manifest names is missing")
        names = [f["name"] for f in manifest["features"]]
        booster_names = backend.check_file(booster_file)
        if booster_names != names:
            raise FeatureMismatchError(f"{path / 'manifest.json'} lists features {names}, but the booster "
                                       f"{booster_file.name} was trained on {booster_names} (in that order); "
                                       "the folder was edited or mixed: retrain, or restore the manifest")
        self.backend_ = backend.load(path, manifest)
        self.best_iteration_ = self.backend_.best_iteration
        self.feature_names_ = [f["name"] for f in manifest["features"]]
        versions = [f["version"] for f in manifest["features"]]
        self.feature_versions_ = None if all(v is None for v in versions) else versions
        self.n_features_in_ = len(self.feature_names_)
        self.train_info_ = manifest.get("train", {})
        self.evals_ = manifest.get("evals", {})
        self.manifest_ = manifest
        return self


MANIFEST_KEYS = ("params", "features", "booster_file")


def read_manifest(path: Path) -> dict:
    """``<path>/manifest.json`` of a model folder, with its required keys (errors name the file)."""
    file = Path(path) / "manifest.json"
    if not file.is_file():
        raise MissingInputError(f"{path}: not a model folder (expected manifest.json and a booster file)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file}: not valid JSON ({exc}); retrain with `fusion-ltr train --config ...`") from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise UsageError(f"{file}: expected the keys {list(MANIFEST_KEYS)}, missing {missing}")
    features = manifest["features"]
    if not isinstance(features, list) or not all(isinstance(f, dict) and "name" in f for f in features):
        raise UsageError(f"{file}: 'features' must be a list of {{'name', 'version'}} objects, found {features!r:.120}")
    unknown = sorted(set(manifest["params"]) - set(PARAMS)) if isinstance(manifest["params"], dict) else ["(not a table)"]
    if unknown:
        raise UsageError(f"{file}: unknown parameter(s) {unknown} in 'params'; allowed: {sorted(PARAMS)}")
    return manifest


def _versions(backend: type) -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__,
            backend.name: backend.library().__version__}


def query_folds(qids, k: int, seed: int) -> list[list[str]]:
    """Split query ids into ``k`` folds by a seeded permutation (query-level, disjoint, covering)."""
    uniq = np.array(sorted({str(q) for q in qids}))
    if k < 2 or k > len(uniq):
        raise UsageError(f"need 2 <= k <= number of queries ({len(uniq)}), found k={k}")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return [sorted(uniq[perm[i::k]].tolist()) for i in range(k)]


def cross_val_predict(params, data: RankingData, k: int, *, valid_fraction: float = 0.0,
                      seed: int = 42, served=None) -> np.ndarray:
    """Out-of-fold scores: each query is scored by a model that never saw it (query-level K-fold).

    With ``valid_fraction`` > 0, each fold's training queries lose that share to early stopping.
    ``params`` is a :class:`LambdaMARTParams`, or a function of a fold's training data that returns
    them (settings chosen inside each fold: nested cross-validation). ``served(model, valid, part,
    scores)``, when given, returns what a fold serves for its queries ``part`` in place of the model's
    ``scores`` (the first-stage guard, decided on the fold's validation queries ``valid``).
    """
    from retrieval.data import hash_split

    scores = np.full(len(data.y), np.nan)
    for fold in query_folds(data.qids, k, seed):
        train_q = [q for q in data.unique_qids if q not in set(fold)]
        valid = None
        if valid_fraction > 0:
            train_q, valid_q = hash_split(train_q, valid_fraction, seed, salt="valid:")
            valid = data.subset(valid_q) if valid_q else None
        train = data.subset(train_q)
        model = LambdaMART.from_params(params(train) if callable(params) else params).fit(train, valid)
        mask = np.isin(data.qids, fold)
        part = data.subset(fold)  # data is sorted by qid: the same row order as mask's
        scores[mask] = model.predict(part) if served is None else served(model, valid, part, model.predict(part))
    return scores
