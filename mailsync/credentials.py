"""Google OAuth tokens of a user, refreshed safely by any number of workers.

Tokens live encrypted in accounts.GoogleToken (captured at sign-in). Workers on
several machines may find the access token expired at the same moment: the refresh
happens under a row lock, and a worker that finds a newer token than the one it had
uses it instead of refreshing again, so an older token can never overwrite a newer
one.

Only `invalid_grant` from Google's token endpoint means the grant is gone
(RefreshRefused: the user must sign in); a 5xx, a network error or any other
refusal is TokenEndpointUnavailable, which callers retry with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging

import google.auth.credentials
import google.auth.exceptions
import google.oauth2.credentials
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import GoogleToken

log = logging.getLogger(__name__)

# Refresh a little before Google would refuse the token.
EXPIRY_MARGIN = dt.timedelta(seconds=60)


class NoGoogleAccount(Exception):
    """The user has no Google account with stored tokens: they must sign in."""


class RefreshRefused(Exception):
    """Google answered invalid_grant (revoked or expired): the user must sign in."""


class TokenEndpointUnavailable(Exception):
    """Google's token endpoint failed (5xx, network, an unexpected answer): the tokens
    may be fine; retry later with backoff."""


def _token_query(user_id: int):
    return GoogleToken.objects.filter(account__user_id=user_id, account__provider="google")


def _naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    # google-auth compares expiry with a naive UTC now.
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _is_fresh(token: GoogleToken) -> bool:
    return bool(token.access_token) and (
        token.expires_at is None or token.expires_at > timezone.now() + EXPIRY_MARGIN
    )


def refresh_access_token(user_id: int, stale_token: str | None) -> GoogleToken:
    """Return a fresh token row, refreshing it at Google only if nobody else has.

    `stale_token` is the access token the caller found wanting; if the row already
    holds another fresh one, a concurrent worker refreshed it and that one is used.
    """
    with transaction.atomic():
        token = _token_query(user_id).select_for_update().select_related("account").first()
        if token is None:
            raise NoGoogleAccount(f"user {user_id} has no Google tokens")
        if token.access_token != stale_token and _is_fresh(token):
            return token
        if not token.refresh_token:
            raise RefreshRefused("no refresh token is stored: sign in with Google again")
        google_creds = google.oauth2.credentials.Credentials(
            token=None,
            refresh_token=token.refresh_token,
            token_uri=settings.GOOGLE_TOKEN_URL,
            client_id=settings.GOOGLE_CLIENT_ID,
            client_secret=settings.GOOGLE_CLIENT_SECRET,
        )
        try:
            google_creds.refresh(_transport_request())
        except google.auth.exceptions.RefreshError as exc:
            if _is_invalid_grant(exc):
                raise RefreshRefused(f"Google refused the refresh token: {exc}") from exc
            raise TokenEndpointUnavailable(f"Google's token endpoint failed: {exc}") from exc
        except google.auth.exceptions.TransportError as exc:
            raise TokenEndpointUnavailable(f"cannot reach Google's token endpoint: {exc}") from exc
        token.access_token = google_creds.token
        token.expires_at = (
            google_creds.expiry.replace(tzinfo=dt.UTC) if google_creds.expiry else None
        )
        if google_creds.refresh_token and google_creds.refresh_token != token.refresh_token:
            token.refresh_token = google_creds.refresh_token
        token.save(update_fields=["access_token", "refresh_token", "expires_at", "updated_at"])
        log.info("refreshed the Google access token of user %s", user_id)
        return token


def _is_invalid_grant(exc: google.auth.exceptions.RefreshError) -> bool:
    """Google's answer (RFC 6749 5.2) says the grant is revoked or expired. google-auth
    passes the parsed JSON body as the second argument."""
    body = exc.args[1] if len(exc.args) > 1 else None
    return isinstance(body, dict) and body.get("error") == "invalid_grant"


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
        self.token = row.access_token
        self.expiry = _naive_utc(row.expires_at)


def credentials_for(user_id: int) -> UserCredentials:
    token = _token_query(user_id).first()
    if token is None:
        raise NoGoogleAccount(f"user {user_id} has no Google tokens")
    return UserCredentials(user_id, token.access_token, token.expires_at)
