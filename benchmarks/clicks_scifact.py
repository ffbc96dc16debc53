"""Learning from clicks alone on SciFact, end to end through the command line (issue 31): a simulated log
(benchmarks/simulate_events.py: the first stage as the app's ranker, its top 10 shown, clicks by the
position-based model with eta = ``--eta``) ingested with `fusion-ltr events ingest`, then for the log after
each ``--sessions`` count (``labels.until``) and each click model of ``--models``, `fusion-ltr train` and
`evaluate` of configs/scifact-clicks.toml with that `[labels]` table; beside it the same config trained on
the judgements. nDCG@10 on SciFact test (its judgements), paired t-tests. Writes
`benchmarks/results/clicks_scifact.json`.

    .venv/bin/python benchmarks/clicks_scifact.py [--sessions 1000 10000 100000] [--models raw position pbm]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from ranker import evaluate as ev

BASE = Path("configs/scifact-clicks.toml")
MEASURE = "nDCG@10"


def config(root: Path, name: str, labels: str) -> Path:
    text = BASE.read_text()
    start, end = text.index("[labels]"), text.index("[ranker]")
    text = text[:start] + labels + "\n" + text[end:]
    text = text.replace('dir = "runs/scifact-clicks"', f'dir = "{root / name}"')
    path = root / "configs" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cli(*argv: str) -> None:
    cmd = [str(Path(sys.executable).parent / "fusion-ltr"), *argv]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--models", nargs="+", default=["raw", "position", "pbm"])
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--explore", type=float, default=0.0, help="the share of sessions shown in a random order")
    ap.add_argument("--start", default="2026-01-01T00:00:00+00:00", help="the simulated log's first time (one log "
                    "per start: each run learns from its own log's window)")
    ap.add_argument("--root", default="runs/scifact-clicks")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    root = Path(args.root)
    args.out = args.out or str(Path(__file__).parent / "results" / f"clicks_scifact-eta{args.eta:g}-explore{args.explore:g}.json")
    tag = f"eta{args.eta:g}-explore{args.explore:g}"
    events = root / f"events-{tag}.jsonl"
    start = datetime.fromisoformat(args.start)
    if not events.exists():
        cli_py = [sys.executable, str(Path(__file__).parent / "simulate_events.py"), "--config", str(BASE),
                  "--sessions", str(max(args.sessions)), "--eta", str(args.eta), "--explore", str(args.explore),
                  "--start", start.isoformat(), "--prefix", f"sim-{tag}", "--out", str(events)]
        print("$", " ".join(cli_py), flush=True)
        subprocess.run(cli_py, check=True)
    cli("events", "ingest", str(events), "--config", str(BASE))  # idempotent: a second run stores nothing
    per_q, runs = {}, {}
    judged = config(root, "judgements", '[labels]\nsource = "qrels"\n')
    todo = [("judgements", judged)]
    for n in args.sessions:
        until = (start + timedelta(minutes=n)).isoformat()  # session k is at start + k minutes
        for model in args.models:
            name = f"{model}-{n}" + (f"-{tag}" if tag != "eta1-explore0" else "")
            todo.append((name, config(root, name, f'[labels]\nsource = "clicks"\nclick_model = "{model}"\n'
                                                  f'since = "{start.isoformat()}"\nuntil = "{until}"\n')))
    for name, path in todo:
        cli("train", "--config", str(path))
        cli("evaluate", "--config", str(path))
        result = json.loads((root / name / "eval" / "test" / "ranker.json").read_text())
        per_q[name] = pd.Series({q: v[MEASURE] for q, v in result["per_query"]["lambdamart"].items()})
        per_q.setdefault("first stage", pd.Series({q: v[MEASURE] for q, v in result["per_query"]["first stage"].items()}))
        runs[name] = str(path)
    means = {k: float(v.mean()) for k, v in per_q.items()}
    tests = {}
    suffix = f"-{tag}" if tag != "eta1-explore0" else ""
    for n in args.sessions:
        for m in args.models:
            refs = ["judgements"] + ([f"raw-{n}{suffix}"] if m != "raw" and "raw" in args.models else [])
            for a in refs:
                tests[f"{m}-{n}{suffix} vs {a}"] = ev.compare(per_q[a].to_frame(MEASURE),
                                                              per_q[f"{m}-{n}{suffix}"].to_frame(MEASURE), MEASURE).as_dict()
    print(f"SciFact test ({len(per_q['judgements'])} queries), {MEASURE}, eta {args.eta}, explore {args.explore}:")
    for k, v in means.items():
        print(f"  {k}: {v:.4f}")
    for k, c in tests.items():
        print(f"  {k}: {c['delta']:+.4f} (p={c['p_value']:.3g}, wins/losses {c['wins']}/{c['losses']})")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"eta": args.eta, "explore": args.explore, "means": means, "tests": tests, "configs": runs},
                                         indent=2, default=float))


if __name__ == "__main__":
    main()
