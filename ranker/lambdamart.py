"""LambdaMART in scikit-learn style over two backends: LightGBM ``lambdarank`` and XGBoost ``rank:ndcg``.

``__init__`` only stores keyword parameters; :meth:`LambdaMART.fit` takes :class:`RankingData`
(which carries the query groups, so data without groups cannot reach the booster) and returns self;
learned state ends in ``_``. A saved model is a folder: the booster file plus ``manifest.json`` with
the feature names and versions in order, parameters, metrics and library versions. Scoring data whose
feature names or versions differ from the manifest raises :class:`FeatureMismatchError` listing the
difference.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from features.store import RankingData
from retrieval.models import require
from retrieval.params import ConfigError

BACKENDS = ("lightgbm", "xgboost")
INSTALL = {"lightgbm": "pip install lightgbm", "xgboost": "pip install 'fusion-ltr[xgboost]'"}


class FeatureMismatchError(ValueError):
    """The features given to a model are not the ones it was trained on."""


@dataclass(frozen=True)
class LambdaMARTParams:
    """Booster parameters shared by both backends (mapped to each library's names)."""

    backend: str = "lightgbm"
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    max_depth: int = -1  # -1: no limit (LightGBM); XGBoost gets 0 (no limit) with lossguide
    min_data_in_leaf: int = 20
    feature_fraction: float = 1.0
    bagging_fraction: float = 1.0
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 50  # on the validation queries, when given
    eval_at: int = 10
    seed: int = 42
    num_threads: int = 0  # 0: the library's default
    monotone: dict[str, int] = field(default_factory=dict)  # feature name -> +1 / -1

    def check(self) -> "LambdaMARTParams":
        if self.backend not in BACKENDS:
            raise ConfigError(f"ranker.backend: expected one of {list(BACKENDS)}, found {self.backend!r}")
        bad = {k: v for k, v in self.monotone.items() if v not in (-1, 0, 1)}
        if bad:
            raise ConfigError(f"ranker.monotone: values must be -1, 0 or 1, found {bad}")
        return self


class LambdaMART:
    """Learning to rank with gradient-boosted trees and a LambdaRank/NDCG objective."""

    def __init__(self, *, backend: str = "lightgbm", n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 15, max_depth: int = -1, min_data_in_leaf: int = 20, feature_fraction: float = 1.0,
                 bagging_fraction: float = 1.0, lambda_l2: float = 1.0, early_stopping_rounds: int = 50,
                 eval_at: int = 10, seed: int = 42, num_threads: int = 0, monotone: dict | None = None):
        self.backend = backend
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_data_in_leaf = min_data_in_leaf
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.eval_at = eval_at
        self.seed = seed
        self.num_threads = num_threads
        self.monotone = monotone

    @classmethod
    def from_params(cls, params: LambdaMARTParams) -> "LambdaMART":
        return cls(**asdict(params.check()))

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in LambdaMARTParams.__dataclass_fields__}

    # ------------------------------------------------------------------ training
    def fit(self, train: RankingData, valid: RankingData | None = None) -> "LambdaMART":
        """Fit on ``train`` (early stopping on ``valid`` when given); returns self."""
        params = LambdaMARTParams(**{**self.get_params(), "monotone": dict(self.monotone or {})}).check()
        for name, data in (("train", train), ("valid", valid)):
            if data is not None and not isinstance(data, RankingData):
                raise TypeError(f"LambdaMART.fit: {name} must be RankingData (features with query groups), "
                                f"found {type(data).__name__}; plain X, y without groups cannot be ranked")
        if train.group is None or len(train.group) == 0:
            raise ValueError("LambdaMART.fit: training data has no query groups")
        if valid is not None and valid.feature_names != train.feature_names:
            raise FeatureMismatchError(f"valid features {valid.feature_names} differ from train {train.feature_names}")
        unknown = sorted(set(params.monotone) - set(train.feature_names))
        if unknown:
            raise ConfigError(f"ranker.monotone names unknown feature(s) {unknown}; features: {train.feature_names}")
        fit = _fit_lightgbm if params.backend == "lightgbm" else _fit_xgboost
        self.booster_, self.best_iteration_, self.evals_ = fit(params, train, valid)
        self.feature_names_ = list(train.feature_names)
        self.feature_versions_ = list(train.feature_versions) if train.feature_versions else None
        self.n_features_in_ = len(self.feature_names_)
        self.train_info_ = {"queries": len(train.group), "rows": len(train.y),
                            "valid_queries": len(valid.group) if valid is not None else 0}
        return self

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self):
        if not hasattr(self, "booster_"):
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
        """Scores for RankingData (names and versions checked) or a matrix (shape checked)."""
        self._check_fitted()
        if isinstance(data, RankingData):
            self.check_features(data.feature_names, data.feature_versions)
            X = data.X
        else:
            X = np.asarray(data, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise FeatureMismatchError(f"was trained using {self.n_features_in_} features, but found "
                                           f"{X.shape[1] if X.ndim == 2 else X.shape} for inference")
        return self._raw_predict(X)

    def _raw_predict(self, X: np.ndarray, contrib: bool = False) -> np.ndarray:
        if self.backend == "lightgbm":
            return self.booster_.predict(X, num_iteration=self.best_iteration_ or None, pred_contrib=contrib)
        xgb = require("xgboost", INSTALL["xgboost"])
        dm = xgb.DMatrix(X, missing=np.nan, feature_names=self.feature_names_)
        rng = (0, self.best_iteration_ + 1) if self.best_iteration_ is not None else (0, 0)
        return self.booster_.predict(dm, iteration_range=rng, pred_contribs=contrib)

    def contributions(self, data: RankingData) -> np.ndarray:
        """TreeSHAP values from the booster itself: (rows, features + 1), the last column the bias."""
        self.check_features(data.feature_names, data.feature_versions)
        return np.asarray(self._raw_predict(data.X, contrib=True))

    def importance(self, kind: str = "gain") -> dict[str, float]:
        """Total ``gain`` (default) or ``split`` count per feature, from the booster."""
        self._check_fitted()
        if kind not in ("gain", "split"):
            raise ValueError(f"importance kind must be 'gain' or 'split', found {kind!r}")
        if self.backend == "lightgbm":
            vals = self.booster_.feature_importance(importance_type=kind, iteration=self.best_iteration_ or None)
            return dict(zip(self.feature_names_, map(float, vals)))
        score = self.booster_.get_score(importance_type="total_gain" if kind == "gain" else "weight")
        return {n: float(score.get(n, 0.0)) for n in self.feature_names_}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, extra: dict | None = None) -> Path:
        """Write the booster file and ``manifest.json`` into folder ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.backend == "lightgbm":
            booster_file = "model.txt"
            self.booster_.save_model(str(path / booster_file), num_iteration=self.best_iteration_ or None)
        else:
            booster_file = "model.json"
            self.booster_.save_model(str(path / booster_file))
        manifest = {
            "kind": "fusion-ltr LambdaMART", "backend": self.backend, "booster_file": booster_file,
            "features": [{"name": n, "version": v} for n, v in
                         zip(self.feature_names_, self.feature_versions_ or [None] * self.n_features_in_)],
            "params": self.get_params(), "best_iteration": self.best_iteration_, "train": self.train_info_,
            "evals": self.evals_, "library_versions": _versions(self.backend), **(extra or {}),
        }
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LambdaMART":
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{path}: not a model folder (expected manifest.json and a booster file)")
        manifest = json.loads(manifest_path.read_text())
        self = cls(**manifest["params"])
        if self.backend == "lightgbm":
            lgb = require("lightgbm", INSTALL["lightgbm"])
            self.booster_ = lgb.Booster(model_file=str(path / manifest["booster_file"]))
            self.best_iteration_ = None  # the saved file holds the best iteration's trees only
        else:
            xgb = require("xgboost", INSTALL["xgboost"])
            self.booster_ = xgb.Booster()
            self.booster_.load_model(str(path / manifest["booster_file"]))
            self.best_iteration_ = manifest["best_iteration"]
        self.feature_names_ = [f["name"] for f in manifest["features"]]
        versions = [f["version"] for f in manifest["features"]]
        self.feature_versions_ = None if all(v is None for v in versions) else versions
        self.n_features_in_ = len(self.feature_names_)
        self.train_info_ = manifest.get("train", {})
        self.evals_ = manifest.get("evals", {})
        self.manifest_ = manifest
        return self


def _versions(backend: str) -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    mod = require(backend, INSTALL[backend])
    out[backend] = mod.__version__
    return out


def _fit_lightgbm(p: LambdaMARTParams, train: RankingData, valid: RankingData | None):
    lgb = require("lightgbm", INSTALL["lightgbm"])
    params = {
        "objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [p.eval_at], "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves, "max_depth": p.max_depth, "min_data_in_leaf": p.min_data_in_leaf,
        "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction,
        "bagging_freq": 1 if p.bagging_fraction < 1 else 0, "lambda_l2": p.lambda_l2, "seed": p.seed,
        "deterministic": True, "force_row_wise": True, "verbosity": -1,
    }
    if p.num_threads:
        params["num_threads"] = p.num_threads
    if p.monotone:
        params["monotone_constraints"] = [int(p.monotone.get(n, 0)) for n in train.feature_names]
    dtrain = lgb.Dataset(train.X, train.y, group=train.group, feature_name=train.feature_names, free_raw_data=False)
    sets, names, callbacks, evals = [dtrain], ["train"], [], {}
    if valid is not None:
        sets.append(lgb.Dataset(valid.X, valid.y, group=valid.group, reference=dtrain))
        names.append("valid")
        if p.early_stopping_rounds:
            callbacks.append(lgb.early_stopping(p.early_stopping_rounds, verbose=False))
    callbacks.append(lgb.record_evaluation(evals))
    booster = lgb.train(params, dtrain, num_boost_round=p.n_estimators, valid_sets=sets, valid_names=names,
                        callbacks=callbacks)
    best = booster.best_iteration if valid is not None and booster.best_iteration > 0 else None
    summary = {name: {metric: float(vals[(best or len(vals)) - 1]) for metric, vals in m.items()}
               for name, m in evals.items()}
    return booster, best, summary


def _fit_xgboost(p: LambdaMARTParams, train: RankingData, valid: RankingData | None):
    xgb = require("xgboost", INSTALL["xgboost"])
    params = {
        "objective": "rank:ndcg", "eval_metric": f"ndcg@{p.eval_at}", "eta": p.learning_rate,
        "max_leaves": p.num_leaves, "max_depth": 0 if p.max_depth < 0 else p.max_depth, "grow_policy": "lossguide",
        "subsample": p.bagging_fraction,  # min_data_in_leaf has no XGBoost twin (min_child_weight is hessian)
        "colsample_bytree": p.feature_fraction, "lambda": p.lambda_l2, "seed": p.seed, "tree_method": "hist",
        "lambdarank_pair_method": "topk", "lambdarank_num_pair_per_sample": p.eval_at,
    }
    if p.num_threads:
        params["nthread"] = p.num_threads
    if p.monotone:
        params["monotone_constraints"] = "(" + ",".join(str(int(p.monotone.get(n, 0))) for n in train.feature_names) + ")"
    dtrain = xgb.DMatrix(train.X, train.y, missing=np.nan, feature_names=train.feature_names)
    dtrain.set_group(train.group)
    evals_list, evals = [(dtrain, "train")], {}
    if valid is not None:
        dvalid = xgb.DMatrix(valid.X, valid.y, missing=np.nan, feature_names=valid.feature_names)
        dvalid.set_group(valid.group)
        evals_list.append((dvalid, "valid"))
    booster = xgb.train(params, dtrain, num_boost_round=p.n_estimators, evals=evals_list, evals_result=evals,
                        early_stopping_rounds=p.early_stopping_rounds if valid is not None and p.early_stopping_rounds else None,
                        verbose_eval=False)
    best = getattr(booster, "best_iteration", None) if valid is not None else None
    summary = {name: {metric: float(vals[best if best is not None else -1]) for metric, vals in m.items()}
               for name, m in evals.items()}
    return booster, best, summary


def query_folds(qids, k: int, seed: int) -> list[list[str]]:
    """Split query ids into ``k`` folds by a seeded permutation (query-level, disjoint, covering)."""
    uniq = np.array(sorted({str(q) for q in qids}))
    if k < 2 or k > len(uniq):
        raise ValueError(f"need 2 <= k <= number of queries ({len(uniq)}), found k={k}")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return [sorted(uniq[perm[i::k]].tolist()) for i in range(k)]


def cross_val_predict(params: LambdaMARTParams, data: RankingData, k: int, *, valid_fraction: float = 0.0,
                      seed: int = 42) -> np.ndarray:
    """Out-of-fold scores: each query is scored by a model that never saw it (query-level K-fold).

    With ``valid_fraction`` > 0, each fold's training queries lose that share to early stopping.
    """
    from retrieval.data import hash_split

    scores = np.full(len(data.y), np.nan)
    for fold in query_folds(data.qids, k, seed):
        train_q = [q for q in data.unique_qids if q not in set(fold)]
        valid = None
        if valid_fraction > 0:
            train_q, valid_q = hash_split(train_q, valid_fraction, seed, salt="valid:")
            valid = data.subset(valid_q) if valid_q else None
        model = LambdaMART.from_params(params).fit(data.subset(train_q), valid)
        mask = np.isin(data.qids, fold)
        scores[mask] = model.predict(data.subset(fold))  # data is sorted by qid: same row order
    return scores
