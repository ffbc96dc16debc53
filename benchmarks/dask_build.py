"""Cheap-feature build of synthetic (query, document) pairs: local vs Dask with 1 and 2 workers.

One synthetic store (documents of Zipf-distributed words, 4-word queries, 100 candidates per query) is
made once; each mode then builds first_stage, bm25, coverage and length into its own copy of it, in
its own process (so every peak memory figure is that mode's alone): `local` (the one-process build),
`dask1` and `dask2` (a LocalCluster of 1 or 2 single-threaded workers; the driver ingests the workers'
Parquet parts into DuckDB as they finish). Prints wall time, peak RSS of the driver and of each worker,
and the time spent ingesting parts; writes `benchmarks/results/dask_build.json`.

    .venv/bin/python benchmarks/dask_build.py --queries 10000 --per-query 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

def peak_mb() -> float:
    """This process' peak resident memory (VmHWM). Not ``getrusage``: on Linux its ru_maxrss carries over
    from the parent into a spawned process (a Dask worker reported the driver's peak)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


EXTRACTORS = {"first_stage": {"retrievers": []}, "bm25": {}, "coverage": {}, "length": {}}


def make_store(path: Path, n_queries: int, per_query: int, n_docs: int, seed: int = 0) -> None:
    from features.store import FeatureStore

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    docs = [" ".join(rng.choice(vocab, 60, p=p)) for _ in range(n_docs)]
    corpus = pd.DataFrame({"docno": [f"d{i}" for i in range(n_docs)], "title": "", "text": docs,
                           "timestamp": pd.NaT})
    queries = pd.DataFrame({"qid": [f"q{i}" for i in range(n_queries)],
                            "query": [" ".join(rng.choice(vocab[:2000], 4)) for _ in range(n_queries)]})
    cand = pd.DataFrame({"qid": np.repeat(queries["qid"].to_numpy(), per_query),
                         "docno": [f"d{i}" for i in rng.integers(0, n_docs, n_queries * per_query)],
                         "rank": np.tile(np.arange(1, per_query + 1), n_queries)})
    cand = cand.drop_duplicates(["qid", "docno"])
    cand["rank"] = cand.groupby("qid").cumcount() + 1
    cand["score"] = 1.0 / cand["rank"]
    cand["retriever"] = "synthetic"
    with FeatureStore(path) as store:
        store.put_documents(corpus)
        store.put_queries(queries)
        store.put_candidates(cand)


def run_mode(mode: str, base: Path, work: Path) -> dict:
    """One build in this process (called in a fresh subprocess per mode)."""
    from features import base as fbase
    from features.build import build
    from features.store import FeatureStore

    store_path = work / f"{mode}.duckdb"
    shutil.copyfile(base, store_path)
    t0 = time.perf_counter()
    with FeatureStore(store_path) as store:
        corpus = store.sql("SELECT docno, title, text FROM documents")
        extractors = [fbase.create(n, p).fit(corpus) for n, p in EXTRACTORS.items()]
        pairs = store.pairs(retriever="synthetic")
        t_build = time.perf_counter()
        workers_rss, ingest_s = {}, 0.0
        if mode == "local":
            reports = build(store, pairs, extractors, progress=False)
        else:
            import distributed

            from features import dask_build

            original = store.ingest_part

            def timed(path):
                nonlocal ingest_s
                t = time.perf_counter()
                original(path)
                ingest_s += time.perf_counter() - t

            store.ingest_part = timed
            n = int(mode[-1])
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                          dashboard_address=None) as cluster, distributed.Client(cluster) as client:
                reports = dask_build.dask_build(store, pairs, extractors, client, parts_dir=work / f"{mode}-parts",
                                                partitions=8 * n, progress=False)
                workers_rss = client.run(peak_mb)
        build_s = time.perf_counter() - t_build
    return {"mode": mode, "pairs": len(pairs), "total_s": time.perf_counter() - t0, "build_s": build_s,
            "ingest_s": ingest_s, "driver_peak_mb": peak_mb(),
            "worker_peak_mb": sorted(workers_rss.values()), "computed": {r.extractor: r.computed for r in reports}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--per-query", type=int, default=100)
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--work", default="/tmp/fusion-ltr-dask-bench")
    ap.add_argument("--modes", default="local,dask1,dask2")
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode and print its JSON
    args = ap.parse_args()
    work = Path(args.work)
    base = work / "base.duckdb"
    if args.mode:
        print(json.dumps(run_mode(args.mode, base, work)))
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    make_store(base, args.queries, args.per_query, args.docs)
    print(f"synthetic store: {args.queries} queries x {args.per_query} candidates, {args.docs} documents "
          f"({time.perf_counter() - t:.0f}s)")
    results = []
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--work", str(work)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(f"{mode:>6}: {r['pairs']} pairs, build {r['build_s']:.0f}s (of which ingest {r['ingest_s']:.0f}s), "
              f"driver peak {r['driver_peak_mb']:.0f} MB, workers {[round(m) for m in r['worker_peak_mb']]} MB")
    out = Path(__file__).parent / "results" / "dask_build.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"queries": args.queries, "per_query": args.per_query, "docs": args.docs,
                               "extractors": list(EXTRACTORS), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
