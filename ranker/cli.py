"""`fusion-ltr` command line: thin subcommands over :mod:`ranker.pipeline`."""

from __future__ import annotations

import argparse
import sys

from retrieval import data

from . import pipeline
from .config import ConfigError, load_config


def _retrieve(args) -> None:
    pipeline.retrieve(load_config(args.config), args.split)


def _evaluate(args) -> None:
    cfg = load_config(args.config)
    if cfg.dataset.format != "letor":
        pipeline.evaluate(cfg, args.split)
        print()
    if pipeline.has_ranker(cfg):
        pipeline.evaluate_ranker(cfg)


def _run(args) -> None:
    pipeline.run(load_config(args.config), progress=not args.quiet, ablate=not args.no_ablation)


def _features(args) -> None:
    pipeline.features(load_config(args.config), args.split, progress=not args.quiet)


def _finetune_ce(args) -> None:
    pipeline.finetune_ce(load_config(args.config), progress=not args.quiet)


def _train(args) -> None:
    pipeline.train(load_config(args.config))


def _report(args) -> None:
    pipeline.report(load_config(args.config), query=args.query, ablate=not args.no_ablation)


def _data(args) -> None:
    if args.action == "download":
        print(data.download(args.name))
    else:
        print(data.find_dataset(args.name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion-ltr", description="Learning-to-rank reranker that fuses relevance signals.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", required=True, help="TOML config, e.g. configs/scifact.toml")
        p.set_defaults(func=func)
        return p

    p = command("run", "the whole pipeline: retrieve, finetune-ce (if configured), features, train, evaluate, "
                       "report; each step cached", _run)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-ablation", action="store_true", help="skip the drop-one retraining in the report")

    p = command("retrieve", "first-stage retrieval (BM25, dense, hybrid) into TREC runs", _retrieve)
    p.add_argument("--split", action="append", help="split(s) to retrieve for (default: the config's)")

    p = command("evaluate", "evaluate first-stage runs, and the ranker against baselines when one is trained", _evaluate)
    p.add_argument("--split", help="split to evaluate (default: dataset.test_split)")

    p = command("features", "build the configured feature set into the feature store", _features)
    p.add_argument("--split", action="append", help="split(s) to build for (default: the config's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("finetune-ce", "fine-tune the cross-encoder (resumes from its last checkpoint)", _finetune_ce)
    p.add_argument("--quiet", action="store_true")

    command("train", "train the LambdaMART ranker (and its variants) on the feature store", _train)

    p = command("report", "feature importance: gain, split, SHAP, ablation, cost vs benefit", _report)
    p.add_argument("--query", help="query id to explain (default: the first test query)")
    p.add_argument("--no-ablation", action="store_true", help="skip the drop-one retraining")

    p = sub.add_parser("data", help="find or download a dataset")
    p.add_argument("action", choices=["where", "download"])
    p.add_argument("name")
    p.set_defaults(func=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ConnectionError, ValueError, KeyError) as exc:
        print(f"fusion-ltr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
