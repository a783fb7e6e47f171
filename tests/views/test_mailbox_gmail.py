"""The mailbox against the emulator over real HTTP: a synced mailbox is searchable, and
an attachment comes from Gmail's attachments.get with the right bytes."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from mailsync import sync
from mailsync.models import EmailMessage, SyncProgress
from tests.gmail_fixtures import attachment_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(connected_mailbox):
    user, mailbox = connected_mailbox(count=60)
    run = sync.start_initial_sync(user)
    sync.run_inline(sync.resume_steps(run))
    run.refresh_from_db()
    assert run.status == SyncProgress.Status.COMPLETED, run.error_message
    return user, mailbox


def test_an_attachment_is_downloaded_from_gmail_with_its_bytes(client, synced, emulator):
    user, _ = synced
    message = next(
        m
        for m in EmailMessage.objects.filter(user=user).exclude(attachments=[])
        if any(a.get("attachment_id") and a.get("filename") for a in m.attachments)
    )
    index, item = next(
        (i, a) for i, a in enumerate(message.attachments) if a["attachment_id"] and a["filename"]
    )
    expected = attachment_bytes(emulator, user.email, message.gmail_id, item["filename"])
    emulator.reset_stats()
    client.force_login(user)

    response = client.get(reverse("mailsync:attachment", args=[message.pk, index]))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == expected
    assert response["Content-Type"] == item["mime_type"]
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert item["filename"].encode("ascii", "ignore").decode()[:3] in disposition
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert emulator.stats()["by_method"] == {"gmail.users.messages.attachments.get": 1}


def test_an_attachment_gmail_refuses_is_a_clear_error(client, synced):
    user, _ = synced
    message = EmailMessage.objects.filter(user=user).exclude(attachments=[]).first()
    client.force_login(user)
    url = reverse("mailsync:attachment", args=[message.pk, 0])
    page = reverse("mailsync:message", args=[message.pk])

    # A token Gmail does not accept (400): back to the message, saying so.
    message.attachments = [{**message.attachments[0], "attachment_id": "bogus"}]
    message.save(update_fields=["attachments"])
    response = client.get(url, follow=True)
    assert response.redirect_chain == [(page, 302)]
    assert "Gmail could not send this attachment" in response.content.decode()

    # A message Gmail no longer has (404): not found here either.
    EmailMessage.objects.filter(pk=message.pk).update(gmail_id="0123456789abcdef")
    assert client.get(url).status_code == 404


def test_a_synced_mailbox_is_listed_and_searchable(client, synced):
    user, _ = synced
    client.force_login(user)
    newest = (
        EmailMessage.objects.filter(user=user, labels__gmail_id="INBOX")
        .order_by("-internal_date", "-pk")
        .first()
    )

    inbox = client.get(reverse("mailsync:mailbox")).content.decode()
    word = re.findall(r"\w{4,}", newest.subject)[0]
    found = client.get(reverse("mailsync:search"), {"q": word}).content.decode()

    assert f'data-message-id="{newest.pk}"' in inbox
    assert f'data-message-id="{newest.pk}"' in found
