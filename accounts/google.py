"""Google accounts and their tokens: storing them, attaching them, revoking them.

The browser sign-in goes through allauth (adapter.py decides whom a sign-in may
attach to, signals.py stores the tokens it brought); `manage.py connect_gmail`
stores the same rows for headless set-ups through `connect_google_account`.
"""

from __future__ import annotations

import datetime as dt
import logging

import requests
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .models import CreatedVia, GoogleToken

log = logging.getLogger(__name__)

TIMEOUT_S = 20


class GoogleTokenError(Exception):
    """Google refused the tokens or could not be reached."""


def attach_refusal(user, uid: str) -> str | None:
    """Why the Google account `uid` (Google's `sub`) may not be attached to the
    existing `user`, or None when it may: the user's own Google account, or an
    account an operator created that has no Google account yet. Anything else
    (an account made another way, or one that has another Google account) would
    let whoever made it read the mailbox of whoever signs in with this address."""
    google_accounts = SocialAccount.objects.filter(user=user, provider="google")
    if google_accounts.filter(uid=uid).exists():
        return None
    if google_accounts.exists():
        return "this email address belongs to an account of another Google account"
    if user.created_via != CreatedVia.OPERATOR:
        return "this email address belongs to an account that was not created by Google sign-in"
    return None


def save_tokens(
    account: SocialAccount, access_token: str, refresh_token: str, expires_at: dt.datetime | None
) -> GoogleToken:
    """Store the tokens of a sign-in. Google does not always send a new refresh
    token: the stored one is kept then."""
    token, created = GoogleToken.objects.get_or_create(
        account=account,
        defaults={
            "access_token": access_token,
            "refresh_token": refresh_token,
            "expires_at": expires_at,
        },
    )
    if not created:
        token.access_token = access_token
        token.refresh_token = refresh_token or token.refresh_token
        token.expires_at = expires_at
        token.save()
    return token


def revoke_at_google(token: GoogleToken) -> bool:
    """Ask Google to revoke the grant (the refresh token, else the access token):
    https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke
    Best effort: whether Google confirmed it."""
    value = token.refresh_token or token.access_token
    if not value:
        return False
    try:
        response = requests.post(
            settings.GOOGLE_REVOKE_URL,
            data={"token": value},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        log.warning("revoking the Google grant of account %s failed: %s", token.account_id, exc)
        return False
    if response.status_code != 200:
        log.info(
            "Google did not revoke the grant of account %s: %s %s",
            token.account_id,
            response.status_code,
            response.text[:200],
        )
    return response.status_code == 200


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
    """Create or update the user, their SocialAccount and encrypted GoogleToken.

    The refresh token is checked at Google (it must work, or nothing is stored);
    the account's uid is Google's `id` (sub) from userinfo, as allauth stores it.
    An operator runs this, so a user it creates counts as created by an operator;
    an existing user gets the tokens only where a sign-in could attach them.
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
            user = User.objects.create_user(
                username=email, email=email, created_via=CreatedVia.OPERATOR
            )
            user.set_unusable_password()
            user.save()
        elif refusal := attach_refusal(user, uid):
            raise GoogleTokenError(f"not attaching to the existing user {email}: {refusal}")
        owner = SocialAccount.objects.filter(provider="google", uid=uid).first()
        if owner is not None and owner.user_id != user.pk:
            raise GoogleTokenError(f"this Google account belongs to another user ({owner.user})")
        EmailAddress.objects.update_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        account, _ = SocialAccount.objects.update_or_create(
            provider="google", uid=uid, defaults={"user": user, "extra_data": info}
        )
        save_tokens(account, access_token, refresh_token, expires_at)
        if user.gmail_auth_error:
            type(user).objects.filter(pk=user.pk).update(gmail_auth_error="")
    return user, created
