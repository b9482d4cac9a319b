"""The dashboard's script helpers (frontend/static/frontend/app.js) in Debian Chromium, on a blank page:
API errors in words, the SVG charts, the heatmap colouring."""

from __future__ import annotations

import base64
import io

import pytest

from tests.e2e.dashboard_helpers import ROOT, browser, new_page  # noqa: F401

pytestmark = pytest.mark.e2e
APP_JS = ROOT / "frontend" / "static" / "frontend" / "app.js"


@pytest.fixture(scope="module")
def page(browser):  # noqa: F811
    page = new_page(browser)
    page.set_content("<!doctype html><html><body><div id='c'></div><p id='msg'></p></body></html>")
    page.add_script_tag(path=str(APP_JS))
    yield page
    assert page.js_errors == []


def test_api_errors_become_sentences(page):
    describe = "([body, status]) => FL.describe(body, status)"
    domain = {
        "detail": "Invalid round config.",
        "code": "invalid",
        "errors": {"epochs": "1..1000", "x": "Unknown option."},
    }
    assert (
        page.evaluate(describe, [domain, 400]) == "Invalid round config. epochs: 1..1000 x: Unknown option."
    )
    drf = {"password": ["Ensure this field has at least 8 characters."]}
    assert page.evaluate(describe, [drf, 400]) == "password: Ensure this field has at least 8 characters."
    assert page.evaluate(describe, [{"detail": "This action needs the admin role."}, 403]) == (
        "This action needs the admin role."
    )
    assert page.evaluate(describe, [None, 502]) == "The server answered 502."


def test_bar_chart_draws_one_bar_per_known_value(page):
    bars = page.evaluate(
        """() => {
            FL.barChart(document.getElementById("c"), [
                {label: "AUC seen", values: {lae: 0.8, sjedd: 0.6}},
                {label: "AUC unseen", values: {lae: 0.5, sjedd: null}},
            ], {title: "AUC"});
            return [...document.querySelectorAll("#c svg rect")].map((r) => +r.getAttribute("height"));
        }"""
    )
    assert len(bars) == 3  # the null value draws nothing
    assert bars[0] > bars[1] > bars[2] > 0
    assert page.locator("#c svg").get_attribute("role") == "img"
    assert page.locator("#c .legend").inner_text().split() == ["lae", "sjedd"]


def test_histogram_marks_the_selected_bins(page):
    classes = page.evaluate(
        """() => {
            FL.histogram(document.getElementById("c"), {edges: [0, .25, .5, .75, 1], counts: [4, 3, 2, 1], threshold: .6, title: "h"});
            return [...document.querySelectorAll("#c svg rect")].map((r) => r.getAttribute("class"));
        }"""
    )
    assert classes == ["series-0", "series-0", "series-1", "series-1"]
    assert page.locator("#c svg line.threshold").count() == 1


def test_heatmap_colouring_keeps_cold_pixels_clear_and_hot_ones_opaque_red(page):
    import numpy as np
    from PIL import Image

    gray = np.zeros((2, 2), np.uint8)
    gray[0, 0], gray[1, 1] = 255, 100
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    out = page.evaluate("(src) => FL.colorize(src)", url)
    assert out.startswith("data:image/png;base64,")
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(out.split(",", 1)[1]))).convert("RGBA"))
    assert tuple(rgba[0, 0]) == (255, 0, 0, 255)
    assert rgba[0, 1, 3] == 0  # zero heat: transparent
    assert 0 < rgba[1, 1, 3] < 255 and rgba[1, 1, 1] > 0  # partial heat: translucent, towards yellow


def test_mask_tint_marks_only_the_masked_pixels(page):
    import numpy as np
    from PIL import Image

    mask = np.zeros((2, 2), np.uint8)
    mask[0, 1] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    out = page.evaluate("(src) => FL.colorize(src, FL.MASK_TINT)", url)
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(out.split(",", 1)[1]))).convert("RGBA"))
    assert tuple(rgba[0, 1]) == (0, 120, 255, 160)
    assert rgba[0, 0, 3] == rgba[1, 0, 3] == rgba[1, 1, 3] == 0
