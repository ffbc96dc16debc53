"""Costly signals on the same pairs, each alone reordering the first stage's top K (issue 34).

Pairs: the first-stage top ``--top`` of a seeded sample of the ranker's side of the training split (queries
no fine-tuned model learns from; choices are made there, never on test). Every signal scores the very same
pairs, in alternating chunks so that the machine's load falls on all alike; the cost is pairs/s each.
Quality: each feature alone reorders the top ``--top`` (the rest keeps its first-stage order): nDCG@10,
paired t-tests against the first stage and against the first signal.

    .venv/bin/python benchmarks/costly_signals.py --config configs/demo.toml --queries 60 --top 5 \\
        --signals ce llm_grade:qwen0.5b lm:smollm2

Writes `benchmarks/results/costly_signals.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from features.base import create
from features.lm_likelihood import DEFAULT_LM, QWEN_LM
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.layout import RunLayout
from ranker.training.crossencoder import split_queries
from retrieval import load_beir, read_trec_run
from retrieval.frames import QID, RANK, attach

MODELS = {"qwen0.5b": QWEN_LM, "smollm2": DEFAULT_LM}


def extractor(signal: str, cfg, doc_tokens: int):
    """``ce`` (the run's cross-encoder, as its config builds it), ``llm_grade:<model>`` or ``lm:<model>``."""
    kind, _, model = signal.partition(":")
    if kind == "ce":
        return create("crossencoder", dict(cfg.features.extractors["crossencoder"]))
    if kind == "llm_grade":
        return create("llm_grade", {"model": MODELS.get(model, model), "doc_tokens": doc_tokens})
    if kind == "lm":
        return create("lm_likelihood", {"model": MODELS.get(model, model), "doc_tokens": doc_tokens})
    raise SystemExit(f"unknown signal {signal!r}: ce, llm_grade:<model>, lm:<model>")


def ranker_side_head(cfg, n_queries: int, top: int):
    """(queries, qrels, run, head, layout): a seeded sample of ``n_queries`` of the ranker's side of the
    training split (queries the fine-tuned cross-encoder never learned from), their qrels and first-stage
    run, and the run's top ``top`` with query and document text."""
    ds = load_beir(cfg.dataset.name)
    layout = RunLayout(Path(cfg.run.dir))
    train_q, train_qrels = ds.split("train")
    p = cfg.finetune.params
    _, ranker_qids = split_queries(train_q[QID], p.ranker_fraction, p.seed)
    queries = train_q[train_q[QID].isin(set(ranker_qids))].sample(n=n_queries, random_state=0)
    qrels = train_qrels[train_qrels[QID].isin(set(queries[QID]))]
    run = read_trec_run(layout.retrieval_trec(cfg.features.candidates, "train"))
    run = run[run[QID].isin(set(queries[QID]))]
    head = attach(run[run[RANK] <= top], queries, ds.corpus).sort_values([QID, RANK]).reset_index(drop=True)
    return queries, qrels, run, head, layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.toml")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--doc-tokens", type=int, default=192)
    ap.add_argument("--chunk", type=int, default=50, help="pairs per alternating chunk")
    ap.add_argument("--signals", nargs="+", default=["ce", "llm_grade:qwen0.5b", "lm:smollm2"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "costly_signals.json"))
    args = ap.parse_args()

    cfg = load_config(args.config)
    queries, qrels, run, head, _ = ranker_side_head(cfg, args.queries, args.top)
    first = ev.per_query(run, qrels)
    print(f"{len(queries)} queries, {len(head)} pairs; first stage nDCG@10 {first['nDCG@10'].mean():.4f}", flush=True)

    exts = {s: extractor(s, cfg, args.doc_tokens) for s in args.signals}
    for ext in exts.values():
        ext.root = Path.cwd()
        ext.compute(head.iloc[:2])  # load and warm up outside the timed chunks
    values = {s: {f: np.full(len(head), np.nan) for f in ext.FEATURES} for s, ext in exts.items()}
    seconds = dict.fromkeys(exts, 0.0)
    for start in range(0, len(head), args.chunk):
        chunk = head.iloc[start:start + args.chunk]
        for s, ext in exts.items():
            t = time.perf_counter()
            got = ext.compute(chunk)
            seconds[s] += time.perf_counter() - t
            for f, v in got.items():
                values[s][f][start:start + len(chunk)] = v
        print(f"  {start + len(chunk)}/{len(head)} pairs: " + ", ".join(
            f"{s} {(start + len(chunk)) / sec:.2f} pairs/s" for s, sec in seconds.items()), flush=True)

    results = {"config": args.config, "queries": len(queries), "pairs": len(head), "top": args.top,
               "doc_tokens": args.doc_tokens, "first_stage": float(first["nDCG@10"].mean()), "signals": {}}
    reference = None
    for s in args.signals:
        row = {"pairs_per_s": len(head) / seconds[s], "features": {}}
        for f in exts[s].FEATURES:
            pq = ev.per_query(ev.reorder_head(run, head, values[s][f]), qrels)
            reference = pq if reference is None else reference
            row["features"][f] = {"nDCG@10": float(pq["nDCG@10"].mean()),
                                  "vs_first_stage": ev.compare(first, pq, "nDCG@10").as_dict(),
                                  f"vs_{args.signals[0]}": ev.compare(reference, pq, "nDCG@10").as_dict()}
            print(f"{s}: {f} alone on the top-{args.top}: nDCG@10 {pq['nDCG@10'].mean():.4f}", flush=True)
        results["signals"][s] = row
    oracle = ev.per_query(ev.reorder_head(run, head, head.merge(qrels, on=[QID, "docno"], how="left")["label"]
                                          .fillna(0).to_numpy()), qrels)
    results["oracle_top"] = float(oracle["nDCG@10"].mean())
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({s: round(r["pairs_per_s"], 2) for s, r in results["signals"].items()}),
          f"oracle order of the top-{args.top}: {results['oracle_top']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
