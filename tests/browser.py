"""Headless Chromium for the browser tests (Debian's /usr/bin/chromium driven by Playwright).

A pytest plugin (conftest.py loads it): one browser per test session, shared by every module.

`.ci/run` installs chromium when it is missing and sets RNNLENS_REQUIRE_BROWSER=1, so in CI these
tests run or fail, never skip; on a developer's machine without chromium they skip with the reason.
"""

import contextlib
import os
import shutil

import pytest

CHROMIUM = os.environ.get("RNNLENS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Without the networking flags Chromium keeps trying Google's hosts, which this closed network refuses.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _missing(reason: str):
    """No browser: a failure where one is required (CI sets RNNLENS_REQUIRE_BROWSER=1), else a skip."""
    if os.environ.get("RNNLENS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser tests must run here, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[test]'")
    if not os.path.exists(CHROMIUM):
        _missing("chromium is not installed: sudo apt-get install -y chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    yield pg
    context.close()


@contextlib.contextmanager
def served(args: list[str], root, ready: str, env: dict | None = None):
    """`rnnlens serve ARGS --port P` in a process of its own, started with this checkout's code; yields the base
    URL once GET `ready` (a path under it) answers, and stops the server after. A server that dies or takes
    over 90 s to answer fails the test with its log."""
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    import rnnlens
    from rnnlens.explorer.server import free_port
    port = free_port()
    path = os.pathsep.join([str(Path(rnnlens.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    log = open(Path(root) / "serve.log", "w+")  # noqa: SIM115  closed below
    proc = subprocess.Popen([sys.executable, "-m", "rnnlens", "serve", *map(str, args), "--port", str(port)],
                            stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": path, **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(url + ready, timeout=30).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    log.seek(0)
                    pytest.fail(f"rnnlens serve did not start: {log.read()}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
