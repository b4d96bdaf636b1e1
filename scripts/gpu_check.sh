#!/usr/bin/env bash
# The GPU check (segaccel/benchmark/gpu_check.py): bf16/fp16 training steps with the grad scaler's
# skips counted, SyncBN on two GPUs, FSDP2 on every GPU, and the train/infer benchmarks of SegFormer-B0
# and a ViT-B with the % of matmul peak, in under 8 minutes on one GPU; one Markdown table at the end
# (work_dirs/gpu_check/gpu_check.md). Without a CUDA device it says so and exits 0.
#
#   bash scripts/gpu_check.sh [--out DIR] [--budget SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m segaccel.benchmark.gpu_check "$@"
