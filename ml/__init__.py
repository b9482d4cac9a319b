"""Pure PyTorch library of the platform: data engine, detectors, training, active learning, metrics, export.

Never imports Django or Celery; usable as a library and from ``python -m ml.<stage>``.
"""
