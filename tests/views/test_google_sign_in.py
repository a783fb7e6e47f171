"""Sign in with Google through allauth, against the emulator's OAuth endpoints."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from allauth.socialaccount.models import SocialToken
from allauth.socialaccount.providers.google.views import GoogleOAuth2Adapter

from mailsync.models import SyncProgress

pytestmark = pytest.mark.django_db


@pytest.fixture
def google_at_emulator(gmail_settings, emulator, monkeypatch):
    """allauth reads its Google endpoints when its views module is imported, long
    before a test can set GMAIL_EMULATOR_URL; point the adapter at the emulator the
    way settings.py does for a process started with GMAIL_EMULATOR_URL."""
    provider = dict(gmail_settings.SOCIALACCOUNT_PROVIDERS["google"])
    provider["APP"] = {"client_id": emulator.client_id, "secret": emulator.client_secret}
    gmail_settings.SOCIALACCOUNT_PROVIDERS = {"google": provider}
    monkeypatch.setattr(
        GoogleOAuth2Adapter, "authorize_url", emulator.base_url + "o/oauth2/v2/auth"
    )
    monkeypatch.setattr(GoogleOAuth2Adapter, "access_token_url", emulator.base_url + "token")
    monkeypatch.setattr(
        GoogleOAuth2Adapter, "identity_url", emulator.base_url + "oauth2/v2/userinfo"
    )
    return emulator


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _location(url: str) -> str:
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(_NoRedirect).open(url, timeout=10)
    assert redirect.value.code == 302
    return redirect.value.headers["Location"]


def sign_in_with_google(client, email: str):
    started = client.post("/accounts/google/login/")
    assert started.status_code == 302
    consent_url = started["Location"]
    asked = parse_qs(urlsplit(consent_url).query)
    assert "https://www.googleapis.com/auth/gmail.readonly" in asked["scope"][0].split()
    assert asked["access_type"] == ["offline"]
    assert asked["prompt"] == ["consent"]
    page = urllib.request.urlopen(consent_url, timeout=10).read().decode()
    href = re.search(rf'data-email="{re.escape(email)}" href="([^"]+)"', page).group(1)
    callback = urlsplit(_location(urljoin(consent_url, unescape(href))))
    assert callback.path == "/accounts/google/login/callback/"
    return client.get(f"{callback.path}?{callback.query}")


def test_first_sign_in_stores_tokens_and_starts_the_initial_sync(client, google_at_emulator):
    google_at_emulator.add_mailbox("erin@example.com", count=10)
    response = sign_in_with_google(client, "erin@example.com")
    assert response.status_code == 302
    assert response["Location"] == "/"
    token = SocialToken.objects.get(account__user__email="erin@example.com")
    assert token.token_secret  # the refresh token: offline access
    assert token.token
    run = SyncProgress.objects.get(user__email="erin@example.com")
    assert run.sync_type == "initial"
    assert client.get("/").status_code == 200


def test_a_later_sign_in_updates_the_refresh_token(client, google_at_emulator):
    google_at_emulator.add_mailbox("erin@example.com", count=10)
    sign_in_with_google(client, "erin@example.com")
    first = SocialToken.objects.get(account__user__email="erin@example.com").token_secret
    client.logout()
    sign_in_with_google(client, "erin@example.com")
    tokens = SocialToken.objects.filter(account__user__email="erin@example.com")
    assert tokens.count() == 1
    assert tokens.get().token_secret != first
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
