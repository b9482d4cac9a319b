"""The platform's Celery app plus one task that sleeps, for the operations view's tests: a worker busy for
a few seconds with a task whose arguments, runtime and round can be seen through ``inspect().active()``."""

from __future__ import annotations

import time

from workers.celery_app import app


@app.task(name="tests.operations.sleep")
def sleep(seconds: float, label: str = "", round_id: int | None = None) -> float:
    time.sleep(float(seconds))
    return float(seconds)


__all__ = ["app"]
