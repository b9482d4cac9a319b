"""Detectors behind one interface (``ml.detectors.base``), created by name."""

from ml.detectors.base import Detector, DetectorOutput, available, create, register

__all__ = ["Detector", "DetectorOutput", "available", "create", "register"]
