"""`manage.py demo` (what `make demo` runs) starts everything and stops everything."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.browser.conftest import free_port, http_status
from tests.cluster import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc"),
]


def processes_with(marker: str) -> dict[int, str]:
    """pid -> command line of the processes whose environment holds `marker`: the
    demo's whole tree, orphans included."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found[int(entry.name)] = cmdline
    return found


class Demo:
    """`manage.py demo` on free ports and a temporary SQLite file."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.marker = f"DEMO_TEST_MARKER={uuid.uuid4().hex}"
        self.log_path = tmp_path / "demo.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSYNC_", "Q_"))}
        env.pop("REDIS_URL", None)
        env.update(
            DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
            DEMO_TEST_MARKER=self.marker.split("=", 1)[1],
            LOG_LEVEL="WARNING",
        )
        args = ["--port", str(self.port), "--emulator-port", "0", "--messages", "200"]
        args += ["--log-dir", str(tmp_path / "logs")]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "demo", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def wait_until_ready(self) -> None:
        """The admin login page answers and the banner is out (it comes just after)."""
        deadline = time.monotonic() + 90
        while (
            http_status(f"http://127.0.0.1:{self.port}/admin/login/") != 200
            or "Press Ctrl-C" not in self.output()
        ):
            assert self.process.poll() is None, (
                f"exited ({self.process.returncode}):\n{self.output()}"
            )
            assert time.monotonic() < deadline, f"no admin login page after 90 s:\n{self.output()}"
            time.sleep(0.3)

    def children(self) -> dict[int, str]:
        return processes_with(self.marker)

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 5  # a process that is exiting may linger briefly
        while (left := self.children()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running after the demo stopped: {left}\n{self.output()}"

    def clean_up(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for pid in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def demo(tmp_path):
    started = Demo(tmp_path)
    yield started
    started.clean_up()


def test_demo_starts_everything_and_sigint_stops_everything(demo):
    demo.wait_until_ready()
    # The home page sends a visitor to sign in (with Google).
    assert http_status(f"http://127.0.0.1:{demo.port}/") == 302
    commands = " | ".join(demo.children().values())
    for part in ("gmail_emulator", "manage.py qcluster", "manage.py runserver"):
        assert part in commands
    text = demo.output()
    assert "user admin  password " in text
    assert f"http://127.0.0.1:{demo.port}/admin/" in text

    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=25) == 0, demo.output()
    demo.assert_nothing_left()
    assert "Demo stopped" in demo.output()


def test_a_child_that_dies_stops_the_demo_with_its_last_lines(demo):
    demo.wait_until_ready()
    web = next(pid for pid, cmd in demo.children().items() if "manage.py runserver" in cmd)
    os.kill(web, signal.SIGKILL)

    assert demo.process.wait(timeout=25) != 0
    demo.assert_nothing_left()
    text = demo.output()
    assert "web stopped unexpectedly (exit code -9)" in text, text
    assert "Its last lines" in text
