"""Annotators get into the real Label Studio the way a person does, in Debian Chromium (Playwright).

No back door: the admin creates the first annotator on the dashboard's Users page and the second through
the users API; each annotator logs into the platform, follows exactly what the queue page shows them
(the invite link and the email to sign up with), creates their own Label Studio password, comes back and
presses "I have signed up", opens the next task from the queue, corrects the draft with the brush and
submits. The webhook and the worker turn each stroke into a Mask row authored by that annotator, the
queue's counts move, and with ``annotators_per_task = 2`` the two masks' agreement appears on the
annotation page. The test never calls the platform's account provisioning.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from bench.harness.waits import wait_until
from tests.e2e.dashboard_helpers import browser, log_in, new_page  # noqa: F401  (one Chromium per module)
from tests.labelstudio.lsfixtures import LS_URL, make_round

pytestmark = [pytest.mark.e2e, pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


def _join_label_studio(page, email: str, password: str) -> None:
    """On the queue page: follow the invite link, sign up, come back and link the account."""
    card = page.locator("#onboarding")
    assert card.get_attribute("data-status") == "invited"
    assert page.locator("#invite-email").inner_text() == email
    with page.context.expect_page() as opened:
        page.locator("#invite-link").click()
    signup = opened.value
    signup.wait_for_load_state("load")
    assert signup.url.startswith(f"{LS_URL}/user/signup/")
    signup.fill("input[name=email]", email)
    signup.fill("input[name=password]", password)
    signup.locator("button[type=submit], input[type=submit]").first.click()
    signup.wait_for_url(lambda url: "/user/signup" not in url)  # signed up and logged in
    signup.close()
    page.get_by_role("button", name="I have signed up").click()
    page.wait_for_selector("#onboarding[data-status=joined]")


def _paint_next_task(page, offset: float) -> None:
    """From the queue page: open the next task in Label Studio, brush a stroke over the draft, submit."""
    with page.context.expect_page() as opened:
        page.locator("[data-next-task]").first.click()
    ls = opened.value
    ls.set_default_timeout(60_000)
    image = ls.locator("img[src*='local-files'], .konvajs-content canvas").first
    image.wait_for(state="visible")
    # The project's instructions open before labeling (what counts as the forged region): read, close.
    instructions = ls.locator(".lsf-modal-ls_visible")
    instructions.wait_for(state="visible")
    assert "Paint every pixel that was manipulated" in instructions.inner_text()
    ls.get_by_role("button", name="Close modal").first.click()
    instructions.wait_for(state="hidden")
    ls.locator(".lsf-label", has_text="forgery").first.click()
    box = ls.locator(".konvajs-content").first.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * (0.3 + offset), box["y"] + box["height"] * 0.4
    ls.mouse.move(x0, y0)
    ls.mouse.down()
    for step in range(1, 21):
        ls.mouse.move(x0 + step * box["width"] * 0.02, y0 + step * box["height"] * 0.01)
    ls.mouse.up()
    ls.locator("[data-testid=bottombar-submit-button]").or_(
        ls.get_by_role("button", name="Submit", exact=True)
    ).first.click()
    return ls


def _counts(page, round_id: int) -> dict[str, int]:
    section = page.locator(f"section[data-round='{round_id}']")
    return {k: int(section.locator(f"[data-count={k}]").inner_text()) for k in ("todo", "done", "skipped")}


def test_two_annotators_join_label_studio_paint_and_agree(
    labeling_live,
    live_server,
    platform_media_root,
    browser,  # noqa: F811
):
    from rest_framework.test import APIClient

    from accounts.services import user_create
    from catalog.models import Mask
    from labeling.models import AnnotatorAccount, SampleAgreement
    from workers.tasks.labeling import round_push_tasks_task

    base = live_server.url
    tag = uuid.uuid4().hex[:6]  # Label Studio's users outlive the test database
    admin_password = "Admin-browser-pass-1"
    user_create(username=f"boss-{tag}", password=admin_password, role="admin", email=f"boss-{tag}@t.local")
    round_obj, samples = make_round(
        platform_media_root, name=f"browser-{tag}", fakes=1, reals=0, size=(160, 120),
        config={"annotators_per_task": 2},
    )  # fmt: skip
    round_push_tasks_task.delay(round_obj.pk).get(timeout=120)  # the worker pushes the round's tasks

    # The admin adds the first annotator on the Users page.
    admin_page = new_page(browser)
    log_in(admin_page, base, f"boss-{tag}", admin_password)
    admin_page.goto(f"{base}/users/")
    first = {"username": f"paula-{tag}", "email": f"paula-{tag}@t.local", "password": "Platform-pass-1"}
    admin_page.fill("#user-username", first["username"])
    admin_page.fill("#user-email", first["email"])
    admin_page.fill("#user-password", first["password"])
    admin_page.select_option("#user-role", "annotator")
    admin_page.get_by_role("button", name="Add user").click()
    admin_page.wait_for_selector(f"tr[data-user='{first['username']}']")
    # ... and the second through the API.
    api = APIClient()
    assert api.login(username=f"boss-{tag}", password=admin_password)
    second = {"username": f"omar-{tag}", "email": f"omar-{tag}@t.local", "password": "Platform-pass-2"}
    assert api.post("/api/v1/users/", {**second, "role": "annotator"}, format="json").status_code == 201
    wait_until(
        lambda: AnnotatorAccount.objects.filter(user__username__in=[first["username"], second["username"]], status="invited").count() == 2, 60,
        what="both invitations",
    )  # fmt: skip

    for index, person in enumerate((first, second)):
        page = new_page(browser, width=1400, height=1000)
        log_in(page, base, person["username"], person["password"])
        page.goto(f"{base}/annotation/")
        _join_label_studio(page, person["email"], f"My-own-LS-pass-{index}")
        assert _counts(page, round_obj.pk) == {"todo": 1, "done": 0, "skipped": 0}
        assert "Paint every pixel that was manipulated" in page.locator("#instruction").inner_text()
        ls = _paint_next_task(page, offset=0.05 * index)
        row = wait_until(
            lambda person=person: Mask.objects.filter(sample=samples[0], author__username=person["username"]).first(),
            timeout=90, what=f"the mask painted by {person['username']}",
        )  # fmt: skip
        assert row.source == Mask.Source.ANNOTATOR
        ls.close()
        page.reload()
        assert _counts(page, round_obj.pk) == {"todo": 0, "done": 1, "skipped": 0}
        page.context.close()

    agreement = wait_until(
        lambda: SampleAgreement.objects.filter(round=round_obj, sample=samples[0], annotators=2).first(),
        timeout=60, what="the two annotators' agreement",
    )  # fmt: skip
    assert 0.0 < agreement.mean_iou <= 1.0  # two strokes in nearly the same place overlap
    consensus = Mask.objects.get(pk=agreement.consensus_mask_id)
    from PIL import Image

    drawn = np.asarray(Image.open(platform_media_root / consensus.path).convert("L")) >= 128
    assert drawn.shape == (120, 160) and drawn.any()
    admin_page.goto(f"{base}/annotation/")
    table = admin_page.locator("section", has_text="Agreement between annotators")
    assert samples[0].external_id in table.inner_text()
    admin_page.goto(f"{base}/users/")
    for person in (first, second):
        status = admin_page.locator(f"tr[data-user='{person['username']}'] [data-ls-status]")
        assert status.get_attribute("data-ls-status") == "joined"
    admin_page.context.close()
