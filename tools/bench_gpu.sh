#!/usr/bin/env bash
# The prepared CUDA benchmark (issue 25 item 7): `bench model` and `bench pipeline` on the GPU, with the CPU
# baseline of `bench model` in the same run. Runs as it is on any machine with an NVIDIA GPU:
#   bash tools/bench_gpu.sh [OUT_DIR]
# It sets up .venv (make setup) if needed, swaps in the CUDA build of the pinned torch when the venv has the
# CPU one (needs PyTorch's wheel index, or a wheel already on disk), and writes every figure to OUT_DIR
# (default bench-gpu-<date>/) as well as to the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
TORCH=$(grep -o 'torch==[0-9.]*' pyproject.toml | head -1)
CUDA_INDEX=${CUDA_INDEX:-https://download.pytorch.org/whl/cu128}

command -v nvidia-smi >/dev/null || { echo "bench_gpu: no nvidia-smi: this machine has no NVIDIA GPU driver" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
[ -x .venv/bin/python ] || make setup
if ! .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "bench_gpu: installing the CUDA build of $TORCH from $CUDA_INDEX (set CUDA_INDEX for another CUDA version)"
  .venv/bin/pip install -q --force-reinstall --no-deps "$TORCH" --index-url "$CUDA_INDEX"
fi
.venv/bin/python -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0))' | tee "$OUT/torch.txt"

run() {  # name, command...: print and keep its output
  local name=$1; shift
  echo "== $name: $*" | tee "$OUT/$name.txt"
  "$@" 2>&1 | grep -v ' INFO ' | tee -a "$OUT/$name.txt"
}
run model-cuda .venv/bin/medm2t bench model --checkpoint model/checkpoints/demo --device cuda --batch-sizes 1,11,32,128,256,512 --no-progress
run model-cpu .venv/bin/medm2t bench model --checkpoint model/checkpoints/demo --device cpu --batch-sizes 11,128,256 --no-progress
MEDM2T_DEVICE=cuda run pipeline-cuda .venv/bin/medm2t bench pipeline --stays 100 --scorers 'news2,medm2t' --histories 20
MEDM2T_DEVICE=cuda MEDM2T_BATCH_MAX=512 run pipeline-cuda-batch512 .venv/bin/medm2t bench pipeline --stays 100 --scorers 'news2,medm2t' --histories 20
echo "bench_gpu: figures in $OUT/"
