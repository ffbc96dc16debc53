"""Paired test of two evaluated runs' models on the same test queries (from their `eval/<split>/ranker.json`).

    .venv/bin/python benchmarks/compare_runs.py OLD_RUN_OR_EVAL_DIR NEW_RUN_OR_EVAL_DIR [--model lambdamart]

Prints both means, the difference (new - old), the paired t-test's p and wins/losses/ties.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ranker.evaluate import compare


def per_query(path: Path, model: str, split: str) -> pd.DataFrame:
    file = next(p for p in (path / "eval" / split / "ranker.json", path / split / "ranker.json", path / "ranker.json")
                if p.exists())
    return pd.DataFrame(json.loads(file.read_text())["per_query"][model]).T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--model", default="lambdamart")
    ap.add_argument("--split", default="test")
    ap.add_argument("--measure", default="nDCG@10")
    args = ap.parse_args()
    c = compare(per_query(args.old, args.model, args.split), per_query(args.new, args.model, args.split), args.measure)
    print(json.dumps(c.as_dict(), indent=2))


if __name__ == "__main__":
    main()
