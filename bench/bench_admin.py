"""Benchmark: the operator console's lists and searches on a fleet-sized PostgreSQL database.

Seeds (once; kept between runs) 100,000 users, 5,000,000 messages (one INBOX link each),
two labels per user and 1,000,000 sync runs with SQL generate_series, then requests each
admin view through Django's test client, logged in as a superuser, and prints one JSON
line: per view the median milliseconds over --repeat requests, the HTML size and the
number of SQL queries.

    .venv/bin/python bench/bench_admin.py --database-url postgres://postgres@127.0.0.1:5432/ops_bench
        [--users 100000] [--messages 5000000] [--runs 1000000] [--repeat 5] [--reseed]

The database name must contain "bench": it is created when missing and, with --reseed,
emptied (every table truncated) before seeding.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Subjects are one of these words and a hash: a common word matches a tenth of the
# mailbox (the planner walks the primary key), a hash one message (the GIN index).
WORDS = ["invoice", "meeting", "lunch", "report", "newsletter"]
WORDS += ["receipt", "hello", "urgent", "travel", "project"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--database-url",
        required=True,
        help="postgres://USER@HOST:PORT/NAME (NAME contains 'bench')",
    )
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=5_000_000)
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5, help="requests per view (the median is kept)")
    p.add_argument("--reseed", action="store_true", help="empty the database and seed again")
    return p.parse_args()


def setup_django(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    if urlsplit(database_url).scheme not in ("postgres", "postgresql") or "bench" not in name:
        sys.exit("--database-url must be a PostgreSQL database whose name contains 'bench'")
    _create_database(database_url, name)
    os.environ.update(
        DATABASE_URL=database_url,
        DEBUG="false",
        SECRET_KEY="bench-only",  # noqa: S106 (a throwaway database)
        TOKEN_ENCRYPTION_KEYS=Fernet.generate_key().decode(),  # a throwaway key
        GOOGLE_CLIENT_ID="bench",
        GOOGLE_CLIENT_SECRET="bench",  # noqa: S106 (never used: no Google here)
        ALLOWED_HOSTS="testserver",
        SESSION_COOKIE_SECURE="false",
        LOG_LEVEL="ERROR",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _create_database(database_url: str, name: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    server = parts._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


SEED_SQL = [
    (
        "users",
        """
        INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name,
            email, is_staff, is_active, date_joined, gmail_history_id, initial_sync_completed,
            label_sync_completed, last_full_sync_at, last_incremental_sync_at, gmail_auth_error)
        SELECT '!', false, 'user' || i || '@example.com', '', '', 'user' || i || '@example.com',
            false, true, now() - interval '90 days', (1000 + i)::text, true, true,
            now() - interval '30 days', now() - (i %% 300) * interval '1 second',
            CASE WHEN i %% 500 = 0 THEN 'invalid_grant: Token has been expired or revoked.' ELSE '' END
        FROM generate_series(1, %(users)s) AS i
        """,
    ),
    (
        "labels",
        """
        INSERT INTO mailsync_label (user_id, gmail_id, name, type, text_color, background_color,
            message_list_visibility, label_list_visibility, messages_total, updated_at)
        SELECT u.id, l.gmail_id, l.gmail_id, 'system', '', '', '', '', 0, now()
        FROM accounts_user u CROSS JOIN (VALUES ('INBOX'), ('CATEGORY_PERSONAL')) AS l(gmail_id)
        """,
    ),
    (
        "messages",
        """
        INSERT INTO mailsync_emailmessage (user_id, gmail_id, thread_id, listing_order,
            fetch_failures, last_fetch_error, internal_date, history_id, snippet, size_estimate,
            subject, sender, sender_address, "to", cc, message_id_header, body_text, body_html,
            attachments, parse_error, created_at, updated_at)
        SELECT u0.first_id + (i %% %(users)s), lpad(to_hex(i), 16, '0'),
            lpad(to_hex(i - i %% 3), 16, '0'), i / %(users)s, 0, '',
            now() - (i %% 1000000) * interval '1 minute', i::text, md5(i::text) || md5((i + 1)::text),
            4096, (ARRAY[%(words)s])[1 + i %% 10] || ' ' || md5(i::text),
            'Sender ' || (i %% 50000) || ' <Sender' || (i %% 50000) || '@example' || (i %% 7) || '.com>',
            'sender' || (i %% 50000) || '@example' || (i %% 7) || '.com',
            'someone@example.com', '', '<' || i || '@example.com>', '', '', '[]'::jsonb, '',
            now(), now()
        FROM generate_series(1, %(messages)s) AS i,
            (SELECT min(id) AS first_id FROM accounts_user) AS u0
        """,
    ),
    (
        "message labels",
        """
        INSERT INTO mailsync_messagelabel (message_id, label_id, linked_at)
        SELECT m.id, l.id, now()
        FROM mailsync_emailmessage m JOIN mailsync_label l
            ON l.user_id = m.user_id AND l.gmail_id = 'INBOX'
        """,
    ),
    (
        "sync runs",
        """
        INSERT INTO mailsync_syncprogress (user_id, sync_type, status, start_history_id,
            next_page_token, listing_completed, pages_listed, num_processed, num_total,
            batches_total, batches_completed, num_added, num_deleted, num_relabelled,
            fell_back_to_full, rescan_completed, error_message, started_at, updated_at,
            completed_at)
        SELECT u0.first_id + (i %% %(users)s),
            CASE WHEN i %% 50 = 0 THEN 'health' WHEN i %% 20 = 0 THEN 'labels' ELSE 'incremental' END,
            CASE WHEN i %% 200 = 0 THEN 'failed' ELSE 'completed' END,
            '', '', true, 1, 10, 10, 1, 1, 1, 0, 0, false, false,
            CASE WHEN i %% 200 = 0 THEN 'Gmail answered 500 backendError' ELSE '' END,
            now() - (%(runs)s - i) * interval '1 second', now() - (%(runs)s - i) * interval '1 second',
            now() - (%(runs)s - i) * interval '1 second'
        FROM generate_series(1, %(runs)s) AS i,
            (SELECT min(id) AS first_id FROM accounts_user) AS u0
        """,
    ),
]


def seed(args: argparse.Namespace) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM accounts_user")
        seeded = cursor.fetchone()[0] >= args.users
        if seeded and not args.reseed:
            return {"seeded": False}
        cursor.execute(
            "TRUNCATE accounts_user, mailsync_label, mailsync_emailmessage, "
            "mailsync_messagelabel, mailsync_syncprogress RESTART IDENTITY CASCADE"
        )
        params = {
            "users": args.users,
            "messages": args.messages,
            "runs": args.runs,
            "words": ", ".join(f"'{w}'" for w in WORDS),
        }
        seconds = {}
        for what, sql in SEED_SQL:
            started = time.monotonic()
            cursor.execute(sql % params)
            seconds[what] = round(time.monotonic() - started, 1)
            print(f"seeded {what} in {seconds[what]} s", file=sys.stderr)
    return {"seeded": True, "seed_seconds": seconds}


def views(args: argparse.Namespace) -> dict[str, str]:
    from django.contrib.auth import get_user_model

    # A user, a sender and a message from the middle of the seed.
    k = min(4242, args.users)
    m = min(4_242_424, args.messages)
    user_id = get_user_model().objects.get(email=f"user{k}@example.com").pk
    sender = f"sender{m % 50000}%40example{m % 7}.com"
    messages = "/admin/mailsync/emailmessage/"
    runs = "/admin/mailsync/syncprogress/"
    return {
        "message_list": messages,
        "message_list_page_50": messages + "?p=50",
        "message_list_one_user": f"{messages}?user__id__exact={user_id}",
        "message_list_one_user_inbox": f"{messages}?user__id__exact={user_id}&label=INBOX",
        "message_search_sender": f"{messages}?q={sender}",
        "message_search_gmail_id": f"{messages}?q={m:016x}",
        "message_search_subject_word": f"{messages}?q=invoice",
        "message_search_subject_rare": f"{messages}?q={_md5(m)}",
        "sync_run_list": runs,
        "sync_run_list_failed": f"{runs}?status__exact=failed",
        "sync_run_list_one_user": f"{runs}?user__id__exact={user_id}",
        "sync_run_search_email": f"{runs}?q=user{k}%40example.com",
        "user_list": "/admin/accounts/user/",
        "user_list_needs_sign_in": "/admin/accounts/user/?google_access=refused",
        "user_search": f"/admin/accounts/user/?q=user{k}%40example.com",
        "user_autocomplete": (
            f"/admin/autocomplete/?term=user{k}&app_label=mailsync&model_name=emailmessage"
            "&field_name=user"
        ),
        "label_list_one_user": f"/admin/mailsync/label/?user__id__exact={user_id}",
    }


def _md5(i: int) -> str:
    import hashlib

    return hashlib.md5(str(i).encode()).hexdigest()  # noqa: S324 (the seed's subjects)


def measure(args: argparse.Namespace) -> dict[str, dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would have, after seeding and migrations
    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    results = {}
    for name, url in views(args).items():
        client.get(url)  # warm: caches, plans
        timings = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (name, response.status_code)
        results[name] = {
            "ms": round(statistics.median(timings), 1),
            "kb": round(len(response.content) / 1024, 1),
            "queries": len(queries),
        }
        print(f"{name}: {results[name]}", file=sys.stderr)
    return results


def main() -> None:
    args = parse_args()
    setup_django(args.database_url)
    seeded = seed(args)
    results = measure(args)
    slowest = max(results.items(), key=lambda item: item[1]["ms"])
    print(
        json.dumps(
            {
                "users": args.users,
                "messages": args.messages,
                "runs": args.runs,
                **seeded,
                "slowest_view": slowest[0],
                "slowest_ms": slowest[1]["ms"],
                "views": results,
            }
        )
    )


if __name__ == "__main__":
    main()
