"""Train one detector on a protocol of a generated dataset, with a mask budget, and evaluate it.

    python -m ml.train --detector lae --manifest DATA/manifest.jsonl --protocol cross_manipulation \\
        --mask-budget 3% --mask-selection uncertainty --out runs/lae_3pct

Writes ``OUT/model.pt`` (loads with ``ml.training.load_detector``), ``OUT/metrics.jsonl`` (per epoch),
``OUT/checkpoint.pt`` (re-running the same command resumes), ``OUT/masks.json`` (the ids that got masks)
and ``OUT/eval.json`` (seen/unseen test metrics). With ``uncertainty`` selection and a budget strictly
between 0 and 100%, a mask-free model is trained first in ``OUT/scorer`` and scores the pool.

Cross-dataset evaluation (train on one dataset, test on others, SJEDD's FF++ -> Celeb-DF, DFDC):
``--test-manifest OTHER/manifest.jsonl`` (repeatable) scores the trained model on each other dataset's
``test`` split (all of it when it has none), frame and video AUC, into ``eval.json``'s
``cross_dataset`` and the printed summary.

Several GPUs of one node: ``torchrun --standalone --nproc_per_node=N -m ml.train ...`` (same arguments;
``--batch-size`` is per GPU; see ``ml.training.distributed``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ml.data.protocols import load_splits, mask_pool
from ml.detectors import available
from ml.experiments.budget import (
    BUILTIN_SELECTORS,
    SelectionContext,
    budget_count,
    parse_budget,
    train_and_evaluate,
)
from ml.training import TrainConfig, distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.splitlines()[0])
    parser.add_argument("--detector", required=True, choices=available())
    parser.add_argument(
        "--manifest", required=True, type=Path, help="DIR/manifest.jsonl of a generated dataset"
    )
    parser.add_argument("--protocol", required=True, help="e.g. in_domain, cross_manipulation, lae_swap")
    parser.add_argument(
        "--mask-budget", default="0", help="fraction or percent of training images with masks"
    )
    parser.add_argument("--mask-selection", default="random", choices=sorted(BUILTIN_SELECTORS))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["adam", "adamw"], default="adam")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up before the schedule")
    parser.add_argument("--augment", action="store_true", help="random horizontal flips of image and mask")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument(
        "--config", default="{}",
        help="detector config as JSON, e.g. '{\"width\": 8}' or, for SJEDD from CLIP weights, "
        "'{\"model\": \"ViT-B-16-quickgelu\", \"pretrained\": \"/path/weights.pt\", \"freeze_text\": false}'",
    )  # fmt: skip
    parser.add_argument(
        "--test-manifest", action="append", type=Path, default=[],
        help="another dataset's manifest to test on (cross-dataset); repeatable",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        budget = parse_budget(args.mask_budget)
        detector_config = json.loads(args.config)
        if not isinstance(detector_config, dict):
            raise ValueError("--config must be a JSON object")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for manifest in (args.manifest, *args.test_manifest):
        if not manifest.is_file():
            print(f"error: manifest {manifest} not found", file=sys.stderr)
            return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dist_context = distributed.init_from_env()  # under torchrun: join the process group (one rank per GPU)
    dataset_dir = args.manifest.resolve().parent
    splits = load_splits(dataset_dir, args.protocol)
    config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        augment=args.augment,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    common = {
        "dataset_dir": dataset_dir,
        "splits": splits,
        "detector": args.detector,
        "seed": args.seed,
        "image_size": args.image_size,
        "detector_config": detector_config,
        "train_config": config,
        "batch_size": args.batch_size,
        "workers": args.workers,
    }
    pool = mask_pool(splits["train"])
    k = budget_count(budget, splits["train"])
    scorer = None
    if 0 < k < len(pool) and args.mask_selection == "uncertainty":
        scorer, _ = train_and_evaluate(**common, mask_ids=set(), out_dir=args.out / "scorer")
    if k == len(pool):
        mask_ids = {r["id"] for r in pool}
    elif k == 0:
        mask_ids = set()
    else:
        context = SelectionContext(
            candidates=pool,
            k=k,
            seed=args.seed,
            dataset_dir=dataset_dir,
            image_size=args.image_size,
            model=scorer,
            device=str(config.resolved_device()),
            train_rows=splits["train"],
        )
        mask_ids = set(BUILTIN_SELECTORS[args.mask_selection](context))
    args.out.mkdir(parents=True, exist_ok=True)
    if dist_context.is_main:
        (args.out / "masks.json").write_text(
            json.dumps(
                {"budget": budget, "selection": args.mask_selection, "ids": sorted(mask_ids)}, indent=1
            )
            + "\n"
        )
    model, evaluation = train_and_evaluate(**common, mask_ids=mask_ids, out_dir=args.out)
    if not dist_context.is_main:
        distributed.shutdown()
        return 0
    if args.test_manifest:
        evaluation["cross_dataset"] = cross_dataset(model, args.test_manifest, evaluation["threshold"], args)
        (args.out / "eval.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n")
    summary = {
        "detector": args.detector,
        "protocol": args.protocol,
        "mask_budget": budget,
        "n_masks": len(mask_ids),
        "val_auc": evaluation["val_auc"],
        "seen_auc": evaluation["seen"].get("auc"),
        "unseen_auc": evaluation["unseen"].get("auc"),
        "out": str(args.out),
    }
    summary["train_processes"] = dist_context.world_size
    if args.test_manifest:
        summary["cross_dataset"] = {
            name: {"auc": m.get("auc"), "video_auc": m.get("video_auc"), "n": m.get("n")}
            for name, m in evaluation["cross_dataset"].items()
        }
    print(json.dumps(summary, sort_keys=True))
    distributed.shutdown()
    return 0


def cross_dataset(model, manifests: list[Path], threshold: float, args) -> dict:
    """The trained model on each other dataset's test split (all rows without one), keyed by folder name."""
    from ml.data.manifest import read_manifest
    from ml.training.pipeline import evaluate

    device = str(next(model.parameters()).device)
    out = {}
    for manifest in manifests:
        rows = read_manifest(manifest)
        rows = [r for r in rows if r.get("split") == "test"] or rows
        name = manifest.resolve().parent.name
        out[name] = evaluate(model, rows, manifest.resolve().parent, threshold=threshold,
                             image_size=model.input_size, device=device, batch_size=args.batch_size * 2)  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
