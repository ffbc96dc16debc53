"""In-domain bi-encoder (issue 13): fine-tune the packaged MiniLM on the cross-encoder's side of SciFact's
training queries and measure dense and hybrid retrieval before and after.

The training queries are split as the cross-encoder's are (`ranker.training.crossencoder.split_queries`, the
config's ``ranker_fraction`` and seed): the bi-encoder learns from the CE side only; the ranker side is
the validation set on which the settings (``--settings``: epochs) are compared. ``--test`` then reads the
test split once for the base model and the chosen setting (the best hybrid nDCG@10 on validation). Hard
negatives come from the run's BM25 training run (``--run``, e.g. runs/demo). Dense: the model's top
``depth`` by cosine; hybrid: RRF (k = 60) of that and the run's BM25 run, top 100, as the demo's first
stage. Each setting's model goes to ``--out/<setting>`` (checkpointed; a rerun resumes or reuses it).
Writes `benchmarks/results/biencoder_finetune.json`.

    .venv/bin/python benchmarks/biencoder_finetune.py --run runs/demo --settings 1 3 --test

``--max-queries`` and ``--title-queries`` set the training data as `finetune_biencoder.params` does;
``--existing NAME=MODEL`` evaluates a model already trained (e.g. a run's ``biencoder/model``) beside.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from ranker.training import biencoder as be_training, crossencoder as ce_training
from ranker import evaluate as ev
from ranker.config import load_config
from retrieval import BM25Retriever, DenseRetriever, read_trec_run, rrf
from retrieval.data import load_beir
from retrieval.dense import DenseParams
from retrieval.frames import QID

MEASURES = ["nDCG@10", "R@100"]


def retrieval_scores(model: str, ds, queries: pd.DataFrame, qrels: pd.DataFrame, bm25: pd.DataFrame, cache: str,
                     depth: int) -> dict:
    dense = DenseRetriever(DenseParams(model=model), cache=cache).index(ds.corpus).retrieve(queries, depth)
    hybrid = rrf([bm25[bm25[QID].isin(set(queries[QID]))], dense], k=60, depth=100)
    out = {}
    for name, run in (("dense", dense), ("hybrid", hybrid)):
        out[name] = ev.mean(ev.per_query(run, qrels, MEASURES))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--config", default="configs/demo.toml")
    ap.add_argument("--settings", nargs="+", type=float, default=[1.0, 3.0], help="epochs to compare")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-queries", type=int, default=0,
                    help="real queries of the CE side to learn from (a seeded sample, as the pipeline's; 0: all)")
    ap.add_argument("--title-queries", type=int, default=0, help="title pseudo-queries added to the examples")
    ap.add_argument("--existing", nargs="*", default=[], metavar="NAME=MODEL",
                    help="already fine-tuned models to evaluate beside (their manifests are checked for leakage)")
    ap.add_argument("--out", default="runs/bench-biencoder")
    ap.add_argument("--cache", default=None, help="embedding cache folder (default: the user cache)")
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--test", action="store_true", help="read the test split for the base and the chosen setting")
    ap.add_argument("--result", default=str(Path(__file__).parent / "results" / "biencoder_finetune.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    ds = load_beir(cfg.dataset.name)
    queries, qrels = ds.split("train")
    fp = cfg.finetune.params
    ce_q, ranker_q = ce_training.split_queries(queries[QID], fp.ranker_fraction, fp.seed)
    bm25_train = read_trec_run(Path(args.run) / "retrieval" / "bm25.train.trec")
    valid_queries, valid_qrels = queries[queries[QID].isin(set(ranker_q))], qrels[qrels[QID].isin(set(ranker_q))]
    base = DenseParams().model
    result = {"run": args.run, "ce_side_queries": len(ce_q), "validation_queries": len(ranker_q), "settings": {}}
    t = time.perf_counter()
    result["settings"]["base"] = {"valid": retrieval_scores(base, ds, valid_queries, valid_qrels, bm25_train,
                                                            args.cache, args.depth)}
    print(f"base: {result['settings']['base']['valid']} ({time.perf_counter() - t:.0f}s)", flush=True)
    if args.max_queries:  # the pipeline's seeded sample (ranker.steps.finetune.capped)
        ce_q = sorted(pd.Series(ce_q).sample(n=min(args.max_queries, len(ce_q)), random_state=fp.seed))
    examples = be_training.training_examples(queries[queries[QID].isin(set(ce_q))], qrels, bm25_train, ds.corpus,
                                             negatives_from=30, seed=fp.seed)
    if args.title_queries:
        bm25 = BM25Retriever(cfg.retrieval.bm25).index(ds.corpus)
        examples += be_training.title_examples(ds.corpus, args.title_queries, bm25, negatives_from=30, seed=fp.seed)
    tag = (f"-q{args.max_queries}" if args.max_queries else "") + (f"-title{args.title_queries}" if args.title_queries
                                                                   else "")
    runs = [(f"epochs{epochs:g}{tag}", epochs, None) for epochs in args.settings]
    runs += [(name, None, model) for name, model in (e.split("=", 1) for e in args.existing)]
    for name, epochs, model in runs:
        folder = Path(model).parent if model else Path(args.out) / name
        if model is None and not (folder / "manifest.json").exists():
            params = be_training.BETrainingParams(epochs=epochs, batch_size=args.batch_size, seed=fp.seed,
                                                  max_queries=args.max_queries, title_queries=args.title_queries)
            be_training.finetune(examples, params, folder, meta={"dataset": ds.name, "ranker_qids": ranker_q})
        manifest = json.loads((folder / "manifest.json").read_text())
        assert not set(manifest["data"]["train_qids"]) & (set(ranker_q) | set(ds.split("test")[0][QID]))
        t = time.perf_counter()
        scores = retrieval_scores(str(folder / "model"), ds, valid_queries, valid_qrels, bm25_train, args.cache,
                                  args.depth)
        result["settings"][name] = {"valid": scores, "model": str(folder / "model"),
                                    "train_seconds": manifest["train_seconds"], "steps": manifest["steps"], "examples": manifest["data"]["examples"]}
        print(f"{name}: {scores} (train {manifest['train_seconds']:.0f}s, {manifest['steps']} steps; "
              f"eval {time.perf_counter() - t:.0f}s)", flush=True)
    tuned = [n for n in result["settings"] if n != "base"]
    best = max(tuned, key=lambda n: result["settings"][n]["valid"]["hybrid"]["nDCG@10"])
    result["chosen_on_validation"] = best
    if args.test:
        test_q, test_qrels = ds.split("test")
        bm25_test = read_trec_run(Path(args.run) / "retrieval" / "bm25.test.trec")
        for name, model in (("base", base), (best, result["settings"][best]["model"])):
            result["settings"][name]["test"] = retrieval_scores(model, ds, test_q, test_qrels, bm25_test, args.cache,
                                                                args.depth)
            print(f"test, {name}: {result['settings'][name]['test']}", flush=True)
    Path(args.result).parent.mkdir(exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
