"""Benchmark: the incremental dispatcher and a poll that finds nothing.

Creates --users eligible users (a complete mirror each) in a scratch PostgreSQL database
(the name in --database-url must contain 'bench'; it is dropped, created, migrated, and
dropped again at the end), one fifth of them due, and times one dispatcher pass
(`mailsync.polling.dispatch`: claim due users in chunks, enqueue their polls on the ORM
broker). Then, against a local Gmail emulator over HTTP through the real client, one
user's poll that finds no history: the run rows and rows it writes, the Gmail calls and
units it spends.

Prints one JSON line:

    .venv/bin/python bench/bench_dispatch.py --users 100000 \\
        --database-url postgres://postgres@127.0.0.1:5432/dispatch_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", required=True, help="postgres://.../NAME ('bench' in NAME)")
    p.add_argument("--users", type=int, default=100_000, help="eligible users")
    p.add_argument("--due-share", type=float, default=0.2, help="share of them due (1/5)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    return p.parse_args()


def admin_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgres", "postgresql") or "bench" not in name:
        raise SystemExit(f"--database-url must be postgres://.../NAME with 'bench' in NAME: {url}")
    return urlunsplit(parts._replace(scheme="postgresql", path="/postgres")), name


def recreate_database(url: str, drop_only: bool = False) -> None:
    import psycopg

    admin, name = admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str, emulator) -> None:
    os.environ.update(
        DATABASE_URL=url,
        DEBUG="true",
        LOG_LEVEL="WARNING",
        REDIS_URL="",
        GMAIL_EMULATOR_URL=emulator.base_url,
        GOOGLE_CLIENT_ID=emulator.client_id,
        GOOGLE_CLIENT_SECRET=emulator.client_secret,
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    for name in [k for k in os.environ if k.startswith(("MAILSYNC_", "Q_", "GMAIL_PUSH"))]:
        del os.environ[name]
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=os.environ, check=True
    )
    import django

    django.setup()


def create_users(count: int, due_share: float) -> int:
    """Eligible users; every 1/due_share-th one due (at a different past minute each)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    User = get_user_model()
    now = timezone.now()
    every = round(1 / due_share)
    due = 0
    batch = []
    for n in range(count):
        is_due = n % every == 0
        due += is_due
        batch.append(
            User(
                username=f"u{n}@bench.example",
                email=f"u{n}@bench.example",
                password="!",  # noqa: S106 (an unusable password)
                initial_sync_completed=True,
                label_sync_completed=True,
                gmail_history_id="1000",
                last_full_sync_at=now,
                next_sync_at=(
                    now - dt.timedelta(minutes=1 + n % 30)
                    if is_due
                    else now + dt.timedelta(minutes=1 + n % 5)
                ),
            )
        )
        if len(batch) == 5000:
            User.objects.bulk_create(batch)
            batch = []
    User.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accounts_user")
    return due


def time_dispatch() -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ

    from mailsync import polling

    with CaptureQueriesContext(connection) as queries:
        started_at = time.perf_counter()
        started = polling.dispatch(budget_s=600)
        seconds = time.perf_counter() - started_at
    tasks = OrmQ.objects.count()
    OrmQ.objects.all().delete()
    with CaptureQueriesContext(connection) as idle_queries:
        idle_at = time.perf_counter()
        again = polling.dispatch(budget_s=600)
        idle_s = time.perf_counter() - idle_at
    return {
        "dispatch_pass_s": round(seconds, 2),
        "started": started,
        "poll_tasks": tasks,
        "queries_per_started_user": round(len(queries.captured_queries) / max(started, 1), 4),
        "second_pass_started": again,
        "second_pass_s": round(idle_s, 3),
        "second_pass_queries": len(idle_queries.captured_queries),
    }


def time_noop_poll(emulator) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.google import connect_google_account
    from mailsync import sync
    from mailsync.models import SyncProgress

    mailbox = emulator.add_mailbox("poll@bench.example", count=50)
    user, _ = connect_google_account(mailbox.email, mailbox.refresh_token, mailbox.access_token)
    run = sync.run_until_finished(sync.start_initial_sync(user))
    assert run.status == "completed", run.error_message
    sync.run_inline([sync.Step("poll", user.pk)])  # warm: token, discovery document
    runs_before = SyncProgress.objects.count()
    emulator.reset_stats()
    with CaptureQueriesContext(connection) as queries:
        started_at = time.perf_counter()
        sync.run_inline([sync.Step("poll", user.pk)])
        seconds = time.perf_counter() - started_at
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "WITH"))
    ]
    # The shared quota store (UNLOGGED tables on PostgreSQL) is counted apart.
    quota_writes = [sql for sql in writes if "mailsync_quota" in sql]
    stats = emulator.stats()
    return {
        "noop_poll_run_rows": SyncProgress.objects.count() - runs_before,
        "noop_poll_rows_written": len(writes) - len(quota_writes),
        "noop_poll_quota_store_writes": len(quota_writes),
        "noop_poll_gmail_calls": {
            k: v for k, v in stats["by_method"].items() if k.startswith("gmail.")
        },
        "noop_poll_units": stats["units"],
        "noop_poll_ms": round(seconds * 1000, 1),
    }


def main() -> None:
    args = parse_args()
    from gmail_emulator import Emulator, EmulatorConfig

    recreate_database(args.database_url)
    emulator = Emulator(EmulatorConfig(quota_user_per_minute=600_000))
    emulator.start()
    try:
        setup_django(args.database_url, emulator)
        created_at = time.perf_counter()
        due = create_users(args.users, args.due_share)
        result = {
            "users": args.users,
            "due": due,
            "create_users_s": round(time.perf_counter() - created_at, 1),
            "cores": os.cpu_count(),
        }
        result.update(time_dispatch())
        result.update(time_noop_poll(emulator))
        print(json.dumps(result))
    finally:
        emulator.stop()
        from django.db import connections

        connections.close_all()
        if not args.keep:
            recreate_database(args.database_url, drop_only=True)


if __name__ == "__main__":
    main()
