"""Detector versions: trained detectors with metrics, lineage and artifacts."""
