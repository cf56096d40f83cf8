"""Debian's Chromium driven by Selenium through Debian's chromedriver (``chromium`` and
``chromium-driver``, one source, so their versions always match): nothing is downloaded at test
time (Selenium Manager is told to stay offline and is never needed, the paths being given).
Where they are not installed the browser tests are skipped, except where
``S360BRIDGE_TEST_BROWSER=required`` (.ci/run installs them and sets it): there their absence
is a failure."""

from __future__ import annotations

import base64
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextmanager
def chromium(credentials: tuple[str, str] | None = None, screenshots: Path | None = None):
    """A headless Chromium; with ``credentials``, every request it makes carries them (basic
    authentication, as a browser that was asked would)."""
    if not (CHROMIUM and DRIVER):
        if os.environ.get("S360BRIDGE_TEST_BROWSER") == "required":
            pytest.fail("chromium and chromium-driver are not installed (.ci/run installs them)")
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        if credentials:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                                   {"headers": {"Authorization": f"Basic {token}"}})
        driver.screenshots = screenshots
        yield driver
    finally:
        driver.quit()


def snap(driver, name: str) -> None:
    """A screenshot of the page, into the test's screenshots folder."""
    if driver.screenshots is not None:
        driver.screenshots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(driver.screenshots / f"{name}.png"))


def wait_for(driver, condition, what: str, timeout: float = 20):
    """Wait until ``condition(driver)`` holds on the page (a page still loading, with its
    elements not there yet or gone stale, or its script context gone, is a no); answer what
    it answered."""
    from selenium.common.exceptions import (
        JavascriptException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException, JavascriptException)).until(
            condition, what)


def page_text(driver) -> str:
    """The text the page shows, as WebDriver's element text gives it (a table's cells apart by
    a space), read in one step: no element handle that a page replacing itself could leave
    stale (Chromium then answers an "unknown error", not a stale one)."""
    shown = driver.execute_script("return document.body ? document.body.innerText : ''")
    return shown.replace("\t", " ").strip()


def shows(text: str):
    """The condition of a page whose text holds ``text``."""
    return lambda driver: text in page_text(driver)
