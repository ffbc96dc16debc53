"""The feature build on Dask: the same extractors and cache, computed by many workers.

The driver asks the store which values are missing (as the local build does), splits those pairs into
partitions by a hash of ``qid``, and sends one task per (extractor, partition) to the cluster. A worker
builds each extractor once (kept in a per-process cache, keyed by its config and corpus statistics),
computes its partition with :func:`features.build.compute` (the one code path of
training and serving), and writes a Parquet part in the store's export layout: ``feature, version,
qid, docno, query_hash, doc_hash, value``, with the provenance in the file's metadata. The driver
ingests each part into DuckDB as soon as it is done, in one transaction, then deletes it.

A worker that dies loses only the partition it was computing: every finished part is ingested (parts
left over by a driver that died are ingested at the start of the next build), and the rerun computes
only what the store still lacks. Parts go to a folder every worker can write (``parts_dir``; on a
real cluster, shared storage).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.errors import UsageError
from retrieval.frames import DOCNO, QID

from . import base as fbase
from .build import ExtractorReport, compute, eligible, feature_specs
from .store import FeatureStore

INSTALL = "pip install 'dask[dataframe]' distributed"
KEYS = [QID, DOCNO, "query_hash", "doc_hash"]
_WORKER_EXTRACTORS: dict[str, fbase.BaseExtractor] = {}  # per worker process: each extractor built once


def partition_of(qids: pd.Series, partitions: int) -> np.ndarray:
    """A stable partition number per query id (the same on every machine and Python process)."""
    return np.array([int(hashlib.sha1(q.encode()).hexdigest()[:8], 16) % partitions for q in qids.astype(str)])


def _extractor(name: str, target: str, config: dict, state_dir: str | None, root: str | None):
    key = json.dumps([name, target, config, state_dir, root], sort_keys=True, default=str)
    if key not in _WORKER_EXTRACTORS:
        fbase.register(name, target)  # extractors registered at run time in the driver exist here too
        ext = fbase.create(name, config)
        ext.root = root
        if ext.has_corpus_state:
            ext.load_state(Path(state_dir))
        _WORKER_EXTRACTORS[key] = ext
    return _WORKER_EXTRACTORS[key]


def compute_part(name: str, target: str, config: dict, state_dir: str | None, root: str | None, version: str,
                 pairs: pd.DataFrame, out: str) -> dict:
    """Worker task: one extractor over one partition of pairs, written as a Parquet part."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ext = _extractor(name, target, config, state_dir, root)
    if ext.version != version:
        raise UsageError(f"{name}: the worker built version {ext.version}, the driver expects {version}; "
                         "do the workers run the same code, models and corpus statistics?")
    columns, timing = compute(pairs, [ext])  # the serving path: batch by batch, pairs already eligible
    seconds = timing[ext.name]
    keys = pairs[KEYS].reset_index(drop=True)
    long = pd.concat([keys.assign(feature=s.name, version=s.version, value=columns[s.name]) for s in ext.specs],
                     ignore_index=True)
    table = pa.Table.from_pandas(long[["feature", "version", *KEYS, "value"]], preserve_index=False)
    provenance = ext.provenance() | {"seconds": seconds, "pairs": len(pairs),
                                     "descriptions": {s.name: s.description for s in ext.specs}}
    table = table.replace_schema_metadata({b"fusion_ltr_provenance": json.dumps(provenance, default=str).encode()})
    tmp = Path(out).with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)  # a part exists whole or not at all
    return {"path": out, "pairs": len(pairs), "seconds": seconds}


def ingest_leftovers(store: FeatureStore, parts_dir: Path) -> int:
    """Ingest parts a previous build wrote but did not ingest (its driver died); returns how many."""
    parts = sorted(Path(parts_dir).glob("*.parquet")) if Path(parts_dir).exists() else []
    for part in parts:
        store.ingest_part(part)
        part.unlink()
    return len(parts)


def dask_build(store: FeatureStore, pairs: pd.DataFrame, extractors: list, client, *, parts_dir: str | Path,
               partitions: int, state_dir: str | Path | None = None, progress: bool = True) -> list[ExtractorReport]:
    """:func:`features.build.build` on a Dask cluster (``client``): the same missing values, the same
    store, values computed by the workers. ``state_dir`` holds the extractors' corpus statistics
    (written here from the driver's fitted extractors, read by the workers)."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    feature_specs(extractors)
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    ingest_leftovers(store, parts_dir)
    state_dir = Path(state_dir or parts_dir / "state")
    reports = []
    for ext in extractors:
        t_ext = time.perf_counter()
        todo_all = pairs.iloc[eligible(ext, pairs)]
        todo = store.missing(todo_all, ext.specs) if ext.cacheable else todo_all
        if ext.has_corpus_state:
            ext.save_state(state_dir)
        futures = []
        if len(todo):
            part_no = partition_of(todo[QID], partitions)
            for p in np.unique(part_no):
                chunk = todo[part_no == p].reset_index(drop=True)
                out = parts_dir / f"{ext.name}-{ext.version}-{p:05d}-{time.time_ns()}.parquet"
                futures.append(client.submit(
                    compute_part, ext.name, fbase.REGISTRY[ext.name], ext.config(), str(state_dir) if ext.has_corpus_state else None,
                    str(ext.root) if ext.root else None, ext.version, chunk, str(out), pure=False))
        bar = tqdm(total=len(todo), desc=f"{ext.name:>14}", unit="pair", disable=not progress or not len(todo))
        try:
            for future in as_completed(futures):
                done = future.result()
                store.ingest_part(Path(done["path"]))
                Path(done["path"]).unlink()
                bar.update(done["pairs"])
        finally:
            bar.close()
            for future in futures:
                future.cancel()
        reports.append(ExtractorReport(ext.name, [s.name for s in ext.specs], len(todo_all), len(todo),
                                       len(todo_all) - len(todo), time.perf_counter() - t_ext))
    return reports
