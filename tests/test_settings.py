"""Starting with bad configuration: one line on stderr naming the variable, no traceback.
And the safe defaults: DEBUG off, no known key, `check --deploy` clean in production."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests.cluster import database_url

ROOT = Path(__file__).resolve().parent.parent
# Variables a developer's shell may set that would change what a test means.
_UNSET = {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "TOKEN_ENCRYPTION_KEYS"}


def production_env() -> dict[str, str]:
    """What a production deploy sets (README, "Production")."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "GOOGLE_CLIENT_ID": "id.apps.googleusercontent.com",
        "GOOGLE_CLIENT_SECRET": "secret",
        "ALLOWED_HOSTS": "mail.example.com",
    }


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in _UNSET}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_naming(result: subprocess.CompletedProcess, named: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SECRET_KEY"),  # DEBUG is off by default: no development key then
        ({"DEBUG": "false"}, "SECRET_KEY"),
        ({"DEBUG": "false", "SECRET_KEY": "x" * 50}, "TOKEN_ENCRYPTION_KEYS"),
        (
            {
                "DEBUG": "false",
                "SECRET_KEY": "x" * 50,
                "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            },
            "GOOGLE_CLIENT_ID",
        ),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DEBUG": "true", "TOKEN_ENCRYPTION_KEYS": "not-a-key"}, "TOKEN_ENCRYPTION_KEYS"),
        ({"DEBUG": "true", "DATABASE_URL": "garbage"}, "DATABASE_URL"),
        ({"DEBUG": "true", "DATABASE_URL": "mysql-ish:nonsense"}, "DATABASE_URL"),
        ({"DEBUG": "true", "DATABASE_URL": "postgres://u:pw@h:99999/x"}, "DATABASE_URL"),
        ({"DEBUG": "true", "REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"DEBUG": "true", "REDIS_URL": "redis://127.0.0.1:port/0"}, "REDIS_URL"),
        ({"DEBUG": "true", "REDIS_URL": "redis://127.0.0.1:70000/0"}, "REDIS_URL"),
        ({"DEBUG": "true", "GMAIL_EMULATOR_URL": "ftp://x"}, "GMAIL_EMULATOR_URL"),
        ({"DEBUG": "true", "MAILSYNC_BATCH_SIZE": "many"}, "MAILSYNC_BATCH_SIZE"),
        ({"DEBUG": "true", "MAILSYNC_BATCH_SIZE": "500"}, "MAILSYNC_BATCH_SIZE"),
        (
            {"DEBUG": "true", "MAILSYNC_RETRY_BACKOFF_SECONDS": "-1"},
            "MAILSYNC_RETRY_BACKOFF_SECONDS",
        ),
        (
            {"DEBUG": "true", "MAILSYNC_RETRY_BACKOFF_SECONDS": "soon"},
            "MAILSYNC_RETRY_BACKOFF_SECONDS",
        ),
        ({"DEBUG": "true", "SECURE_PROXY_SSL_HEADER": "X Forwarded"}, "SECURE_PROXY_SSL_HEADER"),
        ({"DEBUG": "true", "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        (
            {"DEBUG": "true", "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,not-a-network"},
            "METRICS_ALLOWED_NETWORKS",
        ),
        (
            {"DEBUG": "true", "HEALTH_HEARTBEAT_MAX_AGE_SECONDS": "soon"},
            "HEALTH_HEARTBEAT_MAX_AGE_SECONDS",
        ),
        ({"DEBUG": "true", "MAILSYNC_OUTAGE_RETRY_SECONDS": "-5"}, "MAILSYNC_OUTAGE_RETRY_SECONDS"),
        (
            {"DEBUG": "true", "MAILSYNC_CONCURRENT_REQUESTS_PER_USER": "0"},
            "MAILSYNC_CONCURRENT_REQUESTS_PER_USER",
        ),
        (
            {"DEBUG": "true", "MAILSYNC_QUOTA_WINDOW_SECONDS": "0"},
            "MAILSYNC_QUOTA_WINDOW_SECONDS",
        ),
        ({"DEBUG": "true", "GMAIL_PUSH_TOPIC": "my-topic"}, "GMAIL_PUSH_TOPIC"),
        ({"DEBUG": "true", "GMAIL_PUSH_TOPIC": "projects/p/topics/t"}, "GMAIL_PUSH_AUDIENCE"),
        (
            {
                "DEBUG": "true",
                "GMAIL_PUSH_TOPIC": "projects/p/topics/t",
                "GMAIL_PUSH_AUDIENCE": "https://mail.example.com/gmail/push/",
            },
            "GMAIL_PUSH_SERVICE_ACCOUNT",
        ),
        (
            {"DEBUG": "true", "MAILSYNC_PUSH_FALLBACK_MINUTES": "0"},
            "MAILSYNC_PUSH_FALLBACK_MINUTES",
        ),
    ],
)
def test_bad_configuration_stops_the_start_with_one_line_naming_it(env, named):
    assert_one_line_naming(run(["manage.py", "check"], **env), named)


def test_the_error_line_never_shows_a_password():
    result = run(["manage.py", "check"], DEBUG="true", DATABASE_URL="postgres://u:hunter2@h:0/x")

    assert_one_line_naming(result, "DATABASE_URL")
    assert "hunter2" not in result.stderr


def test_an_unreachable_database_is_one_line():
    closed = "postgres://postgres:hunter2@127.0.0.1:1/nothing"  # nothing listens on port 1

    result = run(["manage.py", "migrate"], DEBUG="true", DATABASE_URL=closed)

    assert_one_line_naming(result, "DATABASE_URL")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "99999"], "--port"),
        (["--port", "0"], "--port"),
        (["--emulator-port", "70000"], "--emulator-port"),
        (["--messages", "-5"], "--messages"),
    ],
)
def test_demo_refuses_bad_options_in_one_line(args, named):
    assert_one_line_naming(run(["manage.py", "demo", *args], DEBUG="true"), named)


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_wsgi_and_asgi_starts_are_one_line_too(module):
    script = ["-c", f"import {module}"]

    assert_one_line_naming(run(script, DEBUG="maybe"), "DEBUG")
    assert run(script, **production_env()).returncode == 0


def test_production_configuration_passes_check_deploy():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_secrets_are_generated_not_literals():
    """With DEBUG on and no keys, each checkout generates its own (git-ignored)."""
    code = "from django.conf import settings; print(settings.SECRET_KEY); print(settings.TOKEN_ENCRYPTION_KEYS[0])"
    result = run(["manage.py", "shell", "-c", code], DEBUG="true")

    assert result.returncode == 0, result.stderr
    secret_key, token_key = result.stdout.split()[-2:]
    dev = ROOT / ".dev-secrets"
    assert secret_key == (dev / "SECRET_KEY").read_text().strip()
    assert token_key == (dev / "TOKEN_ENCRYPTION_KEY").read_text().strip()
    assert len(secret_key) >= 50
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", ".dev-secrets"], cwd=ROOT, capture_output=True
    )
    assert tracked.returncode != 0  # not in the repository
    sources = "".join(p.read_text() for p in (ROOT / "config").glob("*.py"))
    assert secret_key not in sources


@pytest.mark.django_db
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PgBouncer's setting is PostgreSQL's"
)
def test_pooler_transaction_mode_turns_off_server_side_cursors_and_prepared_statements():
    """Behind PgBouncer in transaction mode: a real connection with neither (Django's
    psycopg backend never prepares statements; this keeps it so)."""
    script = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "connection.ensure_connection()\n"
        "print(connection.settings_dict['DISABLE_SERVER_SIDE_CURSORS'],"
        " connection.connection.prepare_threshold)\n"
        "for _ in range(10): connection.cursor().execute('SELECT 1 WHERE 1 = %s', [1])\n"
        "print(connection.connection.execute("
        "'SELECT count(*) FROM pg_prepared_statements').fetchone()[0])\n"
    )
    url = database_url()  # the suite's own PostgreSQL test database
    result = run(
        ["-c", script],
        DEBUG="true",
        DATABASE_URL=url,
        DATABASE_POOLER_TRANSACTION_MODE="true",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None", "0"]
    default = run(
        ["-c", script], DEBUG="true", DATABASE_URL=url, DJANGO_SETTINGS_MODULE="config.settings"
    )
    assert default.stdout.split() == ["False", "None", "0"], default.stderr
