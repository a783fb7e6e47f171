"""Google OAuth tokens of a user, refreshed safely by any number of workers.

Tokens live in allauth's SocialToken (token = access token, token_secret = refresh
token). Workers on several machines may find the access token expired at the same
moment: the refresh happens under a row lock, and a worker that finds a newer token
than the one it had uses it instead of refreshing again, so an older token can never
overwrite a newer one.
"""

from __future__ import annotations

import datetime as dt
import logging

import google.auth.credentials
import google.auth.exceptions
import google.oauth2.credentials
from allauth.socialaccount.models import SocialToken
from django.conf import settings
from django.db import transaction
from django.utils import timezone

log = logging.getLogger(__name__)

# Refresh a little before Google would refuse the token.
EXPIRY_MARGIN = dt.timedelta(seconds=60)


class NoGoogleAccount(Exception):
    """The user has no Google account with stored tokens: they must sign in."""


class RefreshRefused(Exception):
    """Google refused the refresh token (revoked or expired): the user must sign in."""


def _token_query(user_id: int):
    return SocialToken.objects.filter(account__user_id=user_id, account__provider="google")


def _naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    # google-auth compares expiry with a naive UTC now.
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _is_fresh(token: SocialToken) -> bool:
    return bool(token.token) and (
        token.expires_at is None or token.expires_at > timezone.now() + EXPIRY_MARGIN
    )


def refresh_access_token(user_id: int, stale_token: str | None) -> SocialToken:
    """Return a fresh token row, refreshing it at Google only if nobody else has.

    `stale_token` is the access token the caller found wanting; if the row already
    holds another fresh one, a concurrent worker refreshed it and that one is used.
    """
    with transaction.atomic():
        token = _token_query(user_id).select_for_update().select_related("account").first()
        if token is None:
            raise NoGoogleAccount(f"user {user_id} has no Google tokens")
        if token.token != stale_token and _is_fresh(token):
            return token
        if not token.token_secret:
            raise RefreshRefused("no refresh token is stored: sign in with Google again")
        google_creds = google.oauth2.credentials.Credentials(
            token=None,
            refresh_token=token.token_secret,
            token_uri=settings.GOOGLE_TOKEN_URL,
            client_id=settings.GOOGLE_CLIENT_ID,
            client_secret=settings.GOOGLE_CLIENT_SECRET,
        )
        try:
            google_creds.refresh(_transport_request())
        except google.auth.exceptions.RefreshError as exc:
            if _is_invalid_grant(exc):
                raise RefreshRefused(f"Google refused the refresh token: {exc}") from exc
            raise
        token.token = google_creds.token
        token.expires_at = (
            google_creds.expiry.replace(tzinfo=dt.UTC) if google_creds.expiry else None
        )
        if google_creds.refresh_token and google_creds.refresh_token != token.token_secret:
            token.token_secret = google_creds.refresh_token
        token.save(update_fields=["token", "token_secret", "expires_at"])
        log.info("refreshed the Google access token of user %s", user_id)
        return token


def _is_invalid_grant(exc: google.auth.exceptions.RefreshError) -> bool:
    return "invalid_grant" in str(exc) or getattr(exc, "retryable", None) is False


def _transport_request():
    import google.auth.transport.requests

    return google.auth.transport.requests.Request()


class UserCredentials(google.auth.credentials.Credentials):
    """Credentials whose refresh goes through `refresh_access_token` (locked, shared)."""

    def __init__(self, user_id: int, token: str, expiry: dt.datetime | None):
        super().__init__()
        self.user_id = user_id
        self.token = token
        self.expiry = _naive_utc(expiry)

    def refresh(self, request) -> None:
        row = refresh_access_token(self.user_id, stale_token=self.token)
        self.token = row.token
        self.expiry = _naive_utc(row.expires_at)


def credentials_for(user_id: int) -> UserCredentials:
    token = _token_query(user_id).first()
    if token is None:
        raise NoGoogleAccount(f"user {user_id} has no Google tokens")
    return UserCredentials(user_id, token.token, token.expires_at)
