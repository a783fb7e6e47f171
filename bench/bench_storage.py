"""Benchmark: bytes per message in PostgreSQL for each body policy.

For each MAILSYNC_MESSAGE_FORMAT (full, raw, metadata, minimal), and for full with
MAILSYNC_SEARCH_BODY_CHARS=0 (search on subject and addresses only), the same generated
mailbox is synced (inline, against the in-process emulator) into a scratch
PostgreSQL database, the mirror's tables are vacuumed, and their sizes (heap, TOAST and
every index) are divided by the number of messages. Prints one JSON line:

    .venv/bin/python bench/bench_storage.py --database-url postgres://postgres@127.0.0.1:5432/storage_bench [--messages 5000]

The database named in the URL (it must contain `bench`) is dropped and re-created.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, MAILSYNC_MESSAGE_FORMAT, MAILSYNC_SEARCH_BODY_CHARS)
POLICIES = (
    ("full", "full", 2000),
    ("full, search on subject and addresses only", "full", 0),
    ("raw", "raw", 2000),
    ("metadata", "metadata", 2000),
    ("minimal", "minimal", 2000),
)
EMAIL = "storage@example.com"
TABLES = {
    "messages": "mailsync_emailmessage",
    "label_links": "mailsync_messagelabel",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", required=True, help="postgres://.../NAME ('bench' in NAME)")
    p.add_argument("--messages", type=int, default=5000, help="mailbox size")
    return p.parse_args()


def recreate_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgres", "postgresql") or "bench" not in name:
        raise SystemExit(f"--database-url must be postgres://.../NAME with 'bench' in NAME: {url}")
    import psycopg

    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ.update(DATABASE_URL=url, DEBUG="true", LOG_LEVEL="WARNING", REDIS_URL="")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=os.environ, check=True
    )
    import django

    django.setup()


def table_bytes(cursor, table: str) -> dict[str, int]:
    cursor.execute(
        "SELECT pg_relation_size(%s), pg_total_relation_size(%s) - pg_relation_size(%s)"
        " - pg_indexes_size(%s), pg_indexes_size(%s)",
        [table] * 5,
    )
    heap, toast, indexes = cursor.fetchone()
    return {"heap": heap, "toast": toast, "indexes": indexes, "total": heap + toast + indexes}


def measure(message_format: str, search_body_chars: int, count: int) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from accounts.google import connect_google_account
    from gmail_emulator import Emulator, EmulatorConfig
    from mailsync import sync
    from mailsync.fields import decompress
    from mailsync.models import EmailMessage

    settings.MAILSYNC_MESSAGE_FORMAT = message_format
    settings.MAILSYNC_SEARCH_BODY_CHARS = search_body_chars
    get_user_model().objects.filter(email=EMAIL).delete()  # the same mailbox, from scratch
    emulator = Emulator(EmulatorConfig(quota_user_per_minute=10**9, seed=7))
    with emulator.serve() as base_url:
        settings.GMAIL_EMULATOR_URL = settings.GOOGLE_API_ROOT = base_url
        settings.GOOGLE_TOKEN_URL = base_url + "token"
        settings.GOOGLE_USERINFO_URL = base_url + "oauth2/v2/userinfo"
        settings.GOOGLE_CLIENT_ID, settings.GOOGLE_CLIENT_SECRET = (
            emulator.client_id,
            emulator.client_secret,
        )
        settings.MAILSYNC_QUOTA_USER_PER_MINUTE = 10**9
        mailbox = emulator.add_mailbox(EMAIL, count=count)
        user, _ = connect_google_account(mailbox.email, mailbox.refresh_token, mailbox.access_token)
        started = time.monotonic()
        run = sync.run_until_finished(sync.start_initial_sync(user))
        seconds = time.monotonic() - started
    assert run.status == "completed", run.error_message
    messages = EmailMessage.objects.filter(user=user).count()
    text_chars = compressed = 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT body_text, body_html FROM mailsync_emailmessage WHERE user_id = %s", [user.pk]
        )
        for body_text, body_html in cursor.fetchall():
            for value in (body_text, body_html):
                compressed += len(value or b"")
                text_chars += len(decompress(value).encode("utf-8"))
        cursor.execute("VACUUM (FULL, ANALYZE) mailsync_emailmessage")
        cursor.execute("VACUUM (FULL, ANALYZE) mailsync_messagelabel")
        sizes = {name: table_bytes(cursor, table) for name, table in TABLES.items()}
    return {
        "messages": messages,
        "sync_seconds": round(seconds, 1),
        "bytes_per_message": {
            name: {part: round(value / messages) for part, value in parts.items()}
            for name, parts in sizes.items()
        },
        "total_bytes_per_message": round(sum(p["total"] for p in sizes.values()) / messages),
        "bodies_uncompressed_bytes_per_message": round(text_chars / messages),
        "bodies_stored_bytes_per_message": round(compressed / messages),
    }


def main() -> int:
    args = parse_args()
    recreate_database(args.database_url)
    setup_django(args.database_url)
    from django.db import connection

    connection.close()
    result = {
        "policies": {
            name: measure(message_format, chars, args.messages)
            for name, message_format, chars in POLICIES
        }
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    result.update(mailbox_messages=args.messages, commit=commit, database="postgresql")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
