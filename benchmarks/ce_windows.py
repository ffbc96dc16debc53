"""How much of a document the cross-encoder reads: the first ``max_length`` tokens against MaxP windows.

The cross-encoder scores (query, title + text) cut at ``max_length`` tokens, so a long abstract's last
sentences (where a paper states its finding) are never read. This compares, for one fine-tuned model
alone reranking the hybrid top ``--top`` of held-out training queries (the ranker's side of the split,
which the model never saw: test is not read), settings of:

- ``first:L``: the first L tokens (the extractor's default way, ``max_length`` = L);
- ``maxp:L:W:S``: overlapping windows of W words every S words of the body, each after the title, each
  scored at ``max_length`` L; the pair gets its best window (MaxP, Dai & Callan 2019).

Prints nDCG@10 per setting, pairs/s and windows per pair, and a paired t-test of each against the first
setting; writes ``benchmarks/results/ce_windows.json``.

    .venv/bin/python benchmarks/ce_windows.py --config configs/demo-xfit.toml \\
        --model runs/demo-xfit/crossencoder/fold-a/model --settings first:192 first:384 maxp:192:100:50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from features import model_folders
from ranker.training import crossencoder as ce_training
from features.crossencoder import CrossEncoderExtractor, windows
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.layout import RunLayout
from retrieval import load_beir, read_trec_run
from retrieval.frames import QID, RANK

MEASURE = "nDCG@10"


def texts_for(setting: str, titles: list[str], bodies: list[str]) -> tuple[int, list[list[str]]]:
    """The max_length and, per pair, the texts scored (one for ``first``, one per window for ``maxp``)."""
    kind, *nums = setting.split(":")
    if kind == "first":
        return int(nums[0]), [[f"{t} {b}".strip()] for t, b in zip(titles, bodies)]
    if kind == "maxp":
        length, size, stride = (int(x) for x in nums)
        return length, [[f"{t} {w}".strip() for w in windows(b, size, stride)] for t, b in zip(titles, bodies)]
    raise SystemExit(f"a setting is first:L or maxp:L:W:S, found {setting!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True, help="a fine-tuned cross-encoder folder (not cross-fitted: one fold)")
    ap.add_argument("--settings", nargs="+", required=True)
    ap.add_argument("--eval-queries", type=int, default=200)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ce_windows.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    ds = load_beir(cfg.dataset.name)
    queries, qrels = ds.split("train")
    fp = cfg.finetune.params
    _, ranker_q = ce_training.split_queries(queries[QID], fp.ranker_fraction, fp.seed)
    seen = model_folders.trained_qids(args.model)
    pool = queries[queries[QID].isin(set(ranker_q) - seen)]
    queries = pool.sample(n=min(args.eval_queries, len(pool)), random_state=0)
    qrels = qrels[qrels[QID].isin(set(queries[QID]))]
    run = read_trec_run(RunLayout(Path(cfg.run.dir)).retrieval_trec(cfg.features.candidates, "train"))
    run = run[run[QID].isin(set(queries[QID]))]
    head = run[run[RANK] <= args.top]
    corpus = ds.corpus.set_index("docno")
    qtext = dict(zip(queries[QID], queries["query"]))
    titles = corpus.loc[head["docno"], "title"].fillna("").astype(str).tolist()
    bodies = corpus.loc[head["docno"], "text"].fillna("").astype(str).tolist()
    print(f"{len(queries)} held-out training queries, {len(head)} pairs; first stage "
          f"{ev.per_query(run, qrels)[MEASURE].mean():.4f}", flush=True)
    per_q, rows = {}, []
    for setting in args.settings:
        length, texts = texts_for(setting, titles, bodies)
        ext = CrossEncoderExtractor(model=args.model, max_length=length)
        owner = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
        flat = [w for t in texts for w in t]
        t0 = time.perf_counter()
        scores = ext.score([qtext[q] for q in head[QID].to_numpy()[owner]], flat)
        seconds = time.perf_counter() - t0
        best = np.full(len(texts), -np.inf)
        np.maximum.at(best, owner, scores)
        per_q[setting] = ev.per_query(ev.reorder_head(run, head, best), qrels)
        row = {"setting": setting, MEASURE: float(per_q[setting][MEASURE].mean()), "pairs": len(texts),
               "windows_per_pair": len(flat) / len(texts), "seconds": seconds, "pairs_per_s": len(texts) / seconds}
        if rows:
            c = ev.compare(per_q[args.settings[0]], per_q[setting], MEASURE)
            row |= {"delta_vs_first": c.delta, "p": c.p_value, "wins": c.wins, "losses": c.losses}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"config": args.config, "model": args.model, "queries": len(queries),
                                          "top": args.top, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
