"""`instantsr demo`: the Gradio page's functions, and the page itself in a real headless Chromium (Debian's
chromium and chromium-driver; `.ci/run` installs them and sets INSTANTSR_REQUIRE_BROWSER=1, so that CI fails
rather than skips without them)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[demo]')")

from instantsr.demo import Models, build_demo, launch, model_options, upscale_files  # noqa: E402
from instantsr.evaluate import bicubic_baseline  # noqa: E402
from instantsr.io import read_image, save_image  # noqa: E402
from instantsr.pipeline import Upscaler  # noqa: E402

from .conftest import smooth_image  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lr" / "aitzgorri.png"


def test_upscale_files_writes_each_and_names_failures(model_dir, tmp_path):
    models = Models("cpu")
    save_image(smooth_image(24, 32, 0), tmp_path / "a.png")
    (tmp_path / "empty.png").write_bytes(b"")
    pair, outputs, status = upscale_files(models, [str(tmp_path / "a.png"), str(tmp_path / "empty.png")],
                                          str(model_dir), 1, 0, "none", tmp_path / "out")
    assert [Path(p).name for p in outputs] == ["a_x4.png"] and read_image(outputs[0]).rgb.shape == (3, 96, 128)
    assert pair[0].shape == pair[1].shape == (96, 128, 3) and pair[0].dtype == np.uint8
    assert status == "empty.png: empty file (0 bytes)"
    with pytest.raises(gr.Error, match="empty file"):
        upscale_files(models, [str(tmp_path / "empty.png")], str(model_dir), 1, 0, "none", tmp_path / "out")
    with pytest.raises(gr.Error, match="nowhere: not an instantsr model folder"):
        upscale_files(models, [str(tmp_path / "a.png")], str(tmp_path / "nowhere"), 1, 0, "none", tmp_path / "out")


def test_the_page_offers_steps_only_where_the_model_takes_them(model_dir):
    models = Models("cpu")
    steps, tile = model_options(models, "default")  # the shipped teacher: up to 15 steps
    assert steps["visible"] and steps["maximum"] == 15 and steps["value"] == 1 and tile["visible"]
    steps, tile = model_options(models, str(model_dir))  # a one-step student
    assert not steps["visible"] and tile["visible"]


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("INSTANTSR_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)")
        pytest.skip(f"no {', '.join(missing)}: apt-get install chromium chromium-driver (CI installs them)")
    os.environ["SE_OFFLINE"] = "true"  # selenium must not look for drivers on the network
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_a_photo_dropped_in_the_page_comes_back_upscaled_and_not_bicubic():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_demo("default", "cpu")
    launch(demo, port=port, block=False)
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{port}")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#images input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "#images input[type=file]").send_keys(str(EXAMPLE))
        wait.until(lambda b: "aitzgorri" in b.find_element(By.CSS_SELECTOR, "#images").text)
        browser.find_element(By.CSS_SELECTOR, "#upscale").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results a[href]"))
        status = browser.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")
        assert status == "1 upscaled"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#slider img")) == 2  # bicubic | instantsr
        if os.environ.get("INSTANTSR_DEMO_SCREENSHOT"):  # the README's picture
            browser.save_screenshot(os.environ["INSTANTSR_DEMO_SCREENSHOT"])
        href = browser.find_element(By.CSS_SELECTOR, "#results a[href]").get_attribute("href")
        with urllib.request.urlopen(href) as response:  # the download, as the browser would fetch it
            sr = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"), dtype=np.float32) / 255
    finally:
        browser.quit()
        demo.close()
    lr = read_image(EXAMPLE).rgb
    assert sr.shape == (4 * lr.shape[-2], 4 * lr.shape[-1], 3)
    bicubic = bicubic_baseline(lr, (4 * lr.shape[-2], 4 * lr.shape[-1])).permute(1, 2, 0).numpy()
    assert np.abs(sr - bicubic).mean() > 1 / 255  # the model's output, not an upsample
    cli = Upscaler.from_pretrained().upscale_tensor(lr[None], seed=0)[0].permute(1, 2, 0).numpy()
    assert np.abs(sr - cli).max() <= 0.5 / 255 + 1e-6  # what `instantsr upscale` writes, to 8-bit rounding
