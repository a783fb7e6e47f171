"""Signing in with Google through allauth against the emulator's OAuth endpoints,
as a browser does: the tests' one way to drive a real sign-in."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from allauth.socialaccount.providers.google.views import GoogleOAuth2Adapter


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


def sign_in_with_google(client, email: str, start=None):
    """Sign in (or, with `start`, carry on a flow already started) as `email` on the
    emulator's consent page; returns the response of the app's callback."""
    started = start or client.post("/accounts/google/login/")
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
