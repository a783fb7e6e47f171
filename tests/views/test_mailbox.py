"""The mailbox pages: labels, lists, search, threads and messages of the owner only."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailsync import mailbox, search
from mailsync.models import EmailMessage, Label
from mailsync.search import fill_search_vectors, search_document

pytestmark = pytest.mark.django_db

INBOX_URL = reverse("mailsync:mailbox")
NOW = timezone.now().replace(microsecond=0)
HOSTILE_HTML = (
    '<p>Hello <b>there</b></p><script>alert("pwned")</script>'
    '<img src="https://tracker.example/p.gif" onerror="steal()">'
    '<a href="javascript:steal()">click</a><a href="https://example.org/page">a link</a>'
)


@pytest.fixture
def mailbox_of(google_user, label_factory, message_factory):
    """A user with system labels and `count` fetched messages, one a minute apart and
    some sharing a timestamp (keyset ties), plus one listed but not fetched."""

    def make(count: int, email: str | None = None):
        user = google_user(email)
        inbox = label_factory(user, "INBOX", Label.Type.SYSTEM, messages_total=count)
        unread = label_factory(user, "UNREAD", Label.Type.SYSTEM)
        work = label_factory(user, "Work", messages_total=None)
        for n in range(count):
            labels = [inbox] + ([unread] if n % 3 == 0 else []) + ([work] if n % 2 else [])
            message_factory(
                user,
                labels=labels,
                # Every fifth pair of messages shares its date: the id breaks the tie.
                internal_date=NOW - dt.timedelta(minutes=n - (n % 5 == 1)),
                subject=f"Subject {n}",
                sender=f"Sender {n} <sender{n}@example.com>",
                snippet=f"snippet of message {n}",
                thread_id=f"t{user.pk}-{n // 3}",
            )
        message_factory(user, fetched=False, labels=[inbox], subject="Not fetched yet")
        fill_search_vectors(EmailMessage.objects.filter(user=user).values_list("pk", flat=True))
        return user

    return make


def _newest_first(user, **filters) -> list[int]:
    rows = EmailMessage.objects.filter(user=user, internal_date__isnull=False, **filters)
    return list(rows.order_by("-internal_date", "-pk").values_list("pk", flat=True))


def _listed_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-message-id="(\d+)"', response.content.decode())]


def _walk(client, url: str) -> tuple[list[int], int]:
    """Follow "Older messages" from `url` to the end: every id listed, and the pages."""
    seen, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += _listed_ids(response)
        pages += 1
        older = re.search(r'href="([^"]+)" id="older-page"', response.content.decode())
        url = older[1].replace("&amp;", "&") if older else ""
    return seen, pages


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(INBOX_URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_inbox_lists_fetched_messages_newest_first_unread_in_bold(client, mailbox_of):
    user = mailbox_of(5)
    client.force_login(user)

    response = client.get(INBOX_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert _listed_ids(response) == _newest_first(user)
    assert "Not fetched yet" not in html
    newest = EmailMessage.objects.get(user=user, subject="Subject 0")
    assert f'<li class="mail-row unread" data-message-id="{newest.pk}"' in html
    second = EmailMessage.objects.get(user=user, subject="Subject 2")
    assert f'<li class="mail-row" data-message-id="{second.pk}"' in html
    assert "Sender 0" in html
    assert "sender0@example.com" not in html
    # The sidebar: Gmail's name for INBOX, its counter, the user's label; no UNREAD.
    assert re.search(r'data-label-id="INBOX" aria-current="page">.*?Inbox', html, re.S)
    assert 'data-label-id="UNREAD"' not in html
    assert ">Work<" in html
    assert '<h1 id="mail-title">Inbox</h1>' in html


@pytest.mark.parametrize("messages_total", [None, 3], ids=["big-label", "small-label"])
def test_label_page_lists_that_labels_messages(client, mailbox_of, messages_total):
    user = mailbox_of(9)
    Label.objects.filter(user=user, name="Work").update(messages_total=messages_total)
    client.force_login(user)

    response = client.get(reverse("mailsync:label", args=[_gmail_id(user, "Work")]))

    assert _listed_ids(response) == _newest_first(user, labels__name="Work")
    assert len(_listed_ids(response)) == 4


@pytest.mark.parametrize(
    ("url_name", "messages_total"),
    [("all_mail", None), ("label", None), ("label", 1000), ("search", None)],
    ids=["all-mail", "inbox-window", "inbox-small-label", "search"],
)
def test_keyset_pagination_never_repeats_or_skips(client, mailbox_of, url_name, messages_total):
    user = mailbox_of(2 * mailbox.PAGE_SIZE + 17)
    Label.objects.filter(user=user, gmail_id="INBOX").update(messages_total=messages_total)
    client.force_login(user)
    url = {
        "all_mail": reverse("mailsync:all_mail"),
        "label": reverse("mailsync:label", args=["INBOX"]),
        "search": reverse("mailsync:search") + "?q=sender",
    }[url_name]

    seen, pages = _walk(client, url)

    assert pages == 3
    assert len(seen) == len(set(seen))
    assert seen == _newest_first(user)


@pytest.mark.parametrize(
    ("window", "small_label"),
    [(7, 2000), (7, 3), (500, 3)],
    ids=["window-then-sorted-links", "window-then-hashed-walk", "window-only"],
)
def test_label_pages_by_every_plan_never_repeat_or_skip(
    client, mailbox_of, monkeypatch, window, small_label
):
    """Work carries every second message: a small window holds too few of them."""
    monkeypatch.setattr(mailbox, "WINDOW", window)
    monkeypatch.setattr(mailbox, "SMALL_LABEL", small_label)
    user = mailbox_of(4 * mailbox.PAGE_SIZE + 9)
    client.force_login(user)

    seen, pages = _walk(client, reverse("mailsync:label", args=[_gmail_id(user, "Work")]))

    assert pages == 3
    assert seen == _newest_first(user, labels__name="Work")


@pytest.mark.parametrize("small_label", [2000, 3], ids=["sorted-links", "hashed-walk"])
def test_a_label_holding_only_old_mail(
    client, mailbox_of, label_factory, monkeypatch, small_label
):
    monkeypatch.setattr(mailbox, "WINDOW", 20)
    monkeypatch.setattr(mailbox, "SMALL_LABEL", small_label)
    user = mailbox_of(150)
    archive = label_factory(user, "Archive", messages_total=60)
    oldest = _newest_first(user)[-60:]
    for message in EmailMessage.objects.filter(pk__in=oldest):
        message.labels.add(archive)
    client.force_login(user)

    seen, pages = _walk(client, reverse("mailsync:label", args=[archive.gmail_id]))

    assert (pages, seen) == (2, oldest)


def test_search_matches_sender_subject_and_text(client, mailbox_of):
    user = mailbox_of(12)
    client.force_login(user)
    search = reverse("mailsync:search")

    assert _listed_ids(client.get(search, {"q": "Subject 7"})) == _newest_first(
        user, subject="Subject 7"
    )
    assert _listed_ids(client.get(search, {"q": "sender11@example.com"})) == _newest_first(
        user, subject="Subject 11"
    )
    by_text = _listed_ids(client.get(search, {"q": "snippet message 4"}))
    assert _newest_first(user, subject="Subject 4")[0] in by_text
    response = client.get(search, {"q": "nothing-like-this"})
    assert _listed_ids(response) == []
    assert "No message matches" in response.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="full-text search is PostgreSQL's")
def test_full_text_search_reads_the_body_and_address_parts(client, google_user, message_factory):
    user = google_user()
    hit = message_factory(
        user,
        subject="Quarterly figures",
        sender="Alice Smith <alice.smith@corp.example>",
        body_text="The warehouse inventory is attached.",
    )
    message_factory(user, subject="Lunch", sender="Bob <bob@example.com>", body_text="Pizza?")
    fill_search_vectors([m.pk for m in EmailMessage.objects.filter(user=user)])
    client.force_login(user)

    for query in ("inventory", "alice", "corp.example", "quarterly -lunch", '"quarterly figures"'):
        response = client.get(reverse("mailsync:search"), {"q": query})
        assert _listed_ids(response) == [hit.pk], query


def test_search_document_weights_and_bounds():
    document = search_document(
        "Hello", "Alice <alice.smith@corp.example>", "bob@x.org", "", "<p>Body <b>text</b></p>"
    )

    assert document["A"] == "Hello"
    assert {"alice", "smith", "corp", "example", "corp.example"} <= set(document["B"].split())
    assert "bob" in document["C"].split()
    assert document["D"] == "Body text"
    assert len(search_document("", "", "", "x" * 100_000)["D"]) == 2000  # the setting's default


def test_a_bad_page_link_goes_back_to_the_first_page(client, mailbox_of):
    client.force_login(mailbox_of(3))

    response = client.get(INBOX_URL, {"before": "not-a-cursor"})

    assert response.status_code == 302
    assert response["Location"] == INBOX_URL


def test_message_view_shows_headers_thread_attachments_and_sanitized_html(
    client, google_user, label_factory, message_factory
):
    user = google_user()
    inbox = label_factory(user, "INBOX", Label.Type.SYSTEM)
    earlier = message_factory(
        user,
        labels=[inbox],
        thread_id="t1",
        subject="Re: plans",
        sender="Bob <bob@example.com>",
        snippet="earlier message",
        internal_date=NOW - dt.timedelta(hours=1),
    )
    shown = message_factory(
        user,
        labels=[inbox],
        thread_id="t1",
        subject="Re: plans",
        sender="Mallory <mallory@example.com>",
        to="Victim <victim@example.com>",
        cc="boss@example.com",
        body_html=HOSTILE_HTML,
        body_text="Hello there (text)",
        internal_date=NOW,
        attachments=[
            {"filename": "report.pdf", "mime_type": "application/pdf", "size": 2048,
             "attachment_id": "ANGjdJ", "part_id": "1"},
            {"filename": "inline.txt", "mime_type": "text/plain", "size": 5,
             "attachment_id": "", "part_id": "2"},
        ],
    )  # fmt: skip
    message_factory(user, thread_id="t2", subject="Another thread", internal_date=NOW)
    client.force_login(user)

    response = client.get(reverse("mailsync:message", args=[shown.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Mallory &lt;mallory@example.com&gt;" in html
    assert "Victim &lt;victim@example.com&gt;" in html
    assert "boss@example.com" in html
    # The thread, together: the earlier message as a link, oldest first.
    assert f'href="{reverse("mailsync:message", args=[earlier.pk])}"' in html
    assert html.index("earlier message") < html.index('id="open-message"')
    assert "Another thread" not in html
    # Attachments: name, type, size; a download link only where Gmail has an id.
    assert "report.pdf" in html
    assert "application/pdf" in html
    assert "2.0\xa0KB" in html
    assert f'href="{reverse("mailsync:attachment", args=[shown.pk, 0])}"' in html
    assert reverse("mailsync:attachment", args=[shown.pk, 1]) not in html
    # The HTML body: sanitized, quoted into a sandboxed frame; links open a new tab.
    frame = re.search(r"<iframe [^>]*>", html)[0]
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame
    assert "allow-scripts" not in frame
    assert "allow-same-origin" not in frame
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in frame
    assert "https://example.org/page" in frame
    assert "target=&quot;_blank&quot;" in frame
    for raw in ("<script>", "alert(", "steal()", "onerror", "tracker.example", "javascript:"):
        assert raw not in html, raw


def test_thread_view_opens_the_newest_message(client, google_user, message_factory):
    user = google_user()
    message_factory(user, thread_id="t9", subject="First", internal_date=NOW - dt.timedelta(1))
    newest = message_factory(user, thread_id="t9", subject="Second", internal_date=NOW)
    client.force_login(user)

    response = client.get(reverse("mailsync:thread", args=["t9"]))

    assert response.status_code == 200
    assert f'data-message-id="{newest.pk}"' in response.content.decode()
    assert '<h1 id="thread-subject">Second</h1>' in response.content.decode()


def test_other_users_messages_threads_attachments_and_labels_are_404(
    client, google_user, label_factory, message_factory
):
    alice, bob = google_user(), google_user()
    secret = message_factory(
        alice,
        thread_id="alice-thread",
        subject="Alice's secret",
        attachments=[{"filename": "a.pdf", "mime_type": "application/pdf", "size": 1,
                      "attachment_id": "X", "part_id": "1"}],
    )  # fmt: skip
    label_factory(alice, "Alice only", gmail_id="Label_alice")
    unfetched = message_factory(bob, fetched=False)
    client.force_login(bob)

    for url in (
        reverse("mailsync:message", args=[secret.pk]),
        reverse("mailsync:thread", args=["alice-thread"]),
        reverse("mailsync:attachment", args=[secret.pk, 0]),
        reverse("mailsync:label", args=["Label_alice"]),
        reverse("mailsync:message", args=[unfetched.pk]),  # bob's, but not fetched
    ):
        assert client.get(url).status_code == 404, url
    for url in (INBOX_URL, reverse("mailsync:all_mail"), reverse("mailsync:search") + "?q=s"):
        assert "Alice" not in client.get(url).content.decode()


def test_pages_are_read_only(client, mailbox_of):
    user = mailbox_of(2)
    client.force_login(user)
    message = EmailMessage.objects.filter(user=user, internal_date__isnull=False).first()

    for url in (INBOX_URL, reverse("mailsync:message", args=[message.pk])):
        assert client.post(url).status_code == 405


def _gmail_id(user, name: str) -> str:
    return Label.objects.get(user=user, name=name).gmail_id


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_query_counts_do_not_grow_with_the_mailbox(client, mailbox_of):
    small, large = mailbox_of(4), mailbox_of(3 * mailbox.PAGE_SIZE)
    Label.objects.filter(user=large, name="Work").update(messages_total=1000)  # small-label plan
    Label.objects.filter(user=small, name="Work").update(messages_total=1000)
    counts: dict[str, list[int]] = {}
    for user in (small, large):
        client.force_login(user)
        newest = EmailMessage.objects.filter(user=user, internal_date__isnull=False).latest(
            "internal_date", "pk"
        )
        pages = {
            "inbox": INBOX_URL,
            "all mail": reverse("mailsync:all_mail"),
            "small label": reverse("mailsync:label", args=[_gmail_id(user, "Work")]),
            "search": reverse("mailsync:search") + "?q=subject",
            "message": reverse("mailsync:message", args=[newest.pk]),
            "thread": reverse("mailsync:thread", args=[newest.thread_id]),
        }
        for name, url in pages.items():
            counts.setdefault(name, []).append(_queries(client, url))
    for name, (in_small, in_large) in counts.items():
        assert in_small == in_large, f"{name}: {in_small} queries, then {in_large}"
        assert in_large <= 8, f"{name}: {in_large} queries"


def test_the_search_index_exists_and_serves_the_search(google_user):
    """The index is made by a migration, outside the models' Meta (each database has its
    own kind): a later migration that rebuilds the table on SQLite would drop it
    silently. This says so."""
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, EmailMessage._meta.db_table)
    assert "message_search_idx" in indexes
    if connection.vendor != "sqlite":
        return
    user = google_user()
    keys = search.matching_messages(user, "invoice").order_by("-internal_date", "-pk")
    sql, params = keys.values_list("internal_date", "pk")[:51].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "COVERING INDEX message_search_idx" in plan, plan
