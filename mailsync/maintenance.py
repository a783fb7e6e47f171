"""Scheduled work that keeps every mirror current and repairs what went wrong.

Each function is a plain call that a Django-Q2 schedule runs (see
mailsync/schedules.py); none needs an operator.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max
from django.utils import timezone
from django_q.models import Failure, Success

from . import polling, sync, workers
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
    )


def dispatch_incremental_syncs(now: dt.datetime | None = None) -> int:
    """Every minute: poll the users that are due (see mailsync/polling.py). Work is
    proportional to the users due, not to all users."""
    return polling.dispatch(now)


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
    """Daily: compare every complete mirror with Gmail and repair drift. Users are read
    a chunk at a time by id (no cursor stays open while runs are started)."""
    started, after = 0, 0
    while True:
        ids = list(
            _eligible_users()
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", flat=True)[:HEALTH_CHUNK]
        )
        if not ids:
            return started
        for user in User.objects.filter(pk__in=ids):
            sync.start_health_check(user)
            started += 1
        after = ids[-1]


HEALTH_CHUNK = 500
# Rows deleted per statement by the clean-up; each statement is short, and the pass
# stops when its time budget is spent, handing what is left to a new task.
CLEAN_UP_CHUNK = 1000


def clean_up(
    now: dt.datetime | None = None, budget_s: float | None = None, after_run: int = 0
) -> dict[str, int]:
    """Daily: forget finished runs and task results older than the retention, but keep
    each user's latest run of every type (the page and the admin show it). Chunked and
    time-boxed whatever the backlog: what remains is handed to a new task, which goes
    on from the run where this one stopped (`after_run`)."""
    now = now or timezone.now()
    budget_s = budget_s if budget_s is not None else settings.MAILSYNC_TASK_MAX_SECONDS / 2
    deadline = time.monotonic() + budget_s
    cutoff = now - dt.timedelta(days=settings.MAILSYNC_KEEP_FINISHED_RUNS_DAYS)
    removed = {"runs": 0, "successes": 0, "failures": 0}
    # after_run -1: the runs are done, only task results remain.
    stopped_at = _clean_runs(cutoff, deadline, removed, after_run) if after_run >= 0 else None
    if stopped_at is None and _clean_task_results(cutoff, deadline, removed):
        return removed
    from django_q.tasks import async_task

    go_on = -1 if stopped_at is None else stopped_at
    async_task("mailsync.tasks.clean_up", go_on, q_options={"group": "clean_up"})
    return removed


def _clean_runs(
    cutoff: dt.datetime, deadline: float, removed: dict[str, int], after: int
) -> int | None:
    """Walk runs in id order (ids grow with the start time) from `after`: stop at the
    first run that started after the cutoff, so the pass never reads the recent part of
    the table. Returns None when done, else the id to go on after."""
    while time.monotonic() < deadline:
        rows = list(
            SyncProgress.objects.filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", "user_id", "sync_type", "status", "started_at")[:CLEAN_UP_CHUNK]
        )
        old = [
            row for row in rows if row[4] < cutoff and row[3] not in SyncProgress.ACTIVE_STATUSES
        ]
        if old:
            pairs = {(user_id, sync_type) for _, user_id, sync_type, _, _ in old}
            latest = set(
                SyncProgress.objects.filter(user_id__in={u for u, _ in pairs})
                .values("user_id", "sync_type")
                .annotate(latest=Max("pk"))
                .values_list("latest", flat=True)
            )
            doomed = [pk for pk, *_ in old if pk not in latest]
            if doomed:
                removed["runs"] += (
                    SyncProgress.objects.filter(pk__in=doomed)
                    .delete()[1]
                    .get(SyncProgress._meta.label, 0)
                )
        if len(rows) < CLEAN_UP_CHUNK or any(row[4] >= cutoff for row in rows):
            return None
        after = rows[-1][0]
    return after


def _clean_task_results(cutoff: dt.datetime, deadline: float, removed: dict[str, int]) -> bool:
    """Django-Q2's task results, oldest first through an index on `stopped`
    (mailsync migration 0017)."""
    for model, key in ((Success, "successes"), (Failure, "failures")):
        while True:
            if time.monotonic() >= deadline:
                return False
            ids = list(
                model.objects.filter(stopped__lt=cutoff)
                .order_by("stopped")
                .values_list("pk", flat=True)[:CLEAN_UP_CHUNK]
            )
            if ids:
                removed[key] += model.objects.filter(pk__in=ids).delete()[0]
            if len(ids) < CLEAN_UP_CHUNK:
                break
    return True
