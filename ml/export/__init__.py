"""Export bundles of trained detectors and the face-inference pipeline built on them.

- ``ml.export.bundle``: ``export_bundle(detector, out, metadata)`` writes a verified zip (safetensors,
  TorchScript, ONNX, model card, manifest); ``load_bundle(path)`` refuses a tampered one.
- ``ml.export.standalone``: the ``predict.py`` copied into each bundle (torch-only or onnxruntime-only).
- ``ml.export.inference``: full photo -> faces -> crops -> scores, node probabilities and heatmaps.
- ``python -m ml.export --version CHECKPOINT --out FILE``: the command-line front door.

Heavy modules (torch, onnxruntime) are imported by the submodules, not here.
"""

from ml.export.standalone import BundleError

__all__ = ["BundleError"]
