"""A person's path through the real Label Studio UI: Debian Chromium driven by Playwright.

An annotator created in the platform logs into Label Studio, opens the round's task, picks the
"forgery" brush, paints a stroke on the face, submits; the webhook and the worker turn it into a Mask
row authored by that annotator, at the sample's resolution.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tests.e2e.dashboard_helpers import browser  # noqa: F401  (the one Chromium launch of the e2e tier)
from tests.labelstudio.lsfixtures import LS_URL, latest_mask, make_round, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


def test_annotator_draws_a_brush_stroke_and_the_mask_arrives(labeling_live, platform_media_root, browser):  # noqa: F811
    from django.contrib.auth import get_user_model

    from accounts.services import user_create
    from catalog.models import Mask
    from labeling.provisioning import annotator_provision, round_push_tasks
    from rounds.models import AnnotationTask

    client = labeling_live
    password = "Brush-Str0ke-e2e"
    # Provisioned with a known Label Studio password first; joining the annotator role afterwards
    # (which enqueues the automatic provisioning) then finds the account and leaves it as it is.
    email = f"painter-{uuid.uuid4().hex[:8]}@t.local"  # Label Studio's users outlive the test database
    user = get_user_model().objects.create_user(username="painter", email=email, password=password)
    annotator_provision(user_id=user.pk, password=password, client=client)
    user_create(username="painter", password=password, role="annotator", email=email, update=True)
    round_obj, samples = make_round(platform_media_root, name="browser", fakes=1, reals=0, size=(160, 120))
    round_push_tasks(round_id=round_obj.pk, client=client)
    task = AnnotationTask.objects.get(round=round_obj)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{LS_URL}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)
    page.goto(f"{LS_URL}/projects/{task.ls_project_id}/data?task={task.ls_task_id}")
    image = page.locator("img[src*='local-files'], .konvajs-content canvas").first
    image.wait_for(state="visible")
    page.locator(".lsf-label", has_text="forgery").first.click()
    box = page.locator(".konvajs-content").first.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x0 + step * box["width"] * 0.02, y0 + step * box["height"] * 0.01)
    page.mouse.up()
    page.get_by_role("button", name="Submit").click()

    row = wait_for(
        lambda: Mask.objects.filter(sample=samples[0], author=user).first(),
        timeout=60,
        what="the painted mask",
    )
    _, mask = latest_mask(platform_media_root, samples[0])
    assert row.source == Mask.Source.ANNOTATOR
    assert mask.shape == (120, 160) and mask.any() and mask.mean() < 0.5
    ys, xs = np.nonzero(mask)
    assert 0.2 * 160 < xs.mean() < 0.8 * 160  # the stroke sits where it was drawn, not at an edge
    page.close()
