#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one prepared script (CI and the 2-core development machines have none):
# the gpu-marked tests (CUDA optimizer paths, AMP + torch.compile train-and-resume, CUDA attention and
# incremental decoding, GPU augmentation), then the optimizer-step benchmark on CUDA and the training throughput
# of every paper workload (NMT presets, CIFAR ResNet-20, ImageNet ResNet-18, the 1BW LSTM) in fp32 and bf16,
# eager and compiled, with the hours of a paper-length run each implies. About 10 minutes on one H100-class GPU.
# Logs go to $OUT (default: gpu_checks/). Run from the repository root inside .venv:
#   .venv/bin/python -m pip install -e . >/dev/null; bash benchmarks/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_checks}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
status=0
"$PY" -m pytest -q -m gpu tests/ 2>&1 | tee "$OUT/pytest_gpu.log" || status=1
"$PY" benchmarks/optimizer_step.py --device cuda --repeats 50 2>&1 | tee "$OUT/optimizer_step_cuda.log" || status=1
"$PY" benchmarks/train_throughput.py --device cuda --precision fp32 bf16 --compile off on --steps 20 2>&1 \
  | tee "$OUT/train_throughput_cuda.log" || status=1
exit $status
