#!/usr/bin/env bash
# The default run (configs/ems_default.yaml, seed 42, 750 steps, bf16: auto) on one GPU, at this tree and at an
# older tree in .gl/before (e.g. `git archive caa9719 | tar -x -C .gl/before`), one after the other, to check that a
# refactor changes no result. Wheels the GPU image lacks (datasets, evaluate, ...) are read from .whl/.
# Writes $OUT/{after,before}.json (eval_results.json) and the logs.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -c "import torch, transformers, datasets, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name(0))"
for tree in after before; do
  folder=$PWD; [ "$tree" = before ] && folder=$PWD/.gl/before
  start=$(date +%s)
  (cd "$folder" && PYTHONPATH=/tmp/site:$folder timeout 240 python3 scripts/train.py --output_dir /tmp/run-$tree \
      --set training.dataloader_num_workers=0 > "$OUT/$tree.log" 2>&1)
  echo "$tree: exit $? in $(( $(date +%s) - start )) s"
  cp /tmp/run-$tree/eval_results.json "$OUT/$tree.json" 2>/dev/null
  python3 -c "import json,sys; r=json.load(open('$OUT/$tree.json')); print('$tree', {k: round(r[k]['model']['average']['p@1'], 4) for k in ('heldout','out_of_domain')}, r['training'])" 2>/dev/null || tail -20 "$OUT/$tree.log"
done
