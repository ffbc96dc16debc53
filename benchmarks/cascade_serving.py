"""Serving a cascade vs what a user would do instead: a plain cross-encoder pass over every candidate.

For each of N SciFact test queries, side by side in one process: `Scorer.search(query, top_k=10)` on a
cascade run (retrieval, every stage, the booster) and `sentence_transformers.CrossEncoder.predict` of the
run's cross-encoder (every fold of a cross-fitted one) over the same 100 candidates (the run's first-stage
list for that query). Prints medians and p90 of both, their ratio, and the cascade's time per stage and
extractor; writes
`benchmarks/results/cascade_serving.json`.

    .venv/bin/python benchmarks/cascade_serving.py --run runs/demo --queries 31
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ranker import Scorer
from retrieval.data import load_beir
from retrieval.frames import doc_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--queries", type=int, default=31)
    args = ap.parse_args()
    from sentence_transformers import CrossEncoder

    scorer = Scorer.load(args.run, device="cpu")
    ce_ext = next(e for e in scorer.extractors if e.name == "crossencoder")
    # a cross-fitted model serves the mean of its folds: the plain pass runs every fold too
    names = [str(f) for f in ce_ext.folds() or [ce_ext.local_path(ce_ext.params.model)]]
    plain = [CrossEncoder(n, device="cpu", max_length=ce_ext.params.max_length) for n in names]
    queries = load_beir(scorer.manifest["dataset"]).split("test")[0].sort_values("qid").head(args.queries)
    rows = []
    for i, query in enumerate(queries["query"]):
        t = time.perf_counter()
        result = scorer.search(query, top_k=10)
        cascade_s = time.perf_counter() - t
        frame = scorer._retrieve(query)  # the same 100 candidates
        pairs = list(zip([query] * len(frame), doc_text(frame)))
        t = time.perf_counter()
        for model in plain:
            model.predict(pairs, batch_size=32, show_progress_bar=False)
        plain_s = time.perf_counter() - t
        if i == 0:
            continue  # the first call loads the models, the index and the embeddings
        rows.append({"cascade_ms": cascade_s * 1000, "plain_ce_ms": plain_s * 1000, "candidates": len(frame),
                     "stage_sizes": [int(sum(r.stage >= k for r in result)) for k in (1, 2, 3)],
                     **{f"t_{k}": v * 1000 for k, v in result.timing.items()}})
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0] if k.startswith(("cascade", "plain", "t_"))}
    p90 = {k: float(np.percentile([r[k] for r in rows], 90)) for k in ("cascade_ms", "plain_ce_ms")}
    ratio = float(np.median([r["cascade_ms"] / r["plain_ce_ms"] for r in rows]))
    print(f"{len(rows)} queries (after the first), 100 candidates each: median ms (p90)")
    print(f"  cascade Scorer.search(top_k=10): {med['cascade_ms']:.0f} ({p90['cascade_ms']:.0f})")
    print(f"  plain CrossEncoder.predict, 100 pairs x {len(plain)} model(s): {med['plain_ce_ms']:.0f} "
          f"({p90['plain_ce_ms']:.0f})")
    print(f"  median per-query ratio cascade / plain: {ratio:.2f}")
    print("  cascade parts: " + ", ".join(f"{k[2:]} {v:.0f}" for k, v in med.items() if k.startswith("t_")))
    out = Path(__file__).parent / "results" / "cascade_serving.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"run": args.run, "queries": len(rows), "median_ms": med, "p90_ms": p90,
                               "median_ratio": ratio, "plain_models": names, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
