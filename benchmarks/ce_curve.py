"""Cross-encoder learning curve on SciFact: nDCG@10 of the cross-encoder alone, reranking the hybrid
top-N of held-out queries, against training queries, pseudo-queries, loss, learning rate and epochs.

Each point fine-tunes from the configured base model on the CE side of the training split (the
leakage exclusion's split) and records wall time and hardware. Evaluation (``--eval-on``): ``valid``, a
seeded sample of the ranker's side of the training split (queries no cross-encoder learns from: where
choices are made), ``ce-side``, the cross-encoder's side less every query an ``--existing`` model learned
from (to compare a model of the ranker's side, a cross-fitted fold b, with one of the cross-encoder's side,
both on queries neither saw), or ``test``. Results: benchmarks/results/ce_curve.json (keys carry the eval set).

    .venv/bin/python benchmarks/ce_curve.py --config configs/demo.toml --eval-on valid --eval-queries 200 \\
        --points softmax:0:1:2e-4 softmax:0+title2000:1:2e-4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

from features import model_folders
from ranker.training import crossencoder as ce_training
from features.crossencoder import CrossEncoderExtractor
from ranker import evaluate as ev
from ranker.config import load_config
from ranker.layout import RunLayout
from ranker.run import Run
from ranker.steps.finetune import synthetic_groups, title_groups
from retrieval import load_beir, read_trec_run
from retrieval.frames import QID, RANK, doc_text


def rerank(ext, queries, run, corpus, top):
    """``run`` with each query's top ``top`` reordered by the cross-encoder's scores alone."""
    text = dict(zip(corpus["docno"], doc_text(corpus)))
    qtext = dict(zip(queries[QID], queries["query"]))
    head = run[run[RANK] <= top]
    return ev.reorder_head(run, head, ext.score([qtext[q] for q in head[QID]], [text[d] for d in head["docno"]]))


def existing_manifest(model_dir: Path) -> dict:
    """What an already trained point records: its manifest (beside the model folder); for a training
    checkpoint (``trainer_state.json`` inside), its step and losses so far from the trainer's state."""
    path = model_dir.parent / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    state = model_dir / "trainer_state.json"
    if state.exists():
        st = json.loads(state.read_text())
        losses = [h["loss"] for h in st["log_history"] if "loss" in h]
        manifest = {**manifest, "steps": st["global_step"], "checkpoint": True,
                    "train_loss_first_last": [losses[0], losses[-1]] if losses else None}
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/scifact.toml")
    ap.add_argument("--points", nargs="+", default=[],
                    help="loss:queries:epochs:lr; queries = '+'-joined parts: N real (0: all), synN (synthetic queries "
                         "for N documents), titleN (title pseudo-queries of N documents); e.g. 0+title2000")
    ap.add_argument("--eval-on", choices=["valid", "ce-side", "test"], default="valid",
                    help="valid: the ranker's side of the training split (never seen by a cross-encoder); test")
    ap.add_argument("--eval-queries", type=int, default=100, help="queries scored (seeded sample; 0 = all)")
    ap.add_argument("--negatives", type=int, default=0, help="override finetune.params.negatives")
    ap.add_argument("--max-length", type=int, default=0, help="override finetune.params.max_length")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--existing", nargs="*", default=[],
                    help="name=model_dir of already trained points: a model folder beside its manifest.json, or a "
                         "checkpoint folder (manifest.json one level up, as the run's fine-tune writes them)")
    ap.add_argument("--out", default="runs/ce_curve")
    args = ap.parse_args()

    cfg = load_config(args.config)
    base = cfg.finetune.params
    ds = load_beir(cfg.dataset.name)
    folder = Path(cfg.run.dir)
    if args.negatives or args.max_length:
        base = dataclasses.replace(base, negatives=args.negatives or base.negatives,
                                   max_length=args.max_length or base.max_length)
    train_q, train_qrels = ds.split("train")
    ce_qids, ranker_qids = ce_training.split_queries(train_q[QID], base.ranker_fraction, base.seed)
    cands = read_trec_run(RunLayout(folder).retrieval_trec(cfg.features.candidates, "train"))
    if args.eval_on == "valid":
        test_q, test_qrels = train_q[train_q[QID].isin(set(ranker_qids))], train_qrels
        test_run = cands
    elif args.eval_on == "ce-side":
        if args.points:
            raise SystemExit("--eval-on ce-side compares --existing models only (a new point learns from that side)")
        seen = set().union(*(model_folders.trained_qids(Path(e.split("=", 1)[1])) for e in args.existing))
        test_q, test_qrels = train_q[train_q[QID].isin(set(ce_qids) - seen)], train_qrels
        test_run = cands
    else:
        test_q, test_qrels = ds.split(cfg.dataset.test_split)
        test_run = read_trec_run(RunLayout(folder).retrieval_trec(cfg.features.candidates, cfg.dataset.test_split))
    if args.eval_queries:
        test_q = test_q.sample(n=min(args.eval_queries, len(test_q)), random_state=0)
    test_qrels = test_qrels[test_qrels[QID].isin(set(test_q[QID]))]
    test_run = test_run[test_run[QID].isin(set(test_q[QID]))]
    # keys carry the eval set and, since 2026-11-23, the config whose candidates are reranked (older keys
    # without "@": configs/scifact.toml or configs/demo.toml, as BENCHMARKS.md says)
    stem = Path(args.config).stem
    tag = f" [@{stem}]" if args.eval_on == "test" else f" [{args.eval_on} {len(test_q)} @{stem}]"

    out_json = Path(__file__).parent / "results" / "ce_curve.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    fs = ev.per_query(test_run, test_qrels)
    results["first stage (hybrid)" + tag] = {"nDCG@10": float(fs["nDCG@10"].mean()), "eval_queries": len(test_q)}
    bm25_run = read_trec_run(RunLayout(folder).retrieval_trec("bm25", "train" if args.eval_on != "test"
                                                             else cfg.dataset.test_split))
    bm25 = ev.per_query(bm25_run[bm25_run[QID].isin(set(test_q[QID]))], test_qrels)
    results["BM25" + tag] = {"nDCG@10": float(bm25["nDCG@10"].mean()), "eval_queries": len(test_q)}
    print(f"first stage {fs['nDCG@10'].mean():.4f}, BM25 {bm25['nDCG@10'].mean():.4f} on {len(test_q)} "
          f"{args.eval_on} queries", flush=True)
    points = [(p, None) for p in args.points] + [tuple(e.split("=", 1)) for e in args.existing]
    for spec, model_dir in points:
        if model_dir is None:
            loss, n, epochs, lr = spec.split(":")
            parts = n.split("+")
            real = next((x for x in parts if x.isdigit()), None)
            syn = next((int(x[3:]) for x in parts if x.startswith("syn")), 0)
            title = next((int(x[5:]) for x in parts if x.startswith("title")), 0)
            qids = [] if real is None else (ce_qids if int(real) == 0 else
                                            sorted(pd.Series(ce_qids).sample(n=min(int(real), len(ce_qids)), random_state=0)))
            params = dataclasses.replace(base, loss=loss, epochs=float(epochs), learning_rate=float(lr),
                                         synthetic=syn, title_queries=title)
            groups = ce_training.training_groups(train_q[train_q[QID].isin(set(qids))], train_qrels, cands, ds.corpus,
                                                 negatives=params.negatives, negatives_from=params.negatives_from,
                                                 seed=params.seed)
            meta = {}
            if params.synthetic or params.title_queries:
                syn_cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, params=params))
                syn_run = Run(syn_cfg, progress=False)
                syn_run.dataset = ds  # already loaded
            if params.synthetic:
                syn_groups, meta["synthetic"] = synthetic_groups(syn_run, train_q[train_q[QID].isin(set(ce_qids))],
                                                                 train_qrels)
                groups += syn_groups
            if params.title_queries:
                more, meta["title_queries"] = title_groups(syn_run, params.title_queries)
                groups += more
            name = (f"{loss}-q{len(qids)}" + (f"-syn{params.synthetic}" if params.synthetic else "")
                    + (f"-title{title}" if title else "") + f"-neg{params.negatives}-len{params.max_length}"
                    + f"-ep{epochs}-lr{lr}")
            manifest = ce_training.finetune(groups, params, Path(args.out) / name, progress=False, meta=meta)
            model_dir = str(Path(args.out) / name / "model")
        else:
            name = spec
            manifest = existing_manifest(Path(model_dir))
        t = time.perf_counter()
        ext = CrossEncoderExtractor(model=model_dir, max_length=256, model_batch_size=32)
        run = rerank(ext, test_q, test_run, ds.corpus, args.top)
        score_s = time.perf_counter() - t
        per_q = ev.per_query(run, test_qrels)
        cmp = ev.compare(fs, per_q, "nDCG@10")
        key = name + tag
        data, params = manifest.get("data", {}), manifest.get("params", {})
        results[key] = {
            "nDCG@10": float(per_q["nDCG@10"].mean()), "vs_first_stage": cmp.as_dict(),
            "loss": manifest.get("loss"), "train_queries": data.get("queries"), "groups": data.get("groups"),
            "synthetic_groups": data.get("synthetic_groups"), "synthetic": manifest.get("synthetic"),
            "title_groups": data.get("title_groups", 0), "negatives": params.get("negatives"),
            "max_length": params.get("max_length"), "vs_bm25": ev.compare(bm25, per_q, "nDCG@10").as_dict(),
            "epochs": params.get("epochs"), "learning_rate": params.get("learning_rate"),
            "train_seconds": manifest.get("train_seconds"), "hardware": manifest.get("hardware"),
            "train_loss_first_last": manifest.get("train_loss_first_last"), "steps": manifest.get("steps"),
            "eval_queries": len(test_q), "top": args.top, "score_seconds": score_s,
            "pairs_per_s": len(run[run[RANK] <= args.top]) / score_s,
        }
        print(f"{key}: nDCG@10 {results[key]['nDCG@10']:.4f} (first stage {fs['nDCG@10'].mean():.4f}, "
              f"p={cmp.p_value:.3g}; BM25 {bm25['nDCG@10'].mean():.4f}), step {manifest.get('steps')}, "
              f"train {manifest.get('train_seconds') or 0:.0f}s, loss {manifest.get('train_loss_first_last')}, "
              f"scoring {results[key]['pairs_per_s']:.1f} pairs/s", flush=True)
        out_json.parent.mkdir(exist_ok=True)
        out_json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
