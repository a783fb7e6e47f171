"""The progress page: the owner's mailbox as it syncs, server-rendered."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from mailsync.models import Label, SyncProgress

pytestmark = pytest.mark.django_db

HOME = reverse("mailsync:home")


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(HOME)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('account_login')}?next={HOME}"


def test_owner_sees_counts_stages_and_labels(
    client, google_user, label_factory, message_factory, run_factory
):
    user = google_user(label_sync_completed=True)
    inbox = label_factory(user, "INBOX", Label.Type.SYSTEM, messages_total=3, messages_unread=1)
    label_factory(user, "Receipts", messages_total=1, messages_unread=0)
    label_factory(user, "Archive 2019")
    message_factory(user, labels=[inbox])
    message_factory(user, labels=[inbox])
    message_factory(user, fetched=False)
    run_factory(user, status=SyncProgress.Status.IN_PROGRESS, num_processed=2, num_total=3)
    client.force_login(user)

    response = client.get(HOME)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="progress-bar"' in html
    assert 'data-percentage="66"' in html
    assert '<span id="progress-text">2 / 3 messages</span>' in html
    assert 'id="stage-labels" class="stage" data-state="done"' in html
    assert 'id="stage-listing" class="stage" data-state="running"' in html
    assert 'id="stage-messages" class="stage" data-state="running"' in html
    assert 'id="stage-incremental" class="stage" data-state="pending"' in html
    # System labels first, then the user's by name.
    assert html.index('data-label-id="INBOX"') < html.index(">Archive 2019<")
    assert html.index(">Archive 2019<") < html.index(">Receipts<")
    assert "1 unread" in html
    assert 'id="sync-now"' in html
    assert 'id="full-resync"' in html
    assert "Google access was revoked" not in html
    assert user.email in html
    assert "mailsync/status.js" in html


def test_page_renders_for_an_empty_mailbox(client, google_user):
    client.force_login(google_user())

    response = client.get(HOME)

    assert response.status_code == 200
    assert b'data-percentage="0"' in response.content
    assert b"0 / 0 messages" in response.content
    assert b"No sync has run yet." in response.content


@pytest.mark.parametrize("revoked", [True, False], ids=["auth-error", "no-token"])
def test_revoked_access_shows_a_sign_in_again_banner(client, google_user, user_factory, revoked):
    user = google_user(gmail_auth_error="invalid_grant") if revoked else user_factory()
    client.force_login(user)

    response = client.get(HOME)

    html = response.content.decode()
    assert 'id="reauth-banner"' in html
    assert "Google access was revoked or expired" in html
    assert "Sign in with Google again" in html
    assert f'href="{reverse("google_login")}' in html
    assert "Google refused access: sign in with Google again to resume." in html


def test_last_error_in_plain_words(client, google_user, run_factory):
    user = google_user()
    run_factory(
        user,
        status=SyncProgress.Status.FAILED,
        error_message="Gmail refused a request: <HttpError 400 badRequest>",
    )
    client.force_login(user)

    html = client.get(HOME).content.decode()

    assert 'id="last-error"' in html
    assert "The last sync failed: Gmail refused a request: &lt;HttpError 400 badRequest&gt;" in html
    assert 'id="stage-listing" class="stage" data-state="failed"' in html


def test_staff_get_a_link_to_the_console(client, google_user):
    client.force_login(google_user(is_staff=True))

    assert b'id="admin-link"' in client.get(HOME).content


def test_post_is_not_allowed(client, google_user):
    client.force_login(google_user())

    assert client.post(HOME).status_code == 405


def test_messages_gmail_could_not_serve_and_an_outage_are_said_plainly(
    client, google_user, message_factory, run_factory
):
    from mailsync import counters
    from mailsync.models import MailboxCounts

    user = google_user(label_sync_completed=True, initial_sync_completed=True)
    for _ in range(3):
        message_factory(user)
    unavailable = message_factory(user, fetched=False, unavailable_since=timezone.now())
    MailboxCounts.objects.filter(user=user).update(unavailable=1)
    assert counters.read(user.pk) == counters.recount(user.pk)
    run_factory(
        user,
        sync_type=SyncProgress.SyncType.INCREMENTAL,
        status=SyncProgress.Status.IN_PROGRESS,
        error_message="Retrying: Gmail answers 503 (backendError); next attempt in 31 s.",
    )
    client.force_login(user)

    html = client.get(HOME).content.decode()

    assert "1 message Gmail could not serve" in html
    assert "Gmail is having trouble (Gmail answers 503 (backendError))" in html
    assert "nothing is lost, the sync retries by itself" in html
    assert "The last sync failed" not in html
    assert unavailable.gmail_id not in html
