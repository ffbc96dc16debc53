#!/usr/bin/env bash
# `fusion-ltr rerank` on the demo's hybrid SciFact test run (issue 33's acceptance), after `make demo`:
# the reranked run scored by ir-measures against the demo's own evaluation of the same model, then an
# interrupted rerank (killed with SIGKILL after $KILL_AFTER seconds) resumed, compared byte for byte with an
# uninterrupted one on the first $SUBSET queries.
#   bash benchmarks/rerank_file.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-runs/demo/rerank}
KILL_AFTER=${KILL_AFTER:-40}
SUBSET=${SUBSET:-60}
mkdir -p "$OUT"
R=runs/demo/retrieval
args=(--model runs/demo --queries scifact --member bm25=$R/bm25.test.trec --member dense=$R/dense.test.trec --quiet)
rm -f "$OUT"/*.trec "$OUT"/*.partial
/usr/bin/time -f "%e s" .venv/bin/fusion-ltr rerank "${args[@]}" --input $R/hybrid.test.trec --output "$OUT/all.trec"
.venv/bin/python - "$OUT/all.trec" <<'PY'
import json, sys
from ranker import evaluate as ev
from retrieval.data import find_dataset, load_qrels, read_trec_run
qrels = load_qrels(find_dataset("scifact") / "qrels" / "test.tsv")
got = ev.mean(ev.per_query(read_trec_run(sys.argv[1]), qrels, ["nDCG@10"]))["nDCG@10"]
evaluated = json.load(open("runs/demo/eval/test/ranker.json"))["means"]["lambdamart"]["nDCG@10"]
print(f"rerank {got:.4f}  evaluate {evaluated:.4f}  same to 4 decimals: {round(got, 4) == round(evaluated, 4)}")
PY
# the first $SUBSET queries of the run, reranked whole, and again killed and resumed
.venv/bin/python - "$R/hybrid.test.trec" "$OUT/subset.input.trec" "$SUBSET" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
keep = list(dict.fromkeys(l.split()[0] for l in lines))[: int(sys.argv[3])]
open(sys.argv[2], "w").write("\n".join(l for l in lines if l.split()[0] in set(keep)) + "\n")
PY
.venv/bin/fusion-ltr rerank "${args[@]}" --input "$OUT/subset.input.trec" --output "$OUT/whole.trec"
timeout -s KILL "$KILL_AFTER" .venv/bin/fusion-ltr rerank "${args[@]}" --input "$OUT/subset.input.trec" --output "$OUT/resumed.trec" || echo "killed after ${KILL_AFTER}s: $(wc -l < "$OUT/resumed.trec.partial") queries in the partial file"
.venv/bin/fusion-ltr rerank "${args[@]}" --input "$OUT/subset.input.trec" --output "$OUT/resumed.trec" | grep -E '"(queries|resumed|computed)"'
cmp "$OUT/whole.trec" "$OUT/resumed.trec" && echo "resumed output identical to the uninterrupted one"
