"""What can go wrong with a Gmail call, and what the caller should do about it: the
exceptions mailsync.gmail raises (and re-exports), and how Google's answers and
transport failures map to them."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import google.auth.exceptions
import httplib2
from django.conf import settings
from googleapiclient.errors import HttpError

from .credentials import NoGoogleAccount, RefreshRefused, TokenEndpointUnavailable

BACKOFF_CAP_S = 16.0


# --- What can go wrong, and what to do about it -----------------------------------
class GmailError(Exception):
    """Base of every Gmail failure. `status` and `reason` are Google's, when known."""

    def __init__(self, message: str, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class RateLimited(GmailError):
    """Too many requests: retry after `retry_after` seconds. `concurrency` means too
    many requests at once (not the quota): retry, but the budget is not cut."""

    def __init__(self, message: str, retry_after: float, concurrency: bool = False, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.concurrency = concurrency


class DailyQuotaExhausted(GmailError):
    """The project's daily quota is spent: pause until it resets."""


class HistoryExpired(GmailError):
    """The start history id is too old: a full resync is needed."""


class AccessRevoked(GmailError):
    """Google refuses our tokens: stop, fail the run, the user must sign in again."""


class TransientError(GmailError):
    """A server or network hiccup: retry with exponential backoff and jitter."""


class PermanentError(GmailError):
    """A request Gmail will never accept: fail the run with this message."""


class NotFound(GmailError):
    """The resource does not exist (a message deleted since it was listed)."""


# --- Error classification -------------------------------------------------------------------
def _error_reason(exc: HttpError) -> tuple[str, str]:
    try:
        body = json.loads(exc.content.decode("utf-8", "replace"))
        error = body.get("error", {})
        errors = error.get("errors") or [{}]
        return errors[0].get("reason", ""), error.get("message", "")
    except (ValueError, AttributeError, TypeError):
        return "", exc.content[:200].decode("utf-8", "replace") if exc.content else ""


def _retry_after(exc: HttpError) -> float:
    value = exc.resp.get("retry-after") if exc.resp else None
    try:
        return max(float(value), 0.0) if value is not None else 0.0
    except ValueError:
        return 0.0


def classify(exc: HttpError) -> GmailError:
    """Map an HttpError to the exception that says what to do."""
    status = exc.status_code
    reason, message = _error_reason(exc)
    text = f"Gmail answered {status} {reason}: {message}".strip()
    kw = {"status": status, "reason": reason}
    if status == 429 or (
        status == 403 and reason in ("userRateLimitExceeded", "rateLimitExceeded")
    ):
        concurrency = "concurrent" in message.lower()
        return RateLimited(
            text, retry_after=_retry_after(exc) or 1.0, concurrency=concurrency, **kw
        )
    if status == 403 and reason in ("dailyLimitExceeded", "quotaExceeded"):
        return DailyQuotaExhausted(text, **kw)
    if status == 401 or (status == 403 and reason in ("insufficientPermissions", "forbidden")):
        return AccessRevoked(text, **kw)
    if status == 404:
        return NotFound(text, **kw)
    if status in (500, 502, 503, 504):
        return TransientError(text, **kw)
    return PermanentError(text, **kw)


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with full jitter (attempt 0 = first retry)."""
    base = settings.MAILSYNC_RETRY_BACKOFF_SECONDS
    return random.uniform(0, min(BACKOFF_CAP_S, base * 2**attempt))


@contextmanager
def transport_errors_named() -> Iterator[None]:
    """Only a refused grant (invalid_grant) or tokens gone (disconnected) mean revoked
    access; a token endpoint that fails and a network failure are transient."""
    try:
        yield
    except (RefreshRefused, NoGoogleAccount) as exc:
        raise AccessRevoked(f"Google refused access: {exc}") from exc
    except (TokenEndpointUnavailable, google.auth.exceptions.TransportError) as exc:
        raise TransientError(f"Google's token endpoint failed: {exc}") from exc
    except google.auth.exceptions.RefreshError as exc:
        raise AccessRevoked(f"Google refused access: {exc}") from exc
    except (TimeoutError, httplib2.HttpLib2Error, OSError) as exc:
        raise TransientError(f"network error talking to Gmail: {exc!r}") from exc


def most_urgent(errors: Iterable[GmailError]) -> GmailError:
    """The error whose handling decides the wait: permanent first, then the longest 429."""
    errors = list(errors)
    for error in errors:
        if not isinstance(error, (RateLimited, TransientError)):
            return error
    limited = [e for e in errors if isinstance(e, RateLimited)]
    if limited:
        return max(limited, key=lambda e: e.retry_after)
    return errors[0]
