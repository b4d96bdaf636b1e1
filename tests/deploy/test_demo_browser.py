"""The demo page driven by a real headless Chromium (Debian's `chromium`, through Playwright).

Upload a synthetic image, press Segment, wait for the result; the legend names exactly the classes
`inference_model` predicts, and the output image differs from the input wherever a class is drawn
(it is the input blended with the class colours). A screenshot of the page is saved as a test
artifact in `$SEGACCEL_TEST_ARTIFACTS` (default `test-artifacts/` in the checkout, git-ignored).
Skipped only when no Chromium binary or no Playwright is installed.
"""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from demo_testing import serving
from export_testing import random_image
from PIL import Image

from segaccel.deploy import ExportedSegmentor
from segaccel.deploy.demo import build_demo
from segaccel.inference import inference_model
from segaccel.visualization import readable_overlay

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SEGACCEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (segaccel[dev])")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium binary on PATH (Debian: apt-get install chromium chromium-driver; .ci/run installs it)",
        allow_module_level=True,
    )


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("SEGACCEL_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_demo_in_a_real_browser(fcn_onnx, tmp_path):
    model = ExportedSegmentor(fcn_onnx)
    image = random_image(90, 130, 11)
    Image.fromarray(image).save(tmp_path / "synthetic.png")
    mask = inference_model(model, image).pred_sem_seg.data[0].numpy()
    expected_names = {model.id2label[int(i)] for i in np.unique(mask)}
    assert len(expected_names) > 1

    with serving(build_demo(model, title="segaccel browser test")) as url:
        with playwright.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),  # a fresh --user-data-dir
                executable_path=CHROMIUM,
                headless=True,
                args=FLAGS,
                viewport={"width": 1280, "height": 900},
            )
            try:
                page = context.new_page()
                page.goto(url, wait_until="domcontentloaded")
                page.locator("input[type=file]").first.set_input_files(str(tmp_path / "synthetic.png"))
                page.locator("#segaccel-segment").click()
                names = page.locator("#segaccel-legend .segaccel-name")
                names.first.wait_for(state="visible", timeout=120_000)
                shown = names.all_inner_texts()
                shares = page.locator("#segaccel-legend .segaccel-share").all_inner_texts()
                overlay_img = page.locator("#segaccel-overlay img").first
                overlay_img.wait_for(state="visible", timeout=60_000)
                response = page.request.get(overlay_img.get_attribute("src"))
                assert response.ok
                overlay = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
                screenshot = artifacts_dir() / "demo_browser.png"
                page.screenshot(path=str(screenshot), full_page=True)
                shutil.copy2(screenshot, tmp_path / "demo_browser.png")
            finally:
                context.close()

    assert set(shown) == expected_names and len(shown) == len(expected_names)
    assert sum(float(s.split()[0]) for s in shares) == pytest.approx(100, abs=0.05 * len(shares))
    assert overlay.shape == image.shape
    np.testing.assert_array_equal(overlay, readable_overlay(image, mask, model.palette, 0.5))
    drawn = (overlay != image).any(axis=2)
    assert drawn.mean() > 0.95  # every pixel has a class: almost all change (equal only by chance)
    assert screenshot.stat().st_size > 10_000
