"""Tokens: connecting a mailbox headlessly, and refreshing under a lock."""

from __future__ import annotations

import threading

import pytest
from allauth.socialaccount.models import SocialAccount
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import GoogleToken
from mailsync.credentials import refresh_access_token

pytestmark = pytest.mark.django_db


def test_connect_gmail_stores_what_a_sign_in_stores(gmail_settings, emulator, capsys):
    mailbox = emulator.add_mailbox("carol@example.com", count=3)
    call_command("connect_gmail", "carol@example.com", "--refresh-token", mailbox.refresh_token)
    assert "Created user" in capsys.readouterr().out
    account = SocialAccount.objects.get(user__email="carol@example.com")
    assert account.provider == "google"
    assert account.extra_data["email"] == "carol@example.com"
    token = GoogleToken.objects.get(account=account)
    assert token.refresh_token == mailbox.refresh_token
    assert token.access_token
    assert token.expires_at
    # Again with a new token: the same user, updated.
    call_command("connect_gmail", "carol@example.com", "--refresh-token", mailbox.refresh_token)
    assert "Updated user" in capsys.readouterr().out
    assert SocialAccount.objects.filter(user__email="carol@example.com").count() == 1


def test_connect_gmail_refuses_a_bad_refresh_token(gmail_settings, emulator):
    emulator.add_mailbox("dave@example.com", count=1)
    with pytest.raises(CommandError, match="refused the refresh token"):
        call_command("connect_gmail", "dave@example.com", "--refresh-token", "nonsense")


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_call_google_once(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=1)
    stale = GoogleToken.objects.get(account__user=user).access_token
    GoogleToken.objects.filter(account__user=user).update(expires_at=None, access_token=stale)
    emulator.reset_stats()
    barrier = threading.Barrier(4)
    results, errors = [], []

    def refresh() -> None:
        try:
            barrier.wait()
            results.append(refresh_access_token(user.pk, stale_token=stale).access_token)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(set(results)) == 1  # everyone uses the one new token
    assert results[0] != stale
    assert emulator.stats()["by_method"].get("oauth2.token", 0) == 1
    assert GoogleToken.objects.get(account__user=user).access_token == results[0]
