"""A report as a picture: open it in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium), optionally hover one front member, and save a PNG. Used by the report's browser test and by
``experiments/report_screenshot.py``; needs ``pip install selenium`` and the two Debian packages."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ddsm.errors import DDSMError

#: flags for a machine with a closed network: no background connections, no first-run work, root allowed
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def browser_paths() -> tuple[Path, Path] | None:
    """Chromium and ChromeDriver on this machine, or None."""
    found = [shutil.which(n) or f"/usr/bin/{n}" for n in ("chromium", "chromedriver")]
    return (Path(found[0]), Path(found[1])) if all(Path(p).is_file() for p in found) else None


def headless_chromium(width: int = 1400, height: int = 1600):
    """A Selenium driver of headless Chromium (the caller quits it); a one-line DDSMError if there is none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise DDSMError("a screenshot needs selenium: pip install selenium") from None
    paths = browser_paths()
    if paths is None:
        raise DDSMError("no headless browser here: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(paths[0])
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        opts.add_argument(flag)
    # the driver named explicitly: Selenium Manager would otherwise try to download one
    return webdriver.Chrome(service=Service(str(paths[1])), options=opts)


def wait_ready(driver, timeout: float = 30.0) -> None:
    """Wait until the report's script has drawn every panel (it sets ``body[data-ready]``)."""
    deadline = time.monotonic() + timeout
    while not driver.execute_script("return document.body.dataset.ready"):
        if time.monotonic() > deadline:
            raise DDSMError(f"the report did not finish drawing in {timeout:g} s")
        time.sleep(0.1)


def front_points(driver) -> list:
    """The drawn points of the front trace, cheapest first."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#front .scatterlayer .trace.tracefront path.point")


def hover_member(driver, rank: int, timeout: float = 10.0) -> str:
    """Move the mouse onto front member ``rank`` (1 = cheapest); the detail panel's heading once it shows it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ActionChains(driver).move_to_element(front_points(driver)[rank - 1]).perform()
    deadline = time.monotonic() + timeout
    while True:
        text = driver.find_element(By.ID, "detail-rank").text
        if text.startswith(f"#{rank} of") or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def screenshot(report: str | Path, png: str | Path, *, rank: int | None = None) -> Path:
    """Save a PNG of ``report`` (hovering front member ``rank`` first, if given)."""
    driver = headless_chromium()
    try:
        driver.get(Path(report).resolve().as_uri())
        wait_ready(driver)
        if rank is not None:
            hover_member(driver, rank)
        driver.save_screenshot(str(png))
    finally:
        driver.quit()
    return Path(png)
