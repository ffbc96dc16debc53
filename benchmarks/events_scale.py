"""The interaction log at scale (issue 31): N synthetic events (impressions of 10 documents, about one
click each) written as JSON lines, then timed, each in a process of its own with its peak memory:
`fusion-ltr events ingest` into a new store, and the feedback features (``features.feedback``) reading the
log's snapshot and computing their values for 100,000 (query, document) pairs at the log's end. Writes
``benchmarks/results/events_scale.json``.

    .venv/bin/python benchmarks/events_scale.py --events 1000000 10000000 [--dir /tmp/events-scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FEEDBACK = """
import json, resource, sys, time
import numpy as np, pandas as pd
from features.feedback import FeedbackExtractor
from features.store import FeatureStore
t0 = time.perf_counter()
with FeatureStore(sys.argv[1], read_only=True) as store:
    ext = FeedbackExtractor().read_log(store)
t1 = time.perf_counter()
rng = np.random.default_rng(1)
pairs = pd.DataFrame({"query": [f"query {q}" for q in rng.integers(0, int(sys.argv[2]), 100_000)],
                      "docno": [f"d{d}" for d in rng.integers(0, int(sys.argv[3]), 100_000)]})
values = ext.compute(pairs)
t2 = time.perf_counter()
print(json.dumps({"read_log_s": t1 - t0, "compute_100k_pairs_s": t2 - t1, "shown": len(ext.shown_),
                  "clicks": len(ext.clicks_), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "mean_shown_doc": float(np.mean(values["shown_doc"]))}))
"""


def write_log(path: Path, n_events: int, n_queries: int, n_docs: int, seed: int = 0) -> dict:
    """About n_events events: impressions of 10 documents each, a click on one of them in ~90% of them."""
    rng = np.random.default_rng(seed)
    n_imp = int(n_events / 1.9)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    written = {"impression": 0, "interaction": 0}
    with path.open("w") as f:
        for block in range(0, n_imp, 100_000):
            m = min(100_000, n_imp - block)
            queries = rng.integers(0, n_queries, m)
            docs = rng.integers(0, n_docs, (m, 10))
            clicked = rng.random(m) < 0.9
            pos = np.minimum(rng.geometric(0.4, m), 10)
            lines = []
            for k in range(m):
                n = block + k
                at = str(start + np.timedelta64(n * 5, "s")) + "Z"
                shown = [f"d{d}" for d in dict.fromkeys(docs[k].tolist())]
                lines.append(json.dumps({"type": "impression", "id": f"i{n}", "time": at, "query": f"query {queries[k]}",
                                         "docs": shown}))
                written["impression"] += 1
                if clicked[k]:
                    p = min(int(pos[k]), len(shown))
                    lines.append(json.dumps({"type": "interaction", "id": f"c{n}", "impression": f"i{n}",
                                             "doc": shown[p - 1], "kind": "click", "position": p,
                                             "time": str(start + np.timedelta64(n * 5 + 2, "s")) + "Z"}))
                    written["interaction"] += 1
            f.write("\n".join(lines) + "\n")
    return written


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak memory (GB) of the child, its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (KB)
    return seconds, max(peak, before) / 2**20, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dir", default="/tmp/events-scale")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "events_scale.json"))
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    bin_ = Path(sys.executable).parent
    rows = []
    for n in sorted(args.events):  # smallest first: a child's peak memory is the largest so far
        log, store = root / f"events-{n}.jsonl", root / f"store-{n}.duckdb"
        store.unlink(missing_ok=True)
        if log.exists():  # the same seeded log as before: counted, not written again
            with log.open() as f:
                kinds = [1 if line.startswith('{"type": "impression"') else 0 for line in f]
            written = {"impression": sum(kinds), "interaction": len(kinds) - sum(kinds)}
        else:
            written = write_log(log, n, args.queries, args.docs)
        print(f"{sum(written.values())} events written to {log}", flush=True)
        total = sum(written.values())
        s, peak, _ = timed([str(bin_ / "fusion-ltr"), "events", "ingest", str(log), "--store", str(store)])
        row = {"events": total, **written, "file_mb": log.stat().st_size / 2**20, "ingest_s": s,
               "ingest_events_per_s": total / s, "ingest_peak_gb": peak}
        print(json.dumps(row), flush=True)
        s2, peak2, out = timed([sys.executable, "-c", FEEDBACK, str(store), str(args.queries), str(args.docs)])
        result = [line for line in out.splitlines() if line.startswith('{"read_log_s"')][-1]  # DuckDB may print too
        row |= {"feedback": json.loads(result), "feedback_process_s": s2, "feedback_peak_gb": peak2}
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"queries": args.queries, "docs": args.docs, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
