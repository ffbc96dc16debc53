#!/usr/bin/env bash
# Feedback features on SciFact (issue 31): configs/scifact-feedback.toml's cheap features with and without
# the `feedback` extractor (its variant no_feedback), trained on the judgements, after a simulated log of
# SESSIONS sessions over every query (benchmarks/simulate_events.py --include-test: the first stage's top 10
# shown, clicks by the position-based model, eta 1). The evaluation's table compares the two on SciFact test.
#   bash benchmarks/feedback_scifact.sh [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/scifact-feedback.toml
RUN=runs/scifact-feedback
SESSIONS=${1:-100000}
F=.venv/bin/fusion-ltr
$F retrieve --config $CONFIG
$F features --config $CONFIG --quiet   # fs_rank first: the simulated app shows the first stage's order
.venv/bin/python benchmarks/simulate_events.py --config $CONFIG --sessions "$SESSIONS" --include-test \
    --prefix "fb$SESSIONS" --out "$RUN/events-$SESSIONS.jsonl"
$F events ingest "$RUN/events-$SESSIONS.jsonl" --config $CONFIG
/usr/bin/time -v $F features --config $CONFIG --quiet 2> "$RUN/features-time.txt"   # the feedback features over the log
grep -E "Elapsed|Maximum resident" "$RUN/features-time.txt"
$F run --config $CONFIG --no-ablation
