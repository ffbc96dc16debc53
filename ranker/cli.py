"""`fusion-ltr` command line: one subcommand per step of :data:`ranker.steps.STEPS`, plus `run` (all
of them, cached), `init` (a config for your own data), `serve`, `config-docs` and `data`.

Exit codes: 0 done; 2 a problem with the input (config, data, files, arguments: any
:class:`retrieval.errors.FusionLTRError`), printed as one line; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrieval import data
from retrieval.errors import FusionLTRError, UsageError

from .config import load_config
from .layout import locked


def _step(step):
    def call(args) -> None:
        from .run import Run

        run = Run(load_config(args.config), progress=not getattr(args, "quiet", False)).preflight()
        with locked(run.layout.root, step.name):  # one command at a time writes a run folder
            step.func(run, **{a.dest: getattr(args, a.dest) for a in step.args})
    return call


def _run(args) -> None:
    from .run import Run
    from .steps import run_all

    run = Run(load_config(args.config), progress=not args.quiet).preflight()
    with locked(run.layout.root, "run"):
        run_all(run, ablate=not args.no_ablation)


def _data(args) -> None:
    if args.action == "download":
        print(data.download(args.name))
    else:
        print(data.find_dataset(args.name))


def _serve(args) -> None:
    from .service import ServeLimits, serve

    serve(args.run, model=args.model, host=args.host, port=args.port, workers=args.workers,
          batching=not args.no_batching, max_wait_ms=args.max_wait_ms,
          limits=ServeLimits(max_documents=args.max_documents, max_chars=args.max_chars,
                             max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout_s),
          api_key_file=args.api_key_file, tracing=args.tracing, log_impressions=args.log_impressions,
          explore=args.explore, interleave=args.interleave)


def _init(args) -> None:
    from .init import write_config

    path, summary = write_config(args.data, args.output, run_dir=args.run_dir, budget_ms=args.budget_ms,
                                 force=args.force)
    judged = ", ".join(f"{k} ({v} queries)" for k, v in sorted(summary.splits.items()))
    print(f"wrote {path}: {summary.documents} documents, {summary.queries} queries, judged splits {judged}, "
          f"language {summary.language} ({summary.chinese:.0%} of the letters Chinese characters)")
    print(f"run it:  fusion-ltr run --config {path}")


def _rerank(args) -> None:
    import json

    from .batch import rerank_file
    from .scorer import Scorer

    members = {}
    for spec in args.member or ():
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--member: expected NAME=RUN (e.g. bm25=runs/demo/retrieval/bm25.test.trec), found {spec!r}")
        members[name] = path
    scorer = Scorer.load(args.model, model=args.model_name)
    summary = rerank_file(scorer, args.input, args.output, queries=args.queries, corpus=args.corpus, members=members,
                          jsonl=args.jsonl, top_k=args.top_k, tag=args.tag, progress=not args.quiet)
    print(json.dumps(summary.as_dict(), indent=2))
    print(f"wrote {args.output}" + (f" and {args.jsonl}" if args.jsonl else ""))


def _events(args) -> None:
    import json

    from features.events import ingest

    if (args.config is None) == (args.store is None):
        raise UsageError(f"events {args.action}: give the run's --config or a --store file (one of them)")
    if args.config is not None:
        from .layout import RunLayout

        store = RunLayout.of(load_config(args.config)).store
    else:
        store = args.store
    if args.action == "interleaving":
        from features.store import FeatureStore

        from .interleaving import outcomes

        with FeatureStore(store, read_only=True) as s:
            print(json.dumps(outcomes(s), indent=2))
        return
    if not args.files:
        raise UsageError("events ingest: name the event files (.jsonl or .parquet)")
    report = ingest(store, args.files, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(report.as_dict()))
    print(f"stored in {store}")
    if report.refused:
        raise UsageError(f"events ingest: {len(report.refused)} line(s) refused (listed above); the other events "
                         "were stored")


def _config_docs(args) -> None:
    from .config_docs import write

    print(write(args.output))


def build_parser() -> argparse.ArgumentParser:
    from .steps import STEPS

    parser = argparse.ArgumentParser(prog="fusion-ltr", description="Learning-to-rank reranker that fuses relevance signals.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", required=True, help="TOML config, e.g. configs/scifact.toml")
        p.set_defaults(func=func)
        return p

    p = command("run", "the whole pipeline: " + ", ".join(s.name for s in STEPS) + "; each step cached", _run)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-ablation", action="store_true", help="skip the drop-one retraining in the report")
    for step in STEPS:
        p = command(step.name, step.help, _step(step))
        for arg in step.args:
            p.add_argument(*arg.flags, **arg.kwargs)

    p = sub.add_parser("serve", help="HTTP rerank service (POST /v1/rerank, Cohere/Jina shape) over a trained run")
    p.add_argument("--run", required=True, help="a run folder (or a model folder)")
    p.add_argument("--model", default="model", help="the model folder within the run (default: model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the models")
    p.add_argument("--no-batching", action="store_true", help="one model call per request (no micro-batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a micro-batch waits for more requests")
    p.add_argument("--max-documents", type=int, default=1000, help="documents per request (more: 413)")
    p.add_argument("--max-chars", type=int, default=2_000_000, help="characters per request (more: 413)")
    p.add_argument("--max-body-bytes", type=int, default=16_000_000, help="request body bytes, checked while read (413)")
    p.add_argument("--body-timeout-s", type=float, default=30.0, help="seconds for a whole request body (408)")
    p.add_argument("--api-key-file", help="a file whose first line is the API key (default: $FUSION_LTR_API_KEY; "
                   "none: no access control)")
    p.add_argument("--tracing", action="store_true", help="OpenTelemetry spans per request, stage and extractor, "
                   "continuing the caller's trace (to the tracer provider the process configures; "
                   "pip install 'fusion-ltr[tracing]')")
    p.add_argument("--log-impressions", metavar="DIR", help="log every rerank/search answer as an impression and take "
                   "POST /v1/feedback, as event files in DIR, durable before each answer (`fusion-ltr events ingest "
                   "DIR/*.jsonl` stores them)")
    p.add_argument("--explore", type=float, default=0.0, help="with --log-impressions: the share of answers in which two "
                   "adjacent results are swapped at random (logged as explored), for estimating position bias")
    p.add_argument("--interleave", metavar="MODEL_A,MODEL_B", help="with --log-impressions: answer with the team-draft "
                   "interleaving of two model folders of the run (e.g. model,model-content); `fusion-ltr events "
                   "interleaving` reports which one the clicks prefer")
    p.set_defaults(func=_serve)

    p = sub.add_parser("init", help="write a config for your own data (a BEIR-form folder: corpus.jsonl, "
                                    "queries.jsonl, qrels/<split>.tsv) and print the command that runs it")
    p.add_argument("data", help="the dataset folder (or a dataset name on the data search path)")
    p.add_argument("--output", help="the config file to write (default: configs/<folder name>.toml)")
    p.add_argument("--run-dir", help="the run folder it trains into (default: runs/<folder name>)")
    p.add_argument("--budget-ms", type=float, default=1000.0,
                   help="the cascade's latency budget per query, planned by measured costs (default: 1000)")
    p.add_argument("--force", action="store_true", help="replace the config file if it exists")
    p.set_defaults(func=_init)

    p = sub.add_parser("rerank", help="rerank a TREC run or a JSONL of {qid, query, docs} with a trained model into a "
                                      "TREC run (resumable: an interrupted rerank continues where it stopped)")
    p.add_argument("--model", required=True, help="a run folder (or a model folder)")
    p.add_argument("--model-name", default="model", help="the model folder within the run (default: model)")
    p.add_argument("--input", required=True, help="a TREC run (qid Q0 docno rank score tag) or a .jsonl")
    p.add_argument("--output", required=True, help="the TREC run to write")
    p.add_argument("--queries", help="the query texts of a TREC input: a queries.jsonl, a qid<TAB>text .tsv, or a "
                                     "dataset name")
    p.add_argument("--corpus", help="the documents' texts: a corpus.jsonl, its folder or a dataset name (default: "
                                    "the model run's own corpus)")
    p.add_argument("--member", action="append", metavar="NAME=RUN",
                   help="another retriever's run, whose ranks and scores become rank_NAME / score_NAME (repeatable)")
    p.add_argument("--jsonl", help="also write one JSON line per query with each document's score and probability")
    p.add_argument("--top-k", type=int, help="keep the best k per query (default: all)")
    p.add_argument("--tag", default="fusion-ltr", help="the run tag (the TREC file's last column)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_rerank)

    p = sub.add_parser("events", help="the interaction log: ingest impressions and interactions (JSONL or Parquet) "
                                      "into the run's feature store")
    p.add_argument("action", choices=["ingest", "interleaving"], help="ingest: store event files; interleaving: the "
                   "wins, ties and losses of interleaved models in the log, with a sign test")
    p.add_argument("files", nargs="*", type=Path, help="event files (.jsonl or .parquet)")
    p.add_argument("--config", help="the run whose feature store keeps the log")
    p.add_argument("--store", type=Path, help="a feature store file instead of a run's")
    p.set_defaults(func=_events)

    p = sub.add_parser("config-docs", help="write the configuration reference (docs/configuration.md) from the "
                                           "config dataclasses")
    p.add_argument("--output", type=Path, default=Path("docs/configuration.md"))
    p.set_defaults(func=_config_docs)

    p = sub.add_parser("data", help="find or download a dataset")
    p.add_argument("action", choices=["where", "download"])
    p.add_argument("name")
    p.set_defaults(func=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except FusionLTRError as exc:
        print(f"fusion-ltr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
