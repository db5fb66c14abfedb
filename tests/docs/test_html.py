"""The built HTML docs, opened in headless Chromium: tutorials show their figures, the API lists sl.tl.autoencode.

Run by ``make docs-check`` after ``make docs``; the pages are read from ``$SCLATENT_DOCS_HTML``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

TUTORIALS = [
    "01_quickstart_pbmc3k",
    "02_batch_correction",
    "03_trajectories_paul15",
    "04_likelihoods_denoising",
    "05_donors_classification_mapping",
]


@pytest.fixture(scope="module")
def html() -> Path:
    path = os.environ.get("SCLATENT_DOCS_HTML")
    if not path or not (Path(path) / "index.html").is_file():
        pytest.fail(f"no built docs at SCLATENT_DOCS_HTML={path!r}; run `make docs` first")
    return Path(path).resolve()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("Chromium and ChromeDriver are needed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield browser
    browser.quit()


def _images(browser) -> list[dict]:
    """Every <img> of the main content: its source, whether it loaded, and its rendered size."""
    return browser.execute_script(
        """return Array.from(document.querySelectorAll('main img, article img')).map(img => ({
               src: img.getAttribute('src'), complete: img.complete,
               width: img.naturalWidth, shown: img.getBoundingClientRect().width}));"""
    )


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_page_shows_its_figures(html, browser, name):
    browser.get((html / "tutorials" / f"{name}.html").as_uri())
    images = _images(browser)
    assert len(images) >= 3, f"{name}: {len(images)} figures"
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 100 and i["shown"] > 100)]
    assert not broken, f"{name}: figures not shown: {broken}"
    text = browser.find_element("tag name", "main").text
    assert "In this tutorial you will learn" in text
    assert "Traceback" not in text
    assert "Error" not in browser.title


def test_api_page_lists_autoencode(html, browser):
    browser.get((html / "api.html").as_uri())
    links = {a.text.strip(): a.get_attribute("href") for a in browser.find_elements("css selector", "main a")}
    name = next((k for k in links if k.endswith("tl.autoencode")), None)
    assert name is not None, sorted(links)[:20]
    browser.get(links[name])
    signature = browser.find_element("id", "sclatent.tl.autoencode").text
    assert "autoencode" in signature
    assert "batch_key" in signature
    assert "obsm" in browser.find_element("tag name", "main").text


def test_benchmark_pages_show_their_plots(html, browser):
    for page in ("benchmarks/quality.html", "benchmarks/scale.html"):
        browser.get((html / page).as_uri())
        images = _images(browser)
        assert images, page
        assert all(i["width"] > 100 for i in images), page
