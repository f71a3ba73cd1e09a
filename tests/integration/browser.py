"""Headless Chromium through Selenium, with Debian's chromium and chromedriver
(installed by `make browser`, which `make test` runs; nothing is downloaded at
run time)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["chromium"]

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,760",
]


def _which(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        f"none of {names} is installed: run `make browser` "
        "(apt-get install chromium chromium-driver)"
    )


@contextmanager
def chromium(download_dir: Path) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium profile that saves downloads to ``download_dir``."""
    profile = tempfile.mkdtemp(prefix="mastery-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _which("chromium", "chromium-browser")
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
        },
    )
    driver = webdriver.Chrome(options=options, service=Service(_which("chromedriver")))
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(download_dir)},
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
