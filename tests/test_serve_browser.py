"""The page of ``attngan-fast serve`` in a real browser: Debian's chromium, headless, driven by
selenium through chromedriver. It types a caption, clicks Generate, waits for the images, checks
that every stage image and attention map rendered (not blank) and saves a screenshot (to
$ATTNGAN_SERVE_SCREENSHOT when set, e.g. docs/serve_screenshot.png).

Skipped where chromium / chromedriver are missing, except in CI (CI=true), where that fails.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve_helpers import IN_CI, need, serve_load

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# Every canvas-readable picture on the page: its size and how many distinct grey levels it holds.
PIXELS_JS = """
return Array.from(document.querySelectorAll(arguments[0])).map((img) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (!c.width) return [0, 0, 0];
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const levels = new Set();
  for (let i = 0; i < d.length; i += 4) levels.add(d[i] + 256 * d[i + 1] + 65536 * d[i + 2]);
  return [c.width, c.height, levels.size];
});
"""


def _browser(tmp_path: Path):
    webdriver = need("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        message = f"needs chromium and chromedriver (apt-get install chromium chromium-driver): missing {missing}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1100,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_the_page_generates_and_shows_every_stage_and_the_attention(original_files, tmp_path, monkeypatch):
    need("fastapi"), need("uvicorn")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must not look for drivers on the network
    paths, *_ = original_files
    with serve_load().serve_process(paths) as url:
        driver = _browser(tmp_path)
        try:
            driver.get(url + "/")
            state = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
            WebDriverWait(driver, 60).until(lambda d: state(d) == "ready")
            caption = driver.find_element(By.ID, "caption")
            caption.clear()
            caption.send_keys("A bird with red wings and a purple tail")
            for field, value in (("seed", "3"), ("num", "2")):
                box = driver.find_element(By.ID, field)
                box.clear()
                box.send_keys(value)
            driver.find_element(By.ID, "generate").click()
            WebDriverWait(driver, 120).until(lambda d: state(d) in ("done", "error"))
            assert state(driver) == "done", driver.find_element(By.ID, "status").text

            stages = driver.execute_script(PIXELS_JS, "img.stage-img")
            maps = driver.execute_script(PIXELS_JS, ".att-cell img")
            figures = driver.execute_script(PIXELS_JS, ".figure img")
            assert sorted(s[:2] for s in stages) == [[64, 64]] * 2 + [[128, 128]] * 2  # 2 copies x 2 stages
            words = ["a", "bird", "with", "red", "wings", "and", "a"]
            assert len(maps) == 2 * len(words) and all(m[:2] == [64, 64] for m in maps)
            assert len(figures) == 2
            # images not blank; a map is drawn (an untrained G attends almost uniformly: one grey level)
            assert all(levels > 16 for *_, levels in stages + figures) and all(m[2] >= 1 for m in maps), \
                (stages, maps, figures)
            grid = driver.find_elements(By.CSS_SELECTOR, "table.attention-grid td.att-cell")
            assert [cell.text for cell in grid[: len(words)]] == words
            unknown = [s.text for s in driver.find_elements(By.CSS_SELECTOR, ".unknown span")]
            assert unknown == ["purple", "tail"]
            shot = Path(os.environ.get("ATTNGAN_SERVE_SCREENSHOT") or tmp_path / "serve_screenshot.png")
            driver.set_window_size(1100, driver.execute_script("return document.body.scrollHeight") + 40)
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        finally:
            driver.quit()
