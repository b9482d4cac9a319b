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
# Every step runs even when an earlier one failed or missed its goal (``python -m bench`` exits 1 then),
# and whatever was measured is copied; the script exits with the first non-zero status.
status=0
for step in sjedd_gpu gpu_train; do
    rc=0
    "$PY" -m bench "$step" "${quick[@]}" || rc=$?
    if (( rc != 0 )); then
        echo "[gpu-check] $step exited with status $rc" >&2
        (( status == 0 )) && status=$rc
    fi
done
if [[ -n "${OUT:-}" ]]; then
    results="${BENCH_RESULTS:-bench/results}"
    cp "$results"/sjedd_gpu*.json "$results"/gpu_train*.json "$OUT"/ 2>/dev/null || true
fi
exit "$status"
