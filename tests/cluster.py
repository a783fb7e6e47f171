"""Real `manage.py qcluster` subprocesses for tests whose behaviour depends on the broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def redis_test_url(offset: int = 0) -> str:
    """A Redis database for tests; TEST_REDIS_DB_BASE keeps parallel checkouts apart."""
    base = int(os.environ.get("TEST_REDIS_DB_BASE", "14"))
    return f"redis://127.0.0.1:6379/{(base + offset) % 16}"


def database_url() -> str:
    """The URL of the database the tests use right now (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def cluster_env(emulator, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSYNC_", "Q_"))}
    env.pop("REDIS_URL", None)
    env.update(
        DATABASE_URL=database_url(),
        GMAIL_EMULATOR_URL=emulator.base_url,
        GOOGLE_CLIENT_ID=emulator.client_id,
        GOOGLE_CLIENT_SECRET=emulator.client_secret,
        MAILSYNC_QUOTA_USER_PER_MINUTE=str(emulator.config.quota_user_per_minute),
        MAILSYNC_QUOTA_PROJECT_PER_MINUTE=str(emulator.config.quota_project_per_minute),
        MAILSYNC_TASK_MAX_SECONDS="20",
        Q_WORKERS="3",
        LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


def sync_user_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`manage.py sync_user` as an operator runs it, for its output and exit status."""
    return subprocess.run(
        [sys.executable, "manage.py", "sync_user", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Cluster:
    """One qcluster process group; stopped for sure at the end of the test."""

    def __init__(self, env: dict[str, str]):
        self.log = tempfile.NamedTemporaryFile(prefix="qcluster-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """Graceful: SIGTERM to the leader only (its workers finish their tasks)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self.kill()

    def close(self) -> None:
        self.kill()
        Path(self.log.name).unlink(missing_ok=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-5000:]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, clusters=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    logs = "\n".join(c.output() for c in clusters)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
