"""Sync now and Full resync: POST only, CSRF-protected, one run per kind."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from mailsync.models import SyncProgress

pytestmark = pytest.mark.django_db

SYNC_NOW = reverse("mailsync:sync_now")
FULL_RESYNC = reverse("mailsync:full_resync")
HOME = reverse("mailsync:home")
Status, SyncType = SyncProgress.Status, SyncProgress.SyncType


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def synced_user(google_user):
    """A user whose first full sync is done: Sync now means an incremental sync."""
    return google_user(
        initial_sync_completed=True, label_sync_completed=True, gmail_history_id="42"
    )


def test_sync_now_starts_an_incremental_sync(client, synced_user):
    client.force_login(synced_user)

    response = client.post(SYNC_NOW)

    assert response.status_code == 302
    assert response["Location"] == HOME
    runs = SyncProgress.objects.filter(user=synced_user)
    assert [(r.sync_type, r.status) for r in runs] == [(SyncType.INCREMENTAL, Status.PENDING)]
    assert _messages(response) == ["Sync started: fetching the changes since the last one."]


def test_sync_now_before_the_first_full_sync_starts_one(client, google_user):
    user = google_user()
    client.force_login(user)

    response = client.post(SYNC_NOW)

    assert [r.sync_type for r in SyncProgress.objects.filter(user=user)] == [SyncType.INITIAL]
    assert "Full sync started" in _messages(response)[0]


def test_sync_now_while_running_starts_nothing(client, synced_user, run_factory):
    run_factory(synced_user, sync_type=SyncType.INCREMENTAL, status=Status.IN_PROGRESS)
    client.force_login(synced_user)

    response = client.post(SYNC_NOW)

    assert SyncProgress.objects.filter(user=synced_user).count() == 1
    assert _messages(response) == ["Your update is already running."]


def test_sync_now_is_post_only(client, synced_user):
    client.force_login(synced_user)

    assert client.get(SYNC_NOW).status_code == 405
    assert not SyncProgress.objects.exists()


def test_anonymous_cannot_sync(client):
    response = client.post(SYNC_NOW)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert not SyncProgress.objects.exists()


def test_sync_now_is_refused_without_google_access(client, google_user):
    user = google_user(gmail_auth_error="invalid_grant")
    client.force_login(user)

    response = client.post(SYNC_NOW)

    assert response.status_code == 302
    assert not SyncProgress.objects.exists()
    assert "sign in with Google again" in _messages(response)[0]


def test_csrf_token_is_required(synced_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(synced_user)

    assert client.post(SYNC_NOW).status_code == 403
    assert not SyncProgress.objects.exists()

    client.get(HOME)  # sets the CSRF cookie, as the browser's first visit does
    token = client.cookies["csrftoken"].value
    response = client.post(SYNC_NOW, {"csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert SyncProgress.objects.filter(user=synced_user).count() == 1


def test_full_resync_asks_first(client, synced_user):
    client.force_login(synced_user)

    response = client.get(FULL_RESYNC)

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<form method="post" action="{FULL_RESYNC}"' in html
    assert 'id="confirm-full-resync"' in html
    assert "csrfmiddlewaretoken" in html
    assert not SyncProgress.objects.exists()


def test_full_resync_resets_and_starts_a_full_sync(
    client, synced_user, run_factory, message_factory
):
    message_factory(synced_user)
    running = run_factory(synced_user, sync_type=SyncType.INCREMENTAL, status=Status.IN_PROGRESS)
    client.force_login(synced_user)

    response = client.post(FULL_RESYNC)

    assert response.status_code == 302
    assert response["Location"] == HOME
    running.refresh_from_db()
    assert running.status == Status.FAILED
    active = SyncProgress.objects.filter(user=synced_user, status__in=SyncProgress.ACTIVE_STATUSES)
    assert [r.sync_type for r in active] == [SyncType.INITIAL]
    synced_user.refresh_from_db()
    assert synced_user.gmail_history_id is None
    assert not synced_user.initial_sync_completed
    assert synced_user.email_messages.count() == 1  # messages are kept
    assert "Full resync started" in _messages(response)[0]


def test_full_resync_confirmation_promises_nothing_it_cannot_keep(client, synced_user):
    client.force_login(synced_user)

    html = client.get(FULL_RESYNC).content.decode()

    assert "as long as the first sync" not in html
    assert "not downloaded again" in html


def test_sync_now_after_a_reset_starts_a_full_resync(client, synced_user):
    from django.utils import timezone

    from mailsync import sync

    synced_user.last_full_sync_at = timezone.now()
    synced_user.save()
    sync.reset_sync_state(synced_user)
    client.force_login(synced_user)

    response = client.post(SYNC_NOW)

    run = SyncProgress.objects.get(user=synced_user)
    assert (run.sync_type, run.resync) == (SyncType.INITIAL, True)
    assert _messages(response) == [
        "Full resync started: only what the mirror is missing is downloaded."
    ]
