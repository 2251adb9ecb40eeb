#!/usr/bin/env bash
# Issue 18's GPU check, under 8 minutes on one GPU (each run has its own time limit; 400 s in all): the EMS paper's
# model (configs/ems_paper.yaml) trained in bf16 autocast with tf32 for a few hundred steps, with and without
# `mini_batch_size` (GradCache), and compiled (0 graph breaks), through benchmarks/gpu_paper_throughput.py: pairs/s,
# peak memory and the share of the GPU's bf16 matmul rate, one JSON line per run. Synthetic batches: no data,
# tokenizer or wheels beyond torch and transformers.
#   bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.jsonl (OUT defaults to runs/gpu_check)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
torch.cuda.get_device_name(0))"
run() {  # run SECONDS ARGS...: one benchmark invocation, cut at SECONDS
  local limit=$1; shift
  echo "# gpu_paper_throughput.py $* (limit ${limit} s)"
  local start=$SECONDS
  timeout "$limit" python3 benchmarks/gpu_paper_throughput.py "$@" | grep -v '"device"' | tee -a "$OUT/gpu_check.jsonl"
  echo "# exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
run 50 --batches 152 --steps 300 --warmup 20                          # the paper's global batch, at once
run 70 --batches 1024 --steps 200 --warmup 10                         # a large batch, at once
run 80 --batches 1024 --mini_batch_size 152 --steps 100 --warmup 5    # the same batch by GradCache: its overhead
run 30 --batches 8192 --steps 1 --warmup 0                            # beyond memory at once (about 27 MiB a pair)
run 100 --batches 8192 --mini_batch_size 1024 --steps 30 --warmup 3   # ... and by GradCache
run 70 --batches 152 --compile --steps 300 --warmup 20                # torch.compile, the paper's global batch
