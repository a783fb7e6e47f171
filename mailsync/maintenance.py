"""Scheduled work that keeps every mirror current and repairs what went wrong.

Each function is a plain call that a Django-Q2 schedule runs (see
mailsync/schedules.py); none needs an operator.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max
from django.utils import timezone
from django_q.models import Failure, Success

from . import sync, workers
from .models import BatchSlot, SyncProgress

log = logging.getLogger(__name__)

User = get_user_model()


def _eligible_users():
    return User.objects.filter(
        is_active=True,
        initial_sync_completed=True,
        label_sync_completed=True,
        gmail_history_id__isnull=False,
        gmail_auth_error="",
    ).exclude(sync_runs__status__in=SyncProgress.ACTIVE_STATUSES)


def dispatch_incremental_syncs(now: dt.datetime | None = None) -> int:
    """Runs every minute. Each user belongs to one minute of the interval (id modulo
    the interval), so their syncs are spread over it rather than all at once; a user
    whose last sync is overdue (a missed minute) is taken too."""
    now = now or timezone.now()
    interval = settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES
    slot = int(now.timestamp() // 60) % interval
    overdue = now - dt.timedelta(minutes=interval * 2)
    started = 0
    for user in _eligible_users().iterator():
        due = user.pk % interval == slot
        late = user.last_incremental_sync_at is None or user.last_incremental_sync_at < overdue
        if due or late:
            sync.start_incremental_sync(user)
            started += 1
    return started


# Runs the watchdog resumes per pass; the rest wait for the next minute.
WATCHDOG_CHUNK = 500


def resume_stalled_runs() -> int:
    """The watchdog (every minute). The database is the truth about what remains:

    - a run that waits out a failure (Gmail down, a rate limit, messages waiting to be
      retried, a dead worker's lease) is resumed when its `retry_at` comes;
    - a run whose progress has not moved for MAILSYNC_STALLED_AFTER_SECONDS lost its
      tasks (a worker died, the Redis broker dropped them): its leases are released
      and its remaining work is enqueued again.
    Both queries are indexed and bounded; neither depends on the number of users.
    """
    now = timezone.now()
    resumed = 0
    due = SyncProgress.objects.filter(
        status__in=SyncProgress.ACTIVE_STATUSES, retry_at__lte=now
    ).order_by("retry_at")[:WATCHDOG_CHUNK]
    for run in due:
        # Claimed by clearing the time: two watchdogs never resume one run twice.
        if SyncProgress.objects.filter(pk=run.pk, retry_at=run.retry_at).update(
            retry_at=None, updated_at=now
        ):
            sync.enqueue(sync.resume_steps(run))
            resumed += 1
    resumed += _resume_runs_of_dead_workers(now)
    cutoff = now - dt.timedelta(seconds=settings.MAILSYNC_STALLED_AFTER_SECONDS)
    stalled = SyncProgress.objects.filter(
        status__in=SyncProgress.ACTIVE_STATUSES, updated_at__lt=cutoff, retry_at__isnull=True
    ).order_by("updated_at")[:WATCHDOG_CHUNK]
    for run in stalled:
        if not SyncProgress.objects.filter(pk=run.pk, updated_at=run.updated_at).update(
            updated_at=now
        ):
            continue
        # Nothing moved for longer than any task may run: the holders are dead.
        BatchSlot.objects.filter(user_id=run.user_id).update(leased_until=None)
        sync.release_claims(run.user_id)
        steps = sync.resume_steps(run)
        sync.enqueue(steps)
        log.warning("watchdog: resumed stalled %s with %d step(s)", run, len(steps))
        resumed += 1
    return resumed


# A run that moved this recently is not looked at: its holder is at work.
QUIET_S = 20


def _resume_runs_of_dead_workers(now: dt.datetime) -> int:
    """Runs whose every holder (the worker of its last step, the chains of its batch
    slots) is gone from the live clusters: a killed or restarted cluster. They are
    resumed now instead of when their leases run out. Only with a broker that shares
    cluster stats (Redis); see mailsync/workers.py."""
    live = workers.live_holders()
    if live is None:
        return 0
    quiet = SyncProgress.objects.filter(
        status__in=SyncProgress.ACTIVE_STATUSES,
        retry_at__isnull=True,
        updated_at__lt=now - dt.timedelta(seconds=QUIET_S),
    ).order_by("updated_at")[:WATCHDOG_CHUNK]
    resumed = 0
    for run in quiet:
        slots = dict(
            BatchSlot.objects.filter(user_id=run.user_id, leased_until__gt=now).values_list(
                "number", "holder"
            )
        )
        holders = {run.holder, *slots.values()} - {""}
        # No holder yet (its first step waits in the queue): the stall limit decides.
        if not holders or holders & live:
            continue
        # Claimed by moving the run on; the watchdog's own worker holds it now, so a
        # step that was only late (a long queue) is not resumed twice.
        if not SyncProgress.objects.filter(pk=run.pk, updated_at=run.updated_at).update(
            updated_at=now, holder=workers.current_holder()
        ):
            continue
        BatchSlot.objects.filter(user_id=run.user_id, number__in=list(slots)).update(
            leased_until=None
        )
        sync.release_claims(run.user_id, slots=list(slots))
        steps = sync.resume_steps(run)
        sync.enqueue(steps)
        log.warning(
            "watchdog: %s was held by dead workers; resumed with %d step(s)", run, len(steps)
        )
        resumed += 1
    return resumed


def start_health_checks() -> int:
    """Daily: compare every complete mirror with Gmail and repair drift."""
    started = 0
    for user in _eligible_users().iterator():
        sync.start_health_check(user)
        started += 1
    return started


def clean_up(now: dt.datetime | None = None) -> dict[str, int]:
    """Daily: forget finished runs and task results older than the retention, but
    keep each user's latest run of every type (the page and the admin show it)."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.MAILSYNC_KEEP_FINISHED_RUNS_DAYS)
    latest = (
        SyncProgress.objects.values("user_id", "sync_type")
        .annotate(latest=Max("pk"))
        .values_list("latest", flat=True)
    )
    runs, _ = (
        SyncProgress.objects.exclude(status__in=SyncProgress.ACTIVE_STATUSES)
        .filter(started_at__lt=cutoff)
        .exclude(pk__in=list(latest))
        .delete()
    )
    successes, _ = Success.objects.filter(stopped__lt=cutoff).delete()
    failures, _ = Failure.objects.filter(stopped__lt=cutoff).delete()
    return {"runs": runs, "successes": successes, "failures": failures}
