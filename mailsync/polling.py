"""Polling as the cheap safety net, and who may start a user's next incremental pass.

- The dispatcher (every minute) selects due users by the indexed `User.next_sync_at`,
  oldest first, in bounded chunks, and claims them in the same statement that moves
  their next time on, so two dispatchers never start one user twice and a missed
  minute never starves anyone (the oldest due come first).
- A poll is one history.list call (2 units). When it finds nothing it writes one row
  in place (the user's "last checked" time and next time) and no `SyncProgress`; when
  it finds history (or the history expired) it starts a normal, recorded incremental run.
- `User.sync_claimed_at` says a poll or a run of the user is queued or running. A push
  that arrives meanwhile only raises `User.push_history_id`; the claim is released by a
  conditional update that fails when a push asked for more than was reached, and then
  exactly one more poll follows.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from . import gmail
from .models import SyncProgress
from .sync.history_ids import settled_fields
from .sync.resync import history_not_ready, resync_waits
from .sync.runs import create_run, finish_run
from .sync.steps import Step, enqueue

log = logging.getLogger(__name__)

User = get_user_model()
SyncType = SyncProgress.SyncType

# Users claimed per dispatcher statement, and users polled per task.
DISPATCH_CHUNK = 1000
POLLS_PER_TASK = 50
# A poll waits this long at most for quota: a busy user is simply polled a minute later.
POLL_MAX_WAIT_S = 5.0
RETRY_LATER = dt.timedelta(minutes=1)


def interval(push_on: bool) -> dt.timedelta:
    minutes = (
        settings.MAILSYNC_PUSH_FALLBACK_MINUTES
        if push_on
        else settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES
    )
    return dt.timedelta(minutes=minutes)


def push_healthy(user, now: dt.datetime | None = None) -> bool:
    now = now or timezone.now()
    return user.push_state == "on" and bool(user.watch_expires_at and user.watch_expires_at > now)


def stale_claim_before(now: dt.datetime) -> dt.datetime:
    # A claim whose poll or run was lost (a dead worker, a dropped task) expires: the
    # watchdog resumes runs after the same time.
    return now - dt.timedelta(seconds=settings.MAILSYNC_STALLED_AFTER_SECONDS)


def _free_or_stale(now: dt.datetime) -> Q:
    return Q(sync_claimed_at__isnull=True) | Q(sync_claimed_at__lt=stale_claim_before(now))


def claim(user_id: int, now: dt.datetime | None = None) -> bool:
    """Take the right to start the user's next pass (False: one is queued or running)."""
    now = now or timezone.now()
    return bool(User.objects.filter(_free_or_stale(now), pk=user_id).update(sync_claimed_at=now))


# --- The dispatcher ---------------------------------------------------------------------------
# One statement claims a chunk: it moves the users' next time on (or clears it for users
# that cannot be polled: no complete mirror, access refused, inactive, being deleted) and
# takes the claim of those whose claim is free. RETURNING says which were claimed. The
# ORM has no UPDATE ... RETURNING; both databases have it (SQLite >= 3.35).
_ELIGIBLE = (
    "is_active AND initial_sync_completed AND label_sync_completed"
    " AND gmail_history_id IS NOT NULL AND gmail_auth_error = '' AND data_deletion = ''"
)
# Built from constants only; every value is a parameter.
_CLAIM_SQL = f"""
UPDATE accounts_user SET
  next_sync_at = CASE WHEN {_ELIGIBLE} THEN
      CASE WHEN push_state = 'on' AND watch_expires_at > %(now)s
           THEN %(fallback_at)s ELSE %(poll_at)s END
    ELSE NULL END,
  sync_claimed_at = CASE
    WHEN {_ELIGIBLE} AND (sync_claimed_at IS NULL OR sync_claimed_at < %(stale)s) THEN %(now)s
    ELSE sync_claimed_at END
WHERE id IN (
  SELECT id FROM accounts_user WHERE next_sync_at <= %(now)s
  ORDER BY next_sync_at LIMIT %(limit)s {{lock}}
)
RETURNING id, sync_claimed_at = %(now)s
"""  # noqa: S608


def claim_due_users(now: dt.datetime, limit: int | None = None) -> tuple[list[int], int]:
    """Claim up to `limit` due users; returns (ids to poll now, users taken off the due list)."""
    ops = connection.ops
    params = {
        "now": ops.adapt_datetimefield_value(now),
        "poll_at": ops.adapt_datetimefield_value(now + interval(False)),
        "fallback_at": ops.adapt_datetimefield_value(now + interval(True)),
        "stale": ops.adapt_datetimefield_value(stale_claim_before(now)),
        "limit": limit or DISPATCH_CHUNK,
    }
    # PostgreSQL: rows another dispatcher is claiming are skipped, not waited for.
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL.format(lock=lock), params)
        rows = cursor.fetchall()
    return [user_id for user_id, claimed in rows if claimed], len(rows)


def dispatch(now: dt.datetime | None = None, budget_s: float | None = None) -> int:
    """Claim due users chunk by chunk and enqueue their polls, POLLS_PER_TASK per task.
    Stops when none is due or the time budget is spent (the rest stay due, oldest
    first, for the next minute). No cursor stays open across enqueues."""
    import time

    from . import tasks

    now = now or timezone.now()
    budget_s = budget_s if budget_s is not None else settings.MAILSYNC_TASK_MAX_SECONDS / 2
    deadline = time.monotonic() + budget_s
    started = 0
    while time.monotonic() < deadline:
        ids, taken = claim_due_users(now)
        for start in range(0, len(ids), POLLS_PER_TASK):
            tasks.enqueue_polls(ids[start : start + POLLS_PER_TASK])
        started += len(ids)
        if taken < DISPATCH_CHUNK:
            break
    return started


# --- One poll -----------------------------------------------------------------------------------
def poll(user_id: int, follow_up: int = 0) -> list[Step]:
    """Stage: one history.list call. Nothing new: the user's row is updated in place, no
    run is recorded. History found (or expired): a recorded incremental run takes over.
    `follow_up`: this poll follows one that a push outran (see `_nothing_new`)."""
    user = User.objects.filter(pk=user_id).first()
    now = timezone.now()
    if user is None or not user.can_sync_incrementally or user.gmail_auth_error:
        User.objects.filter(pk=user_id).update(sync_claimed_at=None)
        return []
    busy = SyncProgress.objects.filter(
        user_id=user_id,
        sync_type__in=(SyncType.INCREMENTAL, SyncType.INITIAL, SyncType.HEALTH),
        status__in=SyncProgress.ACTIVE_STATUSES,
    ).exists()
    if busy:
        # The running pass releases the claim when it ends (and follows up a push).
        User.objects.filter(pk=user_id).update(sync_claimed_at=now)
        return []
    try:
        page = gmail.GmailClient(user_id, max_wait_s=POLL_MAX_WAIT_S).history_page(
            user.gmail_history_id
        )
    except gmail.HistoryExpired:
        if resync_waits(user, now):
            # A fresh id that Gmail does not know yet (lieer#301): no re-listing now; the
            # next poll asks history again. One in-place write, no run.
            history_not_ready(
                user_id,
                now,
                sync_claimed_at=None,
                next_sync_at=now + interval(push_healthy(user, now)),
            )
            return []
        page = None  # the run below meets the 404 too and re-lists the mailbox
    except (gmail.RateLimited, gmail.TransientError) as exc:
        # Not recorded as a run: an outage would write one per user and minute. The
        # next poll comes in a minute; the metrics count the failed calls.
        log.info("user %s: poll postponed: %s", user_id, exc)
        User.objects.filter(pk=user_id).update(sync_claimed_at=None, next_sync_at=now + RETRY_LATER)
        return []
    except gmail.PermanentError as exc:
        # Gmail refuses the poll itself: recorded as a failed run, visibly.
        run, created = create_run(user, SyncType.INCREMENTAL)
        if created:
            finish_run(run.pk, SyncProgress.Status.FAILED, f"Gmail refused a request: {exc}")
        return []
    if page is not None and not page.records and not page.next_page_token:
        return _nothing_new(user, int(page.history_id), now, bool(follow_up))
    run, created = create_run(user, SyncType.INCREMENTAL)
    return [Step("incremental_sync", user_id, (run.pk,))] if created else []


def _nothing_new(user, reached: int, now: dt.datetime, follow_up: bool) -> list[Step]:
    """The one write of a no-op poll: last checked, next poll, the claim released unless
    a push announced more than this poll reached (then one more poll follows). A follow-up
    that still finds nothing up to the announced id stops there: Gmail's own answer
    (its current history id) wins over a notification, so no poll loops forever."""
    fields = {
        "last_incremental_sync_at": now,
        "next_sync_at": now + interval(push_healthy(user, now)),
    }
    # Not `reached` itself: Gmail's answer id counts records it may not show yet. It is
    # a candidate that settles on a later poll (history_ids.py).
    settled = settled_fields(user, None, reached, now, timezone.now())
    # Only if no run moved the id meanwhile (it would be newer than this answer's).
    same_id = User.objects.filter(pk=user.pk, gmail_history_id=user.gmail_history_id)
    released = same_id.filter(
        Q(push_history_id__isnull=True) | Q(push_history_id__lte=reached)
    ).update(sync_claimed_at=None, **settled, **fields)
    if released:
        return []
    if follow_up:
        log.info("user %s: a push announced more than Gmail's history has", user.pk)
        same_id.update(push_history_id=reached, **settled)
        User.objects.filter(pk=user.pk).update(sync_claimed_at=None, **fields)
        return []
    # A push asked for more than this answer had: keep the claim, poll once more.
    User.objects.filter(pk=user.pk).update(sync_claimed_at=now, **fields)
    return [Step("poll", user.pk, (1,))]


# --- When a run ends ------------------------------------------------------------------------------
def run_ended(user_id: int, sync_type: str, status: str) -> None:
    """Called for every run that ends: the next poll is scheduled, the claim released,
    a push that asked for more than the run reached gets one more pass, and a mirror
    that just became complete gets its push watch."""
    if sync_type == SyncType.LABELS:
        return
    now = timezone.now()
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return
    completed = status == SyncProgress.Status.COMPLETED
    if completed and settings.GMAIL_PUSH_TOPIC and not user.push_state:
        # A mirror that became complete (or a user who reconnected) is watched, in a
        # task of its own; a failed watch is retried by the daily renewal.
        enqueue([Step("watch", user_id)])
    fields = {"next_sync_at": now + interval(push_healthy(user, now))}
    # (An initial sync reports its end just before it stores the history id.) Gmail's
    # last answer id (the candidate, if above the stored id) is what the run reached.
    ids = (_as_int(user.gmail_history_id), _as_int(user.history_candidate_id))
    reached = (
        max((i for i in ids if i is not None), default=None)
        if sync_type != SyncType.INITIAL and ids[0] is not None
        else None
    )
    if not completed or reached is None:
        User.objects.filter(pk=user_id).update(sync_claimed_at=None, **fields)
        return
    released = User.objects.filter(
        Q(push_history_id__isnull=True) | Q(push_history_id__lte=reached), pk=user_id
    ).update(sync_claimed_at=None, **fields)
    if not released:
        User.objects.filter(pk=user_id).update(sync_claimed_at=now, **fields)
        enqueue([Step("poll", user_id, (1,))])


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- A push delivery --------------------------------------------------------------------------------
def push_received(email: str, history_id: int) -> str:
    """A Gmail push said `email`'s mailbox reached `history_id`. Database only (the
    request is acknowledged fast). Returns what happened, for the log."""
    outcome = "unknown address"
    now = timezone.now()
    for user in User.objects.filter(email__iexact=email, is_active=True).only(
        "pk", "gmail_history_id", "initial_sync_completed", "gmail_auth_error"
    )[:10]:
        # Redelivered (or older) notifications move nothing.
        raised = User.objects.filter(
            Q(push_history_id__isnull=True) | Q(push_history_id__lt=history_id), pk=user.pk
        ).update(push_history_id=history_id)
        if not raised:
            outcome = "redelivered"
            continue
        reached = _as_int(user.gmail_history_id)
        if not user.initial_sync_completed or user.gmail_auth_error or reached is None:
            outcome = "not synced yet"
            continue
        if reached >= history_id:
            outcome = "already mirrored"
            continue
        if claim(user.pk, now):
            enqueue([Step("poll", user.pk)])
            outcome = "poll queued"
        else:
            outcome = "coalesced"
    return outcome
