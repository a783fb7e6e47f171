"""`POST /gmail/push/`: Gmail push notifications, delivered by a Cloud Pub/Sub push
subscription.

Every request must carry Pub/Sub's OIDC token (`Authorization: Bearer`): RS256, signed
by a key in GMAIL_PUSH_CERTS_URL (Google's, or the emulator's), `aud` =
GMAIL_PUSH_AUDIENCE, `email` = GMAIL_PUSH_SERVICE_ACCOUNT with `email_verified`.
Without one: 401; with a bad one: 403; nothing is started either way. A valid delivery
is acknowledged at once (204, no Gmail call in the request): the database decides
whether a poll starts (mailsync/polling.py). Any 2xx acknowledges, so a body that can
never be read is acknowledged too (Pub/Sub would redeliver it forever).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.oauth2 import id_token

from . import metrics, polling

log = logging.getLogger(__name__)

ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CERTS_TIMEOUT_S = 10
# Pub/Sub's clock and ours may differ a little: a token "used too early" by a few seconds
# would be refused and redelivered for nothing.
CLOCK_SKEW_S = 30
# Google's certificate answers say how long they may be cached (hours); at least this
# long is kept, so a storm of forged tokens cannot make us fetch the certs again and
# again, and at most a day.
MIN_CACHE_S, MAX_CACHE_S = 60, 86400


class _CachedCerts(google.auth.transport.Request):
    """A google-auth transport that keeps GET answers (the certs) for their max-age, on
    one keep-alive session, so verifying a token costs no HTTP round trip."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._transport = google.auth.transport.requests.Request(session=self._session)
        self._cache: dict[str, tuple[float, float, Any]] = {}  # url: (fetched, expires, answer)

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if method != "GET":
            return self._transport(url, method=method, **kwargs)
        with self._lock:
            now = time.monotonic()
            cached = self._cache.get(url)
            if cached and cached[1] > now:
                return cached[2]
            response = self._transport(url, method="GET", timeout=CERTS_TIMEOUT_S)
            if response.status == 200:
                self._cache[url] = (now, now + _max_age(response.headers), response)
            return response

    def forget(self, url: str) -> bool:
        """Drop the cached certs if they are older than MIN_CACHE_S (a key id we do not
        know may be a new key); False if they are fresh (then the token is wrong)."""
        with self._lock:
            cached = self._cache.get(url)
            if cached is None or time.monotonic() - cached[0] < MIN_CACHE_S:
                return False
            del self._cache[url]
            return True


def _max_age(headers: Mapping[str, str]) -> float:
    for part in (headers.get("cache-control") or headers.get("Cache-Control") or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "max-age" and value.isdigit():
            return float(min(max(int(value), MIN_CACHE_S), MAX_CACHE_S))
    return float(MIN_CACHE_S * 5)


_certs = _CachedCerts()


class Refused(Exception):
    """The request is not from our Pub/Sub subscription; `status` is 401 or 403."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def verify(authorization: str) -> Mapping[str, Any]:
    """The claims of a valid Pub/Sub token, or Refused."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "no bearer token")
    if not (settings.GMAIL_PUSH_AUDIENCE and settings.GMAIL_PUSH_SERVICE_ACCOUNT):
        raise Refused(403, "push is not configured (GMAIL_PUSH_AUDIENCE)")
    url = settings.GMAIL_PUSH_CERTS_URL
    claims = None
    for attempt in range(2):
        try:
            claims = id_token.verify_token(
                token.strip(),
                _certs,
                audience=settings.GMAIL_PUSH_AUDIENCE,
                certs_url=url,
                clock_skew_in_seconds=CLOCK_SKEW_S,
            )
            break
        except google.auth.exceptions.TransportError:
            raise  # the certs cannot be fetched: not the sender's fault (503)
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            # A key id we do not know may be a new key: the certs are fetched again once.
            if attempt == 0 and "key id" in str(exc) and _certs.forget(url):
                continue
            raise Refused(403, f"invalid token: {exc}") from exc
    assert claims is not None
    if claims.get("iss") not in ISSUERS:
        raise Refused(403, f"wrong issuer {claims.get('iss')!r}")
    if claims.get("email") != settings.GMAIL_PUSH_SERVICE_ACCOUNT:
        raise Refused(403, f"wrong service account {claims.get('email')!r}")
    if claims.get("email_verified") is not True:
        raise Refused(403, "email not verified")
    return claims


def notification(body: bytes) -> tuple[str, int] | None:
    """(emailAddress, historyId) of a Pub/Sub push body, or None if unreadable."""
    try:
        message = json.loads(body)["message"]
        data = json.loads(base64.b64decode(message["data"]))
        email = data["emailAddress"]
        history_id = int(data["historyId"])  # a string or a number: both are sent
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if not isinstance(email, str) or not email or history_id <= 0:
        return None
    return email, history_id


@csrf_exempt  # Pub/Sub has no CSRF token; the OIDC token authenticates the request
@require_POST
def push_view(request: HttpRequest) -> HttpResponse:
    try:
        verify(request.headers.get("Authorization", ""))
    except Refused as exc:
        metrics.push_delivery(False)
        log.warning("push refused (%s): %s", exc.status, exc)
        return HttpResponse(status=exc.status)
    except google.auth.exceptions.TransportError as exc:
        # Google's certs cannot be fetched: not the sender's fault; Pub/Sub retries.
        metrics.push_delivery(False)
        log.warning("push not verified, certificates unavailable: %s", exc)
        return HttpResponse(status=503)
    metrics.push_delivery(True)
    parsed = notification(request.body)
    if parsed is None:
        log.warning("push acknowledged but unreadable: %r", request.body[:200])
        return HttpResponse(status=204)
    outcome = polling.push_received(*parsed)
    log.debug("push for %s at %s: %s", parsed[0], parsed[1], outcome)
    return HttpResponse(status=204)
