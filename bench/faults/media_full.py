"""Fault scenario ``media_full``: the media volume fills up, then turns read-only, while masks arrive.

MEDIA_ROOT is a tiny tmpfs of its own (``mount -t tmpfs -o size=...``; needs root and mount rights,
otherwise the scenario reports ``skipped`` with the reason). A private database
(``bench_faults_pg_<pid>``, migrated, dropped afterwards) holds a round of N samples whose annotations are
ingested exactly as Label Studio's are (``labeling.ingest.annotation_ingest``):

1. the first third is ingested normally;
2. the volume is filled to the last byte (``ENOSPC``): the next third must fail with
   ``StorageUnavailable`` and leave no Mask row, no annotation record, no file, no temp file;
3. the volume is remounted read-only (``EROFS``): the last third fails the same way;
4. the volume is fixed (filler removed, remounted read-write) and every failed annotation is ingested
   again, the way reconciliation re-reads Label Studio; ``seconds_to_recover`` runs from the fix to the
   last mask stored.

``lost`` = annotations without their mask + Mask rows whose file is missing + files no row points at +
temp files left + masks whose content differs from what was annotated.

``SmallVolume``, ``seed_round``, ``annotation_for`` and ``media_audit`` are shared with
``tests/integration/test_faults_services.py``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SCENARIO = "media_full"


def mount_unavailable_reason() -> str | None:
    """None when a private tmpfs can be mounted here; otherwise why not (for a clear skip)."""
    if os.geteuid() != 0:
        return "not root: a full or read-only volume needs a private tmpfs mount (chmod does not bind root)"
    probe = Path(tempfile.mkdtemp(prefix="faults-mount-probe-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(probe)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if done.returncode != 0:
            return f"mount -t tmpfs is not permitted here: {done.stderr.strip()[:200]}"
        subprocess.run(["umount", str(probe)], check=False, timeout=30)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"mount is not available: {exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


class SmallVolume:
    """A private tmpfs of ``size_kib`` that can be filled to the last byte and remounted read-only."""

    def __init__(self, size_kib: int = 1024, path: Path | None = None):
        self.size_kib = size_kib
        self.path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="faults-media-"))
        self._own_dir = path is None
        self._mounted = False

    def __enter__(self) -> SmallVolume:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k,mode=0755", "tmpfs", str(self.path)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self._mounted = True
        return self

    def __exit__(self, *exc) -> None:
        if self._mounted:
            done = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
            if done.returncode != 0:  # a process still has a file open: detach now, freed when closed
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self._mounted = False
        if self._own_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    @property
    def filler(self) -> Path:
        return self.path / ".filler"

    def fill(self) -> int:
        """Write a filler file until the volume refuses (ENOSPC); returns the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 512, 1):  # big chunks first, then the last pages and bytes
                while True:
                    try:
                        count = os.write(fd, b"\0" * size)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    if count == 0:
                        break
                    written += count
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, flag: bool) -> None:
        mode = "ro" if flag else "rw"
        subprocess.run(
            ["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True, timeout=30
        )


# ------------------------------------------------------------------------------------- platform fixtures
def seed_round(*, count: int, size: tuple[int, int] = (48, 40), name: str | None = None):
    """Dataset + samples + round + selection + Label Studio project/task rows (ids made up, no server)."""
    from catalog.models import Dataset, Sample
    from labeling.models import LabelingProject
    from rounds.models import AnnotationTask, Round, Selection

    w, h = size
    name = name or f"faults-media-{uuid.uuid4().hex[:8]}"
    base = int(uuid.uuid4().int % 10**9) * 1000
    dataset = Dataset.objects.create(name=name)
    round_obj = Round.objects.create(dataset=dataset, number=1, state="annotating", config={})
    LabelingProject.objects.create(round=round_obj, ls_project_id=base)
    tasks = []
    for index in range(count):
        sample = Sample.objects.create(
            dataset=dataset, external_id=f"s{index}", path=f"{name}/img/{index:04d}.png", sha256="0" * 64,
            width=w, height=h, label="fake", split="train",
        )  # fmt: skip
        Selection.objects.create(round=round_obj, sample=sample, score=0.5, rank=index + 1, scores={})
        tasks.append(
            AnnotationTask.objects.create(
                round=round_obj,
                sample=sample,
                ls_project_id=base,
                ls_task_id=base + index + 1,
                status="created",
            )
        )
    return dataset, round_obj, tasks


def mask_for(index: int, width: int, height: int):
    import numpy as np

    mask = np.zeros((height, width), bool)
    y, x = index % (height - 10), (3 * index) % (width - 12)
    mask[y : y + 10, x : x + 12] = True
    return mask


def annotation_for(task, annotation_id: int, mask) -> dict:
    """An annotation as Label Studio returns it: a brush region + the "fake" verdict."""
    from labeling import masks

    return {
        "id": annotation_id,
        "task": task.ls_task_id,
        "project": task.ls_project_id,
        "updated_at": "2026-01-01T00:00:00Z",
        "completed_by": None,
        "was_cancelled": False,
        "result": [
            masks.brush_result(mask),
            {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["fake"]}},
        ],
    }


def media_audit(media_root: Path, dataset) -> dict:
    """Rows without files, files without rows and leftover temp files under the dataset's mask folder."""
    from catalog.models import Mask

    media_root = Path(media_root)
    rows = list(Mask.objects.filter(sample__dataset=dataset).values_list("path", flat=True))
    missing = [p for p in rows if not (media_root / p).is_file()]
    folder = media_root / "masks" / str(dataset.pk)
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    temp = [str(p) for p in files if p.name.startswith(".")]
    referenced = {str(media_root / p) for p in rows}
    orphans = [str(p) for p in files if not p.name.startswith(".") and str(p) not in referenced]
    return {"rows": len(rows), "rows_missing_file": missing, "orphan_files": orphans, "temp_files": temp}


def run(quick: bool) -> dict:
    reason = mount_unavailable_reason()
    if reason is not None:
        return {"recovered": True, "seconds_to_recover": None, "lost": 0, "skipped": reason}
    from bench.harness.databases import base_url, private_database

    count = 30 if quick else 300
    with (
        private_database(base_url()) as (_name, db_url),
        SmallVolume(size_kib=2048 if quick else 8192) as volume,
    ):
        os.environ["DATABASE_URL"] = db_url
        os.environ["MEDIA_ROOT"] = str(volume.path)
        from bench.common import django_setup

        django_setup(migrate=False, scratch=False)  # the private database, migrated already
        import numpy as np
        from django.conf import settings
        from django.db import connections

        from catalog.models import Mask
        from forgery_site.errors import StorageUnavailable
        from labeling import masks
        from labeling.ingest import annotation_ingest
        from labeling.models import AnnotationRecord

        settings.MEDIA_ROOT = volume.path
        try:
            dataset, _round, tasks = seed_round(count=count)
            w, h = tasks[0].sample.width, tasks[0].sample.height
            expected = {t.sample_id: mask_for(i, w, h) for i, t in enumerate(tasks)}
            annotations = [annotation_for(t, t.ls_task_id * 10, expected[t.sample_id]) for t in tasks]
            thirds = [
                annotations[: count // 3],
                annotations[count // 3 : 2 * count // 3],
                annotations[2 * count // 3 :],
            ]
            failures: dict[str, int] = {"full": 0, "read_only": 0}
            messages: set[str] = set()
            pending: list[dict] = []
            started = time.perf_counter()
            for annotation in thirds[0]:
                annotation_ingest(annotation)
            normal_s = time.perf_counter() - started
            filled = volume.fill()
            for phase, batch in (("full", thirds[1]), ("read_only", thirds[2])):
                if phase == "read_only":
                    volume.free()
                    volume.read_only(True)
                for annotation in batch:
                    try:
                        annotation_ingest(annotation)
                    except StorageUnavailable as exc:
                        failures[phase] += 1
                        messages.add(re.sub(r"sample \d+", "sample N", exc.message))
                        pending.append(annotation)
                during = media_audit(volume.path, dataset)
            records_during = AnnotationRecord.objects.filter(task__round=_round).count()
            fixed_at = time.perf_counter()
            volume.read_only(False)
            volume.free()
            for annotation in pending:  # what reconciliation does once the volume takes writes again
                annotation_ingest(annotation)
            seconds_to_recover = time.perf_counter() - fixed_at
            audit = media_audit(volume.path, dataset)
            wrong = 0
            without = 0
            for task in tasks:
                row = Mask.objects.filter(sample_id=task.sample_id).order_by("-version").first()
                if row is None:
                    without += 1
                    continue
                stored = masks.read_mask_png(volume.path / row.path)
                wrong += int(not np.array_equal(stored, expected[task.sample_id]))
            lost = (
                without + wrong + len(audit["rows_missing_file"]) + len(audit["orphan_files"])
                + len(audit["temp_files"])
            )  # fmt: skip
            return {
                "recovered": lost == 0 and without == 0,
                "seconds_to_recover": round(seconds_to_recover, 3),
                "lost": lost,
                "annotations": count,
                "failed_while_full": failures["full"],
                "failed_while_read_only": failures["read_only"],
                "expected_failures": len(thirds[1]) + len(thirds[2]),
                "records_while_broken": records_during,
                "audit_while_broken": {k: (len(v) if isinstance(v, list) else v) for k, v in during.items()},
                "messages": sorted(messages),
                "filler_bytes": filled,
                "masks_without_file": len(audit["rows_missing_file"]),
                "orphan_files": len(audit["orphan_files"]),
                "temp_files": len(audit["temp_files"]),
                "wrong_masks": wrong,
                "normal_ms_per_mask": round(1000 * normal_s / max(1, len(thirds[0])), 2),
                "volume_kib": volume.size_kib,
            }
        finally:
            connections.close_all()
