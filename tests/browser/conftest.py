"""Headless Chromium (Debian's, never a downloaded one) and live server processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connections

from tests.cluster import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int | None:
    """The status of GET `url` (redirects not followed), None when nothing answers."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class Process:
    """A `manage.py` subprocess in its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


class WebServer(Process):
    """`manage.py runserver` on a free port: settings of its own (the emulator's URLs,
    which allauth reads at import) on the test database."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            ["manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"], env, log_path
        )

    def wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while http_status(self.url + "/accounts/login/") != 200:
            if self.process.poll() is not None:
                raise AssertionError(f"runserver exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"runserver did not answer in {timeout} s:\n{self.output()}")
            time.sleep(0.2)


@pytest.fixture
def web_server(tmp_path):
    """Start with `web_server(env)`; killed at the end of the test, before the
    database is flushed (or dropped, which PostgreSQL refuses while it is connected)."""
    started: list[WebServer] = []

    def start(env: dict[str, str]) -> WebServer:
        server = WebServer(env, tmp_path / f"runserver-{len(started)}.log")
        started.append(server)
        server.wait_until_ready()
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def browser(monkeypatch):
    if not os.access(CHROMIUM, os.X_OK):
        message = f"Debian's Chromium is not installed ({CHROMIUM}): apt-get install chromium"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(message)  # CI installs it: its absence there is a failure
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, and Django then refuses
    # ORM calls from the test ("async context"): they are not async here, allow them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # While Playwright runs, the test's ORM calls get connections of their own
            # (Django's connections are context-local): close them here, in that
            # context, or PostgreSQL refuses to drop the test database at the end.
            connections.close_all()


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """docs/screenshots with UPDATE_SCREENSHOTS=1, else a temporary directory: tests
    must not change the working tree."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    path = tmp_path / "screenshots"
    path.mkdir()
    return path


def console_page(browser, server_url: str, username: str, password: str, viewport: dict):
    """A browser page signed in to the operator console, on its index."""
    page = browser.new_context(viewport=viewport).new_page()
    page.set_default_timeout(20_000)
    page.goto(server_url + "/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click('input[type="submit"]')
    page.wait_for_url(server_url + "/admin/")
    return page
