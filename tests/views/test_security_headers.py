"""Security headers on every page, and a debug page that hides URL passwords."""

from __future__ import annotations

import sys
import uuid
from urllib.parse import urlsplit

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.views.debug import technical_500_response

pytestmark = pytest.mark.django_db


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.parametrize(
    "url",
    [
        reverse("account_login"),
        reverse("mailsync:home"),
        reverse("mailsync:status"),
        reverse("account_settings"),
        reverse("admin:index"),
        reverse("admin:accounts_user_changelist"),
    ],
)
def test_every_page_has_a_content_security_policy(client, google_user, url):
    client.force_login(google_user(is_staff=True, is_superuser=True))

    csp = policy(client.get(url))

    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]  # no inline script, no eval
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'self'"]
    assert "'self'" in csp["form-action"]


def test_the_sign_in_form_may_lead_to_google(client, settings):
    """The Google button posts to us; we redirect to Google's consent page, which a
    browser checks against form-action."""
    csp = policy(client.get(reverse("account_login")))

    assert "https://accounts.google.com" in csp["form-action"]


def test_production_headers(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    plain = client.get(reverse("account_login"))
    proxied = client.get(reverse("account_login"), headers={"X-Forwarded-Proto": "https"})

    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")
    assert proxied.status_code == 200
    assert proxied["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert proxied["X-Content-Type-Options"] == "nosniff"


def _configure_urls_with_passwords(settings) -> None:
    """Random passwords, so that neither the test's source nor its local variables
    (both on the debug page) contain them."""
    password = lambda: uuid.uuid4().hex  # noqa: E731
    settings.DATABASE_URL = f"postgres://mirror:{password()}@db.internal:5432/mirror"
    settings.REDIS_URL = f"redis://:{password()}@cache.internal:6379/0"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"redis://:{password()}@cache.internal:6379/1",
        }
    }
    settings.SOME_SERVICE_URL = f"https://user:{password()}@api.example.com/"


def test_the_debug_page_masks_passwords_in_urls(settings):
    settings.DEBUG = True
    _configure_urls_with_passwords(settings)
    request = RequestFactory().get("/")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = technical_500_response(request, *sys.exc_info()).content.decode()

    assert "boom" in page
    assert "db.internal" in page  # the settings are shown...
    urls = [settings.DATABASE_URL, settings.REDIS_URL, settings.SOME_SERVICE_URL]
    urls.append(settings.CACHES["default"]["LOCATION"])
    for url in urls:
        assert urlsplit(url).password not in page  # ...without their passwords
