"""Sign in with Google through allauth, against the emulator's OAuth endpoints."""

from __future__ import annotations

import pytest

from accounts.models import GoogleToken
from mailsync.models import SyncProgress

from .google_sign_in import sign_in_with_google

pytestmark = pytest.mark.django_db


def test_first_sign_in_stores_tokens_and_starts_the_initial_sync(client, google_at_emulator):
    google_at_emulator.add_mailbox("erin@example.com", count=10)
    response = sign_in_with_google(client, "erin@example.com")
    assert response.status_code == 302
    assert response["Location"] == "/"
    token = GoogleToken.objects.get(account__user__email="erin@example.com")
    assert token.refresh_token  # offline access
    assert token.access_token
    run = SyncProgress.objects.get(user__email="erin@example.com")
    assert run.sync_type == "initial"
    assert client.get("/").status_code == 200


def test_a_later_sign_in_updates_the_refresh_token(client, google_at_emulator):
    google_at_emulator.add_mailbox("erin@example.com", count=10)
    sign_in_with_google(client, "erin@example.com")
    first = GoogleToken.objects.get(account__user__email="erin@example.com").refresh_token
    client.logout()
    sign_in_with_google(client, "erin@example.com")
    tokens = GoogleToken.objects.filter(account__user__email="erin@example.com")
    assert tokens.count() == 1
    assert tokens.get().refresh_token != first
    # Still one initial run: the second sign-in found it running.
    assert SyncProgress.objects.filter(user__email="erin@example.com").count() == 1


def test_after_revocation_the_page_asks_to_sign_in_and_signing_in_resumes(
    client, google_at_emulator
):
    google_at_emulator.add_mailbox("erin@example.com", count=10)
    sign_in_with_google(client, "erin@example.com")
    run = SyncProgress.objects.get(user__email="erin@example.com")
    # What the sync does when Google refuses the tokens:
    from mailsync.sync import access_revoked

    access_revoked(run.user_id, "invalid_grant: Token has been expired or revoked.")
    page = client.get("/").content.decode()
    assert 'id="reauth-banner"' in page
    client.logout()
    sign_in_with_google(client, "erin@example.com")
    run.user.refresh_from_db()
    assert run.user.gmail_auth_error == ""
    resumed = SyncProgress.objects.filter(user__email="erin@example.com", status="pending")
    assert resumed.count() == 1
    assert 'id="reauth-banner"' not in client.get("/").content.decode()
