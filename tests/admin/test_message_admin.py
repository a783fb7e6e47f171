"""Mirrored messages in the console: read-only, and a hostile HTML body stays inert."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailsync.models import EmailMessage, Label

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:mailsync_emailmessage_changelist")

HOSTILE_HTML = (
    '<p onclick="steal()">Quarterly <b>report</b></p>'
    '<script>alert("pwned")</script>'
    '<img src="x" onerror="alert(1)">'
    '"><script>document.title="escaped"</script>'
)


def _change_url(message) -> str:
    return reverse("admin:mailsync_emailmessage_change", args=[message.pk])


@pytest.fixture
def hostile_message(google_user, label_factory, message_factory):
    user = google_user()
    inbox = label_factory(user, "INBOX", Label.Type.SYSTEM)
    return message_factory(
        user,
        labels=[inbox],
        subject="Quarterly report",
        sender="Mallory <mallory@example.com>",
        sender_address="mallory@example.com",
        to="victim@example.com",
        cc="boss@example.com",
        message_id_header="<abc123@example.com>",
        body_text="Please find the report attached.\nRegards",
        body_html=HOSTILE_HTML,
        attachments=[
            {"filename": "report.pdf", "mime_type": "application/pdf", "size": 2048,
             "attachment_id": "ANGjdJ", "part_id": "1"},
        ],
    )  # fmt: skip


def test_detail_shows_headers_text_and_only_sanitized_html(admin_client, hostile_message):
    response = admin_client.get(_change_url(hostile_message))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Mallory &lt;mallory@example.com&gt;" in html
    assert "victim@example.com" in html
    assert "boss@example.com" in html
    assert "&lt;abc123@example.com&gt;" in html
    assert "Please find the report attached.\nRegards" in html
    assert "report.pdf" in html
    assert "application/pdf" in html
    assert "Inbox" in html  # Gmail's name, not the raw label id
    # The HTML body: sanitized, then quoted into a sandboxed iframe that runs nothing
    # and whose links open a new tab.
    assert (
        '<iframe class="email-html" sandbox="allow-popups allow-popups-to-escape-sandbox"'
        in html
    )
    assert "allow-same-origin" not in html
    assert "srcdoc=" in html
    assert "Quarterly &lt;b&gt;report&lt;/b&gt;" in html
    assert "pwned" not in html
    assert "<script>alert" not in html
    assert "<script>document.title" not in html
    assert "onerror" not in html
    assert "steal()" not in html
    assert "allow-scripts" not in html


def test_detail_is_read_only(admin_client, hostile_message):
    response = admin_client.post(_change_url(hostile_message), {"subject": "edited"})

    assert response.status_code == 403
    hostile_message.refresh_from_db()
    assert hostile_message.subject == "Quarterly report"
    html = admin_client.get(_change_url(hostile_message)).content.decode()
    assert 'name="subject"' not in html
    assert 'name="_save"' not in html
    assert admin_client.get(reverse("admin:mailsync_emailmessage_add")).status_code == 403


def test_changelist_lists_labels_and_filters(
    admin_client, hostile_message, google_user, message_factory, label_factory
):
    other = google_user()
    message_factory(other, subject="Lunch?", labels=[label_factory(other, "Friends")])

    html = admin_client.get(CHANGELIST).content.decode()
    assert "Quarterly report" in html
    assert "Lunch?" in html
    assert "Mallory" in html

    by_user = admin_client.get(CHANGELIST, {"user__id__exact": other.pk}).content.decode()
    assert "Lunch?" in by_user
    assert "Quarterly report" not in by_user

    by_label = admin_client.get(CHANGELIST, {"label": "INBOX"}).content.decode()
    assert "Quarterly report" in by_label
    assert "Lunch?" not in by_label

    by_sender = admin_client.get(CHANGELIST, {"q": "Mallory@Example.com"}).content.decode()
    assert "Quarterly report" in by_sender
    assert "Lunch?" not in by_sender

    by_subject = admin_client.get(CHANGELIST, {"q": "quarterly"}).content.decode()
    assert "Quarterly report" in by_subject
    assert "Lunch?" not in by_subject

    by_id = admin_client.get(CHANGELIST, {"q": hostile_message.gmail_id}).content.decode()
    assert "Quarterly report" in by_id
    assert "Lunch?" not in by_id


def test_changelist_does_not_query_per_row(
    admin_client, google_user, label_factory, message_factory, django_assert_max_num_queries
):
    user = google_user()
    labels = [label_factory(user, f"L{i}") for i in range(3)]
    for _ in range(20):
        message_factory(user, labels=labels)

    with django_assert_max_num_queries(15):
        response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert EmailMessage.objects.count() == 20
