"""A video dataset through the dashboard in Debian Chromium, against the live server and a real worker.

The admin imports a small Celeb-DF layout (synthetic videos, one of them corrupt) from the datasets page
with the video options, watches the progress (videos done / total, frames, faces, the failed video with
its reason), then opens the dataset: the gallery shows one row per video with its frames as a strip, the
frame view still works, and the imports table reports the job. Screenshots go to var/screenshots/.
"""

from __future__ import annotations

import pytest

from tests.e2e.dashboard_helpers import PASSWORD, browser, log_in, new_page, shot  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_admin_imports_a_video_dataset_and_browses_frames_by_video(
    browser,  # noqa: F811
    live_server,
    celery_worker_proc,
    platform_media_root,
):
    from accounts.services import user_create
    from catalog.models import Dataset, Sample, Video
    from ml.data.synthvideo import make_celebdf

    layout = make_celebdf(
        platform_media_root / "e2e-celebdf", n_identities=2, frames=6, size=96, seed=21, youtube=2, corrupt=1
    )
    good = [v for v in layout.videos if v.kind == "ok"]
    user_create(username="e2e-video-admin", password=PASSWORD, role="admin")
    page = new_page(browser)
    log_in(page, live_server.url, "e2e-video-admin")

    page.goto(f"{live_server.url}/datasets/")
    assert page.locator("#video-options").is_hidden()  # manifest is the default format
    page.get_by_label("Dataset name").fill("e2e-videos")
    page.get_by_label("Source path").fill("e2e-celebdf")
    page.get_by_label("Format").select_option("celebdf")
    assert page.locator("#video-options").is_visible()
    page.get_by_label("Frames per video").fill("4")
    page.get_by_label("Face crop size (px)").fill("64")
    page.get_by_label("Videos per extraction task").fill("2")
    page.get_by_role("button", name="Import").click()
    page.locator("#import-status", has_text="Imported:").wait_for(timeout=120_000)

    counts = {
        node.locator("dt").inner_text(): node.locator("dd").inner_text()
        for node in page.locator("#import-videos > div").all()
    }
    assert counts["videos done"] == f"{len(good)} / {len(layout.videos)}"
    assert counts["failed"] == "1" and counts["pending"] == "0"
    dataset = Dataset.objects.get(name="e2e-videos")
    videos = Video.objects.filter(dataset=dataset)
    assert counts["frames"] == str(sum(v.frames_sampled for v in videos))
    assert counts["faces"] == str(sum(v.faces for v in videos))
    failed = videos.get(status="failed")
    failure = page.locator("#import-failed-videos li")
    assert failure.count() == 1
    assert failed.external_id in failure.inner_text() and failed.reason in failure.inner_text()
    assert page.evaluate("document.getElementById('import-progress').value") == 1
    shot(page, "datasets-video-import")

    # The gallery: one row per video that produced frames, each with its frames as a strip.
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    rows = page.locator(".video-row")
    assert rows.count() == len(good)
    for video in videos.filter(status="done"):
        row = page.locator(f'.video-row[data-video="{video.external_id}"]')
        assert row.locator(".strip .tile").count() == video.faces
        assert video.split in row.locator("h3").inner_text()
    assert page.locator("#imports tr[data-job]").count() == 1
    assert "1 failed" in page.locator("#imports").inner_text()
    shot(page, "dataset-videos")

    # Filters keep the grouping; the frame view lists every frame as a tile.
    page.get_by_label("Label").select_option("fake")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state("load")
    fakes = videos.filter(status="done", label="fake")
    assert page.locator(".video-row").count() == fakes.count()
    page.get_by_role("link", name="Show every frame as a tile").click()
    page.wait_for_load_state("load")
    assert (
        page.locator(".gallery .tile").count() == Sample.objects.filter(dataset=dataset, label="fake").count()
    )
    assert page.js_errors == []
