"""Our overrides of allauth's sign-in pages: Google first, password for operators."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_login_page_offers_google_as_a_post_form_and_a_password_sign_in(client):
    response = client.get(reverse("account_login"), {"next": "/"})

    assert response.status_code == 200
    html = response.content.decode()
    google = reverse("google_login")
    assert f'<form method="post" action="{google}?process=login&amp;next=%2F"' in html
    assert 'id="google-login"' in html
    assert "Sign in with Google" in html
    # allauth asks for no password (ACCOUNT_SIGNUP_FIELDS), so operators are sent to
    # the console's password sign-in.
    assert f'href="{reverse("admin:login")}?next={reverse("admin:index")}"' in html


def test_password_sign_in_still_works(client, user_factory):
    user = user_factory(email="operator@example.com", is_staff=True)
    user.set_password("a long passphrase")
    user.save()

    response = client.post(
        reverse("admin:login"),
        {"username": "operator@example.com", "password": "a long passphrase"},
    )

    assert response.status_code == 302
    assert client.get(reverse("mailsync:home")).status_code == 200


def test_google_confirmation_page_has_a_continue_button(client):
    response = client.get(reverse("google_login"), {"process": "login"})

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="google-continue"' in html
    assert 'method="post"' in html
    assert "csrfmiddlewaretoken" in html
