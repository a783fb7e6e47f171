"""`manage.py demo` (what `make demo` runs) starts everything and stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
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
    """`manage.py demo` on free ports and a SQLite file (a temporary one by default)."""

    def __init__(self, tmp_path: Path, database: Path | None = None, name: str = "demo"):
        self.port = free_port()
        self.marker = f"DEMO_TEST_MARKER={uuid.uuid4().hex}"
        self.log_path = tmp_path / f"{name}.log"
        self.database_url = f"sqlite:///{database or tmp_path / 'demo.sqlite3'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSYNC_", "Q_"))}
        env.pop("REDIS_URL", None)
        env.update(
            DATABASE_URL=self.database_url,
            DEMO_TEST_MARKER=self.marker.split("=", 1)[1],
            LOG_LEVEL="WARNING",
        )
        self.env = env
        args = ["--port", str(self.port), "--emulator-port", "0", "--messages", "200"]
        args += ["--log-dir", str(tmp_path / f"{name}-logs")]
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

    def emulator_url(self) -> str:
        return re.search(r"The Gmail emulator\s+(\S+)", self.output())[1]

    def manage(self, *args: str) -> str:
        """A `manage.py` command against this demo's database and emulator."""
        env = dict(self.env, GMAIL_EMULATOR_URL=self.emulator_url())
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def connect(self, email: str = "demo@example.com") -> None:
        """Connect a mailbox as signing in does, with the emulator's tokens."""
        with urllib.request.urlopen(self.emulator_url() + "_emulator/v1/mailboxes") as answer:
            listed = json.load(answer)
        mailboxes = listed if isinstance(listed, list) else listed["mailboxes"]
        token = next(m["refresh_token"] for m in mailboxes if m["email"] == email)
        self.manage("connect_gmail", email, "--refresh-token", token)

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
def demos(tmp_path):
    """Start demos with `demos.start(...)`; all are killed at the end."""
    started: list[Demo] = []

    class Starter:
        def start(self, **kwargs) -> Demo:
            demo = Demo(tmp_path, name=f"demo{len(started)}", **kwargs)
            started.append(demo)
            return demo

    yield Starter()
    for demo in started:
        demo.clean_up()


@pytest.fixture
def demo(demos):
    return demos.start()


def test_demo_starts_everything_and_ctrl_c_stops_everything_within_5_s(demo):
    demo.wait_until_ready()
    # The home page sends a visitor to sign in (with Google).
    assert http_status(f"http://127.0.0.1:{demo.port}/") == 302
    commands = " | ".join(demo.children().values())
    for part in ("gmail_emulator", "manage.py qcluster", "manage.py runserver"):
        assert part in commands
    text = demo.output()
    assert "user admin  password " in text
    assert f"http://127.0.0.1:{demo.port}/admin/" in text
    # Give the workers a full sync to be in the middle of: their tasks wait for Gmail's
    # quota, which is what made the stop take 15 s.
    demo.connect()
    demo.manage("sync_user", "demo@example.com", "--full")
    time.sleep(3)

    demo.process.send_signal(signal.SIGINT)
    started = time.monotonic()
    assert demo.process.wait(timeout=25) == 0, demo.output()
    seconds = time.monotonic() - started

    assert seconds < 5, f"stopped {seconds:.1f} s after Ctrl-C:\n{demo.output()}"
    demo.assert_nothing_left()
    assert "Demo stopped" in demo.output()


def test_a_second_demo_on_the_same_database_is_refused(demos, tmp_path):
    database = tmp_path / "shared.sqlite3"
    first = demos.start(database=database)
    first.wait_until_ready()
    password = re.search(r"user admin  password (\S+)", first.output())[1]

    second = demos.start(database=database)
    assert second.process.wait(timeout=30) == 1, second.output()

    text = second.output()
    assert "another demo is already running on this database" in text, text
    assert f"pid {first.process.pid}, http://127.0.0.1:{first.port}/" in text
    assert "DATABASE_URL=sqlite:///demo2.sqlite3" in text
    assert not second.children()  # it started nothing: no emulator, no workers
    # The first demo is untouched: still answering, its admin password still valid.
    assert first.process.poll() is None
    assert http_status(f"http://127.0.0.1:{first.port}/admin/login/") == 200
    assert "user admin  password" not in text
    assert password in first.output()


def test_a_restarted_demo_starts_with_a_mirror_of_its_new_emulator(demos, tmp_path):
    """The emulator is regenerated at every start: the previous run's mirror of its
    mailboxes (and their tokens, which the new emulator refuses) is forgotten."""
    database = tmp_path / "kept.sqlite3"
    first = demos.start(database=database)
    first.wait_until_ready()
    first.connect()
    first.manage("sync_user", "demo@example.com", "--full", "--wait")
    first.process.send_signal(signal.SIGINT)
    assert first.process.wait(timeout=25) == 0, first.output()

    again = demos.start(database=database)  # the lock was released
    again.wait_until_ready()

    assert "previous run's mirror of its\n  mailboxes was cleared (1 user)" in again.output()
    with contextlib.closing(sqlite3.connect(database)) as db:
        users = sorted(email for (email,) in db.execute("SELECT email FROM accounts_user"))
    assert users == ["admin@example.com"]


def test_a_child_that_dies_stops_the_demo_with_its_last_lines(demo):
    demo.wait_until_ready()
    web = next(pid for pid, cmd in demo.children().items() if "manage.py runserver" in cmd)
    os.kill(web, signal.SIGKILL)

    assert demo.process.wait(timeout=25) != 0
    demo.assert_nothing_left()
    text = demo.output()
    assert "web stopped unexpectedly (exit code -9)" in text, text
    assert "Its last lines" in text


def test_the_demo_runs_with_push_on_so_new_mail_arrives_in_seconds(demo):
    demo.wait_until_ready()
    demo.connect()
    demo.manage("sync_user", "demo@example.com", "--wait")  # the first sync, to its end
    database = sqlite3.connect(demo.database_url.removeprefix("sqlite:///"), timeout=30)

    def one(sql: str, *params) -> object:
        row = database.execute(sql, params).fetchone()
        return row[0] if row else None

    deadline = time.monotonic() + 30
    while one("SELECT push_state FROM accounts_user WHERE email = ?", "demo@example.com") != "on":
        assert time.monotonic() < deadline, f"no push watch\n{demo.output()}"
        time.sleep(0.5)
    request = urllib.request.Request(
        demo.emulator_url() + "_emulator/v1/mailboxes/demo@example.com/messages",
        data=json.dumps({"label_ids": ["INBOX", "UNREAD"]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        new_id = json.load(answer)["id"]
    inserted = time.monotonic()
    while not one(
        "SELECT COUNT(*) FROM mailsync_emailmessage WHERE gmail_id = ? AND internal_date IS NOT NULL",
        new_id,
    ):
        assert time.monotonic() - inserted < 15, f"the new mail did not arrive\n{demo.output()}"
        time.sleep(0.25)
    # No task failed (the dispatcher used to fail every minute on SQLite, issue 10).
    assert one("SELECT COUNT(*) FROM django_q_task WHERE success = 0") == 0
