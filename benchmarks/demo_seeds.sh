#!/usr/bin/env bash
# The demo's seed-to-seed spread (issue 13): configs/demo.toml with the cross-encoder fine-tuned with other
# seeds (finetune.params.seed; its 100-query sample follows the seed too), each in its own run folder
# runs/demo-seed<N>, evaluated on SciFact test as `make demo` is. The seed-42 run is runs/demo itself.
#   bash benchmarks/demo_seeds.sh 1 2
set -euo pipefail
for seed in "$@"; do
  cfg="runs/demo-seed${seed}.toml"
  mkdir -p runs
  sed -e "s|runs/demo/|runs/demo-seed${seed}/|g" -e "s|^dir = \"runs/demo\"|dir = \"runs/demo-seed${seed}\"|" \
      -e "/^\[finetune.params\]/,/^\[/ s|^seed = 42|seed = ${seed}|" configs/demo.toml > "$cfg"
  .venv/bin/fusion-ltr run --config "$cfg" --quiet
done
