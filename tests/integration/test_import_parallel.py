"""The import's parallel, streamed path: rows checked in forked processes (several chunks), valid
chunks streamed into COPY while later ones are checked, and the all-or-nothing guarantee kept.

The in-process tests cut small manifests into chunks of 3 rows (``rowcheck.CHUNK_ROWS``) and fork 2
checking processes, then compare with the one-process path; the worker test imports 2,500 rows
(3 chunks of the real size) through the Celery worker process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import write_manifest_dataset, write_png

pytestmark = [pytest.mark.integration]


def _run(manifest: Path, name: str, *, workers: int, chunk_rows: int, monkeypatch, settings) -> tuple:
    from catalog import rowcheck
    from catalog.models import Sample
    from catalog.services import dataset_create, import_job_create, import_job_run

    monkeypatch.setattr(rowcheck, "CHUNK_ROWS", chunk_rows)
    settings.IMPORT_WORKERS = workers
    dataset = dataset_create(name=name)
    job = import_job_run(
        job_id=import_job_create(dataset=dataset, source=str(manifest), format="manifest").pk
    )
    samples = list(
        Sample.objects.filter(dataset=dataset)
        .order_by("pk")
        .values_list(
            "external_id", "path", "label", "split", "params", "region_targets", "landmarks", "sha256"
        )
    )
    return job, samples, dataset


@pytest.mark.django_db(transaction=True)
def test_parallel_chunks_import_exactly_what_one_process_imports(platform_media_root, monkeypatch, settings):
    manifest = write_manifest_dataset(platform_media_root / "par_ok", count=14)
    text = manifest.read_text().splitlines()
    manifest.write_text("\n".join(text[:5] + ["", "   "] + text[5:]) + "\n")  # blank lines are skipped
    settings.MEDIA_ROOT = platform_media_root
    one, rows_one, _ = _run(
        manifest, "par-one", workers=1, chunk_rows=1000, monkeypatch=monkeypatch, settings=settings
    )
    many, rows_many, dataset = _run(
        manifest, "par-many", workers=2, chunk_rows=3, monkeypatch=monkeypatch, settings=settings
    )
    assert one.status == many.status == "succeeded", (one.message, many.message)
    assert (many.inserted_rows, many.existing_rows, many.total_rows, many.processed_rows) == (14, 0, 14, 14)
    assert rows_many == rows_one and [r[0] for r in rows_many] == [
        f"s{i:04d}" for i in range(14)
    ]  # source order

    # Again, into the same dataset (not empty: the staging path), in parallel: nothing new.
    from catalog.services import import_job_create, import_job_run

    again = import_job_run(
        job_id=import_job_create(dataset=dataset, source=str(manifest), format="manifest").pk
    )
    assert (again.status, again.inserted_rows, again.existing_rows) == ("succeeded", 0, 14)


@pytest.mark.django_db(transaction=True)
def test_an_error_in_any_chunk_rolls_back_every_streamed_chunk(platform_media_root, monkeypatch, settings):
    from catalog.models import Sample

    directory = platform_media_root / "par_bad"
    manifest = write_manifest_dataset(directory, count=12)
    lines = manifest.read_text().splitlines()
    first = json.loads(lines[0])
    lines[7] = json.dumps({**json.loads(lines[7]), "label": "unsure"})  # chunk 3 (rows 7-9)
    lines.append(json.dumps({**first, "path": "images/0001.png"}))  # row 13: id of row 1, in the last chunk
    lines.append(json.dumps({**json.loads(lines[2]), "id": "fresh"}))  # row 14: path of row 3
    lines.append("{not json")  # row 15
    manifest.write_text("\n".join(lines) + "\n")
    settings.MEDIA_ROOT = platform_media_root
    job, rows, dataset = _run(
        manifest, "par-bad", workers=2, chunk_rows=3, monkeypatch=monkeypatch, settings=settings
    )
    assert job.status == "failed" and job.inserted_rows == 0 and rows == []
    assert not Sample.objects.filter(dataset=dataset).exists()
    found = {(e["row"], e["field"]) for e in job.errors}
    assert found == {(8, "label"), (13, "id"), (14, "path"), (15, "row")}, job.errors
    assert job.error_count == 4 and "4 of 15 rows are invalid" in job.message


def test_manifest_chunks_cover_every_row_once(tmp_path):
    """Byte ranges cut at line ends: reading each range gives the whole file's rows, numbered alike,
    blank and over-long lines included."""
    from catalog import sources

    lines = []
    for index in range(40):
        lines.append(json.dumps({"id": f"r{index}", "path": f"p{index}.png", "label": "real"}))
        if index % 7 == 0:
            lines.append("")
        if index % 11 == 5:
            lines.append('{"id": "long", "pad": "' + "x" * 300 + '"}')
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines))  # no newline at the end
    original = sources.MAX_LINE_BYTES
    sources.MAX_LINE_BYTES = 128
    try:
        whole = list(sources.manifest_rows(path))
        for size in (1, 3, 5, 100):
            ranges, total = sources.manifest_chunks(path, size)
            pieces = [
                row
                for a, b, first in ranges
                for row in sources.manifest_rows(path, start=a, end=b, first_number=first)
            ]
            assert pieces == whole and total == len(whole), size
            assert all(b > a for a, b, _ in ranges) and ranges[-1][1] == path.stat().st_size
    finally:
        sources.MAX_LINE_BYTES = original
    assert sum("__error__" in row for _, row in whole) == 4  # the over-long lines, reported per row


def _large_manifest(directory: Path) -> tuple[Path, list[dict]]:
    """2,500 rows = 3 chunks of 1,000 (hard links to 5 small images)."""
    images = [write_png(directory / "images" / f"base{i}.png", seed=i) for i in range(5)]
    rows = []
    for index in range(2500):
        target = directory / "images" / f"{index // 500}" / f"{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(images[index % 5], target)
        rows.append({"id": f"w{index:05d}", "path": target.relative_to(directory).as_posix(),
                     "label": ("real", "fake")[index % 2], "split": "train"})  # fmt: skip
    manifest = directory / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest, rows


@pytest.mark.django_db(transaction=True)
def test_a_large_import_through_the_worker_process(celery_worker_proc):
    """2,500 rows = 3 chunks of 1,000 in the worker process (2 cores: 2 checking processes)."""
    from catalog.models import Sample
    from catalog.services import dataset_create, import_job_create
    from workers.tasks.core import dataset_import_task

    manifest, rows = _large_manifest(celery_worker_proc.media_root / "par_worker")
    dataset = dataset_create(name="par-worker")
    job = import_job_create(dataset=dataset, source=str(manifest), format="manifest")
    dataset_import_task.apply_async(args=[job.pk], queue="cpu").get(timeout=120)
    job.refresh_from_db()
    assert (job.status, job.inserted_rows, job.processed_rows) == ("succeeded", 2500, 2500), job.message
    ids = list(Sample.objects.filter(dataset=dataset).order_by("pk").values_list("external_id", flat=True))
    assert ids == [row["id"] for row in rows]
    # The test worker is a solo pool with background threads: it checks in its own process, no fork.
    assert (
        f'"job": {job.pk}' in celery_worker_proc.log_tail()
        and '"workers": 1' in celery_worker_proc.log_tail()
    )


@pytest.mark.django_db(transaction=True)
def test_a_large_import_in_a_prefork_worker_forks_its_checkers(celery_worker_proc, tmp_path):
    """The deployments' ``cpu`` worker is a prefork pool: the task runs in a daemonic child process,
    single-threaded, so it forks its checkers (multiprocessing refuses children to a daemon unless the
    import lifts that rule; the demo's first import failed on exactly this). Same rows and order as the
    solo worker, and no checker outlives the import."""
    from bench.harness.processes import service_env, start_worker, stop_process, wait_worker_ready
    from catalog.models import Sample
    from catalog.services import dataset_create, import_job_create
    from tests.conftest import RUN_ID, _point_celery_at_test_broker
    from workers.tasks.core import dataset_import_task

    app, redis_url, prefix = _point_celery_at_test_broker()
    queue = f"cpu-prefork-{RUN_ID}"
    env = service_env(database_url=celery_worker_proc.database_url, media_root=celery_worker_proc.media_root,
                      redis_url=redis_url, prefix=prefix, LOG_LEVEL="INFO", IMPORT_WORKERS="2")  # fmt: skip
    log = tmp_path / "prefork.log"
    worker = start_worker(env, log, f"prefork-{RUN_ID}", queues=queue, pool=None, concurrency=1)
    try:
        wait_worker_ready(app, worker, queue=queue, timeout=120, log=log)
        manifest, rows = _large_manifest(celery_worker_proc.media_root / "par_prefork")
        dataset = dataset_create(name="par-prefork")
        job = import_job_create(dataset=dataset, source=str(manifest), format="manifest")
        dataset_import_task.apply_async(args=[job.pk], queue=queue).get(timeout=180)
        job.refresh_from_db()
        text = log.read_text(errors="replace")
        assert (job.status, job.inserted_rows, job.processed_rows) == ("succeeded", 2500, 2500), (
            job.message + text[-3000:]
        )
        ids = list(
            Sample.objects.filter(dataset=dataset).order_by("pk").values_list("external_id", flat=True)
        )
        assert ids == [row["id"] for row in rows]
        assert f'"job": {job.pk}' in text and '"workers": 2' in text  # forked: two checking processes
        # The checkers are gone once the import is done: the prefork child has no children left.
        children = _children_of_children(worker.pid)
        assert children == [], children
    finally:
        stop_process(worker)


def _children_of_children(pid: int) -> list[int]:
    """Grandchildren of ``pid`` (the prefork pool's children's own children), from /proc."""

    def children(of: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{of}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return found

    return [grandchild for child in children(pid) for grandchild in children(child)]
