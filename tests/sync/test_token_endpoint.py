"""Google's token endpoint: only invalid_grant means revoked; a 5xx or a network error
is transient and retried with backoff (issue 9). Inline syncs over real HTTP."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import GoogleToken
from mailsync import gmail, sync
from mailsync.credentials import (
    RefreshRefused,
    TokenEndpointUnavailable,
    refresh_access_token,
)
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = pytest.mark.django_db


def expire_access_token(user) -> None:
    GoogleToken.objects.filter(account__user=user).update(
        access_token="long-expired", expires_at=timezone.now() - dt.timedelta(hours=1)
    )


def run_full(user):
    run = sync.start_initial_sync(user)
    sync.run_inline(sync.resume_steps(run))
    run.refresh_from_db()
    return run


def test_a_token_endpoint_503_three_times_is_retried_not_a_revocation(
    connected_mailbox, emulator, settings
):
    settings.MAILSYNC_RETRY_BACKOFF_SECONDS = 0.1
    user, _ = connected_mailbox(count=40)
    expire_access_token(user)
    emulator.script_fault("^/token$", count=3, status=503)

    run = run_full(user)

    assert run.status == "completed", run.error_message
    user.refresh_from_db()
    assert user.gmail_auth_error == ""
    assert_exact_mirror(user, emulator.snapshot(user.email))
    token = GoogleToken.objects.get(account__user=user)
    assert token.access_token != "long-expired"
    assert token.expires_at > timezone.now()


def test_invalid_grant_still_means_sign_in_again(connected_mailbox, emulator):
    user, mailbox = connected_mailbox(count=10)
    expire_access_token(user)
    emulator.revoke_refresh_token(mailbox.refresh_token)

    with pytest.raises(RefreshRefused):
        refresh_access_token(user.pk, stale_token="long-expired")
    run = run_full(user)

    assert run.status == "failed"
    user.refresh_from_db()
    assert "invalid_grant" in user.gmail_auth_error
    assert "sign in with Google again" in run.error_message


def test_an_unreachable_token_endpoint_is_transient(connected_mailbox, settings):
    user, _ = connected_mailbox(count=1)
    expire_access_token(user)
    settings.GOOGLE_TOKEN_URL = "http://127.0.0.1:1/token"  # nothing listens there
    settings.MAILSYNC_RETRY_BACKOFF_SECONDS = 0.01

    with pytest.raises(TokenEndpointUnavailable):
        refresh_access_token(user.pk, stale_token="long-expired")
    with pytest.raises(gmail.TransientError):
        gmail.GmailClient(user.pk).get_profile()
    user.refresh_from_db()
    assert user.gmail_auth_error == ""


def test_another_refusal_of_the_token_endpoint_is_not_a_revocation(
    connected_mailbox, emulator, settings
):
    """A 400 that is not invalid_grant (here: a misconfigured client secret) is the
    operator's problem, not every user's revocation."""
    user, _ = connected_mailbox(count=1)
    expire_access_token(user)
    settings.GOOGLE_CLIENT_SECRET = "not-the-secret"

    with pytest.raises(TokenEndpointUnavailable, match="invalid_client"):
        refresh_access_token(user.pk, stale_token="long-expired")
