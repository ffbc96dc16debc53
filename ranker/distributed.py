"""Scale-out on Dask: the ``[compute]`` config, the cluster it names, and LambdaMART trained by the
workers (``lightgbm.dask.DaskLGBMRanker``, ``xgboost.dask``).

The ranking matrix becomes Dask arrays partitioned by query (:func:`query_chunks`: a query's rows never
span two partitions, as LightGBM's and XGBoost's ranking objectives require); each backend trains on them
in its own ``fit_dask`` (:mod:`ranker.backends`). The trained booster is brought
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

from .backends import backend_class
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
    backend, evals = backend_class(p.backend).fit_dask(p, train, valid, client, partitions)
    model.backend_, model.evals_ = backend, evals
    model.best_iteration_ = backend.best_iteration
    model.feature_names_ = list(train.feature_names)
    model.feature_versions_ = list(train.feature_versions) if train.feature_versions else None
    model.n_features_in_ = len(model.feature_names_)
    model.train_info_ = {"queries": len(train.group), "rows": len(train.y),
                         "valid_queries": len(valid.group) if valid is not None else 0,
                         "engine": "dask", "workers": len(client.scheduler_info()["workers"])}
    return model
