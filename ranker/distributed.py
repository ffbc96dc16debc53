"""Scale-out on Dask: the ``[compute]`` config, the cluster it names, and LambdaMART trained by the
workers (``lightgbm.dask.DaskLGBMRanker``, ``xgboost.dask``).

The ranking matrix becomes Dask arrays partitioned by query (a query's rows never span two
partitions, as LightGBM's and XGBoost's ranking objectives require). The trained booster is brought
back to the driver and saved exactly like a local one (same parameters, manifest and model folder),
so the Scorer serves either. LightGBM's Dask interface has no early stopping: the model trains all
``n_estimators`` trees with the validation queries as an eval set, and keeps the iteration with the
best validation score (the local trainer stops 50 rounds after that best).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal
from dataclasses import dataclass

import numpy as np

from features.matrix import RankingData
from retrieval.errors import UsageError
from retrieval.models import require
from retrieval.params import ConfigError

from .backends.lightgbm import LightGBMBackend
from .backends.xgboost import XGBoostBackend
from .lambdamart import LambdaMART

INSTALL = "pip install 'dask[dataframe]' distributed"


@dataclass(frozen=True)
class ComputeConfig:
    """``[compute]``: where features are built and rankers trained."""

    engine: Literal["local", "dask"] = "local"  # "local" (one process) or "dask" (a cluster, [compute] below)
    scheduler: str = "local"  # "local": a LocalCluster started and stopped by the command; or an address
    workers: int = 2  # LocalCluster workers (processes)
    threads_per_worker: int = 1  # threads of each LocalCluster worker
    partitions: int = 0  # pair partitions of a feature build (0: 4 per worker)
    parts_dir: str = ""  # where workers write Parquet parts (shared storage on a cluster); empty: <run>/features/parts

    def check(self) -> "ComputeConfig":
        if self.engine not in ("local", "dask"):
            raise ConfigError(f"compute.engine: expected 'local' or 'dask', found {self.engine!r}")
        if self.workers < 1 or self.threads_per_worker < 1 or self.partitions < 0:
            raise ConfigError(f"compute: workers and threads_per_worker must be >= 1 and partitions >= 0, found "
                             f"{self.workers}, {self.threads_per_worker}, {self.partitions}")
        return self

    @property
    def n_partitions(self) -> int:
        return self.partitions or 4 * self.workers


@contextmanager
def dask_client(compute: ComputeConfig):
    """A ``distributed.Client`` on the configured scheduler (a LocalCluster lives for the block only)."""
    distributed = require("distributed", INSTALL)
    if compute.scheduler == "local":
        with distributed.LocalCluster(n_workers=compute.workers, threads_per_worker=compute.threads_per_worker,
                                      processes=True, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            yield client
    else:
        with distributed.Client(compute.scheduler) as client:
            yield client


def query_chunks(data: RankingData, partitions: int):
    """Dask arrays X, y and group of ``data`` in ``partitions`` chunks of whole queries."""
    da = require("dask.array", INSTALL)
    n_q = len(data.group)
    partitions = max(1, min(partitions, n_q))
    q_bounds = np.linspace(0, n_q, partitions + 1).astype(int)
    q_chunks = tuple(int(b - a) for a, b in zip(q_bounds[:-1], q_bounds[1:]) if b > a)
    starts = np.r_[0, np.cumsum(data.group)]
    row_chunks = tuple(int(starts[b] - starts[a]) for a, b in zip(q_bounds[:-1], q_bounds[1:]) if b > a)
    X = da.from_array(data.X, chunks=(row_chunks, data.X.shape[1]))
    y = da.from_array(data.y.astype(np.float64), chunks=(row_chunks,))
    group = da.from_array(np.asarray(data.group), chunks=(q_chunks,))
    return X, y, group


def fit_dask(model: LambdaMART, train: RankingData, valid: RankingData | None, client, *,
             partitions: int) -> LambdaMART:
    """Fit ``model`` (its parameters as set) on the cluster; returns it fitted, as :meth:`LambdaMART.fit`
    would leave it."""
    p = model._params()
    if valid is not None and valid.feature_names != train.feature_names:
        raise UsageError(f"valid features {valid.feature_names} differ from train {train.feature_names}")
    X, y, group = query_chunks(train, partitions)
    if p.backend == "lightgbm":
        backend, evals = _fit_lightgbm(p, train, valid, X, y, group, client, partitions)
    elif p.backend == "xgboost":
        backend, evals = _fit_xgboost(p, train, valid, X, y, client, partitions)
    else:
        raise UsageError(f"compute.engine = 'dask' trains lightgbm or xgboost, found {p.backend!r}")
    model.backend_, model.evals_ = backend, evals
    model.best_iteration_ = backend.best_iteration
    model.feature_names_ = list(train.feature_names)
    model.feature_versions_ = list(train.feature_versions) if train.feature_versions else None
    model.n_features_in_ = len(model.feature_names_)
    model.train_info_ = {"queries": len(train.group), "rows": len(train.y),
                         "valid_queries": len(valid.group) if valid is not None else 0,
                         "engine": "dask", "workers": len(client.scheduler_info()["workers"])}
    return model


def _fit_lightgbm(p, train, valid, X, y, group, client, partitions):
    lgb_dask = require("lightgbm.dask", INSTALL)
    params = LightGBMBackend.params(p, train.feature_names, len(train.y))
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
    return LightGBMBackend(booster, best, train.feature_names), evals


def _fit_xgboost(p, train, valid, X, y, client, partitions):
    xgb = require("xgboost", XGBoostBackend.install)
    dask_xgb = require("xgboost.dask", XGBoostBackend.install)
    da = require("dask.array", INSTALL)
    qid_codes = np.unique(train.qids, return_inverse=True)[1]  # qids are sorted: codes increase by query
    qid = da.from_array(qid_codes, chunks=X.chunks[0])
    dtrain = dask_xgb.DaskDMatrix(client, X, y, qid=qid, feature_names=train.feature_names)
    evals = [(dtrain, "train")]
    if valid is not None:
        vX, vy, _ = query_chunks(valid, partitions)
        vqid = da.from_array(np.unique(valid.qids, return_inverse=True)[1], chunks=vX.chunks[0])
        evals.append((dask_xgb.DaskDMatrix(client, vX, vy, qid=vqid, feature_names=valid.feature_names), "valid"))
    stop = p.early_stopping_rounds if valid is not None and p.early_stopping_rounds else None
    out = dask_xgb.train(client, XGBoostBackend.params(p, train.feature_names), dtrain, num_boost_round=p.n_estimators,
                         evals=evals, early_stopping_rounds=stop, verbose_eval=False)
    booster: "xgb.Booster" = out["booster"]
    best = getattr(booster, "best_iteration", None) if valid is not None else None
    history = out["history"]
    summary = {name: {metric: float(vals[best if best is not None else -1]) for metric, vals in m.items()}
               for name, m in history.items()}
    return XGBoostBackend(booster, best, train.feature_names), summary
