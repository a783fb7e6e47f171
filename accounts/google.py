"""Store a Google account and its tokens the way allauth's sign-in does.

Used by `manage.py connect_gmail` for headless set-ups; the browser sign-in goes
through allauth itself (see adapter.py) and ends in the same rows.
"""

from __future__ import annotations

import datetime as dt

import requests
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialToken
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

TIMEOUT_S = 20


class GoogleTokenError(Exception):
    """Google refused the tokens or could not be reached."""


def _refresh(refresh_token: str) -> dict:
    try:
        response = requests.post(
            settings.GOOGLE_TOKEN_URL,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": settings.GOOGLE_CLIENT_ID,
                "client_secret": settings.GOOGLE_CLIENT_SECRET,
            },
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        raise GoogleTokenError(f"cannot reach Google's token endpoint: {exc}") from exc
    if response.status_code != 200:
        raise GoogleTokenError(f"Google refused the refresh token: {response.text[:300]}")
    return response.json()


def _userinfo(access_token: str) -> dict | None:
    try:
        response = requests.get(
            settings.GOOGLE_USERINFO_URL,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        raise GoogleTokenError(f"cannot reach Google's userinfo endpoint: {exc}") from exc
    return response.json() if response.status_code == 200 else None


def connect_google_account(
    email: str, refresh_token: str, access_token: str | None = None
) -> tuple[object, bool]:
    """Create or update the user, their SocialAccount and SocialToken.

    The refresh token is checked at Google (it must work, or nothing is stored);
    the account's uid is Google's `id` (sub) from userinfo, as allauth stores it.
    """
    expires_at = None
    info = _userinfo(access_token) if access_token else None
    if info is None:
        grant = _refresh(refresh_token)
        access_token = grant["access_token"]
        expires_at = timezone.now() + dt.timedelta(seconds=int(grant.get("expires_in", 3600)))
        info = _userinfo(access_token) or {}
    if info.get("email") and info["email"].lower() != email.lower():
        raise GoogleTokenError(f"these tokens belong to {info['email']}, not {email}")
    uid = str(info.get("id") or info.get("sub") or email)
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(email__iexact=email).first()
        created = user is None
        if created:
            user = User.objects.create_user(username=email, email=email)
            user.set_unusable_password()
            user.save()
        EmailAddress.objects.update_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        account, _ = SocialAccount.objects.update_or_create(
            provider="google", uid=uid, defaults={"user": user, "extra_data": info}
        )
        SocialToken.objects.update_or_create(
            account=account,
            defaults={
                "token": access_token,
                "token_secret": refresh_token,
                "expires_at": expires_at,
            },
        )
        if user.gmail_auth_error:
            type(user).objects.filter(pk=user.pk).update(gmail_auth_error="")
    return user, created
