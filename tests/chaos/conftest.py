"""Chaos tests: faults injected into the emulator while real qclusters sync, and the
mirror checked afterwards, with no command run after the fault clears."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.utils import timezone
from django_q.models import Schedule

from mailsync.schedules import ensure_schedules
from tests.cluster import ROOT

# messages.get and threads.get, plain or as batch parts: a Gmail outage.
MESSAGE_GET = r"^/gmail/v1/users/me/(messages|threads)/[0-9a-f]+$"


@pytest.fixture
def schedules():
    """The product's schedules (a transactional test starts from a flushed database),
    due at once, as after a deploy."""
    ensure_schedules(Schedule)
    Schedule.objects.update(next_run=timezone.now())


class Command:
    """A `manage.py` command running beside the test (an operator's terminal)."""

    def __init__(self, env: dict[str, str], *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout = self.stderr = ""

    def wait(self, timeout: float) -> int:
        try:
            self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.stdout, self.stderr = self.process.communicate()
            raise AssertionError(
                f"still running after {timeout} s\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}"
            ) from None
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process.poll() is None


@pytest.fixture
def command():
    started: list[Command] = []

    def start(env: dict[str, str], *args: str) -> Command:
        started.append(Command(env, *args))
        return started[-1]

    yield start
    for cmd in started:
        if cmd.running:
            cmd.process.kill()
            cmd.process.communicate()


def sleep_while(condition, seconds: float) -> None:
    """Sleep `seconds`, checking `condition` holds the whole time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition()
        time.sleep(0.5)
