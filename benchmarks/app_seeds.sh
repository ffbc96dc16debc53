#!/usr/bin/env bash
# The app model's seed-to-seed spread (issue 35): for each cross-encoder seed N, the demo with that seed
# (benchmarks/demo_seeds.sh: runs/demo-seed<N>), then configs/demo-app.toml trained on its store
# (runs/demo-app-seed<N>), each evaluated on SciFact test as `make demo` evaluates it (in the hybrid's order
# with ranks, and shuffled without them). The seed-42 runs are runs/demo and runs/demo-app themselves.
#   bash benchmarks/app_seeds.sh 1 2
set -euo pipefail
bash "$(dirname "$0")/demo_seeds.sh" "$@"
for seed in "$@"; do
  cfg="runs/demo-app-seed${seed}.toml"
  sed -e "s|^from_run = \"runs/demo\"|from_run = \"runs/demo-seed${seed}\"|" \
      -e "s|^dir = \"runs/demo-app\"|dir = \"runs/demo-app-seed${seed}\"|" configs/demo-app.toml > "$cfg"
  grep -q "runs/demo-seed${seed}" "$cfg" && grep -q "runs/demo-app-seed${seed}" "$cfg"
  .venv/bin/fusion-ltr run --config "$cfg" --quiet
done
