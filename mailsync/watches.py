"""Gmail push watches (users.watch): started when a mirror is complete, renewed daily,
stopped when the user disconnects (accounts/disconnect.py).

A failed watch leaves the user on polling every MAILSYNC_INCREMENTAL_INTERVAL_MINUTES
and says so ("push: failed: reason" on the status page and in the admin); the daily
renewal tries again.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from . import gmail
from .log_format import event
from .sync.steps import Step

log = logging.getLogger(__name__)

User = get_user_model()

# Google's advice: renew every day (a watch lapses after 7 days).
RENEW_WITHIN = dt.timedelta(days=1)
RENEWAL_CHUNK = 1000
WATCHES_PER_TASK = 50
WATCH_MAX_WAIT_S = 10.0


def watch(user_id: int) -> list[Step]:
    """Stage: users.watch on every label (100 units); the answer's historyId and
    expiration are stored. Gmail's refusal is recorded on the user, not raised."""
    if not settings.GMAIL_PUSH_TOPIC:
        return []
    user = User.objects.filter(pk=user_id, is_active=True, gmail_auth_error="").first()
    if user is None or not user.initial_sync_completed:
        return []
    now = timezone.now()
    try:
        answer = gmail.GmailClient(user_id, max_wait_s=WATCH_MAX_WAIT_S).watch(
            settings.GMAIL_PUSH_TOPIC
        )
        expires = dt.datetime.fromtimestamp(int(answer["expiration"]) / 1000, tz=dt.UTC)
    except gmail.AccessRevoked:
        raise  # the runner marks the user "sign in again"
    except (gmail.GmailError, KeyError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        event("push.watch_failed", user_id, f"users.watch failed: {reason}", level=logging.WARNING)
        # The failure time as the expiry: the daily renewal finds it by the same index.
        User.objects.filter(pk=user_id).update(
            push_state="failed", push_error=reason[:500], watch_expires_at=now
        )
        return []
    User.objects.filter(pk=user_id).update(
        push_state="on",
        push_error="",
        watch_history_id=str(answer.get("historyId", "")),
        watch_expires_at=expires,
    )
    # Push covers the user now: the safety-net poll moves to the fallback interval.
    User.objects.filter(pk=user_id, next_sync_at__isnull=False).update(
        next_sync_at=now + dt.timedelta(minutes=settings.MAILSYNC_PUSH_FALLBACK_MINUTES)
    )
    event("push.watching", user_id, f"push on until {expires:%Y-%m-%d %H:%M} UTC")
    return []


def renew_watches(now: dt.datetime | None = None) -> int:
    """Daily: watches that lapse within a day (or failed) are renewed, in tasks of
    WATCHES_PER_TASK users, selected chunk by chunk in index order (keyset on
    (watch_expires_at, id)), so the pass is bounded whatever the number of users."""
    from . import tasks

    if not settings.GMAIL_PUSH_TOPIC:
        return 0
    now = now or timezone.now()
    due = User.objects.filter(
        watch_expires_at__lte=now + RENEW_WITHIN, is_active=True, gmail_auth_error=""
    ).order_by("watch_expires_at", "id")
    after: tuple[dt.datetime, int] | None = None
    renewed = 0
    while True:
        page = due
        if after is not None:
            page = due.filter(
                Q(watch_expires_at__gt=after[0]) | Q(watch_expires_at=after[0], id__gt=after[1])
            )
        rows = list(page.values_list("watch_expires_at", "id")[:RENEWAL_CHUNK])
        if not rows:
            return renewed
        ids = [user_id for _, user_id in rows]
        for start in range(0, len(ids), WATCHES_PER_TASK):
            tasks.enqueue_watches(ids[start : start + WATCHES_PER_TASK])
        renewed += len(ids)
        after = rows[-1]


def stop(user_id: int, max_wait_s: float) -> None:
    """users.stop (50 units), best effort, and forget the watch: the user is polled."""
    # Called whatever the stored state says: a watch may exist that we do not know of
    # (made by an earlier deployment, or before the state was recorded).
    try:
        gmail.GmailClient(user_id, max_wait_s=max_wait_s).stop_watch()
    except gmail.GmailError as exc:
        log.info("user %s: no push watch stopped: %s", user_id, exc)
    User.objects.filter(pk=user_id).update(
        push_state="", push_error="", watch_history_id="", watch_expires_at=None
    )
