"""A missing or malformed required setting fails at start with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEBUG": "false"}, "SECRET_KEY"),
        ({"DEBUG": "false", "SECRET_KEY": "x" * 50}, "GOOGLE_CLIENT_ID"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DATABASE_URL": "mysql-ish:nonsense"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"GMAIL_EMULATOR_URL": "ftp://x"}, "GMAIL_EMULATOR_URL"),
        ({"MAILSYNC_BATCH_SIZE": "many"}, "MAILSYNC_BATCH_SIZE"),
        ({"MAILSYNC_BATCH_SIZE": "500"}, "MAILSYNC_BATCH_SIZE"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,not-a-network"}, "METRICS_ALLOWED_NETWORKS"),
        ({"HEALTH_HEARTBEAT_MAX_AGE_SECONDS": "soon"}, "HEALTH_HEARTBEAT_MAX_AGE_SECONDS"),
    ],
)
def test_bad_configuration_fails_naming_the_variable(env, named):
    result = _check(**env)
    assert result.returncode != 0
    assert named in result.stderr


def test_production_configuration_starts():
    result = _check(
        DEBUG="false",
        SECRET_KEY="x" * 50,
        GOOGLE_CLIENT_ID="id.apps.googleusercontent.com",
        GOOGLE_CLIENT_SECRET="secret",
    )
    assert result.returncode == 0, result.stderr
