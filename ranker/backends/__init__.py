"""Booster backends of :class:`ranker.lambdamart.LambdaMART`: one module each, registered by name.

A backend wraps one gradient-boosting library's ranking objective behind five calls::

    class Backend:
        name: str                 # the `ranker.params.backend` value, e.g. "lightgbm"
        install: str              # the command that installs the library
        booster_file: str         # the file the booster is saved to inside a model folder
        @classmethod
        def fit(cls, params, train, valid) -> tuple[Backend, dict]   # fitted backend, eval summary
        def predict(self, X, contrib=False) -> ndarray   # scores, or TreeSHAP (rows, features + 1)
        def importance(self, kind) -> list[float]        # "gain" or "split", in feature order
        def save(self, folder) -> None                   # writes folder / booster_file
        @classmethod
        def check_file(cls, path) -> list[str]           # the booster's own feature names; an error
                                                         # naming the file if it is damaged
        @classmethod
        def load(cls, folder, manifest) -> Backend
        @classmethod
        def fit_dask(cls, params, train, valid, client, partitions) -> tuple[Backend, dict]
                                                         # optional: the fit on a Dask cluster

``params`` is a :class:`ranker.lambdamart.LambdaMARTParams`; ``train``/``valid`` are
:class:`features.matrix.RankingData` (query groups included). Fitted state: ``booster`` (the
library's object), ``best_iteration`` (``None``: use every tree) and ``feature_names``.

Adding a backend: one module here with its class, and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib

from retrieval.params import ConfigError

#: Backend name -> "module:Class", imported on first use (a missing library costs nothing until then).
REGISTRY: dict[str, str] = {
    "lightgbm": "ranker.backends.lightgbm:LightGBMBackend",
    "xgboost": "ranker.backends.xgboost:XGBoostBackend",
}


class Backend:
    """Shared state of a fitted backend (see the module docstring for the protocol)."""

    name: str
    install: str
    booster_file: str

    def __init__(self, booster, best_iteration: int | None, feature_names: list[str]):
        self.booster = booster
        self.best_iteration = best_iteration
        self.feature_names = list(feature_names)

    @classmethod
    def fit_dask(cls, params, train, valid, client, partitions: int):
        """The fit on a Dask cluster (``compute.engine = "dask"``), for a backend that has one."""
        from retrieval.errors import UsageError

        raise UsageError(f"compute.engine = 'dask': the {cls.name} backend has no Dask trainer")

    @classmethod
    def library(cls):
        """The imported library, or an error naming the install command."""
        from retrieval.models import require

        return require(cls.name, cls.install)


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise ConfigError(f"ranker.backend: expected one of {sorted(REGISTRY)}, found {name!r}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)
