"""LightGBM ``lambdarank``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.errors import UsageError

from . import Backend


#: Rows below which training uses one thread when ``num_threads = 0`` (10x faster on a busy 2-core
#: machine for the cross-validations of tuning and ablation; measured in tests/ranker/test_tuning.py's data).
SMALL = 20_000


class LightGBMBackend(Backend):
    name = "lightgbm"
    install = "pip install lightgbm"
    booster_file = "model.txt"

    @staticmethod
    def params(p, feature_names: list[str], rows: int) -> dict:
        """The LightGBM parameters of :class:`LambdaMARTParams` ``p`` (shared with the Dask trainer)."""
        params = {
            "objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [p.eval_at], "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves, "max_depth": p.max_depth, "min_data_in_leaf": p.min_data_in_leaf,
            "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction,
            "bagging_freq": 1 if p.bagging_fraction < 1 else 0, "lambda_l2": p.lambda_l2, "seed": p.seed,
            "deterministic": True, "force_row_wise": True, "verbosity": -1,
        }
        if p.num_threads:
            params["num_threads"] = p.num_threads
        elif rows < SMALL:  # threads cost more than they give on small data (and never change a
            params["num_threads"] = 1  # result: `deterministic` holds across thread counts)
        if p.monotone:
            params["monotone_constraints"] = [int(p.monotone.get(n, 0)) for n in feature_names]
        return params

    @classmethod
    def fit(cls, p, train, valid):
        lgb = cls.library()
        params = cls.params(p, train.feature_names, len(train.y))
        # shown positions (click labels): LightGBM's unbiased lambdarank learns the position bias beside the trees
        dtrain = lgb.Dataset(train.X, train.y, group=train.group, feature_name=train.feature_names,
                             init_score=train.base, position=train.position, free_raw_data=False)
        sets, names, callbacks, evals = [dtrain], ["train"], [], {}
        if valid is not None:
            sets.append(lgb.Dataset(valid.X, valid.y, group=valid.group, init_score=valid.base, reference=dtrain,
                                    position=valid.position))
            names.append("valid")
            if p.early_stopping_rounds:
                callbacks.append(lgb.early_stopping(p.early_stopping_rounds, verbose=False))
        callbacks.append(lgb.record_evaluation(evals))
        booster = lgb.train(params, dtrain, num_boost_round=p.n_estimators, valid_sets=sets, valid_names=names,
                            callbacks=callbacks)
        best = booster.best_iteration if valid is not None and booster.best_iteration > 0 else None
        summary = {name: {metric: float(vals[(best or len(vals)) - 1]) for metric, vals in m.items()}
                   for name, m in evals.items()}
        return cls(booster, best, train.feature_names), summary

    @classmethod
    def fit_dask(cls, p, train, valid, client, partitions: int):
        """``lightgbm.dask.DaskLGBMRanker`` on the cluster: no early stopping there, so every tree is
        trained with the validation queries as an eval set and the best iteration is kept."""
        from retrieval.models import require

        from ..distributed import INSTALL, query_chunks

        lgb_dask = require("lightgbm.dask", INSTALL)
        X, y, group = query_chunks(train, partitions)
        params = cls.params(p, train.feature_names, len(train.y))
        params.pop("num_threads", None)  # each worker uses its own threads
        kwargs = {}
        if valid is not None:
            vX, vy, vgroup = query_chunks(valid, partitions)
            kwargs = {"eval_set": [(vX, vy)], "eval_group": [vgroup], "eval_names": ["valid"], "eval_at": [p.eval_at]}
        ranker = lgb_dask.DaskLGBMRanker(client=client, n_estimators=p.n_estimators, **params)
        ranker.fit(X, y, group=group, feature_name=train.feature_names, **kwargs)
        booster = ranker.to_local().booster_
        evals, best = {}, None
        if valid is not None:
            curve = ranker.evals_result_["valid"][f"ndcg@{p.eval_at}"]
            best = int(np.argmax(curve)) + 1  # the first iteration with the best validation score
            evals = {"valid": {f"ndcg@{p.eval_at}": float(curve[best - 1])}}
        return cls(booster, best, train.feature_names), evals

    def predict(self, X: np.ndarray, contrib: bool = False) -> np.ndarray:
        return self.booster.predict(X, num_iteration=self.best_iteration or None, pred_contrib=contrib)

    def importance(self, kind: str) -> list[float]:
        return [float(v) for v in self.booster.feature_importance(importance_type=kind,
                                                                  iteration=self.best_iteration or None)]

    def save(self, folder: Path) -> None:
        self.booster.save_model(str(Path(folder) / self.booster_file), num_iteration=self.best_iteration or None)

    @classmethod
    def check_file(cls, path: Path) -> list[str]:
        """Read the model file's header and check it is whole (LightGBM aborts the process on a
        truncated file instead of raising): every tree the header announces, and the trailer."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not a LightGBM model file (not UTF-8 text: {exc.reason})") from None
        lines = text.splitlines()
        header = dict(line.split("=", 1) for line in lines[:40] if "=" in line and not line.startswith("Tree="))
        if not lines or lines[0] != "tree" or "feature_names" not in header or "tree_sizes" not in header:
            raise UsageError(f"{path}: not a LightGBM model file (expected a 'tree' header with feature_names "
                             f"and tree_sizes, found {text[:60]!r})")
        announced = len(header["tree_sizes"].split())
        found = sum(line.startswith("Tree=") for line in lines)
        whole = "end of trees" in lines and "end of parameters" in lines and lines[-1].startswith("pandas_categorical:")
        if found != announced or not whole:
            raise UsageError(f"{path}: the LightGBM model file is damaged or truncated ({found} of {announced} "
                             f"trees, {'with' if whole else 'without'} its closing sections, {len(text)} bytes); "
                             "retrain with `fusion-ltr train --config ...`")
        return header["feature_names"].split()

    @classmethod
    def load(cls, folder: Path, manifest: dict) -> "LightGBMBackend":
        booster = cls.library().Booster(model_file=str(Path(folder) / manifest["booster_file"]))
        # the saved file holds the best iteration's trees only
        return cls(booster, None, [f["name"] for f in manifest["features"]])
