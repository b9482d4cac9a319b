"""Sizing estimates for GPU workers: parameters and training activation memory of the detectors.

    python deploy/k8s/tools/sizing.py [--out sizing.json]

Runs on the CPU with random weights (no download). For each configuration it runs forward + backward at
batch 2 and 4 and sums the bytes of every tensor autograd saves for the backward pass (each storage once):
the activation memory of a training step. Activations grow linearly with the batch, so the two points give
the cost per sample, extrapolated to batch 32 and 64. Estimates, not GPU measurements: fp32 tensors
(bf16 autocast on a GPU roughly halves the activations), without the CUDA context (~0.5-1 GiB), cuDNN
workspaces and allocator fragmentation (add ~20 %). Weights + gradients + Adam state = 16 bytes/parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ml.detectors import create  # noqa: E402

GIB = 1024**3
CONFIGS = [
    ("lae", {"width": 16, "depth": 3}, "LAE default (width 16, depth 3)"),
    ("lae", {"width": 32, "depth": 4}, "LAE wide (width 32, depth 4)"),
    ("sjedd", {"model": "sjedd-tiny-vit"}, "SJEDD sjedd-tiny-vit (rounds default)"),
    ("sjedd", {"model": "sjedd-small-vit"}, "SJEDD sjedd-small-vit"),
    ("sjedd", {"model": "sjedd-small-rn"}, "SJEDD sjedd-small-rn"),
    ("sjedd", {"model": "ViT-B-16"}, "SJEDD on CLIP ViT-B/16 (the paper's backbone)"),
]
SIZES = [128, 224]
BATCHES = [32, 64]


def saved_bytes(model: torch.nn.Module, image: torch.Tensor) -> int:
    """Bytes autograd keeps for backward in one training step (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        try:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(image)
        loss = out.logit.float().sum()
        for value in (out.extras or {}).values():
            if isinstance(value, torch.Tensor) and value.requires_grad:
                loss = loss + value.float().mean()
    loss.backward()
    return sum(seen.values())


def measure(name: str, config: dict, size: int) -> dict:
    torch.manual_seed(0)
    model = create(name, **{**config, "image_size": size})
    model.train()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    started = time.perf_counter()
    points = {b: saved_bytes(model, torch.randn(b, 3, size, size)) for b in (2, 4)}
    per_sample = (points[4] - points[2]) / 2
    fixed = points[2] - 2 * per_sample
    state = 16 * trainable + 4 * (params - trainable)
    row = {
        "detector": name,
        "config": config,
        "image_size": size,
        "parameters": params,
        "trainable_parameters": trainable,
        "weights_mib": round(4 * params / 2**20, 1),
        "train_state_gib": round(state / GIB, 3),
        "activations_per_sample_mib": round(per_sample / 2**20, 2),
        "measure_s": round(time.perf_counter() - started, 1),
    }
    for batch in BATCHES:
        activations = fixed + per_sample * batch
        row[f"activations_b{batch}_gib"] = round(activations / GIB, 2)
        row[f"train_total_b{batch}_gib"] = round((activations + state) / GIB, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, config, label in CONFIGS:
        for size in SIZES:
            row = {"label": label, **measure(name, config, size)}
            rows.append(row)
            print(
                f"{label:48s} {size:4d}px  params {row['parameters'] / 1e6:7.2f} M  "
                f"act/sample {row['activations_per_sample_mib']:8.1f} MiB  "
                f"train b32 {row['train_total_b32_gib']:6.2f} GiB  b64 {row['train_total_b64_gib']:6.2f} GiB",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
