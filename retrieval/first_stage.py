"""The first stage as one object: which systems, how deep, how fused; index, save, load, retrieve.

:class:`FirstStageConfig` is the ``[retrieval]`` table of a config and the ``retrieval`` entry of a
model manifest; :class:`FirstStage` is the only code that turns it into candidate lists, used by
``fusion-ltr retrieve`` offline and by ``Scorer.search`` at serving time, so both rerank the same
lists by construction.

Systems: ``bm25`` and ``dense`` are the *members*; ``hybrid`` fuses the members' lists (each to
``depth``) with reciprocal rank fusion. Every system's list is cut to its top ``k``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .bm25 import BM25Params, BM25Retriever
from .dense import DenseParams, DenseRetriever
from .errors import MissingInputError
from .frames import DOCNO, QID, RANK, SCORE, TIMESTAMP, attach
from .fusion import rrf
from .params import ConfigError, from_dict

SYSTEMS = ("bm25", "dense", "hybrid")
MEMBERS = ("bm25", "dense")


@dataclass(frozen=True)
class FirstStageConfig:
    """``[retrieval]``: the first-stage systems and their parameters."""

    systems: tuple[str, ...] = ("bm25", "dense", "hybrid")  # `hybrid` fuses the others with RRF
    k: int = 100  # candidates kept per query
    depth: int = 100  # depth of each member's list before fusion
    rrf_k: int = 60  # hybrid: each list contributes 1 / (rrf_k + rank)
    bm25: BM25Params = field(default_factory=BM25Params)
    dense: DenseParams = field(default_factory=DenseParams)

    def check(self, where: str = "retrieval") -> "FirstStageConfig":
        bad = [s for s in self.systems if s not in SYSTEMS]
        if bad:
            raise ConfigError(f"{where}.systems has unknown {bad}; allowed: {list(SYSTEMS)}")
        if not self.systems:
            raise ConfigError(f"{where}.systems: expected at least one of {list(SYSTEMS)}, found none")
        if self.k < 1 or self.depth < 1:
            raise ConfigError(f"{where}.k and {where}.depth must be >= 1, found {self.k}, {self.depth}")
        if self.rrf_k < 0:
            raise ConfigError(f"{where}.rrf_k must be >= 0, found {self.rrf_k}")
        return self

    @property
    def members(self) -> tuple[str, ...]:
        """The retrievers that must run: those named, and both members for ``hybrid``."""
        need = set(self.systems) | (set(MEMBERS) if "hybrid" in self.systems else set())
        return tuple(m for m in MEMBERS if m in need)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "FirstStageConfig":
        return from_dict(cls, data, "retrieval").check()


def fuse(member_runs: dict[str, pd.DataFrame], systems, *, k: int, rrf_k: int = 60) -> dict[str, pd.DataFrame]:
    """Each system's run cut to its top ``k`` from the members' deeper runs; ``hybrid`` fuses the
    members' full-depth runs with RRF first."""
    runs = dict(member_runs)
    if "hybrid" in systems:
        missing = [m for m in MEMBERS if m not in runs]
        if missing:
            raise ConfigError(f"hybrid needs the {missing} run(s); found {sorted(runs)}")
        runs["hybrid"] = rrf([runs["bm25"], runs["dense"]], k=rrf_k, depth=k)
    return {s: runs[s][runs[s][RANK] <= k].reset_index(drop=True) for s in systems}


class FirstStage:
    """The configured retrievers over one corpus.

    ``index(corpus)`` builds them, ``save(folder)`` writes what cannot be rebuilt cheaply (the bm25s
    index; dense embeddings live in the embedding cache), ``load(folder, corpus)`` reads it back, and
    ``retrieve(queries)`` gives every configured system's top-``k`` run.
    """

    def __init__(self, config: FirstStageConfig | None = None, *, cache: str | Path | None = None):
        self.config = (config or FirstStageConfig()).check()
        self.cache = cache or None
        self.retrievers_: dict[str, object] = {}
        #: Wall times of the last ``index`` and ``retrieve`` calls, how many documents were encoded, how many
        #: documents and queries BM25's analyzer left without a term, and per system how many queries got
        #: no candidate.
        self.timing_: dict[str, float] = {}

    def _dense(self) -> DenseRetriever:
        return DenseRetriever(self.config.dense, cache=self.cache)

    def index(self, corpus: pd.DataFrame) -> "FirstStage":
        for m in self.config.members:
            t = time.perf_counter()
            retriever = BM25Retriever(self.config.bm25) if m == "bm25" else self._dense()
            self.retrievers_[m] = retriever.index(corpus)
            self.timing_[f"{m}_index_s"] = time.perf_counter() - t
            if m == "dense":
                self.timing_["dense_docs_encoded"] = retriever.stats_["encoded"]
            else:
                self.timing_["bm25_docs_without_terms"] = retriever.stats_["docs_without_terms"]
        return self

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        if "bm25" in self.retrievers_:
            self.retrievers_["bm25"].save(folder / "bm25")
        return folder

    @classmethod
    def load(cls, folder: str | Path, corpus: pd.DataFrame, config: FirstStageConfig, *,
             cache: str | Path | None = None) -> "FirstStage":
        """The first stage saved in ``folder``; the dense member re-reads its corpus embeddings from the
        embedding cache (encoding them only when absent)."""
        self = cls(config, cache=cache)
        folder = Path(folder)
        if "bm25" in self.config.members:
            if not (folder / "bm25").exists():
                raise MissingInputError(f"{folder}: this run folder holds no retrieval index (expected "
                                        "index/bm25 from `fusion-ltr retrieve`); use rerank() with your own candidates")
            bm25 = BM25Retriever.load(folder / "bm25")
            if bm25.params != self.config.bm25:
                raise ConfigError(f"{folder / 'bm25'}: index parameters {bm25.params} differ from the configured "
                                  f"{self.config.bm25}")
            self.retrievers_["bm25"] = bm25
        if "dense" in self.config.members:
            self.retrievers_["dense"] = self._dense().index(corpus)
        return self

    def retrieve(self, queries: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Every configured system's run (top ``k`` per query)."""
        c = self.config
        depth = max(c.k, c.depth)
        member_runs = {}
        for m in c.members:
            if m not in self.retrievers_:
                raise RuntimeError("FirstStage: call index(corpus) or FirstStage.load(...) first")
            t = time.perf_counter()
            member_runs[m] = self.retrievers_[m].retrieve(queries, depth)
            self.timing_[f"{m}_retrieve_s"] = time.perf_counter() - t
            if m == "bm25":
                self.timing_["bm25_queries_without_terms"] = self.retrievers_[m].stats_["queries_without_terms"]
        runs = fuse(member_runs, c.systems, k=c.k, rrf_k=c.rrf_k)
        asked = set(queries[QID].astype(str))
        for system, run in runs.items():
            self.timing_[f"{system}_queries_without_candidates"] = len(asked - set(run[QID]))
        return runs

    def candidates(self, queries: pd.DataFrame, corpus: pd.DataFrame, system: str) -> pd.DataFrame:
        """The candidate frame of ``system`` for ``queries`` with the query and document fields, plus
        ``rank_<r>``/``score_<r>`` of every other configured system (NaN when absent): the columns the
        feature store gives the offline build."""
        runs = self.retrieve(queries)
        frame = attach(runs[system].sort_values([QID, RANK]), queries, corpus).reset_index(drop=True)
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        for name, run in runs.items():
            if name == system:
                continue
            member = run.set_index([QID, DOCNO])
            keys = pd.MultiIndex.from_arrays([frame[QID], frame[DOCNO]])
            frame[f"rank_{name}"] = member[RANK].reindex(keys).to_numpy(np.float64)
            frame[f"score_{name}"] = member[SCORE].reindex(keys).to_numpy(np.float64)
        return frame
