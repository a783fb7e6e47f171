"""The allauth pages a user can meet are in the site's layout: stylesheet, header with
sign-in / sign-out, one card."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

STYLESHEET = '<link rel="stylesheet" href="/static/mailsync/style.css">'


def _assert_site_layout(html: str) -> None:
    assert STYLESHEET in html
    assert '<a class="brand" href="/">Gmail mirror</a>' in html
    assert 'id="auth-page"' in html
    assert "— Gmail mirror</title>" in html
    assert "Menu:" not in html  # allauth's own bare layout


def test_sign_out_confirmation(client, google_user):
    client.force_login(google_user())

    html = client.get(reverse("account_logout")).content.decode()

    _assert_site_layout(html)
    assert 'id="sign-out"' in html  # the header's sign-out button
    assert '<button class="button primary"' in html
    assert 'action="/accounts/logout/"' in html


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (reverse("google_callback"), "Sign-in with Google failed"),  # no state: 401
        (reverse("socialaccount_login_cancelled"), "Sign-in cancelled"),
        (reverse("account_inactive"), "This account is inactive"),
    ],
    ids=["error", "cancelled", "inactive"],
)
def test_pages_met_while_signing_in(client, url, words):
    response = client.get(url)

    html = response.content.decode()
    assert response.status_code in (200, 401)
    _assert_site_layout(html)
    assert words in html
    assert 'id="sign-in"' in html  # the header's sign-in link
