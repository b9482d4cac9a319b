"""``python -m ml.export --version V --out FILE``: write an export bundle for a saved detector.

``V`` is a checkpoint written by ``ml.training.checkpoint.save_detector`` (what a DetectorVersion's
``checkpoint`` or ``model`` artifact points to; a relative artifact path is resolved under
``--media-root``, default ``$MEDIA_ROOT``) or a ``.safetensors`` weights file together with ``--config``
(a JSON object ``{"kind": ..., "config": {...}}``). ``--metadata`` is a JSON file with the model card's
facts (tag, metrics, metrics_per_round, training, lineage); the platform writes it from the database,
so this command never needs Django.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def load_source(version: str, config_path: str | None):
    """(detector, metadata from the checkpoint) from a checkpoint, or from safetensors + config JSON."""
    from ml.detectors import create

    if version.endswith(".safetensors"):
        if not config_path:
            raise SystemExit("--config is required with a .safetensors weights file")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            spec = json.loads(Path(config_path).read_text())
            detector = create(spec["kind"], **spec.get("config", {}))
            detector.load_state_dict(load_file(version))
        except (SafetensorError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{Path(version).name} with {Path(config_path).name} does not load: {exc}"
            ) from None
        return detector.eval(), {}
    from ml.training.checkpoint import load_detector

    return load_detector(version)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m ml.export", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--version",
        required=True,
        help="checkpoint (.pt) or weights (.safetensors); relative to --media-root",
    )
    parser.add_argument(
        "--media-root",
        default=os.environ.get("MEDIA_ROOT", ""),
        help="resolve a relative --version (a DetectorVersion artifact path) here (default: $MEDIA_ROOT)",
    )
    parser.add_argument("--out", required=True, help="bundle zip to write")
    parser.add_argument("--config", help="JSON {kind, config} for a .safetensors weights file")
    parser.add_argument("--metadata", help="JSON file: tag, metrics, metrics_per_round, training, lineage")
    args = parser.parse_args(argv)
    if args.media_root and not Path(args.version).is_absolute() and not Path(args.version).is_file():
        args.version = str(Path(args.media_root) / args.version)
    if not Path(args.version).is_file():
        print(f"error: {args.version} is not a file", file=sys.stderr)
        return 2
    from ml.export.bundle import export_bundle

    try:
        detector, checkpoint_meta = load_source(args.version, args.config)
    except ValueError as exc:  # CheckpointError, a bad --config, weights that are not safetensors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metadata = {"checkpoint_metadata": checkpoint_meta}
    if args.metadata:
        metadata.update(json.loads(Path(args.metadata).read_text()))
    metadata.setdefault("tag", Path(args.version).stem)
    report = export_bundle(detector, args.out, metadata)
    print(
        json.dumps(
            {
                "bundle": str(report.path),
                "sha256": report.sha256,
                "files": sorted(report.manifest),
                "onnx_max_abs_diff": report.verification["onnx_max_abs_diff"],
                "torchscript_max_abs_diff": report.verification["torchscript_max_abs_diff"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
