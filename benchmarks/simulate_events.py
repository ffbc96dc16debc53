"""A simulated interaction log for a judged collection (issue 31): what an app would log if its ranker were
the run's first stage. Each session is one of the run's training queries drawn at random, shown its top
``--top-k`` candidates in the first stage's order (``--explore``: a share of sessions in a random order,
flagged ``explored``), and clicked by the position-based model of :mod:`ranker.clicks` (examination
(1/rank)^eta; a click on an examined document with probability 1.0 if judged relevant, ``--non-relevant``
if not). Writes the sessions as events (JSON lines, the `fusion-ltr events ingest` format): session n at
``--start`` plus n minutes, its clicks a few seconds later. Test queries are never shown, unless
``--include-test`` (for feedback features: the test queries have been seen before; never with labels from
clicks, whose training queries are the training split's anyway).

    .venv/bin/python benchmarks/simulate_events.py --config configs/scifact-clicks.toml --sessions 100000 \\
        --out runs/scifact-clicks/events.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from features.matrix import RankingData
from ranker.clicks import simulate
from ranker.config import LabelsConfig, load_config
from ranker.run import Run
from retrieval.frames import QID, QUERY


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--sessions", type=int, default=100000)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--non-relevant", type=float, default=0.1)
    ap.add_argument("--explore", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default="2026-01-01T00:00:00+00:00")
    ap.add_argument("--prefix", default="sim", help="impression ids are <prefix>-<n> (one prefix per simulated log)")
    ap.add_argument("--include-test", action="store_true", help="sessions of the test queries too")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, labels=LabelsConfig())  # the judgements: the truth the clicks come from
    run = Run(cfg, progress=False)
    m = run.matrices
    data = RankingData.concat([m.train, m.valid] + ([m.test] if args.include_test else []))
    first = -data.X[:, data.feature_names.index("fs_rank")]
    sessions = simulate(data, first, args.sessions, top_k=args.top_k, eta=args.eta, non_relevant=args.non_relevant,
                        explore=args.explore, seed=args.seed)
    texts = dict(zip(run.dataset.queries[QID], run.dataset.queries[QUERY]))
    start = datetime.fromisoformat(args.start).astimezone(timezone.utc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    begin = np.cumsum(np.r_[0, sessions.group[:-1]])
    with out.open("w", encoding="utf-8") as f:
        for n, (b, g) in enumerate(zip(begin, sessions.group)):
            qid = str(sessions.qids[b]).rsplit("#", 1)[0]
            number = int(str(sessions.qids[b]).rsplit("#", 1)[1])
            at = start + timedelta(minutes=number)
            docs = sessions.docnos[b:b + g].tolist()
            ranked = docs == data.docnos[data.qids == qid][np.argsort(-first[data.qids == qid], kind="stable")][:g].tolist()
            iid = f"{args.prefix}-{number}"
            f.write(json.dumps({"type": "impression", "id": iid, "time": at.isoformat(), "qid": qid,
                                "query": texts[qid], "docs": docs, "model": "first stage", "explored": not ranked}) + "\n")
            for k in np.flatnonzero(sessions.y[b:b + g]):
                f.write(json.dumps({"type": "interaction", "id": f"{iid}-{k + 1}", "impression": iid, "doc": docs[k],
                                    "kind": "click", "position": int(k + 1),
                                    "time": (at + timedelta(seconds=int(3 + 2 * k))).isoformat()}) + "\n")
    print(f"wrote {args.sessions} sessions ({int(sessions.y.sum())} clicks) of {data.group.size} queries "
          f"to {out}: {start.isoformat()} to {(start + timedelta(minutes=args.sessions - 1)).isoformat()}")


if __name__ == "__main__":
    main()
