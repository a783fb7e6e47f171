"""The console's lists and searches cost the same whatever the size of the tables:
the same number of queries with 3 users or 60 and 3,000 messages, and on PostgreSQL
every lookup they make has an index to use (no sequential scan of messages, runs,
labels or links, even with sequential scans discouraged)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailsync.models import EmailMessage, Label, MessageLabel, SyncProgress

pytestmark = pytest.mark.django_db

MESSAGES = reverse("admin:mailsync_emailmessage_changelist")
RUNS = reverse("admin:mailsync_syncprogress_changelist")
USERS = reverse("admin:accounts_user_changelist")
LABELS = reverse("admin:mailsync_label_changelist")
AUTOCOMPLETE = reverse("admin:autocomplete")
BIG_TABLES = (
    "accounts_user",
    "mailsync_emailmessage",
    "mailsync_syncprogress",
    "mailsync_label",
    "mailsync_messagelabel",
)


def seed(user_factory, users: int, messages_per_user: int) -> list:
    """Users, each with two labels, messages linked to INBOX, and ten runs."""
    now = timezone.now()
    made = [
        user_factory(
            email=f"scale{n}-{users}@example.com",
            gmail_auth_error="invalid_grant" if n % 10 == 1 else "",
        )
        for n in range(users)
    ]
    for user in made:
        inbox = Label.objects.create(user=user, gmail_id="INBOX", name="INBOX", type="system")
        Label.objects.create(user=user, gmail_id="CATEGORY_PERSONAL", name="x", type="system")
        rows = EmailMessage.objects.bulk_create(
            EmailMessage(
                user=user,
                gmail_id=f"{user.pk:06x}{i:010x}",
                thread_id=f"{user.pk:06x}{i - i % 3:010x}",
                internal_date=now - dt.timedelta(minutes=i),
                subject=f"invoice {i} for {user.pk}",
                sender=f"Billing <billing{i % 5}@example.com>",
                sender_address=f"billing{i % 5}@example.com",
            )
            for i in range(messages_per_user)
        )
        MessageLabel.objects.bulk_create(MessageLabel(message=m, label=inbox) for m in rows)
        SyncProgress.objects.bulk_create(
            SyncProgress(
                user=user,
                sync_type="incremental",
                status="failed" if i % 4 == 0 else "completed",
                error_message="boom" if i % 4 == 0 else "",
            )
            for i in range(10)
        )
    return made


def views(user, message) -> dict[str, tuple[str, dict]]:
    one_user = {"user__id__exact": user.pk}
    return {
        "message list": (MESSAGES, {}),
        "message list, page 2": (MESSAGES, {"p": "2"}),
        "one user's messages": (MESSAGES, one_user),
        "one user's inbox": (MESSAGES, {**one_user, "label": "INBOX"}),
        "one user's unfetched": (MESSAGES, {**one_user, "fetched": "no"}),
        "search by sender": (MESSAGES, {"q": "Billing3@Example.com"}),
        "search by gmail id": (MESSAGES, {"q": message.gmail_id}),
        "search by thread id": (MESSAGES, {"q": message.thread_id}),
        "search in subjects": (MESSAGES, {"q": "invoice"}),
        "sync runs": (RUNS, {}),
        "failed sync runs": (RUNS, {"status__exact": "failed"}),
        "one user's runs": (RUNS, one_user),
        "run by id": (RUNS, {"q": str(SyncProgress.objects.filter(user=user).first().pk)}),
        "runs by user email": (RUNS, {"q": user.email.upper()}),
        "users": (USERS, {}),
        "users who need to sign in": (USERS, {"google_access": "refused"}),
        "user search": (USERS, {"q": user.email[:8]}),
        "user autocomplete": (
            AUTOCOMPLETE,
            {"term": user.email[:8], "app_label": "mailsync", "model_name": "emailmessage"}
            | {"field_name": "user"},
        ),
        "one user's labels": (LABELS, one_user),
    }


def queries_of(admin_client, url: str, params: dict) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url, params)
    assert response.status_code == 200, (url, params, response.status_code)
    return [query["sql"] for query in captured.captured_queries]


def test_query_counts_do_not_grow_with_the_tables(admin_client, user_factory):
    small = seed(user_factory, users=3, messages_per_user=20)
    message = EmailMessage.objects.filter(user=small[0]).first()
    before = {
        name: len(queries_of(admin_client, url, params))
        for name, (url, params) in views(small[0], message).items()
    }

    seed(user_factory, users=60, messages_per_user=50)
    after = {
        name: len(queries_of(admin_client, url, params))
        for name, (url, params) in views(small[0], message).items()
    }

    assert after == before


def test_the_message_list_neither_counts_nor_lists_everything(admin_client, user_factory):
    users = seed(user_factory, users=12, messages_per_user=1000)
    html = admin_client.get(MESSAGES).content.decode()

    assert "more than 10,000 email messages" in html
    # The user filter is an autocomplete box, not a list of every user.
    assert 'class="django-admin-list-filter-ajax"' in html
    assert users[5].email not in html.split('id="changelist-filter"')[1]
    # Per-mailbox filters appear once a user is chosen.
    assert "Listed, not fetched yet" not in html
    one = admin_client.get(MESSAGES, {"user__id__exact": users[0].pk}).content.decode()
    assert "Listed, not fetched yet" in one
    assert "1000 email messages" in one


# The index each lookup must be answered with (its own, not a walk of the primary key).
LOOKUP_INDEXES = {
    "one user's messages": "message_date_id_idx",
    "search by sender": "message_sender_idx",
    "search by gmail id": "message_gmail_id_idx",
    "search by thread id": "message_thread_id_idx",
    "search for a rare subject word": "message_subject_fts_idx",
    "runs by user email": "user_email_upper_idx",
    "users who need to sign in": "user_needs_sign_in_idx",
    "user search": "user_email_upper_idx",
    "user autocomplete": "user_email_upper_idx",
}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="query plans are PostgreSQL's")
def test_no_sequential_scan_and_lookups_use_their_index_on_postgresql(admin_client, user_factory):
    users = seed(user_factory, users=5, messages_per_user=200)
    message = EmailMessage.objects.filter(user=users[2]).last()
    message.subject = "zanzibar"
    message.save()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    checked = views(users[2], message)
    checked["search for a rare subject word"] = (MESSAGES, {"q": "zanzibar"})
    for name, (url, params) in checked.items():
        plans = []
        for sql in queries_of(admin_client, url, params):
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            plan = explain_without_seqscans(sql)
            scanned = [table for table in BIG_TABLES if f"Seq Scan on {table}" in plan]
            assert not scanned, f"{name}: sequential scan of {scanned}\n{sql}\n{plan}"
            plans.append(plan)
        if name in LOOKUP_INDEXES:
            assert any(LOOKUP_INDEXES[name] in plan for plan in plans), (name, plans)


def explain_without_seqscans(sql: str) -> str:
    """The plan PostgreSQL picks when sequential scans are discouraged: a Seq Scan left
    in it means no index can answer the query."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.skipif(connection.vendor != "postgresql", reason="full-text search is PostgreSQL's")
def test_subject_search_is_full_text_on_postgresql(admin_client, user_factory):
    users = seed(user_factory, users=2, messages_per_user=30)
    EmailMessage.objects.filter(user=users[0], gmail_id__endswith="7").update(
        subject="Quarterly reports are ready"
    )

    html = admin_client.get(MESSAGES, {"q": "report"}).content.decode()
    words = admin_client.get(MESSAGES, {"q": "quarterly ready"}).content.decode()

    # 'simple' configuration: whole words, no stemming, any language.
    assert "Quarterly reports are ready" not in html
    assert "Quarterly reports are ready" in words
