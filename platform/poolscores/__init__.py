"""Per-round uncertainty scores of every pool sample (written by the scoring shards, read by selection)."""
