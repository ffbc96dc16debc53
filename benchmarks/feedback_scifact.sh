#!/usr/bin/env bash
# Feedback features on SciFact (issue 31): configs/scifact-feedback.toml's cheap features with and without
# the `feedback` extractor (its variant no_feedback), trained on the judgements, after a simulated log of
# SESSIONS sessions (benchmarks/simulate_events.py: the first stage's top 10 shown, clicks by the
# position-based model, eta 1). QUERIES=seen: sessions of every query, the test queries too (queries that
# come again); QUERIES=unseen: of the training queries only (the test queries are new: only the documents'
# own history helps). The evaluation's table compares the two models on SciFact test.
#   bash benchmarks/feedback_scifact.sh [SESSIONS] [seen|unseen]     (run folder runs/scifact-feedback-MODE-SESSIONS)
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${1:-100000}
MODE=${2:-seen}
RUN=runs/scifact-feedback-$MODE-$SESSIONS
CONFIG=$RUN.toml
mkdir -p runs
sed "s|^dir = \"runs/scifact-feedback\"|dir = \"$RUN\"|" configs/scifact-feedback.toml > "$CONFIG"
F=.venv/bin/fusion-ltr
$F retrieve --config "$CONFIG"
$F features --config "$CONFIG" --quiet   # fs_rank first: the simulated app shows the first stage's order
.venv/bin/python benchmarks/simulate_events.py --config "$CONFIG" --sessions "$SESSIONS" \
    $([ "$MODE" = seen ] && echo --include-test) --prefix "fb$SESSIONS" --out "$RUN/events.jsonl"
$F events ingest "$RUN/events.jsonl" --config "$CONFIG"
/usr/bin/time -v $F features --config "$CONFIG" --quiet 2> "$RUN/features-time.txt"   # the feedback features over the log
grep -E "Elapsed|Maximum resident" "$RUN/features-time.txt"
$F run --config "$CONFIG" --no-ablation
