"""Headless Chromium for the browser tests (Debian's /usr/bin/chromium driven by Playwright).

`.ci/run` installs chromium when it is missing, so in CI these tests run; on a machine without
it they skip with the reason.
"""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("RNNLENS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Without the networking flags Chromium keeps trying Google's hosts, which this closed network refuses.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


# Every test module that imports these fixtures gets its own copy of the session fixture, and
# Playwright's sync API cannot run twice at once in one thread: the copies share one Chromium,
# closed when the last of them is torn down.
_SHARED: dict = {"users": 0}


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed: sudo apt-get install -y chromium")
    if not _SHARED["users"]:
        _SHARED["playwright"] = sync_api.sync_playwright().start()
        _SHARED["browser"] = _SHARED["playwright"].chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    _SHARED["users"] += 1
    try:
        yield _SHARED["browser"]
    finally:
        _SHARED["users"] -= 1
        if not _SHARED["users"]:
            _SHARED.pop("browser").close()
            _SHARED.pop("playwright").stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    yield pg
    context.close()
