#!/usr/bin/env bash
# The GPU check, prepared to run in one go on a CUDA machine (a few minutes on one large card):
#   1. python -m bench sjedd_gpu   SJEDD (ViT-B-16, 224 px, bf16) scoring and training throughput as a
#                                  fraction of the card's measured bf16 matmul roofline;
#   2. python -m bench gpu_train   a short real-size SJEDD training (ViT-B-16 random init, 224 px, bf16)
#                                  through the platform's training pipeline and device choice.
# Usage: deploy/gpu/check.sh [--toy]     --toy: the same two steps at toy size, on any device (the test)
# Results: bench/results/sjedd_gpu.json and gpu_train.json (.quick.json with --toy; BENCH_RESULTS
# overrides the folder); copied to $OUT too when it is set. SJEDD_PRETRAINED=file uses real weights.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1
quick=()
if [[ "${1:-}" == "--toy" ]]; then quick=(--quick); fi
"$PY" - <<'PY'
import torch
print(f"[gpu-check] torch {torch.__version__}, CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
PY
"$PY" -m bench sjedd_gpu "${quick[@]}"
"$PY" -m bench gpu_train "${quick[@]}"
if [[ -n "${OUT:-}" ]]; then
    results="${BENCH_RESULTS:-bench/results}"
    cp "$results"/sjedd_gpu*.json "$results"/gpu_train*.json "$OUT"/ 2>/dev/null || true
fi
