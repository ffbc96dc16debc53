"""Feature build cost and caching: run `fusion-ltr features` twice, side by side, and compare.

The first run computes every missing value (with --fresh: into an empty store, the old one moved
aside); the second run of the same command must compute nothing. Prints both wall times, their
ratio and the per-feature summary table of the first run; writes benchmarks/results/features_<name>.json.

    .venv/bin/python benchmarks/feature_cache.py --config configs/scifact.toml --fresh
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ranker.config import load_config
from ranker.layout import RunLayout


def run(config: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ranker", "features", "--config", config], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/scifact.toml")
    ap.add_argument("--fresh", action="store_true", help="start from an empty store (the old one is kept as .bak)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    store = RunLayout.of(cfg).store
    if args.fresh and store.exists():
        shutil.move(store, store.with_suffix(".duckdb.bak"))
    first = run(args.config)
    summary_first = (Path(cfg.run.dir) / "features" / "summary.md").read_text()
    manifest_first = json.loads((Path(cfg.run.dir) / "features" / "manifest.json").read_text())
    second = run(args.config)
    manifest_second = json.loads((Path(cfg.run.dir) / "features" / "manifest.json").read_text())
    result = {
        "config": args.config, "first_run_s": first, "second_run_s": second, "ratio": second / first,
        "first": manifest_first["reports"], "second": manifest_second["reports"], "summary_first": summary_first,
        "cpus": os.cpu_count(),
    }
    print(summary_first)
    print(f"first run {first:.1f}s, second run {second:.1f}s: {100 * second / first:.2f}% of the first; "
          f"computed on the rerun: { {r['extractor']: r['computed'] for r in manifest_second['reports']} }")
    out = Path(__file__).parent / "results" / f"features_{cfg.dataset.name}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
