"""The cross-encoder in fp32 and with dynamic int8 quantization (`quantize = "int8"`), side by side on
the same SciFact test pairs (the hybrid top-10 of the first test queries): wall time, value parity
(max and median |difference|, Spearman's rho). Writes `benchmarks/results/ce_quantize.json`.

    .venv/bin/python benchmarks/ce_quantize.py --run runs/demo --pairs 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from features.crossencoder import CrossEncoderExtractor
from retrieval.data import load_beir, read_trec_run
from retrieval.frames import attach


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--pairs", type=int, default=300)
    args = ap.parse_args()
    run = Path(args.run)
    ds = load_beir("scifact")
    cands = read_trec_run(run / "retrieval" / "hybrid.test.trec")
    frame = attach(cands[cands["rank"] <= 10].sort_values(["qid", "rank"]), ds.split("test")[0], ds.corpus)
    frame = frame.head(args.pairs)
    out = {}
    for mode in ("none", "int8"):
        ext = CrossEncoderExtractor(model=str(run / "crossencoder" / "model"), device="cpu", max_length=256,
                                    quantize=mode)
        ext.compute(frame.head(8))  # load and warm up
        t = time.perf_counter()
        out[mode] = ext.compute(frame)["ce_score"]
        out[f"{mode}_s"] = time.perf_counter() - t
    a, b = out["none"], out["int8"]
    result = {"pairs": len(frame), "fp32_s": out["none_s"], "int8_s": out["int8_s"],
              "int8_vs_fp32_time": out["int8_s"] / out["none_s"], "fp32_range": float(np.ptp(a)),
              "max_abs_diff": float(np.abs(a - b).max()), "median_abs_diff": float(np.median(np.abs(a - b))),
              "spearman": float(stats.spearmanr(a, b).statistic)}
    print(json.dumps(result, indent=2))
    path = Path(__file__).parent / "results" / "ce_quantize.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
