"""Datasets, samples, masks and dataset imports."""
