#!/usr/bin/env bash
# One GPU session's checks, in one call: the CUDA tests, then the rollout benchmark in float32
# and bf16 on the default tiny model and a larger one. Results land in ${OUT:-bench/results}.
#   bash bench/gpu_smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
date -u +"date %Y-%m-%dT%H:%MZ"
python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/core/test_gpu.py 2>&1 | tail -3
for dtype in float32 bfloat16; do
  python3 bench/rollout.py --device cuda --dtype "$dtype" --json "$out/rollout-cuda-$dtype.json" | tail -6
done
python3 bench/rollout.py --device cuda --dtype bfloat16 --width 256 --image-size 32 --blocks 8 \
  --json "$out/rollout-cuda-bfloat16-w256.json" | tail -6
