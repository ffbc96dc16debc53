"""XGBoost ``rank:ndcg`` (the CPU wheel ``xgboost-cpu`` is enough)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retrieval.errors import UsageError

from . import Backend


def check_shown_order(data) -> None:
    """XGBoost takes a group's row order for the order shown: the rows must come by position, 1, 2, ..."""
    starts = np.cumsum(np.r_[0, data.group[:-1]]).astype(int)
    expected = np.concatenate([np.arange(1, g + 1) for g in data.group]) if len(data.group) else np.arange(0)
    if not np.array_equal(data.position, expected):
        first = int(np.flatnonzero(data.position != expected)[0])
        q = int(np.searchsorted(starts, first, side="right") - 1)
        raise UsageError(f"xgboost with shown positions: query {data.qids[first]!r}'s rows must come in the order shown "
                         f"(positions 1..{data.group[q]}), found position {data.position[first]} at row "
                         f"{first - starts[q] + 1}")


class XGBoostBackend(Backend):
    name = "xgboost"
    install = "pip install 'fusion-ltr[xgboost]'"
    booster_file = "model.json"

    @staticmethod
    def params(p, feature_names: list[str]) -> dict:
        """The XGBoost parameters of :class:`LambdaMARTParams` ``p`` (shared with the Dask trainer)."""
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
            params["monotone_constraints"] = "(" + ",".join(str(int(p.monotone.get(n, 0)))
                                                            for n in feature_names) + ")"
        return params

    @classmethod
    def fit(cls, p, train, valid):
        xgb = cls.library()
        params = cls.params(p, train.feature_names)
        if train.position is not None:  # click labels: XGBoost's unbiased LambdaMART reads each query group's rows
            check_shown_order(train)     # as the positions shown
            params |= {"lambdarank_unbiased": True}
        dtrain = xgb.DMatrix(train.X, train.y, missing=np.nan, feature_names=train.feature_names)
        dtrain.set_group(train.group)
        if train.base is not None:
            dtrain.set_base_margin(train.base)
        evals_list, evals = [(dtrain, "train")], {}
        if valid is not None:
            dvalid = xgb.DMatrix(valid.X, valid.y, missing=np.nan, feature_names=valid.feature_names)
            dvalid.set_group(valid.group)
            if valid.base is not None:
                dvalid.set_base_margin(valid.base)
            evals_list.append((dvalid, "valid"))
        stop = p.early_stopping_rounds if valid is not None and p.early_stopping_rounds else None
        booster = xgb.train(params, dtrain, num_boost_round=p.n_estimators, evals=evals_list, evals_result=evals,
                            early_stopping_rounds=stop, verbose_eval=False)
        best = getattr(booster, "best_iteration", None) if valid is not None else None
        summary = {name: {metric: float(vals[best if best is not None else -1]) for metric, vals in m.items()}
                   for name, m in evals.items()}
        return cls(booster, best, train.feature_names), summary

    @classmethod
    def fit_dask(cls, p, train, valid, client, partitions: int):
        """``xgboost.dask.train`` on the cluster, with early stopping on the validation queries."""
        from retrieval.models import require

        from ..distributed import INSTALL, query_chunks

        dask_xgb = require("xgboost.dask", cls.install)
        da = require("dask.array", INSTALL)
        X, y, _ = query_chunks(train, partitions)
        qid_codes = np.unique(train.qids, return_inverse=True)[1]  # qids are sorted: codes increase by query
        qid = da.from_array(qid_codes, chunks=X.chunks[0])
        dtrain = dask_xgb.DaskDMatrix(client, X, y, qid=qid, feature_names=train.feature_names)
        evals = [(dtrain, "train")]
        if valid is not None:
            vX, vy, _ = query_chunks(valid, partitions)
            vqid = da.from_array(np.unique(valid.qids, return_inverse=True)[1], chunks=vX.chunks[0])
            evals.append((dask_xgb.DaskDMatrix(client, vX, vy, qid=vqid, feature_names=valid.feature_names), "valid"))
        stop = p.early_stopping_rounds if valid is not None and p.early_stopping_rounds else None
        out = dask_xgb.train(client, cls.params(p, train.feature_names), dtrain, num_boost_round=p.n_estimators,
                             evals=evals, early_stopping_rounds=stop, verbose_eval=False)
        booster = out["booster"]
        best = getattr(booster, "best_iteration", None) if valid is not None else None
        history = out["history"]
        summary = {name: {metric: float(vals[best if best is not None else -1]) for metric, vals in m.items()}
                   for name, m in history.items()}
        return cls(booster, best, train.feature_names), summary

    def predict(self, X: np.ndarray, contrib: bool = False) -> np.ndarray:
        dm = self.library().DMatrix(X, missing=np.nan, feature_names=self.feature_names)
        rng = (0, self.best_iteration + 1) if self.best_iteration is not None else (0, 0)
        return self.booster.predict(dm, iteration_range=rng, pred_contribs=contrib)

    def importance(self, kind: str) -> list[float]:
        score = self.booster.get_score(importance_type="total_gain" if kind == "gain" else "weight")
        return [float(score.get(n, 0.0)) for n in self.feature_names]

    def save(self, folder: Path) -> None:
        self.booster.save_model(str(Path(folder) / self.booster_file))

    @classmethod
    def check_file(cls, path: Path) -> list[str]:
        """Parse the JSON model and return its feature names (a damaged file names itself)."""
        try:
            model = json.loads(Path(path).read_text(encoding="utf-8"))
            return list(model["learner"]["feature_names"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: not a whole XGBoost JSON model ({type(exc).__name__}: {str(exc)[:120]}); "
                             "retrain with `fusion-ltr train --config ...`") from None

    @classmethod
    def load(cls, folder: Path, manifest: dict) -> "XGBoostBackend":
        booster = cls.library().Booster()
        booster.load_model(str(Path(folder) / manifest["booster_file"]))
        return cls(booster, manifest["best_iteration"], [f["name"] for f in manifest["features"]])
