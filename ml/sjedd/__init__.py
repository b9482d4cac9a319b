"""Building blocks of the SJEDD detector (``ml.detectors.sjedd``): towers, label graph, losses, Auto-λ."""
