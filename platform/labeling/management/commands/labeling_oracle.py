"""``manage.py labeling_oracle ROUND_ID [--dilate K] [--erode K] [--drop F] [--seed S] [--async]``."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Answer a round's open Label Studio tasks with the ground-truth masks (optionally degraded)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("round_id", type=int)
        parser.add_argument("--dilate", type=int, default=0, help="grow masks by K pixels")
        parser.add_argument("--erode", type=int, default=0, help="shrink masks by K pixels")
        parser.add_argument("--drop", type=float, default=0.0, help="leave this fraction of tasks unanswered")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--limit", type=int, default=None, help="answer at most N tasks")
        parser.add_argument(
            "--async", dest="run_async", action="store_true", help="enqueue a Celery task instead"
        )

    def handle(self, *args, **opts) -> None:
        if opts["dilate"] < 0 or opts["erode"] < 0 or not 0.0 <= opts["drop"] <= 1.0:
            raise CommandError("--dilate/--erode must be >= 0 and --drop in [0, 1]")
        if opts["run_async"]:
            from workers.enqueue import publish

            args = (opts["round_id"], opts["dilate"], opts["erode"], opts["drop"], opts["seed"])
            result = publish("workers.tasks.labeling.oracle_task", args)
            self.stdout.write(json.dumps({"task_id": result.id}))
            return
        from labeling.oracle import oracle_answer

        counts = oracle_answer(
            round_id=opts["round_id"], dilate_px=opts["dilate"], erode_px=opts["erode"],
            drop_fraction=opts["drop"], seed=opts["seed"], limit=opts["limit"], progress=True,
        )  # fmt: skip
        self.stdout.write(json.dumps(counts))
