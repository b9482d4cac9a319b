"""Video frame extraction as distributed work: ``extract_videos(video_ids, options)`` on the cpu queue.

The body is ``catalog.video_extract.extract_shard`` (claiming, extraction, failure bookkeeping, atomic
writes through ``catalog.storage``); this task only names the worker and the task id it claims with.
"""

from __future__ import annotations

import os
import socket
import time

from workers.celery_app import app


@app.task(name="workers.tasks.video.extract_videos", bind=True)
def extract_videos(self, video_ids: list[int], options: dict | None = None) -> dict:
    """Extract a shard of videos; returns counts and summed stage timings."""
    from catalog.video_extract import extract_shard

    task_id = self.request.id or f"local-{os.getpid()}-{time.time_ns()}"
    hostname = self.request.hostname or socket.gethostname()
    return extract_shard(video_ids, options, task_id=task_id, hostname=hostname)
