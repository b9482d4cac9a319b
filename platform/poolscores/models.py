"""One row per (round, pool sample): the uncertainty scores a scoring shard computed for it.

Written only by ``rounds.scoring.score_upsert`` with ``INSERT ... ON CONFLICT (round, sample) DO
UPDATE``, so a retried or duplicated shard rewrites the same rows and never adds any. Selection reads
these rows in chunks (``rounds.selection.selection_run``) and writes ``rounds.Selection`` for the chosen
few; the pool's scores stay here for the histogram and for audits.
"""

from __future__ import annotations

from django.db import models


class PoolScore(models.Model):
    round = models.ForeignKey("rounds.Round", on_delete=models.CASCADE, related_name="pool_scores")
    sample = models.ForeignKey("catalog.Sample", on_delete=models.CASCADE, related_name="pool_scores")
    scores = models.JSONField(default=dict, help_text="strategy name -> score (higher = more uncertain)")
    prob = models.FloatField(help_text="P(fake) of the round's detector")
    embedding = models.TextField(blank=True, default="", help_text="base64 float16 detector embedding")
    shard = models.PositiveIntegerField(default=0, help_text="index of the shard that wrote the row")
    scored_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "sample"], name="pool_score_unique_sample")]

    def __str__(self) -> str:
        return f"pool score {self.round_id}:{self.sample_id}"
