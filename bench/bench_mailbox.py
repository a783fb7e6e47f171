"""Benchmark: the mailbox pages on a big mailbox, through Django's test client.

Seeds one user with --messages fetched messages (bulk inserts: labels, threads,
attachments, text and HTML bodies, search vectors on PostgreSQL) in a fresh database (a
temporary SQLite file, or the PostgreSQL database named by --database-url, dropped and
re-created), then requests each page --repeat times and prints one JSON line: the
median and worst server time (ms) and the number of queries of each page. The exit
status is 1 if a median is above --budget-ms.

    .venv/bin/python bench/bench_mailbox.py [--messages 100000] [--repeat 15]
        [--database-url postgres://postgres@127.0.0.1:5432/mailsync_bench]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sync import ROOT, commit, fresh_database
from cryptography.fernet import Fernet

EMAIL = "bench@example.com"
SEED = 20261129
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
YEARS = 6
WORDS = (
    "report", "meeting", "invoice", "budget", "travel", "project", "review", "draft", "schedule",
    "release", "deploy", "customer", "contract", "design", "figures", "quarter", "summary",
    "update", "notes", "agenda", "lunch", "team", "hiring", "offer", "receipt", "order",
    "shipping", "delivery", "payment", "account", "password", "reminder", "weekly", "digest",
    "newsletter", "launch", "feedback", "question", "answer", "problem", "solution", "server",
    "database", "backup", "migration", "holiday", "conference", "workshop", "training",
    "security",
)  # fmt: skip
RARE_WORD = "zanzibarite"  # in RARE_COUNT messages only
RARE_COUNT = 25
# (Gmail id, name, type, share of the messages). "Label_archive" holds the oldest
# messages only: a walk down the date index passes everything newer before it finds
# one, the hard case of a label page. "Label_rare" is a small label.
LABELS = [
    ("INBOX", "INBOX", "system", 0.45),
    ("UNREAD", "UNREAD", "system", 0.12),
    ("SENT", "SENT", "system", 0.15),
    ("STARRED", "STARRED", "system", 0.01),
    ("IMPORTANT", "IMPORTANT", "system", 0.10),
    ("CATEGORY_PERSONAL", "CATEGORY_PERSONAL", "system", 0.40),
    ("CATEGORY_PROMOTIONS", "CATEGORY_PROMOTIONS", "system", 0.20),
    ("CATEGORY_UPDATES", "CATEGORY_UPDATES", "system", 0.20),
    ("Label_work", "Work", "user", 0.08),
    ("Label_receipts", "Receipts", "user", 0.03),
    ("Label_travel", "Travel", "user", 0.005),
]
ARCHIVE_SHARE = 0.05
RARE_LABEL_COUNT = 40


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=100_000, help="mailbox size")
    p.add_argument("--repeat", type=int, default=15, help="requests per page (after a warm-up)")
    p.add_argument("--budget-ms", type=float, default=100.0, help="median server time allowed")
    p.add_argument(
        "--database-url",
        default="",
        help="postgres://USER@HOST:PORT/NAME: the database NAME (it must contain 'bench')\n"
        "is dropped, re-created and dropped again. Default: a temporary SQLite file.",
    )
    return p.parse_args()


# --- Seeding -------------------------------------------------------------------------
def seed(user, count: int) -> dict[str, Any]:
    """Insert `count` fetched messages for `user`, newest first (as a first sync lists
    them), with their label links; returns what the pages will be asked for."""
    from django.db import connection, transaction

    from mailsync.models import EmailMessage, Label, MessageLabel
    from mailsync.search import fill_search_vectors

    rng = random.Random(SEED)
    labels = {
        gmail_id: Label.objects.create(user=user, gmail_id=gmail_id, name=name, type=kind)
        for gmail_id, name, kind, _ in LABELS
    }
    labels["Label_archive"] = Label.objects.create(
        user=user, gmail_id="Label_archive", name="Archive 2020", type="user"
    )
    labels["Label_rare"] = Label.objects.create(
        user=user, gmail_id="Label_rare", name="Rare", type="user"
    )
    senders = [f"Person {n} <person{n}@example{n % 37}.com>" for n in range(500)]
    span_s = YEARS * 365 * 86400
    rare_text = set(rng.sample(range(count), RARE_COUNT))
    rare_label = set(rng.sample(range(count), RARE_LABEL_COUNT))
    archive_from = int(count * (1 - ARCHIVE_SHARE))
    counts = dict.fromkeys(labels, 0)
    thread, thread_left = 0, 0
    chunk = 2000
    for start in range(0, count, chunk):
        rows, links = [], []
        for n in range(start, min(count, start + chunk)):
            if thread_left == 0:
                thread, thread_left = n, rng.choice((1, 1, 1, 2, 3, 5))
            thread_left -= 1
            words = rng.choices(WORDS, k=250)
            if n in rare_text:
                words[rng.randrange(250)] = RARE_WORD
            body = " ".join(words)
            rows.append(
                EmailMessage(
                    user=user,
                    gmail_id=f"{n:016x}",
                    thread_id=f"{thread:016x}",
                    listing_order=n,
                    internal_date=NOW - dt.timedelta(seconds=span_s * n // count + n % 7),
                    history_id=str(10_000_000 - n),
                    subject=" ".join(rng.choices(WORDS, k=5)).capitalize(),
                    sender=rng.choice(senders),
                    to=f"Bench <{EMAIL}>",
                    snippet=body[:150],
                    body_text=body,
                    body_html=f"<p>{body}</p>" if n % 2 else "",
                    attachments=(
                        [
                            {
                                "filename": f"file-{n}.pdf",
                                "mime_type": "application/pdf",
                                "size": 1000 + n,
                                "attachment_id": f"att-{n}",
                                "part_id": "1",
                            }
                        ]
                        if n % 5 == 0
                        else []
                    ),
                )
            )
            chosen = [gid for gid, _, _, share in LABELS if rng.random() < share]
            if n >= archive_from:
                chosen.append("Label_archive")
            if n in rare_label:
                chosen.append("Label_rare")
            for gid in chosen:
                counts[gid] += 1
            links.append(chosen)
        with transaction.atomic():
            created = EmailMessage.objects.bulk_create(rows)
            MessageLabel.objects.bulk_create(
                MessageLabel(message_id=m.pk, label=labels[gid])
                for m, chosen in zip(created, links, strict=True)
                for gid in chosen
            )
            fill_search_vectors([m.pk for m in created])
    for gid, label in labels.items():
        Label.objects.filter(pk=label.pk).update(messages_total=counts[gid])
    mirrored(user, count)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # what autovacuum does after a bulk load
            cursor.execute("VACUUM ANALYZE")
    return {"labels": labels, "counts": counts, "total": count}


def mirrored(user, count: int) -> None:
    """What a finished first sync leaves besides the rows: the mailbox's counters (what
    the status page reads) and a completed run."""
    from django.utils import timezone

    from mailsync import counters
    from mailsync.models import SyncProgress

    counters.repair(user.pk)
    now = timezone.now()
    SyncProgress.objects.create(
        user=user,
        sync_type=SyncProgress.SyncType.INITIAL,
        status=SyncProgress.Status.COMPLETED,
        num_total=count,
        num_processed=count,
        num_fetched=count,
        listing_completed=True,
        completed_at=now,
    )
    type(user).objects.filter(pk=user.pk).update(
        initial_sync_completed=True, label_sync_completed=True, last_full_sync_at=now
    )


# --- Measuring -----------------------------------------------------------------------
def pages(user, seeded: dict) -> dict[str, str]:
    """The URL of each page measured."""
    from django.urls import reverse

    from mailsync.mailbox import Cursor
    from mailsync.models import EmailMessage

    inbox = EmailMessage.objects.filter(
        user=user, internal_date__isnull=False, labels__gmail_id="INBOX"
    ).order_by("-internal_date", "-pk")
    deep = inbox[min(30_000, max(0, seeded["counts"]["INBOX"] - 60))]
    everything = EmailMessage.objects.filter(user=user).order_by("-internal_date", "-pk")
    deep_all = everything[min(60_000, seeded["total"] // 2)]
    threaded = (
        EmailMessage.objects.filter(
            user=user, thread_id=everything[min(500, seeded["total"] - 1)].thread_id
        )
        .order_by("pk")
        .first()
    )
    html_message = everything.filter(body_html__gt="").first()
    search = reverse("mailsync:search")
    return {
        "status JSON (what the progress page polls)": reverse("mailsync:status"),
        "progress page": reverse("mailsync:home"),
        "inbox (labels and first page)": reverse("mailsync:mailbox"),
        "inbox deep in the keyset": f"{reverse('mailsync:mailbox')}?before={Cursor.after(deep)}",
        "all mail deep in the keyset": (
            f"{reverse('mailsync:all_mail')}?before={Cursor.after(deep_all)}"
        ),
        "label holding only the oldest mail": reverse("mailsync:label", args=["Label_archive"]),
        "small label": reverse("mailsync:label", args=["Label_rare"]),
        "search, common word": f"{search}?q=invoice",
        "search, rare word": f"{search}?q={RARE_WORD}",
        "search, sender address": f"{search}?q=person7%40example7.com",
        "thread": reverse("mailsync:thread", args=[threaded.thread_id]),
        "message": reverse("mailsync:message", args=[html_message.pk]),
    }


def measure_status_reads(user, repeat: int) -> dict[str, Any]:
    """The database part of the status JSON alone (`mailsync.status.mailbox_status`),
    without the request around it: what the counters made cheap."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mailsync.status import mailbox_status

    with CaptureQueriesContext(connection) as queries:
        mailbox_status(user)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        mailbox_status(user)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "ms_median": round(statistics.median(times), 2),
        "ms_max": round(max(times), 2),
        "queries": len(queries),
    }


def measure(client, url: str, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)  # warm-up, and the query count
    query_count = len(queries)  # now: the next request empties the query log
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return {
        "ms_median": round(statistics.median(times), 1),
        "ms_max": round(max(times), 1),
        "queries": query_count,
        "rows_shown": response.content.count(b'<li class="mail-row') or None,
    }


def bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-mailbox-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    database_url, kind = stack.enter_context(fresh_database(args.database_url, workdir))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        DEBUG="false",  # production settings: no SQL log, cached templates
        SECRET_KEY="bench-only-secret-key",  # noqa: S106 (required when DEBUG is off)
        TOKEN_ENCRYPTION_KEYS=Fernet.generate_key().decode(),  # a throwaway key
        ALLOWED_HOSTS="testserver",
        GMAIL_EMULATOR_URL="http://127.0.0.1:9/",  # never called
        SECURE_SSL_REDIRECT="false",  # the test client speaks plain HTTP
        REDIS_URL="",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0, stdout=io.StringIO())
    user = get_user_model().objects.create_user(username=EMAIL, email=EMAIL)
    started = time.monotonic()
    seeded = seed(user, args.messages)
    seconds = time.monotonic() - started
    client = Client()
    client.force_login(user)
    views = {name: measure(client, url, args.repeat) for name, url in pages(user, seeded).items()}
    return {
        "status_reads": measure_status_reads(user, args.repeat),
        "database": kind,
        "messages": args.messages,
        "seed_seconds": round(seconds, 1),
        "repeat": args.repeat,
        "budget_ms": args.budget_ms,
        "within_budget": all(v["ms_median"] <= args.budget_ms for v in views.values()),
        "views": views,
        "commit": commit(),
    }


def main() -> int:
    args = parse_args()
    with contextlib.ExitStack() as stack:
        result = bench(args, stack)
    print(json.dumps(result))
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
